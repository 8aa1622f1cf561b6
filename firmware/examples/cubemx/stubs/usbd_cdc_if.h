/* Stub of the generated usbd_cdc_if.h, see main.h. */
#ifndef RCS_STUB_USBD_CDC_IF_H
#define RCS_STUB_USBD_CDC_IF_H
#include <stdint.h>
typedef struct { volatile uint32_t TxState; } USBD_CDC_HandleTypeDef;
uint8_t CDC_Transmit_FS(uint8_t *Buf, uint16_t Len);
#endif
