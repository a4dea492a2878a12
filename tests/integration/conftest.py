"""Real MQTT brokers on loopback: Mosquitto and RabbitMQ (MQTT plugin), started per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsotp_streams.adapters.mqtt import MqttEndpoint
from tests.integration.databases import TcpServer, free_port

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


class MosquittoProcess(TcpServer):
    """Mosquitto on a fixed loopback port that can be stopped and started again (persistence
    in its folder when asked), with a queue deep enough not to drop QoS 1 messages."""

    name = "mosquitto"
    start_timeout_s = 10.0
    stop_timeout_s = 20.0

    def __init__(self, folder: Path, *, persistence: bool = False) -> None:
        super().__init__(folder)
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        assert Path(self.binary).exists(), "mosquitto is not installed: run scripts/test.sh"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "max_queued_messages 100000",
            "max_inflight_messages 0",
        ]
        if persistence:
            lines += ["persistence true", f"persistence_location {folder}/"]
            if os.geteuid() == 0:
                lines.append("user root")  # else it drops to `mosquitto`, who cannot write here
        else:
            lines.append("persistence false")
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def command(self) -> list[str]:
        return [self.binary, "-c", str(self.conf)]

    @property
    def endpoint(self) -> MqttEndpoint:
        return MqttEndpoint("127.0.0.1", self.port)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MqttEndpoint]:
    """Mosquitto on a free loopback port, with a queue deep enough not to drop QoS 1 messages."""
    broker = MosquittoProcess(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    try:
        yield broker.endpoint
    finally:
        broker.stop()


class RabbitProcess(TcpServer):
    """RabbitMQ with its MQTT plugin, node kept on loopback, state in a folder (so a restart
    keeps durable sessions), credentials dsotp / dsotp-test, anonymous access off."""

    name = "rabbitmq"
    start_timeout_s = 90.0
    stop_timeout_s = 20.0

    def __init__(self, folder: Path) -> None:
        assert RABBIT_BIN.exists(), "rabbitmq-server is not installed: run scripts/test.sh"
        super().__init__(folder)
        port, amqp_port, dist_port = self.port, free_port(), free_port()
        (folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{amqp_port}\n"
            f"mqtt.listeners.tcp.default = 127.0.0.1:{port}\n"
            "mqtt.allow_anonymous = false\n"
            "mqtt.prefetch = 1000\n"
            "default_user = dsotp\n"
            "default_pass = dsotp-test\n"
            "loopback_users = none\n",
            encoding="utf-8",
        )
        (folder / "enabled_plugins").write_text("[rabbitmq_mqtt].\n", encoding="utf-8")
        self._env = {
            **os.environ,
            "HOME": str(folder),
            "RABBITMQ_NODENAME": f"dsotp{port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(folder / "log"),
            "RABBITMQ_PID_FILE": str(folder / "rabbitmq.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def command(self) -> list[str]:
        return [str(RABBIT_BIN)]

    def env(self) -> dict[str, str]:
        return self._env

    @property
    def endpoint(self) -> MqttEndpoint:
        return MqttEndpoint("127.0.0.1", self.port, username="dsotp", password="dsotp-test")


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MqttEndpoint]:
    """RabbitMQ with its MQTT plugin, node kept on loopback, state in a temporary folder."""
    broker = RabbitProcess(tmp_path_factory.mktemp("rabbitmq"))
    broker.start()
    try:
        yield broker.endpoint
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def amqtt() -> Iterator[MqttEndpoint]:
    """The embedded amqtt broker, in a thread of its own so that blocking clients can use it."""
    import asyncio
    import threading

    from dsotp_streams.adapters.mqtt import EmbeddedBroker

    port = free_port()
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    errors: list[BaseException] = []

    async def serve() -> None:
        try:
            async with EmbeddedBroker(port=port):
                started.set()
                await stop.wait()
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
            started.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(15), "embedded broker did not start"
    assert not errors, errors
    try:
        yield MqttEndpoint("127.0.0.1", port)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()
