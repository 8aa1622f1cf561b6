"""Acquisition service: STM32 link, calibration, derived channels, ring buffer, telemetry publishing."""
