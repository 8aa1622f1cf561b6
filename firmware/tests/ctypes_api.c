/* A device on the fake port behind a handle, for tests/test_firmware_core.py (ctypes): the Python
 * side feeds the same inputs to this core and to services/common/stm32_wire.py and compares bytes. */
#include <stdlib.h>
#include <string.h>

#include "fake_port.h"

typedef struct {
    fake_port_t fake;
    rcs_fw_t fw;
    char device[RCS_FW_MAX_DEVICE_TEXT + 1];
    size_t tx_size;
    uint8_t tx[];
} rcs_test_device_t;

rcs_test_device_t *rcs_test_device_new(uint32_t rate_hz, uint8_t n_channels, uint8_t n_valves,
                                       uint16_t max_frame_samples, const char *device, uint32_t now_us,
                                       size_t tx_size);
rcs_test_device_t *rcs_test_device_new(uint32_t rate_hz, uint8_t n_channels, uint8_t n_valves,
                                       uint16_t max_frame_samples, const char *device, uint32_t now_us,
                                       size_t tx_size)
{
    rcs_test_device_t *d = calloc(1, sizeof *d + tx_size);
    if (!d) {
        return NULL;
    }
    fake_port_init(&d->fake);
    d->fake.now_us = now_us;
    strncpy(d->device, device, RCS_FW_MAX_DEVICE_TEXT);
    rcs_fw_config_t cfg = rcs_fw_default_config(rate_hz, n_channels, n_valves, d->device);
    cfg.max_frame_samples = max_frame_samples;
    rcs_fw_init(&d->fw, &cfg, &d->fake.port, d->tx, tx_size);
    return d;
}

void rcs_test_device_free(rcs_test_device_t *d);
void rcs_test_device_free(rcs_test_device_t *d) { free(d); }

void rcs_test_device_set_time(rcs_test_device_t *d, uint32_t now_us);
void rcs_test_device_set_time(rcs_test_device_t *d, uint32_t now_us) { d->fake.now_us = now_us; }

void rcs_test_device_receive(rcs_test_device_t *d, const uint8_t *data, size_t len);
void rcs_test_device_receive(rcs_test_device_t *d, const uint8_t *data, size_t len) { rcs_fw_receive(&d->fw, data, len); }

void rcs_test_device_tick(rcs_test_device_t *d);
void rcs_test_device_tick(rcs_test_device_t *d) { rcs_fw_tick(&d->fw); }

void rcs_test_device_samples(rcs_test_device_t *d, const uint16_t *raw, size_t n_samples);
void rcs_test_device_samples(rcs_test_device_t *d, const uint16_t *raw, size_t n_samples)
{
    rcs_fw_samples(&d->fw, raw, n_samples);
}

/* Pump, then move what the device wrote into out (up to cap bytes); returns the byte count. */
size_t rcs_test_device_output(rcs_test_device_t *d, uint8_t *out, size_t cap);
size_t rcs_test_device_output(rcs_test_device_t *d, uint8_t *out, size_t cap)
{
    rcs_fw_pump(&d->fw);
    size_t n = d->fake.out_len < cap ? d->fake.out_len : cap;
    memcpy(out, d->fake.out, n);
    memmove(d->fake.out, d->fake.out + n, d->fake.out_len - n);
    d->fake.out_len -= n;
    return n;
}

uint16_t rcs_test_device_valves(rcs_test_device_t *d);
uint16_t rcs_test_device_valves(rcs_test_device_t *d) { return d->fake.valves; }
