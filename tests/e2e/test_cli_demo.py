"""`dsotp demo` as a user runs it: embedded broker, emulator, estimates, counts at exit."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dsotp_streams.adapters.store import DuckStore
from tests.integration.history import restarted_demo

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _demo(port: int, store: Path, seconds: int, *args: str) -> subprocess.CompletedProcess[str]:
    """`dsotp demo` without the live page, on its own broker port and store."""
    command = ["demo", "--duration", str(seconds), "--mqtt-port", str(port), "--no-live"]
    return subprocess.run(
        [sys.executable, "-m", "dsotp_streams", *command, "--store", str(store), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_demo_estimates_at_least_95_percent_of_windows(tmp_path: Path) -> None:
    port = _free_port()
    proc = _demo(port, tmp_path / "demo.duckdb", 20)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pending publish calls" not in proc.stdout + proc.stderr  # no warning in normal running
    match = re.search(
        r"(\d+) instants emulated \((\d+) skipped\).*?"
        r"(\d+) estimates published \((\d+) ok\).*?coverage ([\d.]+) %",
        proc.stdout.replace("\n", " "),
    )
    assert match, proc.stdout[-2000:]
    instants, skipped, _published, ok, coverage = match.groups()
    assert int(instants) >= 150  # 20 s at 10 frames/s, start-up aside
    assert int(skipped) <= 0.05 * int(instants)
    assert int(ok) >= 0.95 * int(instants)
    assert float(coverage) >= 95.0
    # the embedded broker is gone after exit: the port is free again
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    # everything estimated is in the embedded store, frames included
    sink = re.search(r"sink duckdb: (\d+) rows written, \d+ retries, (\d+) spilled", proc.stdout)
    assert sink and int(sink.group(1)) > 0 and sink.group(2) == "0", proc.stdout[-1000:]
    store = DuckStore(tmp_path / "demo.duckdb")
    try:
        assert store.count("se_quality") == int(_published)
        assert store.count("state") == 15 * int(ok)
        assert store.count("pmu") > 10 * int(ok)
    finally:
        store.close()


def test_cli_demo_bad_agent_spec_is_one_clear_error(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("area: 'a/b'\ngrid: {name: create_cigre_network_mv}\ndevices: []\n")
    proc = subprocess.run(
        [sys.executable, "-m", "dsotp_streams", "demo", "--agent", str(spec), "--duration", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "invalid agent spec" in proc.stderr
    assert "area" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_demo_restarted_on_its_store_forecasts_at_once(tmp_path: Path) -> None:
    """A store that already holds nine days of estimates and a saved forecaster: the demo's
    first minute brings a day-ahead forecast (without them it would take eight days)."""
    started = datetime.now(tz=UTC)
    agent, store_path, buses = restarted_demo(tmp_path)
    proc = _demo(_free_port(), store_path, 8, "--agent", str(agent))
    assert proc.returncode == 0, proc.stderr[-3000:]
    issued = re.search(r"forecasts issued \(set aside\)\s*│\s*(\d+) \((\d+)\)", proc.stdout)
    steps = re.search(r"forecast history read at start\s*│\s*(\d+) steps", proc.stdout)
    assert issued and steps, proc.stdout[-2000:]
    assert int(issued.group(1)) >= 1 and 9 * 96 - 1 <= int(steps.group(1)) <= 9 * 96 + 1
    # the stored loads are not this grid's (a model and history of another grid): the estimator
    # sets the forecast's pseudo-measurements aside and every window stays estimated ok
    assert int(issued.group(2)) >= 1
    summary = re.search(r"(\d+) estimates\s+published\s+\((\d+) ok\)", proc.stdout)
    assert summary and int(summary.group(2)) >= 0.95 * int(summary.group(1)), proc.stdout[-2000:]
    store = DuckStore(store_path, read_only=True)
    try:
        rows = store.query(
            "SELECT count(DISTINCT node) AS nodes, min(issued_ns) AS issued FROM forecast "
            "WHERE area = 'cigre-mv'"
        )
    finally:
        store.close()
    assert rows[0]["nodes"] == len(buses)
    assert rows[0]["issued"] >= started.timestamp() * 1e9


def test_cli_demo_with_history_forecasts_from_the_start(tmp_path: Path) -> None:
    """`--history-days 45`: the store is given 45 days of the emulated loads and the profiles
    run in real time, so the forecaster trains at the first window and forecasts; its
    pseudo-measurements agree with the PMUs (none set aside) and every window is estimated."""
    agents = tmp_path / "agents"
    agents.mkdir()
    shutil.copy(REPO / "agents" / "cigre-mv.yaml", agents / "cigre-mv.yaml")  # models/ beside it
    store = tmp_path / "demo.duckdb"
    args = ("--agent", str(agents / "cigre-mv.yaml"), "--history-days", "45")
    proc = _demo(_free_port(), store, 15, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    issued = re.search(r"forecasts issued \(set aside\)\s*│\s*(\d+) \((\d+)\)", proc.stdout)
    steps = re.search(r"forecast history read at start\s*│\s*(\d+) steps", proc.stdout)
    assert issued and steps, proc.stdout[-2000:]
    assert int(issued.group(1)) >= 1 and int(issued.group(2)) == 0
    assert int(steps.group(1)) == 45 * 96
    summary = re.search(r"(\d+) estimates\s+published\s+\((\d+) ok\)", proc.stdout)
    assert summary and int(summary.group(2)) >= 0.95 * int(summary.group(1)), proc.stdout[-2000:]
    assert (tmp_path / "models" / "forecast-cigre-mv.json").stat().st_size > 100_000  # trained
    db = DuckStore(store, read_only=True)
    try:
        (row,) = db.query("SELECT count(DISTINCT node) AS nodes FROM forecast")
    finally:
        db.close()
    assert row["nodes"] == 15
