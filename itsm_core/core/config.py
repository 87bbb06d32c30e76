"""Paths and defaults shared by every stage.

Paths resolve relative to the project root (the folder holding ``pyproject.toml``), or
to ``$ITSM_HOME`` when set, so the package works from notebooks, the CLI and tests alike.
"""

from __future__ import annotations

import os
from pathlib import Path


def _find_root() -> Path:
    env = os.environ.get("ITSM_HOME")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parents[2]  # itsm_core/core/config.py -> project
    if (here / "pyproject.toml").exists():
        return here
    return Path.cwd().resolve()


PROJECT_ROOT: Path = _find_root()
DATA_DIR: Path = PROJECT_ROOT / "data_new"
RAW_DIR: Path = DATA_DIR / "raw"
PROCESSED_DIR: Path = DATA_DIR / "processed"
MODELS_DIR: Path = PROJECT_ROOT / "models"
RESULTS_DIR: Path = MODELS_DIR / "results"
RUNS_DIR: Path = RESULTS_DIR / "runs"
LEADERBOARD_CSV: Path = RESULTS_DIR / "leaderboard.csv"
REPORTS_DIR: Path = PROJECT_ROOT / "reports"
NOTEBOOKS_DIR: Path = PROJECT_ROOT / "notebooks"
CACHE_DIR: Path = Path(os.environ.get("ITSM_CACHE", Path.home() / ".cache" / "itsm"))

SEED: int = 42
"""Global default seed: splits, sampling and bootstrap are deterministic given it."""

SPLIT_FRACTIONS: dict[str, float] = {"train": 0.7, "validation": 0.1, "test": 0.2}
"""Default incident split (by incident, identical texts kept together)."""

SPLITS: tuple[str, ...] = ("train", "validation", "test")

BOOTSTRAP_RESAMPLES: int = 1000
CI_LEVEL: float = 0.95
MATRYOSHKA_DIMS: tuple[int, ...] = (256, 128, 64)
"""Truncated dimensions evaluated beside the full one."""

DATASETS: tuple[str, ...] = ("it_tickets", "gitbugs_hadoop")


def reuse_runs() -> bool:
    """False when ``ITSM_REUSE_RUNS`` is ``0``/``off``: then training and export redo a run
    even when a finished one of the identical recipe exists."""
    return os.environ.get("ITSM_REUSE_RUNS", "1").strip().lower() not in {
        "0", "off", "false", "no"}


def offline() -> bool:
    """True when no model hub may be contacted (``HF_HUB_OFFLINE``/``ITSM_OFFLINE`` set)."""
    for var in ("ITSM_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return True
    return False
