"""`hydra dev`'s one-time sign-in link (docs/web.md, "hydra dev").

The URL carries a random code, never the credential: the code is good once,
for a few minutes, and redeeming it reads the local admin's credential from
the file `hydra dev` named (--dev-login-credential).
"""

from __future__ import annotations

import secrets
import time

#: How long a printed sign-in link stays good.
CODE_TTL_S = 15 * 60


class DevLogins:
    """Codes issued and not yet redeemed."""

    def __init__(self, ttl: float = CODE_TTL_S) -> None:
        self._ttl = ttl
        self._codes: dict[str, float] = {}

    def issue(self, now: float | None = None) -> str:
        code = secrets.token_urlsafe(24)
        self._codes[code] = (time.monotonic() if now is None else now) + self._ttl
        return code

    def redeem(self, code: str, now: float | None = None) -> bool:
        """True once for a code issued less than the TTL ago; it is gone afterwards."""
        expires = self._codes.pop(code, None)
        return expires is not None and (time.monotonic() if now is None else now) < expires
