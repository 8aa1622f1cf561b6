"""The Arduino Uno step-motor firmware, emulated behind a pseudo-terminal (`rcs-arduino-emulator`)."""

from services.emulators.arduino.emulator import ArduinoEmulator

__all__ = ["ArduinoEmulator"]
