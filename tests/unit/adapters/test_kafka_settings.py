"""Kafka addresses and security options from the settings."""

from __future__ import annotations

import pytest

from dsotp_streams.adapters.kafka import bootstrap_servers, client_options
from dsotp_streams.errors import TransportError
from dsotp_streams.settings import KafkaSettings


def test_bootstrap_servers_accept_several_brokers() -> None:
    assert bootstrap_servers("kafka://a:9092;b:9093") == ["a:9092", "b:9093"]
    assert bootstrap_servers("a:9092,b:9093") == ["a:9092", "b:9093"]


@pytest.mark.parametrize("url", ["kafka://", "kafka://host", "kafka://host:port", ""])
def test_bad_urls_are_transport_errors(url: str) -> None:
    with pytest.raises(TransportError):
        bootstrap_servers(url)


def test_sasl_options_carry_the_password_but_plaintext_does_not() -> None:
    plain = client_options(KafkaSettings(url="kafka://k:9092"))
    assert plain == {"bootstrap_servers": ["k:9092"], "security_protocol": "PLAINTEXT"}
    sasl = client_options(
        KafkaSettings(
            url="kafka://k:9092",
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="dsotp",
            sasl_password="s3cret",  # type: ignore[arg-type]
        )
    )
    assert sasl["sasl_mechanism"] == "SCRAM-SHA-512"
    assert sasl["sasl_plain_username"] == "dsotp"
    assert sasl["sasl_plain_password"] == "s3cret"
    assert "s3cret" not in repr(KafkaSettings(sasl_password="s3cret"))  # type: ignore[arg-type]
