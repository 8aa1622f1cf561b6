/* Unit tests of the firmware core on the host: the spec's test vectors, random chunking and
 * corruption, the valve state machines, the watchdog and the transmit buffer's overflow.
 * Built with -Wall -Wextra -Werror and ASan/UBSan by firmware/Makefile; exit status 0 = pass. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_port.h"
#include "rcs_fw.h"

static int failures;
static const char *current;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: %s: CHECK(%s) failed\n", __FILE__, __LINE__, current, #cond); \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

/* xorshift: deterministic random inputs */
static uint32_t rng_state = 0x12345678u;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static size_t unhex(const char *hex, uint8_t *out)
{
    size_t n = 0;
    unsigned value;
    int used;
    while (sscanf(hex, " %2x%n", &value, &used) == 1) {
        out[n++] = (uint8_t)value;
        hex += used;
    }
    return n;
}

static bool bytes_equal(const uint8_t *a, size_t na, const char *hex)
{
    static uint8_t expected[8192];
    size_t nb = unhex(hex, expected);
    return na == nb && memcmp(a, expected, na) == 0;
}

/* --- collecting decoded frames -------------------------------------------------------------- */

#define MAX_BODIES 4096
typedef struct {
    size_t n;
    uint8_t *body[MAX_BODIES];
    size_t len[MAX_BODIES];
} bodies_t;

static void collect(void *ctx, const uint8_t *body, size_t len)
{
    bodies_t *b = ctx;
    if (b->n < MAX_BODIES) {
        b->body[b->n] = malloc(len);
        memcpy(b->body[b->n], body, len);
        b->len[b->n++] = len;
    }
}

static void bodies_free(bodies_t *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->body[i]);
    }
    b->n = 0;
}

static uint8_t big_rx[RCS_MAX_WIRE];

/* Decode everything the device wrote so far, then forget it. */
static void drain(fake_port_t *fake, bodies_t *out)
{
    rcs_deframer_t d;
    rcs_deframer_init(&d, big_rx, sizeof big_rx);
    rcs_deframer_feed(&d, fake->out, fake->out_len, collect, out);
    fake->out_len = 0;
}

static const uint8_t *last_of_type(const bodies_t *b, uint8_t type, size_t *len)
{
    for (size_t i = b->n; i-- > 0;) {
        if (b->body[i][0] == type) {
            if (len) {
                *len = b->len[i];
            }
            return b->body[i];
        }
    }
    return NULL;
}

static size_t count_type(const bodies_t *b, uint8_t type)
{
    size_t n = 0;
    for (size_t i = 0; i < b->n; i++) {
        n += b->body[i][0] == type;
    }
    return n;
}

/* --- framing ---------------------------------------------------------------------------------- */

static void test_crc(void)
{
    current = "crc";
    CHECK(rcs_crc16((const uint8_t *)"123456789", 9) == 0x29B1);
    CHECK(rcs_crc16(NULL, 0) == 0xFFFF);
}

static void cobs_vector(const uint8_t *in, size_t len, const uint8_t *expected, size_t expected_len)
{
    static uint8_t out[1024], back[1024];
    size_t n = rcs_cobs_encode(in, len, out);
    CHECK(n == expected_len && memcmp(out, expected, n) == 0);
    if (len > 0) {
        CHECK(rcs_cobs_decode(out, n, back, sizeof back) == len && memcmp(back, in, len) == 0);
    }
}

static void test_cobs_vectors(void)
{
    current = "cobs vectors";
    uint8_t in[300] = {0}, out[300];
    cobs_vector(in, 0, (const uint8_t *)"\x01", 1);
    cobs_vector((const uint8_t *)"\x00", 1, (const uint8_t *)"\x01\x01", 2);
    cobs_vector((const uint8_t *)"\x11\x22\x00\x33", 4, (const uint8_t *)"\x03\x11\x22\x02\x33", 5);
    cobs_vector((const uint8_t *)"\x11\x00\x00\x00", 4, (const uint8_t *)"\x02\x11\x01\x01\x01", 5);
    memset(in, 1, sizeof in);
    out[0] = 0xFF;
    memset(out + 1, 1, 254);
    cobs_vector(in, 254, out, 255);
    out[255] = 0x02;
    out[256] = 0x01;
    cobs_vector(in, 255, out, 257);
    /* malformed: a code pointing past the end, a zero code */
    uint8_t back[16];
    CHECK(rcs_cobs_decode((const uint8_t *)"\x05\x11", 2, back, sizeof back) == 0);
    CHECK(rcs_cobs_decode((const uint8_t *)"\x00\x11", 2, back, sizeof back) == 0);
    /* too long for the output */
    CHECK(rcs_cobs_decode((const uint8_t *)"\x04\x11\x22\x33", 4, back, 2) == 0);
}

