"""The API's one error type: every problem is answered as JSON `{"error": ..., "detail": ..., ...extra}`."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


class ApiError(Exception):
    """An error answered as JSON: HTTP `status`, one-line `error`, `detail` saying what to do, extra keys."""

    def __init__(self, status: int, error: str, detail: str | None = None, **extra: Any):
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail
        self.extra = extra

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        body = {"error": self.error, "detail": self.detail, **self.extra}
        headers = {**({"Retry-After": "1"} if self.status == 503 else {}), **(headers or {})} or None
        return JSONResponse(body, status_code=self.status, headers=headers)

    def __str__(self) -> str:
        return f"{self.error} → {self.detail}" if self.detail else self.error
