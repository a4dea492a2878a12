"""The topic grammar lives in one type: `Topics` builds and parses `<prefix>/<area>/...`, for
a prefix of one level or several, and the bridge takes the area from it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import aiomqtt
import pytest

from dsotp_streams.adapters.mqtt import MqttEndpoint, Topics
from dsotp_streams.contracts.frames import PmuFrame
from dsotp_streams.runtime.bridge import Bridge
from dsotp_streams.settings import MqttSettings, Settings


@pytest.mark.parametrize("prefix", ["dsotp", "site/dsotp", "a/b/c"])
def test_a_frame_topic_parses_back_to_its_area_and_device(prefix: str) -> None:
    topics = Topics(prefix, "cigre-mv")
    parsed = Topics.of_frame(prefix, topics.pmu("pmu-n0"))
    assert parsed == (topics, "pmu-n0")
    assert Topics.every_pmu(prefix) == f"{prefix}/+/pmu/+"


@pytest.mark.parametrize(
    "topic",
    [
        "site/dsotp/cigre-mv/state",  # not a frame topic
        "site/dsotp/cigre-mv/pmu",  # no device
        "site/dsotp/cigre-mv/pmu/pmu-n0/extra",
        "other/cigre-mv/pmu/pmu-n0",  # another prefix
        "site/dsotp//pmu/pmu-n0",  # no area
    ],
)
def test_other_topics_are_not_frames(topic: str) -> None:
    assert Topics.of_frame("site/dsotp", topic) is None


def test_the_bridge_takes_the_area_from_a_multi_level_prefix() -> None:
    """With `DSOTP_MQTT__TOPIC_PREFIX=site/dsotp` the area was read as `dsotp`."""
    settings = Settings(mqtt=MqttSettings(topic_prefix="site/dsotp"))
    bridge = Bridge(settings=settings, endpoint=MqttEndpoint("127.0.0.1", 1))
    frame = PmuFrame.model_validate(
        {
            "device": "pmu-n0",
            "timestamp": datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
            "readings": [
                {
                    "component": "Bus 0",
                    "measurand": "voltmagnitude",
                    "phase": "A",
                    "data": 1.0,
                }
            ],
        }
    )
    topic = Topics("site/dsotp", "cigre-mv").pmu("pmu-n0")
    message = aiomqtt.Message(topic, frame.model_dump_json().encode(), 1, False, 1, None)
    asyncio.run(bridge._receive(None, message))  # type: ignore[arg-type] # no dead letter: no client
    assert [p.area for p in bridge._pending] == ["cigre-mv"]
