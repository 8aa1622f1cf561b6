/* rcs_app: the firmware core on a Nucleo-F767ZI (STM32CubeMX project, HAL + USB device CDC).
 *
 * EXAMPLE glue: copy rcs_app.c/.h and firmware/include + firmware/src into your generated project;
 * it does not build on its own (HAL handles and middleware come from CubeMX). firmware/README.md
 * lists the CubeMX settings this file assumes:
 *
 *   TIM2   32-bit free-running at 1 MHz            -> port now_us (TIM2->CNT)
 *   TIM8   update at 10 kHz, TRGO = update         -> triggers ADC1 and ADC3 (one sample = 17 channels)
 *   ADC1   9 channels, scan, DMA circular          -> channels 0..8  (P1..P8, T1)
 *   ADC3   8 channels, scan, DMA circular          -> channels 9..16 (T2..T6, Tbogaz1, THRUST, Tbogaz2)
 *   TIM7   update interrupt at 1 kHz               -> rcs_fw_tick (heartbeat watchdog, STATUS)
 *   USB_OTG_FS device, CDC class (CN13)            -> CDC_Receive_FS / CDC_Transmit_FS
 *   PE7..PE15 push-pull outputs, initial level Low -> valves 0..8 (bit i = PE(7+i))
 *
 * Interrupt priorities (NVIC, lower number = more urgent): DMA2 streams of the ADCs 1, TIM7 2,
 * OTG_FS 5. The watchdog tick must not wait behind the USB stack.
 */
#include "rcs_app.h"

#include <string.h>

#include "main.h" /* HAL, GPIO and the handles CubeMX generates */
#include "rcs_fw.h"
#include "usb_device.h"
#include "usbd_cdc_if.h"

extern ADC_HandleTypeDef hadc1;
extern ADC_HandleTypeDef hadc3;
extern TIM_HandleTypeDef htim2;
extern TIM_HandleTypeDef htim7;
extern TIM_HandleTypeDef htim8;
extern USBD_HandleTypeDef hUsbDeviceFS;

#define RATE_HZ 10000u
#define BLOCK 20u          /* samples per DMA half-transfer: 2 ms, one SAMPLES frame */
#define ADC1_CHANNELS 9u   /* rank order in CubeMX = channel order 0..8 of docs/stm32-protocol.md §2.1 */
#define ADC3_CHANNELS 8u   /* channels 9..16 */
#define N_CHANNELS (ADC1_CHANNELS + ADC3_CHANNELS)
#define N_VALVES 9u
#define VALVE_PORT GPIOE
#define VALVE_SHIFT 7u     /* valve i on PE(7 + i) */
#define VALVE_MASK ((1u << N_VALVES) - 1u)
#define TX_FRAMES 180u     /* ~360 ms of samples while the host does not read: ~125 KiB of SRAM */

static rcs_fw_t fw;
static uint8_t tx[RCS_FW_TX_BYTES(TX_FRAMES, BLOCK, N_CHANNELS)];
/* DMA targets, 32-byte aligned for cache maintenance (the F7's D-cache does not see DMA writes) */
static uint16_t adc1_dma[2 * BLOCK * ADC1_CHANNELS] __attribute__((aligned(32)));
static uint16_t adc3_dma[2 * BLOCK * ADC3_CHANNELS] __attribute__((aligned(32)));
static uint16_t block[BLOCK * N_CHANNELS];
static uint8_t usb_tx[2048]; /* CDC_Transmit_FS sends from here until the transfer completes */

/* --- the port the core calls ----------------------------------------------------------------- */

static uint32_t port_now_us(void *ctx)
{
    (void)ctx;
    return TIM2->CNT;
}

static size_t port_write(void *ctx, const uint8_t *data, size_t len)
{
    (void)ctx;
    USBD_CDC_HandleTypeDef *cdc = (USBD_CDC_HandleTypeDef *)hUsbDeviceFS.pClassData;
    if (hUsbDeviceFS.dev_state != USBD_STATE_CONFIGURED || cdc == NULL || cdc->TxState != 0) {
        return 0; /* not enumerated, or the previous transfer is still going out */
    }
    if (len > sizeof usb_tx) {
        len = sizeof usb_tx;
    }
    if (len % 64u == 0) {
        len--; /* a multiple of the 64-byte packet would need a zero-length packet to end the transfer */
    }
    memcpy(usb_tx, data, len);
    return CDC_Transmit_FS(usb_tx, (uint16_t)len) == USBD_OK ? len : 0;
}

