"""Per-stage wall time of ``make pipeline``: where the main job's time goes.

``itsm timing run --stage NAME -- COMMAND…`` runs one stage as a subprocess, measures its
wall time and records it; ``itsm timing show`` prints the table and writes
``reports/pipeline_timing.json``::

    {"total_seconds": 1234.5, "stages": [{"name": "data", "seconds": 12.3, "rc": 0}, …],
     "started": "…", "finished": "…", "git_commit": "…"}

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
    t0 = time.perf_counter()
    try:
        rc = subprocess.call(list(command))
    except FileNotFoundError as exc:
        raise ItsmError(f"cannot run {command[0]!r}: {exc}", where="itsm timing run") from None
    seconds = time.perf_counter() - t0
    part = _partial(Path(path))
    with file_lock(part):
        record = _read(part)
        record["stages"].append({"name": name, "seconds": round(seconds, 1), "rc": rc})
        atomic_write_json(part, record)
    return rc


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
