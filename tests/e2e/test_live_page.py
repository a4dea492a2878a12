"""The live page in a real headless Chromium during a demo run with a fault: charts fill with
estimates, and the FLISR case appears with its plan (and lands in the store)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dsotp_streams.adapters.store import DuckStore

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"demo exited early: {proc.communicate()[1][-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {timeout_s} s")


def test_live_page_shows_estimated_measured_and_true_voltages(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "chromium is not installed: run scripts/test.sh"
    live_port, mqtt_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dsotp_streams",
            "demo",
            "--duration",
            "30",
            "--mqtt-port",
            str(mqtt_port),
            "--live-port",
            str(live_port),
            "--store",
            str(tmp_path / "live.duckdb"),
            "--fault",
            "Line 8-9@12",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{live_port}"
    try:
        _wait_http(f"{base}/api/live/areas", proc)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(base + "/")
            page.wait_for_function(
                "window.dsotpLive && window.dsotpLive.estimated >= 30", timeout=40_000
            )
            # the emulated fault at 12 s opens a FLISR case; the page shows its plan
            page.wait_for_function("window.dsotpLive.flisr", timeout=40_000)
            page.wait_for_function(
                "window.dsotpLive.last && window.dsotpLive.last.status === 'ok'", timeout=10_000
            )
            flisr = page.evaluate("window.dsotpLive.flisr")
            banner = page.inner_text("#flisr")
            page.click("#diagram", position={"x": 200, "y": 120})  # pick a bus on the diagram
            time.sleep(1.0)
            live = page.evaluate("window.dsotpLive")
            status = page.inner_text("#status")
            counters = page.inner_text("#counters")
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "live-page.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
        assert errors == []
        assert flisr["fault_lines"] == ["Line 8-9"] and flisr["status"] == "planned"
        assert "Fault in Line 8-9" in banner and "close S3" in banner
        last = live["last"]
        assert last["status"] == "ok" and status.startswith("ok")
        assert len(last["vm"]) == 15 and all(v is not None for v in last["vm"])
        assert any(v is not None for v in last["meas"]) and all(v is not None for v in last["true"])
        assert max(abs(a - b) for a, b in zip(last["vm"], last["true"], strict=True)) < 0.01
        assert "estimates ok" in counters
        assert shot.stat().st_size > 30_000
        with urllib.request.urlopen(f"{base}/api/live/cigre-mv/history") as r:
            assert len(json.load(r)["points"]) >= 30
    finally:
        out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err[-2000:]
    assert "sink duckdb:" in out
    store = DuckStore(tmp_path / "live.duckdb")
    try:
        (row,) = store.query("SELECT section, text FROM flisr")
        assert row["section"] == "Line 8-9" and "restored" in row["text"]
    finally:
        store.close()
