"""Settings read from the environment (docs/interfaces.md, environment); command-line
flags override them."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from hydra.errors import InvalidArgument

DEFAULT_LISTEN = "127.0.0.1:7070"
DEFAULT_POOL = 10
DEFAULT_MAX_STREAMS = 1000
DEFAULT_MAX_CONCURRENT_RPCS = 100
DEFAULT_RENDER_TIMEOUT = "1s"


#: The values HYDRA_EVENT_LOOP takes ("" is the default: uvloop where installed).
EVENT_LOOPS = ("uvloop", "asyncio")


def event_loop(environ: Mapping[str, str] = os.environ) -> str:
    """HYDRA_EVENT_LOOP: ``uvloop`` or ``asyncio``; "" (unset) for uvloop where it is
    installed, else asyncio (hydra.event_loop)."""
    value = environ.get("HYDRA_EVENT_LOOP", "").strip().lower()
    if value and value not in EVENT_LOOPS:
        raise InvalidArgument(
            f"must be uvloop or asyncio, not {environ['HYDRA_EVENT_LOOP']!r}",
            path="HYDRA_EVENT_LOOP",
        )
    return value


def db_conninfo(environ: Mapping[str, str] = os.environ) -> str | None:
    """HYDRA_DB: a libpq conninfo string or URI; None means the embedded server."""
    return environ.get("HYDRA_DB") or None


def pool_size(environ: Mapping[str, str] = os.environ) -> int:
    """HYDRA_POOL: connections in the coordinator's pool (default 10)."""
    return _whole_number(environ, "HYDRA_POOL", DEFAULT_POOL, minimum=2)


def max_streams(environ: Mapping[str, str] = os.environ) -> int:
    """HYDRA_MAX_STREAMS: Watch and TailLogs streams a coordinator serves at once
    (default 1000)."""
    return _whole_number(environ, "HYDRA_MAX_STREAMS", DEFAULT_MAX_STREAMS, minimum=1)


def max_concurrent_rpcs(environ: Mapping[str, str] = os.environ) -> int:
    """HYDRA_MAX_CONCURRENT_RPCS: unary calls a coordinator handles at once (default 100)."""
    return _whole_number(
        environ, "HYDRA_MAX_CONCURRENT_RPCS", DEFAULT_MAX_CONCURRENT_RPCS, minimum=1
    )


def _whole_number(environ: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    """The whole number in the variable `name` (at least `minimum`), or `default` if unset."""
    raw = environ.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def no_migrate(environ: Mapping[str, str] = os.environ) -> bool:
    """HYDRA_NO_MIGRATE: a coordinator does not migrate at start, but checks (default off)."""
    return _switch(environ, "HYDRA_NO_MIGRATE")


def _switch(environ: Mapping[str, str], name: str) -> bool:
    """The on/off variable `name` (default off)."""
    raw = environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name} must be 1 or 0 (true or false), got {raw!r}")


def metrics_listen(environ: Mapping[str, str] = os.environ) -> str | None:
    """HYDRA_METRICS_LISTEN: host:port of the Prometheus endpoint (default: not served)."""
    return environ.get("HYDRA_METRICS_LISTEN") or None


def listen_address(environ: Mapping[str, str] = os.environ) -> str:
    """HYDRA_LISTEN: where the coordinator binds (default 127.0.0.1:7070)."""
    return environ.get("HYDRA_LISTEN") or DEFAULT_LISTEN


def coordinators(environ: Mapping[str, str] = os.environ) -> list[str]:
    """HYDRA_COORDINATORS: comma-separated targets for agents and clients."""
    return coordinators_given(environ) or [listen_address(environ)]


def home(environ: Mapping[str, str] = os.environ) -> Path:
    """HYDRA_HOME: where `hydra dev` keeps the embedded database (default ~/.hydra)."""
    return Path(environ.get("HYDRA_HOME") or "~/.hydra").expanduser()


def token(environ: Mapping[str, str] = os.environ) -> str | None:
    """HYDRA_TOKEN: the credential's secret agents and clients send (coordinators
    check calls against their credentials table, not against this)."""
    return environ.get("HYDRA_TOKEN") or None


def token_file(environ: Mapping[str, str] = os.environ) -> str | None:
    """HYDRA_TOKEN_FILE: a file holding the agent's credential (read at each connection)."""
    return environ.get("HYDRA_TOKEN_FILE") or None


def pass_env(environ: Mapping[str, str] = os.environ) -> list[str]:
    """HYDRA_PASS_ENV: comma-separated variables (or patterns) an agent passes to tasks."""
    return [part.strip() for part in environ.get("HYDRA_PASS_ENV", "").split(",") if part.strip()]


def run_as(environ: Mapping[str, str] = os.environ) -> str | None:
    """HYDRA_RUN_AS: the user an agent runs attempts and command checks as."""
    return environ.get("HYDRA_RUN_AS") or None