/* The streaming encoder equals COBS(body | crc) + 0x00 for random frames and every run length near
 * the 254-byte block limit. */
static void check_stream_encoder(const uint8_t *body, size_t len)
{
    static uint8_t plain[RCS_MAX_FRAME + 2], expected[RCS_MAX_WIRE], got[RCS_MAX_WIRE];
    memcpy(plain, body, len);
    uint16_t crc = rcs_crc16(body, len);
    plain[len] = (uint8_t)crc;
    plain[len + 1] = (uint8_t)(crc >> 8);
    size_t n = rcs_cobs_encode(plain, len + 2, expected);
    expected[n++] = 0;
    rcs_encoder_t e;
    rcs_enc_begin(&e, got, body[0]);
    rcs_enc_bytes(&e, body + 1, len - 1);
    size_t m = rcs_enc_end(&e);
    CHECK(m == n && memcmp(got, expected, n) == 0);
    CHECK(m <= RCS_WIRE_SIZE(len + 2));
}

static void test_stream_encoder(void)
{
    current = "stream encoder";
    static uint8_t body[RCS_MAX_FRAME];
    for (size_t run = 240; run < 520; run++) { /* non-zero runs around 254 and 508 */
        memset(body, 0x5A, run);
        body[0] = 1;
        check_stream_encoder(body, run);
        body[run - 1] = 0; /* ... ending in a zero */
        check_stream_encoder(body, run);
    }
    for (int i = 0; i < 3000; i++) {
        size_t len = 1 + rnd() % (RCS_MAX_FRAME - 2);
        for (size_t k = 0; k < len; k++) {
            uint32_t r = rnd();
            body[k] = (r & 0x300) ? (uint8_t)r : 0; /* a zero in ~1/4 of the bytes */
        }
        check_stream_encoder(body, len);
    }
}

static void test_spec_examples(void)
{
    current = "spec §5 examples";
    uint8_t wire[RCS_MAX_WIRE];
    size_t n;
    n = rcs_frame_encode(RCS_FRAME_SET_VALVES, (const uint8_t *)"\x07\x00\x12\x00", 4, wire);
    CHECK(bytes_equal(wire, n, "03 81 07 02 12 03 b1 ad 00"));
    n = rcs_frame_encode(RCS_FRAME_VALVE_ACK, (const uint8_t *)"\x07\x00\x12\x00\x00", 5, wire);
    CHECK(bytes_equal(wire, n, "03 03 07 02 12 01 03 27 8a 00"));
    n = rcs_frame_encode(RCS_FRAME_HEARTBEAT, (const uint8_t *)"\x02\x01", 2, wire);
    CHECK(bytes_equal(wire, n, "06 82 02 01 e5 ef 00"));
    n = rcs_frame_encode(RCS_FRAME_GO_SAFE, (const uint8_t *)"\x08\x00", 2, wire);
    CHECK(bytes_equal(wire, n, "03 83 08 03 3f 27 00"));
    n = rcs_frame_encode(RCS_FRAME_HELLO, NULL, 0, wire);
    CHECK(bytes_equal(wire, n, "04 84 fc 30 00"));
    rcs_encoder_t e;
    rcs_enc_begin(&e, wire, RCS_FRAME_STATUS);
    rcs_enc_u8(&e, 1);
    rcs_enc_u32(&e, 10000);
    rcs_enc_u8(&e, 17);
    rcs_enc_u16(&e, 0x0012);
    rcs_enc_u8(&e, RCS_STATUS_FLAG_HEARTBEAT_OK);
    rcs_enc_u16(&e, 7);
    rcs_enc_bytes(&e, (const uint8_t *)"rcs-f767 1.0", 12);
    n = rcs_enc_end(&e);
    CHECK(bytes_equal(wire, n, "05 02 01 10 27 01 03 11 12 03 02 07 0f 72 63 73 2d 66 37 36 37 20 31 2e 30 2c 8c 00"));

    /* §5.1 through the device: counter 100, first sample at t_us 10000, 2 samples x 17 channels */
    static const uint16_t sample0[17] = {512, 627, 745, 823, 921, 1024, 1159, 1233, 558,
                                         577, 596, 614, 633, 651, 2458, 2234, 2662};
    uint16_t raw[2 * 17];
    for (int c = 0; c < 17; c++) {
        raw[c] = sample0[c];
        raw[17 + c] = (uint16_t)(sample0[c] + 1);
    }
    static fake_port_t fake;
    static rcs_fw_t fw;
    static uint8_t tx[8192];
    fake_port_init(&fake);
    rcs_fw_config_t cfg = rcs_fw_default_config(10000, 17, 9, "rcs-f767 1.0");
    rcs_fw_init(&fw, &cfg, &fake.port, tx, sizeof tx);
    fw.counter = 100;
    fake.now_us = 10100; /* the callback comes after the last sample: 10000 + 1 period */
    rcs_fw_pump(&fw);
    fake.out_len = 0; /* the boot STATUS */
    rcs_fw_samples(&fw, raw, 2);
    rcs_fw_pump(&fw);
    CHECK(bytes_equal(fake.out, fake.out_len,
                      "03 01 64 01 01 03 10 27 01 01 01 01 01 03 11 02"
                      "01 0a 02 73 02 e9 02 37 03 99 03 3c 04 87 04 d1"
                      "04 2e 02 41 02 54 02 66 02 79 02 8b 02 9a 09 ba"
                      "08 66 0a 01 02 74 02 ea 02 38 03 9a 03 01 04 88"
                      "04 d2 04 2f 02 42 02 55 02 67 02 7a 02 8c 02 9b"
                      "09 bb 08 67 0a 24 1b 00"));
}

