"""One frozen settings object, built once at start-up (DSOTP_ prefix, nested with __)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
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
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    topic_prefix: str = "dsotp"
    qos: int = Field(default=1, ge=0, le=2)
    client_id_prefix: str = "dsotp"
    keepalive_s: int = Field(default=30, ge=5)
    reconnect_backoff_max_s: float = Field(default=10.0, gt=0)
    max_payload_bytes: int = Field(default=256_000, gt=0)
    tls: bool = Field(default=False, description="TLS with the system's CAs (mqtts:// does too)")
    tls_ca_file: Path | None = Field(default=None, description="CA certificate(s) to trust")
    tls_cert_file: Path | None = Field(default=None, description="client certificate (optional)")
    tls_key_file: Path | None = Field(default=None, description="client key (optional)")


class RuntimeSettings(BaseModel):
    """Bounds of the embedded runtime."""

    model_config = ConfigDict(frozen=True)

    window_queue_size: int = Field(default=64, ge=1)
    status_interval_s: float = Field(default=1.0, gt=0)
    truth_history: int = Field(default=2048, ge=1)
    event_time: bool = Field(
        default=False,
        description="close windows by the frames' own time (replays) instead of the wall clock",
    )


class InfluxSettings(BaseModel):
    """An InfluxDB to write to (off when `url` is empty): v1 `/write` or v2 `/api/v2/write`."""

    model_config = ConfigDict(frozen=True)

    url: str | None = Field(default=None, description="http://host:8086")
    api: Literal["v1", "v2"] = "v1"
    database: str = Field(default="dsotp", description="v1 database (v2 with DBRP mapping)")
    bucket: str = Field(default="dsotp", description="v2 bucket")
    org: str = "dsotp"
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    batch_size: int = Field(default=5000, ge=1)
    flush_interval_s: float = Field(default=1.0, gt=0)
    max_buffer_rows: int = Field(default=200_000, ge=1, description="then spill to disk")
    spill_dir: Path = Path(".dsotp/spill")
    retry_max_s: float = Field(default=10.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)
    store_frames: bool = Field(default=True, description="also write every raw PMU reading")


class StoreSettings(BaseModel):
    """The embedded DuckDB store (the default when no InfluxDB is configured)."""

    model_config = ConfigDict(frozen=True)

    enabled: bool | None = Field(default=None, description="None: on when no InfluxDB is set")
    path: Path = Field(default=Path(".dsotp/dsotp.duckdb"), description='or ":memory:"')
    memory_limit: str | None = Field(
        default="64MB", description="DuckDB's page cache of a file store (None: DuckDB's 80 %)"
    )
    batch_size: int = Field(default=20_000, ge=1)
    flush_interval_s: float = Field(default=1.0, gt=0)
    store_frames: bool = True


class LiveSettings(BaseModel):
    """The built-in live page."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8050, ge=0, le=65535)
    history_s: float = Field(default=300.0, gt=0, description="how far back the charts reach")


class KafkaSettings(BaseModel):
    """The scale-out runtime: a Kafka cluster, its topics and the faust workers' group."""

    model_config = ConfigDict(frozen=True)

    url: str = Field(
        default="kafka://127.0.0.1:9092", description="kafka://host:port[;host:port...]"
    )
    topic_prefix: str = Field(default="dsotp", description="topics are `<prefix>.<name>`")
    partitions: int = Field(default=8, ge=1, description="of every topic (areas hash onto them)")
    replication: int = Field(default=1, ge=1)
    group: str = Field(default="dsotp-workers", description="the workers' consumer group/app id")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_file: Path | None = None
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None
    session_timeout_s: float = Field(
        default=6.0, gt=0, description="a dead worker's areas move after this long"
    )
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
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

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
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
    agent_file: Path = Path("agents/cigre-mv.yaml")
    data_dir: Path = Field(default_factory=default_data_dir)
    log_level: str = "WARNING"
