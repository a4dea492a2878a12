"""One frozen settings object, built once at start-up (DSOTP_ prefix, nested with __)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "ApiSettings",
    "BridgeSettings",
    "InfluxSettings",
    "KafkaSettings",
    "LiveSettings",
    "MqttSettings",
    "RuntimeSettings",
    "Settings",
    "StoreSettings",
    "default_data_dir",
    "settings_environment",
    "settings_reference",
]


def default_data_dir() -> Path:
    """The shared reference data beside the checkout (`../shared/datasets`)."""
    return Path(__file__).resolve().parents[2] / "shared" / "datasets"


class MqttSettings(BaseModel):
    """How to reach the MQTT databus; with no `url`, `dsotp demo` starts an embedded broker."""

    model_config = ConfigDict(frozen=True)

    url: str | None = Field(
        default=None, description="mqtt://user:pass@host:port of an external broker"
    )
    host: str = Field(default="127.0.0.1", description="broker host (without `url`)")
    port: int = Field(default=1883, ge=1, le=65535, description="broker port (without `url`)")
    username: str | None = Field(default=None, description="MQTT user of every client of ours")
    password: SecretStr | None = Field(default=None, description="its password (never logged)")
    topic_prefix: str = Field(default="dsotp", description="topics are `<prefix>/<area>/...`")
    qos: int = Field(default=1, ge=0, le=2, description="of subscriptions and publications")
    client_id_prefix: str = Field(
        default="dsotp", description="client ids are `<prefix>-<role>`: unique per deployment"
    )
    keepalive_s: int = Field(default=30, ge=5, description="MQTT keep-alive")
    reconnect_backoff_max_s: float = Field(
        default=10.0, gt=0, description="longest wait between reconnection attempts"
    )
    max_payload_bytes: int = Field(
        default=256_000, gt=0, description="larger messages are dead-lettered unread"
    )
    tls: bool = Field(default=False, description="TLS with the system's CAs (mqtts:// does too)")
    tls_ca_file: Path | None = Field(default=None, description="CA certificate(s) to trust")
    tls_cert_file: Path | None = Field(default=None, description="client certificate (optional)")
    tls_key_file: Path | None = Field(default=None, description="client key (optional)")


class RuntimeSettings(BaseModel):
    """Bounds of the embedded runtime."""

    model_config = ConfigDict(frozen=True)

    window_queue_size: int = Field(
        default=64,
        ge=1,
        description="closed windows waiting for the estimator; when full the oldest is "
        "published as skipped",
    )
    status_interval_s: float = Field(
        default=1.0, gt=0, description="how often `<prefix>/<area>/status` is published"
    )
    truth_history: int = Field(
        default=2048, ge=1, description="emulated true states kept to score the estimates"
    )
    event_time: bool = Field(
        default=False,
        description="close windows by the frames' own time (replays) instead of the wall clock",
    )
    max_window_age_s: float = Field(
        default=2.0,
        ge=0,
        description="a window that started longer ago than this (by the alignment clock) when "
        "its turn comes is published as skipped, not estimated, so no estimate is later than "
        "this plus one estimate; 0 estimates every window",
    )
    stop_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="at stop, how long queued windows (pipeline) or unsent frames (emulator) "
        "are still worked on; queued windows left then are published as skipped",
    )


class InfluxSettings(BaseModel):
    """An InfluxDB to write to (off when `url` is empty): v1 `/write` or v2 `/api/v2/write`."""

    model_config = ConfigDict(frozen=True)

    url: str | None = Field(default=None, description="http://host:8086")
    api: Literal["v1", "v2"] = Field(default="v1", description="InfluxDB 1.x or 2.x write API")
    database: str = Field(default="dsotp", description="v1 database (v2 with DBRP mapping)")
    bucket: str = Field(default="dsotp", description="v2 bucket")
    org: str = Field(default="dsotp", description="v2 organisation")
    token: SecretStr | None = Field(default=None, description="v2 API token")
    username: str | None = Field(default=None, description="v1 user")
    password: SecretStr | None = Field(default=None, description="v1 password")
    batch_size: int = Field(default=5000, ge=1, description="rows per write request")
    flush_interval_s: float = Field(default=1.0, gt=0, description="longest wait before a write")
    max_buffer_rows: int = Field(default=200_000, ge=1, description="then spill to disk")
    spill_dir: Path = Field(
        default=Path(".dsotp/spill"), description="rows kept on disk while InfluxDB is away"
    )
    retry_max_s: float = Field(default=10.0, gt=0, description="longest wait between retries")
    timeout_s: float = Field(default=10.0, gt=0, description="of one write request")
    store_frames: bool = Field(default=True, description="also write every raw PMU reading")


class StoreSettings(BaseModel):
    """The embedded DuckDB store (the default when no InfluxDB is configured)."""

    model_config = ConfigDict(frozen=True)

    enabled: bool | None = Field(default=None, description="None: on when no InfluxDB is set")
    path: Path = Field(default=Path(".dsotp/dsotp.duckdb"), description='or ":memory:"')
    memory_limit: str | None = Field(
        default="64MB", description="DuckDB's page cache of a file store (None: DuckDB's 80 %)"
    )
    batch_size: int = Field(default=20_000, ge=1, description="rows per append")
    flush_interval_s: float = Field(default=1.0, gt=0, description="longest wait before an append")
    store_frames: bool = Field(default=True, description="also store every raw PMU reading")


class LiveSettings(BaseModel):
    """The built-in live page."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = Field(default=True, description="serve the live page in `dsotp demo`/`run`")
    host: str = Field(default="127.0.0.1", description="address it listens on")
    port: int = Field(default=8050, ge=0, le=65535, description="its port (0: any free one)")
    history_s: float = Field(default=300.0, gt=0, description="how far back the charts reach")


