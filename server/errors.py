"""The API's one error type: every problem is answered as JSON `{"error": ..., "detail": ..., ...extra}`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("server")


class ApiError(Exception):
    """An error answered as JSON: HTTP `status`, one-line `error`, `detail` saying what to do, extra keys.

    `code` is the number Bert-VITS2's hiyoriUI server answers for the same problem (its JSON `status`, e.g.
    13 for an unknown speaker_name); it goes into the body as `"status"`, so a hiyoriUI client reads it too.
    """

    def __init__(self, status: int, error: str, detail: str | None = None, *, code: int | None = None,
                 **extra: Any):
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail
        self.code = code
        self.extra = extra

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        body = {"error": self.error, "detail": self.detail, **self.extra}
        if self.code is not None:
            body["status"] = self.code
        headers = {**({"Retry-After": "1"} if self.status == 503 else {}), **(headers or {})} or None
        return JSONResponse(body, status_code=self.status, headers=headers)

    def __str__(self) -> str:
        return f"{self.error} → {self.detail}" if self.detail else self.error


class AnswerCrashes:
    """ASGI middleware: an exception no route handled becomes a JSON 500 (with the traceback in the log).

    Starlette's own last-resort handler answers and then re-raises, and uvicorn closes a connection whose
    request raised, so the client's next request on that keep-alive connection was reset. Here the error
    is answered and not raised again; the connection stays usable.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            log.exception("request %s %s failed", scope.get("method"), scope.get("path"))
            if started:  # half an answer is out: only closing the connection can tell the client
                raise
            error = ApiError(500, f"internal error: {type(exc).__name__}: {exc}",
                             "this is a bug in the server; the log has the traceback")
            await error.response()(scope, receive, send)
