"""Retained messages of the embedded broker reach only the subscribers of their own topics.

amqtt 0.12.1 sends a connecting client the retained messages that match any filter held by any
session of the broker; `test_bare_amqtt_leaks_retained_messages_of_other_filters` keeps the
minimal reproduction (to report upstream, and to notice when a release fixes it), the others
check our broker and the running demo with an outside client (`mosquitto_sub`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dsotp_streams.adapters.mqtt import EmbeddedBroker, MqttEndpoint, connect, wait_for_port
from tests.integration.conftest import free_port

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[2]


async def _received(endpoint: MqttEndpoint, topic_filter: str, *, wait_s: float) -> list[str]:
    """The topics a new client subscribed to `topic_filter` receives within `wait_s`."""
    topics: list[str] = []
    async with connect(endpoint, client_id=f"probe-{time.time_ns()}") as client:
        await client.subscribe(topic_filter, qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                async for message in client.messages:
                    topics.append(str(message.topic))
    return topics


async def _retained_scene(endpoint: MqttEndpoint) -> tuple[list[str], list[str]]:
    """One client holds a subscription to `site/truth`, a retained message is published there;
    then a new client subscribes to `site/other` and another to `site/truth`."""
    async with connect(endpoint, client_id="holder") as holder:
        await holder.subscribe("site/truth", qos=0)
        await holder.publish("site/truth", b"{}", qos=0, retain=True)
        await asyncio.sleep(0.2)
        other = await _received(endpoint, "site/other", wait_s=1.0)
        own = await _received(endpoint, "site/truth", wait_s=1.0)
    return other, own


def test_bare_amqtt_leaks_retained_messages_of_other_filters() -> None:
    """The upstream defect, reproduced with amqtt's own Broker (no dsotp code but the client):
    a subscriber of `site/other` receives the retained `site/truth`, one of `site/truth` gets
    it twice. Should a release of amqtt
    fix it, this test fails: then the workaround in adapters/mqtt.py can go."""
    from amqtt.broker import Broker

    async def go() -> tuple[list[str], list[str]]:
        port = free_port()
        broker: Any = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            }
        )
        await broker.start()
        try:
            return await _retained_scene(MqttEndpoint("127.0.0.1", port))
        finally:
            await broker.shutdown()

    other, own = asyncio.run(go())
    assert other == ["site/truth"]  # the defect: not asked for
    assert own == ["site/truth", "site/truth"]  # and twice: at connect, then at subscribe


def test_embedded_broker_sends_retained_messages_only_to_their_subscribers() -> None:
    async def go() -> tuple[list[str], list[str]]:
        async with EmbeddedBroker(port=free_port()) as broker:
            return await _retained_scene(broker.endpoint)

    other, own = asyncio.run(go())
    assert other == []
    assert own == ["site/truth"]


def test_embedded_broker_resumed_session_gets_retained_of_its_own_filters() -> None:
    """A persistent session that reconnects still gets the retained messages of the filters it
    holds (at connect, as amqtt meant), and none of anyone else's."""

    async def go() -> list[str]:
        async with EmbeddedBroker(port=free_port()) as broker:
            endpoint = broker.endpoint
            async with connect(endpoint, client_id="holder") as holder:
                await holder.subscribe("site/truth", qos=0)
                async with connect(endpoint, client_id="resumed", clean_session=False) as c:
                    await c.subscribe("site/status", qos=1)
                await holder.publish("site/truth", b"{}", qos=0, retain=True)
                await holder.publish("site/status", b"{}", qos=0, retain=True)
                await asyncio.sleep(0.2)
                topics: list[str] = []
                async with connect(endpoint, client_id="resumed", clean_session=False) as c:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            async for message in c.messages:
                                topics.append(str(message.topic))
                return topics

    topics = asyncio.run(go())
    assert "site/truth" not in topics
    assert "site/status" in topics


@contextlib.contextmanager
def _demo(port: int, store: Path) -> Iterator[subprocess.Popen[str]]:
    log = store.with_suffix(".log").open("w")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "dsotp_streams", "demo", "--duration", "120"),
            *("--mqtt-port", str(port), "--no-live", "--store", str(store)),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _mosquitto_sub(port: int, topic_filter: str, *, count: int) -> list[tuple[str, str]]:
    """(retain flag, topic) of the first `count` messages an outside client gets (5 s at most)."""
    proc = subprocess.run(
        [
            *("mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q", "1"),
            *("-t", topic_filter, "-C", str(count), "-W", "5", "-F", "%r %t"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    lines = [line.split(" ", 1) for line in proc.stdout.splitlines() if line.strip()]
    return [(flag, topic) for flag, topic in lines]


def _matches(topic: str, topic_filter: str) -> bool:
    levels, parts = topic_filter.split("/"), topic.split("/")
    return len(levels) == len(parts) and all(
        f in ("+", p) for f, p in zip(levels, parts, strict=True)
    )


def test_the_demo_broker_gives_outside_subscribers_only_what_they_asked_for(
    tmp_path: Path,
) -> None:
    assert shutil.which("mosquitto_sub"), "scripts/setup.sh --services installs mosquitto-clients"
    port = free_port()
    with _demo(port, tmp_path / "demo.duckdb") as proc:
        asyncio.run(wait_for_port("127.0.0.1", port, timeout_s=60))
        # wait until the demo publishes estimates
        deadline = time.monotonic() + 60
        while not _mosquitto_sub(port, "dsotp/+/state", count=1):
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no estimate within 60 s"
        foreign: list[tuple[str, str, str]] = []
        received = 0
        filters = ["dsotp/+/state", "dsotp/cigre-mv/pmu/pmu-n0", "dsotp/cigre-mv/state/sogno"]
        for k in range(20):
            topic_filter = filters[k % len(filters)]
            got = _mosquitto_sub(port, topic_filter, count=3)
            received += len(got)
            foreign += [(topic_filter, flag, t) for flag, t in got if not _matches(t, topic_filter)]
        # the retained topics still reach their own new subscribers, flagged as retained
        status = _mosquitto_sub(port, "dsotp/+/status", count=1)
        truth = _mosquitto_sub(port, "dsotp/cigre-mv/truth", count=1)
        assert proc.poll() is None
    assert foreign == []
    assert received == 60  # every connect got its three messages
    assert status == [("1", "dsotp/cigre-mv/status")]
    assert truth == [("1", "dsotp/cigre-mv/truth")]
