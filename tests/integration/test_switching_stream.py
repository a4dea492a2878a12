"""Topology follows the switches mid-stream, through a real broker: the emulated grid closes
a tie switch and opens a line, reports both on dsotp/<area>/switch/state, and the pipeline's
next windows are estimated on the new topology; bad switch messages are dead-lettered."""

from __future__ import annotations

import asyncio
import time

import paho.mqtt.client as paho
import pytest

from dsotp_streams.adapters.mqtt import MqttEndpoint
from dsotp_streams.cli.demo import run_demo
from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.messages import EstimateStatus
from dsotp_streams.runtime.demo import DemoSummary
from dsotp_streams.settings import MqttSettings, Settings
from tests.integration.test_pipeline_brokers import Received, subscriber

pytestmark = pytest.mark.broker

CLOSE_AT_S, OPEN_AT_S, DURATION_S = 3.0, 6.0, 9.0
BAD = {
    b'{"switch": "S99", "closed": true, "timestamp": "2026-03-01T09:00:00Z"}': "unknown switch",
    b'{"switch": "Line 1-2@Bus 1", "closed": false, "timestamp": "2026-03-01T09:00:00Z"}': (
        "without supply"
    ),
    b'{"switch": "S1", "closed": true, "timestamp": "2026-03-01T09:00:00Z", '
    b'"source": "command"}': "topology.command_switches",
    b"{not json": "invalid switch state",
}


def test_the_model_follows_a_tie_closed_and_a_line_opened(
    mosquitto: MqttEndpoint, spec: AgentSpec
) -> None:
    spec = spec.model_copy(update={"forecast": spec.forecast.model_copy(update={"enabled": False})})
    prefix = f"switching{time.time_ns()}"
    settings = Settings(
        mqtt=MqttSettings(
            url=f"mqtt://{mosquitto.host}:{mosquitto.port}",
            client_id_prefix=prefix,
            topic_prefix=prefix,
        )
    )
    switchings = [("S2", True, CLOSE_AT_S), ("Line 4-5@Bus 4", False, OPEN_AT_S)]

    async def scenario(received: Received, client: paho.Client) -> DemoSummary:
        async def inject() -> None:
            async with asyncio.timeout(DURATION_S + 30):
                while not received.estimates:  # noqa: ASYNC110 (filled by paho's thread)
                    await asyncio.sleep(0.05)
            for payload in BAD:
                client.publish(f"{prefix}/{spec.area}/switch/state", payload, qos=1)

        injector = asyncio.create_task(inject())
        summary = await run_demo(
            settings=settings, spec=spec, duration_s=DURATION_S, live=False, switchings=switchings
        )
        await injector
        return summary

    with subscriber(mosquitto, spec.area, prefix) as (received, client):
        summary = asyncio.run(scenario(received, client))
        time.sleep(0.5)
    assert summary.pipeline.switches_applied == 2
    assert summary.emulator.switchings == 2
    with received.lock:
        estimates = [e for _t, e in received.estimates]
        dead = list(received.dead)
    first = min(e.window_start.timestamp() for e in estimates)
    after_open = [e for e in estimates if e.window_start.timestamp() >= first + OPEN_AT_S + 0.5]
    after_close = [
        e
        for e in estimates
        if first + CLOSE_AT_S + 0.5 <= e.window_start.timestamp() < first + OPEN_AT_S
    ]
    assert len(after_open) >= 15 and len(after_close) >= 15
    for phase in (after_close, after_open):
        assert all(e.status is EstimateStatus.OK for e in phase), [e.reason for e in phase]
        # the emulated PMUs are 1 % TVE: every window within 0.5 % of the truth
        assert max(e.max_true_dvm_pu or 1.0 for e in phase) < 0.005
    # a line switched open shows as a dead line in the estimate
    line = {b.line: b for b in after_open[-1].lines}["Line 4-5"]
    assert line.i_from_ka is not None and line.i_from_ka < 1e-3
    switch_letters = [d for d in dead if d.topic.endswith("/switch/state")]
    for reason in BAD.values():
        assert any(reason in d.reason for d in switch_letters), (reason, switch_letters)
    assert len(switch_letters) == len(BAD)
