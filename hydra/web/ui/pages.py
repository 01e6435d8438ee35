"""What every page handler shares: the session, CSRF, rendering, friendly errors.

A handler is ``async def handler(page: Page) -> Response``; :func:`endpoint`
wraps it so that it runs only for a signed-in session, only after the CSRF
check on a POST, and so that a gRPC error or bad input becomes a page with a
message, never a stack (docs/web.md).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import grpc
import jinja2
from google.protobuf.message import Message
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from hydra.errors import InvalidArgument
from hydra.web.state import WebState
from hydra.web.ui.devlogin import DevLogins
from hydra.web.ui.formatting import FILTERS
from hydra.web.ui.sessions import Session, SessionCookies, load_key, new_session

#: The HTTP status and the title of the page for each gRPC code a page may meet.
_ERRORS: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.UNAVAILABLE: (503, "Cannot reach the coordinators"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "Not allowed"),
    grpc.StatusCode.NOT_FOUND: (404, "Not found"),
    grpc.StatusCode.INVALID_ARGUMENT: (400, "Not accepted"),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "Not possible now"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "Already there"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "The coordinators did not answer in time"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "Too much at once"),
}


class Ui:
    """The pages' shared parts: templates, session cookies, dev sign-in codes."""

    def __init__(self, state: WebState) -> None:
        self.state = state
        self.cookies = SessionCookies(
            load_key(state.config.session_key_file), secure=state.config.https
        )
        self.dev_logins = DevLogins()
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("hydra.web.ui", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(FILTERS)

    def render(self, template: str, session: Session, status: int = 200, **values: Any) -> Response:
        """The page for ``session`` (its CSRF token goes into every form)."""
        html = self.templates.get_template(template).render(session=session, **values)
        return HTMLResponse(html, status_code=status)

    def error(self, session: Session, status: int, title: str, message: str) -> Response:
        return self.render("error.html", session, status, title=title, message=message)


@dataclass(kw_only=True, slots=True)
class Page:
    """One request to a page: who asks, what they posted, how to answer."""

    ui: Ui
    request: Request
    session: Session
    form: FormData | None = None

    async def call(self, service: str, method: str, message: Message) -> Any:
        """A unary RPC with the signed-in user's credential."""
        return await self.ui.state.backend.call(service, method, message, token=self._token)

    def stream(self, service: str, method: str, message: Message) -> AsyncIterator[Any]:
        """A server-streaming RPC with the signed-in user's credential."""
        return self.ui.state.backend.stream(service, method, message, token=self._token)

    @property
    def _token(self) -> str | None:
        return self.session.token or None  # "" on an --insecure cluster: no credential

    def render(self, template: str, status: int = 200, **values: Any) -> Response:
        return self.ui.render(
            template, self.session, status, page_path=self.request.url.path, **values
        )

    def field(self, name: str, default: str = "") -> str:
        """A posted field (or a query parameter on a GET), stripped."""
        if self.form is not None and name in self.form:
            value = self.form[name]
            return value.strip() if isinstance(value, str) else default
        return self.request.query_params.get(name, default).strip()


Handler = Callable[[Page], Awaitable[Response]]


def see_other(url: str) -> RedirectResponse:
    """Where a successful POST sends the browser (so a reload does not post again)."""
    return RedirectResponse(url, status_code=303)


def endpoint(ui: Ui, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` as a Starlette endpoint, for signed-in users only."""

    async def serve(request: Request) -> Response:
        session = ui.cookies.read(request)
        if session is None or not session.signed_in:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return see_other(f"/login?next={quote(target, safe='')}")
        form = await request.form() if request.method == "POST" else None
        if form is not None and not csrf_ok(session, form):
            return csrf_refused(ui, session)
        try:
            return await handler(Page(ui=ui, request=request, session=session, form=form))
        except grpc.aio.AioRpcError as error:
            return rpc_error(ui, session, error)
        except InvalidArgument as error:
            return ui.error(session, 400, "Not accepted", str(error))

    return serve


def csrf_ok(session: Session, form: FormData) -> bool:
    """The form carries the session's CSRF token (compared in constant time)."""
    posted = form.get("csrf")
    return isinstance(posted, str) and hmac.compare_digest(posted, session.csrf)


def csrf_refused(ui: Ui, session: Session) -> Response:
    message = (
        "This form was not sent from a page of this site, or your session changed since "
        "it was shown (its security token is missing or wrong). Reload the page and try again."
    )
    return ui.error(session, 403, "Form refused", message)


def rpc_error(ui: Ui, session: Session, error: grpc.aio.AioRpcError) -> Response:
    """A coordinator's refusal or failure as a page with its message."""
    code, detail = error.code(), error.details() or ""
    if code is grpc.StatusCode.UNAUTHENTICATED:
        response = see_other("/login?expired=1")
        ui.cookies.write(response, new_session())
        return response
    status, title = _ERRORS.get(code, (502, "The coordinators could not do that"))
    if code is grpc.StatusCode.UNAVAILABLE:
        where = ", ".join(ui.state.config.coordinators)
        detail = f"cannot reach the coordinators ({where}): {detail}"
    return ui.error(session, status, title, f"{code.name}: {detail}")


def anonymous(ui: Ui, request: Request) -> Session:
    """The visitor's session, or a new one that is not signed in."""
    session = ui.cookies.read(request)
    return session if session is not None else new_session()