/* A stream of random frames with garbage between some, cut into random chunks: every intact frame
 * comes out once, in order, whatever the cuts; garbage and damaged frames are counted, not passed. */
static void test_deframer_chunking_and_corruption(void)
{
    current = "deframer";
    static uint8_t stream[1 << 20], body[600];
    static uint8_t expected_type[2000];
    static size_t expected_len[2000];
    size_t n = 0, frames = 0, corrupted = 0;
    stream[n++] = 0; /* start in sync */
    while (frames < 1500) {
        size_t len = 1 + rnd() % 500;
        body[0] = (uint8_t)(1 + rnd() % 250);
        for (size_t k = 1; k < len; k++) {
            body[k] = (rnd() & 3) ? (uint8_t)rnd() : 0;
        }
        size_t at = n;
        n += rcs_frame_encode(body[0], body + 1, len - 1, stream + n);
        if (rnd() % 10 == 0) { /* damage one non-delimiter byte: bad COBS or bad CRC */
            size_t k = at + rnd() % (n - at - 1);
            uint8_t flipped = (uint8_t)(stream[k] ^ (1u << (rnd() % 8)));
            stream[k] = flipped ? flipped : 0x55;
            corrupted++;
        } else {
            expected_type[frames] = body[0];
            expected_len[frames++] = len;
        }
        if (rnd() % 8 == 0) { /* garbage, then a delimiter to resynchronise */
            size_t g = 1 + rnd() % 40;
            for (size_t k = 0; k < g; k++) {
                stream[n++] = (uint8_t)(rnd() | 1);
            }
            stream[n++] = 0;
            corrupted++;
        }
        if (rnd() % 16 == 0) {
            stream[n++] = 0; /* empty frames are padding */
        }
    }
    static uint8_t buf[RCS_MAX_WIRE];
    rcs_deframer_t d;
    rcs_deframer_init(&d, buf, sizeof buf);
    static bodies_t got;
    for (size_t i = 0; i < n;) {
        size_t chunk = 1 + rnd() % 700;
        if (chunk > n - i) {
            chunk = n - i;
        }
        rcs_deframer_feed(&d, stream + i, chunk, collect, &got);
        i += chunk;
    }
    CHECK(got.n >= frames);
    size_t matched = 0;
    for (size_t i = 0; i < got.n && matched < frames; i++) { /* a damaged frame may still pass by luck */
        if (got.body[i][0] == expected_type[matched] && got.len[i] == expected_len[matched]) {
            matched++;
        }
    }
    CHECK(matched == frames);
    CHECK(d.stats.crc_errors + d.stats.bad_frames + (got.n - frames) >= corrupted);
    bodies_free(&got);

    /* a runaway frame longer than the buffer is one bad frame, and the next frame still arrives */
    uint8_t small[16];
    rcs_deframer_init(&d, small, sizeof small);
    memset(stream, 0x42, 100);
    size_t m = 100 + rcs_frame_encode(RCS_FRAME_HELLO, NULL, 0, stream + 100);
    stream[100 - 1] = 0;
    rcs_deframer_feed(&d, stream, m, collect, &got);
    CHECK(d.stats.bad_frames == 1 && got.n == 1 && got.body[0][0] == RCS_FRAME_HELLO);
    bodies_free(&got);
}

