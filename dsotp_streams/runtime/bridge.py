"""The MQTT <-> Kafka bridge of the scale-out runtime.

Inbound, PMU frames from `<prefix>/<area>/pmu/<device>` are validated (invalid ones go to the
dead-letter topics with the reason) and batched per area into one Kafka record keyed by area, so
that an area stays on one partition and a worker handles tens of frames per record. A frame is
acknowledged to the MQTT broker only after Kafka has acknowledged its batch: a bridge that dies in
between gets it again from its persistent session (at least once).

Outbound, results (state, forecast, FLISR, dead letters) go from Kafka to the area's MQTT topics.
Estimates and FLISR events are keyed by area and window: one already passed on (a replay after a
worker failover) is dropped here, so MQTT subscribers see each window once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from dsotp_streams.adapters.kafka import KafkaTopics, client_options
from dsotp_streams.adapters.mqtt import MqttEndpoint, Topics, ack, connect
from dsotp_streams.contracts.messages import BridgedFrame, FrameBatch, InputKind, ResultKind
from dsotp_streams.errors import TransportError
from dsotp_streams.runtime.backoff import Backoff
from dsotp_streams.runtime.fanout import SEQ_HEADER, STAMP_HEADER, dead_letter
from dsotp_streams.runtime.stages import FrameIntake, Intake, IntakeOutcome, touch
from dsotp_streams.settings import Settings

__all__ = ["Bridge", "BridgeStats", "batch_by_area"]

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(tz=UTC)


@dataclass
class BridgeStats:
    """What the bridge has carried."""

    frames_in: int = 0
    frames_out: int = 0
    batches_out: int = 0
    dead_letters: int = 0
    results_out: int = 0
    duplicates_dropped: int = 0
    reconnects: int = 0
    kafka_retries: int = 0  # batches Kafka did not acknowledge in time, sent again
    lag_ms: float = 0.0


@dataclass
class _Pending:
    area: str
    item: BridgedFrame
    message: aiomqtt.Message


class Bridge:
    """Carry frames MQTT -> Kafka and results Kafka -> MQTT until stopped."""

    def __init__(self, *, settings: Settings, endpoint: MqttEndpoint) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.topics = KafkaTopics(settings.kafka.topic_prefix)
        self.stats = BridgeStats()
        self.ready = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._pending: list[_Pending] = []
        self._flush_now = asyncio.Event()
        self._mqtt: aiomqtt.Client | None = None
        self._outbound: aiomqtt.Client | None = None
        self._last_sent: dict[tuple[ResultKind, str], tuple[datetime, int]] = {}
        self._inbound_ready = asyncio.Event()
        self._outbound_ready = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Run both directions; return when stop is set (pending frames are sent first)."""
        producer = AIOKafkaProducer(
            **client_options(self.settings.kafka),
            acks="all",
            linger_ms=2,
            max_batch_size=1 << 20,
            request_timeout_ms=round(self.settings.bridge.kafka_timeout_s * 1000),
        )
        try:
            await producer.start()
        except KafkaError as exc:
            raise TransportError(f"Kafka {self.settings.kafka.url}: {exc}") from exc
        self._producer = producer
        tasks = [
            asyncio.create_task(self._inbound(stop), name="bridge-in"),
            asyncio.create_task(self._outbound_loop(stop), name="bridge-out"),
            asyncio.create_task(self._signal_ready(), name="bridge-ready"),
            asyncio.create_task(self._heartbeat(), name="bridge-heartbeat"),
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await producer.stop()

    async def _heartbeat(self) -> None:
        """Touch the heartbeat file while both directions are connected; log the counters."""
        while True:
            await asyncio.sleep(2.0)
            up = self._mqtt is not None and self._outbound is not None
            if up and self.settings.heartbeat_file is not None:
                touch(self.settings.heartbeat_file)
            log.info("bridge: %s", self.stats)

    async def _signal_ready(self) -> None:
        await self._inbound_ready.wait()
        await self._outbound_ready.wait()
        self.ready.set()
        log.info("bridge: ready (MQTT subscribed, Kafka connected)")

    # ---- MQTT -> Kafka ---------------------------------------------------------------------

    async def _inbound(self, stop: asyncio.Event) -> None:
        backoff = Backoff(self.settings.mqtt.reconnect_backoff_max_s)
        while not stop.is_set():
            try:
                await self._inbound_connected()
                backoff.reset()
            except TransportError as exc:
                self._mqtt = None
                self.stats.reconnects += 1
                log.warning("bridge: MQTT lost (%s); reconnecting in %.1f s", exc, backoff.delay_s)
                await backoff.sleep()

    async def _inbound_connected(self) -> None:
        mqtt = self.settings.mqtt
        async with connect(
            self.endpoint,
            client_id=f"{mqtt.client_id_prefix}-bridge-in",
            clean_session=False,
            keepalive_s=mqtt.keepalive_s,
            manual_ack=True,
        ) as client:
            self._mqtt = client
            self._pending.clear()  # unacknowledged: the broker sends them again
            await client.subscribe(Topics.every_pmu(mqtt.topic_prefix), qos=mqtt.qos)
            # switch states travel with the frames (same key, same order): the worker that
            # estimates the area changes its model between the frames before and after
            await client.subscribe(Topics.switch_state_wildcard(mqtt.topic_prefix), qos=mqtt.qos)
            self._inbound_ready.set()
            flusher = asyncio.create_task(self._flush_loop(client), name="bridge-flush")
            try:
                async for message in client.messages:
                    await self._receive(client, message)
                    if len(self._pending) >= self.settings.bridge.max_unacked:
                        self._flush_now.set()
            except aiomqtt.MqttError as exc:
                raise TransportError(str(exc)) from exc
            finally:
                flusher.cancel()
                await asyncio.gather(flusher, return_exceptions=True)

    async def _receive(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        self.stats.frames_in += 1
        # the area from the topic grammar: a prefix of several levels (`site/dsotp`) is fine
        prefix = self.settings.mqtt.topic_prefix
        address = Topics.of_frame(prefix, topic)
        switch_topic = Topics.of_switch_state(prefix, topic)
        area = address[0].area if address is not None else "unknown"
        payload = message.payload
        raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
        if switch_topic is not None:  # checked by the worker's intake, against its agent spec
            area = switch_topic.area
            decoded = Intake(IntakeOutcome.VALID)
            if len(raw) > self.settings.mqtt.max_payload_bytes:
                decoded = Intake(IntakeOutcome.INVALID, reason="payload exceeds the limit")
        else:
            decoded = FrameIntake.decode(
                bytes(raw), max_payload_bytes=self.settings.mqtt.max_payload_bytes
            )
        if decoded.reason is not None:
            await self._dead_letter(area, topic, bytes(raw), decoded.reason)
            ack(client, message)
            return
        kind = InputKind.FRAME if switch_topic is None else InputKind.SWITCH_STATE
        item = BridgedFrame(
            topic=topic, payload=bytes(raw).decode(), received_at=_utcnow(), kind=kind
        )
        self._pending.append(_Pending(area, item, message))

    async def _dead_letter(self, area: str, topic: str, raw: bytes, reason: str) -> None:
        """To Kafka's dead-letter topic, which the results path carries to MQTT like the
        workers' (one path: a dead letter is published once)."""
        self.stats.dead_letters += 1
        letter = dead_letter(topic, raw=raw, reason=reason)
        assert self._producer is not None
        target = self.topics.of_kind(letter.kind)
        try:
            await self._producer.send_and_wait(target, letter.payload.encode(), key=area.encode())
        except KafkaError as exc:
            raise TransportError(f"Kafka send to {target}: {exc}") from exc

    async def _flush_loop(self, client: aiomqtt.Client) -> None:
        interval = self.settings.bridge.batch_ms / 1000.0
        backoff = Backoff(self.settings.mqtt.reconnect_backoff_max_s)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), timeout=interval)
            self._flush_now.clear()
            if not self._pending:
                continue
            try:
                await self._flush(client)
                backoff.reset()
            except TransportError as exc:
                # the frames stay unacknowledged on MQTT and are sent again: Kafka is down or
                # unreachable, and the MQTT broker holds what comes meanwhile
                self.stats.kafka_retries += 1
                log.warning("bridge: %s; sending again in %.1f s", exc, backoff.delay_s)
                await backoff.sleep()

    async def _flush(self, client: aiomqtt.Client) -> None:
        """Send the pending frames as one record per area (and chunk); ack each chunk's frames
        on MQTT once Kafka acknowledged it. Chunks Kafka did not take go back to the front of
        the pending frames (a timed-out send may have been stored after all: the worker then
        dead-letters the second copy as a duplicate; nothing is lost)."""
        pending, self._pending = self._pending, []
        assert self._producer is not None
        sent: list[tuple[list[_Pending], asyncio.Future[Any]]] = []
        failed: list[_Pending] = []
        error: BaseException | None = None
        chunks = batch_by_area(
            [entry.area for entry in pending], max_frames=self.settings.bridge.batch_max_frames
        )
        for area, indices in chunks:
            chunk = [pending[k] for k in indices]
            batch = FrameBatch(area=area, frames=[e.item for e in chunk])
            try:
                future = await self._producer.send(
                    self.topics.frames, batch.model_dump_json().encode(), key=area.encode()
                )
            except KafkaError as exc:
                failed += chunk
                error = exc
                continue
            sent.append((chunk, future))
        results = await asyncio.gather(*(f for _c, f in sent), return_exceptions=True)
        for (chunk, _future), result in zip(sent, results, strict=True):
            if isinstance(result, BaseException):
                failed += chunk
                error = result
                continue
            self.stats.batches_out += 1
            self.stats.frames_out += len(chunk)
            for entry in chunk:
                ack(client, entry.message)
        if failed:
            self._pending[:0] = failed
            raise TransportError(f"Kafka send to {self.topics.frames}: {error!r}")

    # ---- Kafka -> MQTT ---------------------------------------------------------------------

    async def _outbound_loop(self, stop: asyncio.Event) -> None:
        backoff = Backoff(self.settings.mqtt.reconnect_backoff_max_s)
        while not stop.is_set():
            try:
                await self._outbound_connected()
                backoff.reset()
            except TransportError as exc:
                self.stats.reconnects += 1
                log.warning(
                    "bridge: results path lost (%s); retrying in %.1f s", exc, backoff.delay_s
                )
                await backoff.sleep()

    async def _outbound_connected(self) -> None:
        kafka = self.settings.kafka
        consumer = AIOKafkaConsumer(
            *self.topics.results,
            **client_options(kafka),
            group_id=f"{kafka.group}-bridge",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=kafka.fetch_max_wait_ms,
            session_timeout_ms=round(max(kafka.session_timeout_s, 6.0) * 1000),
            heartbeat_interval_ms=round(kafka.heartbeat_interval_s * 1000),
        )
        try:
            await consumer.start()
        except KafkaError as exc:
            raise TransportError(f"Kafka {kafka.url}: {exc}") from exc
        mqtt = self.settings.mqtt
        try:
            async with connect(
                self.endpoint,
                client_id=f"{mqtt.client_id_prefix}-bridge-out",
                keepalive_s=mqtt.keepalive_s,
            ) as client:
                self._outbound = client
                self._outbound_ready.set()
                while True:
                    batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                    for tp, records in batches.items():
                        kind = self.topics.kind_of(tp.topic)
                        if kind is None:
                            continue
                        for record in records:
                            area = record.key.decode() if record.key else "unknown"
                            await self._publish_result(client, kind, area, record)
                    if batches:
                        await consumer.commit()
        except (KafkaError, aiomqtt.MqttError) as exc:
            raise TransportError(f"results path: {exc}") from exc
        finally:
            self._outbound = None
            await consumer.stop()

    async def _publish_result(
        self, client: aiomqtt.Client, kind: ResultKind, area: str, record: Any
    ) -> None:
        """One result record to the area's MQTT topic of its kind, unless one at or after its
        stamp was passed on already (a window estimated again after a worker failover)."""
        order = _order(record.headers)
        if order is not None:
            last = self._last_sent.get((kind, area))
            if last is not None and order <= last:
                self.stats.duplicates_dropped += 1
                return
        qos = 1 if kind.always_acknowledged else self.settings.mqtt.qos
        target = Topics(self.settings.mqtt.topic_prefix, area).of_kind(kind)
        await client.publish(target, record.value or b"", qos=qos)
        self.stats.results_out += 1
        if order is not None:
            self._last_sent[(kind, area)] = order
            if kind is ResultKind.STATE:
                self.stats.lag_ms = (_utcnow() - order[0]) / timedelta(milliseconds=1)


def batch_by_area(areas: Sequence[str], *, max_frames: int) -> list[tuple[str, list[int]]]:
    """How pending frames (their areas, in arrival order) become Kafka records: one record per
    area and at most `max_frames` frames, each frame in exactly one, an area's frames in their
    order (the record key keeps an area on one partition, so its worker sees them in order)."""
    by_area: dict[str, list[int]] = defaultdict(list)
    for k, area in enumerate(areas):
        by_area[area].append(k)
    return [
        (area, indices[start : start + max_frames])
        for area, indices in by_area.items()
        for start in range(0, len(indices), max_frames)
    ]


def _order(headers: Sequence[tuple[str, bytes]] | None) -> tuple[datetime, int] | None:
    """`Outgoing.order` from a record's headers (None when it has none: never dropped)."""
    found = dict(headers or ())
    stamp = found.get(STAMP_HEADER)
    if stamp is None:
        return None
    try:
        return datetime.fromisoformat(stamp.decode()), int(found.get(SEQ_HEADER, b"0"))
    except ValueError:
        return None
