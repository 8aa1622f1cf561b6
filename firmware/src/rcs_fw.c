/* rcs_fw: the device side of protocol v1. See rcs_fw.h and docs/stm32-protocol.md §3. */
#include "rcs_fw.h"

#include <string.h>


static inline uint32_t lock(rcs_fw_t *fw) { return fw->port->enter_critical(fw->port->ctx); }
static inline void unlock(rcs_fw_t *fw, uint32_t state) { fw->port->exit_critical(fw->port->ctx, state); }

/* --- time (critical section held) ------------------------------------------------------------ */

static uint64_t now_locked(rcs_fw_t *fw)
{
    uint32_t t = fw->port->now_us(fw->port->ctx);
    if (t < fw->time_last) {
        fw->time_high += (uint64_t)1 << 32;
    }
    fw->time_last = t;
    return fw->time_high | t;
}

/* --- transmit queues (critical section held) -------------------------------------------------- */

static uint8_t *slot_at(rcs_fw_t *fw, size_t position)
{
    return fw->slots + (size_t)fw->order[position % fw->n_slots] * fw->slot_size;
}

static uint16_t slot_u16(const uint8_t *slot, size_t at) { return (uint16_t)(slot[at] | (slot[at + 1] << 8)); }

static void drop_oldest_locked(rcs_fw_t *fw)
{
    size_t victim = fw->s_tail;
    if (fw->s_sent > 0 || fw->s_busy) { /* the oldest is going out: drop the one after it instead */
        size_t next = (fw->s_tail + 1) % fw->n_slots;
        uint16_t in_flight = fw->order[fw->s_tail];
        fw->order[fw->s_tail] = fw->order[next];
        fw->order[next] = in_flight;
    }
    fw->stats.frames_dropped++;
    fw->stats.samples_dropped += slot_u16(slot_at(fw, victim), 2);
    fw->s_tail = (fw->s_tail + 1) % fw->n_slots;
    fw->s_count--;
}

static void queue_control_locked(rcs_fw_t *fw, const uint8_t *frame, size_t len)
{
    if (fw->c_count == RCS_FW_CONTROL_SLOTS) {
        fw->stats.control_dropped++;
        return;
    }
    size_t at = (fw->c_tail + fw->c_count) % RCS_FW_CONTROL_SLOTS;
    memcpy(fw->ctl[at], frame, len);
    fw->ctl_len[at] = (uint16_t)len;
    fw->c_count++;
}

/* --- valve state machine (critical section held) --------------------------------------------- */

static bool heartbeat_ok_locked(const rcs_fw_t *fw, uint64_t now)
{
    return fw->heartbeat_seen && now - fw->last_heartbeat_us < fw->cfg.heartbeat_timeout_us;
}

static void go_safe_locked(rcs_fw_t *fw)
{
    fw->port->set_valves(fw->port->ctx, 0);
    fw->safe = true;
}

static uint16_t outputs(rcs_fw_t *fw) { return fw->port->read_valves(fw->port->ctx); }

static void queue_status_locked(rcs_fw_t *fw, uint64_t now)
{
    uint8_t wire[RCS_FW_CONTROL_WIRE];
    rcs_encoder_t e;
    uint8_t flags = (uint8_t)((fw->safe ? RCS_STATUS_FLAG_SAFE : 0u) |
                              (heartbeat_ok_locked(fw, now) ? RCS_STATUS_FLAG_HEARTBEAT_OK : 0u));
    rcs_enc_begin(&e, wire, RCS_FRAME_STATUS);
    rcs_enc_u8(&e, RCS_PROTOCOL_VERSION);
    rcs_enc_u32(&e, fw->cfg.rate_hz);
    rcs_enc_u8(&e, fw->cfg.n_channels);
    rcs_enc_u16(&e, outputs(fw));
    rcs_enc_u8(&e, flags);
    rcs_enc_u16(&e, fw->last_cmd);
    size_t text = strlen(fw->cfg.device);
    rcs_enc_bytes(&e, (const uint8_t *)fw->cfg.device, text > RCS_FW_MAX_DEVICE_TEXT ? RCS_FW_MAX_DEVICE_TEXT : text);
    queue_control_locked(fw, wire, rcs_enc_end(&e));
}