/* --- the device ------------------------------------------------------------------------------- */

static fake_port_t fake;
static rcs_fw_t fw;
static uint8_t tx[64 * 1024];

static void boot(size_t tx_size)
{
    fake_port_init(&fake);
    fake.valves = 0x1FF; /* whatever the outputs were: boot closes them */
    fake.now_us = 1000;
    rcs_fw_config_t cfg = rcs_fw_default_config(10000, 17, 9, "rcs-test");
    rcs_fw_init(&fw, &cfg, &fake.port, tx, tx_size);
}

static void host_send(uint8_t type, const uint8_t *payload, size_t len)
{
    uint8_t wire[64];
    size_t n = rcs_frame_encode(type, payload, len, wire);
    for (size_t i = 0; i < n; i++) { /* byte by byte: the worst chunking */
        rcs_fw_receive(&fw, wire + i, 1);
    }
}

static void heartbeat(void) { host_send(RCS_FRAME_HEARTBEAT, (const uint8_t *)"\x01\x00", 2); }

static void set_valves(uint16_t cmd, uint16_t mask)
{
    uint8_t p[4] = {(uint8_t)cmd, (uint8_t)(cmd >> 8), (uint8_t)mask, (uint8_t)(mask >> 8)};
    host_send(RCS_FRAME_SET_VALVES, p, 4);
}

static void go_safe(uint16_t cmd)
{
    uint8_t p[2] = {(uint8_t)cmd, (uint8_t)(cmd >> 8)};
    host_send(RCS_FRAME_GO_SAFE, p, 2);
}

/* The last VALVE_ACK the device sent: cmd_no, valves, result. */
static bool last_ack(uint16_t cmd, uint16_t valves, uint8_t result)
{
    static bodies_t b;
    rcs_fw_pump(&fw);
    drain(&fake, &b);
    size_t len = 0;
    const uint8_t *ack = last_of_type(&b, RCS_FRAME_VALVE_ACK, &len);
    bool ok = ack && len == 6 && rcs_get_u16(ack + 1) == cmd && rcs_get_u16(ack + 3) == valves && ack[5] == result;
    bodies_free(&b);
    return ok;
}

/* The last STATUS: valves, flags, last_cmd. */
static bool last_status(uint16_t valves, uint8_t flags, uint16_t last_cmd)
{
    static bodies_t b;
    rcs_fw_pump(&fw);
    drain(&fake, &b);
    size_t len = 0;
    const uint8_t *s = last_of_type(&b, RCS_FRAME_STATUS, &len);
    bool ok = s && len == 12 + strlen("rcs-test") && s[1] == 1 && rcs_get_u32(s + 2) == 10000 && s[6] == 17 &&
              rcs_get_u16(s + 7) == valves && s[9] == flags && rcs_get_u16(s + 10) == last_cmd &&
              memcmp(s + 12, "rcs-test", 8) == 0;
    bodies_free(&b);
    return ok;
}

