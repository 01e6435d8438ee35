"""The blocking Python client of a Hydra coordinator cluster."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from datetime import datetime
from types import TracebackType
from typing import Self

from hydra import contexts, wire
from hydra.client._transport import Transport
from hydra.client._types import (
    ApplyResult,
    BackfillResult,
    ClusterStatus,
    LogChunk,
    StreamName,
    TaskDetails,
)
from hydra.domain import (
    Agent,
    AuditEntry,
    Credential,
    NewCredential,
    Notification,
    NotificationState,
    Role,
    Run,
    RunState,
    Task,
    TaskSpec,
)
from hydra.errors import FieldProblem, HydraError, InvalidArgument
from hydra.occurrences import Explanation
from hydra.spec import validate_task
from hydra.tls import ClientTls
from hydra.v1 import agent_service_pb2 as agent_pb
from hydra.v1 import audit_service_pb2 as audit_pb
from hydra.v1 import cluster_service_pb2 as cluster_pb
from hydra.v1 import credential_service_pb2 as credential_pb
from hydra.v1 import notification_service_pb2 as notification_pb
from hydra.v1 import run_service_pb2 as run_pb
from hydra.v1 import task_service_pb2 as task_pb

#: A Watch stream is reopened this often, re-reading the run, so that a change
#: made while no stream was open cannot be missed for longer.
WATCH_RESYNC_SECONDS = 30.0
#: Watch ended with these: the run is checked with Get (when the stream was lost)
#: and watched again.
_WATCH_AGAIN = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")
#: Slowest poll of ``wait`` against a coordinator without Watch.
MAX_POLL_SECONDS = 5.0
_STREAM_NAMES: dict[run_pb.OutputStream.ValueType, StreamName] = {
    run_pb.OUTPUT_STREAM_STDOUT: "stdout",
    run_pb.OUTPUT_STREAM_STDERR: "stderr",
}


def _split_targets(targets: str | Sequence[str] | None) -> list[str]:
    if targets is None:
        return []
    items = [targets] if isinstance(targets, str) else list(targets)
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


class Client:
    """A blocking client of a coordinator cluster; use it as a context manager.

    Args:
        targets: Coordinator addresses (``host:port``), as a list or a comma
            separated string. Default: ``HYDRA_COORDINATORS``. A call that
            cannot reach one target goes to the next.
        token: Credential sent as ``authorization: Bearer <token>``. Default:
            ``HYDRA_TOKEN``.
        tls: TLS settings (CA, client certificate for mTLS, server name).
            Default: ``HYDRA_TLS_*``; None there too means plaintext.
        context: A context of the contexts file (:mod:`hydra.contexts`) to take
            what is not given from. Default: ``HYDRA_CONTEXT``, else the context
            for the targets, else the current context.
        timeout: Deadline of each unary call, in seconds.

    Every method raises :class:`hydra.errors.HydraError` subclasses:
    ``InvalidArgument`` (naming the field), ``NotFound``,
    ``FailedPrecondition``, ``AlreadyExists``, ``Unavailable``.
    """

    def __init__(
        self,
        targets: str | Sequence[str] | None = None,
        *,
        token: str | None = None,
        tls: ClientTls | None = None,
        context: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        settings = contexts.resolve(
            targets=_split_targets(targets), token=token, tls=tls, context=context
        )
        metadata = (("authorization", f"Bearer {settings.token}"),) if settings.token else ()
        self._transport = Transport(
            settings.targets, metadata=metadata, timeout=timeout, tls=settings.tls
        )

    @property
    def targets(self) -> tuple[str, ...]:
        """The coordinator addresses, in the order they are tried."""
        return self._transport.targets

    def close(self) -> None:
        """Close the connections."""
        self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- tasks ----------------------------------------------------------------

    def apply(
        self, spec_or_specs: TaskSpec | Iterable[TaskSpec], *, dry_run: bool = False
    ) -> list[ApplyResult]:
        """Create or update tasks; an unchanged spec changes nothing.

        Every spec is validated locally first: if any is invalid, nothing is
        sent and one ``InvalidArgument`` lists every problem.

        Args:
            spec_or_specs: One spec or several.
            dry_run: Report what would change without storing anything.

        Returns:
            One result per spec, in order.
        """
        specs = [spec_or_specs] if isinstance(spec_or_specs, TaskSpec) else list(spec_or_specs)
        _validate_all(specs)
        return [self._apply_one(spec, dry_run) for spec in specs]

    def _apply_one(self, spec: TaskSpec, dry_run: bool) -> ApplyResult:
        request = task_pb.ApplyTaskRequest(spec=wire.task_spec_to_proto(spec), dry_run=dry_run)
        response = self._transport.unary(lambda s: s.tasks.Apply, request, idempotent=True)
        return ApplyResult(
            task=wire.task_from_proto(response.task),
            changed=response.changed,
            previous_version=response.previous_version,
        )

    def get_task(self, name: str, *, include_versions: bool = False) -> TaskDetails:
        """One task and, if asked, every version of its spec (newest first)."""
        request = task_pb.GetTaskRequest(name=name, include_versions=include_versions)
        response = self._transport.unary(lambda s: s.tasks.Get, request, idempotent=True)
        versions = [wire.task_version_from_proto(v) for v in response.versions]
        return TaskDetails(wire.task_from_proto(response.task), versions)

    def list_tasks(self, prefix: str = "") -> list[Task]:
        """Every task whose name starts with ``prefix``, ordered by name."""
        tasks: list[Task] = []
        page_token = ""
        while True:
            request = task_pb.ListTasksRequest(name_prefix=prefix, page_token=page_token)
            response = self._transport.unary(lambda s: s.tasks.List, request, idempotent=True)
            tasks.extend(wire.task_from_proto(t) for t in response.tasks)
            page_token = response.next_page_token
            if not page_token:
                return tasks

    def delete_task(self, name: str, *, force: bool = False) -> int:
        """Delete a task (its runs stay on record); returns the queued runs cancelled.

        Args:
            name: Task name.
            force: Delete even when other tasks depend on it.
        """
        request = task_pb.DeleteTaskRequest(name=name, force=force)
        response = self._transport.unary(lambda s: s.tasks.Delete, request, idempotent=False)
        return response.cancelled_runs

    def pause(self, name: str) -> Task:
        """Stop the task's triggers from creating runs; active runs finish."""
        request = task_pb.PauseTaskRequest(name=name)
        response = self._transport.unary(lambda s: s.tasks.Pause, request, idempotent=True)
        return wire.task_from_proto(response.task)

    def resume(self, name: str) -> Task:
        """Let the task's triggers create runs again, following its catch-up policy."""
        request = task_pb.ResumeTaskRequest(name=name)
        response = self._transport.unary(lambda s: s.tasks.Resume, request, idempotent=True)
        return wire.task_from_proto(response.task)

    # --- runs -----------------------------------------------------------------

    def trigger(
        self,
        task: str,
        *,
        params: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        occurrence: datetime | None = None,
    ) -> tuple[Run, bool]:
        """Create a manual run.

        Only a call with an ``idempotency_key`` is retried after a transient
        failure: without one, a repeat could create a second run.

        Args:
            task: Task name.
            params: Overrides merged over the task's default params.
            idempotency_key: Repeating a call with the same key returns the
                run the first call created.
            occurrence: The logical time the run stands for (aware). Default: now.

        Returns:
            The run, and False when an existing run was returned instead.
        """
        request = run_pb.TriggerRunRequest(
            task=task, params=dict(params or {}), idempotency_key=idempotency_key or ""
        )
        if occurrence is not None:
            request.occurrence.CopyFrom(wire.to_timestamp(occurrence))
        response = self._transport.unary(
            lambda s: s.runs.Trigger, request, idempotent=bool(idempotency_key)
        )
        return wire.run_from_proto(response.run), response.created

    def get_run(self, run_id: str) -> Run:
        """One run with every attempt."""
        request = run_pb.GetRunRequest(id=run_id)
        response = self._transport.unary(lambda s: s.runs.Get, request, idempotent=True)
        return wire.run_from_proto(response.run)

    def list_runs(
        self,
        *,
        task: str = "",
        states: Iterable[RunState | str] = (),
        limit: int | None = 50,
        occurrence_from: datetime | None = None,
        occurrence_to: datetime | None = None,
    ) -> list[Run]:
        """Runs, newest occurrence first, without their attempts.

        Args:
            task: Only runs of this task.
            states: Only runs in these states.
            limit: At most this many runs; None for all of them.
            occurrence_from: Only runs whose occurrence is at or after this (aware).
            occurrence_to: Only runs whose occurrence is before this (aware).
        """
        wanted = [wire.run_state_to_proto(RunState(state)) for state in states]
        runs: list[Run] = []
        page_token = ""
        while limit is None or len(runs) < limit:
            page_size = 1000 if limit is None else min(limit - len(runs), 1000)
            request = run_pb.ListRunsRequest(
                task=task,
                states=wanted,
                page_size=page_size,
                page_token=page_token,
                occurrence_from=wire.to_timestamp(occurrence_from),
                occurrence_to=wire.to_timestamp(occurrence_to),
            )
            response = self._transport.unary(lambda s: s.runs.List, request, idempotent=True)
            runs.extend(wire.run_from_proto(r) for r in response.runs)
            page_token = response.next_page_token
            if not page_token:
                break
        return runs if limit is None else runs[:limit]

    def retry(self, run_id: str) -> Run:
        """Queue a FAILED, CANCELLED or SKIPPED run for one more attempt (never repeated)."""
        request = run_pb.RetryRunRequest(id=run_id)
        response = self._transport.unary(lambda s: s.runs.Retry, request, idempotent=False)
        return wire.run_from_proto(response.run)

    def cancel(self, run_id: str, reason: str = "") -> Run:
        """Cancel a queued or active run (never repeated); its process group is killed."""
        request = run_pb.CancelRunRequest(id=run_id, reason=reason)
        response = self._transport.unary(lambda s: s.runs.Cancel, request, idempotent=False)
        return wire.run_from_proto(response.run)

    def backfill(
        self, task: str, start: datetime, end: datetime, *, dry_run: bool = False
    ) -> BackfillResult:
        """Create runs for every occurrence of the task's time triggers in [start, end].

        Args:
            task: Task name.
            start: First instant of the range (aware, inclusive).
            end: Last instant of the range (aware, inclusive).
            dry_run: Only list the occurrences.
        """
        request = run_pb.BackfillRequest(task=task, dry_run=dry_run)
        getattr(request, "from").CopyFrom(wire.to_timestamp(start))  # `from` is a keyword
        request.to.CopyFrom(wire.to_timestamp(end))
        response = self._transport.unary(lambda s: s.runs.Backfill, request, idempotent=dry_run)
        return BackfillResult(
            occurrences=[wire.from_timestamp(ts) for ts in response.occurrences],
            created=[wire.run_from_proto(r) for r in response.created],
            existing=response.existing,
        )

    def why(self, task: str, occurrence: datetime) -> Explanation:
        """What became of one occurrence of a task: its run and why it is in its
        state, or why it has none.

        Args:
            task: Task name.
            occurrence: The occurrence (aware; the logical time, e.g. a cron tick).

        Raises:
            NotFound: the task is unknown.
        """
        request = run_pb.WhyRequest(task=task)
        request.occurrence.CopyFrom(wire.to_timestamp(occurrence))
        response = self._transport.unary(lambda s: s.runs.Why, request, idempotent=True)
        return wire.explanation_from_proto(response)

    def watch(self, *, task: str = "", run_id: str = "") -> Iterator[Run]:
        """Every change of the matching runs as it happens, until the iterator is closed."""
        request = run_pb.WatchRunsRequest(task=task, run_id=run_id)
        with closing(self._transport.stream(lambda s: s.runs.Watch, request)) as events:
            for event in events:
                yield wire.run_from_proto(event.run)

    def wait(self, run_id: str, timeout: float | None = None) -> Run:
        """Block until the run is terminal and return it.

        Follows the run with Watch, reopening the stream now and then; polls
        Get only if the coordinator does not implement Watch.

        Raises:
            TimeoutError: The run is still not terminal after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            seconds = WATCH_RESYNC_SECONDS
            if deadline is not None:
                seconds = min(seconds, _remaining(run_id, deadline))
            try:
                run = self._watch_once(run_id, seconds)
                stream_lost = run is None
            except HydraError as error:
                if error.status_code_name == "UNIMPLEMENTED":
                    return self._poll(run_id, deadline)
                if error.status_code_name not in _WATCH_AGAIN:
                    raise
                # Unavailable, or at its stream cap or fallen behind: Get, then watch again.
                run, stream_lost = None, error.status_code_name != "DEADLINE_EXCEEDED"
            if stream_lost:
                run = self._recheck(run_id, seconds)
            if run is not None:
                return run

    def _watch_once(self, run_id: str, seconds: float) -> Run | None:
        """The run once terminal, or None if the Watch stream ended before."""
        request = run_pb.WatchRunsRequest(run_id=run_id)
        # Opened before the Get, so that no change between the two goes unseen.
        events = self._transport.stream(lambda s: s.runs.Watch, request, timeout=seconds)
        try:
            run = self.get_run(run_id)
            while not run.state.terminal:
                event = next(events, None)
                if event is None:
                    return None
                run = wire.run_from_proto(event.run)
            return run
        finally:
            events.close()

    def _recheck(self, run_id: str, seconds: float) -> Run | None:
        """After a lost Watch stream, the run if terminal; else None after a short pause.

        Get retries and fails over, so a cluster that is down raises here.
        """
        run = self.get_run(run_id)
        if run.state.terminal:
            return run
        time.sleep(min(seconds, 1.0))
        return None

    def _poll(self, run_id: str, deadline: float | None) -> Run:
        interval = 0.5
        while not (run := self.get_run(run_id)).state.terminal:
            pause = interval if deadline is None else min(interval, _remaining(run_id, deadline))
            time.sleep(pause)
            interval = min(interval * 2, MAX_POLL_SECONDS)
        return run

    def tail_logs(
        self, run_id: str, *, attempt: int = 0, follow: bool = False
    ) -> Iterator[LogChunk]:
        """The run's output as stored; with ``follow``, new output until the run ends.

        Args:
            run_id: Run id.
            attempt: Only this attempt (1-based); 0 for every attempt in order.
            follow: Keep streaming until the run is terminal.
        """
        request = run_pb.TailLogsRequest(run_id=run_id, attempt=attempt, follow=follow)
        with closing(self._transport.stream(lambda s: s.runs.TailLogs, request)) as chunks:
            for chunk in chunks:
                stream = _STREAM_NAMES.get(chunk.stream, "stdout")
                yield LogChunk(
                    attempt=chunk.attempt,
                    stream=stream,
                    data=chunk.data,
                    dropped_bytes=chunk.dropped_bytes,
                )

    # --- cluster --------------------------------------------------------------

    def cluster_status(self) -> ClusterStatus:
        """Live coordinators (address, version, last heartbeat, agents) and agents."""
        request = cluster_pb.ClusterStatusRequest()
        response = self._transport.unary(lambda s: s.cluster.Status, request, idempotent=True)
        return ClusterStatus(
            coordinators=tuple(wire.coordinator_from_proto(c) for c in response.coordinators),
            agents=tuple(wire.agent_from_proto(a) for a in response.agents),
            answered_by=response.answered_by,
        )

    # --- agents ---------------------------------------------------------------

    def list_agents(self, include_disconnected: bool = False) -> list[Agent]:
        """Connected (or, with ``include_disconnected``, all known) agents."""
        request = agent_pb.ListAgentsRequest(include_disconnected=include_disconnected)
        response = self._transport.unary(lambda s: s.agents.List, request, idempotent=True)
        return [wire.agent_from_proto(a) for a in response.agents]

    def drain_agent(self, agent_id: str) -> Agent:
        """Tell an agent to take no new leases and exit when its attempts finish."""
        request = agent_pb.DrainAgentRequest(agent_id=agent_id)
        response = self._transport.unary(lambda s: s.agents.Drain, request, idempotent=True)
        return wire.agent_from_proto(response.agent)

    # --- audit ----------------------------------------------------------------

    def list_audit(
        self,
        *,
        since: datetime | None = None,
        who: str = "",
        task: str = "",
        limit: int | None = 100,
    ) -> list[AuditEntry]:
        """Entries of the audit log, newest first (needs role admin).

        Args:
            since: Only entries recorded at or after this instant (aware).
            who: Only entries of this credential name.
            task: Only entries about this task.
            limit: At most this many entries; None for all of them.
        """
        entries: list[AuditEntry] = []
        page_token = ""
        while limit is None or len(entries) < limit:
            page_size = 1000 if limit is None else min(limit - len(entries), 1000)
            request = audit_pb.ListAuditRequest(
                since=wire.to_timestamp(since),
                who=who,
                task=task,
                page_size=page_size,
                page_token=page_token,
            )
            response = self._transport.unary(lambda s: s.audit.List, request, idempotent=True)
            entries.extend(wire.audit_entry_from_proto(e) for e in response.entries)
            page_token = response.next_page_token
            if not page_token:
                break
        return entries if limit is None else entries[:limit]

    # --- notifications --------------------------------------------------------

    def list_notifications(
        self,
        *,
        task: str = "",
        state: NotificationState | str | None = None,
        limit: int | None = 100,
    ) -> list[Notification]:
        """Notifications (one per event and webhook), newest first (role viewer; a
        scoped credential sees its tasks' only).

        Args:
            task: Only this task's.
            state: Only those in this state (pending, delivered, failed).
            limit: At most this many; None for all of them.
        """
        wanted = wire.notification_state_to_proto(
            None if state is None else _notification_state(state)
        )
        found: list[Notification] = []
        page_token = ""
        while limit is None or len(found) < limit:
            page_size = 1000 if limit is None else min(limit - len(found), 1000)
            request = notification_pb.ListNotificationsRequest(
                task=task, state=wanted, page_size=page_size, page_token=page_token
            )
            response = self._transport.unary(
                lambda s: s.notifications.List, request, idempotent=True
            )
            found.extend(wire.notification_from_proto(n) for n in response.notifications)
            page_token = response.next_page_token
            if not page_token:
                break
        return found if limit is None else found[:limit]

    # --- credentials (unscoped admins only) ---------------------------------

    def create_credential(
        self,
        name: str,
        role: Role | str,
        *,
        scope: str = "",
        expires_at: datetime | None = None,
        agent_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        max_capacity: int | None = None,
    ) -> NewCredential:
        """Create a credential; its secret is in the result, and shown only this once.

        Args:
            name: Unique name.
            role: ``viewer``, ``operator``, ``admin`` or ``agent``.
            scope: Task-name prefix every call of the credential is limited to.
            expires_at: When it stops working (aware datetime). Default: never.
            agent_id: Role agent only (required): the agent id it connects as.
            labels: Role agent only: the labels its agent must announce. Default: any.
            max_capacity: Role agent only: the most capacity its agent may announce.
        """
        request = credential_pb.CreateCredentialRequest(
            name=name,
            role=Role(role).value,
            scope=scope,
            expires_at=wire.to_timestamp(expires_at),
            agent_id=agent_id or "",
            labels=dict(labels or {}),
            has_labels=labels is not None,
            max_capacity=max_capacity,
        )
        response = self._transport.unary(lambda s: s.credentials.Create, request, idempotent=False)
        credential = wire.credential_from_proto(response.credential)
        return NewCredential(credential=credential, secret=response.secret)

    def list_credentials(self, *, include_revoked: bool = False) -> list[Credential]:
        """Every credential (never a secret), ordered by name."""
        found: list[Credential] = []
        page_token = ""
        while True:
            request = credential_pb.ListCredentialsRequest(
                page_token=page_token, include_revoked=include_revoked
            )
            response = self._transport.unary(lambda s: s.credentials.List, request, idempotent=True)
            found.extend(wire.credential_from_proto(c) for c in response.credentials)
            if not (page_token := response.next_page_token):
                return found

    def revoke_credential(self, name: str) -> Credential:
        """Revoke a credential: every coordinator refuses it within seconds."""
        request = credential_pb.RevokeCredentialRequest(name=name)
        response = self._transport.unary(lambda s: s.credentials.Revoke, request, idempotent=True)
        return wire.credential_from_proto(response.credential)


def _validate_all(specs: Sequence[TaskSpec]) -> None:
    """Raise one InvalidArgument with the problems of every spec, if any has one."""
    problems: list[FieldProblem] = []
    for index, spec in enumerate(specs):
        try:
            validate_task(spec, path=f"[{index}]" if len(specs) > 1 else "")
        except InvalidArgument as error:
            problems.extend(error.problems)
    if problems:
        raise InvalidArgument(problems)


def _remaining(run_id: str, deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(f"run {run_id} is not finished yet")
    return remaining


def _notification_state(state: NotificationState | str) -> NotificationState:
    try:
        return NotificationState(str(state).lower())
    except ValueError:
        choices = ", ".join(member.value for member in NotificationState)
        raise InvalidArgument(f"must be one of {choices}, got {state!r}", path="state") from None
