"""Small I/O helpers: atomic writes, fresh run directories, hashing, git commit.

Nothing already written is ever overwritten in place: files are written to a temporary
sibling and renamed (atomic on POSIX), and run directories must be new.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from itsm_core.core.errors import ItsmError


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return None if np.isnan(obj) else float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean_nans(obj: Any) -> Any:
    """Replace float NaN by None so the JSON is strict (no bare NaN tokens)."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _clean_nans(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_nans(v) for v in obj]
    return obj


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def _atomic_target(path: Path, suffix: str) -> Iterator[str]:
    """Yield a temp file name beside ``path``; on success rename it onto ``path``.

    On any error the temp file is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (temp file in the same folder + rename)."""
    path = Path(path)
    with _atomic_target(path, ".tmp") as tmp, open(tmp, "w", encoding=encoding) as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as pretty, strict JSON atomically."""
    text = json.dumps(_clean_nans(obj), indent=2, default=_json_default, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def json_safe(obj: Any) -> Any:
    """``obj`` as plain JSON values (numpy scalars / arrays, paths and sets converted, NaN
    as None): what :func:`atomic_write_json` writes, for a JSON column of a database."""
    return json.loads(json.dumps(_clean_nans(obj), default=_json_default, allow_nan=False))


def atomic_write_df(path: str | Path, df) -> Path:  # noqa: ANN001 - pandas DataFrame
    """Write a DataFrame (CSV or Parquet by suffix) atomically."""
    path = Path(path)
    with _atomic_target(path, path.suffix) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
    return path


def read_run_json(run_dir: str | Path, name: str, written_by: str) -> dict[str, Any]:
    """Read ``<run_dir>/<name>`` or say which command writes it."""
    p = Path(run_dir) / name
    if not p.exists():
        raise ItsmError(f"no {name} here", where=str(run_dir),
                        fix=f"point at a run directory written by `{written_by}`")
    return json.loads(p.read_text(encoding="utf-8"))


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path + '.lock'`` (serialises leaderboard appends)."""
    lock_path = Path(str(path) + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def new_run_dir(out: str | Path) -> Path:
    """Create ``out`` as a fresh directory; refuse if it already holds anything.

    A new run always gets a new directory so that no earlier result is lost.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ItsmError(
            "output directory already exists and is not empty; refusing to overwrite "
            "an earlier run",
            where=str(out),
            fix="pass a new --out directory (every run gets its own directory)",
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def timestamp() -> str:
    """UTC timestamp usable in file names, e.g. ``20261124T101500Z``."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def unique_run_dir(parent: str | Path, name: str) -> Path:
    """A fresh ``parent/<timestamp>_<name>[_N]`` directory (never an existing one)."""
    parent = Path(parent)
    base = f"{timestamp()}_{name}"
    for i in range(1000):
        cand = parent / (base if i == 0 else f"{base}_{i}")
        try:
            cand.mkdir(parents=True, exist_ok=False)
            return cand
        except FileExistsError:
            continue
    raise ItsmError("could not create a unique run directory", where=str(parent))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file (data hashes in run metadata)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_commit(cwd: str | Path | None = None) -> str | None:
    """Current git commit (with ``-dirty`` when the tree has changes), or None."""
    from itsm_core.core.config import PROJECT_ROOT

    cwd = cwd or PROJECT_ROOT
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def source_fingerprint(package_dir: str | Path | None = None) -> str:
    """SHA-256 over the names and contents of every ``.py`` file of the ``itsm_core``
    package: two runs with the same fingerprint ran the same code (whether or not it is
    committed), so a finished run can stand in for a repeat of itself."""
    root = Path(package_dir) if package_dir else Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@contextlib.contextmanager
def scratch_cwd() -> Iterator[Path]:
    """Run a block inside a throw-away working directory, then return and delete it.

    Some library tools write scratch files into the current directory (onnxruntime's
    symbolic shape inference saves ``sym_shape_infer_temp.onnx`` plus a data file of the
    whole model there when it gives up); inside this block they land in a temporary folder
    instead of the user's checkout. Paths handed to the block must be absolute.
    """
    before = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="itsm-scratch-") as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(before)