class KafkaSettings(BaseModel):
    """The scale-out runtime: a Kafka cluster, its topics and the faust workers' group."""

    model_config = ConfigDict(frozen=True)

    url: str = Field(
        default="kafka://127.0.0.1:9092", description="kafka://host:port[;host:port...]"
    )
    topic_prefix: str = Field(default="dsotp", description="topics are `<prefix>.<name>`")
    partitions: int = Field(default=8, ge=1, description="of every topic (areas hash onto them)")
    replication: int = Field(default=1, ge=1, description="replication factor of the topics")
    group: str = Field(default="dsotp-workers", description="the workers' consumer group/app id")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="how clients reach the brokers"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="PLAIN", description="with SASL_*"
    )
    sasl_username: str | None = Field(default=None, description="with SASL_*")
    sasl_password: SecretStr | None = Field(default=None, description="with SASL_* (never logged)")
    ssl_ca_file: Path | None = Field(default=None, description="CA to trust, with SSL/SASL_SSL")
    ssl_cert_file: Path | None = Field(default=None, description="client certificate (optional)")
    ssl_key_file: Path | None = Field(default=None, description="client key (optional)")
    session_timeout_s: float = Field(
        default=6.0, gt=0, description="a dead worker's areas move after this long"
    )
    heartbeat_interval_s: float = Field(
        default=1.0, gt=0, description="consumer group heartbeats (below the session timeout)"
    )
    data_dir: Path = Field(default=Path(".dsotp/faust"), description="the workers' table data")
    emitted_table: bool = Field(
        default=False,
        description="keep the newest published window per area in a faust table, so that a "
        "worker taking over skips windows already published (Apache Kafka; on tansu its "
        "changelog recovery can hang the worker); without it the bridge drops the repeats",
    )
    web_port: int | None = Field(
        default=None, ge=1, le=65535, description="faust's web server on 127.0.0.1 (off: None)"
    )
    max_window_age_s: float = Field(
        default=30.0,
        ge=0,
        description="a window that started longer ago than this (wall clock) when its turn "
        "comes is published as skipped, not estimated: a worker that fell behind catches up "
        "instead of estimating the past; 0 estimates every window (recorded streams)",
    )
    fetch_max_wait_ms: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="how long a consumer's fetch may wait for data: Apache Kafka answers as soon "
        "as data arrives, tansu only when the wait is over, so short keeps latency low; a broker "
        "on slow storage (tansu on S3) needs several hundred ms to answer at all",
    )


