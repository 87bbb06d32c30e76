"""Per-stage wall time of ``make pipeline``: where the main job's time goes.

``itsm timing run --stage NAME -- COMMAND…`` runs one stage as a subprocess, measures its
wall time and records it; ``itsm timing show`` prints the table and writes
``reports/pipeline_timing.json``::

    {"total_seconds": 1234.5, "stages": [{"name": "data", "seconds": 12.3, "rc": 0}, …],
     "started": "…", "finished": "…", "git_commit": "…"}

Inside a stage, every ``itsm`` command records its own wall time as a *step*
(``"steps": [{"stage": "index", "command": "itsm bench search", "seconds": 4.2}, …]``):
:func:`run_stage` names the stage in ``ITSM_TIMING_STAGE`` for its subprocess, and the CLI
calls :func:`record_step` when a command ends, so the table says which command of a stage
the time went to without a second run.

Stages are recorded in a working file next to it (``pipeline_timing.partial.json``) that
``itsm timing reset`` starts anew, so a failed stage still leaves the times of the stages
before it. Every finished record is also kept as ``models/results/timing/pipeline_<ts>.json``
(never overwritten), so a re-run can be set beside the run before it
(:func:`compare_runs`: what the embedding cache and run reuse save).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from itsm_core.core.config import REPORTS_DIR, RESULTS_DIR
from itsm_core.core.errors import ItsmError
from itsm_core.core.io import atomic_write_json, file_lock, git_commit, timestamp

TIMING_JSON = REPORTS_DIR / "pipeline_timing.json"
HISTORY_DIR = RESULTS_DIR / "timing"
STAGE_ENV = "ITSM_TIMING_STAGE"
"""Set by :func:`run_stage` for its subprocess: the stage an ``itsm`` command belongs to."""
PATH_ENV = "ITSM_TIMING_FILE"
"""Set by :func:`run_stage`: the timing file whose partial record takes the steps."""


def _partial(path: Path) -> Path:
    return path.with_name(path.stem + ".partial.json")


def reset(path: str | Path = TIMING_JSON) -> Path:
    """Start a new timing record (the previous finished one stays until :func:`finish`)."""
    part = _partial(Path(path))
    atomic_write_json(part, {"started": timestamp(), "git_commit": git_commit(), "stages": []})
    return part


def _read(part: Path) -> dict[str, Any]:
    if not part.exists():
        return {"started": timestamp(), "git_commit": git_commit(), "stages": []}
    return json.loads(part.read_text(encoding="utf-8"))


def run_stage(name: str, command: Sequence[str], path: str | Path = TIMING_JSON) -> int:
    """Run ``command``, record its wall time as stage ``name``; return its exit code.

    Args:
        name: the stage's name in the table (e.g. ``benchmark``).
        command: the argv to run (inherits stdout / stderr, so progress stays visible).
        path: the finished timing file; the stage goes into its partial file.

    Returns:
        The command's exit code (the caller exits with it).
    """
    if not command:
        raise ItsmError("no command to time", where="itsm timing run",
                        fix="itsm timing run --stage NAME -- make NAME")
    import os

    t0 = time.perf_counter()
    env = {**os.environ, STAGE_ENV: name, PATH_ENV: str(Path(path).resolve())}
    try:
        rc = subprocess.call(list(command), env=env)
    except FileNotFoundError as exc:
        raise ItsmError(f"cannot run {command[0]!r}: {exc}", where="itsm timing run") from None
    seconds = time.perf_counter() - t0
    part = _partial(Path(path))
    with file_lock(part):
        record = _read(part)
        record["stages"].append({"name": name, "seconds": round(seconds, 1), "rc": rc})
        atomic_write_json(part, record)
    return rc


def record_step(command: str, seconds: float, rc: int | None = None,
                stage: str | None = None, path: str | Path | None = None) -> bool:
    """Record one command's wall time inside the stage now being timed.

    Args:
        command: what ran (``itsm bench search``); seconds: its wall time; rc: exit code
            where known.
        stage / path: default to ``ITSM_TIMING_STAGE`` / ``ITSM_TIMING_FILE`` (set by
            :func:`run_stage`).

    Returns:
        Whether a step was recorded (False outside a timed stage, so a user's own ``itsm``
        call never writes timing files).
    """
    import os

    stage = stage or os.environ.get(STAGE_ENV)
    path = path or os.environ.get(PATH_ENV)
    if not stage or not path:
        return False
    part = _partial(Path(path))
    with file_lock(part):
        record = _read(part)
        record.setdefault("steps", []).append(
            {"stage": stage, "command": command, "seconds": round(seconds, 1), "rc": rc})
        atomic_write_json(part, record)
    return True


def steps_table(record: dict[str, Any], min_seconds: float = 0.0) -> pd.DataFrame:
    """The ``itsm`` commands of each stage with their wall time and share of the total,
    longest first (``min_seconds``: leave out the short ones); empty without steps."""
    steps = pd.DataFrame(record.get("steps") or [],
                         columns=["stage", "command", "seconds", "rc"])
    if steps.empty:
        return steps[["stage", "command", "seconds"]]
    total = float(record.get("total_seconds") or sum(s["seconds"] for s in record["stages"]))
    steps = steps[steps["seconds"] >= min_seconds].sort_values("seconds", ascending=False)
    steps["share"] = (steps["seconds"] / total).map(lambda s: f"{s:.0%}")
    return steps[["stage", "command", "seconds", "share"]].reset_index(drop=True)


def finish(path: str | Path = TIMING_JSON, history: str | Path | None = HISTORY_DIR
           ) -> dict[str, Any]:
    """Write the finished timing file from the partial record (and a copy into
    ``history``) and return it."""
    path = Path(path)
    part = _partial(path)
    if not part.exists():
        raise ItsmError("no pipeline stages were timed", where=str(part),
                        fix="run `make pipeline` (it calls `itsm timing run` per stage)")
    record = _read(part)
    record["finished"] = timestamp()
    record["total_seconds"] = round(sum(s["seconds"] for s in record["stages"]), 1)
    atomic_write_json(path, record)
    if history is not None:
        keep = Path(history) / f"pipeline_{record['finished']}.json"
        n = 1
        while keep.exists():  # two runs finished in the same second: keep both
            keep, n = keep.with_name(f"pipeline_{record['finished']}_{n}.json"), n + 1
        atomic_write_json(keep, record)
    return record


def compare_runs(earlier: dict[str, Any], later: dict[str, Any]) -> pd.DataFrame:
    """Two pipeline records side by side: seconds per stage and ``earlier / later``."""
    a = {s["name"]: s["seconds"] for s in earlier["stages"]}
    b = {s["name"]: s["seconds"] for s in later["stages"]}
    names = list(dict.fromkeys([*a, *b]))
    rows = [{"name": n, "earlier s": a.get(n), "later s": b.get(n),
             "speed-up": round(a[n] / b[n], 1) if a.get(n) and b.get(n) else None}
            for n in names]
    ta, tb = float(earlier["total_seconds"]), float(later["total_seconds"])
    rows.append({"name": "total", "earlier s": round(ta, 1), "later s": round(tb, 1),
                 "speed-up": round(ta / tb, 1) if tb else None})
    return pd.DataFrame(rows)


def timing_table(record: dict[str, Any]) -> pd.DataFrame:
    """Stage, seconds, minutes and share of the total (last row: the total)."""
    stages = pd.DataFrame(record["stages"])
    total = float(record.get("total_seconds") or stages["seconds"].sum())
    stages["minutes"] = (stages["seconds"] / 60).round(1)
    stages["share"] = (stages["seconds"] / total).map(lambda s: f"{s:.0%}")
    tail = pd.DataFrame([{"name": "total", "seconds": round(total, 1),
                          "minutes": round(total / 60, 1), "share": "100%",
                          "rc": int(max(stages["rc"]))}])
    return pd.concat([stages, tail], ignore_index=True)[["name", "seconds", "minutes",
                                                          "share", "rc"]]
