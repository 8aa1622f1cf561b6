/* rcs_wire: framing of protocol v1. See rcs_wire.h and docs/stm32-protocol.md §1. */
#include "rcs_wire.h"

#include <string.h>

/* CRC-16/CCITT-FALSE, one table lookup per byte (512 bytes of flash). */
static const uint16_t crc_table[256] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50A5, 0x60C6, 0x70E7,
    0x8108, 0x9129, 0xA14A, 0xB16B, 0xC18C, 0xD1AD, 0xE1CE, 0xF1EF,
    0x1231, 0x0210, 0x3273, 0x2252, 0x52B5, 0x4294, 0x72F7, 0x62D6,
    0x9339, 0x8318, 0xB37B, 0xA35A, 0xD3BD, 0xC39C, 0xF3FF, 0xE3DE,
    0x2462, 0x3443, 0x0420, 0x1401, 0x64E6, 0x74C7, 0x44A4, 0x5485,
    0xA56A, 0xB54B, 0x8528, 0x9509, 0xE5EE, 0xF5CF, 0xC5AC, 0xD58D,
    0x3653, 0x2672, 0x1611, 0x0630, 0x76D7, 0x66F6, 0x5695, 0x46B4,
    0xB75B, 0xA77A, 0x9719, 0x8738, 0xF7DF, 0xE7FE, 0xD79D, 0xC7BC,
    0x48C4, 0x58E5, 0x6886, 0x78A7, 0x0840, 0x1861, 0x2802, 0x3823,
    0xC9CC, 0xD9ED, 0xE98E, 0xF9AF, 0x8948, 0x9969, 0xA90A, 0xB92B,
    0x5AF5, 0x4AD4, 0x7AB7, 0x6A96, 0x1A71, 0x0A50, 0x3A33, 0x2A12,
    0xDBFD, 0xCBDC, 0xFBBF, 0xEB9E, 0x9B79, 0x8B58, 0xBB3B, 0xAB1A,
    0x6CA6, 0x7C87, 0x4CE4, 0x5CC5, 0x2C22, 0x3C03, 0x0C60, 0x1C41,
    0xEDAE, 0xFD8F, 0xCDEC, 0xDDCD, 0xAD2A, 0xBD0B, 0x8D68, 0x9D49,
    0x7E97, 0x6EB6, 0x5ED5, 0x4EF4, 0x3E13, 0x2E32, 0x1E51, 0x0E70,
    0xFF9F, 0xEFBE, 0xDFDD, 0xCFFC, 0xBF1B, 0xAF3A, 0x9F59, 0x8F78,
    0x9188, 0x81A9, 0xB1CA, 0xA1EB, 0xD10C, 0xC12D, 0xF14E, 0xE16F,
    0x1080, 0x00A1, 0x30C2, 0x20E3, 0x5004, 0x4025, 0x7046, 0x6067,
    0x83B9, 0x9398, 0xA3FB, 0xB3DA, 0xC33D, 0xD31C, 0xE37F, 0xF35E,
    0x02B1, 0x1290, 0x22F3, 0x32D2, 0x4235, 0x5214, 0x6277, 0x7256,
    0xB5EA, 0xA5CB, 0x95A8, 0x8589, 0xF56E, 0xE54F, 0xD52C, 0xC50D,
    0x34E2, 0x24C3, 0x14A0, 0x0481, 0x7466, 0x6447, 0x5424, 0x4405,
    0xA7DB, 0xB7FA, 0x8799, 0x97B8, 0xE75F, 0xF77E, 0xC71D, 0xD73C,
    0x26D3, 0x36F2, 0x0691, 0x16B0, 0x6657, 0x7676, 0x4615, 0x5634,
    0xD94C, 0xC96D, 0xF90E, 0xE92F, 0x99C8, 0x89E9, 0xB98A, 0xA9AB,
    0x5844, 0x4865, 0x7806, 0x6827, 0x18C0, 0x08E1, 0x3882, 0x28A3,
    0xCB7D, 0xDB5C, 0xEB3F, 0xFB1E, 0x8BF9, 0x9BD8, 0xABBB, 0xBB9A,
    0x4A75, 0x5A54, 0x6A37, 0x7A16, 0x0AF1, 0x1AD0, 0x2AB3, 0x3A92,
    0xFD2E, 0xED0F, 0xDD6C, 0xCD4D, 0xBDAA, 0xAD8B, 0x9DE8, 0x8DC9,
    0x7C26, 0x6C07, 0x5C64, 0x4C45, 0x3CA2, 0x2C83, 0x1CE0, 0x0CC1,
    0xEF1F, 0xFF3E, 0xCF5D, 0xDF7C, 0xAF9B, 0xBFBA, 0x8FD9, 0x9FF8,
    0x6E17, 0x7E36, 0x4E55, 0x5E74, 0x2E93, 0x3EB2, 0x0ED1, 0x1EF0,
};

