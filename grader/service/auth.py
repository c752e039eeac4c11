"""Who is asking: session cookies, roles, CSRF tokens, and the limit on a request's size."""

from __future__ import annotations

import hmac
import secrets
from typing import ClassVar

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grader.service.store import Role, Session, Store

SESSION_COOKIE = "grader_session"
# Before sign-in there is no session: the sign-in form's CSRF token is this cookie's value.
SIGNIN_COOKIE = "grader_signin"


def cookie_name(request: Request, name: str) -> str:
    """A cookie's name: behind https, with the __Host- prefix, so that browsers take it only
    from this host, never from a sibling subdomain's page setting it for the parent domain
    (which would sign a student into the page author's account: a tossed session cookie)."""
    return f"__Host-{name}" if request.app.state.config.https else name


def set_cookie(response: Response, name: str, value: str, secure: bool, max_age: int) -> None:
    """A cookie no script can read and no other site's form sends."""
    response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict",
                        secure=secure, path="/")


def new_signin_token() -> str:
    """The sign-in form's CSRF token."""
    return secrets.token_urlsafe(32)


def session(request: Request, role: Role | None = None) -> Session:
    """The signed-in user of a request (of `role` when given): else a page that sends a
    browser to sign in (303) or refuses (403)."""
    store: Store = request.app.state.store
    key = request.cookies.get(cookie_name(request, SESSION_COOKIE))
    found = store.session(key) if key else None
    if found is None:
        if request.method == "GET":
            raise HTTPException(303, headers={"Location": "/login"})
        raise HTTPException(403, "Your session has ended: sign in again.")
    if role is not None and found.user.role != role:
        raise HTTPException(403, "This page is for instructors.")
    return found


def same_token(given: object, expected: str) -> bool:
    """A form's CSRF token compared in constant time."""
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


def from_this_site(request: Request) -> None:
    """Refuse (403) a form a browser says another site sent, a sibling subdomain included.

    The sign-in form's token is a cookie's value, and a page on a sibling subdomain (student
    pages on the same university domain, say) can set a cookie for this one and is same-site,
    so SameSite lets its post through: it could sign a student into the page author's account,
    whose submissions they would then make. Browsers name the sender in Sec-Fetch-Site.
    """
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise HTTPException(403, "This form was sent from another site: open this server's own "
                                 "page and try again.")


async def checked_form(request: Request, current: Session) -> FormData:
    """The request's form, once it comes from this site and its CSRF token matches the
    session's (else 403)."""
    from_this_site(request)
    form = await request.form(max_files=1, max_fields=10)
    if not same_token(form.get("csrf"), current.csrf):
        await form.close()
        raise HTTPException(403, "The form is out of date or was not sent by this site: "
                                 "reload the page and try again.")
    return form


class BodyTooLarge(Exception):
    """A request body beyond the server's limit."""


class LimitBody:
    """Refuses (413) a request whose body exceeds `max_bytes`, before or while it arrives, so
    that no oversized upload is buffered or spooled to disk."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen, started = 0, False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = f"{self.max_bytes // 1024} KiB"
        # Closing the connection stops the rest at once; kept open, it would be read (and
        # dropped) for as long as the client keeps sending.
        response = Response(f"The upload is too large: the limit is about {limit}.\n",
                            status_code=413, media_type="text/plain",
                            headers={"connection": "close"})
        await response(scope, receive, send)


class SecurityHeaders:
    """Headers on every response: no scripts at all, no framing, no content sniffing."""

    HEADERS: ClassVar[list[tuple[bytes, bytes]]] = [
        (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'; "
         b"img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
        (b"cache-control", b"no-store"),
    ]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)

