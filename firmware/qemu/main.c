/* The firmware core on an emulated Cortex-M7 (QEMU mps2-an500), wired like the Nucleo integration:
 *
 *   SysTick, 1 kHz        the timer interrupt: rcs_fw_tick (watchdog, STATUS) and, standing in for
 *                         the ADC DMA callback, a block of synthetic counts every QEMU_BLOCK samples
 *   UART0 RX interrupt    standing in for CDC_Receive_FS: rcs_fw_receive, one byte at a time
 *   main loop             rcs_fw_pump into UART0 (QEMU `-serial pty`: the host's link), sleeping in
 *                         WFI until the next interrupt when the UART takes no more
 *   UART1                 the console (QEMU's second -serial): `valves 0x<mask> safe <0|1>` lines
 *
 * Valve outputs are a variable. QEMU's UART is not paced by a baud rate: the sample rate is what
 * the emulation carries comfortably on a shared machine (QEMU_RATE_HZ, default 1 kHz).
 */
#include <stdint.h>

#include "rcs_fw.h"
#include "synthetic_adc.h"

#ifndef QEMU_RATE_HZ
#define QEMU_RATE_HZ 1000u
#endif
#define QEMU_BLOCK (QEMU_RATE_HZ / 50u) /* 20 ms of samples per block and per frame */
#define N_CHANNELS 17u
#define N_VALVES 9u
#define TX_FRAMES 16u

#define REG(addr) (*(volatile uint32_t *)(addr))
#define SYSCLK_HZ 25000000u
#define UART0 0x40004000u /* CMSDK APB UART: DATA 0x00, STATE 0x04, CTRL 0x08, INT 0x0C, BAUDDIV 0x10 */
#define UART1 0x40005000u
#define UART_DATA 0x00u
#define UART_STATE 0x04u
#define UART_CTRL 0x08u
#define UART_INT 0x0Cu
#define UART_BAUDDIV 0x10u
#define STATE_TXFULL 0x1u
#define CTRL_TX_EN 0x1u
#define CTRL_RX_EN 0x2u
#define CTRL_TX_INT 0x4u
#define CTRL_RX_INT 0x8u
#define INT_TX 0x1u
#define INT_RX 0x2u
#define SYST_CSR 0xE000E010u
#define SYST_RVR 0xE000E014u
#define SYST_CVR 0xE000E018u
#define SYST_RELOAD (SYSCLK_HZ / 1000u - 1u)
#define SCB_ICSR 0xE000ED04u
#define ICSR_PENDSTSET (1u << 26)
#define NVIC_ISER0 0xE000E100u

static rcs_fw_t fw;
static uint8_t tx[RCS_FW_TX_BYTES(TX_FRAMES, QEMU_BLOCK, N_CHANNELS)];
static uint16_t block[QEMU_BLOCK * N_CHANNELS];
static volatile uint32_t ms_ticks;
static volatile uint16_t valve_outputs; /* the valve GPIOs */
static uint64_t generated;

/* --- port ------------------------------------------------------------------------------------ */

/* µs from SysTick (1 kHz reload): called by the core with interrupts masked. */
static uint32_t port_now_us(void *ctx)
{
    (void)ctx;
    uint32_t ms = ms_ticks;
    uint32_t value = REG(SYST_CVR);
    if (REG(SCB_ICSR) & ICSR_PENDSTSET) { /* wrapped, interrupt not taken yet */
        ms++;
        value = REG(SYST_CVR);
    }
    return ms * 1000u + (SYST_RELOAD - value) / (SYSCLK_HZ / 1000000u);
}

static size_t port_write(void *ctx, const uint8_t *data, size_t len)
{
    (void)ctx;
    size_t n = 0;
    while (n < len && !(REG(UART0 + UART_STATE) & STATE_TXFULL)) {
        REG(UART0 + UART_DATA) = data[n++];
    }
    return n;
}

static void port_set_valves(void *ctx, uint16_t mask)
{
    (void)ctx;
    valve_outputs = mask;
}

static uint16_t port_read_valves(void *ctx)
{
    (void)ctx;
    return valve_outputs;
}

