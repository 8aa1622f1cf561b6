/* rcs_fw: the device side of STM32 binary protocol v1 (docs/stm32-protocol.md §2–§3).
 *
 * Portable C11, no HAL, no heap, no floating point. The application owns the peripherals and calls
 * the core from four places (firmware/README.md shows where in a CubeMX project):
 *
 *   rcs_fw_samples()  ADC DMA half/full-transfer callback   (interrupt)
 *   rcs_fw_receive()  USB CDC receive callback              (interrupt)
 *   rcs_fw_tick()     a 1 kHz timer interrupt               (interrupt: the heartbeat watchdog)
 *   rcs_fw_pump()     the main loop                         (thread mode, the only consumer of
 *                                                            the transmit buffer)
 *
 * Contexts may preempt each other: shared state is touched only between port->enter_critical and
 * port->exit_critical, for a few hundred cycles at most (copying one frame into the transmit
 * buffer). Each of the four functions must be called from one context only.
 */
#ifndef RCS_FW_H
#define RCS_FW_H

#include "rcs_wire.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RCS_FW_MAX_VALVES 16u
#define RCS_FW_MAX_DEVICE_TEXT 64u
#define RCS_FW_RX_BUFFER 32u /* longest host -> device frame encoded: 9 bytes; longer is garbage */

/* What the application implements. Every function is called with `ctx`. */
typedef struct {
    void *ctx;
    /* A free-running 1 MHz counter (e.g. TIM2->CNT, 32 bits); it may wrap at 2^32. The core extends
     * it to 64 bits, so it must be read at least once per wrap (71 minutes): rcs_fw_tick does. */
    uint32_t (*now_us)(void *ctx);
    /* Take up to len bytes for the host without blocking; return how many were taken (copied or
     * queued by the USB stack), 0 while the link is busy or down. */
    size_t (*write)(void *ctx, const uint8_t *data, size_t len);
    /* Drive the valve outputs: bit i = valve i energised. Called only inside a critical section. */
    void (*set_valves)(void *ctx, uint16_t mask);
    /* The outputs as actually driven now (e.g. read back from the GPIO output register). */
    uint16_t (*read_valves)(void *ctx);
    /* Mask the interrupts that call the core; return what exit_critical needs to restore. */
    uint32_t (*enter_critical)(void *ctx);
    void (*exit_critical)(void *ctx, uint32_t state);
} rcs_fw_port_t;

typedef struct {
    uint32_t rate_hz;        /* sample rate, reported in STATUS (10000) */
    uint8_t n_channels;      /* channels per sample (17) */
    uint8_t n_valves;        /* valve outputs (9); SET_VALVES with higher bits is refused */
    uint16_t max_frame_samples; /* samples per SAMPLES frame at most (20 = 2 ms at 10 kHz); <= the
                                 * protocol's limit for n_channels; a block is cut into such frames */
    const char *device;      /* STATUS text, <= 64 bytes, e.g. "rcs-f767 1.0.0" */
    uint32_t heartbeat_timeout_us; /* 500000: spec D1 */
    uint32_t status_period_us;     /* 100000: spec D6 */
} rcs_fw_config_t;

/* A config with the protocol's values (500 ms watchdog, STATUS every 100 ms, 2 ms per frame). */
rcs_fw_config_t rcs_fw_default_config(uint32_t rate_hz, uint8_t n_channels, uint8_t n_valves,
                                      const char *device);

typedef struct {
    uint64_t samples;         /* samples taken (handed to rcs_fw_samples), sent or not */
    uint64_t samples_dropped; /* samples whose frame did not fit the transmit buffer */
    uint32_t frames_queued;   /* frames that entered the transmit buffer */
    uint32_t frames_dropped;  /* SAMPLES frames dropped whole to make room (the host sees the gap) */
    uint32_t control_dropped; /* VALVE_ACK / STATUS frames that found their queue full (stays 0
                               * unless the host stops reading and keeps sending commands) */
    uint32_t tx_high_water;   /* most SAMPLES frames ever waiting */
    uint32_t commands;        /* SET_VALVES and GO_SAFE processed */
    uint32_t heartbeats;      /* valid HEARTBEATs received */
    uint32_t watchdog_trips;  /* times the heartbeat watchdog closed the valves */
    uint32_t rx_bad_frames;   /* unknown types, wrong payload sizes, bad COBS, too long */
    uint32_t rx_crc_errors;
} rcs_fw_stats_t;

#define RCS_FW_CONTROL_SLOTS 8u
#define RCS_FW_CONTROL_WIRE RCS_WIRE_SIZE(1u + RCS_STATUS_FIXED + RCS_FW_MAX_DEVICE_TEXT + 2u)