static void test_boot_and_hello(void)
{
    current = "boot";
    boot(sizeof tx);
    CHECK(fake.valves == 0 && fw.safe);
    CHECK(last_status(0, RCS_STATUS_FLAG_SAFE, 0));
    host_send(RCS_FRAME_HELLO, NULL, 0);
    CHECK(last_status(0, RCS_STATUS_FLAG_SAFE, 0));
    /* periodic STATUS every 100 ms, no burst after missed ticks */
    static bodies_t b;
    for (int ms = 1; ms <= 1000; ms++) {
        fake.now_us = 1000 + (uint32_t)ms * 1000u;
        rcs_fw_tick(&fw);
        rcs_fw_pump(&fw);
    }
    rcs_fw_pump(&fw);
    drain(&fake, &b);
    CHECK(count_type(&b, RCS_FRAME_STATUS) == 10);
    bodies_free(&b);
    fake.now_us += 5000000;
    rcs_fw_tick(&fw);
    rcs_fw_tick(&fw);
    rcs_fw_pump(&fw);
    drain(&fake, &b);
    CHECK(count_type(&b, RCS_FRAME_STATUS) == 1);
    bodies_free(&b);
}

static void test_valve_commands(void)
{
    current = "valve commands";
    boot(sizeof tx);
    set_valves(1, 0x0012); /* no heartbeat yet */
    CHECK(last_ack(1, 0, RCS_ACK_REFUSED_NO_HEARTBEAT) && fake.valves == 0);
    heartbeat();
    set_valves(2, 0x0200); /* bit 9: the stand has 9 valves */
    CHECK(last_ack(2, 0, RCS_ACK_REFUSED_BAD_MASK) && fake.valves == 0);
    set_valves(3, 0x0012);
    CHECK(last_ack(3, 0x0012, RCS_ACK_APPLIED) && fake.valves == 0x0012 && !fw.safe);
    host_send(RCS_FRAME_HELLO, NULL, 0);
    CHECK(last_status(0x0012, RCS_STATUS_FLAG_HEARTBEAT_OK, 3));
    set_valves(4, 0x8000); /* a bad mask leaves the outputs as they are */
    CHECK(last_ack(4, 0x0012, RCS_ACK_REFUSED_BAD_MASK) && fake.valves == 0x0012);
    go_safe(5);
    CHECK(last_ack(5, 0, RCS_ACK_APPLIED) && fake.valves == 0 && fw.safe);
    host_send(RCS_FRAME_HELLO, NULL, 0);
    CHECK(last_status(0, RCS_STATUS_FLAG_SAFE | RCS_STATUS_FLAG_HEARTBEAT_OK, 5));
    set_valves(6, 0x0001); /* the next applied SET_VALVES clears SAFE */
    CHECK(last_ack(6, 0x0001, RCS_ACK_APPLIED) && !fw.safe);

    /* wrong payload sizes, device -> host types, unknown types: dropped unanswered, counted */
    uint32_t calls = fake.set_valves_calls;
    host_send(RCS_FRAME_SET_VALVES, (const uint8_t *)"\x07\x00\x00", 3);
    host_send(RCS_FRAME_GO_SAFE, (const uint8_t *)"\x07\x00\x00", 3);
    host_send(RCS_FRAME_HELLO, (const uint8_t *)"\x00", 1);
    host_send(RCS_FRAME_VALVE_ACK, (const uint8_t *)"\x07\x00\x00\x00\x00", 5);
    host_send(0x7F, NULL, 0);
    uint8_t corrupt[16];
    size_t n = rcs_frame_encode(RCS_FRAME_GO_SAFE, (const uint8_t *)"\x09\x00", 2, corrupt);
    corrupt[2] ^= 0x40; /* CRC error: not a GO_SAFE */
    rcs_fw_receive(&fw, corrupt, n);
    rcs_fw_pump(&fw);
    CHECK(fake.out_len == 0 && fake.set_valves_calls == calls && fake.valves == 0x0001);
    rcs_fw_stats_t s = rcs_fw_stats(&fw);
    CHECK(s.rx_bad_frames == 5 && s.rx_crc_errors == 1 && s.commands == 6);
    CHECK(fake.critical_depth == 0);
}

