"""The embedded broker with credentials set refuses anonymous clients and wrong passwords, and
serves the configured user (the platform's own clients pass the credentials)."""

from __future__ import annotations

import asyncio

import pytest

from dsotp_streams.adapters.mqtt import EmbeddedBroker, MqttEndpoint, connect
from dsotp_streams.errors import TransportError
from tests.integration.conftest import free_port

pytestmark = pytest.mark.broker


def test_embedded_broker_with_credentials_refuses_anonymous_access() -> None:
    async def go() -> list[str]:
        port = free_port()
        outcomes = []
        async with EmbeddedBroker(port=port, username="dsotp", password="s3cret-test") as broker:
            attempts = {
                "anonymous": MqttEndpoint("127.0.0.1", port),
                "wrong password": MqttEndpoint("127.0.0.1", port, "dsotp", "guess"),
                "unknown user": MqttEndpoint("127.0.0.1", port, "intruder", "s3cret-test"),
                "configured user": broker.endpoint,
            }
            for name, endpoint in attempts.items():
                try:
                    async with connect(endpoint, client_id=f"auth-{name.replace(' ', '-')}") as c:
                        await c.publish("dsotp/test", b"x", qos=1)
                    outcomes.append(f"{name}: accepted")
                except TransportError:
                    outcomes.append(f"{name}: refused")
        return outcomes

    assert asyncio.run(go()) == [
        "anonymous: refused",
        "wrong password: refused",
        "unknown user: refused",
        "configured user: accepted",
    ]
