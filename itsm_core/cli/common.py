"""What every command module shares: the error handler, option parsing and rendering.

Rendering only: no command module decides anything a library function could.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from itsm_core.core.errors import ItsmError

err = Console(stderr=True)
out = Console()


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print :class:`ItsmError` as one clear paragraph on stderr and exit 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ItsmError as exc:
            err.print("[bold red]error:[/]", escape(str(exc)), highlight=False,
                      soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper


def csv_list(value: str | None) -> list[str] | None:
    """``"a, b,,c"`` → ``["a", "b", "c"]``; None or empty → None."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def floats(value: str | None, option: str, example: str) -> list[float]:
    """Comma-separated numbers of an option, or a clear error."""
    try:
        return [float(x) for x in csv_list(value) or []]
    except ValueError:
        raise ItsmError(f"{option} takes comma-separated numbers", where=option,
                        fix=f"e.g. {option} {example}") from None


def print_frame(df: Any, title: str | None = None) -> None:
    """A DataFrame as a rich table (every cell escaped)."""
    t = Table(*[str(c) for c in df.columns], title=title)
    for _, r in df.iterrows():
        t.add_row(*[escape(str(v)) for v in r.to_numpy()])
    out.print(t)


def print_rows(columns: Iterable[str], rows: Iterable[Iterable[Any]], title: str | None = None,
               right: Iterable[str] = ()) -> None:
    """Rows of already-formatted cells under ``columns`` (those in ``right`` right-aligned)."""
    right = set(right)
    t = Table(title=title)
    for c in columns:
        t.add_column(c, justify="right" if c in right else "left")
    for row in rows:
        t.add_row(*[str(v) for v in row])
    out.print(t)


def print_record(rec: dict[str, Any]) -> None:
    """A run's headline metrics with their 95 % CIs."""
    from itsm_core.runs.schema import HEADLINE_METRICS

    rows = []
    for m in HEADLINE_METRICS:
        v, ci = rec.get(m), rec.get(f"{m}_ci") or [None, None]
        if v is not None:
            rows.append((m, f"{v:.3f}", f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci[0] is not None
                         else ""))
    print_rows(("metric", "value", "95% CI"), rows, right=("value", "95% CI"),
               title=f"{rec['model']} on {rec['dataset']} ({rec['split']}, "
               f"{rec['n_queries']} queries)")


def f3(v: Any) -> str:
    """A number with 3 decimals, ``–`` for missing / NaN."""
    try:
        return "–" if v is None or v != v else f"{float(v):.3f}"
    except (TypeError, ValueError):
        return "–"


def short(v: Any, n: int = 160) -> str:
    """A cell value cut to ``n`` characters (``…``), empty for missing."""
    import pandas as pd

    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return ""
    s = str(v)
    return s if len(s) <= n else s[: n - 1] + "…"
