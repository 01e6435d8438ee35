"""Session cookies: encrypted and signed with Fernet (docs/web.md, "Sessions").

The cookie carries the signed-in user's credential, so it must never rest in
the browser in the clear: Fernet (AES-CBC + HMAC-SHA256) encrypts and signs it,
and its timestamp bounds the session's age. The key comes from
``--session-key-file`` (shared by every `hydra web` behind one address) or is
random per process (a restart signs everyone out).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from starlette.requests import Request
from starlette.responses import Response

from hydra.errors import InvalidArgument

COOKIE = "hydra_session"
#: How long a sign-in lasts.
MAX_AGE_S = 12 * 3600
#: A key file must hold at least this many bytes of secret.
MIN_KEY_BYTES = 32


@dataclass(frozen=True, kw_only=True, slots=True)
class Session:
    """What the cookie holds. Before sign-in it holds a CSRF token only, so that
    the sign-in form is protected like every other form."""

    csrf: str
    signed_in: bool = False
    #: The credential's secret; "" for an --insecure coordinator.
    token: str = ""
    #: Who the coordinator took the credential for (ClusterService.Status).
    name: str = ""
    role: str = ""
    scope: str = ""

    @property
    def can_operate(self) -> bool:
        """May trigger, retry, cancel, pause, backfill, drain (the coordinator decides;
        this only hides buttons that would be refused)."""
        return self.role in ("operator", "admin")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def new_session() -> Session:
    """A session that is not signed in, with a fresh CSRF token."""
    return Session(csrf=secrets.token_urlsafe(24))


def signed_in(token: str, name: str, role: str, scope: str) -> Session:
    """A signed-in session; its CSRF token is new (no token from before sign-in survives)."""
    return replace(new_session(), signed_in=True, token=token, name=name, role=role, scope=scope)


def load_key(path: Path | None) -> bytes:
    """The Fernet key: derived from the file's bytes (any secret of 32 bytes or
    more; its SHA-256 is the key), or random when no file is given.

    Raises:
        InvalidArgument: naming --session-key-file when it cannot be read or is short.
    """
    if path is None:
        return Fernet.generate_key()
    try:
        secret = path.read_bytes().strip()
    except OSError as error:
        raise InvalidArgument(
            f"cannot read {path}: {error.strerror}", path="--session-key-file"
        ) from None
    if len(secret) < MIN_KEY_BYTES:
        raise InvalidArgument(
            f"{path} holds {len(secret)} bytes; a session key needs at least {MIN_KEY_BYTES}",
            path="--session-key-file",
        )
    return base64.urlsafe_b64encode(hashlib.sha256(secret).digest())


class SessionCookies:
    """Reads and writes the session cookie."""

    def __init__(self, key: bytes, *, secure: bool, max_age: int = MAX_AGE_S) -> None:
        self._fernet = Fernet(key)
        self._secure = secure
        self._max_age = max_age

    def encode(self, session: Session) -> str:
        return self._fernet.encrypt(json.dumps(asdict(session)).encode()).decode()

    def decode(self, cookie: str, now: float | None = None) -> Session | None:
        """The session in ``cookie``; None when it is forged, damaged or too old."""
        try:
            when = int(time.time() if now is None else now)
            text = self._fernet.decrypt_at_time(cookie.encode(), self._max_age, when)
            return Session(**json.loads(text))
        except (InvalidToken, ValueError, TypeError):
            return None

    def read(self, request: Request) -> Session | None:
        cookie = request.cookies.get(COOKIE)
        return None if cookie is None else self.decode(cookie)

    def write(self, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self.encode(session),
            max_age=self._max_age,
            path="/",
            secure=self._secure,
            httponly=True,
            samesite="strict",
        )
