"""`slotlab serve`: textual-serve, and a token in front of it when it listens beyond loopback.

On 127.0.0.1 only this machine's users reach the page (as with any local dev server). Bound to
another address, anyone who can reach the port would get a TUI that runs code paths, writes
logs and reads files: so the server then wants a token, printed once at start, in the first
URL (`?token=...`); the page and its websocket carry it on as a cookie. `--no-auth` serves
without one, with a warning.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from textual_serve.server import Server

COOKIE = "slotlab_token"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


class TokenServer(Server):
    """textual-serve with every request (page, websocket, statics) checked for the token."""

    def __init__(self, *args: Any, token: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.token = token

    async def _make_app(self) -> web.Application:
        app: web.Application = await super()._make_app()
        token = self.token

        @web.middleware
        async def check(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            given = request.query.get("token") or request.cookies.get(COOKIE) or ""
            if not hmac.compare_digest(given.encode(), token.encode()):
                raise web.HTTPForbidden(
                    text="slotlab serve: this page needs the token it printed\n"
                )
            response = await handler(request)
            if "token" in request.query and not response.prepared:
                response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
            return response

        app.middlewares.append(check)
        return app


def serve(command: str, host: str, port: int, no_auth: bool) -> None:
    url = f"http://{host}:{port}"
    if is_loopback(host) or no_auth:
        if not is_loopback(host):
            print(
                f"slotlab: warning: serving on {host}, beyond this machine, with no "
                "authentication (--no-auth): anyone who reaches the port gets the TUI",
                file=sys.stderr,
            )
        print(f"slotlab: serving on {url} (Ctrl+C stops)", file=sys.stderr)
        Server(command, host=host, port=port, title="slotlab").serve()
        return
    token = secrets.token_urlsafe(24)
    print(
        f"slotlab: warning: serving on {host}, beyond this machine: open {url}/?token={token} "
        "(requests without the token are refused; Ctrl+C stops)",
        file=sys.stderr,
    )
    TokenServer(command, host=host, port=port, title="slotlab", token=token).serve()
