"""What each hydractl command does, once its arguments are parsed."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from hydra.client import _render as render
from hydra.client import _render_why as render_why
from hydra.client._client import Client
from hydra.domain import RunState, TaskSpec
from hydra.errors import FieldProblem, InvalidArgument, NotFound
from hydra.spec import load_task_documents

Handler = Callable[[argparse.Namespace, Client], int]


def _emit(args: argparse.Namespace, text: Callable[[], str], data: Callable[[], object]) -> None:
    print(render.dumps(data()) if args.output == "json" else text(), flush=True)


def _read(filename: str) -> tuple[str, str]:
    """The text of a task file and the name to report it by; ``-`` is stdin."""
    if filename == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(filename).read_text(encoding="utf-8"), filename
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise InvalidArgument(f"cannot read {filename}: {reason}") from None


def load_specs(filenames: list[str]) -> list[TaskSpec]:
    """Every task of every file, or one InvalidArgument listing every problem."""
    specs: list[TaskSpec] = []
    problems: list[FieldProblem] = []
    defined_in: dict[str, str] = {}
    for filename in filenames:
        text, source = _read(filename)
        try:
            loaded = load_task_documents(text, source)
        except InvalidArgument as error:
            problems.extend(_in_file(source, problem) for problem in error.problems)
            continue
        for spec in loaded:
            other = defined_in.setdefault(spec.name, source)
            if other != source:
                message = f"task {spec.name!r} is also defined in {other}"
                problems.append(FieldProblem(path=source, message=message))
        specs.extend(loaded)
    if problems:
        raise InvalidArgument(problems)
    return specs


def _in_file(source: str, problem: FieldProblem) -> FieldProblem:
    """The problem with its path prefixed by the file it was found in."""
    if problem.path in ("", source):
        return FieldProblem(path=source, message=problem.message)
    return FieldProblem(path=f"{source}: {problem.path}", message=problem.message)


def apply(args: argparse.Namespace, client: Client) -> int:
    """``apply -f FILE``: validate every task, then create or update them in order."""
    specs = load_specs(args.filename)
    if args.diff:
        return _diff(specs, client)
    if args.output == "json":
        results = client.apply(specs, dry_run=args.dry_run)
        print(render.dumps([render.apply_json(result) for result in results]), flush=True)
        return 0
    for spec in specs:  # one at a time, so a failure shows what was already applied
        [result] = client.apply(spec, dry_run=args.dry_run)
        print(render.apply_line(result, dry_run=args.dry_run), flush=True)
    return 0


def tasks_list(args: argparse.Namespace, client: Client) -> int:
    """``tasks list``."""
    tasks = client.list_tasks(args.prefix)
    _emit(args, lambda: render.tasks_table(tasks), lambda: [render.task_json(t) for t in tasks])
    return 0


def tasks_get(args: argparse.Namespace, client: Client) -> int:
    """``tasks get NAME``: the spec as YAML, with version, state and next fire."""
    details = client.get_task(args.name, include_versions=args.versions)
    _emit(args, lambda: render.task_detail(details), lambda: render.task_details_json(details))
    return 0


def tasks_pause(args: argparse.Namespace, client: Client) -> int:
    """``tasks pause NAME``."""
    task = client.pause(args.name)
    _emit(args, lambda: f"paused {task.name}", lambda: render.task_json(task))
    return 0


def tasks_resume(args: argparse.Namespace, client: Client) -> int:
    """``tasks resume NAME``."""
    task = client.resume(args.name)
    _emit(args, lambda: f"resumed {task.name}", lambda: render.task_json(task))
    return 0


def tasks_delete(args: argparse.Namespace, client: Client) -> int:
    """``tasks delete NAME``."""
    cancelled = client.delete_task(args.name, force=args.force)
    _emit(
        args,
        lambda: f"deleted {args.name} ({cancelled} queued runs cancelled)",
        lambda: {"cancelled_runs": cancelled},
    )
    return 0


def run(args: argparse.Namespace, client: Client) -> int:
    """``run TASK``: print the run id; with ``--wait`` exit 0 only if it succeeds."""
    if args.timeout is not None and not args.wait:
        raise InvalidArgument("only applies with --wait", "--timeout")
    triggered, created = client.trigger(
        args.task,
        params=dict(args.param),
        idempotency_key=args.idempotency_key,
        occurrence=args.occurrence,
    )
    if not created:
        print(f"hydractl: run {triggered.id} already existed", file=sys.stderr)
    if not args.wait:
        _emit(args, lambda: triggered.id, lambda: render.trigger_json(triggered, created))
        return 0
    if args.output != "json":
        print(triggered.id, flush=True)
    final = client.wait(triggered.id, timeout=args.timeout)
    if args.output == "json":
        print(render.dumps(render.trigger_json(final, created)), flush=True)
    else:
        print(render.run_summary(final), file=sys.stderr)
    return 0 if final.state is RunState.SUCCEEDED else 1


def runs_list(args: argparse.Namespace, client: Client) -> int:
    """``runs list``; with ``--watch`` a line per change until interrupted."""
    if args.watch:
        return _watch(args, client)
    runs = client.list_runs(
        task=args.task,
        states=args.state,
        limit=args.limit,
        occurrence_from=args.occurrence_from,
        occurrence_to=args.occurrence_to,
    )
    _emit(args, lambda: render.runs_table(runs), lambda: [render.run_json(r) for r in runs])
    return 0


def _watch(args: argparse.Namespace, client: Client) -> int:
    for changed in client.watch(task=args.task):
        if args.state and changed.state not in args.state:
            continue
        if args.output == "json":
            print(render.dumps(render.run_json(changed), compact=True), flush=True)
        else:
            print(render.watch_line(changed), flush=True)
    return 0


def runs_get(args: argparse.Namespace, client: Client) -> int:
    """``runs get RUN``: fields, every attempt, outputs."""
    found = client.get_run(args.run)
    _emit(args, lambda: render.run_detail(found), lambda: render.run_json(found))
    return 0


def logs(args: argparse.Namespace, client: Client) -> int:
    """``logs RUN``: the raw output, stdout to stdout and stderr to stderr; where
    output was dropped, a line saying how much, on the stream it was dropped from."""
    line_open = {"stdout": False, "stderr": False}
    for chunk in client.tail_logs(args.run, attempt=args.attempt, follow=args.follow):
        target = sys.stdout if chunk.stream == "stdout" else sys.stderr
        data = chunk.data
        if chunk.dropped_bytes:
            data = render.dropped_marker(chunk.dropped_bytes, line_open=line_open[chunk.stream])
        if data:
            line_open[chunk.stream] = not data.endswith(b"\n")
        target.flush()
        target.buffer.write(data)
        target.buffer.flush()
    return 0


def retry(args: argparse.Namespace, client: Client) -> int:
    """``retry RUN``."""
    queued = client.retry(args.run)
    _emit(args, lambda: f"run {queued.id} {queued.state}", lambda: render.run_json(queued))
    return 0


def cancel(args: argparse.Namespace, client: Client) -> int:
    """``cancel RUN``."""
    cancelled = client.cancel(args.run, args.reason)
    _emit(args, lambda: f"run {cancelled.id} {cancelled.state}", lambda: render.run_json(cancelled))
    return 0


def backfill(args: argparse.Namespace, client: Client) -> int:
    """``backfill TASK --from T --to T``."""
    result = client.backfill(args.task, args.start, args.end, dry_run=args.dry_run)
    _emit(
        args,
        lambda: render.backfill_text(result, dry_run=args.dry_run),
        lambda: render.backfill_json(result),
    )
    return 0


def why(args: argparse.Namespace, client: Client) -> int:
    """``why TASK --occurrence T``."""
    explanation = client.why(args.task, args.occurrence)
    _emit(args, lambda: render_why.why_text(explanation), lambda: render_why.why_json(explanation))
    return 0


def agents_list(args: argparse.Namespace, client: Client) -> int:
    """``agents list``."""
    agents = client.list_agents(include_disconnected=args.all)
    _emit(args, lambda: render.agents_table(agents), lambda: [render.agent_json(a) for a in agents])
    return 0


def agents_drain(args: argparse.Namespace, client: Client) -> int:
    """``agents drain ID``."""
    agent = client.drain_agent(args.agent_id)
    _emit(args, lambda: f"agent {agent.id} {agent.state}", lambda: render.agent_json(agent))
    return 0


def audit_list(args: argparse.Namespace, client: Client) -> int:
    """``audit list``: newest first."""
    entries = client.list_audit(since=args.since, who=args.who, task=args.task, limit=args.limit)
    _emit(
        args, lambda: render.audit_table(entries), lambda: [render.audit_json(e) for e in entries]
    )
    return 0


def notifications_list(args: argparse.Namespace, client: Client) -> int:
    """``notifications list``: newest first."""
    found = client.list_notifications(task=args.task, state=args.state, limit=args.limit)
    _emit(
        args,
        lambda: render.notifications_table(found),
        lambda: [render.notification_json(n) for n in found],
    )
    return 0


def _diff(specs: list[TaskSpec], client: Client) -> int:
    """``apply --diff``: what applying would change; exit 1 when anything would."""
    changed = False
    for spec in specs:
        try:
            stored = client.get_task(spec.name).task
        except NotFound:
            stored = None
        text = render.spec_diff(
            spec.name, stored.spec if stored else None, stored.version if stored else 0, spec
        )
        if text:
            changed = True
            print(text, end="" if text.endswith("\n") else "\n")
        else:
            print(f"unchanged {spec.name} v{stored.version if stored else 0}")
    return 1 if changed else 0


def cluster_status(args: argparse.Namespace, client: Client) -> int:
    """``cluster status``."""
    status = client.cluster_status()
    _emit(args, lambda: render.cluster_text(status), lambda: render.cluster_json(status))
    return 0
