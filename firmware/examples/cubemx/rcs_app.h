/* rcs_app: glue between the firmware core (rcs_fw.h) and a STM32CubeMX project for the
 * Nucleo-F767ZI. EXAMPLE: it builds only inside your generated project (it uses the HAL handles
 * and the USB device middleware CubeMX generates); see firmware/README.md for the peripheral set-up
 * it expects and where each function below is called from. */
#ifndef RCS_APP_H
#define RCS_APP_H

#include <stdint.h>

/* main.c, USER CODE BEGIN 2 (after every MX_..._Init): boots the core (valves closed, STATUS
 * queued) and starts TIM2, the ADCs with their DMA, TIM8 (the 10 kHz trigger) and TIM7 (1 kHz tick). */
void rcs_app_start(void);

/* main.c, inside while (1): hands queued frames to USB CDC; refreshes the IWDG if you enabled it. */
void rcs_app_poll(void);

/* usbd_cdc_if.c, CDC_Receive_FS (USB interrupt): every byte the host sent. */
void rcs_app_usb_received(const uint8_t *data, uint32_t len);

#endif
