"""ceiling: what PostgreSQL itself allows on this machine, with no Hydra at all.

Two limits, measured with psycopg against the same server the other
benchmarks use (a database of its own):

* **claim tx/s** — 16 connections, each committing one transaction after
  another that claims one queued row with ``UPDATE ... WHERE id = (SELECT ...
  FOR UPDATE SKIP LOCKED LIMIT 1)``, the pattern of Hydra's dispatcher and
  of every PostgreSQL job queue. Each claim is an explicit transaction
  (BEGIN, UPDATE, COMMIT), as in Hydra's store.
* **NOTIFY wake-up floor** — one connection commits ``INSERT`` + ``NOTIFY``,
  another, LISTENing in the same event loop, is woken: the time from just
  before COMMIT to the listener holding the notification. Every Hydra
  latency needs at least one of these.

Hydra's figures are printed as fractions (throughput) or multiples
(latencies) of these.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass

import psycopg

from bench.results import Metric, Result, distribution
from bench.stack import Context

NAME = "ceiling"
CLAIM_RATE = "claim tx/s (16 connections)"
WAKE_P50 = "NOTIFY wake-up p50"
WAKE_P99 = "NOTIFY wake-up p99"

CLAIM = """
UPDATE bench_claim SET state = 'claimed', claimed_at = now()
WHERE id = (SELECT id FROM bench_claim WHERE state = 'queued'
            ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id
"""
SCHEMA = """
CREATE TABLE bench_claim (
    id bigserial PRIMARY KEY,
    state text NOT NULL DEFAULT 'queued',
    payload jsonb NOT NULL DEFAULT '{}',
    claimed_at timestamptz
);
CREATE INDEX bench_claim_queued ON bench_claim (id) WHERE state = 'queued';
CREATE TABLE bench_events (id bigserial PRIMARY KEY, sample int NOT NULL,
                           at timestamptz NOT NULL DEFAULT now());
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class Params:
    """How long and how wide."""

    seconds: float = 5.0
    connections: int = 16
    rows: int = 200_000
    notify_samples: int = 200
    notify_gap_s: float = 0.01


SMOKE = Params(seconds=1.0, rows=20_000, notify_samples=20)


def run(ctx: Context) -> Result:
    """Measure both limits on a fresh database."""
    params = SMOKE if ctx.smoke else Params()
    with ctx.database(NAME) as conninfo:
        claimed, elapsed, exhausted = asyncio.run(_claim_rate(conninfo, params))
        wake_ms = asyncio.run(_notify_floor(conninfo, params))
    rate = claimed / elapsed
    wake = distribution(wake_ms)
    note = "queue ran dry: raise rows" if exhausted else ""
    return Result(
        name=NAME,
        metrics=[
            Metric(name=CLAIM_RATE, value=rate, unit="tx/s", note=note),
            Metric(name=WAKE_P50, value=wake["p50"], unit="ms"),
            Metric(name=WAKE_P99, value=wake["p99"], unit="ms"),
        ],
        details={
            "params": asdict(params),
            "claimed": claimed,
            "elapsed_s": elapsed,
            "notify_ms": wake,
        },
    )


async def _claim_rate(conninfo: str, params: Params) -> tuple[int, float, bool]:
    """Claims committed by `connections` workers in `seconds`; (count, seconds, ran dry)."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(SCHEMA)
        await conn.execute(
            "INSERT INTO bench_claim (payload) "
            "SELECT jsonb_build_object('n', i) FROM generate_series(1, %s) AS i",
            (params.rows,),
        )
        await conn.execute("VACUUM ANALYZE bench_claim")
    connections = [
        await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        for _ in range(params.connections)
    ]
    try:
        start = time.perf_counter()
        deadline = start + params.seconds
        counts = await asyncio.gather(*(_claim_loop(c, deadline) for c in connections))
        elapsed = time.perf_counter() - start
    finally:
        for conn in connections:
            await conn.close()
    return sum(n for n, _ in counts), elapsed, any(dry for _, dry in counts)


async def _claim_loop(conn: psycopg.AsyncConnection[object], deadline: float) -> tuple[int, bool]:
    """Claim one row per transaction until the deadline; (claims, ran dry)."""
    claimed = 0
    while time.perf_counter() < deadline:
        async with conn.transaction():
            row = await (await conn.execute(CLAIM)).fetchone()
        if row is None:
            return claimed, True
        claimed += 1
    return claimed, False


async def _notify_floor(conninfo: str, params: Params) -> list[float]:
    """Milliseconds from COMMIT of INSERT+NOTIFY to the listener being woken."""
    received: dict[int, float] = {}
    arrived = asyncio.Event()
    listener = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    notifier = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    await listener.execute("LISTEN bench_wake")
    listening = asyncio.create_task(_listen(listener, received, arrived))
    samples = []
    try:
        for sample in range(params.notify_samples):
            arrived.clear()
            async with notifier.transaction():
                await notifier.execute("INSERT INTO bench_events (sample) VALUES (%s)", (sample,))
                await notifier.execute("SELECT pg_notify('bench_wake', %s)", (str(sample),))
                sent = time.perf_counter()
            await asyncio.wait_for(arrived.wait(), timeout=5)
            samples.append((received[sample] - sent) * 1000)
            await asyncio.sleep(params.notify_gap_s)
    finally:
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
        await listener.close()
        await notifier.close()
    return samples


async def _listen(
    conn: psycopg.AsyncConnection[object], received: dict[int, float], arrived: asyncio.Event
) -> None:
    async for notify in conn.notifies():
        received[int(notify.payload)] = time.perf_counter()
        arrived.set()
