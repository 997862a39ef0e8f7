/* Minimal Cortex-M4 start-up for QEMU mps2-an386: vector table at 0, .data copy, .bss zeroing,
 * FPU enable, semihosting for printf/exit (newlib rdimon). */
#include <stdint.h>
#include <stdlib.h>

extern uint32_t _estack, _sidata, _sdata, _edata, _sbss, _ebss;
extern int main(void);
extern void initialise_monitor_handles(void);

void _init(void) {}
void _fini(void) {}

__attribute__((noreturn)) void Reset_Handler(void) {
  for (uint32_t *s = &_sidata, *d = &_sdata; d < &_edata;) *d++ = *s++;
  for (uint32_t* d = &_sbss; d < &_ebss;) *d++ = 0;
  *(volatile uint32_t*)0xE000ED88u |= 0xFu << 20; /* CPACR: full access to CP10/CP11 (FPU) */
  __asm__ volatile("dsb\n isb" ::: "memory");
  initialise_monitor_handles();
  exit(main());
}

__attribute__((noreturn)) static void Fault_Handler(void) {
  exit(99);
}

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(&_estack), Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, 0, 0, 0, 0, Fault_Handler, Fault_Handler, 0, Fault_Handler,
    Fault_Handler};
