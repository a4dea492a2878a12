"""`dsotp convert villas` and `dsotp estimate` on the recorded DPsim stream, as a user runs them."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _dsotp(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dsotp_streams", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _estimate(frames: Path, states: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    agent = str(REPO / "agents" / "sogno-cigre-mv.yaml")
    args = ("--agent", agent, "--input", str(frames), "--output", str(states), *extra)
    return _dsotp("estimate", *args, cwd=states.parent)


@pytest.fixture(scope="module")
def sogno_frames(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("dpsim")
    frames = out / "frames.jsonl"
    done = _dsotp(
        "convert",
        "villas",
        str(data_dir / "dpsim_powerflow_record_cigre.jsonl"),
        "--columns",
        str(data_dir / "dpsim_powerflow_record_cigre.columns.txt"),
        "--output",
        str(frames),
        "--dead-letter",
        str(out / "rejected.jsonl"),
        cwd=out,
    )
    assert done.returncode == 0, done.stderr
    assert "4500 SOGNO frames" in done.stdout and "rejected samples 1" in done.stdout
    rejected = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == 1 and "all values are zero" in rejected[0]["reason"]
    return frames


def test_dpsim_recording_estimates_track_the_recorded_voltages(
    sogno_frames: Path, tmp_path: Path
) -> None:
    states = tmp_path / "states.jsonl"
    done = _estimate(sogno_frames, states)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(x) for x in states.read_text().splitlines()]
    assert len(rows) == 300
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) >= 0.95 * 300
    errors = [r["max_true_dvm_pu"] for r in ok]
    assert all(e is not None for e in errors)
    # five of fifteen nodes measured, pseudo loads scaled by the estimate: the estimator's goal
    assert statistics.median(errors) <= 0.005
    assert max(errors) <= 0.01
    first = rows[0]
    assert {b["bus"] for b in first["buses"]} >= {"N0", "N7", "N14"}
    assert first["chi2"] is not None and first["dof"] > 0 and first["runtime_ms"] > 0


def test_estimate_keeps_going_past_bad_lines(sogno_frames: Path, tmp_path: Path) -> None:
    lines = sogno_frames.read_text().splitlines()[:150]
    lines[3] = '{"device": "dpsim-n0", "timestamp": "never", "readings": []}'
    lines[7] = "not json at all"
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(lines) + "\n")
    done = _estimate(
        broken, tmp_path / "states.jsonl", "--dead-letter", str(tmp_path / "dead.jsonl")
    )
    assert done.returncode == 0, done.stderr
    assert "rejected lines 2" in done.stdout
    dead = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [d["topic"].rsplit(":", 1)[1] for d in dead] == ["4", "8"]
    assert len((tmp_path / "states.jsonl").read_text().splitlines()) == 10
