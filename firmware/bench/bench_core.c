/* The firmware core's hot path, for bench/firmware.py: one ADC block of 20 samples x 17 channels
 * (2 ms at 10 kHz) through rcs_fw_samples (timestamp, count, CRC + COBS straight into the transmit
 * buffer) and rcs_fw_pump (handing the frame to the port, a copy here as into the USB buffer).
 *
 *   bench_core BLOCKS    prints: blocks, ns per block, TSC cycles per block (x86; 0 elsewhere)
 *
 * Run under `valgrind --tool=callgrind` for an instruction count independent of the host's speed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define CYCLES() __rdtsc()
#else
#define CYCLES() 0ull
#endif

#include "fake_port.h"
#include "synthetic_adc.h"

#define SAMPLES 20u
#define CHANNELS 17u

static fake_port_t fake;
static rcs_fw_t fw;
static uint8_t tx[64 * 1024];
static uint16_t block[SAMPLES * CHANNELS];

int main(int argc, char **argv)
{
    unsigned long blocks = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000ul;
    fake_port_init(&fake);
    rcs_fw_config_t cfg = rcs_fw_default_config(10000, CHANNELS, 9, "rcs-bench");
    rcs_fw_init(&fw, &cfg, &fake.port, tx, sizeof tx);
    for (unsigned s = 0; s < SAMPLES; s++) {
        for (unsigned c = 0; c < CHANNELS; c++) {
            block[s * CHANNELS + c] = synthetic_adc_count(s, c);
        }
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned long long c0 = CYCLES();
    for (unsigned long i = 0; i < blocks; i++) {
        fake.now_us += 2000;
        rcs_fw_samples(&fw, block, SAMPLES);
        rcs_fw_pump(&fw);
        fake.out_len = 0;
    }
    unsigned long long c1 = CYCLES();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
    printf("%lu %.1f %.1f\n", blocks, ns / (double)blocks, (double)(c1 - c0) / (double)blocks);
    return rcs_fw_stats(&fw).frames_dropped != 0; /* the pump kept up: every frame went out */
}
