"""Start-up: how long `dsotp --help` takes, and `dsotp demo` from launch to its first estimate.

Each figure is the median of `--runs` launches; the baselines, run in the same process, are the
interpreter alone (`python -c pass`) and the import of the CLI's parser library (`typer`), the
floor under any `--help`. The demo runs on its own embedded broker port, without the live page,
on an in-memory store, with a cache directory of its own (the first launch builds the cache,
the later ones read it); the first estimate is the first message on `dsotp/<area>/state`, seen by
an outside MQTT client.

    .venv/bin/python benchmarks/startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as paho
from _soak import free_port

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("startup")


def _timed(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, cwd=REPO, capture_output=True, check=True)
    return time.perf_counter() - started


def _first_estimate_s(cache_dir: Path, timeout_s: float = 120.0) -> float:
    """Launch `dsotp demo`; seconds until an outside client sees its first estimate."""
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "dsotp_streams", "demo", "--duration", "600"),
            *("--mqtt-port", str(port), "--no-live", "--store", ":memory:"),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "DSOTP_CACHE_DIR": str(cache_dir)},
    )
    seen: list[float] = []
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"startup-{port}")
    client.on_connect = lambda c, *_a: c.subscribe("dsotp/+/state", qos=0)
    client.on_message = lambda *_a: seen.append(time.perf_counter())
    try:
        while True:  # the broker comes up first
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError("the demo's broker did not come up")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.02)
        client.connect("127.0.0.1", port)
        client.loop_start()
        while not seen:
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError("no estimate from the demo")
            time.sleep(0.01)
        return seen[0] - started
    finally:
        client.loop_stop()
        client.disconnect()
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    python = sys.executable
    floor = statistics.median(_timed([python, "-c", "pass"]) for _ in range(args.runs))
    typer = statistics.median(_timed([python, "-c", "import typer"]) for _ in range(args.runs))
    helps = [_timed([python, "-m", "dsotp_streams", "--help"]) for _ in range(args.runs)]
    help_s = statistics.median(helps)
    log.info("python -c pass       %6.2f s (median of %d)", floor, args.runs)
    log.info("python -c 'import typer' %6.2f s", typer)
    log.info(
        "dsotp --help         %6.2f s (runs %s); %.1fx the interpreter, %.1fx typer's import",
        help_s,
        ", ".join(f"{t:.2f}" for t in helps),
        help_s / floor,
        help_s / typer,
    )
    with tempfile.TemporaryDirectory(prefix="dsotp-cache-") as cache:
        cold = _first_estimate_s(Path(cache))  # builds the cache (the SimBench profiles)
        warm = [_first_estimate_s(Path(cache)) for _ in range(args.runs)]
    log.info("dsotp demo: launch to first estimate, first launch (cache built) %.2f s", cold)
    log.info(
        "dsotp demo: launch to first estimate %.2f s (median of %d later launches; runs %s)",
        statistics.median(warm),
        args.runs,
        ", ".join(f"{t:.2f}" for t in warm),
    )
    first = statistics.median(warm)
    log.info(
        "bars (issue: --help <= 0.5 s, first estimate <= 5 s): --help %s, first estimate %s",
        "met" if help_s <= 0.5 else f"missed by {help_s - 0.5:.2f} s",
        "met" if first <= 5.0 else f"missed by {first - 5.0:.2f} s",
    )


if __name__ == "__main__":
    main()
