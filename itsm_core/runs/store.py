"""The one run store: every "newest run / newest artifact" lookup of the workbench.

Runs are found through the leaderboard (``models/results/leaderboard.csv``, one row per
run with its folder), artifacts (exports, indexes, benchmark JSONs, ablation tables)
through their folders, whose names start with a UTC timestamp, so the newest sorts last.
Every stage that needs "the newest X" asks here; none scans folders on its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from itsm_core.core.config import LEADERBOARD_CSV
from itsm_core.runs.schema import read_leaderboard

ABLATION_MARK = "-ablation-"
"""Model names of ablation variants contain this; they are hidden from the main views."""


def latest_per_model(board: pd.DataFrame, task: str | None = "evaluate",
                     include_ablation: bool = False) -> pd.DataFrame:
    """Keep the newest row per (task, data set, split, model)."""
    if task is not None:
        board = board[board["task"] == task]
    if not include_ablation:
        board = board[~board["model"].astype(str).str.contains(ABLATION_MARK, regex=False)]
    return (board.sort_values("timestamp")
            .drop_duplicates(["task", "dataset", "split", "relevance", "model"], keep="last")
            .reset_index(drop=True))


def latest_run(model: str, dataset: str | None = None, *, task: str = "evaluate",
               split: str | None = "test", leaderboard: str | Path | None = None,
               require: str = "metrics.json",
               accept: Callable[[dict[str, Any]], bool] | None = None) -> Path | None:
    """Folder of the newest run of ``model`` (exact name) on ``dataset``.

    Args:
        model: the model name as the leaderboard records it (``minilm-ft``, ``bm25``, …).
        dataset: only runs on this data set (None: any).
        task: the leaderboard task (``evaluate``, ``diagnose``, …).
        split: only runs evaluated on this split (None: any; training runs evaluate on
            ``test``).
        leaderboard: the leaderboard CSV (default: the project's).
        require: a file the run folder must still hold.
        accept: an extra test on the run's ``metrics.json`` record (e.g. the exact model
            folder).

    Returns:
        The run folder, or None when there is none (or its files are gone).
    """
    board = read_leaderboard(leaderboard or LEADERBOARD_CSV)
    if board.empty:
        return None
    rows = board[(board["task"] == task) & (board["model"].astype(str) == model)]
    if dataset is not None:
        rows = rows[rows["dataset"] == dataset]
    if split is not None:
        rows = rows[rows["split"] == split]
    for d in rows.sort_values("timestamp", ascending=False)["run_dir"]:
        folder = Path(str(d))
        if not (folder / require).exists():
            continue
        if accept is not None and not accept(_record(folder)):
            continue
        return folder
    return None


def _record(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "metrics.json").read_text(encoding="utf-8"))


def model_dir_of(record: dict[str, Any]) -> str | None:
    """The model folder an evaluation record was made with (None: not a local folder)."""
    cand = record.get("model_arg") or (record.get("model_spec") or {}).get("path")
    return str(cand) if cand and Path(cand).is_dir() else None


def latest_model_dir(dataset: str, name: str, leaderboard: str | Path | None = None
                     ) -> str | None:
    """Folder of the newest model called exactly ``name`` evaluated on ``dataset``'s test
    split (a training run's ``model/``); None when there is none (or its folder is gone).

    An exact name, not a pattern: exports (``minilm-ft.onnx``), hybrids, SimCSE and
    distilled variants are other models.
    """
    run = latest_run(name, dataset, leaderboard=leaderboard,
                     accept=lambda rec: model_dir_of(rec) is not None)
    return model_dir_of(_record(run)) if run is not None else None


def latest_file(folder: str | Path, pattern: str) -> Path | None:
    """The newest file matching ``pattern`` in ``folder`` (names carry a timestamp)."""
    found = sorted(Path(folder).glob(pattern))
    return found[-1] if found else None


def latest_json(folder: str | Path, pattern: str) -> dict[str, Any] | None:
    """The newest JSON document matching ``pattern`` in ``folder``, or None."""
    f = latest_file(folder, pattern)
    return json.loads(f.read_text(encoding="utf-8")) if f is not None else None


def latest_folder(parent: str | Path, marker: str) -> Path | None:
    """The newest sub-folder of ``parent`` holding ``marker`` (export, index, …), or None."""
    found = sorted(p.parent for p in Path(parent).glob(f"*/{marker}"))
    return found[-1] if found else None


def latest_matching(parent: str | Path, marker: str, key: str, value: Any,
                    where: Callable[[dict], bool] | None = None) -> Path | None:
    """The newest sub-folder of ``parent`` whose JSON ``marker`` file has ``key == value``
    (e.g. the finished training run of one recipe) and, with ``where``, passes that test
    too; None when there is none; unreadable files are skipped."""
    for f in sorted(Path(parent).glob(f"*/{marker}"), reverse=True):
        try:
            meta = json.loads(f.read_text(encoding="utf-8"))
            if meta.get(key) == value and (where is None or where(meta)):
                return f.parent
        except (OSError, ValueError, AttributeError):
            continue
    return None


def latest_rows(board: pd.DataFrame, datasets: list[str] | None = None,
                models: list[str] | None = None, task: str = "evaluate") -> pd.DataFrame:
    """Newest leaderboard row per (data set, model), filtered by data sets and models."""
    board = latest_per_model(board, task=task)
    if datasets:
        board = board[board["dataset"].isin(datasets)]
    if models:
        board = board[board["model"].isin(models)]
    return board.reset_index(drop=True)


LEADERBOARD_TASKS = ("evaluate", "unseen")
"""Views of ``itsm leaderboard --task``: test evaluations, and fine-tunes on the data set
they were not trained on."""


def leaderboard_view(dataset: str | None = None, include_ablation: bool = False,
                     leaderboard: str | Path | None = None, task: str = "evaluate"
                     ) -> pd.DataFrame:
    """``itsm leaderboard``: the newest evaluation per model, value [95 % CI] per metric
    (``task="unseen"``: fine-tunes on the data set they were not trained on).

    Raises:
        ItsmError: when there is nothing to show (with what to run).
    """
    from itsm_core.core.errors import ItsmError
    from itsm_core.runs.schema import format_with_ci

    if task not in LEADERBOARD_TASKS:
        raise ItsmError(f"unknown leaderboard task {task!r}", where="--task",
                        fix=f"use one of {', '.join(LEADERBOARD_TASKS)}")
    board = latest_per_model(read_leaderboard(leaderboard or LEADERBOARD_CSV), task=task,
                             include_ablation=include_ablation)
    if dataset:
        board = board[board["dataset"] == dataset]
    if board.empty and task == "evaluate":
        raise ItsmError("the leaderboard is empty", fix="run `itsm evaluate` or `make pipeline`")
    if board.empty:
        raise ItsmError(f"the leaderboard has no {task!r} rows",
                        fix="train a model (`make train`): fine-tunes add their 'unseen' rows")
    return format_with_ci(board)
