"""Scale-out runtime: worker throughput (1 and 2 faust workers) and end-to-end latency beside
the embedded runtime, on the same machine and load.

Run: .venv/bin/python benchmarks/scaleout.py [--areas 5] [--instants 600] [--rate 50]

1. Worker throughput: `--areas` CIGRE MV areas of 10 PMUs; frame batches as the bridge writes
   them (one record per area and instant, 10 frames) are put on the frames topic of a tansu
   broker, then 1 worker, and in a second run 2 workers of a new group, estimate them all; frames/s
   from the first to the last estimate on the state topic (start-up not counted). The ratio is
   2 workers / 1 worker.
2. Bridge throughput: frames published to Mosquitto as fast as a second process can, through
   `dsotp bridge` to Kafka (frames/s acknowledged by Kafka).
3. Latency, live: the PMUs at `--rate` frames/s for `--seconds`, re-stamped with the wall clock,
   MQTT -> bridge -> 1 worker -> bridge -> MQTT, and the same load through the embedded runtime
   (one AreaPipeline per area in one process); percentiles of (estimate received - window start).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.adapters.kafka import KafkaTopics, LocalKafka
from dsotp_streams.adapters.mqtt import MqttEndpoint, connect
from dsotp_streams.contracts.agent import load_agent_spec
from dsotp_streams.contracts.frames import PmuFrame
from dsotp_streams.contracts.messages import BridgedFrame, FrameBatch
from dsotp_streams.emulator import PmuFleet
from dsotp_streams.runtime.bridge import Bridge
from dsotp_streams.runtime.embedded import AreaPipeline
from dsotp_streams.settings import KafkaSettings, MqttSettings, RuntimeSettings, Settings

log = logging.getLogger("benchmarks.scaleout")
REPO = Path(__file__).resolve().parents[1]
DEVICES = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_specs(folder: Path, areas: int, rate_hz: float) -> list[str]:
    text = (REPO / "agents" / "cigre-mv.yaml").read_text(encoding="utf-8")
    text = "\n".join(line for line in text.splitlines() if "profiles:" not in line)
    text = text.replace("rate_hz: 10 ", f"rate_hz: {rate_hz:g} ")
    names = [f"bench-{k}" for k in range(1, areas + 1)]
    for name in names:
        (folder / f"{name}.yaml").write_text(text.replace("area: cigre-mv", f"area: {name}"))
    return names


def base_frames(instants: int, rate_hz: float) -> list[list[PmuFrame]]:
    """Emulated frames of one area (reused for every area: frames carry no area)."""
    spec = load_agent_spec(REPO / "agents" / "cigre-mv.yaml")
    fleet = PmuFleet(spec, load_grid(spec.grid))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    return [fleet.step(t0 + k * timedelta(seconds=1 / rate_hz)).frames for k in range(instants)]


class Mosquitto:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        conf = folder / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 1000000\nmax_inflight_messages 0\n"
        )
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
        time.sleep(0.3)

    @property
    def endpoint(self) -> MqttEndpoint:
        return MqttEndpoint("127.0.0.1", self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def start_workers(
    count: int, *, url: str, prefix: str, group: str, agents: Path, folder: Path
) -> list[subprocess.Popen[bytes]]:
    procs = []
    for k in range(count):
        env = {
            **os.environ,
            "DSOTP_KAFKA__URL": url,
            "DSOTP_KAFKA__TOPIC_PREFIX": prefix,
            "DSOTP_KAFKA__GROUP": group,
            "DSOTP_KAFKA__PARTITIONS": "8",
            "DSOTP_KAFKA__SESSION_TIMEOUT_S": "3",
            # the backlog is of frames stamped in January: estimate them all the same
            "DSOTP_KAFKA__MAX_WINDOW_AGE_S": "0",
            "DSOTP_KAFKA__DATA_DIR": str(folder / f"{group}-{k}"),
            "DSOTP_AGENTS_DIR": str(agents),
            "DSOTP_LOG_LEVEL": "INFO",
        }
        out = (folder / f"{group}-{k}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "dsotp_streams", "worker"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return procs


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=60)


async def wait_ready(folder: Path, group: str, count: int, timeout_s: float = 60) -> None:
    """Until every worker of the group has logged faust's `Ready` (its group joined)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        logs = [(folder / f"{group}-{k}.log").read_text(errors="replace") for k in range(count)]
        if all("Ready" in text for text in logs):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"workers of {group} not ready")


