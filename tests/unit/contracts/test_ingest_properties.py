"""Property-based and fuzz tests of the ingest path: whatever arrives, parsing and the
plausibility check either accept a frame or say why, and never raise anything else."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.frames import PmuFrame, parse_frame
from dsotp_streams.core.grid import GridModel
from dsotp_streams.core.validation import FrameCheck
from dsotp_streams.errors import FrameError

json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
measurands = st.sampled_from(
    [
        "voltmagnitude",
        "voltangle",
        "currmagnitude",
        "currangle",
        "frequency",
        "activepower",
        "VoltageMagnitude",
        "voltage",
        "",
    ]
)
readings = st.fixed_dictionaries(
    {
        "component": st.sampled_from(["Bus 1", "Line 1-2", "Bus 99", ""]),
        "measurand": measurands,
        "data": st.one_of(
            st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.text(max_size=5)
        ),
    },
    optional={"phase": st.sampled_from(["A", "b", "C", "Z", 1])},
)
frames = st.fixed_dictionaries(
    {
        "device": st.sampled_from(["pmu-n1", "pmu-n3", "intruder", "", "a/b"]),
        "timestamp": st.one_of(
            st.floats(allow_nan=True),
            st.integers(),
            st.text(max_size=30),
            st.just("2026-01-01T00:00:00Z"),
        ),
        "readings": st.lists(readings, max_size=5),
    }
)


@pytest.fixture(scope="module")
def check(spec: AgentSpec, grid: GridModel) -> FrameCheck:
    return FrameCheck(spec, grid=grid)


def _ingest(payload: bytes, check: FrameCheck) -> str:
    try:
        frame = parse_frame(payload)
    except FrameError as exc:
        assert str(exc)
        return "invalid"
    assert isinstance(frame, PmuFrame)
    problem = check.problem(frame)
    return "implausible" if problem else "accepted"


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frame=frames)
def test_structured_frames_are_accepted_or_explained(
    frame: dict[str, object], check: FrameCheck
) -> None:
    assert _ingest(json.dumps(frame).encode(), check) in (
        "invalid",
        "implausible",
        "accepted",
    )


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=json_values)
def test_any_json_value_is_accepted_or_explained(value: object, check: FrameCheck) -> None:
    payload = json.dumps(value, allow_nan=True).encode()
    assert _ingest(payload, check) in ("invalid", "implausible", "accepted")


@settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=st.binary(max_size=300))
def test_fuzzed_bytes_never_escape_as_other_errors(payload: bytes, check: FrameCheck) -> None:
    assert _ingest(payload, check) in ("invalid", "implausible", "accepted")
