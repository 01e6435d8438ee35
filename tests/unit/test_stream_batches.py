"""hydra.stream_batches: what goes in one stream message, and which version a stream speaks."""

from __future__ import annotations

import asyncio

import pytest

from hydra import stream_batches
from hydra.stream_batches import Gatherer, negotiate


def _queue(*items: bytes | None) -> asyncio.Queue[bytes | None]:
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    return queue


async def _all(gatherer: Gatherer[bytes], *, batching: bool = True) -> list[list[bytes]]:
    taken = []
    while (items := await gatherer.next(batching=batching)) is not None:
        taken.append(items)
    return taken


async def test_everything_queued_goes_in_one_batch_in_order() -> None:
    gatherer = Gatherer(_queue(b"a", b"b", b"c", None), len)
    assert await _all(gatherer) == [[b"a", b"b", b"c"]]
    assert (gatherer.items, gatherer.batches) == (3, 1)


async def test_without_batching_each_item_goes_alone() -> None:
    assert await _all(Gatherer(_queue(b"a", b"b", None), len), batching=False) == [[b"a"], [b"b"]]


async def test_a_batch_is_bounded_by_items_and_bytes_and_the_next_item_waits() -> None:
    items = Gatherer(_queue(*[b"x"] * 5, None), len, max_items=2)
    assert await _all(items) == [[b"x", b"x"], [b"x", b"x"], [b"x"]]
    sizes = Gatherer(_queue(b"aaa", b"bb", b"cccc", b"d", None), len, max_bytes=5)
    assert await _all(sizes) == [[b"aaa", b"bb"], [b"cccc", b"d"]]


async def test_an_item_bigger_than_the_bound_goes_alone() -> None:
    gatherer = Gatherer(_queue(b"a", b"x" * 10, b"b", None), len, max_bytes=4)
    assert await _all(gatherer) == [[b"a"], [b"x" * 10], [b"b"]]


async def test_an_idle_side_sends_the_first_item_at_once() -> None:
    queue = _queue()
    gatherer = Gatherer(queue, len)
    waiting = asyncio.ensure_future(gatherer.next(batching=True))
    await asyncio.sleep(0)
    assert not waiting.done()
    queue.put_nowait(b"now")
    assert await asyncio.wait_for(waiting, 1) == [b"now"]


async def test_what_was_queued_before_the_end_still_goes() -> None:
    gatherer = Gatherer(_queue(b"a", None, b"after the end"), len, max_items=1)
    assert await _all(gatherer) == [[b"a"]]
    assert await gatherer.next(batching=True) is None


@pytest.mark.parametrize(
    ("agent", "coordinator", "speaks"),
    [
        ((0, 0), (1, 2), 1),  # an agent older than versioning
        ((1, 2), (1, 1), 1),  # a coordinator older than batches
        ((1, 2), (1, 2), 2),
        ((1, 7), (1, 2), 2),  # a newer agent that still speaks 2
    ],
)
def test_a_stream_speaks_the_lower_newest_version(
    agent: tuple[int, int], coordinator: tuple[int, int], speaks: int
) -> None:
    assert negotiate(agent, coordinator) == speaks


def test_no_common_version_says_both_and_which_to_upgrade() -> None:
    assert negotiate((3, 4), (1, 2)) == (
        "the agent speaks agent protocol 3 to 4, the coordinator 1 to 2: upgrade the coordinator"
    )
    assert negotiate((1, 1), (2, 3)) == (
        "the agent speaks agent protocol 1, the coordinator 2 to 3: upgrade the agent"
    )


def test_unset_means_one() -> None:
    assert stream_batches.spoken(0) == stream_batches.SINGLE == 1