async def worker_throughput(
    url: str, areas: list[str], frames: list[list[PmuFrame]], workers: int, folder: Path
) -> tuple[float, float]:
    """Frames/s of `workers` faust workers on a backlog of frame batches, and frames per
    second of worker CPU time (all workers together)."""
    prefix = f"tp{workers}"
    topics = KafkaTopics(prefix)
    procs = start_workers(
        workers,
        url=url,
        prefix=prefix,
        group=f"{prefix}-g",
        agents=folder / "agents",
        folder=folder,
    )
    consumer = AIOKafkaConsumer(
        topics.state,
        bootstrap_servers=url.split("://")[1],
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
    )
    try:
        await wait_ready(folder, f"{prefix}-g", workers)
        await asyncio.sleep(3.0)  # the group's last rebalance settles
        await consumer.start()
        producer = AIOKafkaProducer(bootstrap_servers=url.split("://")[1], linger_ms=5)
        await producer.start()
        now = datetime.now(tz=UTC)
        for instant in frames:
            payloads = [
                BridgedFrame(
                    topic=f"dsotp/x/pmu/{f.device}", payload=f.model_dump_json(), received_at=now
                )
                for f in instant
            ]
            for area in areas:
                batch = FrameBatch(area=area, frames=payloads).model_dump_json().encode()
                await producer.send(topics.frames, batch, key=area.encode())
        await producer.flush()
        await producer.stop()
        cpu_start = sum(cpu_seconds(p.pid) for p in procs)
        expected = len(areas) * (len(frames) - 1)  # the last instant waits for an idle close
        seen = 0
        first = last = 0.0
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=30_000)
            if not batch:
                raise RuntimeError(f"estimates stopped at {seen} of {expected}")
            for records in batch.values():
                for _ in records:
                    seen += 1
                    last = time.perf_counter()
                    if seen == 1:
                        first = last
        cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu_start
        return (seen - 1) * DEVICES / (last - first), seen * DEVICES / cpu
    finally:
        await consumer.stop()
        stop_workers(procs)