uint16_t rcs_crc16_update(uint16_t crc, const uint8_t *data, size_t len)
{
    while (len--) {
        crc = (uint16_t)((crc << 8) ^ crc_table[(uint8_t)((crc >> 8) ^ *data++)]);
    }
    return crc;
}

uint16_t rcs_crc16(const uint8_t *data, size_t len) { return rcs_crc16_update(0xFFFF, data, len); }

size_t rcs_cobs_encode(const uint8_t *in, size_t len, uint8_t *out)
{
    size_t code_at = 0, o = 1;
    uint8_t code = 1;
    for (size_t i = 0; i < len; i++) {
        if (in[i] != 0) {
            out[o++] = in[i];
            code++;
        }
        if (in[i] == 0 || code == 0xFF) {
            out[code_at] = code;
            code = 1;
            code_at = o;
            if (in[i] == 0 || i + 1 < len) {
                o++; /* open a new block, except after a full block at the very end */
            }
        }
    }
    if (code_at < o) {
        out[code_at] = code;
    }
    return o;
}

size_t rcs_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap)
{
    size_t i = 0, o = 0;
    while (i < len) {
        uint8_t code = in[i++];
        if (code == 0 || (size_t)code - 1 > len - i || o + code - 1 > out_cap) {
            return 0;
        }
        for (uint8_t k = 1; k < code; k++) {
            if (in[i] == 0) {
                return 0; /* a zero inside a block: not COBS */
            }
            out[o++] = in[i++];
        }
        if (code != 0xFF && i < len) {
            if (o >= out_cap) {
                return 0;
            }
            out[o++] = 0;
        }
    }
    return o;
}

/* --- streaming encoder ---------------------------------------------------------------------- */

/* One byte into the frame: CRC, then COBS. A full 254-byte block is closed at once, but the next
 * block opens only when a byte follows (no extra code byte after a full block at the very end); a
 * zero always implies a following block. The state lives in local variables the compiler keeps in
 * registers for the bulk encoders: the hot path (680 bytes of samples per frame at 10 kHz). */
#define ENC_STATE_LOAD(e)                                                                          \
    uint8_t *out = (e)->out;                                                                       \
    size_t o = (e)->o, code_at = (e)->code_at;                                                     \
    unsigned code = (e)->code, crc = (e)->crc;                                                     \
    bool open = (e)->open
#define ENC_STATE_STORE(e)                                                                         \
    do {                                                                                           \
        (e)->o = o;                                                                                \
        (e)->code_at = code_at;                                                                    \
        (e)->code = (uint8_t)code;                                                                 \
        (e)->crc = (uint16_t)crc;                                                                  \
        (e)->open = open;                                                                          \
    } while (0)
#define ENC_BYTE(value)                                                                            \
    do {                                                                                           \
        uint8_t b_ = (value);                                                                      \
        crc = ((crc << 8) ^ crc_table[((crc >> 8) ^ b_) & 0xFFu]) & 0xFFFFu;                       \
        if (!open) {                                                                               \
            code_at = o++;                                                                         \
            code = 1;                                                                              \
            open = true;                                                                           \
        }                                                                                          \
        if (b_ != 0) {                                                                             \
            out[o++] = b_;                                                                         \
            if (++code == 0xFFu) {                                                                 \
                out[code_at] = 0xFF;                                                               \
                open = false;                                                                      \
            }                                                                                      \
        } else {                                                                                   \
            out[code_at] = (uint8_t)code;                                                          \
            code_at = o++;                                                                         \
            code = 1;                                                                              \
        }                                                                                          \
    } while (0)

