"""The render pool: trivially bounded templates render inline; the rest in worker
processes that a time limit kills and the pool replaces."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from harness.processes import is_alive
from harness.wait import wait_until
from hydra.coordinator.rendering import RenderingUnavailable, RenderPool
from hydra.coordinator.templates import RenderContext, RenderError
from hydra.domain import FileCheck, TaskSpec

OCCURRENCE = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
LOOPS = "{% for i in range(100000) %}{% for j in range(params.n|int) %}{% endfor %}{% endfor %}"
LIMIT = timedelta(milliseconds=500)


def _spec(*command: str, **fields: Any) -> TaskSpec:
    return TaskSpec(name="render", command=command, params={"n": "1"}, **fields)


def _context(**params: str) -> RenderContext:
    return RenderContext(
        task_name="render",
        occurrence=OCCURRENCE,
        timezone="Australia/Sydney",
        params=params,
        run_id="run-7",
        attempt=2,
        upstream={"up": {"path": "/data/x", "rows": 3}},
    )


@pytest.fixture
async def pool() -> AsyncIterator[RenderPool]:
    started = RenderPool(timeout=LIMIT, workers=1)
    await started.start()
    await started.ready()
    try:
        yield started
    finally:
        pids = started.worker_pids
        await started.stop()
        assert not [pid for pid in pids if is_alive(pid)], "a render worker was left running"


async def test_trivially_bounded_templates_render_inline_without_any_worker() -> None:
    never_started = RenderPool()
    spec = _spec("/bin/true", "{{ ds }}", "{{ params.n }}-{{ upstream['up'].outputs.path }}")
    rendered = await never_started.render(spec, _context())
    assert rendered.command.argv == ("/bin/true", "2026-11-27", "1-/data/x")
    with pytest.raises(RenderingUnavailable):
        await never_started.render(_spec("echo", "{{ ds|upper }}"), _context())


async def test_a_worker_renders_what_inline_rendering_would(pool: RenderPool) -> None:
    spec = _spec(
        "echo",
        "{{ ds }}",  # inline, beside the fields the worker renders
        "{{ occurrence.strftime('%H:%M %Z') }}",
        "{% for key, value in upstream['up'].outputs|dictsort %}{{ key }}={{ value }};{% endfor %}",
        env={"DAY": "{{ ds_nodash|int + attempt }}", "N": "{{ params.n * 2 }}"},
        preconditions=(FileCheck(path="/data/{{ params.n|default('none') }}"),),
    )
    rendered = await pool.render(spec, _context(n="4"))
    assert rendered.command.argv == ("echo", "2026-11-27", "21:00 AEDT", "path=/data/x;rows=3;")
    assert rendered.command.env == {"DAY": "20261129", "N": "44"}
    [check] = rendered.preconditions
    assert isinstance(check, FileCheck)
    assert check.path == "/data/4"


async def test_a_render_out_of_time_kills_its_worker_and_the_next_render_works(
    pool: RenderPool,
) -> None:
    [first] = pool.worker_pids
    with pytest.raises(RenderError) as refused:
        await pool.render(_spec("echo", "ok", LOOPS), _context(n="100000"))
    assert str(refused.value) == "command[2]: rendering exceeded its time limit of 500ms"
    await wait_until(lambda: not is_alive(first), timeout=5, message="the worker to be killed")
    rendered = await pool.render(_spec("echo", "{{ ds|upper }}"), _context())
    assert rendered.command.argv == ("echo", "2026-11-27")
    [second] = pool.worker_pids
    assert second != first


async def test_a_template_error_in_a_worker_fails_the_render_and_keeps_the_worker(
    pool: RenderPool,
) -> None:
    [worker] = pool.worker_pids
    with pytest.raises(RenderError) as refused:
        await pool.render(_spec("echo", "{{ lipsum(n=params.n|int) }}"), _context(n="100000"))
    assert str(refused.value) == "command[1]: lipsum: n=100,000 is over the limit of 100 paragraphs"
    assert pool.worker_pids == [worker]


async def test_a_memory_bomb_dies_in_its_worker_naming_the_limit() -> None:
    pool = RenderPool(timeout=timedelta(seconds=10), workers=1, memory_limit=256 * 1024 * 1024)
    await pool.start()
    await pool.ready()
    try:
        doubling = (
            "{% set ns = namespace(s='x' * 200000) %}"
            "{% for i in range(30) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}"
        )
        with pytest.raises(RenderError) as refused:
            await pool.render(_spec("echo", doubling), _context())
        assert str(refused.value) == "command[1]: rendering exceeded its memory limit of 256 MiB"
        assert (await pool.render(_spec("{{ ds|length }}"), _context())).command.argv == ("10",)
    finally:
        await pool.stop()


async def test_a_worker_that_dies_fails_the_render_naming_the_cause(pool: RenderPool) -> None:
    [worker] = pool.worker_pids
    idle = _cpu_ticks(worker)
    rendering = pool.render(_spec("echo", LOOPS), _context(n="100000"))

    async def kill_when_busy() -> None:
        await wait_until(lambda: _cpu_ticks(worker) > idle + 5, timeout=5)
        os.kill(worker, signal.SIGSEGV)

    with pytest.raises(RenderError) as refused:
        await asyncio.gather(rendering, kill_when_busy())
    assert str(refused.value) == "command[1]: the render worker was killed by SIGSEGV"
    assert (await pool.render(_spec("{{ ds|upper }}"), _context())).command.argv == ("2026-11-27",)


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])