def _publisher(
    port: int,
    payloads: list[tuple[str, str]],
    live: tuple[list[str], int, float] | None,
) -> None:
    """In a process of its own: publish payloads (QoS 1) as fast as possible, or live: instant
    by instant (`per_instant` payloads) at `rate_hz`, each payload's timestamp (`stamps[k]`, as
    written in it) replaced by the instant's wall-clock time."""

    logging.getLogger("mqtt").setLevel(logging.ERROR)  # "pending publish calls" is the point

    async def go() -> None:
        endpoint = MqttEndpoint("127.0.0.1", port)
        async with connect(endpoint, client_id="bench-pub", max_queued_outgoing=None) as client:
            if live is None:
                for k in range(0, len(payloads), 200):
                    chunk = payloads[k : k + 200]
                    await asyncio.gather(*(client.publish(t, p, qos=1) for t, p in chunk))
                return
            stamps, per_instant, rate_hz = live
            start = time.time() + 0.2
            for k in range(0, len(payloads), per_instant):
                at = start + (k // per_instant) / rate_hz
                delay = at - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                chunk = [
                    (topic, text.replace(stamps[j], now))
                    for j, (topic, text) in enumerate(payloads[k : k + per_instant], start=k)
                ]
                await asyncio.gather(*(client.publish(t, p, qos=1) for t, p in chunk))

    asyncio.run(go())


async def _when(condition: Callable[[], bool], poll_s: float) -> float:
    """perf_counter() when condition first holds (polled: the bridge's counters are plain ints)."""
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(poll_s)
    return time.perf_counter()


async def bridge_throughput(
    url: str, broker: Mosquitto, areas: list[str], frames: list[list[PmuFrame]]
) -> float:
    settings = Settings(
        mqtt=MqttSettings(port=broker.port, client_id_prefix="bench-bridge"),
        kafka=KafkaSettings(url=url, topic_prefix="bridge", partitions=8),
    )
    payloads = [
        (f"dsotp/{area}/pmu/{f.device}", f.model_dump_json())
        for instant in frames
        for area in areas
        for f in instant
    ]
    stop = asyncio.Event()
    bridge = Bridge(settings=settings, endpoint=broker.endpoint)
    task = asyncio.create_task(bridge.run(stop))
    await bridge.ready.wait()
    proc = mp.get_context("spawn").Process(target=_publisher, args=(broker.port, payloads, None))
    proc.start()
    start = await _when(lambda: bridge.stats.frames_in > 0, 0.001)
    elapsed = await _when(lambda: bridge.stats.frames_out >= len(payloads), 0.01) - start
    await asyncio.to_thread(proc.join)
    stop.set()
    await task
    return len(payloads) / elapsed


def live_payloads(
    areas: list[str], frames: list[list[PmuFrame]], rate_hz: float, seconds: float
) -> tuple[list[tuple[str, str]], list[str]]:
    """Frames in publishing order (instant by instant) with the timestamp text of each, which
    the publisher replaces by the time of sending (one frame per PMU and instant, all spread
    evenly over the period)."""
    out: list[tuple[str, str]] = []
    stamps: list[str] = []
    for k in range(round(seconds * rate_hz)):
        for frame in frames[k % len(frames)]:
            text = frame.model_dump_json()
            stamp = json.loads(text)["timestamp"]
            for area in areas:
                out.append((f"dsotp/{area}/pmu/{frame.device}", text))
                stamps.append(stamp)
    return out, stamps


async def collect_latency(endpoint: MqttEndpoint, expected: int, stop_after: float) -> list[float]:
    lags: list[float] = []
    async with connect(endpoint, client_id=f"bench-sub-{time.time_ns()}") as client:
        await client.subscribe("dsotp/+/state", qos=1)
        try:
            async with asyncio.timeout(stop_after):
                async for message in client.messages:
                    start = datetime.fromisoformat(json.loads(message.payload)["window_start"])
                    lags.append((datetime.now(tz=UTC) - start).total_seconds() * 1000)
                    if len(lags) >= expected:
                        break
        except TimeoutError:
            pass
    return lags


async def latency_scaleout(
    url: str,
    broker: Mosquitto,
    areas: list[str],
    frames: list[list[PmuFrame]],
    rate: float,
    seconds: float,
    folder: Path,
) -> list[float]:
    prefix = "live"
    settings = Settings(
        mqtt=MqttSettings(port=broker.port, client_id_prefix="bench-live"),
        kafka=KafkaSettings(url=url, topic_prefix=prefix, group=f"{prefix}-g", partitions=8),
    )
    procs = start_workers(
        1, url=url, prefix=prefix, group=f"{prefix}-g", agents=folder / "agents", folder=folder
    )
    stop = asyncio.Event()
    bridge = Bridge(settings=settings, endpoint=broker.endpoint)
    task = asyncio.create_task(bridge.run(stop))
    try:
        await wait_ready(folder, f"{prefix}-g", 1)
        await bridge.ready.wait()
        lags = await _live_run(broker, areas, frames, rate, seconds)
    finally:
        stop.set()
        await task
        stop_workers(procs)
    return lags


async def _live_run(
    broker: Mosquitto, areas: list[str], frames: list[list[PmuFrame]], rate: float, seconds: float
) -> list[float]:
    payloads, stamps = live_payloads(areas, frames, rate, seconds)
    collector = asyncio.create_task(
        collect_latency(broker.endpoint, len(areas) * round(seconds * rate), seconds + 15)
    )
    await asyncio.sleep(0.5)
    proc = mp.get_context("spawn").Process(
        target=_publisher, args=(broker.port, payloads, (stamps, len(areas) * DEVICES, rate))
    )
    proc.start()
    lags = await collector
    await asyncio.to_thread(proc.join)
    return lags


async def latency_embedded(
    broker: Mosquitto,
    areas: list[str],
    frames: list[list[PmuFrame]],
    rate: float,
    seconds: float,
    folder: Path,
) -> list[float]:
    settings = Settings(
        mqtt=MqttSettings(port=broker.port, client_id_prefix="bench-embedded"),
        runtime=RuntimeSettings(window_queue_size=256),
    )
    pipelines = []
    for area in areas:
        spec = load_agent_spec(folder / "agents" / f"{area}.yaml")
        grid = await asyncio.to_thread(load_grid, spec.grid)
        pipelines.append(
            AreaPipeline(spec=spec, grid=grid, settings=settings, endpoint=broker.endpoint)
        )
    stop = asyncio.Event()
    tasks = [asyncio.create_task(p.run(stop)) for p in pipelines]
    for pipeline in pipelines:
        await pipeline.ready.wait()
    try:
        return await _live_run(broker, areas, frames, rate, seconds)
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def percentiles(lags: list[float]) -> str:
    p50, p95, p99 = np.percentile(lags, [50, 95, 99])
    return f"{len(lags)} estimates, p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms"


async def main_async(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="dsotp-bench-scaleout-"))
    (folder / "agents").mkdir()
    areas = write_specs(folder / "agents", args.areas, args.rate)
    frames = await asyncio.to_thread(base_frames, args.instants, args.rate)
    log.info("%d areas x %d PMUs, %d instants each", len(areas), DEVICES, len(frames))
    broker = Mosquitto(folder)
    try:
        async with LocalKafka(port=free_port()) as kafka:
            one, one_cpu = await worker_throughput(kafka.url, areas, frames, 1, folder)
            log.info("1 worker:  %8.0f frames/s, %6.0f frames per worker CPU second", one, one_cpu)
            two, two_cpu = await worker_throughput(kafka.url, areas, frames, 2, folder)
            log.info(
                "2 workers: %8.0f frames/s (%.2fx one worker), %6.0f frames per worker CPU "
                "second (%.2fx)",
                two,
                two / one,
                two_cpu,
                two_cpu / one_cpu,
            )
            log.info(
                "cores: %d (the broker, this process and the workers share them)",
                os.cpu_count() or 0,
            )
            bridge = await bridge_throughput(kafka.url, broker, areas, frames)
            log.info("bridge:    %8.0f frames/s MQTT -> Kafka", bridge)
            load = len(areas) * DEVICES * args.live_rate
            log.info(
                "live load: %d areas x %d PMUs x %g frames/s = %.0f frames/s for %g s",
                len(areas),
                DEVICES,
                args.live_rate,
                load,
                args.seconds,
            )
            write_specs(folder / "agents", args.areas, args.live_rate)
            scale = await latency_scaleout(
                kafka.url, broker, areas, frames, args.live_rate, args.seconds, folder
            )
            log.info("scale-out (bridge + 1 worker): %s", percentiles(scale))
        embedded = await latency_embedded(
            broker, areas, frames, args.live_rate, args.seconds, folder
        )
        log.info("embedded runtime:              %s", percentiles(embedded))
    finally:
        broker.stop()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--areas", type=int, default=5)
    parser.add_argument("--instants", type=int, default=600)
    parser.add_argument("--rate", type=float, default=50.0, help="frames/s per PMU (backlog)")
    parser.add_argument("--live-rate", type=float, default=10.0, help="frames/s per PMU (live)")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    logging.getLogger("dsotp_streams").setLevel(logging.WARNING)
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
