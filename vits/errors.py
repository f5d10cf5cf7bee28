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
