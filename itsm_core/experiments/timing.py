"""Per-stage wall time of ``make pipeline``: where the main job's time goes.

``itsm timing run --stage NAME -- COMMAND…`` runs one stage as a subprocess, measures its
wall time and records it; ``itsm timing show`` prints the table and writes
``reports/pipeline_timing.json``::

    {"total_seconds": 1234.5, "stages": [{"name": "data", "seconds": 12.3, "rc": 0}, …],
     "started": "…", "finished": "…", "git_commit": "…"}

Stages are recorded in a working file next to it (``pipeline_timing.partial.json``) that
``itsm timing reset`` starts anew, so a failed stage still leaves the times of the stages
before it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from itsm_core.core.config import REPORTS_DIR
from itsm_core.core.errors import ItsmError
from itsm_core.core.io import atomic_write_json, file_lock, git_commit, timestamp

TIMING_JSON = REPORTS_DIR / "pipeline_timing.json"


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


def finish(path: str | Path = TIMING_JSON) -> dict[str, Any]:
    """Write the finished timing file from the partial record and return it."""
    path = Path(path)
    part = _partial(path)
    if not part.exists():
        raise ItsmError("no pipeline stages were timed", where=str(part),
                        fix="run `make pipeline` (it calls `itsm timing run` per stage)")
    record = _read(part)
    record["finished"] = timestamp()
    record["total_seconds"] = round(sum(s["seconds"] for s in record["stages"]), 1)
    atomic_write_json(path, record)
    return record


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