static uint32_t port_enter_critical(void *ctx)
{
    (void)ctx;
    uint32_t primask;
    __asm volatile("mrs %0, primask\n cpsid i" : "=r"(primask)::"memory");
    return primask;
}

static void port_exit_critical(void *ctx, uint32_t primask)
{
    (void)ctx;
    __asm volatile("msr primask, %0" ::"r"(primask) : "memory");
}

static const rcs_fw_port_t port = {
    .ctx = 0,
    .now_us = port_now_us,
    .write = port_write,
    .set_valves = port_set_valves,
    .read_valves = port_read_valves,
    .enter_critical = port_enter_critical,
    .exit_critical = port_exit_critical,
};

/* --- interrupts ------------------------------------------------------------------------------ */

void SysTick_Handler(void)
{
    uint32_t ms = ++ms_ticks;
    rcs_fw_tick(&fw);
    uint64_t due = (uint64_t)ms * QEMU_RATE_HZ / 1000u;
    if (due - generated >= QEMU_BLOCK) { /* what the ADC DMA half/full-transfer callback does */
        for (uint32_t s = 0; s < QEMU_BLOCK; s++) {
            for (uint32_t c = 0; c < N_CHANNELS; c++) {
                block[s * N_CHANNELS + c] = synthetic_adc_count(generated + s, c);
            }
        }
        rcs_fw_samples(&fw, block, QEMU_BLOCK);
        generated += QEMU_BLOCK;
    }
}

void Uart0Rx_Handler(void)
{
    REG(UART0 + UART_INT) = INT_RX;
    uint8_t byte = (uint8_t)REG(UART0 + UART_DATA);
    rcs_fw_receive(&fw, &byte, 1);
}

void Uart0Tx_Handler(void)
{
    REG(UART0 + UART_INT) = INT_TX; /* only wakes the main loop */
}

/* --- console --------------------------------------------------------------------------------- */

static void console(const char *text)
{
    while (*text) {
        while (REG(UART1 + UART_STATE) & STATE_TXFULL) {
        }
        REG(UART1 + UART_DATA) = (uint8_t)*text++;
    }
}

static void console_valves(uint16_t valves, bool safe)
{
    static const char hex[] = "0123456789abcdef";
    char line[] = "valves 0x0000 safe 0\n";
    for (int i = 0; i < 4; i++) {
        line[9 + i] = hex[(valves >> (12 - 4 * i)) & 0xFu];
    }
    line[19] = safe ? '1' : '0';
    console(line);
}

void HardFault_Handler(void)
{
    console("hard fault\n");
    for (;;) {
    }
}

int main(void)
{
    REG(UART0 + UART_BAUDDIV) = SYSCLK_HZ / 115200u;
    REG(UART1 + UART_BAUDDIV) = SYSCLK_HZ / 115200u;
    REG(UART1 + UART_CTRL) = CTRL_TX_EN;
    console("rcs-fw-core on qemu mps2-an500 (cortex-m7)\n");

    rcs_fw_config_t cfg =
        rcs_fw_default_config(QEMU_RATE_HZ, N_CHANNELS, N_VALVES, "rcs-emulator rcs-fw-core (qemu mps2-an500)");
    cfg.max_frame_samples = QEMU_BLOCK;
    rcs_fw_init(&fw, &cfg, &port, tx, sizeof tx);

    REG(UART0 + UART_CTRL) = CTRL_TX_EN | CTRL_RX_EN | CTRL_TX_INT | CTRL_RX_INT;
    REG(NVIC_ISER0) = (1u << 0) | (1u << 1);
    REG(SYST_RVR) = SYST_RELOAD;
    REG(SYST_CVR) = 0;
    REG(SYST_CSR) = 0x7u; /* processor clock, interrupt, enable */

    uint16_t shown_valves = 0xFFFF;
    bool shown_safe = false;
    for (;;) {
        rcs_fw_pump(&fw);
        uint16_t valves = rcs_fw_valves(&fw);
        bool safe = rcs_fw_safe(&fw);
        if (valves != shown_valves || safe != shown_safe) {
            console_valves(valves, safe);
            shown_valves = valves;
            shown_safe = safe;
        }
        __asm volatile("wfi"); /* until SysTick, a received byte, or the UART taking more */
    }
}
