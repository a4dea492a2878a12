"""PMU fleet emulator: time-varying load and generation, power flow, C37.118-like noise."""

from dsotp_streams.emulator.fleet import (
    EmulatedInstant,
    PmuFleet,
    candidate_pmus,
    placement_samples,
)

__all__ = ["EmulatedInstant", "PmuFleet", "candidate_pmus", "placement_samples"]
