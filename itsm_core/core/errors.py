"""User-facing errors.

Every problem a user can cause (bad file, missing column, unknown model, …) is raised as
:class:`ItsmError`, whose message names *what* is wrong, *where* (the file or option)
and *how to fix it*. The CLI prints the message and exits non-zero without a traceback.
"""

from __future__ import annotations


class ItsmError(Exception):
    """An error caused by user input, with a message that says what to do.

    Args:
        problem: what is wrong, in one sentence.
        where: the file, column, option or model the problem is in (optional).
        fix: what the user should do about it (optional).
    """

    def __init__(self, problem: str, *, where: str | None = None, fix: str | None = None):
        self.problem = problem
        self.where = where
        self.fix = fix
        parts = []
        if where:
            parts.append(f"{where}: ")
        parts.append(problem)
        if fix:
            parts.append(f"\n  -> {fix}")
        super().__init__("".join(parts))
