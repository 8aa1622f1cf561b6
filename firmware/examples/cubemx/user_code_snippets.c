/* What to add to the files CubeMX generates, inside their USER CODE sections (so regenerating the
 * project keeps it). EXAMPLE: not compiled; copy each part to the place named above it. */

/* ---- Core/Src/main.c ------------------------------------------------------------------------ */

/* USER CODE BEGIN Includes */
#include "rcs_app.h"
/* USER CODE END Includes */

/* in main(), USER CODE BEGIN 2 (after MX_USB_DEVICE_Init and every other MX_..._Init) */
rcs_app_start();
/* USER CODE END 2 */

/* in main(), inside while (1), USER CODE BEGIN 3 */
rcs_app_poll();
/* USER CODE END 3 */

/* ---- USB_DEVICE/App/usbd_cdc_if.c ----------------------------------------------------------- */

/* USER CODE BEGIN INCLUDE */
#include "rcs_app.h"
/* USER CODE END INCLUDE */

/* CDC_Receive_FS: keep the two generated lines that re-arm reception, add the call before them */
static int8_t CDC_Receive_FS(uint8_t *Buf, uint32_t *Len)
{
    /* USER CODE BEGIN 6 */
    rcs_app_usb_received(Buf, *Len);
    USBD_CDC_SetRxBuffer(&hUsbDeviceFS, &Buf[0]);
    USBD_CDC_ReceivePacket(&hUsbDeviceFS);
    return (USBD_OK);
    /* USER CODE END 6 */
}

/* CDC_Transmit_FS stays as generated: rcs_app.c calls it from the main loop only, with its own
 * buffer, once the previous transfer has completed (TxState == 0). */
