"""One result path: the same recorded stream through the embedded runtime and through bridge +
Kafka (tansu) + faust worker gives the same messages on the same MQTT topics, window for window,
and the same rows in InfluxDB.

Both run at once on one Mosquitto, each under its own multi-level topic prefix (`site/emb`,
`site/kafka`), each writing to its own InfluxDB database. The stream is an emulated fleet's
frames from an hour in the past (a replay: both align in event time), published at its own rate,
with bad input mixed in: a payload that is not JSON, a frame of a device the spec does not know,
and a frame sent twice. Only what differs by nature is left out of the comparison: the time spent
(`runtime_ms`), the lag (`lag_ms`) and a dead letter's receive time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import urllib.parse
import urllib.request
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.adapters.kafka import LocalKafka
from dsotp_streams.adapters.mqtt import MqttEndpoint, Topics, connect
from dsotp_streams.contracts.agent import load_agent_spec
from dsotp_streams.emulator import PmuFleet
from dsotp_streams.runtime.bridge import Bridge
from dsotp_streams.runtime.embedded import AreaPipeline
from dsotp_streams.runtime.sinks import build_sinks
from dsotp_streams.settings import (
    InfluxSettings,
    KafkaSettings,
    MqttSettings,
    RuntimeSettings,
    Settings,
    StoreSettings,
)
from tests.conftest import REPO
from tests.integration.databases import InfluxServer, free_port
from tests.integration.test_scaleout import start_worker, wait_until_ready

pytestmark = [pytest.mark.broker, pytest.mark.slow]

AREA = "north"
INSTANTS = 80  # 8 s of a 10 Hz stream
VOLATILE = {"runtime_ms", "lag_ms", "received_at"}


def write_spec(folder: Path) -> Path:
    """The CIGRE MV agent as area `north`, constant loads (no profile download), FLISR
    commands allowed (so the switch-command topic is part of the result path)."""
    folder.mkdir()
    text = (REPO / "agents" / "cigre-mv.yaml").read_text(encoding="utf-8")
    text = text.replace("area: cigre-mv", f"area: {AREA}")
    text = "\n".join(line for line in text.splitlines() if "profiles:" not in line)
    (folder / f"{AREA}.yaml").write_text(text + "\n", encoding="utf-8")
    return folder


def stream(spec_file: Path) -> list[tuple[str, bytes]]:
    """(topic tail, payload) in publishing order, with bad input after instant 20 and the
    grid switching mid-stream: a tie switch closed at 4 s, a line opened at 5.5 s, each
    reported on switch/state before the frames measured on the new topology."""
    spec = load_agent_spec(spec_file)
    grid = load_grid(spec.grid, base_dir=spec_file.parent)
    fleet = PmuFleet(spec, grid)
    fleet.schedule_switching("S2", closed=True, at_s=4.0)
    fleet.schedule_switching("Line 4-5@Bus 4", closed=False, at_s=5.5)
    t0 = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(hours=1)
    out: list[tuple[str, bytes]] = []
    for k in range(INSTANTS):
        instant = fleet.step(t0 + k * timedelta(seconds=0.1))
        out += [("switch/state", s.model_dump_json().encode()) for s in instant.switched]
        frames = instant.frames
        out += [(f"pmu/{f.device}", f.model_dump_json().encode()) for f in frames]
        if k == 20:
            first = frames[0]
            ghost = first.model_copy(update={"device": "ghost"})
            unknown = f'{{"switch": "S99", "closed": true, "timestamp": "{t0.isoformat()}"}}'
            out += [
                (f"pmu/{first.device}", b"{not json"),
                ("pmu/ghost", ghost.model_dump_json().encode()),
                (f"pmu/{first.device}", first.model_dump_json().encode()),  # sent twice
                ("switch/state", unknown.encode()),
            ]
    return out


def normalised(value: Any) -> Any:
    """A payload without what differs by nature, floats rounded to 1e-9."""
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in sorted(value.items()) if k not in VOLATILE}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 9)
    return value


def influx_rows(url: str, database: str) -> dict[str, list[Any]]:
    """Every row of every measurement, with its tags, without the volatile fields."""

    def query(q: str) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"q": q, "db": database, "epoch": "ns"})
        with urllib.request.urlopen(f"{url}/query?{params}", timeout=30) as response:
            result = json.loads(response.read())["results"][0]
        series: list[dict[str, Any]] = result.get("series", [])
        return series

    rows: dict[str, list[Any]] = {}
    for (name,) in (query("SHOW MEASUREMENTS") or [{"values": []}])[0]["values"]:
        found = []
        for series in query(f'SELECT * FROM "{name}" GROUP BY *'):
            tags = series.get("tags", {})
            for values in series["values"]:
                fields = dict(zip(series["columns"], values, strict=True))
                found.append(normalised({**fields, **tags}))
        rows[name] = sorted(found, key=json.dumps)
    return rows


async def collect(
    endpoint: MqttEndpoint, prefix: str, seen: dict[str, list[Any]], ready: asyncio.Event
) -> None:
    """Every message under `<prefix>/<area>/` but the input, by the topic's tail."""
    head = f"{prefix}/{AREA}/"
    async with connect(endpoint, client_id=f"parity-{prefix.replace('/', '-')}") as client:
        await client.subscribe(f"{head}#", qos=1)
        ready.set()
        async for message in client.messages:
            tail = str(message.topic)[len(head) :]
            if tail.startswith(("pmu/", "switch/")) or tail == "status":
                continue
            body = json.loads(message.payload)
            if tail == "deadletter":  # the input topic it came on: under each run's prefix
                body["topic"] = body["topic"].removeprefix(prefix)
            seen[tail].append(normalised(body))


