/* Stub of the generated usb_device.h, see main.h. */
#ifndef RCS_STUB_USB_DEVICE_H
#define RCS_STUB_USB_DEVICE_H
typedef struct { void *pClassData; int dev_state; } USBD_HandleTypeDef;
#define USBD_STATE_CONFIGURED 3
#define USBD_OK 0
#endif
