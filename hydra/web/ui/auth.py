"""Signing in and out (docs/web.md, "Sign-in and sessions").

The credential is posted once, checked with a cheap read (ClusterService.Status,
which also says who the coordinator takes it for), and kept only inside the
encrypted session cookie.
"""

from __future__ import annotations

import grpc
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hydra.v1 import cluster_service_pb2 as cluster_pb
from hydra.web.ui.pages import (
    Page,
    Ui,
    anonymous,
    csrf_ok,
    csrf_refused,
    endpoint,
    rpc_error,
    see_other,
)
from hydra.web.ui.sessions import Session, new_session, signed_in

_EXPIRED = "Your sign-in ended or your credential is no longer accepted; sign in again."


def routes(ui: Ui) -> list[BaseRoute]:
    async def login_form(request: Request) -> Response:
        return await _login_form(ui, request)

    async def login(request: Request) -> Response:
        return await _login(ui, request)

    async def dev_login(request: Request) -> Response:
        return await _dev_login(ui, request)

    return [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/login/dev", dev_login, methods=["GET"]),
        Route("/logout", endpoint(ui, _logout), methods=["POST"]),
    ]


def _next(target: str) -> str:
    """Where to go after sign-in: a path of this site only (no open redirect)."""
    if target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/tasks"


async def _login_form(ui: Ui, request: Request, problem: str = "", status: int = 200) -> Response:
    session = anonymous(ui, request)
    if session.signed_in and not problem:
        return see_other(_next(request.query_params.get("next", "")))
    if not problem and request.query_params.get("expired"):
        problem = _EXPIRED
    open_cluster = await _without_credential(ui)
    response = ui.render(
        "login.html",
        session,
        status,
        next=_next(request.query_params.get("next", "")),
        problem=problem,
        open_cluster=open_cluster,
        page_path="/login",
    )
    ui.cookies.write(response, session)
    return response


async def _without_credential(ui: Ui) -> bool:
    """True when the coordinators accept calls without a credential (--insecure)."""
    try:
        await ui.state.backend.call(
            "ClusterService", "Status", cluster_pb.ClusterStatusRequest(), token=None, deadline=3
        )
    except grpc.aio.AioRpcError:
        return False
    return True


async def _login(ui: Ui, request: Request) -> Response:
    session = ui.cookies.read(request)
    form = await request.form()
    if session is None or not csrf_ok(session, form):
        return csrf_refused(ui, session or new_session())
    credential = form.get("credential")
    token = credential.strip() if isinstance(credential, str) else ""
    target = form.get("next")
    return await _sign_in(ui, session, token, _next(target if isinstance(target, str) else ""))


async def _sign_in(ui: Ui, session: Session, token: str, target: str) -> Response:
    try:
        status = await ui.state.backend.call(
            "ClusterService", "Status", cluster_pb.ClusterStatusRequest(), token=token or None
        )
    except grpc.aio.AioRpcError as error:
        if error.code() is not grpc.StatusCode.UNAUTHENTICATED:
            return rpc_error(ui, session, error)
        problem = (
            "That credential was not accepted." if token else "This cluster needs a credential."
        )
        response = ui.render(
            "login.html", session, 401, next=target, problem=problem, open_cluster=False,
            page_path="/login",
        )  # fmt: skip
        ui.cookies.write(response, session)
        return response
    caller = status.caller
    response = see_other(target)
    ui.cookies.write(response, signed_in(token, caller.name, caller.role, caller.scope))
    return response


async def _dev_login(ui: Ui, request: Request) -> Response:
    """The one-time link `hydra web` printed for `hydra dev`'s local admin."""
    session = anonymous(ui, request)
    path = ui.state.config.dev_login_credential
    if path is None:
        return ui.error(session, 404, "Not found", "This server prints no sign-in link.")
    if not ui.dev_logins.redeem(request.query_params.get("code", "")):
        message = (
            "This sign-in link was used already or has expired. Sign in with the local admin's "
            "credential (the file `hydra dev` names), or restart `hydra dev` for a new link."
        )
        return ui.error(session, 403, "Sign-in link not valid", message)
    try:
        token = path.read_text().strip()
    except OSError as error:
        return ui.error(
            session, 500, "Cannot sign in", f"cannot read the credential: {error.strerror}"
        )
    return await _sign_in(ui, session, token, "/tasks")


async def _logout(page: Page) -> Response:
    response = see_other("/login")
    page.ui.cookies.write(response, new_session())
    return response
