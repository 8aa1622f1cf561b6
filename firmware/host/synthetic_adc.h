/* Synthetic ADC counts for the emulated boards (host pty and QEMU): the example values of
 * docs/stm32-protocol.md §5.1 plus a small triangle per channel, so values move and stay in 12 bits. */
#ifndef RCS_SYNTHETIC_ADC_H
#define RCS_SYNTHETIC_ADC_H

#include <stdint.h>

static inline uint16_t synthetic_adc_count(uint64_t sample, unsigned channel)
{
    static const uint16_t base[17] = {512, 627, 745, 823, 921, 1024, 1159, 1233, 558,
                                      577, 596, 614, 633, 651, 2458, 2234, 2662};
    unsigned phase = (unsigned)((sample + 37u * channel) % 64u);
    unsigned wobble = phase < 32u ? phase : 64u - phase;
    return (uint16_t)((base[channel % 17u] + wobble) & 0x0FFFu);
}

#endif
