"""The settings reference (docs/settings.md) matches the code and explains every setting;
`dsotp settings` shows what the environment gives a process, secrets masked."""

from __future__ import annotations

import os
import subprocess
import sys

from pydantic import SecretStr

from dsotp_streams.settings import (
    MqttSettings,
    Settings,
    settings_environment,
    settings_reference,
)
from tests.conftest import REPO


def test_the_committed_reference_matches_the_code() -> None:
    committed = (REPO / "docs" / "settings.md").read_text(encoding="utf-8")
    assert committed == settings_reference() + "\n", (
        "run: dsotp settings --reference > docs/settings.md"
    )


def test_every_setting_has_a_meaning() -> None:
    rows = [line for line in settings_reference().splitlines() if line.startswith("| `DSOTP_")]
    assert len(rows) > 70
    unexplained = [row.split("|")[1] for row in rows if row.rstrip().endswith("|  |")]
    assert not unexplained, unexplained


def test_the_environment_listing_masks_secrets_and_names_every_setting() -> None:
    settings = Settings(mqtt=MqttSettings(username="ops", password=SecretStr("pw-9d2f")))
    lines = settings_environment(settings)
    assert "DSOTP_MQTT__USERNAME=ops" in lines
    assert "DSOTP_MQTT__PASSWORD=**********" in lines
    assert not any("pw-9d2f" in line for line in lines)
    listed = {line.split("=", 1)[0] for line in lines}
    documented = {
        line.split("`")[1]
        for line in settings_reference().splitlines()
        if line.startswith("| `DSOTP_")
    }
    assert listed == documented


def test_the_cli_prints_what_the_environment_sets() -> None:
    env = {**os.environ, "DSOTP_KAFKA__PARTITIONS": "12", "DSOTP_API__TOKEN": "tok-5e1a"}
    out = subprocess.run(
        [sys.executable, "-m", "dsotp_streams", "settings"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DSOTP_KAFKA__PARTITIONS=12" in out.splitlines()
    assert "DSOTP_API__TOKEN=**********" in out.splitlines()
    assert "tok-5e1a" not in out
