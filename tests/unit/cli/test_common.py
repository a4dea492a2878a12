"""The one way every command builds its settings: the environment, then the flags it was given."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsotp_streams.adapters.mqtt import endpoint_from_settings
from dsotp_streams.cli.common import settings_from_flags


def test_flags_given_override_the_environment_and_the_rest_stays(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DSOTP_MQTT__TOPIC_PREFIX", "site/dsotp")
    monkeypatch.setenv("DSOTP_LIVE__PORT", "9000")
    settings = settings_from_flags(
        mqtt_url="mqtt://user:secret@broker.example:1999",
        store=tmp_path / "x.duckdb",
        event_time=True,
        no_live=True,
    )
    endpoint = endpoint_from_settings(settings.mqtt)  # the URL wins over host and port
    assert (endpoint.host, endpoint.port, endpoint.username) == ("broker.example", 1999, "user")
    assert settings.mqtt.topic_prefix == "site/dsotp"  # from the environment, untouched
    assert settings.store.path == tmp_path / "x.duckdb"
    assert settings.runtime.event_time and not settings.live.enabled
    assert settings.live.port == 9000


def test_no_flag_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSOTP_KAFKA__URL", "kafka://k1:9092")
    settings = settings_from_flags()
    assert settings.kafka.url == "kafka://k1:9092" and settings.live.enabled
    assert settings_from_flags(kafka_url="kafka://k2:9093").kafka.url == "kafka://k2:9093"
