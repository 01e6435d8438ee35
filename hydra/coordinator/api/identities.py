"""Who a secret stands for: credentials looked up by their hash, cached briefly.

A lookup's answer, known or unknown, is kept for `ttl` seconds (at most
`size` of them), so a caller repeating a wrong secret does not reach the
database per call; a revocation is announced on ``hydra_credentials`` and drops
the credential from every coordinator's cache at once, and the TTL bounds the
delay when a notification is lost. Secrets of unknown credentials are looked
up a few at a time, so a flood of them cannot take the pool from callers whose
credentials are known. When each credential was last used is kept in memory
and written in the background, at most once per `last_used_every` per credential.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from hydra.coordinator.loops.timing import utcnow
from hydra.coordinator.store import Database
from hydra.coordinator.store import credentials as store
from hydra.domain import Credential
from hydra.errors import Unauthenticated

#: Seconds an answer of the database is trusted.
CACHE_TTL = 2.0
#: Answers kept at most.
CACHE_SIZE = 10_000
#: Lookups of secrets that are not known to be valid, at once.
UNKNOWN_LOOKUPS = 2
#: Seconds between two last-used writes of one credential.
LAST_USED_EVERY = 60.0
#: Seconds between two writes of the last-used times that are due.
LAST_USED_FLUSH = 5.0

_ASK = "send `authorization: Bearer <secret>` (HYDRA_TOKEN)"


@dataclass(frozen=True, slots=True)
class _Answer:
    credential: Credential | None
    fetched: float


class Identities:
    """Turns a presented secret into its credential, or refuses it."""

    def __init__(
        self,
        database: Database,
        *,
        ttl: float = CACHE_TTL,
        size: int = CACHE_SIZE,
        last_used_every: float = LAST_USED_EVERY,
        last_used_flush: float = LAST_USED_FLUSH,
    ) -> None:
        self._db = database
        self._ttl = ttl
        self._size = size
        self._answers: OrderedDict[bytes, _Answer] = OrderedDict()
        self._in_flight: dict[bytes, asyncio.Future[Credential | None]] = {}
        self._unknown = asyncio.Semaphore(UNKNOWN_LOOKUPS)
        self._generation = 0
        self._last_used_every = last_used_every
        self._last_used_flush = last_used_flush
        self._used: dict[str, datetime] = {}
        self._recorded: dict[str, float] = {}

    async def authenticate(self, secret: str) -> Credential:
        """The live credential of `secret`.

        Raises:
            Unauthenticated: none was presented, it is unknown, revoked or expired.
            Unavailable: the database could not be asked.
        """
        if not secret:
            raise Unauthenticated(f"no credential: {_ASK}")
        if not store.well_formed(secret):
            raise Unauthenticated(f"malformed credential: Hydra secrets start with hydra_; {_ASK}")
        credential = _live(await self._credential(secret))
        self._record_use(credential.name)
        return credential

    async def for_certificate(self, agent_id: str) -> Credential:
        """The live agent credential a verified client certificate for `agent_id`
        stands for (not cached: agents connect seldom).

        Raises:
            Unauthenticated: no certificate, or no live agent credential names the id.
            Unavailable: the database could not be asked.
        """
        if not agent_id:
            raise Unauthenticated(f"no credential: {_ASK}, or a client certificate under mTLS")
        credential = await self._db.run(store.live_for_agent, agent_id)
        if credential is None:
            raise Unauthenticated(
                f"the client certificate names agent {agent_id!r}, but no live agent "
                f"credential does; create one: hydractl credentials create --role agent "
                f"--agent-id {agent_id} --name NAME"
            )
        self._record_use(credential.name)
        return credential

    def forget(self, name: str) -> None:
        """Drop what is cached of credential `name` ("": of every credential)."""
        self._generation += 1
        for digest, answer in list(self._answers.items()):
            if not name or answer.credential is None or answer.credential.name == name:
                del self._answers[digest]

    async def _credential(self, secret: str) -> Credential | None:
        digest = store.secret_hash(secret)
        answer = self._answers.get(digest)
        if answer is not None and time.monotonic() - answer.fetched < self._ttl:
            return answer.credential
        known = answer is not None and answer.credential is not None
        lookup = self._in_flight.get(digest)
        if lookup is None:
            lookup = asyncio.ensure_future(self._fetch(secret, digest, known))
            self._in_flight[digest] = lookup
            lookup.add_done_callback(lambda _: self._in_flight.pop(digest, None))
        return await asyncio.shield(lookup)

    async def _fetch(self, secret: str, digest: bytes, known: bool) -> Credential | None:
        generation = self._generation
        if known:  # a refresh of a credential that was valid does not queue behind floods
            credential = await self._db.run(store.by_secret, secret)
        else:
            async with self._unknown:
                credential = await self._db.run(store.by_secret, secret)
        if generation == self._generation:  # no revocation came while asking
            self._remember(digest, credential)
        return credential

    def _remember(self, digest: bytes, credential: Credential | None) -> None:
        self._answers[digest] = _Answer(credential, time.monotonic())
        self._answers.move_to_end(digest)
        while len(self._answers) > self._size:
            self._answers.popitem(last=False)

    def _record_use(self, name: str) -> None:
        now = time.monotonic()
        if now - self._recorded.get(name, float("-inf")) < self._last_used_every:
            return
        self._recorded[name] = now
        self._used[name] = utcnow()

    async def write_last_used(self) -> None:
        """One step of the background loop: wait, then write the last-used times due."""
        await asyncio.sleep(self._last_used_flush)
        await self.flush()

    async def flush(self) -> None:
        """Write the last-used times recorded since the last write."""
        used, self._used = self._used, {}
        if not used:
            return
        try:
            await self._db.run(store.touch, used)
        except BaseException:
            self._used = {**used, **self._used}  # written next time
            raise


def _live(credential: Credential | None) -> Credential:
    """The credential, if it is known, not revoked and not expired."""
    if credential is None:
        raise Unauthenticated(f"unknown credential: {_ASK} with a valid secret")
    if credential.revoked_at is not None:
        raise CredentialNotLive(
            f"credential {credential.name!r} was revoked at {_when(credential.revoked_at)}"
        )
    if credential.expires_at is not None and credential.expires_at <= utcnow():
        raise CredentialNotLive(
            f"credential {credential.name!r} expired at {_when(credential.expires_at)}"
        )
    return credential


class CredentialNotLive(Unauthenticated):
    """The credential is known but revoked or expired (still UNAUTHENTICATED on the
    wire; `/metrics` answers it 403)."""


def _when(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%d %H:%M:%SZ")
