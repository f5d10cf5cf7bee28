"""The one exception type users see from the library.

Every error a user can cause says what went wrong, where (file, line, clip) and what to do about it.
"""

from __future__ import annotations


class KoeError(Exception):
    """A problem the user can fix.

    Args:
        problem: what went wrong, in plain words.
        where: the file (and line, clip, tensor) it concerns, if any.
        fix: what to do about it, if known.
    """

    def __init__(self, problem: str, where: str | None = None, fix: str | None = None):
        self.problem = problem
        self.where = where
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.where}: {self.problem}" if self.where else self.problem
        if self.fix:
            text += f" → {self.fix}"
        return text


HUB = "https://huggingface.co"


def one_line_reason(exc: BaseException, limit: int = 300) -> str:
    """An exception as one short line: its type and message, whitespace folded (the hub's span many lines)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def hub_download_fix(endpoint: str | None) -> str:
    """What to do about a failed Hugging Face download; advises a mirror only to those not already using one."""
    import os

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return "downloads are switched off (HF_HUB_OFFLINE=1): unset it, or put the files in the folder by hand"
    if endpoint and endpoint.rstrip("/") != HUB:
        return (f"check the network; the mirror {endpoint} may be down or lack this repository: try "
                f"--endpoint {HUB}, or put the files in the folder by hand")
    return ("check the network; where huggingface.co is blocked (e.g. in China) use --endpoint "
            "https://hf-mirror.com (or hub: endpoint in config.yml), or put the files in the folder by hand")
