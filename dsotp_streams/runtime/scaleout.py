"""The scale-out runtime: the area agents as a faust-streaming application on Kafka.

Topology (every record keyed by area, every topic with the same partition count, so an area's
frames, its table entry and its results share one partition and one worker):

    <prefix>.frames  --(agent `areas`: intake -> align -> estimate, forecast, FLISR)-->
    <prefix>.state, <prefix>.forecast, <prefix>.flisr, <prefix>.deadletter

The bridge batches frames per area (tens per record), so the per-record cost of faust is paid
per batch, not per frame. The numerical work is the same `FrameIntake` and `WindowProcessor` the
embedded runtime runs; estimation runs in a thread, off the event loop.

Failover. A frame batch is acknowledged (its offset may be committed) only when every window it
fed has been closed, estimated and its results acknowledged by Kafka. A worker that dies leaves
its open windows' batches uncommitted: the worker that takes over the partition reads them again
and rebuilds those windows from the log, the durable copy; windows it estimates a second time are
dropped by the bridge, which passes each area's window on once. With `kafka.emitted_table` the
table `<group>-emitted` (with its changelog) holds the newest window each area has published, so
the new owner does not estimate them again (on Apache Kafka: tansu's changelog recovery was seen
to hang the worker that took over)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import deque
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, EventT, StreamT, TransportT

from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.adapters.kafka import KafkaTopics, bootstrap_servers, ssl_context
from dsotp_streams.adapters.results import InfluxResults
from dsotp_streams.contracts.agent import AgentSpec, load_agent_specs
from dsotp_streams.contracts.messages import FrameBatch, InputKind, ResultKind, Window
from dsotp_streams.core.alignment import slot_of
from dsotp_streams.runtime.fanout import (
    SEQ_HEADER,
    STAMP_HEADER,
    Fanned,
    Outgoing,
    ResultFanout,
    dead_letter,
)
from dsotp_streams.runtime.sinks import build_sinks
from dsotp_streams.runtime.stages import (
    FrameIntake,
    PipelineStats,
    Processed,
    WindowProcessor,
    take_switch,
    touch,
)
from dsotp_streams.settings import KafkaSettings, Settings

__all__ = ["KafkaWorker", "create_worker"]

log = logging.getLogger(__name__)


@dataclass
class _Area:
    """One area served by this worker."""

    intake: FrameIntake
    processor: WindowProcessor
    fanout: ResultFanout
    partition: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # frame batches not yet acknowledged, with the newest slot each fed
    unacked: deque[tuple[EventT[Any], int | None]] = field(default_factory=deque)
    revoked: bool = False  # its partition moved: it acknowledges nothing any more
    max_offset: int = -1  # newest frame record handled: one at or below it is a redelivery


def _credentials(kafka: KafkaSettings) -> Any:
    context = ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
            ssl_context=context,
            mechanism=kafka.sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer with the fetch wait of the settings (faust fixes it at 1.5 s)."""

    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", 20)  # _App's
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class _App(faust.App):
    fetch_max_wait_ms = 20  # `kafka.fetch_max_wait_ms`, set by the worker

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)


