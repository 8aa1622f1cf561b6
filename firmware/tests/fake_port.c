#include "fake_port.h"

#include <stdlib.h>
#include <string.h>

static uint32_t fake_now(void *ctx) { return ((fake_port_t *)ctx)->now_us; }

static size_t fake_write(void *ctx, const uint8_t *data, size_t len)
{
    fake_port_t *f = ctx;
    if (f->link_busy) {
        return 0;
    }
    if (f->write_max && len > f->write_max) {
        len = f->write_max;
    }
    if (f->budget >= 0 && len > (size_t)f->budget) {
        len = (size_t)f->budget;
    }
    if (f->budget >= 0) {
        f->budget -= (long)len;
    }
    if (len > FAKE_OUT_CAP - f->out_len) {
        len = FAKE_OUT_CAP - f->out_len;
    }
    memcpy(f->out + f->out_len, data, len);
    f->out_len += len;
    return len;
}

static void fake_set_valves(void *ctx, uint16_t mask)
{
    fake_port_t *f = ctx;
    if (f->critical_depth <= 0) {
        abort(); /* the core promises to drive outputs only inside a critical section */
    }
    f->valves = mask;
    f->set_valves_calls++;
}

static uint16_t fake_read_valves(void *ctx) { return ((fake_port_t *)ctx)->valves; }

static uint32_t fake_enter(void *ctx)
{
    fake_port_t *f = ctx;
    return (uint32_t)f->critical_depth++;
}

static void fake_exit(void *ctx, uint32_t state)
{
    fake_port_t *f = ctx;
    f->critical_depth = (int)state;
}

void fake_port_init(fake_port_t *fake)
{
    memset(fake, 0, sizeof *fake);
    fake->budget = -1;
    fake->port = (rcs_fw_port_t){
        .ctx = fake,
        .now_us = fake_now,
        .write = fake_write,
        .set_valves = fake_set_valves,
        .read_valves = fake_read_valves,
        .enter_critical = fake_enter,
        .exit_critical = fake_exit,
    };
}
