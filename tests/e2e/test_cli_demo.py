"""`dsotp demo` as a user runs it: embedded broker, emulator, estimates, counts at exit."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dsotp_streams.adapters.store import DuckStore

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli_demo_estimates_at_least_95_percent_of_windows(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dsotp_streams",
            "demo",
            "--duration",
            "20",
            "--mqtt-port",
            str(port),
            "--no-live",
            "--store",
            str(tmp_path / "demo.duckdb"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
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