static void port_set_valves(void *ctx, uint16_t mask)
{
    (void)ctx;
    uint32_t on = (uint32_t)(mask & VALVE_MASK) << VALVE_SHIFT;
    uint32_t off = (uint32_t)(~mask & VALVE_MASK) << VALVE_SHIFT;
    VALVE_PORT->BSRR = on | (off << 16); /* every output in one write */
}

static uint16_t port_read_valves(void *ctx)
{
    (void)ctx;
    return (uint16_t)((VALVE_PORT->ODR >> VALVE_SHIFT) & VALVE_MASK);
}

static uint32_t port_enter_critical(void *ctx)
{
    (void)ctx;
    uint32_t primask = __get_PRIMASK();
    __disable_irq();
    return primask;
}

static void port_exit_critical(void *ctx, uint32_t primask)
{
    (void)ctx;
    __set_PRIMASK(primask);
}

static const rcs_fw_port_t port = {
    .ctx = NULL,
    .now_us = port_now_us,
    .write = port_write,
    .set_valves = port_set_valves,
    .read_valves = port_read_valves,
    .enter_critical = port_enter_critical,
    .exit_critical = port_exit_critical,
};

/* --- start-up and main loop ------------------------------------------------------------------ */

void rcs_app_start(void)
{
    rcs_fw_config_t cfg = rcs_fw_default_config(RATE_HZ, N_CHANNELS, N_VALVES, "rcs-f767 1.0.0");
    cfg.max_frame_samples = BLOCK;
    HAL_TIM_Base_Start(&htim2); /* the µs clock first: the core reads it at boot */
    rcs_fw_init(&fw, &cfg, &port, tx, sizeof tx); /* valves closed, SAFE, STATUS queued (D2) */
    HAL_TIM_Base_Start_IT(&htim7);
    HAL_ADC_Start_DMA(&hadc3, (uint32_t *)adc3_dma, 2 * BLOCK * ADC3_CHANNELS);
    HAL_ADC_Start_DMA(&hadc1, (uint32_t *)adc1_dma, 2 * BLOCK * ADC1_CHANNELS);
    HAL_TIM_Base_Start(&htim8); /* the ADCs convert from now on, at 10 kHz */
}

void rcs_app_poll(void)
{
    rcs_fw_pump(&fw);
    /* HAL_IWDG_Refresh(&hiwdg);  with the IWDG enabled (recommended, firmware/README.md) */
}

void rcs_app_usb_received(const uint8_t *data, uint32_t len) { rcs_fw_receive(&fw, data, len); }

/* --- interrupts ------------------------------------------------------------------------------ */

/* One half of both DMA buffers: interleave ADC1's 9 and ADC3's 8 channels into 17-channel samples.
 * ADC1 converts one channel more than ADC3 from the same trigger, so when ADC1's half is done,
 * ADC3's is too. */
static void adc_half_done(unsigned half)
{
    const uint16_t *a1 = adc1_dma + half * BLOCK * ADC1_CHANNELS;
    const uint16_t *a3 = adc3_dma + half * BLOCK * ADC3_CHANNELS;
    SCB_InvalidateDCache_by_Addr((uint32_t *)(uintptr_t)a1, (int32_t)(BLOCK * ADC1_CHANNELS * 2));
    SCB_InvalidateDCache_by_Addr((uint32_t *)(uintptr_t)a3, (int32_t)(BLOCK * ADC3_CHANNELS * 2));
    for (unsigned s = 0; s < BLOCK; s++) {
        memcpy(block + s * N_CHANNELS, a1 + s * ADC1_CHANNELS, ADC1_CHANNELS * 2);
        memcpy(block + s * N_CHANNELS + ADC1_CHANNELS, a3 + s * ADC3_CHANNELS, ADC3_CHANNELS * 2);
    }
    rcs_fw_samples(&fw, block, BLOCK);
}

void HAL_ADC_ConvHalfCpltCallback(ADC_HandleTypeDef *hadc)
{
    if (hadc->Instance == ADC1) {
        adc_half_done(0);
    }
}

void HAL_ADC_ConvCpltCallback(ADC_HandleTypeDef *hadc)
{
    if (hadc->Instance == ADC1) {
        adc_half_done(1);
    }
}

/* CubeMX generates this callback in main.c when a timer is the HAL time base: then add the TIM7
 * test there instead of defining it twice. */
void HAL_TIM_PeriodElapsedCallback(TIM_HandleTypeDef *htim)
{
    if (htim->Instance == TIM7) {
        rcs_fw_tick(&fw); /* the heartbeat watchdog runs here, independent of USB */
    }
}
