"""The live page in a real headless Chromium during a demo run with a fault: charts fill with
estimates, and the FLISR case appears with its plan (and lands in the store)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Page

from dsotp_streams.adapters.store import DuckStore
from tests.integration.history import restarted_demo

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


@dataclass
class _Demo:
    """A demo run with its live page open: the page and its script errors while it runs; the
    demo's output and exit code after."""

    page: Page
    base: str
    errors: list[str] = field(default_factory=list)
    out: str = ""
    err: str = ""
    returncode: int | None = None


@contextlib.contextmanager
def _demo_page(args: list[str], *, height: int) -> Iterator[_Demo]:
    """`dsotp demo ARGS` with the live page on free ports, opened in headless Chromium."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "chromium is not installed: run scripts/test.sh"
    live_port, mqtt_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [
            *[sys.executable, "-m", "dsotp_streams", "demo", *args],
            *["--mqtt-port", str(mqtt_port), "--live-port", str(live_port)],
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
            page = browser.new_page(viewport={"width": 1400, "height": height})
            demo = _Demo(page, base)
            page.on("pageerror", lambda exc: demo.errors.append(str(exc)))
            page.goto(base + "/")
            yield demo
            browser.close()
    finally:
        out, err = proc.communicate(timeout=90)
    demo.out, demo.err, demo.returncode = out, err, proc.returncode


def test_live_page_shows_estimated_measured_and_true_voltages(tmp_path: Path) -> None:
    args = ["--duration", "30", "--store", str(tmp_path / "live.duckdb"), "--fault", "Line 8-9@12"]
    with _demo_page(args, height=1000) as demo:
        page = demo.page
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
        with urllib.request.urlopen(f"{demo.base}/api/live/cigre-mv/history") as r:
            points = json.load(r)["points"]
    assert demo.errors == []
    assert flisr["fault_lines"] == ["Line 8-9"] and flisr["status"] == "planned"
    assert "Fault in Line 8-9" in banner and "close S3" in banner
    last = live["last"]
    assert last["status"] == "ok" and status.startswith("ok")
    assert len(last["vm"]) == 15 and all(v is not None for v in last["vm"])
    assert any(v is not None for v in last["meas"]) and all(v is not None for v in last["true"])
    assert max(abs(a - b) for a, b in zip(last["vm"], last["true"], strict=True)) < 0.01
    assert "estimates ok" in counters
    assert shot.stat().st_size > 30_000
    assert len(points) >= 30
    assert demo.returncode == 0, demo.err[-2000:]
    assert "sink duckdb:" in demo.out
    store = DuckStore(tmp_path / "live.duckdb")
    try:
        (row,) = store.query("SELECT section, text FROM flisr")
        assert row["section"] == "Line 8-9" and "restored" in row["text"]
    finally:
        store.close()


def test_live_page_shows_the_forecast_of_a_restarted_pipeline(tmp_path: Path) -> None:
    """A demo restarted on a store with nine days of estimates and a saved forecaster: the
    page's forecast panel draws the day-ahead band of the chosen bus with the load now."""
    agent, store, buses = restarted_demo(tmp_path)
    args = ["--duration", "15", "--agent", str(agent), "--store", str(store)]
    with _demo_page(args, height=1300) as demo:
        page = demo.page
        page.wait_for_function("window.dsotpLive && window.dsotpLive.forecast", timeout=40_000)
        # the stored loads are another grid's: the estimator sets the forecast aside, and says so
        page.wait_for_function(
            "/set aside [1-9]/.test(document.getElementById('counters').textContent)",
            timeout=20_000,
        )
        page.select_option("#bus", label="Bus 5")
        time.sleep(1.0)
        forecast = page.evaluate("window.dsotpLive.forecast")
        note_hidden = page.evaluate("document.getElementById('fnote').hidden")
        canvas_hidden = page.evaluate("document.getElementById('forecast').hidden")
        title = page.inner_text("#fbus")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "live-page-forecast.png"), full_page=True)
    assert demo.errors == []
    assert note_hidden and not canvas_hidden and title == "Bus 5"
    assert len(forecast["times"]) == 96 and forecast["levels"] == ["0.1", "0.5", "0.9"]
    medians = forecast["values"]["0.5"]
    assert len(medians) == len(buses) and all(column is not None for column in medians)
    lo, hi = forecast["values"]["0.1"][5], forecast["values"]["0.9"][5]
    assert all(a <= b for a, b in zip(lo, hi, strict=True))
    assert demo.returncode == 0, demo.err[-2000:]
