"""Soak of the scale-out runtime: the demo load (CIGRE MV, 10 PMUs at 50 frames/s) from
`dsotp emulate` through Mosquitto -> `dsotp bridge` -> Kafka (tansu) -> `dsotp worker` -> Kafka ->
bridge -> MQTT, every part in a process of its own.

Run: .venv/bin/python benchmarks/soak_scaleout.py [--minutes 10] [--rate 50] [--interval 60]

Every interval prints the resident memory of the worker, the bridge and the broker (tansu), and the
estimates that reached MQTT with their latency (arrival on MQTT minus window start); at the end:
windows missing from the sequence (lost) and the memory growth after the first interval.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _soak import free_port, intervals, log_run, missing_windows, percentiles

from dsotp_streams.adapters.kafka import LocalKafka
from dsotp_streams.adapters.mqtt import MqttEndpoint, connect

log = logging.getLogger("benchmarks.soak_scaleout")
REPO = Path(__file__).resolve().parents[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def spec_at_rate(folder: Path, rate: float) -> Path:
    """The demo's agent spec at `rate` frames/s (constant profiles: no SimBench read)."""
    text = (REPO / "agents" / "cigre-mv.yaml").read_text(encoding="utf-8")
    text = "\n".join(line for line in text.splitlines() if "profiles:" not in line)
    text = text.replace("rate_hz: 10 ", f"rate_hz: {rate:g} ")
    path = folder / "agents" / "cigre-mv.yaml"
    path.parent.mkdir()
    path.write_text(text + "\n", encoding="utf-8")
    return path


def spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dsotp_streams", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for(path: Path, text: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in path.read_text(encoding="utf-8", errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path.name}: no {text!r} after {timeout_s} s")
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start_mosquitto(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 100000\nmax_inflight_messages 0\n"
    )
    proc = subprocess.Popen(
        [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
        stderr=subprocess.DEVNULL,
    )
    return proc, port


async def soak(args: argparse.Namespace, folder: Path) -> None:
    mosquitto, port = start_mosquitto(folder)
    kafka = None
    kafka_url = args.kafka_url
    if kafka_url is None:  # tansu, in memory
        kafka = LocalKafka(port=free_port())
        kafka.start()
        await kafka.wait_ready()
        kafka_url = kafka.url
    spec = spec_at_rate(folder, args.rate)
    env = {
        **os.environ,
        "DSOTP_KAFKA__URL": kafka_url,
        "DSOTP_KAFKA__TOPIC_PREFIX": f"soak{os.getpid()}",
        "DSOTP_MQTT__PORT": str(port),
        "DSOTP_AGENTS_DIR": str(spec.parent),
        "DSOTP_KAFKA__DATA_DIR": str(folder / "faust"),
        "DSOTP_LOG_LEVEL": "INFO",
    }
    worker = spawn(["worker"], env, folder / "worker.log")
    bridge = spawn(["bridge"], env, folder / "bridge.log")
    procs = [worker, bridge]
    lags: list[float] = []
    starts: list[datetime] = []
    statuses: dict[str, int] = {}
    try:
        await asyncio.to_thread(wait_for, folder / "worker.log", "Ready")
        await asyncio.to_thread(wait_for, folder / "bridge.log", "bridge: ready")
        await asyncio.sleep(3.0)  # the group's last rebalance settles

        async def listen() -> None:
            async with connect(MqttEndpoint("127.0.0.1", port), client_id="soak-sub") as client:
                await client.subscribe("dsotp/cigre-mv/state", qos=1)
                async for message in client.messages:
                    body = json.loads(message.payload)
                    start = datetime.fromisoformat(body["window_start"])
                    lags.append((datetime.now(tz=UTC) - start) / timedelta(milliseconds=1))
                    starts.append(start)
                    statuses[body["status"]] = statuses.get(body["status"], 0) + 1

        listener = asyncio.create_task(listen())
        emulator = spawn(
            [
                "emulate",
                "--agent",
                str(spec),
                "--mqtt-url",
                f"mqtt://127.0.0.1:{port}",
                "--rate",
                str(args.rate),
                "--duration",
                str(args.minutes * 60),
            ],
            env,
            folder / "emulator.log",
        )
        procs.append(emulator)
        log.info(
            "%5s %10s %10s %9s %9s %8s %8s %8s",
            "t_s",
            "worker_MiB",
            "bridge_MiB",
            "tansu_MiB",
            "estimates",
            "p50_ms",
            "p95_ms",
            "p99_ms",
        )
        memory: list[float] = []
        running = lambda: emulator.poll() is None  # noqa: E731
        async for elapsed_s, window in intervals(lags, args.interval, running):
            memory.append(rss_mib(worker.pid))
            broker_pid = kafka.pid if kafka is not None else None
            p50, p95, p99 = percentiles(window)
            log.info(
                "%5.0f %10.1f %10.1f %9.1f %9d %8.1f %8.1f %8.1f",
                elapsed_s,
                memory[-1],
                rss_mib(bridge.pid),
                rss_mib(broker_pid) if broker_pid is not None else float("nan"),
                len(window),
                p50,
                p95,
                p99,
            )
        await asyncio.sleep(3.0)  # the last windows
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    finally:
        for proc in reversed(procs):
            stop(proc)
        if kafka is not None:
            kafka.stop()
        mosquitto.terminate()
        mosquitto.wait()
    missing = missing_windows(starts, args.rate)
    emulated = (folder / "emulator.log").read_text(encoding="utf-8", errors="replace").strip()
    log.info("emulator: %s", emulated.splitlines()[-1] if emulated else "?")
    log.info(
        "estimates on MQTT %d %s, distinct windows %d, missing in the sequence %d",
        len(starts),
        statuses,
        len(set(starts)),
        missing,
    )
    log_run(log, lags, memory, "worker memory")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=50.0, help="frames/s per PMU")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds per line")
    parser.add_argument(
        "--kafka-url", help="an existing Kafka (kafka://host:port); default: tansu in memory"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="dsotp-soak-") as folder:
        asyncio.run(soak(args, Path(folder)))


if __name__ == "__main__":
    main()
