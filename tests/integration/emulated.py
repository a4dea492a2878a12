"""The emulator, remembering what it produced: for tests that account for every frame."""

from __future__ import annotations

import asyncio
import json

from dsotp_streams.runtime.embedded import Emulator


class Produced(Emulator):
    """The emulator, remembering every frame it produced (device, timestamp text)."""

    produced: set[tuple[str, str]]

    async def _produce(self, stop: asyncio.Event) -> None:
        self.produced = set()
        fleet_step = self.fleet.step

        def step(ts):  # type: ignore[no-untyped-def]
            instant = fleet_step(ts)
            for frame in instant.frames:
                stamp = json.loads(frame.model_dump_json())["timestamp"]
                self.produced.add((frame.device, stamp))
            return instant

        self.fleet.step = step  # type: ignore[method-assign]
        await super()._produce(stop)