static void queue_ack_locked(rcs_fw_t *fw, uint16_t cmd_no, uint8_t result)
{
    uint8_t wire[RCS_WIRE_SIZE(8u)];
    rcs_encoder_t e;
    rcs_enc_begin(&e, wire, RCS_FRAME_VALVE_ACK);
    rcs_enc_u16(&e, cmd_no);
    rcs_enc_u16(&e, outputs(fw));
    rcs_enc_u8(&e, result);
    queue_control_locked(fw, wire, rcs_enc_end(&e));
}

static void set_valves_locked(rcs_fw_t *fw, uint16_t cmd_no, uint16_t mask, uint64_t now)
{
    fw->last_cmd = cmd_no;
    fw->stats.commands++;
    if (fw->cfg.n_valves < 16u && (mask >> fw->cfg.n_valves) != 0) {
        queue_ack_locked(fw, cmd_no, RCS_ACK_REFUSED_BAD_MASK); /* checked first (spec §2.3) */
        return;
    }
    if (!heartbeat_ok_locked(fw, now)) {
        queue_ack_locked(fw, cmd_no, RCS_ACK_REFUSED_NO_HEARTBEAT);
        return;
    }
    fw->port->set_valves(fw->port->ctx, mask);
    fw->safe = false;
    queue_ack_locked(fw, cmd_no, RCS_ACK_APPLIED);
}

/* One CRC-valid frame from the host. Wrong payload sizes and device -> host types are bad frames. */
static void handle_frame(void *ctx, const uint8_t *body, size_t len)
{
    rcs_fw_t *fw = ctx;
    const uint8_t *payload = body + 1;
    size_t n = len - 1;
    uint32_t state = lock(fw);
    uint64_t now = now_locked(fw);
    switch (body[0]) {
    case RCS_FRAME_HEARTBEAT:
        if (n != 2) {
            goto bad;
        }
        fw->heartbeat_seen = true;
        fw->last_heartbeat_us = now;
        fw->stats.heartbeats++;
        break;
    case RCS_FRAME_SET_VALVES:
        if (n != 4) {
            goto bad;
        }
        set_valves_locked(fw, rcs_get_u16(payload), rcs_get_u16(payload + 2), now);
        break;
    case RCS_FRAME_GO_SAFE:
        if (n != 2) {
            goto bad;
        }
        fw->last_cmd = rcs_get_u16(payload);
        fw->stats.commands++;
        go_safe_locked(fw);
        queue_ack_locked(fw, fw->last_cmd, RCS_ACK_APPLIED);
        break;
    case RCS_FRAME_HELLO:
        if (n != 0) {
            goto bad;
        }
        queue_status_locked(fw, now);
        break;
    default:
        goto bad;
    }
    unlock(fw, state);
    return;
bad:
    fw->stats.rx_bad_frames++;
    unlock(fw, state);
}

/* --- public ---------------------------------------------------------------------------------- */

rcs_fw_config_t rcs_fw_default_config(uint32_t rate_hz, uint8_t n_channels, uint8_t n_valves,
                                      const char *device)
{
    uint32_t per_2ms = rate_hz / 500u;
    rcs_fw_config_t cfg = {
        .rate_hz = rate_hz,
        .n_channels = n_channels,
        .n_valves = n_valves,
        .max_frame_samples = (uint16_t)(per_2ms ? per_2ms : 1u),
        .device = device,
        .heartbeat_timeout_us = 500000u,
        .status_period_us = 100000u,
    };
    return cfg;
}

