"""The STM32F767ZI acquisition firmware, emulated behind a pseudo-terminal (`rcs-stm32-emulator`)."""

from services.emulators.stm32.emulator import Stm32Emulator

__all__ = ["Stm32Emulator"]
