/* rcs_wire: STM32 binary protocol v1 framing (docs/stm32-protocol.md §1–§2).
 *
 * CRC-16/CCITT-FALSE, COBS with 0x00 delimiters, a streaming frame encoder that COBS-encodes and
 * CRCs in one pass (no copy of the frame), and a streaming decoder that survives any chunking and
 * garbage. Portable C11: no HAL, no heap, no floating point. Not thread-safe by itself: one encoder
 * or decoder per execution context (rcs_fw.h arranges that).
 */
#ifndef RCS_WIRE_H
#define RCS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RCS_PROTOCOL_VERSION 1u
#define RCS_MAX_FRAME 4096u /* decoded frame, type and CRC included */
#define RCS_MIN_FRAME 3u    /* type + CRC */
/* Encoded size of a decoded frame of n bytes, delimiter included. */
#define RCS_WIRE_SIZE(n) ((n) + (n) / 254u + 1u + 1u)
#define RCS_MAX_WIRE RCS_WIRE_SIZE(RCS_MAX_FRAME)

enum rcs_frame_type {
    RCS_FRAME_SAMPLES = 0x01,    /* device -> host */
    RCS_FRAME_STATUS = 0x02,     /* device -> host */
    RCS_FRAME_VALVE_ACK = 0x03,  /* device -> host */
    RCS_FRAME_SET_VALVES = 0x81, /* host -> device */
    RCS_FRAME_HEARTBEAT = 0x82,  /* host -> device */
    RCS_FRAME_GO_SAFE = 0x83,    /* host -> device */
    RCS_FRAME_HELLO = 0x84,      /* host -> device */
};

enum rcs_ack_result {
    RCS_ACK_APPLIED = 0,
    RCS_ACK_REFUSED_NO_HEARTBEAT = 1,
    RCS_ACK_REFUSED_BAD_MASK = 2,
};

#define RCS_STATUS_FLAG_SAFE 0x01u
#define RCS_STATUS_FLAG_HEARTBEAT_OK 0x02u

#define RCS_SAMPLES_HEADER 15u /* counter u32, t_us u64, n_channels u8, n_samples u16 */
#define RCS_STATUS_FIXED 11u   /* version, rate_hz, n_channels, valves, flags, last_cmd */

/* CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final XOR); check "123456789" = 0x29B1. */
uint16_t rcs_crc16(const uint8_t *data, size_t len);
uint16_t rcs_crc16_update(uint16_t crc, const uint8_t *data, size_t len);

/* COBS-encode len bytes into out (room for len + len/254 + 1); returns the encoded length, no
 * delimiter. Identical output to the reference code of docs/stm32-protocol.md §1.2. */
size_t rcs_cobs_encode(const uint8_t *in, size_t len, uint8_t *out);

/* COBS-decode len bytes (delimiter excluded) into out (room for out_cap bytes; out may equal in:
 * decoding in place is safe). Returns the decoded length, or 0 for malformed input or input that
 * does not fit. (A valid frame is never empty: it holds at least a type and a CRC.) */
size_t rcs_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap);

/* Streaming frame encoder: rcs_enc_begin, then the type and payload through rcs_enc_u8/u16/...,
 * then rcs_enc_end appends the CRC, closes the COBS block and the 0x00 delimiter. The output needs
 * RCS_WIRE_SIZE(decoded length) bytes. */
typedef struct {
    uint8_t *out;
    size_t o;       /* next free byte of out */
    size_t code_at; /* where the open block's code byte goes */
    uint8_t code;   /* 1 + bytes in the open block */
    bool open;      /* false right after a full 254-byte block: the next byte opens one */
    uint16_t crc;
} rcs_encoder_t;

void rcs_enc_begin(rcs_encoder_t *e, uint8_t *out, uint8_t frame_type);
void rcs_enc_u8(rcs_encoder_t *e, uint8_t value);
void rcs_enc_u16(rcs_encoder_t *e, uint16_t value);
void rcs_enc_u32(rcs_encoder_t *e, uint32_t value);
void rcs_enc_u64(rcs_encoder_t *e, uint64_t value);
void rcs_enc_bytes(rcs_encoder_t *e, const uint8_t *data, size_t len);
/* Little-endian u16 values, as the ADC's DMA leaves them in memory on the Cortex-M7. */
void rcs_enc_u16s(rcs_encoder_t *e, const uint16_t *values, size_t count);
/* Returns the bytes to send, delimiter included. */
size_t rcs_enc_end(rcs_encoder_t *e);

/* One whole frame: type and payload, CRC, COBS, delimiter. Returns the wire length. */
size_t rcs_frame_encode(uint8_t frame_type, const uint8_t *payload, size_t len, uint8_t *out);

/* Streaming decoder: feed any chunks; each complete, CRC-valid frame is handed to the callback as
 * its body (type and payload, CRC removed). Empty frames (back-to-back delimiters) are skipped;
 * anything else that is not a valid frame is counted and dropped, decoding resumes after the next
 * 0x00. Frames longer than the buffer given to rcs_deframer_init are dropped as bad frames. */
typedef void (*rcs_frame_handler)(void *ctx, const uint8_t *body, size_t len);

typedef struct {
    uint32_t frames;     /* CRC-valid frames handed on */
    uint32_t crc_errors; /* decoded, but the CRC did not match */
    uint32_t bad_frames; /* bad COBS, too short, too long */
} rcs_deframer_stats_t;

typedef struct {
    uint8_t *buf;
    size_t cap;
    size_t len;
    bool overflow; /* the current frame outgrew buf: drop it at the next delimiter */
    rcs_deframer_stats_t stats;
} rcs_deframer_t;

void rcs_deframer_init(rcs_deframer_t *d, uint8_t *buf, size_t cap);
void rcs_deframer_feed(rcs_deframer_t *d, const uint8_t *data, size_t len, rcs_frame_handler handler,
                       void *ctx);

/* Little-endian readers for parsing bodies. */
static inline uint16_t rcs_get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t rcs_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t rcs_get_u64(const uint8_t *p)
{
    return (uint64_t)rcs_get_u32(p) | ((uint64_t)rcs_get_u32(p + 4) << 32);
}

#ifdef __cplusplus
}
#endif

#endif /* RCS_WIRE_H */
