"""Request guards: bearer token, body size, Host and Origin checks, and security headers on every response.

Pure ASGI middleware (it sees streaming bodies and server-sent events without buffering them).

- **Token**: when the service has a token, every route requires ``Authorization: Bearer <token>`` or the
  ``council_token`` cookie (set by ``POST /login``, HttpOnly, SameSite=Strict, for browsers, whose page
  loads and EventSource cannot send headers). Only ``/login`` itself is open. Compared in constant time.
- **Host** (on loopback): only ``localhost``/loopback Host headers, so a web page on another site cannot
  reach the service through DNS rebinding.
- **Origin**: a state-changing request (POST) from a browser must come from the service's own origin or a
  configured CORS origin: another site's page cannot start paid councils.
- **Size**: bodies above ``max_body_bytes`` get 413, whether announced by Content-Length or streamed.
- **Headers**: a Content-Security-Policy that allows only the service's own scripts and styles (an
  injected ``<script>`` would not run even if it reached a page), ``nosniff``, no framing, no referrer.
"""

from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException

from .settings import ServeSettings, is_loopback

__all__ = ["COOKIE", "Guard", "token_ok"]

COOKIE = "council_token"
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
_SECURITY_HEADERS = [
    (b"content-security-policy", _CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_OPEN_PATHS = {"/login"}


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def token_ok(expected: str | None, headers: dict[str, str]) -> bool:
    """True when no token is required, or the request carries it (bearer header or cookie)."""
    if expected is None:
        return True
    given = None
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    elif "cookie" in headers:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(headers["cookie"])
        except Exception:
            return False
        if COOKIE in jar:
            given = jar[COOKIE].value
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class _TooLarge(HTTPException):
    """A streamed body passed the limit (an HTTPException, so the framework answers 413 rather than
    calling it a parse error)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class Guard:
    """The ASGI middleware applying the checks above (see the module docstring)."""

    def __init__(self, app: Any, settings: ServeSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        refusal = self._refuse(scope, headers)
        if refusal is not None:
            await _reply(send, *refusal, html=_wants_html(headers) and refusal[0] == 401)
            return
        limit = self.settings.max_body_bytes
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit)
            return message

        started = False

        async def secured_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    h for h in _SECURITY_HEADERS if h[0] not in present]
            await send(message)

        try:
            await self.app(scope, limited_receive, secured_send)
        except _TooLarge:
            if not started:
                await _reply(send, 413, f"request body larger than {limit} bytes")

    def _refuse(self, scope: dict[str, Any], headers: dict[str, str]) -> tuple[int, str] | None:
        s = self.settings
        host = headers.get("host", "")
        hostname = urlsplit(f"//{host}").hostname or ""
        if is_loopback(s.host) and host and not is_loopback(hostname):
            return 421, f"unexpected Host {hostname!r}: this service answers on loopback only"
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > s.max_body_bytes:
            return 413, f"request body larger than {s.max_body_bytes} bytes"
        if scope["method"] == "POST" and "origin" in headers:
            origin = headers["origin"]
            own = {f"http://{host}", f"https://{host}"}
            if origin not in own and origin not in s.cors_origins:
                return 403, f"cross-origin request from {origin!r} refused (configure --cors-origin to allow it)"
        preflight = scope["method"] == "OPTIONS" and bool(s.cors_origins)  # CORS preflights carry no token
        if scope["path"] not in _OPEN_PATHS and not preflight and not token_ok(s.token, headers):
            return 401, "a valid bearer token is required (Authorization: Bearer TOKEN)"
        return None


def _wants_html(headers: dict[str, str]) -> bool:
    return "text/html" in headers.get("accept", "")


_LOGIN_FORM = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>council: sign in</title></head>"
               "<body><h1>council</h1><p>This service requires its token.</p><form method='post' action='/login'>"
               "<label>Token <input type='password' name='token' autocomplete='current-password'></label> "
               "<button type='submit'>Sign in</button></form></body></html>")


async def _reply(send: Any, status: int, message: str, html: bool = False) -> None:
    if html:
        body, ctype = _LOGIN_FORM.encode(), b"text/html; charset=utf-8"
    else:
        body = json.dumps({"error": {"message": message, "type": "council_error", "code": status}}).encode()
        ctype = b"application/json"
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), *_SECURITY_HEADERS]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="council"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