/* Everything the core keeps (about 1 KB) plus the transmit buffer the application provides.
 *
 * Transmit buffer: whole SAMPLES frames in fixed slots (one frame of cfg.max_frame_samples each);
 * when the host does not read and every slot is full, the OLDEST frame not being sent is dropped,
 * so the host finds the most recent samples, contiguous, when it reads again, and the counter gap
 * shows the loss. VALVE_ACK and STATUS frames have their own small queue and go out first at the
 * next frame boundary: an acknowledgement never waits behind a backlog of samples. */
typedef struct {
    rcs_fw_config_t cfg;
    const rcs_fw_port_t *port;

    /* time: 32-bit port counter extended to 64 bits (shared, critical section) */
    uint32_t time_last;
    uint64_t time_high;

    /* valve state machine (shared, critical section) */
    bool safe;
    bool heartbeat_seen;
    uint64_t last_heartbeat_us;
    uint16_t last_cmd;
    uint64_t next_status_us;

    /* SAMPLES slots (shared, critical section): order[] is a permutation of the slot numbers, the
     * queued frames at positions s_tail .. s_tail + s_count - 1, oldest first */
    uint8_t *slots;
    uint16_t *order;
    size_t slot_size, n_slots, s_tail, s_count, s_sent;
    bool s_busy;     /* the pump is handing the oldest frame to port->write */

    /* control frames (shared, critical section): drop the newest if ever full */
    uint8_t ctl[RCS_FW_CONTROL_SLOTS][RCS_FW_CONTROL_WIRE];
    uint16_t ctl_len[RCS_FW_CONTROL_SLOTS];
    size_t c_tail, c_count, c_sent;

    /* sample context only */
    uint32_t counter;

    /* receive context only */
    rcs_deframer_t deframer;
    uint8_t rx_buf[RCS_FW_RX_BUFFER];

    rcs_fw_stats_t stats;
} rcs_fw_t;

/* Bytes of transmit buffer for `frames` SAMPLES frames of max_frame_samples x n_channels. */
#define RCS_FW_SLOT_SIZE(max_frame_samples, n_channels) \
    (4u + RCS_WIRE_SIZE(1u + RCS_SAMPLES_HEADER + 2u * (max_frame_samples) * (n_channels) + 2u))
#define RCS_FW_TX_BYTES(frames, max_frame_samples, n_channels) \
    ((frames) * (RCS_FW_SLOT_SIZE(max_frame_samples, n_channels) + 2u) + 2u)

/* Set up the core and boot the device (spec D2): every valve closed through set_valves(0), SAFE,
 * no heartbeat yet, a STATUS queued, sample counter 0. tx_buf holds the SAMPLES frames the host
 * has not read yet, at least 2 frames: e.g. 64 KiB holds 92 frames of 20 samples x 17 channels,
 * 184 ms at 10 kHz (RCS_FW_TX_BYTES computes the size for a number of frames). Returns false if
 * tx_size is too small (nothing is sent then). */
bool rcs_fw_init(rcs_fw_t *fw, const rcs_fw_config_t *cfg, const rcs_fw_port_t *port, uint8_t *tx_buf,
                 size_t tx_size);

/* A block of n_samples samples of cfg.n_channels raw ADC counts, sample-major, the last one just
 * converted (a DMA half/full-transfer callback). Counts and timestamps them and queues SAMPLES
 * frames of at most cfg.max_frame_samples, encoding straight into the transmit buffer; with the
 * buffer full the oldest frame is dropped whole (the host sees a counter gap). Never blocks. */
void rcs_fw_samples(rcs_fw_t *fw, const uint16_t *raw, size_t n_samples);

/* Bytes from the host, any chunking (USB CDC receive callback). Answers go to the transmit buffer. */
void rcs_fw_receive(rcs_fw_t *fw, const uint8_t *data, size_t len);

/* Run the heartbeat watchdog and the periodic STATUS; call every 1 ms from a timer interrupt that
 * does not depend on the USB stack. */
void rcs_fw_tick(rcs_fw_t *fw);

/* Hand waiting bytes to port->write until it takes no more (main loop). */
void rcs_fw_pump(rcs_fw_t *fw);

/* Consistent snapshots for the application (debug output, LEDs). */
rcs_fw_stats_t rcs_fw_stats(rcs_fw_t *fw);
uint16_t rcs_fw_valves(rcs_fw_t *fw);
bool rcs_fw_safe(rcs_fw_t *fw);
size_t rcs_fw_tx_pending(rcs_fw_t *fw); /* frames waiting, samples and control */

#ifdef __cplusplus
}
#endif

#endif /* RCS_FW_H */
