"""Versions of the agent protocol, and the batches of version 2.

Both ends of ``AgentService.Connect`` queue what they have to say; from
version 2 on, the writer takes everything queued at the moment it is ready to
write — all that arrived within the same turn of the event loop, and whatever
came while the previous write was in flight — and sends it as one stream
message (``AgentMessage.batch``, ``CoordinatorMessage.batch``), within the
bounds below. An idle side still sends at once: a lone item goes as it is,
without a batch around it. Acknowledgements stay per item (the proto's
``AgentBatch`` says how a client handles partial ones). See
docs/architecture.md, "The agent stream".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

#: One item per stream message (software older than versioning says 0: the same).
SINGLE = 1
#: Batches either way.
BATCHES = 2
#: The newest version this software speaks.
NEWEST = BATCHES
#: The oldest version this software accepts.
OLDEST = SINGLE

#: Most items in one batch.
MAX_ITEMS = 256
#: Most bytes of items in one batch (the message limit is 4 MiB): an item bigger
#: than this goes alone.
MAX_BYTES = 1024 * 1024

Item = TypeVar("Item")


def spoken(declared: int) -> int:
    """The version a Hello or Welcome field means (0, unset, is 1)."""
    return declared or SINGLE


def negotiate(agent: tuple[int, int], coordinator: tuple[int, int]) -> int | str:
    """The version a stream speaks, from each side's (oldest, newest) as declared (0 is
    1): the lower newest, if both accept it; else why not, for people."""
    agent_oldest, agent_newest = spoken(agent[0]), spoken(agent[1])
    own_oldest, own_newest = spoken(coordinator[0]), spoken(coordinator[1])
    chosen = min(agent_newest, own_newest)
    if chosen >= max(agent_oldest, own_oldest):
        return chosen
    older = "coordinator" if own_newest < agent_newest else "agent"
    return (
        f"the agent speaks agent protocol {_range(agent_oldest, agent_newest)}, the "
        f"coordinator {_range(own_oldest, own_newest)}: upgrade the {older}"
    )


def _range(oldest: int, newest: int) -> str:
    return str(newest) if oldest == newest else f"{oldest} to {newest}"


class Gatherer(Generic[Item]):
    """Takes what a queue holds, in order, as the items of the next stream message.

    ``None`` in the queue ends it: what was queued before still goes.
    """

    def __init__(
        self,
        queue: asyncio.Queue[Item | None],
        size: Callable[[Item], int],
        *,
        max_items: int = MAX_ITEMS,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self._queue = queue
        self._size = size
        self._max_items = max_items
        self._max_bytes = max_bytes
        #: Taken from the queue but left for the next batch (it did not fit).
        self._carried: Item | None = None
        self._ended = False
        #: Items, and batches of more than one, gathered so far (for metrics and tests).
        self.items = 0
        self.batches = 0

    async def next(self, *, batching: bool) -> list[Item] | None:
        """The next items to send: at least one (only one unless `batching`), or None
        once the queue is ended and everything before its end was taken."""
        first = self._carried
        self._carried = None
        if first is None and (self._ended or (first := await self._queue.get()) is None):
            self._ended = True
            return None
        taken = [first]
        if batching:
            self._take_queued(taken)
        self.items += len(taken)
        self.batches += len(taken) > 1
        return taken

    def _take_queued(self, taken: list[Item]) -> None:
        queue = self._queue
        total = self._size(taken[0])
        while len(taken) < self._max_items and not queue.empty():
            item = queue.get_nowait()
            if item is None:
                self._ended = True
                return
            size = self._size(item)
            if total + size > self._max_bytes:
                self._carried = item
                return
            total += size
            taken.append(item)