static void test_watchdog(void)
{
    current = "watchdog";
    boot(sizeof tx);
    heartbeat(); /* at t = 1000 */
    set_valves(10, 0x01C0);
    CHECK(last_ack(10, 0x01C0, RCS_ACK_APPLIED));
    fake.now_us = 1000 + 499999;
    rcs_fw_tick(&fw);
    CHECK(fake.valves == 0x01C0 && !fw.safe);
    fake.now_us = 1000 + 500000; /* 500 ms without a heartbeat */
    rcs_fw_tick(&fw);
    CHECK(fake.valves == 0 && fw.safe);
    for (int ms = 1; ms <= 100; ms++) { /* reported by the next periodic STATUS */
        fake.now_us += 1000;
        rcs_fw_tick(&fw);
    }
    CHECK(last_status(0, RCS_STATUS_FLAG_SAFE, 10));
    CHECK(rcs_fw_stats(&fw).watchdog_trips == 1);
    set_valves(11, 0x0002);
    CHECK(last_ack(11, 0, RCS_ACK_REFUSED_NO_HEARTBEAT) && fake.valves == 0);
    heartbeat(); /* heartbeats resume: still closed and SAFE until a SET_VALVES is applied */
    rcs_fw_tick(&fw);
    host_send(RCS_FRAME_HELLO, NULL, 0);
    CHECK(fake.valves == 0 && fw.safe);
    CHECK(last_status(0, RCS_STATUS_FLAG_SAFE | RCS_STATUS_FLAG_HEARTBEAT_OK, 11));
    set_valves(12, 0x0002);
    CHECK(last_ack(12, 0x0002, RCS_ACK_APPLIED) && !fw.safe);
    /* heartbeats every 100 ms keep the valves open for a long time, across a 32-bit clock wrap */
    fake.now_us = 0xFFFFFFFFu - 250000u;
    heartbeat();
    rcs_fw_tick(&fw);
    for (int i = 0; i < 50; i++) {
        fake.now_us += 100000;
        heartbeat();
        rcs_fw_tick(&fw);
    }
    CHECK(fake.valves == 0x0002 && rcs_fw_stats(&fw).watchdog_trips == 1);
    /* a heartbeat with a bad CRC does not feed the watchdog */
    uint8_t wire[16];
    size_t n = rcs_frame_encode(RCS_FRAME_HEARTBEAT, (const uint8_t *)"\x05\x00", 2, wire);
    wire[1] ^= 0x01;
    fake.now_us += 400000;
    rcs_fw_receive(&fw, wire, n);
    fake.now_us += 100000;
    rcs_fw_tick(&fw);
    CHECK(fake.valves == 0 && rcs_fw_stats(&fw).watchdog_trips == 2);
}

/* A host that stops reading: the buffer fills, the oldest whole frames are dropped and counted
 * (never the one partly sent), the counter gap shows it, acknowledgements still go out (their own
 * queue, ahead of the sample backlog), and the stream resumes when the host reads again. */
static void test_transmit_overflow(void)
{
    current = "transmit overflow";
    boot(16 * 1024);
    CHECK(fw.n_slots == 16 * 1024 / (4 + 702 + 2));
    rcs_fw_pump(&fw);
    fake.out_len = 0;
    heartbeat();
    uint16_t raw[20 * 17];
    for (size_t i = 0; i < 20 * 17; i++) {
        raw[i] = (uint16_t)(i % 4096);
    }
    fake.budget = 100; /* the host takes 100 bytes of frame 0, then stops reading */
    fake.now_us += 2000;
    rcs_fw_samples(&fw, raw, 20);
    rcs_fw_pump(&fw);
    CHECK(fake.out_len == 100); /* frame 0 is partly sent */
    fake.budget = -1;
    fake.link_busy = true;
    for (int block = 1; block <= 100; block++) { /* 200 ms at 10 kHz: ~70 KB, far beyond 16 KiB */
        fake.now_us += 2000;
        rcs_fw_samples(&fw, raw, 20);
        rcs_fw_pump(&fw);
    }
    rcs_fw_stats_t s = rcs_fw_stats(&fw);
    CHECK(s.samples == 2020 && s.frames_dropped == 101 - fw.n_slots && s.samples_dropped == 20u * s.frames_dropped);
    CHECK(rcs_fw_tx_pending(&fw) == fw.n_slots && s.tx_high_water == fw.n_slots);
    set_valves(20, 0x0004);
    fake.link_busy = false;
    fake.write_max = 61; /* the host now reads in odd chunks */
    rcs_fw_pump(&fw);
    for (int block = 0; block < 3; block++) {
        fake.now_us += 2000;
        rcs_fw_samples(&fw, raw, 20);
    }
    rcs_fw_pump(&fw);
    static bodies_t b;
    drain(&fake, &b);
    CHECK(b.body[0][0] == RCS_FRAME_SAMPLES && rcs_get_u32(b.body[0] + 1) == 0); /* completed whole */
    CHECK(b.body[1][0] == RCS_FRAME_VALVE_ACK); /* next, ahead of the backlog */
    const uint8_t *ack = b.body[1];
    CHECK(rcs_get_u16(ack + 1) == 20 && rcs_get_u16(ack + 3) == 0x0004 && ack[5] == RCS_ACK_APPLIED);
    CHECK(rcs_fw_stats(&fw).control_dropped == 0);
    /* frames that got out are whole and in order; the counter jumps over the dropped ones */
    uint32_t next = 0, gaps = 0, received = 0;
    for (size_t i = 0; i < b.n; i++) {
        if (b.body[i][0] != RCS_FRAME_SAMPLES) {
            continue;
        }
        CHECK(b.len[i] == 16 + 2 * 17 * 20 && rcs_get_u16(b.body[i] + 14) == 20 && b.body[i][13] == 17);
        uint32_t counter = rcs_get_u32(b.body[i] + 1);
        CHECK(counter >= next);
        gaps += counter != next;
        next = counter + 20;
        received += 20;
    }
    CHECK(gaps == 1 && next == 2080 && received == 2080 - s.samples_dropped);
    bodies_free(&b);
    CHECK(fake.critical_depth == 0);
}