class BridgeSettings(BaseModel):
    """MQTT <-> Kafka bridge: how frames are batched on their way in."""

    model_config = ConfigDict(frozen=True)

    batch_ms: float = Field(default=10.0, gt=0, description="longest wait before a batch is sent")
    batch_max_frames: int = Field(default=200, ge=1, description="frames per Kafka record")
    max_unacked: int = Field(
        default=500,
        ge=1,
        description="frames held before their MQTT ack (broker in-flight windows bound this)",
    )
    kafka_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="a frame batch Kafka has not acknowledged by then is sent again (its frames "
        "stay unacknowledged on MQTT meanwhile)",
    )


class ApiSettings(BaseModel):
    """The REST API (`dsotp api`; mounted without a token by `dsotp demo`)."""

    model_config = ConfigDict(frozen=True)

    host: str = Field(default="127.0.0.1", description="address `dsotp api` listens on")
    port: int = Field(default=8080, ge=1, le=65535, description="its port")
    token: SecretStr | None = Field(
        default=None, description="bearer token every /v1 request must carry"
    )
    store_path: Path | None = Field(
        default=None, description="DuckDB file to read (default: the store's path), read-only"
    )
    max_page: int = Field(default=1000, ge=1, description="largest `limit` of a page")


class Settings(BaseSettings):
    """All settings of a dsotp process: environment `DSOTP_...`, nested `DSOTP_MQTT__PORT`."""

    model_config = SettingsConfigDict(
        env_prefix="DSOTP_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    mqtt: MqttSettings = MqttSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    influx: InfluxSettings = InfluxSettings()
    store: StoreSettings = StoreSettings()
    live: LiveSettings = LiveSettings()
    kafka: KafkaSettings = KafkaSettings()
    api: ApiSettings = ApiSettings()
    bridge: BridgeSettings = BridgeSettings()
    agents_dir: Path = Field(
        default=Path("agents"), description="the agent specs a scale-out worker serves"
    )
    heartbeat_file: Path | None = Field(
        default=None, description="bridge and worker touch it every 2 s (liveness probes)"
    )
    agent_file: Path = Field(
        default=Path("agents/cigre-mv.yaml"), description="the agent spec of `dsotp demo`/`run`"
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="the shared reference data (default `../shared/datasets` beside the checkout)",
    )
    cache_dir: Path | None = Field(
        default=Path(".dsotp/cache"),
        description="what is slow to build and never changes (SimBench profiles), kept once "
        "built; None: build every time",
    )
    log_level: str = Field(default="WARNING", description="DEBUG, INFO, WARNING or ERROR")


def _type_name(annotation: object) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return text or re.sub(r"\b(?:[a-z_]+\.)+(\w+)", r"\1", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "computed"
    value = field.default
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, str):
        return f"`{value!r}`"
    return f"`{value}`"


def settings_reference() -> str:
    """Every setting as Markdown: variable, type, default, meaning (docs/settings.md)."""
    lines = [
        "# Settings",
        "",
        "Generated by `dsotp settings --reference`; a test keeps it equal to the code.",
        "Every process builds one frozen `Settings` at start-up from the environment",
        "(prefix `DSOTP_`, nested with `__`); `dsotp settings` prints what a process would see,",
        "passwords hidden.",
        "",
    ]
    sections: list[tuple[str, str, type[BaseModel]]] = [("", "", Settings)]
    for name, field in Settings.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            sections.append((name, f"{name.upper()}__", field.annotation))
    for name, prefix, model in sections:
        title = f"`{name}`: {(model.__doc__ or '').strip()}" if name else "Top level"
        lines += [f"## {title}", "", "| variable | type | default | meaning |", "|---|---|---|---|"]
        for key, field in model.model_fields.items():
            nested = isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
            if nested:
                continue
            meaning = (field.description or "").replace("|", "\\|")
            kind = _type_name(field.annotation).replace("|", "\\|")
            lines.append(
                f"| `DSOTP_{prefix}{key.upper()}` | {kind} | {_default(field)} | {meaning} |"
            )
        lines.append("")
    return "\n".join(lines)


def settings_environment(settings: Settings) -> list[str]:
    """`DSOTP_...=value` for every setting of `settings`, passwords and tokens masked."""
    lines: list[str] = []

    def walk(prefix: str, values: dict[str, object]) -> None:
        for key, value in values.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key.upper()}__", value)
            else:
                lines.append(f"{prefix}{key.upper()}={'' if value is None else value}")

    walk("DSOTP_", settings.model_dump(mode="json"))
    return lines
