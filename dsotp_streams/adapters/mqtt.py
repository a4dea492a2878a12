"""MQTT at the edge: endpoints, topics, the embedded amqtt broker, and aiomqtt clients."""

from __future__ import annotations

import asyncio
import logging
import socket
import tempfile
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt

from dsotp_streams.contracts.messages import ResultKind
from dsotp_streams.errors import TransportError
from dsotp_streams.settings import MqttSettings

__all__ = [
    "EmbeddedBroker",
    "MqttEndpoint",
    "Topics",
    "ack",
    "connect",
    "endpoint_from_settings",
    "parse_mqtt_url",
    "raise_if_cancelled",
    "wait_for_port",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsConfig:
    """TLS towards the broker: the CA to trust, and optionally a client certificate."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class MqttEndpoint:
    """Where a broker listens and how to log in (the password never shows in its text)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsConfig | None = None

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttEndpoint:
    """Parse mqtt://user:pass@host:port (port 1883 by default; mqtts:// for TLS, port 8883)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl"):
        raise TransportError(f"unsupported MQTT URL scheme {parts.scheme!r} in {url!r}")
    if not parts.hostname:
        raise TransportError(f"MQTT URL {url!r} names no host")
    secure = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if secure else 1883)
    except ValueError as exc:
        raise TransportError(f"MQTT URL {url!r} has an invalid port") from exc
    return MqttEndpoint(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=TlsConfig() if secure else None,
    )


def endpoint_from_settings(settings: MqttSettings) -> MqttEndpoint:
    """The endpoint the settings describe (`url` wins over host/port; TLS files add TLS)."""
    tls = None
    if settings.tls or settings.tls_ca_file or settings.tls_cert_file:
        tls = TlsConfig(settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file)
    if settings.url:
        endpoint = parse_mqtt_url(settings.url)
        if tls is not None:
            endpoint = replace(endpoint, tls=tls)
        if settings.username and not endpoint.username:
            password = settings.password.get_secret_value() if settings.password else None
            endpoint = replace(endpoint, username=settings.username, password=password)
        return endpoint
    return MqttEndpoint(
        host=settings.host,
        port=settings.port,
        username=settings.username,
        password=settings.password.get_secret_value() if settings.password else None,
        tls=tls,
    )


@dataclass(frozen=True)
class Topics:
    """Topic names of one area."""

    prefix: str
    area: str

    @property
    def base(self) -> str:
        """`<prefix>/<area>`."""
        return f"{self.prefix}/{self.area}"

    def pmu(self, device: str) -> str:
        """Where a device publishes its frames."""
        return f"{self.base}/pmu/{device}"

    @staticmethod
    def every_pmu(prefix: str) -> str:
        """Subscription for the frames of every area under `prefix`."""
        return f"{prefix}/+/pmu/+"

    @classmethod
    def of_frame(cls, prefix: str, topic: str) -> tuple[Topics, str] | None:
        """The area's topics and the device of a frame topic `<prefix>/<area>/pmu/<device>`
        (the prefix may have several levels), or None for any other topic."""
        parts = _levels(prefix, topic)
        if len(parts) != 3 or parts[1] != "pmu" or not parts[0] or not parts[2]:
            return None
        return cls(prefix, parts[0]), parts[2]

    @property
    def pmu_wildcard(self) -> str:
        """Subscription for every device of the area."""
        return f"{self.base}/pmu/+"

    @property
    def switch_state(self) -> str:
        """Switch states in (SwitchState JSON): the model follows them."""
        return f"{self.base}/switch/state"

    @classmethod
    def switch_state_wildcard(cls, prefix: str) -> str:
        """Subscription for the switch states of every area."""
        return f"{prefix}/+/switch/state"

    @classmethod
    def of_switch_state(cls, prefix: str, topic: str) -> Topics | None:
        """The area of a switch-state topic, or None for any other topic."""
        parts = _levels(prefix, topic)
        if len(parts) != 3 or parts[1:] != ["switch", "state"] or not parts[0]:
            return None
        return cls(prefix, parts[0])

    @property
    def state(self) -> str:
        """StateEstimate JSON."""
        return f"{self.base}/state"

    @property
    def state_sogno(self) -> str:
        """The estimate in the SOGNO output format."""
        return f"{self.base}/state/sogno"

    @property
    def deadletter(self) -> str:
        """Rejected input with its reason."""
        return f"{self.base}/deadletter"

    @property
    def forecast(self) -> str:
        """Quantile forecasts per bus."""
        return f"{self.base}/forecast"

    @property
    def flisr(self) -> str:
        """FLISR events: fault section and switching plan."""
        return f"{self.base}/flisr"

    @property
    def switch_command(self) -> str:
        """Switching commands, when the agent spec allows publishing them."""
        return f"{self.base}/command/switch"

    @property
    def status(self) -> str:
        """Retained agent health, rates and lag."""
        return f"{self.base}/status"

    @property
    def truth(self) -> str:
        """The emulator's true state (debug)."""
        return f"{self.base}/truth"

    def of_kind(self, kind: ResultKind) -> str:
        """The topic a result of this kind goes to."""
        match kind:
            case ResultKind.STATE:
                return self.state
            case ResultKind.STATE_SOGNO:
                return self.state_sogno
            case ResultKind.FORECAST:
                return self.forecast
            case ResultKind.FLISR:
                return self.flisr
            case ResultKind.SWITCH_COMMAND:
                return self.switch_command
            case ResultKind.DEADLETTER:
                return self.deadletter


def _levels(prefix: str, topic: str) -> list[str]:
    """A topic's levels after the prefix (which may have several); none when it is not under it."""
    head = f"{prefix}/"
    return topic[len(head) :].split("/") if topic.startswith(head) else []


def _broker_config(host: str, port: int, *, password_file: Path | None) -> dict[str, Any]:
    listeners = {"default": {"type": "tcp", "bind": f"{host}:{port}"}}
    if password_file is None:
        return {
            "listeners": listeners,
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
    # amqtt reads a password file only in its section-style configuration
    return {
        "listeners": listeners,
        "auth": {
            "allow-anonymous": False,
            "password-file": str(password_file),
            "plugins": ["auth_file"],
        },
        "topic-check": {"enabled": False},
    }


def _own_retained_only(broker_class: type[Any]) -> type[Any]:
    """amqtt's Broker, but a connecting client gets only the retained messages of its own
    subscriptions.

    amqtt 0.12.1 (`Broker.client_connected`) sends a client that connects the retained messages
    matching *every* filter any session of the broker holds (its loop over `self._subscriptions`
    meant the connecting session's own, for a resumed session): with the pipeline subscribed to
    `<prefix>/<area>/truth`, which the emulator retains, every new subscriber of the demo's
    broker received the truth, whatever it had asked for. Here a retained message is sent for a
    filter only when the session holds that filter (a resumed session's filters, or the one it
    subscribes to now), at the QoS it subscribed with. `tests/unit/adapters/
    test_amqtt_retained.py` keeps a minimal reproduction on the bare amqtt broker."""

    class OwnRetainedBroker(broker_class):  # type: ignore[misc]
        async def _publish_retained_messages_for_subscription(
            self, subscription: tuple[str, int], session: Any
        ) -> None:
            topic_filter, qos = subscription
            held = [q for s, q in self._subscriptions.get(topic_filter, ()) if s is session]
            if not held:
                return  # someone else's filter: not this client's to receive
            await super()._publish_retained_messages_for_subscription(
                (topic_filter, max(qos, held[0])), session
            )

    return OwnRetainedBroker


class EmbeddedBroker:
    """An in-process MQTT 3.1.1 broker (amqtt) bound to loopback only."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        """With a username, the broker accepts only that user (anonymous access is refused)."""
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self._broker: Any = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None

    async def __aenter__(self) -> EmbeddedBroker:
        from amqtt.broker import Broker

        logging.getLogger("amqtt").setLevel(logging.WARNING)
        logging.getLogger("transitions").setLevel(logging.WARNING)
        password_file = None
        if self.username:
            from pwdlib.hashers.argon2 import Argon2Hasher

            self._folder = tempfile.TemporaryDirectory(prefix="dsotp-broker-")
            password_file = Path(self._folder.name) / "passwd"
            digest = Argon2Hasher().hash(self.password or "")
            password_file.write_text(f"{self.username}:{digest}\n", encoding="utf-8")
            password_file.chmod(0o600)
        with warnings.catch_warnings():
            # amqtt deprecates its section-style configuration, the one place a password
            # file can be given
            warnings.simplefilter("ignore", DeprecationWarning)
            broker_class = _own_retained_only(Broker)
            self._broker = broker_class(
                _broker_config(self.host, self.port, password_file=password_file)
            )
        try:
            await self._broker.start()
        except Exception as exc:
            raise TransportError(
                f"cannot start the embedded broker on {self.host}:{self.port}: {exc}"
            ) from exc
        log.info("embedded MQTT broker on %s:%d", self.host, self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._broker is not None:
            try:
                await asyncio.wait_for(self._broker.shutdown(), timeout=5.0)
            except (TimeoutError, Exception) as exc:  # shutting down: log, never mask the cause
                log.warning("embedded broker shutdown: %s", exc)
        if self._folder is not None:
            self._folder.cleanup()

    @property
    def endpoint(self) -> MqttEndpoint:
        """How clients reach this broker (with its credentials)."""
        return MqttEndpoint(self.host, self.port, self.username, self.password)


def _tls_params(tls: TlsConfig | None) -> aiomqtt.TLSParameters | None:
    if tls is None:
        return None
    return aiomqtt.TLSParameters(
        ca_certs=str(tls.ca_file) if tls.ca_file else None,
        certfile=str(tls.cert_file) if tls.cert_file else None,
        keyfile=str(tls.key_file) if tls.key_file else None,
    )


PENDING_WARN_CALLS = 1000  # publishes awaiting their acknowledgement before aiomqtt warns


@asynccontextmanager
async def connect(
    endpoint: MqttEndpoint,
    *,
    client_id: str,
    clean_session: bool = True,
    keepalive_s: int = 30,
    max_queued_outgoing: int | None = 10_000,
    timeout_s: float = 3.0,
    manual_ack: bool = False,
) -> AsyncIterator[aiomqtt.Client]:
    """An aiomqtt client, MQTT 3.1.1; connection failures become TransportError.

    With `manual_ack`, QoS 1 messages are acknowledged only by `ack(client, message)`, so that a
    broker redelivers what was received but not yet passed on."""
    client = aiomqtt.Client(
        hostname=endpoint.host,
        port=endpoint.port,
        username=endpoint.username,
        password=endpoint.password,
        tls_params=_tls_params(endpoint.tls),
        identifier=client_id,
        clean_session=clean_session,
        keepalive=keepalive_s,
        protocol=aiomqtt.ProtocolVersion.V311,
        max_queued_outgoing_messages=max_queued_outgoing,
        timeout=timeout_s,
        # paho leaves Nagle's algorithm on: small frames then wait for the broker's delayed ACK
        # (measured: a 10 frames/s fleet's frames arrived 48 ms late, at 50 frames/s 108 ms)
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )
    # aiomqtt warns at every publish while more than 10 await their acknowledgement: a fleet
    # publishes one QoS 1 frame per PMU at each instant, so that is the normal state (a demo
    # printed ten warnings a second); warn only when the broker falls far behind
    client.pending_calls_threshold = PENDING_WARN_CALLS
    if manual_ack:  # aiomqtt has no switch for it; its paho client has
        client._client.manual_ack_set(True)
    try:
        async with client:
            yield client
    except aiomqtt.MqttError as exc:
        raise TransportError(f"MQTT {endpoint}: {exc}") from exc


def raise_if_cancelled() -> None:
    """Raise the current task's cancellation again if an await swallowed it.

    aiomqtt waits for a publish's acknowledgement with `asyncio.wait_for`, which on Python 3.11
    returns the result instead of raising when the cancellation comes in the same loop turn as
    the acknowledgement (3.12 rewrote it): the task's `cancelling()` count stays up, but it runs
    on. A loop that ends by being cancelled calls this after each publish. Found: a pipeline
    whose status and dead-letter loops went on after their cancel, so its stop never returned
    (likely on a loop slowed by a busy estimator thread, where many callbacks share a turn)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def ack(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Acknowledge a QoS 1/2 message received with `manual_ack`."""
    if message.qos > 0:
        client._client.ack(message.mid, message.qos)


async def wait_for_port(host: str, port: int, *, timeout_s: float) -> None:
    """Wait until a TCP port accepts connections."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            _reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            if loop.time() > deadline:
                raise TransportError(f"nothing listens on {host}:{port}") from None
            await asyncio.sleep(0.05)
        else:
            writer.close()
            await writer.wait_closed()
            return


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) != 0
