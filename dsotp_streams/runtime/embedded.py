"""The embedded runtime: one asyncio loop, stages joined by bounded queues, CPU work in threads."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt

from dsotp_streams.adapters.mqtt import MqttEndpoint, Topics, connect, raise_if_cancelled
from dsotp_streams.adapters.profiles import load_profiles
from dsotp_streams.adapters.recording import RecordingWriter
from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.messages import (
    FlisrEvent,
    Forecast,
    ResultKind,
    StateEstimate,
    TrueState,
    Window,
)
from dsotp_streams.core.alignment import slot_of
from dsotp_streams.core.grid import GridModel
from dsotp_streams.emulator import PmuFleet
from dsotp_streams.errors import TransportError
from dsotp_streams.runtime.backoff import Backoff
from dsotp_streams.runtime.fanout import Fanned, Outgoing, ResultFanout
from dsotp_streams.runtime.sinks import RowSink
from dsotp_streams.runtime.stages import (
    Completeness,
    FrameIntake,
    LoadHistory,
    PipelineStats,
    WindowProcessor,
    take_switch,
)
from dsotp_streams.settings import Settings

__all__ = ["AreaPipeline", "Emulator", "EmulatorStats", "PipelineStats"]

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(tz=UTC)


@dataclass
class EmulatorStats:
    """What the emulator has published."""

    instants: int = 0
    frames: int = 0
    instants_behind: int = 0
    reconnects: int = 0
    frames_unsent: int = 0  # still in the outbox `stop_timeout_s` after the stop
    switchings: int = 0  # switch states reported (scheduled switchings)


class AreaPipeline:
    """Bridge -> align -> estimate -> publish for one area, on one MQTT connection."""

    def __init__(
        self,
        *,
        spec: AgentSpec,
        grid: GridModel,
        settings: Settings,
        endpoint: MqttEndpoint,
        client_id: str | None = None,
        sinks: Sequence[RowSink] = (),
        listeners: Sequence[Callable[[StateEstimate], None]] = (),
        forecast_listeners: Sequence[Callable[[Forecast], None]] = (),
        flisr_listeners: Sequence[Callable[[FlisrEvent], None]] = (),
        recorder: RecordingWriter | None = None,
        history: LoadHistory | None = None,
        stats: PipelineStats | None = None,
    ) -> None:
        self.recorder = recorder
        self.spec = spec
        self.sinks = list(sinks)
        self.frame_sinks = [s for s in self.sinks if s.store_frames]
        self.listeners = list(listeners)
        self.settings = settings
        self.endpoint = endpoint
        self.topics = Topics(settings.mqtt.topic_prefix, spec.area)
        self.client_id = client_id or f"{settings.mqtt.client_id_prefix}-{spec.area}-pipeline"
        self.intake = FrameIntake(
            spec,
            grid=grid,
            max_payload_bytes=settings.mqtt.max_payload_bytes,
            event_time=settings.runtime.event_time,
        )
        self.aligner = self.intake.aligner
        self.processor = WindowProcessor(spec, grid, settings.agent_file.parent, history)
        self.forecast_listeners = list(forecast_listeners)
        self.flisr_listeners = list(flisr_listeners)
        self.stats = stats if stats is not None else PipelineStats()
        self.fanout = ResultFanout(spec, grid=grid, stats=self.stats)
        self.completeness = Completeness(tuple(d.id for d in spec.devices))
        self.ready = asyncio.Event()
        self._windows: asyncio.Queue[Window] = asyncio.Queue(settings.runtime.window_queue_size)
        self._letters: asyncio.Queue[Outgoing] = asyncio.Queue(10_000)
        self._publishing: set[asyncio.Task[None]] = set()  # skipped windows being published
        self._truth: OrderedDict[int, TrueState] = OrderedDict()
        self._client: aiomqtt.Client | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Run until stop is set, then close open windows, estimate them and return."""
        # what exists now (grid model, estimator, pandapower and the rest) lives as long as the
        # process: out of the collector's sight, a full collection scans only what came since
        # (measured in the soak: the longest pause 101-128 ms per 30 s without, see README)
        gc.freeze()
        estimator_task = asyncio.create_task(self._estimate_loop(), name="estimate")
        backoff = Backoff(self.settings.mqtt.reconnect_backoff_max_s, first_s=0.5)
        try:
            while not stop.is_set():
                try:
                    await self._connected(stop)
                    backoff.reset()
                except TransportError as exc:
                    self._client = None
                    self.ready.clear()
                    self.stats.reconnects += 1
                    log.warning(
                        "MQTT connection lost (%s); reconnecting in %.1f s", exc, backoff.delay_s
                    )
                    await backoff.sleep(stop)
        finally:
            await self._drain()
            await self._cancel([estimator_task])

    async def _connected(self, stop: asyncio.Event) -> None:
        mqtt = self.settings.mqtt
        async with connect(
            self.endpoint,
            client_id=self.client_id,
            clean_session=False,
            keepalive_s=mqtt.keepalive_s,
        ) as client:
            self._client = client
            await client.subscribe(self.topics.pmu_wildcard, qos=mqtt.qos)
            await client.subscribe(self.topics.truth, qos=0)
            await client.subscribe(self.topics.switch_state, qos=mqtt.qos)
            self.ready.set()
            ticker = asyncio.create_task(self._tick_loop(), name="tick")
            status = asyncio.create_task(self._status_loop(), name="status")
            letters = asyncio.create_task(self._dead_letter_loop(), name="dead-letters")
            reader = asyncio.create_task(self._read_loop(client), name="read")
            stopper = asyncio.create_task(stop.wait(), name="stop")
            try:
                done, _pending = await asyncio.wait(
                    {reader, stopper}, return_when=asyncio.FIRST_COMPLETED
                )
                if reader in done:
                    reader.result()
            except aiomqtt.MqttError as exc:
                raise TransportError(str(exc)) from exc
            finally:
                await self._cancel((ticker, status, reader, stopper, letters))
                if stop.is_set():  # estimate the last windows while the connection is still up
                    await self._drain()
                    while not self._letters.empty():  # and send the last dead letters
                        await self._send(self._letters.get_nowait())

    async def _cancel(self, tasks: Sequence[asyncio.Task[Any]]) -> None:
        """Cancel the connection's tasks and wait for them, for `stop_timeout_s` at most."""
        for task in tasks:
            task.cancel()
        done, pending = await asyncio.wait(tasks, timeout=self.settings.runtime.stop_timeout_s)
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved: the reader's error was raised already
        if pending:
            names = ", ".join(sorted(t.get_name() for t in pending))
            log.error("tasks still running after their cancel, left behind: %s", names)

    async def _read_loop(self, client: aiomqtt.Client) -> None:
        try:
            async for message in client.messages:
                await self._handle_message(message)
                raise_if_cancelled()
        except (aiomqtt.MqttError, asyncio.CancelledError):
            # QoS 1 messages are acknowledged on receipt: the ones still queued in the client
            # when the connection drops (or at stop) are ours alone now, so handle them first
            queue = client._queue
            while not queue.empty():
                await self._handle_message(queue.get_nowait())
            raise

    async def _handle_message(self, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        try:
            await self.handle(topic, payload=message.payload)
        except (aiomqtt.MqttError, TransportError):
            raise  # the connection, not the message: reconnect
        except Exception as exc:  # one message never stops the agent
            self.stats.processing_errors += 1
            log.exception("message on %s could not be handled", topic)
            payload = message.payload
            raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
            await self._dead_letter(topic, bytes(raw), f"internal error: {exc!r}")

    async def handle(self, topic: str, *, payload: object) -> None:
        """One message: truth is kept, frames validated and aligned, the rest dead-lettered."""
        raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
        if self.recorder is not None and topic != self.topics.truth:
            self.recorder.write(topic, bytes(raw), _utcnow())
        if topic == self.topics.truth:
            try:
                truth = TrueState.model_validate_json(raw)
            except ValueError as exc:
                await self._dead_letter(topic, raw, f"invalid true state: {exc}")
                return
            self._truth[slot_of(truth.timestamp, period_ns=self.aligner.period_ns)] = truth
            while len(self._truth) > self.settings.runtime.truth_history:
                self._truth.popitem(last=False)
            return
        if topic == self.topics.switch_state:
            await self._switch(bytes(raw))
            return
        result = self.intake.offer(bytes(raw))
        self.stats.count(result.outcome)
        if result.reason is not None:
            await self._dead_letter(topic, raw, result.reason, device=result.device)
            return
        if result.frame is not None and self.frame_sinks:
            rows = list(self.fanout.frame(result.frame))
            for sink in self.frame_sinks:
                sink.submit(rows)
        await self._close_windows()

    async def _switch(self, raw: bytes) -> None:
        """A switch's new state: the model follows, or a dead letter says why not."""
        reason = await take_switch(raw, intake=self.intake, processor=self.processor)
        self.stats.switches_applied = self.processor.switches_applied
        if reason is not None:
            await self._dead_letter(self.topics.switch_state, raw, reason)

    async def _close_windows(self) -> None:
        await self._enqueue(self.intake.poll())

    async def _enqueue(self, windows: list[Window]) -> None:
        """Queue closed windows for estimation; when full, the oldest is published as skipped.

        The queue is changed without an await between, and the skipped windows are published by
        a task of their own that a cancel of the caller (the reader's, at a stop) does not
        interrupt: a window counted is always published (found: a stop in the middle of this
        loop lost the window it had taken, 1 in ~10 stops while behind)."""
        skipped: list[Window] = []
        for window in windows:
            self.stats.windows += 1
            self.completeness.add(window)
            if window.missing_devices:
                self.stats.windows_incomplete += 1
            if self._windows.full():
                skipped.append(self._windows.get_nowait())
                self._windows.task_done()
                self.stats.windows_skipped += 1
            self._windows.put_nowait(window)
        if skipped:
            task = asyncio.create_task(self._publish_skipped(skipped), name="skipped")
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)
            await asyncio.shield(task)

    async def _publish_skipped(self, windows: list[Window]) -> None:
        for window in windows:
            reason = "estimator behind: window queue full"
            await self._publish_estimate(self.processor.skipped(window, reason=reason))

    async def _tick_loop(self) -> None:
        period = 1.0 / self.spec.window.rate_hz
        while not self.intake.event_time:  # event time advances with the frames, not the clock
            await asyncio.sleep(period / 2)
            await self._close_windows()
            raise_if_cancelled()

    async def _estimate_loop(self) -> None:
        limit_s = self.settings.runtime.max_window_age_s
        while True:
            window = await self._windows.get()
            try:
                stale = self.processor.stale(window, now=self.intake.now(), max_age_s=limit_s)
                if stale is not None:  # held up somewhere: published as skipped, not estimated
                    self.stats.windows_skipped += 1
                    await self._publish_estimate(stale)
                    continue
                self.stats.estimate_age_ms_max = max(
                    self.stats.estimate_age_ms_max,
                    (self.intake.now() - window.window_start) / timedelta(milliseconds=1),
                )
                await self._process(window)
            except Exception:  # one window (or a FLISR or forecast step) never stops the agent
                self.stats.processing_errors += 1
                log.exception("processing the window of %s failed", window.window_start)
            finally:
                self._windows.task_done()
            raise_if_cancelled()

    async def _process(self, window: Window) -> None:
        """Estimate one window; then forecasting and FLISR on its result."""
        truth = self._truth.get(slot_of(window.window_start, period_ns=self.aligner.period_ns))
        result = await self.processor.process(window, truth=truth)
        self.stats.forecast_history_steps = self.processor.history_steps
        self.stats.forecasts_rejected = self.processor.forecasts_rejected
        await self._emit(self.fanout.processed(result, now=_utcnow()))
        for listener in self.listeners:
            listener(result.estimate)
        if result.forecast is not None:
            for forecast_listener in self.forecast_listeners:
                forecast_listener(result.forecast)
        if result.flisr is not None:
            for flisr_listener in self.flisr_listeners:
                flisr_listener(result.flisr)

    async def _publish_estimate(self, estimate: StateEstimate) -> None:
        """A window not estimated (skipped), through the same fan-out."""
        await self._emit(self.fanout.estimate(estimate, now=_utcnow()))
        for listener in self.listeners:
            listener(estimate)

    async def _emit(self, fanned: Fanned) -> None:
        """Store a result's rows, then publish its messages."""
        if self.sinks and fanned.rows:
            rows = list(fanned.rows)
            for sink in self.sinks:
                sink.submit(rows)
        for message in fanned.messages:
            if await self._send(message) and message.kind is ResultKind.STATE:
                self.stats.estimates_published += 1

    async def _dead_letter(
        self, topic: str, raw: bytes | bytearray, reason: str, *, device: str | None = None
    ) -> None:
        """Queue a dead letter: it is published by its own task, so the read loop never waits
        for a broker's acknowledgement (a burst of late frames then cannot hold up the frames
        behind it, which would make them late in turn)."""
        letter = self.fanout.dead_letter(topic, raw=raw, reason=reason, device=device)
        log.info("dead letter from %s: %s", topic, reason)
        if self._letters.full():
            self.stats.dead_letters_dropped += 1  # a flood: counted, and the reason logged
            return
        self._letters.put_nowait(letter)

    async def _dead_letter_loop(self) -> None:
        while True:
            letter = await self._letters.get()
            sent = False
            try:
                while not sent:
                    sent = await self._send(letter)
                    if not sent:
                        await asyncio.sleep(0.2)  # a failed publish: the connection is going
                    raise_if_cancelled()
            except asyncio.CancelledError:
                if not sent and not self._letters.full():  # kept for the next connection
                    self._letters.put_nowait(letter)
                raise

    async def _send(self, message: Outgoing) -> bool:
        """One result message on the area's topic of its kind."""
        qos = 1 if message.kind.always_acknowledged else self.settings.mqtt.qos
        return await self._publish(self.topics.of_kind(message.kind), message.payload, qos=qos)

    async def _publish(self, topic: str, payload: str, *, qos: int, retain: bool = False) -> bool:
        client = self._client
        if client is None:
            self.stats.publish_errors += 1
            return False
        try:
            await client.publish(topic, payload, qos=qos, retain=retain)
        except aiomqtt.MqttError as exc:
            self.stats.publish_errors += 1
            log.warning("publish to %s failed: %s", topic, exc)
            return False
        return True

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.runtime.status_interval_s)
            status = {
                "area": self.spec.area,
                "ts": _utcnow().isoformat(),
                **asdict(self.stats),
                # each device's share of the windows of the last minute it reported in
                "devices": self.completeness.shares(),
            }
            await self._publish(self.topics.status, json.dumps(status), qos=0, retain=True)
            raise_if_cancelled()

    async def _drain(self) -> None:
        """At shutdown: close every open window and estimate the queued ones for
        `stop_timeout_s`; those still queued then are published as skipped, and the estimate
        in hand is waited for (so a stop returns within about the timeout plus one estimate)."""
        await self._close_windows()
        await self._enqueue(self.intake.flush())
        timeout_s = self.settings.runtime.stop_timeout_s
        try:
            await asyncio.wait_for(self._windows.join(), timeout=timeout_s)
            await asyncio.wait_for(self._skipped_published(), timeout=timeout_s)
            return
        except TimeoutError:
            pass
        left = 0
        while not self._windows.empty():
            window = self._windows.get_nowait()
            self._windows.task_done()
            left += 1
            self.stats.windows_skipped += 1
            reason = f"stopping: not estimated within {timeout_s:g} s of the stop"
            await self._publish_estimate(self.processor.skipped(window, reason=reason))
        log.warning("stopping: %d queued windows published as skipped", left)
        try:
            await asyncio.wait_for(self._windows.join(), timeout=timeout_s)
            await asyncio.wait_for(self._skipped_published(), timeout=timeout_s)
        except TimeoutError:
            log.error("stopping: an estimate still running after %g s is left behind", timeout_s)

    async def _skipped_published(self) -> None:
        while self._publishing:
            await asyncio.gather(*self._publishing, return_exceptions=True)