def secrets_dir(environ: Mapping[str, str] = os.environ) -> str | None:
    """HYDRA_SECRETS_DIR: where an agent reads secrets (and a coordinator its
    webhooks' secrets), one file per secret."""
    return environ.get("HYDRA_SECRETS_DIR") or None


def notify_defaults(environ: Mapping[str, str] = os.environ) -> str | None:
    """HYDRA_NOTIFY_DEFAULTS: a YAML file of the cluster's default webhooks."""
    return environ.get("HYDRA_NOTIFY_DEFAULTS") or None


def render_timeout(environ: Mapping[str, str] = os.environ) -> str:
    """HYDRA_RENDER_TIMEOUT: time limit of one run's templates, a duration (default 1s)."""
    return environ.get("HYDRA_RENDER_TIMEOUT") or DEFAULT_RENDER_TIMEOUT


def coordinators_given(environ: Mapping[str, str] = os.environ) -> list[str]:
    """HYDRA_COORDINATORS as set, without the default (empty when unset)."""
    raw = environ.get("HYDRA_COORDINATORS", "")
    return [part.strip() for part in raw.split(",") if part.strip()]


def insecure(environ: Mapping[str, str] = os.environ) -> bool:
    """HYDRA_INSECURE: serve without authentication, plaintext allowed beyond loopback."""
    return _switch(environ, "HYDRA_INSECURE")


def _path(environ: Mapping[str, str], name: str) -> Path | None:
    raw = environ.get(name, "")
    return Path(raw).expanduser() if raw else None


def tls_cert(environ: Mapping[str, str] = os.environ) -> Path | None:
    """HYDRA_TLS_CERT: the coordinator's PEM certificate (chain); TLS is served when set."""
    return _path(environ, "HYDRA_TLS_CERT")


def tls_key(environ: Mapping[str, str] = os.environ) -> Path | None:
    """HYDRA_TLS_KEY: the PEM private key of HYDRA_TLS_CERT."""
    return _path(environ, "HYDRA_TLS_KEY")


def tls_client_ca(environ: Mapping[str, str] = os.environ) -> Path | None:
    """HYDRA_TLS_CLIENT_CA: CA(s) of client certificates; when set, clients must present one."""
    return _path(environ, "HYDRA_TLS_CLIENT_CA")


def tls_ca(environ: Mapping[str, str] = os.environ) -> Path | None:
    """HYDRA_TLS_CA: CA(s) agents and clients verify the coordinators against (TLS on)."""
    return _path(environ, "HYDRA_TLS_CA")


def tls(environ: Mapping[str, str] = os.environ) -> bool:
    """HYDRA_TLS=1: agents and clients use TLS, verified against the system store."""
    return _switch(environ, "HYDRA_TLS")


def tls_client_cert(environ: Mapping[str, str] = os.environ) -> Path | None:
    """HYDRA_TLS_CLIENT_CERT: the client certificate agents and clients present (mTLS)."""
    return _path(environ, "HYDRA_TLS_CLIENT_CERT")


def tls_client_key(environ: Mapping[str, str] = os.environ) -> Path | None:
    """HYDRA_TLS_CLIENT_KEY: the PEM private key of HYDRA_TLS_CLIENT_CERT."""
    return _path(environ, "HYDRA_TLS_CLIENT_KEY")


def tls_server_name(environ: Mapping[str, str] = os.environ) -> str | None:
    """HYDRA_TLS_SERVER_NAME: the name the coordinators' certificates carry, if not the host."""
    return environ.get("HYDRA_TLS_SERVER_NAME") or None


def context_name(environ: Mapping[str, str] = os.environ) -> str | None:
    """HYDRA_CONTEXT: the context of the config file hydractl and the SDK use."""
    return environ.get("HYDRA_CONTEXT") or None


def config_file(environ: Mapping[str, str] = os.environ) -> Path:
    """HYDRA_CONFIG: the contexts file (default $HYDRA_HOME/config.yaml)."""
    return config_file_given(environ) or home(environ) / "config.yaml"


def config_file_given(environ: Mapping[str, str] = os.environ) -> Path | None:
    """HYDRA_CONFIG if it is set (`hydra dev` writes its context there, else in its home)."""
    return _path(environ, "HYDRA_CONFIG")


def labels(pairs: Iterable[str], flag: str = "--label") -> dict[str, str]:
    """Agent labels from ``KEY=VALUE`` flags (``hydra agent``, ``hydra credentials``)."""
    found = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"expected KEY=VALUE, got {pair!r}", path=flag)
        found[key] = value
    return found


def retention(environ: Mapping[str, str] = os.environ) -> str:
    """HYDRA_RETENTION: the cluster's default retention of runs, e.g.
    ``max_age=30d,keep_last=100,output_max_age=7d`` (default: kept forever)."""
    return environ.get("HYDRA_RETENTION", "")


def audit_retention(environ: Mapping[str, str] = os.environ) -> str:
    """HYDRA_AUDIT_RETENTION: how long audit entries are kept, a duration (default: forever)."""
    return environ.get("HYDRA_AUDIT_RETENTION", "")
