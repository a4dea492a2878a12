"""CPU time of each stage of the hot path, per frame and per window, and the share of one core
each takes at a given load (default: the demo's CIGRE MV, 10 PMUs at 50 frames/s).

Run: .venv/bin/python benchmarks/stages.py [--pmus 10] [--rate 50] [--instants 1500]

Every stage runs the project's own code on emulated frames, in this process, one after the
other (so each one's CPU time is its own): MQTT receive (aiomqtt from a Mosquitto started here,
the frames published by another process), parse and validate (`FrameIntake.decode`), check and
align, build measurements, WLS with the bad-data tests, the rest of the estimate (bus and branch
results, `StateEstimate`), the fan-out (JSON, SOGNO form, rows), MQTT publish of its messages,
the DuckDB store (frame and window rows, in the sink's batches) and the live page (one browser
listening). CPU time is this process's (`time.process_time`: DuckDB's threads count too).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _soak import mosquitto

from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.adapters.mqtt import MqttEndpoint, connect
from dsotp_streams.adapters.store import DuckStore
from dsotp_streams.api.live import LiveHub
from dsotp_streams.contracts.agent import AgentSpec, load_agent_spec
from dsotp_streams.contracts.storage import Row
from dsotp_streams.core.estimation import Estimator
from dsotp_streams.core.estimation.wls import solve_wls
from dsotp_streams.emulator import PmuFleet
from dsotp_streams.runtime.fanout import Fanned, ResultFanout
from dsotp_streams.runtime.stages import FrameIntake, PipelineStats, Processed

log = logging.getLogger("benchmarks.stages")
REPO = Path(__file__).resolve().parents[1]

PUBLISHER = """
import asyncio, sys
import aiomqtt
async def main(port, topic, path):
    payloads = open(path, "rb").read().split(b"\\n")
    async with aiomqtt.Client("127.0.0.1", port, identifier="stages-pub") as client:
        payloads = [p for p in payloads if p]
        for k in range(0, len(payloads), 64):
            await asyncio.gather(*(client.publish(topic, p, qos=1) for p in payloads[k : k + 64]))
asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
"""


def spec_for(pmus: int, rate: float) -> AgentSpec:
    spec = load_agent_spec(REPO / "agents" / "cigre-mv.yaml")
    devices = spec.devices
    while len(devices) < pmus:  # more PMUs: the same channels again, under other names
        devices = devices + [
            d.model_copy(update={"id": f"{d.id}-{len(devices) + k}"})
            for k, d in enumerate(spec.devices[: pmus - len(devices)])
        ]
    window = spec.window.model_copy(update={"rate_hz": rate})
    emulator = spec.emulator.model_copy(update={"profiles": None})
    return spec.model_copy(
        update={"devices": devices[:pmus], "window": window, "emulator": emulator}
    )


def cpu(run: Callable[[], object]) -> float:
    """CPU seconds of `run()`."""
    started = time.process_time()
    run()
    return time.process_time() - started


async def mqtt_receive(payloads: list[bytes], folder: Path) -> tuple[float, float]:
    """CPU seconds to receive the payloads with aiomqtt, and to publish them (QoS 1)."""
    async with mosquitto(folder, options="max_queued_messages 0\n") as port:
        endpoint = MqttEndpoint(host="127.0.0.1", port=port)
        data = folder / "payloads"
        data.write_bytes(b"\n".join(payloads))
        async with connect(endpoint, client_id="stages-sub") as client:
            await client.subscribe("bench/#", qos=1)
            publisher = await asyncio.create_subprocess_exec(
                sys.executable, "-c", PUBLISHER, str(port), "bench/a/pmu/x", str(data)
            )
            started = None
            count = 0
            async for _message in client.messages:
                if started is None:
                    started = time.process_time()
                count += 1
                if count == len(payloads):
                    break
            receive_s = time.process_time() - (started or 0.0)
            await publisher.wait()
            started = time.process_time()
            for k in range(0, len(payloads), 64):  # as the emulator does: batches in flight
                batch = payloads[k : k + 64]
                await asyncio.gather(*(client.publish("sink/x", p, qos=1) for p in batch))
            publish_s = time.process_time() - started
        return receive_s, publish_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pmus", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50.0, help="frames/s per PMU")
    parser.add_argument("--instants", type=int, default=1500)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # "pending publish calls" while we flood
    spec = spec_for(args.pmus, args.rate)
    grid = load_grid(spec.grid)
    fleet = PmuFleet(spec, grid)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    period = timedelta(seconds=1 / args.rate)
    log.info("emulating %d instants of %d PMUs", args.instants, args.pmus)
    instants = [fleet.step(t0 + k * period) for k in range(args.instants)]
    raws = [[f.model_dump_json().encode() for f in inst.frames] for inst in instants]
    n_frames = sum(len(r) for r in raws)
    n_windows = len(raws)
    gc.freeze()
    table: list[tuple[str, float, str]] = []  # stage, CPU seconds, per frame or window

    decoded = []
    table.append(
        (
            "parse and validate",
            cpu(
                lambda: decoded.extend(
                    FrameIntake.decode(r, max_payload_bytes=1 << 20) for rs in raws for r in rs
                )
            ),
            "frame",
        )
    )
    frames = [d.frame for d in decoded if d.frame is not None]
    intake = FrameIntake(spec, grid=grid, max_payload_bytes=1 << 20, event_time=True)
    windows = []

    def align() -> None:
        for k in range(0, len(frames), args.pmus):
            for frame in frames[k : k + args.pmus]:
                intake.offer_frame(frame)
            windows.extend(intake.poll())

    table.append(("check and align", cpu(align), "frame"))
    estimator = Estimator(spec, grid=grid)
    sets = []
    table.append(
        (
            "build measurements",
            cpu(lambda: sets.extend(estimator.mapping.build(w) for w in windows)),
            "window",
        )
    )

    def wls() -> None:
        v0 = None
        for ms in sets:
            v0 = solve_wls(grid, ms=ms, options=estimator.options, v0=v0, cache=estimator._cache).v

    table.append(("WLS and bad-data tests", cpu(wls), "window"))
    estimates = []
    whole = cpu(lambda: estimates.extend(estimator.estimate(w) for w in windows))
    build_s, wls_s = table[-2][1], table[-1][1]
    table.append(("results and StateEstimate", max(0.0, whole - build_s - wls_s), "window"))
    fanout = ResultFanout(spec, grid=grid, stats=PipelineStats())
    fanned: list[Fanned] = []
    now = t0
    table.append(
        (
            "fan-out (JSON, SOGNO, rows)",
            cpu(lambda: fanned.extend(fanout.processed(Processed(e), now=now) for e in estimates)),
            "window",
        )
    )
    frame_rows: list[Row] = []
    table.append(
        (
            "frame rows",
            cpu(lambda: frame_rows.extend(r for f in frames for r in fanout.frame(f))),
            "frame",
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = DuckStore(Path(tmp) / "s.duckdb", memory_limit="64MB")
        window_rows = [r for f in fanned for r in f.rows]

        def write(rows: list[Row]) -> None:
            for k in range(0, len(rows), 5000):
                store.append(rows[k : k + 5000])

        table.append(("store: frame rows (DuckDB)", cpu(lambda: write(frame_rows)), "frame"))
        table.append(("store: window rows (DuckDB)", cpu(lambda: write(window_rows)), "window"))
        store.close()
        hub = LiveHub(history_s=60)
        hub.add_area(spec.area, grid)
        hub._listeners.add(asyncio.Queue(maxsize=n_windows + 1))  # one page open
        table.append(("live page", cpu(lambda: list(map(hub.publish, estimates))), "window"))
        flat = [r for rs in raws for r in rs]
        receive_s, _ = asyncio.run(mqtt_receive(flat, Path(tmp)))
        messages = [m.payload.encode() for f in fanned for m in f.messages]
        _, publish_s = asyncio.run(mqtt_receive(messages[: len(flat)], Path(tmp)))
    table.insert(0, ("MQTT receive (aiomqtt)", receive_s, "frame"))
    table.append(
        (
            "MQTT publish of results",
            publish_s * len(messages) / min(len(messages), len(flat)),
            "window",
        )
    )
    frames_per_s = args.pmus * args.rate
    log.info(
        "\n%d PMUs x %g frames/s on %s (%d buses): %d frames, %d windows",
        args.pmus,
        args.rate,
        spec.grid.name,
        grid.n_bus,
        n_frames,
        n_windows,
    )
    log.info("| stage | CPU per frame | CPU per window | share of one core |")
    log.info("|---|---|---|---|")
    total = 0.0
    for name, seconds, unit in table:
        per_frame = seconds / n_frames * 1e6
        per_window = seconds / n_windows * 1e6
        share = seconds / (n_frames / frames_per_s)  # CPU seconds per second of stream
        total += share
        log.info(
            "| %s | %s | %s | %.1f %% |",
            name,
            f"{per_frame:.1f} us" if unit == "frame" else "",
            f"{per_window:.0f} us",
            100 * share,
        )
    log.info("| **all** | | | **%.1f %%** |", 100 * total)


if __name__ == "__main__":
    main()
