"""PMU fleet emulator: time-varying load and generation, power flow, C37.118-like noise."""

from dsotp_streams.emulator.fleet import EmulatedInstant, PmuFleet

__all__ = ["EmulatedInstant", "PmuFleet"]
