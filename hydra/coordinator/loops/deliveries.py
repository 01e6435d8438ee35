"""Delivering the outbox: any coordinator POSTs pending notifications to their webhooks.

A notification is claimed with a lease (``SKIP LOCKED``), so coordinators share the
work and a dead one's notifications are taken over once its lease expires: an event
is delivered at least once, maybe twice with the same ``Hydra-Event-Id``, never lost.
Each try is a POST with a time limit in a thread of the deliveries' own; tries are
retried with backoff (tenacity) and counted in the row, up to ``max_tries``, then
the notification is failed with its last error. None of it runs on the dispatch
path: a slow or dead receiver holds a delivery thread, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import tenacity

from hydra.coordinator.loops.timing import wait_event
from hydra.coordinator.rendering import RenderingUnavailable, RenderPool
from hydra.coordinator.store import Database, outbox
from hydra.coordinator.store.records import Outgoing
from hydra.coordinator.templates import RenderError
from hydra.coordinator.webhooks import (
    BodyFailed,
    DeliveryConfig,
    DeliveryFailed,
    Request,
    Secrets,
    build_request,
    default_body,
    post,
    template_variables,
)
from hydra.domain import NotificationState

log = logging.getLogger("hydra.coordinator.deliveries")

#: Upper bound of the loop's sleep when nothing wakes it (leases expire, tries come due).
POLL_SECONDS = 1.0


class Deliveries:
    """Claims pending notifications and delivers them, a few at a time."""

    def __init__(
        self, database: Database, coordinator_id: str, config: DeliveryConfig, renderer: RenderPool
    ) -> None:
        """`database` should be the deliveries' own (a small pool): a flood of events
        cannot take the connections of dispatch or of the API."""
        self._db = database
        self._owner = coordinator_id
        self._config = config
        self._renderer = renderer
        self._secrets = Secrets(config.secrets_dir)
        self._threads = ThreadPoolExecutor(config.concurrency, thread_name_prefix="hydra-webhook")
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._renderer_started = False
        self.wake = asyncio.Event()

    def _lease(self, pause: timedelta = timedelta(0)) -> timedelta:
        """How long a claim holds a notification: its next try's time limit, the
        pause before it, and a margin; then another coordinator may take it over."""
        return pause + self._config.timeout + timedelta(seconds=1) + self._config.lease_margin

    async def step(self) -> None:
        """Claim what there is room for, start delivering it, then wait for news."""
        free = self._config.concurrency - len(self._in_flight)
        if free > 0:
            for outgoing in await self._db.run(outbox.claim, self._owner, self._lease(), free):
                self._start(outgoing)
        await wait_event(self.wake, POLL_SECONDS)

    def _start(self, outgoing: Outgoing) -> None:
        task = asyncio.create_task(self._deliver(outgoing), name=f"hydra-notify-{outgoing.id}")
        self._in_flight[outgoing.id] = task

        def done(_: asyncio.Task[None]) -> None:
            self._in_flight.pop(outgoing.id, None)
            self.wake.set()

        task.add_done_callback(done)

    async def _deliver(self, outgoing: Outgoing) -> None:
        try:
            body = await self._body(outgoing)
            tries = await self._tries(outgoing, body)
        except BodyFailed as error:
            await self._finish(outgoing, NotificationState.FAILED, outgoing.attempts, str(error))
        except _GaveUp as gave_up:
            await self._finish(outgoing, NotificationState.FAILED, gave_up.tries, gave_up.error)
        except asyncio.CancelledError:
            raise
        except Exception:  # the database, most likely: the lease expires, another takes it
            log.exception("notification %d: delivery interrupted", outgoing.id)
        else:
            await self._finish(outgoing, NotificationState.DELIVERED, tries)

    async def _body(self, outgoing: Outgoing) -> bytes:
        source = outgoing.webhook.body
        if not source:
            return default_body(outgoing.payload)
        variables = template_variables(outgoing.payload)
        if not self._renderer_started:  # its worker process only once a body needs it
            self._renderer_started = True
            await self._renderer.start()
        while True:
            try:
                return (await self._renderer.render_text(source, variables, "body")).encode()
            except RenderError as error:
                raise BodyFailed(f"the body cannot be rendered: {error}") from None
            except RenderingUnavailable as error:
                log.warning("notification %d: %s; trying again", outgoing.id, error)
                await asyncio.sleep(POLL_SECONDS)

    async def _tries(self, outgoing: Outgoing, body: bytes) -> int:
        """POST until it is delivered; returns the tries made in all. Each failed
        try is counted in the row, its lease extended over the backoff, before the next.

        Raises:
            _GaveUp: after the last try allowed.
        """
        tries = outgoing.attempts

        async def counted(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            pause = state.next_action.sleep if state.next_action else 0.0
            log.info("notification %d: try %d failed: %s", outgoing.id, tries, error)
            lease = self._lease(timedelta(seconds=pause))
            await self._db.run(outbox.record_try, outgoing, self._owner, tries, str(error), lease)

        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(max(1, self._config.max_tries - outgoing.attempts)),
            wait=tenacity.wait_exponential_jitter(
                multiplier=self._config.backoff.total_seconds(),
                max=self._config.max_backoff.total_seconds(),
                jitter=self._config.backoff.total_seconds(),
            ),
            retry=tenacity.retry_if_exception_type(DeliveryFailed),
            before_sleep=counted,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    tries += 1
                    await self._try(outgoing, body)
        except DeliveryFailed as error:
            raise _GaveUp(tries, str(error)) from None
        return tries

    async def _try(self, outgoing: Outgoing, body: bytes) -> None:
        """One POST (its secrets read now: a secret added meanwhile is used)."""
        webhook, event = outgoing.webhook, outgoing.event.value
        request = build_request(webhook, outgoing.event_id, event, body, self._secrets)
        await self._post(request)

    async def _post(self, request: Request) -> None:
        loop = asyncio.get_running_loop()
        limit = self._config.timeout.total_seconds()
        try:
            # The thread's socket has the time limit; this one covers a slow drip too.
            async with asyncio.timeout(limit + 1.0):
                await loop.run_in_executor(self._threads, post, request, self._config.timeout)
        except TimeoutError:
            raise DeliveryFailed(f"no answer within {limit:g}s") from None

    async def _finish(
        self, outgoing: Outgoing, state: NotificationState, tries: int, error: str = ""
    ) -> None:
        await self._db.run(outbox.finish, outgoing, state, tries, error)
        if state is NotificationState.FAILED:
            log.warning("notification %d failed after %d tries: %s", outgoing.id, tries, error)

    async def stop(self) -> None:
        """Stop delivering: what is in flight is given back for another coordinator."""
        tasks = list(self._in_flight.values())
        ids = list(self._in_flight)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._db.run(outbox.release, self._owner, ids)
        self._threads.shutdown(wait=False, cancel_futures=True)
        await self._renderer.stop()


class _GaveUp(Exception):
    """Every try allowed failed."""

    def __init__(self, tries: int, error: str) -> None:
        super().__init__(error)
        self.tries = tries
        self.error = error
