"""Back-off between retries: doubling up to a bound, reset by a success, cut short by stop."""

from __future__ import annotations

import asyncio
import time

from dsotp_streams.runtime.backoff import Backoff


def test_waits_double_up_to_the_bound_and_a_success_starts_over() -> None:
    backoff = Backoff(0.05, first_s=0.01)
    delays = []
    for _ in range(5):
        delays.append(backoff.delay_s)
        asyncio.run(backoff.sleep())
    assert delays == [0.01, 0.02, 0.04, 0.05, 0.05]
    backoff.reset()
    assert backoff.delay_s == 0.01


def test_a_stop_cuts_the_wait_short() -> None:
    backoff = Backoff(60.0, first_s=30.0)

    async def go() -> float:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        start = time.monotonic()
        await backoff.sleep(stop)
        return time.monotonic() - start

    assert asyncio.run(go()) < 5.0
    assert backoff.delay_s == 60.0
