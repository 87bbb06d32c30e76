"""One results schema for every run (evaluate, train, diagnose, …).

Each run writes ``<run_dir>/metrics.json`` (all metrics, CIs, data set, split, model,
git commit, configuration) and appends exactly one row to
``models/results/leaderboard.csv``. Both writes are atomic; the leaderboard append is
serialised with a file lock so concurrent runs never lose a row.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from itsm_core.core.config import LEADERBOARD_CSV
from itsm_core.core.errors import ItsmError
from itsm_core.core.io import (
    atomic_write_df,
    atomic_write_json,
    file_lock,
    git_commit,
    read_run_json,
    timestamp,
)
from itsm_core.metrics.format import fmt_ci

SCHEMA_VERSION = 1
HEADLINE_METRICS = ("ndcg@10", "mrr@10", "map@100", "recall@1", "recall@5", "recall@10",
                    "hit@10", "roc_auc", "pr_auc", "f1", "precision", "recall", "spearman")
ID_COLUMNS = ("run_id", "timestamp", "task", "dataset", "split", "relevance", "model",
              "model_kind", "base_model", "n_queries", "n_test_pairs")
TAIL_COLUMNS = ("threshold", "git_commit", "run_dir")


def make_record(*, task: str, model: str, model_kind: str, benchmark: dict[str, Any],
                metrics: dict[str, Any], per_dim: dict[str, Any] | None = None,
                per_category: list[dict[str, Any]] | None = None,
                model_spec: dict[str, Any] | None = None,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Assemble the metrics.json document of one run (the shared schema)."""
    rec: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": uuid.uuid4().hex[:12],
        "timestamp": timestamp(),
        "task": task,
        "model": model,
        "model_kind": model_kind,
        "base_model": (model_spec or {}).get("extra", {}).get("base_model")
        or (model_spec or {}).get("key") or model,
        "model_spec": model_spec,
        "git_commit": git_commit(),
        **{k: benchmark[k] for k in ("dataset", "split", "relevance") if k in benchmark},
        "benchmark": benchmark,
    }
    rec.update(metrics)
    rec["n_queries"] = benchmark.get("n_queries")
    rec["n_test_pairs"] = benchmark.get("n_test_pairs")
    rec["dims"] = per_dim or {}
    rec["per_category"] = per_category or []
    if extra:
        rec.update(extra)
    return rec


def leaderboard_row(record: dict[str, Any], run_dir: str | Path | None) -> dict[str, Any]:
    """Flatten a record into the leaderboard columns (metric, _ci_low, _ci_high)."""
    row = {k: record.get(k) for k in ID_COLUMNS}
    for m in HEADLINE_METRICS:
        row[m] = record.get(m)
        ci = record.get(f"{m}_ci") or [None, None]
        row[f"{m}_ci_low"], row[f"{m}_ci_high"] = ci[0], ci[1]
    row["threshold"] = record.get("threshold")
    row["git_commit"] = record.get("git_commit")
    row["run_dir"] = str(run_dir) if run_dir is not None else None
    return row


def append_leaderboard(record: dict[str, Any], run_dir: str | Path | None,
                       path: str | Path = LEADERBOARD_CSV) -> Path:
    """Append one row for ``record`` to the leaderboard CSV (atomic, locked)."""
    path = Path(path)
    row = pd.DataFrame([leaderboard_row(record, run_dir)])
    with file_lock(path):
        if path.exists() and path.stat().st_size > 0:
            old = pd.read_csv(path, dtype={"run_id": str, "git_commit": str})
            row = pd.concat([old, row], ignore_index=True)
        atomic_write_df(path, row)
    return path


def write_run(out_dir: str | Path, record: dict[str, Any],
              tables: dict[str, pd.DataFrame] | None = None, *,
              leaderboard: str | Path | None = LEADERBOARD_CSV) -> Path:
    """Write tables (CSV) then ``metrics.json`` (last, so its presence = complete run),
    then append the leaderboard row. ``out_dir`` must be new or empty.

    Args:
        out_dir: the run directory; record: the run's record (:func:`make_record`).
        tables: ``{name: DataFrame}`` written as ``<name>.csv``.
        leaderboard: the leaderboard CSV (None: no row).

    Returns:
        The ``metrics.json`` path.

    Raises:
        ItsmError: the directory already holds a run (never overwritten).
    """
    out_dir = Path(out_dir)
    if (out_dir / "metrics.json").exists():
        raise ItsmError("metrics.json already exists; refusing to overwrite an earlier run",
                        where=str(out_dir), fix="pass a new --out directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, table in (tables or {}).items():
        atomic_write_df(out_dir / f"{name}.csv", table)
    atomic_write_json(out_dir / "metrics.json", record)
    if leaderboard is not None:
        append_leaderboard(record, out_dir, leaderboard)
    return out_dir / "metrics.json"


def unseen_model_name(model: str, trained_on: str) -> str:
    """The leaderboard name of ``model``'s run (task ``unseen``) on a data set it was not
    trained on; one spelling for the trainers that write it and the reports that read it."""
    return f"{model} (trained on {trained_on})"


def same_spec(a: str | None, b: str | None) -> bool:
    """Whether two model specs (a record's ``model_arg``) name the same model: folders
    compared resolved (``./x`` = ``/abs/x``), a ``hybrid:`` prefix kept, else as strings."""
    if a is None or b is None:
        return a is None and b is None

    def norm(x: str) -> str:
        x = str(x).strip()
        head, sep, rest = x.partition(":") if x.startswith("hybrid:") else ("", "", x)
        p = Path(rest).expanduser()
        return head + sep + (str(p.resolve()) if p.exists() else rest)

    return norm(a) == norm(b)


def relevance_key(value: Any) -> str:
    """The relevance signal as runs are compared by: ``links:<file name>`` rather than the
    links file's absolute path, so runs of the same data set made in another clone or
    folder still line up (``labels:…`` stays as it is)."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    text = str(value)
    return "links:" + Path(text[6:]).name if text.startswith("links:") else text


def read_leaderboard(path: str | Path = LEADERBOARD_CSV) -> pd.DataFrame:
    """The leaderboard as a DataFrame (empty frame with the columns when missing); the
    ``relevance`` column holds :func:`relevance_key` values."""
    path = Path(path)
    if not path.exists():
        cols = [*ID_COLUMNS, *[c for m in HEADLINE_METRICS
                               for c in (m, f"{m}_ci_low", f"{m}_ci_high")], *TAIL_COLUMNS]
        return pd.DataFrame(columns=cols)
    board = pd.read_csv(path, dtype={"run_id": str, "git_commit": str})
    if "relevance" in board:
        board["relevance"] = board["relevance"].map(relevance_key)
    return board


def format_with_ci(board: pd.DataFrame, metrics: Sequence[str] = ("ndcg@10", "mrr@10",
                   "recall@10", "map@100", "roc_auc", "f1"), digits: int = 3) -> pd.DataFrame:
    """Human table: ``0.512 [0.490, 0.534]`` per metric, sorted by the first metric."""
    out = board[["dataset", "model", "model_kind", "n_queries"]].copy()
    for m in metrics:
        out[m] = board.apply(lambda r, m=m: fmt_ci(r.get(m), r.get(f"{m}_ci_low"),
                                                   r.get(f"{m}_ci_high"), digits=digits), axis=1)
    order = board[metrics[0]].fillna(-1).to_numpy().argsort()[::-1]
    return out.iloc[order].sort_values("dataset", kind="stable").reset_index(drop=True)


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """Read a run's metrics.json."""
    return read_run_json(run_dir, "metrics.json", "itsm evaluate")
