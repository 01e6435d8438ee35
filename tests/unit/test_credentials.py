"""Credentials without a server: secrets, the wire, the role checks, scopes, the
agent binding, and the command-line flags."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from hydra import wire
from hydra.client import hydractl
from hydra.coordinator.agents.identity import identity_problem
from hydra.coordinator.api import scope
from hydra.coordinator.api.auth import authorize
from hydra.coordinator.api.caller import ANONYMOUS, Caller, bound
from hydra.coordinator.store import credentials as table
from hydra.domain import Credential, Role
from hydra.errors import PermissionDenied
from hydra.v1 import agent_service_pb2 as agent_pb


def test_secrets_are_random_prefixed_and_stored_as_sha256() -> None:
    one, two = table.new_secret(), table.new_secret()
    assert one != two and one.startswith("hydra_") and len(one) == table.SECRET_LENGTH
    assert table.well_formed(one) and not table.well_formed("hydra_short")
    assert table.secret_hash(one) == hashlib.sha256(one.encode()).digest()


def test_a_credential_round_trips_the_wire() -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    for credential in (
        Credential(name="ci", role=Role.VIEWER, scope="billing.", created_by="root"),
        Credential(
            name="a", role=Role.AGENT, agent_id="a", labels={}, max_capacity=2, expires_at=when
        ),
    ):
        assert wire.credential_from_proto(wire.credential_to_proto(credential)) == credential
    with pytest.raises(Exception, match="role: unknown role 'root'"):
        wire.role_from_wire("root")


def test_authorize_names_the_role_needed_and_the_credentials() -> None:
    viewer = Caller(name="ci", role=Role.VIEWER)
    authorize(viewer, "/hydra.v1.TaskService/List")
    with pytest.raises(
        PermissionDenied,
        match=r"^TaskService/Apply needs role admin; credential 'ci' has role viewer$",
    ):
        authorize(viewer, "/hydra.v1.TaskService/Apply")
    with pytest.raises(PermissionDenied, match="not in the role table"):
        authorize(Caller(name="root", role=Role.ADMIN), "/hydra.v1.TaskService/Nope")
    scoped = Caller(name="ops", role=Role.OPERATOR, scope="billing.")
    with pytest.raises(PermissionDenied, match=r"needs an unscoped credential.*'billing\.'"):
        authorize(scoped, "/hydra.v1.AgentService/Drain")


def test_scopes_narrow_listings_and_refuse_other_tasks() -> None:
    with bound(Caller(name="ops", role=Role.OPERATOR, scope="billing.")):
        assert scope.narrowed_prefix("") == "billing."
        assert scope.narrowed_prefix("billing.ex") == "billing.ex"
        assert scope.narrowed_prefix("bil") == "billing."
        assert scope.narrowed_prefix("hr.") is None
        scope.check_task("billing.export")
        with pytest.raises(PermissionDenied, match=r"task 'hr\.pay' is not under it"):
            scope.check_task("hr.pay")
    with bound(ANONYMOUS):
        scope.check_task("anything")


def _hello(agent_id: str, capacity: int = 1, **labels: str) -> agent_pb.Hello:
    return agent_pb.Hello(agent_id=agent_id, capacity=capacity, labels=labels)


def test_a_hello_must_fit_the_agent_credential() -> None:
    bound_to = Caller(
        name="w1", role=Role.AGENT, agent_id="web-1", labels={"pool": "web"}, max_capacity=4
    )
    assert identity_problem(bound_to, _hello("web-1", 4, pool="web")) is None
    assert "cannot connect as agent 'web-2'" in str(identity_problem(bound_to, _hello("web-2")))
    assert "labels {pool=billing}" in str(
        identity_problem(bound_to, _hello("web-1", pool="billing"))
    )
    assert "labels {}" in str(identity_problem(bound_to, _hello("web-1")))
    extra = _hello("web-1", pool="web", gpu="yes")
    assert "allows exactly {pool=web}" in str(identity_problem(bound_to, extra))
    assert "at most 4" in str(identity_problem(bound_to, _hello("web-1", 5, pool="web")))
    any_labels = Caller(name="w", role=Role.AGENT, agent_id="web-1")
    assert identity_problem(any_labels, _hello("web-1", 100, gpu="yes")) is None
    assert identity_problem(ANONYMOUS, _hello("whatever", 100)) is None


def test_hydractl_parses_credentials_commands() -> None:
    args = hydractl.build_parser().parse_args(
        ["credentials", "create", "--name", "a", "--role", "agent", "--agent-id", "web-1",
         "--label", "pool=web", "--max-capacity", "3", "--output-file", "/tmp/x", "-o", "json"]
    )  # fmt: skip
    assert (args.name, args.role, args.agent_id, args.label, args.max_capacity) == (
        "a", "agent", "web-1", ["pool=web"], 3
    )  # fmt: skip
    assert args.output == "json" and args.output_file == "/tmp/x"
    assert hydractl.build_parser().parse_args(["credentials", "list", "--all"]).all
    assert hydractl.build_parser().parse_args(["credentials", "revoke", "ci"]).name == "ci"
    assert hydractl.main(["credentials", "create", "--name", "a", "--role", "root"]) == 2