async def publish(endpoint: MqttEndpoint, items: list[tuple[str, bytes]]) -> None:
    """The stream under both prefixes, one instant (10 frames) per 100 ms."""
    targets = [Topics("site/emb", AREA), Topics("site/kafka", AREA)]
    async with connect(endpoint, client_id=f"parity-pub-{free_port()}") as client:
        for k, (tail, payload) in enumerate(items):
            for topics in targets:
                await client.publish(f"{topics.base}/{tail}", payload, qos=1)
            if k % 10 == 9:
                await asyncio.sleep(0.1)


def test_embedded_and_kafka_runtimes_publish_and_store_the_same(
    mosquitto: MqttEndpoint, tmp_path: Path
) -> None:
    agents = write_spec(tmp_path / "agents")
    spec_file = agents / f"{AREA}.yaml"
    items = stream(spec_file)
    broker = LocalKafka(port=free_port())
    influx = InfluxServer(tmp_path / "influx", database="embedded")
    broker.start()
    influx.start()
    influx.query('CREATE DATABASE "kafka"', post=True)
    client_prefix = f"parity{free_port()}"
    base = dict(agents_dir=agents, agent_file=spec_file)
    embedded_settings = Settings(
        mqtt=MqttSettings(
            host=mosquitto.host,
            port=mosquitto.port,
            topic_prefix="site/emb",
            client_id_prefix=client_prefix,
        ),
        runtime=RuntimeSettings(event_time=True, max_window_age_s=0),
        influx=InfluxSettings(url=influx.url, database="embedded", flush_interval_s=0.2),
        store=StoreSettings(enabled=False),
        **base,
    )
    kafka_settings = Settings(
        mqtt=MqttSettings(
            host=mosquitto.host,
            port=mosquitto.port,
            topic_prefix="site/kafka",
            client_id_prefix=client_prefix,
        ),
        kafka=KafkaSettings(url=broker.url, partitions=2, max_window_age_s=0),
        influx=InfluxSettings(url=influx.url, database="kafka"),
        **base,
    )
    worker, worker_log = start_worker(kafka_settings, "worker", tmp_path)
    try:
        asyncio.run(broker.wait_ready())
        wait_until_ready(worker_log, timeout_s=90)
        seen = asyncio.run(_run(embedded_settings, kafka_settings, mosquitto, items))
        deadline = asyncio.run(_settle(influx.url))
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
        broker.stop()
    embedded_rows, kafka_rows = deadline
    influx.stop()
    emb, kaf = seen
    # the embedded runtime estimated every instant (the last window closes on the idle clock)
    assert len(emb["state"]) == INSTANTS, {k: len(v) for k, v in emb.items()}
    assert {tail: len(v) for tail, v in kaf.items()} == {tail: len(v) for tail, v in emb.items()}, (
        kaf["deadletter"]
    )
    assert set(emb) >= {"state", "state/sogno", "deadletter"}
    for tail in emb:
        ordered = sorted(emb[tail], key=json.dumps), sorted(kaf[tail], key=json.dumps)
        assert ordered[0] == ordered[1], f"{tail} differs"
    by_window = {s["window_start"]: s for s in emb["state"]}
    assert by_window == {s["window_start"]: s for s in kaf["state"]}
    reasons = sorted(letter["reason"].split(":")[0] for letter in emb["deadletter"])
    assert reasons == [
        "invalid frame",
        "late",
        "unknown device 'ghost' for area 'north'",
        "unknown switch 'S99'",
    ]
    # both followed the switching: the opened line carries nothing from its window on
    last = by_window[max(by_window)]
    assert {line["line"]: line for line in last["lines"]}["Line 4-5"]["i_from_ka"] < 1e-3
    assert all(s["status"] == "ok" for s in emb["state"])
    assert set(embedded_rows) >= {"pmu", "state", "branch", "se_quality"}
    assert embedded_rows == kafka_rows


