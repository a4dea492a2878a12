from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dsotp_streams.contracts.frames import Measurand, Phase, parse_frame
from dsotp_streams.errors import FrameError


def _strip_comments(path: Path) -> str:
    return "\n".join(
        line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")
    )


def _frame(**overrides: object) -> str:
    frame: dict[str, object] = {
        "device": "pmu-1",
        "timestamp": "2020-05-20T10:27:57.980802+00:00",
        "readings": [{"component": "BUS1", "measurand": "voltmagnitude", "phase": "A", "data": 1}],
    }
    frame.update(overrides)
    return json.dumps(frame)


def test_frames_sogno_example_validates(data_dir: Path) -> None:
    frame = parse_frame(_strip_comments(data_dir / "formats" / "sogno_input.json"))
    assert frame.device == "device1"
    assert frame.timestamp == datetime(2020, 5, 20, 10, 27, 57, 980802, tzinfo=UTC)
    assert [r.component for r in frame.readings] == ["BUS1", "BUS2"]
    assert all(r.measurand is Measurand.VOLTMAGNITUDE for r in frame.readings)


@pytest.mark.parametrize(
    ("name", "field"),
    [
        pytest.param("sogno_output.json", "device", id="sogno-output-is-not-a-frame"),
        pytest.param("mac_input.json", "device", id="mac-meter-format"),
        pytest.param("villas_node_input.json", "device", id="villas-format"),
    ],
)
def test_frames_other_formats_fail_naming_the_field(data_dir: Path, name: str, field: str) -> None:
    with pytest.raises(FrameError, match=field):
        parse_frame(_strip_comments(data_dir / "formats" / name))


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("voltagemagnitude", Measurand.VOLTMAGNITUDE),
        ("currentmagnitude", Measurand.CURRMAGNITUDE),
        ("VoltMagnitude", Measurand.VOLTMAGNITUDE),
        ("voltangle", Measurand.VOLTANGLE),
    ],
)
def test_frames_accept_measurand_aliases(alias: str, expected: Measurand) -> None:
    readings = [{"component": "B", "measurand": alias, "phase": "a", "data": "230.5"}]
    frame = parse_frame(_frame(readings=readings))
    assert frame.readings[0].measurand is expected
    assert frame.readings[0].phase is Phase.A
    assert frame.readings[0].data == pytest.approx(230.5)


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        pytest.param(1_590_000_000, datetime(2020, 5, 20, 18, 40, tzinfo=UTC), id="epoch-s"),
        pytest.param(
            1_590_000_000_500, datetime(2020, 5, 20, 18, 40, 0, 500000, tzinfo=UTC), id="epoch-ms"
        ),
        pytest.param(
            1_590_000_000_000_000_000, datetime(2020, 5, 20, 18, 40, tzinfo=UTC), id="epoch-ns"
        ),
        pytest.param(
            "1590000000.25", datetime(2020, 5, 20, 18, 40, 0, 250000, tzinfo=UTC), id="epoch-string"
        ),
        pytest.param(
            "2020-05-20T20:40:00+02:00", datetime(2020, 5, 20, 18, 40, tzinfo=UTC), id="iso-offset"
        ),
        pytest.param(
            "2020-05-20T18:40:00Z", datetime(2020, 5, 20, 18, 40, tzinfo=UTC), id="iso-zulu"
        ),
        pytest.param(
            "2020-05-20T18:40:00", datetime(2020, 5, 20, 18, 40, tzinfo=UTC), id="iso-naive-is-utc"
        ),
    ],
)
def test_frames_timestamps_become_aware_utc(timestamp: object, expected: datetime) -> None:
    frame = parse_frame(_frame(timestamp=timestamp))
    assert frame.timestamp == expected
    assert frame.timestamp.tzinfo is UTC


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param("{not json", "json", id="not-json"),
        pytest.param(_frame(device=""), "device", id="empty-device"),
        pytest.param(_frame(timestamp="yesterday"), "timestamp", id="bad-timestamp"),
        pytest.param(_frame(timestamp=True), "timestamp", id="bool-timestamp"),
        pytest.param(_frame(readings=[]), "readings", id="no-readings"),
        pytest.param(
            _frame(readings=[{"component": "B", "measurand": "voltage", "data": 1}]),
            "readings.0.measurand",
            id="unknown-measurand",
        ),
        pytest.param(
            _frame(
                readings=[{"component": "B", "measurand": "voltangle", "phase": "D", "data": 1}]
            ),
            "readings.0.phase",
            id="unknown-phase",
        ),
        pytest.param(
            _frame(readings=[{"component": "B", "measurand": "voltangle", "data": "abc"}]),
            "readings.0.data",
            id="data-not-number",
        ),
        pytest.param(
            '{"device": "d", "timestamp": 1, "readings": [{"component": "B", '
            '"measurand": "voltangle", "data": NaN}]}',
            "readings.0.data",
            id="data-nan",
        ),
        pytest.param(
            _frame(readings=[{"component": "B", "measurand": "voltangle", "data": 1, "x": 2}]),
            "readings.0.x",
            id="extra-reading-field",
        ),
    ],
)
def test_frames_malformed_fail_naming_the_field(payload: str, field: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_frame(payload)
    assert field in str(info.value).lower()


def test_frames_epoch_out_of_range_is_a_frame_error() -> None:
    # found by the property test: a huge epoch number escaped as OverflowError
    payload = (
        b'{"device": "d", "timestamp": 1e300, "readings": [{"component": "B", '
        b'"measurand": "voltmagnitude", "data": 1}]}'
    )
    with pytest.raises(FrameError, match="out of range"):
        parse_frame(payload)
