"""The API on the studio's port: the studio's web server hands the API's paths to the API app.

Gradio builds and runs its own FastAPI app inside `launch()`, so the API goes in as an ASGI middleware
(`launch(app_kwargs={"middleware": [api_middleware(api, auth)]})`): requests for `/voice`, `/models...`,
`/status`, `/docs`, `/openapi.json` reach the API, everything else reaches Gradio unchanged. This keeps
`launch()` in charge, so `--share` links and the studio's login work as before.

With a studio login (`--auth user:pass`), API requests must send the same user and password as HTTP Basic
credentials (`curl -u user:pass`); anything else gets a JSON 401 and a `WWW-Authenticate` header, so a
browser opening /docs asks for them. Without a login the API is open, as the studio is.
"""

from __future__ import annotations

import base64
import hmac

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import ApiError

REALM = "Koe Studio"


def api_paths(api) -> frozenset[str]:
    """Every path the API app answers (/voice, /models/..., /status, /docs, /openapi.json ...)."""
    return frozenset(path for route in api.routes if (path := getattr(route, "path", None)))


def basic_credentials(scope: Scope) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic ...` header, or None."""
    for name, value in scope.get("headers", ()):
        if name != b"authorization":
            continue
        scheme, _, token = value.decode("latin-1").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return (user, password) if sep else None
    return None


class StudioApi:
    """ASGI middleware: the API's paths go to `api` (after the login check), the rest to the studio."""

    def __init__(self, app: ASGIApp, api: ASGIApp, auth: tuple[str, str] | None = None):
        self.app = app
        self.api = api
        self.paths = api_paths(api)
        self.auth = auth

    def _allowed(self, scope: Scope) -> bool:
        if self.auth is None:
            return True
        given = basic_credentials(scope)
        if given is None:
            return False
        user_ok = hmac.compare_digest(given[0].encode(), self.auth[0].encode())
        password_ok = hmac.compare_digest(given[1].encode(), self.auth[1].encode())
        return user_ok and password_ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        if not self._allowed(scope):
            error = ApiError(401, "this studio needs its login",
                             "send the studio's --auth user:password as HTTP Basic credentials, e.g. "
                             "curl -u user:password http://HOST:PORT/voice?text=...")
            await error.response(headers={"WWW-Authenticate": f'Basic realm="{REALM}"'})(scope, receive, send)
            return
        await self.api(scope, receive, send)


def api_middleware(api: ASGIApp, auth: tuple[str, str] | None = None) -> Middleware:
    """The middleware entry for Gradio's `launch(app_kwargs={"middleware": [...]})`."""
    return Middleware(StudioApi, api=api, auth=auth)
