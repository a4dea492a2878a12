"""No secret in logs or the repository: a run with every credential set, logging at DEBUG
(ours and the libraries'), never writes a password or token; tracked files hold no keys."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import subprocess

import pytest
from pydantic import SecretStr
from rich.console import Console

from dsotp_streams.adapters.mqtt import EmbeddedBroker
from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.core.grid import GridModel
from dsotp_streams.logs import configure_logging
from dsotp_streams.runtime.embedded import AreaPipeline, Emulator
from dsotp_streams.settings import ApiSettings, KafkaSettings, MqttSettings, Settings
from tests.conftest import REPO
from tests.integration.conftest import free_port

pytestmark = pytest.mark.broker

MQTT_PASSWORD = "mqtt-pw-7f3a9c"
API_TOKEN = "api-token-51d0be"
KAFKA_PASSWORD = "kafka-pw-c28e4d"


def test_a_run_with_credentials_logs_no_secret(
    spec: AgentSpec, grid: GridModel, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    settings = Settings(
        mqtt=MqttSettings(
            port=port,
            username="dsotp",
            password=SecretStr(MQTT_PASSWORD),
            client_id_prefix=f"sec{port}",
        ),
        api=ApiSettings(token=SecretStr(API_TOKEN)),
        kafka=KafkaSettings(
            security_protocol="SASL_PLAINTEXT",
            sasl_username="dsotp",
            sasl_password=SecretStr(KAFKA_PASSWORD),
        ),
    )

    async def go() -> int:
        async with EmbeddedBroker(port=port, username="dsotp", password=MQTT_PASSWORD) as broker:
            endpoint = broker.endpoint
            logging.getLogger(__name__).info("settings: %r; endpoint: %s", settings, endpoint)
            pipeline = AreaPipeline(spec=spec, grid=grid, settings=settings, endpoint=endpoint)
            emulator = Emulator(spec=spec, grid=grid, settings=settings, endpoint=endpoint)
            stop_pipeline, stop_emulator = asyncio.Event(), asyncio.Event()
            running = asyncio.create_task(pipeline.run(stop_pipeline))
            await asyncio.wait_for(pipeline.ready.wait(), 30)
            emulating = asyncio.create_task(emulator.run(stop_emulator))
            await asyncio.sleep(2.0)
            stop_emulator.set()
            await emulating
            stop_pipeline.set()
            await running
            return pipeline.stats.estimates_ok

    library = logging.getLogger("mqtt")
    previous = library.level
    configure_logging("DEBUG", Console(file=io.StringIO()))  # as `DSOTP_LOG_LEVEL=DEBUG` does
    try:
        with caplog.at_level(logging.DEBUG):
            estimated = asyncio.run(go())
    finally:
        library.setLevel(previous)
    assert estimated > 5  # the run did connect with the credentials and work
    # the MQTT client library's packet log and ours were captured, besides the settings
    assert {"mqtt", "dsotp_streams.adapters.mqtt"} <= {r.name for r in caplog.records}
    assert any(r.getMessage().startswith("Sending CONNECT") for r in caplog.records)
    text = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records
    )
    for secret in (MQTT_PASSWORD, API_TOKEN, KAFKA_PASSWORD):
        assert secret not in text, f"a log record carries {secret!r}"
    for secret in (MQTT_PASSWORD, API_TOKEN, KAFKA_PASSWORD):
        assert secret not in repr(settings) and secret not in settings.model_dump_json()


KEY_PATTERNS = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"AKIA[0-9A-Z]{16}"),  # cloud access key ids
    re.compile(r"(?i)(password|token|secret)\s*[:=]\s*['\"][^'\"\s{}$<]{6,}['\"]"),
]


def test_the_repository_holds_no_keys_or_literal_passwords() -> None:
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    findings = []
    for name in files:
        path = REPO / name
        if path.is_symlink() or not path.is_file() or name.startswith("tests/"):
            continue  # tests use throwaway credentials on purpose
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        findings += [f"{name}: {m.group(0)[:40]}" for p in KEY_PATTERNS for m in p.finditer(text)]
    assert not findings, findings
    assert len(files) > 100
