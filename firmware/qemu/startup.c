/* Minimal Cortex-M7 start-up for QEMU mps2-an500: vector table, .data/.bss set-up, FPU on. */
#include <stdint.h>
#include <string.h>

extern uint32_t _estack, _sidata, _sdata, _edata, _sbss, _ebss;
int main(void);
void Reset_Handler(void);
void Default_Handler(void);
void HardFault_Handler(void);
void SysTick_Handler(void);
void Uart0Rx_Handler(void);
void Uart0Tx_Handler(void);

__attribute__((weak)) void HardFault_Handler(void)
{
    for (;;) {
    }
}

void Default_Handler(void)
{
    for (;;) {
    }
}

void Reset_Handler(void)
{
    memcpy(&_sdata, &_sidata, (size_t)((uintptr_t)&_edata - (uintptr_t)&_sdata));
    memset(&_sbss, 0, (size_t)((uintptr_t)&_ebss - (uintptr_t)&_sbss));
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* CPACR: CP10/CP11 full access (FPU) */
    __asm volatile("dsb\n isb");
    main();
    for (;;) {
    }
}

__attribute__((section(".isr_vector"), used)) static void (*const vectors[16 + 2])(void) = {
    (void (*)(void))(uintptr_t)&_estack,
    Reset_Handler,
    Default_Handler,   /* NMI */
    HardFault_Handler, /* HardFault */
    Default_Handler,   /* MemManage */
    Default_Handler,   /* BusFault */
    Default_Handler,   /* UsageFault */
    0, 0, 0, 0,
    Default_Handler, /* SVCall */
    Default_Handler, /* DebugMon */
    0,
    Default_Handler, /* PendSV */
    SysTick_Handler,
    Uart0Rx_Handler, /* IRQ 0: UART0 RX */
    Uart0Tx_Handler, /* IRQ 1: UART0 TX */
};