static inline void enc_byte(rcs_encoder_t *e, uint8_t value)
{
    ENC_STATE_LOAD(e);
    ENC_BYTE(value);
    ENC_STATE_STORE(e);
}

void rcs_enc_begin(rcs_encoder_t *e, uint8_t *out, uint8_t frame_type)
{
    e->out = out;
    e->o = 1;
    e->code_at = 0;
    e->code = 1;
    e->open = true;
    e->crc = 0xFFFF;
    rcs_enc_u8(e, frame_type);
}

void rcs_enc_u8(rcs_encoder_t *e, uint8_t value) { enc_byte(e, value); }

void rcs_enc_u16(rcs_encoder_t *e, uint16_t value)
{
    rcs_enc_u8(e, (uint8_t)value);
    rcs_enc_u8(e, (uint8_t)(value >> 8));
}

void rcs_enc_u32(rcs_encoder_t *e, uint32_t value)
{
    rcs_enc_u16(e, (uint16_t)value);
    rcs_enc_u16(e, (uint16_t)(value >> 16));
}

void rcs_enc_u64(rcs_encoder_t *e, uint64_t value)
{
    rcs_enc_u32(e, (uint32_t)value);
    rcs_enc_u32(e, (uint32_t)(value >> 32));
}

void rcs_enc_bytes(rcs_encoder_t *e, const uint8_t *data, size_t len)
{
    ENC_STATE_LOAD(e);
    for (size_t i = 0; i < len; i++) {
        ENC_BYTE(data[i]);
    }
    ENC_STATE_STORE(e);
}

void rcs_enc_u16s(rcs_encoder_t *e, const uint16_t *values, size_t count)
{
    ENC_STATE_LOAD(e);
    for (size_t i = 0; i < count; i++) {
        uint16_t v = values[i];
        ENC_BYTE((uint8_t)v);
        ENC_BYTE((uint8_t)(v >> 8));
    }
    ENC_STATE_STORE(e);
}

size_t rcs_enc_end(rcs_encoder_t *e)
{
    uint16_t crc = e->crc; /* the CRC is not part of its own input: taken before it is encoded */
    enc_byte(e, (uint8_t)crc);
    enc_byte(e, (uint8_t)(crc >> 8));
    if (e->open) {
        e->out[e->code_at] = e->code;
    }
    e->out[e->o++] = 0x00;
    return e->o;
}

size_t rcs_frame_encode(uint8_t frame_type, const uint8_t *payload, size_t len, uint8_t *out)
{
    rcs_encoder_t e;
    rcs_enc_begin(&e, out, frame_type);
    rcs_enc_bytes(&e, payload, len);
    return rcs_enc_end(&e);
}

/* --- streaming decoder ---------------------------------------------------------------------- */

void rcs_deframer_init(rcs_deframer_t *d, uint8_t *buf, size_t cap)
{
    memset(d, 0, sizeof *d);
    d->buf = buf;
    d->cap = cap;
}

static void deframer_finish(rcs_deframer_t *d, rcs_frame_handler handler, void *ctx)
{
    if (d->overflow) {
        d->stats.bad_frames++;
        return;
    }
    if (d->len == 0) {
        return; /* back-to-back delimiters: legal padding */
    }
    size_t n = rcs_cobs_decode(d->buf, d->len, d->buf, d->cap); /* in place */
    if (n < RCS_MIN_FRAME || n > RCS_MAX_FRAME) {
        d->stats.bad_frames++;
        return;
    }
    uint16_t crc = rcs_get_u16(d->buf + n - 2);
    if (rcs_crc16(d->buf, n - 2) != crc) {
        d->stats.crc_errors++;
        return;
    }
    d->stats.frames++;
    handler(ctx, d->buf, n - 2);
}

void rcs_deframer_feed(rcs_deframer_t *d, const uint8_t *data, size_t len, rcs_frame_handler handler,
                       void *ctx)
{
    for (size_t i = 0; i < len; i++) {
        uint8_t b = data[i];
        if (b == 0x00) {
            deframer_finish(d, handler, ctx);
            d->len = 0;
            d->overflow = false;
        } else if (d->len < d->cap) {
            d->buf[d->len++] = b;
        } else {
            d->overflow = true;
        }
    }
}
