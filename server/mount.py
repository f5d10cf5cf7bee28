"""The API on the studio's port: the studio's web server hands the API's paths to the API app.

Gradio builds and runs its own FastAPI app inside `launch()`, so the API goes in as an ASGI middleware
(`launch(app_kwargs={"middleware": [api_middleware(api, auth)]})`): requests for `/voice`, `/models...`,
`/tools/...`, `/status`, `/docs`, `/openapi.json` reach the API, everything else reaches Gradio unchanged. This keeps
`launch()` in charge, so `--share` links and the studio's login work as before.

With a studio login (`--auth user:pass`), API requests must send the same user and password as HTTP Basic
credentials (`curl -u user:pass`); anything else gets a JSON 401 and a `WWW-Authenticate` header, so a
browser opening /docs asks for them. Without a login the API is open, as the studio is.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import os

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import ApiError

REALM = "Koe Studio"


def reachable_from_outside(host: str | None) -> bool:
    """Whether binding `host` lets other machines connect (0.0.0.0, ::, a LAN address, a host name)."""
    name = (host or "127.0.0.1").strip().strip("[]")
    if name.lower() == "localhost":
        return False
    try:
        return not ipaddress.ip_address(name).is_loopback
    except ValueError:
        return True


def open_host_warning(host: str | None, port: int | None, what: str, fix: str) -> str | None:
    """The warning line for serving `what` on a reachable `host` with no login, or None when `host` is local."""
    if not reachable_from_outside(host):
        return None
    return (f"--host {host} makes {what} reachable from other machines with no login: anyone who can reach "
            f"port {port} can use it; {fix}")


def port_busy(host: str | None, port: int) -> str | None:
    """A one-line reason when `port` on `host` cannot be bound (another program listens there), else None."""
    import errno
    import socket

    name = (host or "127.0.0.1").strip().strip("[]")
    family = socket.AF_INET6 if ":" in name else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and Gradio bind it
        try:
            probe.bind((name, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return None  # a bad address: the server's own error says it better
            return (f"port {port} on {name} is already in use (another studio, API server or program listens "
                    f"there) → stop that program, or pick another port with --port {port + 1}")
    return None


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


DOCS_ASSETS = "/docs-assets/"


class OfflineDocs:
    """ASGI wrapper: `/docs` is Swagger UI served from the swagger-ui-bundle package (files under
    /docs-assets/), so the docs page works with no internet; FastAPI's own page loads it from a CDN.
    Without the package, requests pass through to `app` unchanged."""

    def __init__(self, app: ASGIApp, title: str = "Koe Studio voice API"):
        self.app, self.title = app, title
        try:
            from swagger_ui_bundle import swagger_ui_path
        except ImportError:
            swagger_ui_path = None
        self.folder = swagger_ui_path
        self.files = frozenset(os.listdir(swagger_ui_path)) if swagger_ui_path else frozenset()

    def handles(self, path: str | None) -> bool:
        return bool(self.files) and (path == "/docs" or (path or "").startswith(DOCS_ASSETS))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if scope["type"] != "http" or not self.handles(path):
            await self.app(scope, receive, send)
            return
        from fastapi.openapi.docs import get_swagger_ui_html
        from starlette.responses import FileResponse, PlainTextResponse

        if path == "/docs":
            response = get_swagger_ui_html(
                openapi_url="/openapi.json", title=f"{self.title} - docs",
                swagger_js_url=f"{DOCS_ASSETS}swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS}swagger-ui.css",
                swagger_favicon_url=f"{DOCS_ASSETS}favicon-32x32.png")
        elif (name := path[len(DOCS_ASSETS):]) in self.files:  # only the package's own files, by name
            response = FileResponse(os.path.join(self.folder, name))
        else:
            response = PlainTextResponse("not found", status_code=404)
        await response(scope, receive, send)


class StudioApi:
    """ASGI middleware: the API's paths go to `api` (after the login check), the rest to the studio."""

    def __init__(self, app: ASGIApp, api: ASGIApp, auth: tuple[str, str] | None = None):
        self.app = app
        self.api = OfflineDocs(api)
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
        path = scope.get("path")
        if scope["type"] != "http" or (path not in self.paths and not self.api.handles(path)):
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