async def _run(
    embedded: Settings, kafka: Settings, endpoint: MqttEndpoint, items: list[tuple[str, bytes]]
) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    emb: dict[str, list[Any]] = defaultdict(list)
    kaf: dict[str, list[Any]] = defaultdict(list)
    spec = load_agent_spec(embedded.agent_file)
    grid = await asyncio.to_thread(load_grid, spec.grid, base_dir=embedded.agent_file.parent)
    sinks, _store = build_sinks(embedded)
    stop, stop_sinks = asyncio.Event(), asyncio.Event()
    pipeline = AreaPipeline(spec=spec, grid=grid, settings=embedded, endpoint=endpoint, sinks=sinks)
    bridge = Bridge(settings=kafka, endpoint=endpoint)
    ready = [asyncio.Event(), asyncio.Event()]
    tasks = [
        asyncio.create_task(collect(endpoint, "site/emb", emb, ready[0])),
        asyncio.create_task(collect(endpoint, "site/kafka", kaf, ready[1])),
        asyncio.create_task(pipeline.run(stop)),
        asyncio.create_task(bridge.run(stop)),
    ]
    sink_tasks = [asyncio.create_task(sink.run(stop_sinks)) for sink in sinks]
    try:
        for event in (*ready, pipeline.ready, bridge.ready):
            await asyncio.wait_for(event.wait(), 60)
        await publish(endpoint, items)
        async with asyncio.timeout(60):  # both have estimated every window
            while len(emb["state"]) < INSTANTS or len(kaf["state"]) < INSTANTS:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # anything after the last window (or published twice)
    finally:
        stop.set()
        await asyncio.gather(*tasks[2:], return_exceptions=True)
        stop_sinks.set()
        await asyncio.gather(*sink_tasks, return_exceptions=True)
        for task in tasks[:2]:
            task.cancel()
        await asyncio.gather(*tasks[:2], return_exceptions=True)
    return emb, kaf


async def _settle(url: str) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """Both databases' rows, once the worker's sink has written as many as the embedded one."""
    embedded = await asyncio.to_thread(influx_rows, url, "embedded")
    kafka: dict[str, list[Any]] = {}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(20):
            while True:
                kafka = await asyncio.to_thread(influx_rows, url, "kafka")
                if {k: len(v) for k, v in kafka.items()} == {
                    k: len(v) for k, v in embedded.items()
                }:
                    break
                await asyncio.sleep(0.5)
    return embedded, kafka
