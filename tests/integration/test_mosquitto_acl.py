"""The Mosquitto ACL example of deploy/mosquitto: a PMU publishes only to its own topic, the
platform reads all, anonymous clients are refused."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from dsotp_streams.adapters.mqtt import MqttEndpoint, connect
from dsotp_streams.errors import TransportError
from tests.integration.databases import TcpServer

pytestmark = pytest.mark.broker
REPO = Path(__file__).resolve().parents[2]


class _AclMosquitto(TcpServer):
    name = "mosquitto-acl"

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        folder.chmod(0o777)
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        passwd = folder / "dsotp.passwd"
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        for k, (user, password) in enumerate((("dsotp", "platform-pw"), ("pmu-n1", "pmu-pw"))):
            args = [tool, "-b", *(["-c"] if k == 0 else []), str(passwd), user, password]
            subprocess.run(args, check=True, capture_output=True)
        passwd.chmod(0o644)
        shipped = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
        conf = (
            shipped.replace("/etc/mosquitto/dsotp.passwd", str(passwd))
            .replace("/etc/mosquitto/dsotp.acl", str(REPO / "deploy" / "mosquitto" / "dsotp.acl"))
            .replace("/var/lib/mosquitto/", f"{folder}/")
            .replace("listener 1883 127.0.0.1", f"listener {self.port} 127.0.0.1")
        )
        self.conf = folder / "mosquitto.conf"
        # tests run as root in private temp folders: keep root instead of dropping to the
        # mosquitto user, who could not read them
        self.conf.write_text("user root\n" + conf, encoding="utf-8")

    def command(self) -> list[str]:
        return [self.binary, "-c", str(self.conf)]


def test_acl_lets_a_pmu_publish_only_its_own_frames(tmp_path: Path) -> None:
    broker = _AclMosquitto(tmp_path / "broker")
    broker.start()
    port = broker.port
    platform = MqttEndpoint("127.0.0.1", port, "dsotp", "platform-pw")
    pmu = MqttEndpoint("127.0.0.1", port, "pmu-n1", "pmu-pw")

    async def go() -> tuple[list[str], str]:
        received: list[str] = []
        async with connect(platform, client_id="platform") as reader:
            await reader.subscribe("dsotp/#", qos=1)

            async def read() -> None:
                async for message in reader.messages:
                    received.append(str(message.topic))

            task = asyncio.create_task(read())
            async with connect(pmu, client_id="pmu-n1") as writer:
                await writer.publish("dsotp/cigre-mv/pmu/pmu-n1", b"own", qos=1)
                await writer.publish("dsotp/cigre-mv/pmu/pmu-n2", b"spoofed", qos=1)
                await writer.publish("dsotp/cigre-mv/state", b"forged result", qos=1)
            await asyncio.sleep(1.0)
            task.cancel()
        try:
            async with connect(MqttEndpoint("127.0.0.1", port), client_id="anon"):
                anonymous = "accepted"
        except TransportError:
            anonymous = "refused"
        return received, anonymous

    try:
        received, anonymous = asyncio.run(go())
    finally:
        broker.stop()
    assert received == ["dsotp/cigre-mv/pmu/pmu-n1"]
    assert anonymous == "refused"