bool rcs_fw_init(rcs_fw_t *fw, const rcs_fw_config_t *cfg, const rcs_fw_port_t *port, uint8_t *tx_buf,
                 size_t tx_size)
{
    memset(fw, 0, sizeof *fw);
    fw->cfg = *cfg;
    size_t channels = cfg->n_channels ? cfg->n_channels : 1u;
    size_t limit = (RCS_MAX_FRAME - 1u - RCS_SAMPLES_HEADER - 2u) / (2u * channels);
    if (fw->cfg.max_frame_samples == 0 || fw->cfg.max_frame_samples > limit) {
        fw->cfg.max_frame_samples = (uint16_t)limit;
    }
    fw->port = port;
    /* tx_buf: the order[] array (aligned for uint16_t), then the slots */
    size_t skip = (size_t)((2u - ((uintptr_t)tx_buf & 1u)) & 1u);
    fw->slot_size = RCS_FW_SLOT_SIZE(fw->cfg.max_frame_samples, channels);
    fw->n_slots = tx_size > skip ? (tx_size - skip) / (fw->slot_size + sizeof(uint16_t)) : 0;
    if (fw->n_slots > 0xFFFFu) {
        fw->n_slots = 0xFFFFu;
    }
    fw->order = (uint16_t *)(void *)(tx_buf + skip);
    fw->slots = tx_buf + skip + fw->n_slots * sizeof(uint16_t);
    for (size_t i = 0; i < fw->n_slots; i++) {
        fw->order[i] = (uint16_t)i;
    }
    rcs_deframer_init(&fw->deframer, fw->rx_buf, sizeof fw->rx_buf);

    uint32_t state = lock(fw);
    fw->time_last = port->now_us(port->ctx);
    uint64_t now = fw->time_last;
    go_safe_locked(fw); /* D2: all outputs 0, SAFE, no heartbeat yet */
    queue_status_locked(fw, now);
    fw->next_status_us = now + fw->cfg.status_period_us;
    unlock(fw, state);
    return fw->n_slots >= 2;
}

void rcs_fw_samples(rcs_fw_t *fw, const uint16_t *raw, size_t n_samples)
{
    const rcs_fw_config_t *cfg = &fw->cfg;
    if (n_samples == 0) {
        return;
    }
    uint32_t state = lock(fw);
    uint64_t now = now_locked(fw);
    unlock(fw, state);
    /* the callback comes just after the block's last conversion */
    uint64_t span = (uint64_t)(n_samples - 1) * 1000000u / cfg->rate_hz;
    uint64_t t_first = now > span ? now - span : 0;

    for (size_t done = 0; done < n_samples;) {
        size_t n = n_samples - done;
        if (n > cfg->max_frame_samples) {
            n = cfg->max_frame_samples;
        }
        state = lock(fw);
        fw->stats.samples += n;
        if (fw->n_slots < 2) {
            fw->stats.frames_dropped++;
            fw->stats.samples_dropped += n;
            unlock(fw, state);
        } else {
            if (fw->s_count == fw->n_slots) {
                drop_oldest_locked(fw); /* D7: the counter still advances, the host sees the gap */
            }
            uint8_t *slot = slot_at(fw, fw->s_tail + fw->s_count);
            unlock(fw, state);

            /* encode straight into the free slot: the pump never reads it before it is queued */
            rcs_encoder_t e;
            rcs_enc_begin(&e, slot + 4, RCS_FRAME_SAMPLES);
            rcs_enc_u32(&e, fw->counter);
            rcs_enc_u64(&e, t_first + (uint64_t)done * 1000000u / cfg->rate_hz);
            rcs_enc_u8(&e, cfg->n_channels);
            rcs_enc_u16(&e, (uint16_t)n);
            rcs_enc_u16s(&e, raw + done * cfg->n_channels, n * cfg->n_channels);
            size_t len = rcs_enc_end(&e);
            slot[0] = (uint8_t)len;
            slot[1] = (uint8_t)(len >> 8);
            slot[2] = (uint8_t)n;
            slot[3] = (uint8_t)(n >> 8);

            state = lock(fw);
            fw->s_count++;
            fw->stats.frames_queued++;
            if (fw->s_count > fw->stats.tx_high_water) {
                fw->stats.tx_high_water = (uint32_t)fw->s_count;
            }
            unlock(fw, state);
        }
        fw->counter += (uint32_t)n; /* wraps at 2^32 like the wire field */
        done += n;
    }
}

