"""Named contexts, in the manner of a kubeconfig: which coordinators, which
credential, which CA, so that hydractl and the SDK need no flag.

The file is ``HYDRA_CONFIG`` (default ``$HYDRA_HOME/config.yaml``)::

    current-context: dev
    contexts:
      dev:
        coordinators: [127.0.0.1:7070]
        token-file: ~/.hydra/admin.token
        tls-ca: ~/.hydra/ca.pem          # also tls-cert, tls-key, tls-server-name

Settings are resolved in order: explicit arguments (flags), the environment
(``HYDRA_COORDINATORS``, ``HYDRA_TOKEN``, ``HYDRA_TLS_*``), the context named by
``--context``/``HYDRA_CONTEXT``, else the current context. When targets are given
but no context by name, the context whose coordinators include a target
supplies the credential and TLS (never another context's: a credential goes
only where it belongs).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hydra import config
from hydra.errors import InvalidArgument
from hydra.tls import ClientTls, client_tls


class ContextError(InvalidArgument):
    """The contexts file cannot give the context asked for."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Context:
    """One named way to reach a cluster."""

    coordinators: tuple[str, ...] = ()
    #: File holding the credential (read fresh each time a client is built).
    token_file: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_server_name: str | None = None
    #: TLS against the system store, when no ``tls-ca`` is given.
    tls: bool = False

    def client_tls(self) -> ClientTls | None:
        """The context's TLS settings; None: plaintext."""
        settings = ClientTls(
            ca=self.tls_ca, cert=self.tls_cert, key=self.tls_key, server_name=self.tls_server_name
        )
        return settings if self.tls or settings != ClientTls() else None

    def token(self) -> str | None:
        """The credential in ``token_file``, read now.

        Raises:
            ContextError: the file cannot be read.
        """
        if self.token_file is None:
            return None
        try:
            return self.token_file.read_text().strip() or None
        except OSError as error:
            raise ContextError(
                f"cannot read {self.token_file}: {error.strerror}", path="token-file"
            ) from None


@dataclass(frozen=True, kw_only=True, slots=True)
class Contexts:
    """A contexts file's content."""

    current: str | None = None
    contexts: Mapping[str, Context] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class Resolved:
    """Where a client connects and how."""

    targets: tuple[str, ...]
    token: str | None
    tls: ClientTls | None
    #: The context used, if any.
    context: str | None = None


_KEYS = {
    "coordinators": "coordinators",
    "token-file": "token_file",
    "tls-ca": "tls_ca",
    "tls-cert": "tls_cert",
    "tls-key": "tls_key",
    "tls-server-name": "tls_server_name",
    "tls": "tls",
}
_PATHS = frozenset({"token_file", "tls_ca", "tls_cert", "tls_key"})


def load(path: Path) -> Contexts:
    """The contexts in ``path``.

    Raises:
        ContextError: the file is missing or not a valid contexts file, naming it.
    """
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ContextError(f"cannot read {path}: {error.strerror}", path="HYDRA_CONFIG") from None
    except yaml.YAMLError as error:
        raise ContextError(f"{path} is not YAML: {error}", path="HYDRA_CONFIG") from None
    return _contexts(document or {}, path)


def _contexts(document: Any, path: Path) -> Contexts:
    if not isinstance(document, dict) or not isinstance(document.get("contexts", {}), dict):
        raise ContextError(f"{path}: expected a mapping with `contexts:`", path="contexts")
    current = document.get("current-context")
    named = document.get("contexts") or {}
    return Contexts(
        current=str(current) if current else None,
        contexts={str(name): _context(str(name), body, path) for name, body in named.items()},
    )


def _context(name: str, body: Any, path: Path) -> Context:
    if not isinstance(body, dict):
        raise ContextError(f"{path}: expected a mapping", path=f"contexts.{name}")
    unknown = sorted(set(body) - set(_KEYS))
    if unknown:
        raise ContextError(f"{path}: unknown keys {unknown}", path=f"contexts.{name}")
    values: dict[str, Any] = {}
    for key, value in body.items():
        attribute = _KEYS[key]
        if attribute == "coordinators":
            values[attribute] = tuple(_targets(value))
        elif attribute == "tls":
            values[attribute] = bool(value)
        elif value is not None:
            values[attribute] = Path(str(value)).expanduser() if attribute in _PATHS else str(value)
    return Context(**values)


def _targets(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else list(value or [])
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def save_context(
    name: str, context: Context, *, current: bool = True, path: Path | None = None
) -> Path:
    """Add or replace the context ``name``; with ``current``, make it the current one.

    Written atomically (a temporary file renamed over it), mode 0600, in a
    directory of mode 0700: the file names credentials.
    """
    path = path or config.config_file()
    existing = load(path) if path.exists() else Contexts()
    contexts = {**existing.contexts, name: context}
    document = {
        "current-context": name if current else existing.current,
        "contexts": {key: _document(value) for key, value in contexts.items()},
    }
    _write_private(path, yaml.safe_dump(document, sort_keys=False))
    return path


def _document(context: Context) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key, attribute in _KEYS.items():
        value = getattr(context, attribute)
        if attribute == "coordinators":
            body[key] = list(value)
        elif value:
            body[key] = str(value) if isinstance(value, Path) else value
    return body


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as file:  # mkstemp makes it 0600
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def resolve(
    *,
    targets: Sequence[str] | None = None,
    token: str | None = None,
    tls: ClientTls | None = None,
    context: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Resolved:
    """Targets, credential and TLS from arguments, environment and contexts (module doc).

    Raises:
        ContextError: a context was asked for by name and cannot be had, or a
            context's token file cannot be read.
    """
    targets = list(targets or config.coordinators_given(environ))
    # An explicit empty token means "send none", whatever else is configured.
    token = token if token is not None else config.token(environ)
    tls = tls or client_tls(environ=environ)
    name, chosen = _choose(targets, context or config.context_name(environ), environ)
    if chosen is None:
        fallback = tuple(targets or config.coordinators(environ))
        return Resolved(targets=fallback, token=token or None, tls=tls)
    return Resolved(
        targets=tuple(targets or chosen.coordinators or config.coordinators(environ)),
        token=(token if token is not None else chosen.token()) or None,
        tls=tls or chosen.client_tls(),
        context=name,
    )


def _choose(
    targets: Sequence[str], name: str | None, environ: Mapping[str, str]
) -> tuple[str | None, Context | None]:
    """The context asked for by name, else the one for the targets, else the current one."""
    path = config.config_file(environ)
    if name is not None:
        found = load(path).contexts.get(name)
        if found is None:
            raise ContextError(f"no context {name!r} in {path}", path="--context")
        return name, found
    try:
        contexts = load(path)
    except ContextError:
        return None, None  # not asked for by name: no file is no context
    if not targets:
        current = contexts.current
        return (current, contexts.contexts.get(current)) if current else (None, None)
    return _for_targets(contexts, targets)


def _for_targets(contexts: Contexts, targets: Sequence[str]) -> tuple[str | None, Context | None]:
    # The current context first, so that of two contexts for one target it wins.
    names = sorted(contexts.contexts, key=lambda n: n != contexts.current)
    for name in names:
        if set(targets) & set(contexts.contexts[name].coordinators):
            return name, contexts.contexts[name]
    return None, None
