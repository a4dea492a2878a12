"""A cancellation that `asyncio.wait_for` swallows (Python 3.11, the way aiomqtt waits for a
publish's acknowledgement) is raised again by `raise_if_cancelled`, so a loop that ends by
being cancelled ends."""

from __future__ import annotations

import asyncio
import sys

import pytest

from dsotp_streams.adapters.mqtt import raise_if_cancelled


async def _acknowledged(ack: asyncio.Event) -> None:
    await asyncio.wait_for(ack.wait(), timeout=10)  # as aiomqtt's publish does


async def _cancel_as_acknowledged(*, guarded: bool) -> tuple[bool, int]:
    """A loop of publishes, cancelled in the loop turn its acknowledgement comes in: (did the
    loop end, how many publishes it made)."""
    publishes = 0
    acks: list[asyncio.Event] = []

    async def loop() -> None:
        nonlocal publishes
        while publishes < 50:
            ack = asyncio.Event()
            acks.append(ack)
            await _acknowledged(ack)
            publishes += 1
            if guarded:
                raise_if_cancelled()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)  # the loop waits for its first acknowledgement
    acks[0].set()
    task.cancel()  # same turn: the inner wait is done when the cancel reaches wait_for
    for _ in range(200):
        await asyncio.sleep(0)
        for ack in acks:
            ack.set()
    ended_by_cancel = task.done() and task.cancelled()
    if not task.done():
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return ended_by_cancel, publishes


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12 rewrote wait_for: no swallowing")
def test_wait_for_swallows_a_cancel_that_comes_with_the_result_on_3_11() -> None:
    ended, publishes = asyncio.run(_cancel_as_acknowledged(guarded=False))
    assert not ended  # the loop went on after its cancel...
    assert publishes > 1  # ...publishing again


def test_raise_if_cancelled_ends_the_loop_at_its_cancel() -> None:
    ended, publishes = asyncio.run(_cancel_as_acknowledged(guarded=True))
    assert ended
    assert publishes == 1


def test_raise_if_cancelled_does_nothing_without_a_cancel() -> None:
    async def go() -> str:
        raise_if_cancelled()
        return "ran on"

    assert asyncio.run(go()) == "ran on"