class Emulator:
    """Publish an emulated PMU fleet's frames (and the true state) at the reporting rate."""

    def __init__(
        self,
        *,
        spec: AgentSpec,
        grid: GridModel,
        settings: Settings,
        endpoint: MqttEndpoint,
        stats: EmulatorStats | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.endpoint = endpoint
        profiles = None
        if spec.emulator.profiles:
            profiles = load_profiles(spec.emulator.profiles, cache_dir=settings.cache_dir).values
        self.fleet = PmuFleet(spec, grid, profiles)
        self.topics = Topics(settings.mqtt.topic_prefix, spec.area)
        self.stats = stats if stats is not None else EmulatorStats()
        self._outbox: deque[tuple[str, str, bool]] = deque()
        self._ready = asyncio.Event()
        self._stop_deadline: float | None = None

    def _gave_up(self, stop: asyncio.Event) -> bool:
        """True once stop was set `stop_timeout_s` ago: what is left in the outbox stays unsent
        (counted and logged), so a stop returns in bounded time however far behind we are."""
        if not stop.is_set():
            return False
        now = time.monotonic()
        if self._stop_deadline is None:
            self._stop_deadline = now + self.settings.runtime.stop_timeout_s
        if now < self._stop_deadline:
            return False
        if self._outbox:
            self.stats.frames_unsent = sum(1 for _t, _p, retain in self._outbox if not retain)
            log.warning("emulator stopping: %d frames left unsent", self.stats.frames_unsent)
            self._outbox.clear()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Produce one instant per period until stop is set; frames go through an outbox that
        keeps them while the broker is unreachable (store and forward, as a PDC does) and
        sends them after reconnecting, oldest first."""
        gc.freeze()  # the grid model and the fleet live as long as the process (as the pipeline)
        producer = asyncio.create_task(self._produce(stop), name="emulate")
        backoff = Backoff(self.settings.mqtt.reconnect_backoff_max_s)
        try:
            while not (stop.is_set() and not self._outbox) and not self._gave_up(stop):
                try:
                    await self._send(stop, producer)
                    backoff.reset()
                except TransportError as exc:
                    self.stats.reconnects += 1
                    log.warning(
                        "emulator: broker unreachable (%s); %d frames kept", exc, len(self._outbox)
                    )
                    await backoff.sleep(stop)
                    if stop.is_set() and producer.done():
                        break  # stopping while the broker is down: what is left stays unsent
                if producer.done() and not self._outbox:
                    break
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)

    async def _produce(self, stop: asyncio.Event) -> None:
        period = 1.0 / self.spec.window.rate_hz
        next_slot = (int(time.time() / period) + 1) * period
        while not stop.is_set():
            delay = next_slot - time.time()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                    break
                except TimeoutError:
                    pass
            ts = datetime.fromtimestamp(round(next_slot, 6), tz=UTC)
            instant = await asyncio.to_thread(self.fleet.step, ts)
            for switched in instant.switched:  # before the frames measured on the new topology
                self._outbox.append((self.topics.switch_state, switched.model_dump_json(), False))
                self.stats.switchings += 1
            self._outbox.append((self.topics.truth, instant.truth.model_dump_json(), True))
            for frame in instant.frames:
                self._outbox.append((self.topics.pmu(frame.device), frame.model_dump_json(), False))
            self._ready.set()
            self.stats.instants += 1
            next_slot += period
            behind = int((time.time() - next_slot) / period)
            if behind > 0:
                self.stats.instants_behind += behind
                next_slot += behind * period

    async def _send(self, stop: asyncio.Event, producer: asyncio.Task[None]) -> None:
        qos = self.settings.mqtt.qos
        try:
            async with connect(
                self.endpoint,
                client_id=f"{self.settings.mqtt.client_id_prefix}-{self.spec.area}-emulator",
            ) as client:
                while not self._gave_up(stop):
                    if not self._outbox:
                        if producer.done():
                            return
                        self._ready.clear()
                        waiter = asyncio.create_task(self._ready.wait())
                        await asyncio.wait({waiter, producer}, return_when=asyncio.FIRST_COMPLETED)
                        waiter.cancel()
                        continue
                    batch = [self._outbox[k] for k in range(min(len(self._outbox), 64))]
                    # QoS 1 publishes wait for their PUBACK: send a batch together
                    await asyncio.gather(
                        *(
                            client.publish(topic, payload, qos=0 if retain else qos, retain=retain)
                            for topic, payload, retain in batch
                        )
                    )
                    for _ in batch:
                        topic, _payload, retain = self._outbox.popleft()
                        if not retain and topic != self.topics.switch_state:
                            self.stats.frames += 1
        except aiomqtt.MqttError as exc:
            raise TransportError(str(exc)) from exc
