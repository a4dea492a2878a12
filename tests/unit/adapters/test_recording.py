"""Recordings and the frame formats a replay reads; the replay API on the DPsim stream."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

import dsotp_streams
from dsotp_streams.adapters.recording import RecordingWriter, Rejected, read_frames, read_recording
from dsotp_streams.contracts.frames import PmuFrame
from dsotp_streams.errors import DsotpError

REPO = Path(__file__).resolve().parents[3]
FRAME = {
    "device": "pmu-1",
    "timestamp": "2026-01-01T00:00:00Z",
    "readings": [{"component": "Bus 1", "measurand": "voltmagnitude", "data": 11500.0}],
}


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_recording_round_trip_keeps_order_topic_and_time(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"rec{suffix}"
    writer = RecordingWriter(path)
    at = datetime(2026, 1, 1, 12, tzinfo=UTC)
    writer.write("dsotp/a/pmu/pmu-1", json.dumps(FRAME).encode(), at)
    writer.write("dsotp/a/pmu/pmu-1", b"{broken", at)
    writer.close()
    rows = list(read_recording(path))
    assert [r[1] for r in rows] == ["dsotp/a/pmu/pmu-1"] * 2 and rows[0][0] == at
    frames = list(read_frames(path))
    assert isinstance(frames[0], PmuFrame) and frames[0].device == "pmu-1"
    assert isinstance(frames[1], Rejected) and frames[1].line == 2


def test_csv_of_readings_groups_frames_and_rejects_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(
        "timestamp,device,component,measurand,phase,data\n"
        "2026-01-01T00:00:00Z,pmu-1,Bus 1,voltmagnitude,A,11500\n"
        "2026-01-01T00:00:00Z,pmu-1,Bus 1,voltangle,A,0.01\n"
        "2026-01-01T00:00:00Z,pmu-2,Bus 2,voltmagnitude,A,11400\n"
        "2026-01-01T00:00:01Z,pmu-1,Bus 1,speed,A,3\n"
        "2026-01-01T00:00:01Z,pmu-1,Bus 1,voltmagnitude,A,11501\n"
    )
    items = list(read_frames(path))
    frames = [i for i in items if isinstance(i, PmuFrame)]
    rejected = [i for i in items if isinstance(i, Rejected)]
    assert [(f.device, len(f.readings)) for f in frames] == [
        ("pmu-1", 2),
        ("pmu-2", 1),
        ("pmu-1", 1),
    ]
    assert len(rejected) == 1 and rejected[0].line == 5


def test_villas_needs_its_columns_file(data_dir: Path) -> None:
    record = data_dir / "dpsim_powerflow_record_cigre.jsonl"
    with pytest.raises(DsotpError, match="columns"):
        list(read_frames(record))
    items = list(read_frames(record, columns=data_dir / "dpsim_powerflow_record_cigre.columns.txt"))
    assert sum(isinstance(i, PmuFrame) for i in items) == 4500
    assert sum(isinstance(i, Rejected) for i in items) == 1


def test_replay_api_estimates_the_dpsim_stream_without_a_broker(data_dir: Path) -> None:
    estimates = list(
        dsotp_streams.replay(
            data_dir / "dpsim_powerflow_record_cigre.jsonl",
            columns=data_dir / "dpsim_powerflow_record_cigre.columns.txt",
            agent=REPO / "agents" / "sogno-cigre-mv.yaml",
            data_dir=data_dir.parent,
        )
    )
    assert len(estimates) == 300
    assert all(e.status.value == "ok" for e in estimates)
    assert max(e.max_true_dvm_pu or 1.0 for e in estimates) < 0.025
