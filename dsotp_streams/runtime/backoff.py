"""Exponential back-off between retries, shared by every reconnecting or retrying loop."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Backoff"]


class Backoff:
    """Waits of `first_s`, doubling up to `max_s`; back to `first_s` after a success."""

    def __init__(self, max_s: float, *, first_s: float = 0.2) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.delay_s = first_s  # the next wait

    def reset(self) -> None:
        """After a success: the next failure waits `first_s` again."""
        self.delay_s = self.first_s

    async def sleep(self, stop: asyncio.Event | None = None) -> None:
        """Wait `delay_s` (less once `stop` is set); the wait after it is twice as long."""
        if stop is None:
            await asyncio.sleep(self.delay_s)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.delay_s)
        self.delay_s = min(self.delay_s * 2, self.max_s)
