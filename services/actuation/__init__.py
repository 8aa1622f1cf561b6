"""Actuation service: the only command authority (valves, motors, sequences, arming, interlocks, abort)."""
