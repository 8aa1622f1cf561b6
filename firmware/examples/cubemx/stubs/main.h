/* Just enough of the HAL's and CMSIS's declarations to compile-check rcs_app.c outside a CubeMX
 * project (`make -C firmware examples-check`); a real project uses the generated headers instead. */
#ifndef RCS_STUB_MAIN_H
#define RCS_STUB_MAIN_H
#include <stddef.h>
#include <stdint.h>
typedef struct { volatile uint32_t CNT; } TIM_TypeDef;
typedef struct { volatile uint32_t BSRR, ODR; } GPIO_TypeDef;
typedef struct { volatile uint32_t SR; } ADC_TypeDef;
typedef struct { ADC_TypeDef *Instance; } ADC_HandleTypeDef;
typedef struct { TIM_TypeDef *Instance; } TIM_HandleTypeDef;
#define TIM2 ((TIM_TypeDef *)0x40000000u)
#define TIM7 ((TIM_TypeDef *)0x40001400u)
#define GPIOE ((GPIO_TypeDef *)0x40021000u)
#define ADC1 ((ADC_TypeDef *)0x40012000u)
int HAL_TIM_Base_Start(TIM_HandleTypeDef *htim);
int HAL_TIM_Base_Start_IT(TIM_HandleTypeDef *htim);
int HAL_ADC_Start_DMA(ADC_HandleTypeDef *hadc, uint32_t *data, uint32_t length);
uint32_t __get_PRIMASK(void);
void __set_PRIMASK(uint32_t primask);
void __disable_irq(void);
void SCB_InvalidateDCache_by_Addr(uint32_t *addr, int32_t size);
#endif