class KafkaWorker:
    """A faust app serving the areas of `settings.agents_dir`; built by `create_worker`."""

    def __init__(self, settings: Settings, *, specs: dict[str, tuple[AgentSpec, Path]]) -> None:
        self.settings = settings
        self.specs = specs
        # every grid now, not on an area's first record: any area may move here at any time
        self.grids = {
            name: load_grid(spec.grid, base_dir=path.parent, data_dir=settings.data_dir)
            for name, (spec, path) in specs.items()
        }
        kafka = settings.kafka
        self.topics = KafkaTopics(kafka.topic_prefix)
        servers = bootstrap_servers(kafka.url)
        self.app = _App(
            kafka.group,
            broker=";".join(f"kafka://{server}" for server in servers),
            broker_credentials=_credentials(kafka),
            topic_partitions=kafka.partitions,
            topic_replication_factor=kafka.replication,
            broker_session_timeout=kafka.session_timeout_s,
            broker_heartbeat_interval=kafka.heartbeat_interval_s,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            web_enabled=kafka.web_port is not None,
            web_bind="127.0.0.1",
            web_port=kafka.web_port or 6066,
            datadir=str(kafka.data_dir),
            store="memory://",
            autodiscover=False,
            stream_wait_empty=False,
            table_standby_replicas=0,
            logging_config=None,
        )
        self.app.fetch_max_wait_ms = kafka.fetch_max_wait_ms
        self.stats = PipelineStats()
        self.replayed_windows = 0
        self._areas: dict[str, _Area] = {}
        self._stream: Any = None
        raw: dict[str, Any] = {
            "key_type": bytes,
            "value_type": bytes,
            "key_serializer": "raw",
            "value_serializer": "raw",
            "partitions": kafka.partitions,
            "internal": True,
        }
        self.frames = self.app.topic(self.topics.frames, **raw)
        self.result_topics = {
            kind: self.app.topic(self.topics.of_kind(kind), **raw) for kind in ResultKind
        }
        self.emitted: Any = (
            self.app.Table(
                f"{kafka.group}-emitted",
                default=int,
                partitions=kafka.partitions,
                key_type=bytes,  # raw keys: the same partition as the area's frames
                value_type=int,
                use_partitioner=True,
            )
            if kafka.emitted_table
            else None
        )
        # InfluxDB sinks when configured (a DuckDB file cannot be shared by several workers)
        no_store = settings.store.model_copy(update={"enabled": False})
        self.sinks, _store = build_sinks(settings.model_copy(update={"store": no_store}))
        self.frame_sinks = [sink for sink in self.sinks if sink.store_frames]
        self._sinks_stop = asyncio.Event()
        self.app.agent(self.frames, name="areas")(self._agent)
        self.app.timer(interval=self._tick_interval())(self._tick)
        self.app.timer(interval=2.0)(self._heartbeat)
        self.app.task(self._run_sinks)
        self.app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        gc.freeze()  # the grid models and the rest of start-up live as long as the worker

    def _tick_interval(self) -> float:
        rates = [spec.window.rate_hz for spec, _path in self.specs.values()]
        return max(0.01, 0.5 / max(rates))

    async def _run_sinks(self) -> None:
        await asyncio.gather(*(sink.run(self._sinks_stop) for sink in self.sinks))

    async def _heartbeat(self) -> None:
        """Touch the heartbeat file (liveness probe) and log the counters."""
        if self.settings.heartbeat_file is not None:
            touch(self.settings.heartbeat_file)
        log.info("worker: %s", self.snapshot())

    # ---- areas -------------------------------------------------------------------------------

    def _area(self, name: str, partition: int) -> _Area | None:
        area = self._areas.get(name)
        if area is not None:
            area.partition = partition
            return area
        entry = self.specs.get(name)
        if entry is None:
            return None
        spec, path = entry
        grid = self.grids[name]
        intake = FrameIntake(
            spec,
            grid=grid,
            max_payload_bytes=self.settings.mqtt.max_payload_bytes,
            # the frames' own clock: windows do not depend on transit delays, and a partition
            # read again after a failover gives the same windows as the first time
            event_time=True,
        )
        # forecasts resume from the loads stored in InfluxDB (what the workers write)
        history = InfluxResults(self.settings.influx) if self.settings.influx.url else None
        processor = WindowProcessor(spec, grid, path.parent, history)
        area = _Area(intake, processor, ResultFanout(spec, grid=grid, stats=self.stats), partition)
        self._areas[name] = area
        log.info("worker: serving area %s (partition %d)", name, partition)
        return area

    async def _on_assigned(self, sender: Any, assigned: set[TP], **_kwargs: Any) -> None:
        """After a rebalance: forget the areas whose partition moved away (their open windows
        live on in the log, for the new owner). An area that stays keeps its open windows: faust
        may hand its records over again from the committed offset, and those are recognised by
        their offsets (see `_redelivered`)."""
        kept = {tp.partition for tp in assigned if tp.topic == self.topics.frames}
        for name in [n for n, a in self._areas.items() if a.partition not in kept]:
            # an estimate in flight may still finish and publish (idempotent), but its batches
            # are the new owner's to acknowledge
            self._areas.pop(name).revoked = True
            log.info("worker: area %s moved away", name)

    async def _redelivered(self, area: _Area, event: EventT[Any]) -> bool:
        """A record handled before (read again after a rebalance): its frames are in the aligner
        already. Acknowledge it now if its windows are closed, else when they are."""
        offset = event.message.offset
        if offset > area.max_offset:
            area.max_offset = offset
            return False
        assert self._stream is not None
        for k, (old, newest) in enumerate(area.unacked):
            if old.message.offset == offset:
                area.unacked[k] = (event, newest)  # acknowledge the current record later
                return True
        await self._stream.ack(event)
        return True

    # ---- the agent ---------------------------------------------------------------------------

    async def _agent(self, stream: StreamT[Any]) -> None:
        manual: Any = stream.noack()  # type: ignore[attr-defined]
        self._stream = manual
        async for event in manual.events():
            try:
                await self._on_batch(event)
            except Exception:  # one record never stops the worker
                self.stats.processing_errors += 1
                log.exception("worker: a frame batch could not be handled")
                await manual.ack(event)

    async def _on_batch(self, event: EventT[Any]) -> None:
        assert self._stream is not None
        key = event.key if isinstance(event.key, bytes) else b""
        try:
            batch = FrameBatch.model_validate_json(event.value)
        except ValueError as exc:
            await self._dead_letter(key.decode(errors="replace"), "kafka", b"", f"bad batch: {exc}")
            await self._stream.ack(event)
            return
        area = self._area(batch.area, event.message.partition)
        if area is None:
            for item in batch.frames:
                reason = f"no agent spec for area {batch.area!r}"
                await self._dead_letter(batch.area, item.topic, item.payload.encode(), reason)
            await self._stream.ack(event)
            return
        async with area.lock:
            if await self._redelivered(area, event):
                return
            newest: int | None = None
            for item in batch.frames:
                raw = item.payload.encode()
                if item.kind is InputKind.SWITCH_STATE:
                    await self._switch(batch.area, area, item.topic, raw)
                    continue
                result = area.intake.offer(raw)
                self.stats.count(result.outcome)
                if result.reason is not None:
                    await self._dead_letter(
                        batch.area, item.topic, raw, result.reason, result.device
                    )
                elif result.frame is not None:
                    if self.frame_sinks:
                        rows = list(area.fanout.frame(result.frame))
                        for sink in self.frame_sinks:
                            sink.submit(rows)
                    slot = slot_of(result.frame.timestamp, period_ns=area.intake.aligner.period_ns)
                    newest = slot if newest is None else max(newest, slot)
            area.unacked.append((event, newest))
            await self._close(batch.area, area)

    async def _switch(self, name: str, area: _Area, topic: str, raw: bytes) -> None:
        """A switch's new state: the area's model follows, or a dead letter says why not."""
        before = area.processor.switches_applied
        reason = await take_switch(raw, intake=area.intake, processor=area.processor)
        self.stats.switches_applied += area.processor.switches_applied - before
        if reason is not None:
            await self._dead_letter(name, topic, raw, reason)

    async def _tick(self) -> None:
        for name, area in list(self._areas.items()):
            async with area.lock:
                if self._areas.get(name) is area:
                    await self._close(name, area)

    async def _close(self, name: str, area: _Area) -> None:
        """Estimate the windows ready to close, publish their results, then acknowledge every
        batch whose frames all lie in closed windows."""
        key = name.encode()
        for window in area.intake.poll():
            slot = slot_of(window.window_start, period_ns=area.intake.aligner.period_ns)
            self.stats.windows += 1
            if window.missing_devices:
                self.stats.windows_incomplete += 1
            if self.emitted is not None and slot <= int(self.emitted[key]):
                self.replayed_windows += 1  # published before a failover
                continue
            processed = await self._process(area, window)
            await self._emit(key, area.fanout.processed(processed, now=datetime.now(tz=UTC)))
            if self.emitted is not None:
                self.emitted[key] = slot
        last = area.intake.aligner.last_closed
        assert self._stream is not None
        while area.unacked and not area.revoked:
            event, newest = area.unacked[0]
            if newest is not None and (last is None or newest > last):
                break
            area.unacked.popleft()
            await self._stream.ack(event)

    async def _process(self, area: _Area, window: Window) -> Processed:
        """Estimate a window, or skip it when the worker is so far behind that it is older
        than `max_window_age_s`: the skipped estimate says so, and the worker catches up."""
        skipped = area.processor.stale(
            window,
            now=datetime.now(tz=UTC),
            max_age_s=self.settings.kafka.max_window_age_s,
            who="worker",
        )
        if skipped is not None:
            self.stats.windows_skipped += 1
            return Processed(skipped)
        return await area.processor.process(window)

    async def _emit(self, key: bytes, fanned: Fanned) -> None:
        """A window's results: every message to its Kafka topic (stamped in the headers, so the
        bridge passes each on once), acknowledged by Kafka; then the rows to the sinks."""
        sends = [await self._send(key, message) for message in fanned.messages]
        await asyncio.gather(*sends)
        self.stats.estimates_published += sum(
            1 for m in fanned.messages if m.kind is ResultKind.STATE
        )
        if fanned.rows:
            rows = list(fanned.rows)
            for sink in self.sinks:
                sink.submit(rows)

    async def _send(self, key: bytes, message: Outgoing) -> Awaitable[Any]:
        headers = []
        if message.stamp is not None:
            headers = [
                (STAMP_HEADER, message.stamp.isoformat().encode()),
                (SEQ_HEADER, str(message.seq).encode()),
            ]
        topic = self.result_topics[message.kind]
        return await topic.send(key=key, value=message.payload.encode(), headers=headers)

    async def _dead_letter(
        self, area: str, topic: str, raw: bytes, reason: str, device: str | None = None
    ) -> None:
        self.stats.dead_letters += 1  # also of areas this worker has no agent spec for
        await self._send(area.encode(), dead_letter(topic, raw=raw, reason=reason, device=device))

    def snapshot(self) -> dict[str, Any]:
        """Counters of this worker, for logs and the status report."""
        processors = [a.processor for a in self._areas.values()]
        return {
            "areas": sorted(self._areas),
            "replayed_windows": self.replayed_windows,
            **asdict(self.stats),
            "forecast_history_steps": sum(p.history_steps for p in processors),
            "forecasts_rejected": sum(p.forecasts_rejected for p in processors),
        }


def create_worker(settings: Settings) -> KafkaWorker:
    """The faust worker app for the agent specs in `settings.agents_dir` (nothing connects or
    runs until `faust.Worker(worker.app).execute_from_commandline()`)."""
    return KafkaWorker(settings, specs=load_agent_specs(settings.agents_dir))
