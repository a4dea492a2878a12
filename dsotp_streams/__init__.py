"""dsotp-streams: an event-driven DSO technical platform for PMU streams."""

import logging
from typing import Any

__all__ = ["__version__", "replay"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`dsotp_streams.replay(...)`: state estimates of a recording, no broker (lazy import)."""
    if name == "replay":
        from dsotp_streams.runtime.replay import replay

        return replay
    raise AttributeError(name)


logging.getLogger(__name__).addHandler(logging.NullHandler())
