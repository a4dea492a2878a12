"""Typed messages: frames in, windows, estimates and dead letters out, agent specs."""

from dsotp_streams.contracts.agent import AgentSpec, DeviceSpec, load_agent_spec
from dsotp_streams.contracts.frames import Measurand, Phase, PmuFrame, Reading, parse_frame
from dsotp_streams.contracts.messages import (
    BusState,
    DeadLetter,
    EstimateStatus,
    LineFlow,
    StateEstimate,
    TrueState,
    Window,
)
from dsotp_streams.contracts.sogno import estimate_to_sogno

__all__ = [
    "AgentSpec",
    "BusState",
    "DeadLetter",
    "DeviceSpec",
    "EstimateStatus",
    "LineFlow",
    "Measurand",
    "Phase",
    "PmuFrame",
    "Reading",
    "StateEstimate",
    "TrueState",
    "Window",
    "estimate_to_sogno",
    "load_agent_spec",
    "parse_frame",
]
