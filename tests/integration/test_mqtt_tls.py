"""MQTT over TLS with client certificates, on a real Mosquitto: our client with the CA and its
certificate connects; without a certificate, or over plain TCP, it is refused."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from dsotp_streams.adapters.mqtt import MqttEndpoint, TlsConfig, connect, endpoint_from_settings
from dsotp_streams.errors import TransportError
from dsotp_streams.settings import MqttSettings
from tests.integration.databases import TcpServer

pytestmark = pytest.mark.broker


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(folder: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=dsotp test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        cwd=folder,
    )
    for name, cn in (("server", "127.0.0.1"), ("client", "pmu-n1")):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={cn}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=folder,
        )
        ext = folder / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1\n" if name == "server" else "")
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            f"{name}.crt",
            "-extfile",
            str(ext),
            cwd=folder,
        )


class _TlsMosquitto(TcpServer):
    name = "mosquitto-tls"

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        _certificates(folder)
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"user root\nlistener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"cafile {folder}/ca.crt\ncertfile {folder}/server.crt\nkeyfile {folder}/server.key\n"
            "require_certificate true\n",
            encoding="utf-8",
        )

    def command(self) -> list[str]:
        return [self.binary, "-c", str(self.conf)]


def test_tls_with_client_certificate(tmp_path: Path) -> None:
    assert shutil.which("openssl"), "openssl is needed to make the test certificates"
    broker = _TlsMosquitto(tmp_path / "tls")
    broker.start()
    folder = broker.folder
    settings = MqttSettings(
        url=f"mqtts://127.0.0.1:{broker.port}",
        tls_ca_file=folder / "ca.crt",
        tls_cert_file=folder / "client.crt",
        tls_key_file=folder / "client.key",
    )
    attempts = {
        "certificate": endpoint_from_settings(settings),
        "no certificate": MqttEndpoint(
            "127.0.0.1", broker.port, tls=TlsConfig(ca_file=folder / "ca.crt")
        ),
        "plain TCP": MqttEndpoint("127.0.0.1", broker.port),
    }

    async def go() -> dict[str, str]:
        out = {}
        for name, endpoint in attempts.items():
            try:
                async with connect(endpoint, client_id=f"tls-{name.replace(' ', '-')}") as c:
                    await c.publish("dsotp/test", b"x", qos=1)
                out[name] = "accepted"
            except TransportError:
                out[name] = "refused"
        return out

    try:
        outcomes = asyncio.run(go())
    finally:
        broker.stop()
    assert outcomes == {
        "certificate": "accepted",
        "no certificate": "refused",
        "plain TCP": "refused",
    }
    assert str(attempts["certificate"]).startswith("mqtts://")
    # credentials never show in an endpoint's text (logs, errors)
    secret = MqttEndpoint("h", 1, "u", "secret-pw")
    assert "secret-pw" not in repr(secret) and "secret-pw" not in str(secret)