void rcs_fw_receive(rcs_fw_t *fw, const uint8_t *data, size_t len)
{
    rcs_deframer_feed(&fw->deframer, data, len, handle_frame, fw);
}

void rcs_fw_tick(rcs_fw_t *fw)
{
    uint32_t state = lock(fw);
    uint64_t now = now_locked(fw);
    if (!fw->safe && !heartbeat_ok_locked(fw, now)) { /* D1: the heartbeat watchdog */
        go_safe_locked(fw);
        fw->stats.watchdog_trips++; /* the next STATUS reports SAFE without HEARTBEAT_OK */
    }
    if (now >= fw->next_status_us) { /* D6 */
        queue_status_locked(fw, now);
        fw->next_status_us += fw->cfg.status_period_us;
        if (fw->next_status_us <= now) {
            fw->next_status_us = now + fw->cfg.status_period_us; /* ticks were missed: no burst */
        }
    }
    unlock(fw, state);
}

/* Next bytes to send: the rest of a frame already started, else a control frame, else the oldest
 * SAMPLES frame. Frames never interleave: a new one starts only at a frame boundary. */
static const uint8_t *next_chunk_locked(rcs_fw_t *fw, size_t *len, bool *control)
{
    bool from_control = fw->c_sent > 0 || (fw->s_sent == 0 && fw->c_count > 0);
    *control = from_control;
    if (from_control) {
        *len = fw->ctl_len[fw->c_tail] - fw->c_sent;
        return fw->ctl[fw->c_tail] + fw->c_sent;
    }
    if (fw->s_count == 0) {
        *len = 0;
        return NULL;
    }
    const uint8_t *slot = slot_at(fw, fw->s_tail);
    fw->s_busy = true;
    *len = slot_u16(slot, 0) - fw->s_sent;
    return slot + 4 + fw->s_sent;
}

void rcs_fw_pump(rcs_fw_t *fw)
{
    for (;;) {
        size_t len;
        bool control;
        uint32_t state = lock(fw);
        const uint8_t *chunk = next_chunk_locked(fw, &len, &control);
        unlock(fw, state);
        if (len == 0) {
            return;
        }
        /* producers write only to free slots: these bytes stay put while port->write reads them */
        size_t taken = fw->port->write(fw->port->ctx, chunk, len);
        state = lock(fw);
        fw->s_busy = false;
        if (control) {
            fw->c_sent += taken;
            if (taken == len) {
                fw->c_sent = 0;
                fw->c_tail = (fw->c_tail + 1) % RCS_FW_CONTROL_SLOTS;
                fw->c_count--;
            }
        } else {
            fw->s_sent += taken;
            if (taken == len) {
                fw->s_sent = 0;
                fw->s_tail = (fw->s_tail + 1) % fw->n_slots;
                fw->s_count--;
            }
        }
        unlock(fw, state);
        if (taken == 0) {
            return; /* the link takes no more now */
        }
    }
}

rcs_fw_stats_t rcs_fw_stats(rcs_fw_t *fw)
{
    uint32_t state = lock(fw);
    rcs_fw_stats_t copy = fw->stats;
    copy.rx_bad_frames += fw->deframer.stats.bad_frames;
    copy.rx_crc_errors = fw->deframer.stats.crc_errors;
    unlock(fw, state);
    return copy;
}

uint16_t rcs_fw_valves(rcs_fw_t *fw)
{
    uint32_t state = lock(fw);
    uint16_t valves = outputs(fw);
    unlock(fw, state);
    return valves;
}

bool rcs_fw_safe(rcs_fw_t *fw)
{
    uint32_t state = lock(fw);
    bool safe = fw->safe;
    unlock(fw, state);
    return safe;
}

size_t rcs_fw_tx_pending(rcs_fw_t *fw)
{
    uint32_t state = lock(fw);
    size_t frames = fw->s_count + fw->c_count;
    unlock(fw, state);
    return frames;
}
