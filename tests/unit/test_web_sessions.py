"""The web UI's session cookies, CSRF check and dev sign-in codes (hydra/web/ui/)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from starlette.datastructures import FormData

from hydra.errors import InvalidArgument
from hydra.web.ui.devlogin import DevLogins
from hydra.web.ui.pages import csrf_ok
from hydra.web.ui.sessions import SessionCookies, load_key, new_session, signed_in

SECRET = "hydra-credential-secret-value-123"


def test_a_session_round_trips_and_its_cookie_does_not_show_the_credential() -> None:
    cookies = SessionCookies(Fernet.generate_key(), secure=False)
    session = signed_in(SECRET, "alice", "operator", "etl.")
    cookie = cookies.encode(session)
    assert SECRET not in cookie and "alice" not in cookie
    assert cookies.decode(cookie) == session
    assert session.can_operate and not session.is_admin


def test_a_forged_damaged_or_foreign_cookie_is_no_session() -> None:
    cookies = SessionCookies(Fernet.generate_key(), secure=False)
    cookie = cookies.encode(signed_in(SECRET, "alice", "admin", ""))
    assert cookies.decode(cookie[:-4] + "AAAA") is None
    assert cookies.decode("not a cookie") is None
    other = SessionCookies(Fernet.generate_key(), secure=False)
    assert other.decode(cookie) is None


def test_a_session_ends_after_its_max_age() -> None:
    cookies = SessionCookies(Fernet.generate_key(), secure=False, max_age=60)
    cookie = cookies.encode(new_session())
    assert cookies.decode(cookie, now=time.time() + 30) is not None
    assert cookies.decode(cookie, now=time.time() + 120) is None


def test_signing_in_gives_a_new_csrf_token() -> None:
    before = new_session()
    after = signed_in("", "anonymous", "admin", "")
    assert before.csrf != after.csrf and after.signed_in and not before.signed_in


def test_csrf_needs_the_sessions_own_token() -> None:
    session = new_session()
    assert csrf_ok(session, FormData({"csrf": session.csrf}))
    assert not csrf_ok(session, FormData({"csrf": new_session().csrf}))
    assert not csrf_ok(session, FormData({}))


def test_a_key_file_is_shared_by_every_process_that_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "session.key"
    path.write_text("x" * 40 + "\n")
    one = SessionCookies(load_key(path), secure=True)
    two = SessionCookies(load_key(path), secure=True)
    assert two.decode(one.encode(new_session())) is not None
    assert load_key(None) != load_key(None)  # no file: a key per process


def test_a_short_or_missing_key_file_is_refused_naming_the_flag(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_text("too short")
    for path in (short, tmp_path / "missing.key"):
        with pytest.raises(InvalidArgument, match="--session-key-file"):
            load_key(path)


def test_a_dev_sign_in_code_is_good_once_and_not_for_long() -> None:
    codes = DevLogins(ttl=60)
    code = codes.issue(now=100.0)
    assert not codes.redeem("guessed", now=101.0)
    assert codes.redeem(code, now=101.0)
    assert not codes.redeem(code, now=102.0)
    late = codes.issue(now=100.0)
    assert not codes.redeem(late, now=161.0)
