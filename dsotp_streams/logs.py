"""Logging of the command-line tools: one rich handler at the level of the settings."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

__all__ = ["configure_logging"]

# aiomqtt sets the MQTT client library's logger ("mqtt") to WARNING when it is imported
MQTT_LIBRARY_LOGGER = "mqtt"


def configure_logging(level: str, console: Console) -> None:
    """Log to `console` at `level`; at DEBUG the MQTT client's packet log as well."""
    logging.basicConfig(
        level=level.upper(),
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    if level.upper() == "DEBUG":
        logging.getLogger(MQTT_LIBRARY_LOGGER).setLevel(logging.DEBUG)