/* A block larger than a frame is cut into frames; timestamps advance by the sample period. */
static void test_block_splitting(void)
{
    current = "block splitting";
    boot(sizeof tx);
    rcs_fw_pump(&fw);
    fake.out_len = 0;
    static uint16_t raw[250 * 17];
    for (size_t i = 0; i < 250 * 17; i++) {
        raw[i] = (uint16_t)(i & 0x0FFF);
    }
    fake.now_us = 50000 + 249 * 100; /* first sample at 50 ms */
    rcs_fw_samples(&fw, raw, 250);
    rcs_fw_pump(&fw);
    static bodies_t b;
    drain(&fake, &b);
    CHECK(b.n == 13); /* 12 x 20 + 10 */
    uint32_t counter = 0;
    for (size_t i = 0; i < b.n; i++) {
        uint16_t n = rcs_get_u16(b.body[i] + 14);
        CHECK(rcs_get_u32(b.body[i] + 1) == counter);
        CHECK(rcs_get_u64(b.body[i] + 5) == 50000u + counter * 100u);
        CHECK(memcmp(b.body[i] + 16, raw + counter * 17, (size_t)n * 34) == 0);
        counter += n;
    }
    CHECK(counter == 250);
    bodies_free(&b);
}

/* Random bytes in random chunks (a noisy or wrong link): nothing crashes or reads out of bounds
 * (ASan), the outputs never move without a valid frame, and the device answers a HELLO after it. */
static void test_receive_garbage(void)
{
    current = "receive garbage";
    boot(sizeof tx);
    rcs_fw_pump(&fw);
    fake.out_len = 0;
    static uint8_t noise[1 << 16];
    for (int round = 0; round < 16; round++) {
        for (size_t i = 0; i < sizeof noise; i++) {
            uint32_t r = rnd();
            noise[i] = (r & 0x3F00) ? (uint8_t)r : 0;
        }
        for (size_t i = 0; i < sizeof noise;) {
            size_t chunk = 1 + rnd() % 300;
            if (chunk > sizeof noise - i) {
                chunk = sizeof noise - i;
            }
            rcs_fw_receive(&fw, noise + i, chunk);
            i += chunk;
        }
    }
    CHECK(fake.valves == 0 && fw.safe && fake.critical_depth == 0);
    rcs_fw_stats_t s = rcs_fw_stats(&fw);
    CHECK(s.rx_bad_frames + s.rx_crc_errors > 1000);
    uint8_t zero = 0;
    rcs_fw_receive(&fw, &zero, 1); /* end whatever frame the noise left open */
    host_send(RCS_FRAME_HELLO, NULL, 0);
    CHECK(last_status(0, RCS_STATUS_FLAG_SAFE, fw.last_cmd));
}

int main(void)
{
    test_crc();
    test_cobs_vectors();
    test_stream_encoder();
    test_spec_examples();
    test_deframer_chunking_and_corruption();
    test_boot_and_hello();
    test_valve_commands();
    test_watchdog();
    test_transmit_overflow();
    test_block_splitting();
    test_receive_garbage();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("firmware core: all tests passed\n");
    return 0;
}
