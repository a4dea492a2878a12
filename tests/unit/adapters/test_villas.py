"""VILLASnode records into SOGNO frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsotp_streams.adapters.villas import (
    Rejected,
    VillasColumn,
    read_columns,
    villas_to_frames,
)
from dsotp_streams.contracts.frames import Measurand
from dsotp_streams.errors import FrameError

COLUMNS = [
    VillasColumn("N0", Measurand.VOLTMAGNITUDE),
    VillasColumn("N0", Measurand.VOLTANGLE),
    VillasColumn("N1", Measurand.VOLTMAGNITUDE),
    VillasColumn("N1", Measurand.VOLTANGLE),
]


def _record(data: list[float], seconds: int = 1_551_884_430, ns: int = 319_805_071) -> str:
    return json.dumps([{"ts": {"origin": [seconds, ns]}, "sequence": 1, "data": data}])


def test_villas_sample_becomes_one_frame_per_node() -> None:
    out = list(villas_to_frames([_record([110e3, 0.0, 19.8e3, -0.03])], COLUMNS))
    assert [f.device for f in out if not isinstance(f, Rejected)] == ["dpsim-n0", "dpsim-n1"]
    frame = out[1]
    assert not isinstance(frame, Rejected)
    assert frame.timestamp.isoformat() == "2019-03-06T15:00:30.319805+00:00"
    assert [(r.component, r.measurand, r.data) for r in frame.readings] == [
        ("N1", Measurand.VOLTMAGNITUDE, 19.8e3),
        ("N1", Measurand.VOLTANGLE, -0.03),
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (_record([0.0, 0.0, 0.0, 0.0]), "all values are zero"),
        (_record([1.0, 2.0]), "2 values"),
        ("{not json", "not JSON"),
        (json.dumps([{"data": [1.0, 2.0, 3.0, 4.0]}]), "ts.origin"),
        (_record([1.0, float("nan"), 3.0, 4.0]).replace("NaN", "NaN"), "NaN"),
    ],
)
def test_villas_bad_samples_are_rejected_with_a_reason(line: str, reason: str) -> None:
    good = _record([110e3, 0.0, 19.8e3, -0.03])
    out = list(villas_to_frames([line, good], COLUMNS))
    rejected = [x for x in out if isinstance(x, Rejected)]
    assert len(rejected) == 1 and rejected[0].line == 1 and reason in rejected[0].reason
    assert len(out) == 3  # the good sample after it still converts


def test_villas_columns_of_the_dpsim_recording(data_dir: Path, tmp_path: Path) -> None:
    columns = read_columns(data_dir / "dpsim_powerflow_record_cigre.columns.txt")
    assert len(columns) == 30 and columns[1] == VillasColumn("N0", Measurand.VOLTANGLE)
    bad = tmp_path / "cols.txt"
    bad.write_text("N0.V.mag\nN0.Q.what\n")
    with pytest.raises(FrameError, match=r"cols\.txt:2"):
        read_columns(bad)
