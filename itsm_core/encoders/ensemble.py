"""Ensembles of trained models, evaluated like any model (a :class:`Scorer`).

An ensemble is named on the command line either inline, ``ensemble:<a>,<b>,…`` (members
are any model specs: registry keys, model folders), or as a folder holding
``itsm_ensemble.json`` written by ``itsm ensemble`` (members, weights, method, name).

Methods:

- ``concat`` (dense members only): each member's L2-normalised embedding, scaled by
  ``sqrt(w_i / sum w)``, concatenated. The result is unit length and its cosine equals
  the weighted mean of the members' cosines, so one vector per text serves search,
  distillation (the teacher's embedding) and export;
- ``zmean``: scores of each member standardised (z-score over the scored matrix or pair
  list) and averaged with the weights; works with lexical members too, but has no
  embedding.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from itsm_core.core.errors import ItsmError

ENSEMBLE_FILE = "itsm_ensemble.json"
PREFIX = "ensemble:"
METHODS = ("concat", "zmean")


@dataclass
class EnsembleConfig:
    """What an ensemble is made of (stored as ``itsm_ensemble.json``)."""

    members: list[str]
    weights: list[float] = field(default_factory=list)
    method: str = "concat"
    name: str = "ensemble"

    def __post_init__(self) -> None:
        if len(self.members) < 2:
            raise ItsmError("an ensemble needs at least two members", where="--members",
                            fix="pass two or more model specs, comma-separated")
        if not self.weights:
            self.weights = [1.0] * len(self.members)
        if len(self.weights) != len(self.members):
            raise ItsmError(f"{len(self.weights)} weights for {len(self.members)} members",
                            where="--weights", fix="give one weight per member")
        if any(w <= 0 for w in self.weights):
            raise ItsmError("ensemble weights must be positive", where="--weights")
        if self.method not in METHODS:
            raise ItsmError(f"unknown ensemble method {self.method!r}", where="--method",
                            fix=f"choose from {list(METHODS)}")
        if any(is_ensemble_spec(m) for m in self.members):
            raise ItsmError("ensembles cannot be nested", where="--members",
                            fix="list the members of the inner ensemble directly")


def is_ensemble_spec(spec: str) -> bool:
    """True for ``ensemble:a,b`` or a folder holding ``itsm_ensemble.json``."""
    s = str(spec).strip()
    return s.startswith(PREFIX) or (Path(s).is_dir() and (Path(s) / ENSEMBLE_FILE).exists())


def _member_path(member: str) -> str:
    """Members saved as paths relative to the project root resolve from anywhere."""
    from itsm_core.core.config import PROJECT_ROOT

    p = Path(member)
    if not p.is_absolute() and not p.exists() and (PROJECT_ROOT / p).exists():
        return str(PROJECT_ROOT / p)
    return member


def inline_members(spec: str) -> list[str]:
    """The member specs of an inline ``ensemble:<a>,<b>,…`` spec, as written."""
    return [m.strip() for m in str(spec).strip()[len(PREFIX):].split(",") if m.strip()]


def _member_label(member: str) -> str:
    """A member's short name: a trained folder's recorded name (``minilm-ft``, not
    ``model``), else the last part of the spec."""
    from itsm_core.encoders.registry import MODEL_META_FILE, spec_from_path

    p = Path(member).expanduser()
    if (p / MODEL_META_FILE).is_file():
        try:
            return spec_from_path(p).key
        except ItsmError:
            pass  # a malformed file is reported when the member is loaded
    return p.name


def read_ensemble(spec: str) -> tuple[EnsembleConfig, Path | None]:
    """The ensemble config of a spec string or folder (and the folder, if any)."""
    s = str(spec).strip()
    if s.startswith(PREFIX):
        members = inline_members(s)
        name = "ensemble(" + "+".join(_member_label(m) for m in members) + ")"
        return EnsembleConfig(members=members, name=name), None
    folder = Path(s)
    try:
        data = json.loads((folder / ENSEMBLE_FILE).read_text(encoding="utf-8"))
        cfg = EnsembleConfig(**data)
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise ItsmError(f"malformed ensemble file ({type(exc).__name__}: {exc})",
                        where=str(folder / ENSEMBLE_FILE),
                        fix="re-create it with `itsm ensemble`") from exc
    return cfg, folder


def create_ensemble(members: Sequence[str], out: str | Path, *, name: str | None = None,
                    weights: Sequence[float] | None = None, method: str = "concat",
                    check: bool = True, trained_on: str | None = None) -> Path:
    """Write an ensemble folder (``itsm_ensemble.json``); members must resolve.

    Paths inside the project are stored relative to the project root. With
    ``trained_on``, ``members`` are model NAMES (e.g. ``minilm-ft``) and the newest trained
    run of each on that data set is used.
    """
    if trained_on:
        members = trained_model_dirs(members, trained_on)
    from itsm_core.core.config import PROJECT_ROOT
    from itsm_core.core.io import atomic_write_json, new_run_dir
    from itsm_core.encoders.registry import resolve_spec
    from itsm_core.encoders.scorers import LEXICAL

    stored = []
    for m in members:
        p = Path(m).expanduser()
        if p.exists():
            p = p.resolve()
            stored.append(str(p.relative_to(PROJECT_ROOT)) if PROJECT_ROOT in p.parents
                          else str(p))
        else:
            stored.append(m)
        if check and m.lower() not in LEXICAL:
            resolve_spec(m)  # clear error for an unknown member, before writing anything
    cfg = EnsembleConfig(members=stored, weights=list(weights or []), method=method,
                         name=name or Path(out).name)
    folder = new_run_dir(out)
    atomic_write_json(folder / ENSEMBLE_FILE, asdict(cfg))
    return folder


def trained_model_dirs(names: Sequence[str], dataset: str) -> list[str]:
    """Model folders of the newest test-evaluated run of each model name on ``dataset``.

    E.g. ``["minilm-ft", "minilm-simcse-ft"]`` → the ``model/`` folders of those runs (the
    run store's :func:`~itsm_core.runs.store.latest_model_dir`, the lookup every
    ``minilm-ft``-style name goes through).
    """
    from itsm_core.runs.store import latest_model_dir

    out = []
    for n in names:
        found = latest_model_dir(dataset, n)
        if found is None:
            raise ItsmError(f"no trained run of {n!r} on {dataset} with a model folder",
                            where="--members",
                            fix="train it first (e.g. `itsm train` / `itsm pretrain`), or "
                            "pass model folders")
        out.append(found)
    return out


def _z(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    finite = np.isfinite(x)
    if not finite.any():
        return x
    mu, sd = x[finite].mean(), x[finite].std()
    return (x - mu) / (sd if sd > 0 else 1.0)


class EnsembleScorer:
    """Scorer over several member scorers (see module docstring for the methods)."""

    def __init__(self, config: EnsembleConfig, members: Sequence[Any],
                 folder: Path | None = None):
        """Args:
            config: what the ensemble is (members, weights, method, name).
            members: one built Scorer per ``config.members`` entry, in order (the factory,
                :func:`itsm_core.encoders.factory.load_scorer`, builds them).
            folder: the ensemble folder, when it came from one.
        """
        from itsm_core.encoders.registry import ModelSpec

        spec = str(folder) if folder else ",".join(config.members)
        self.config, self.folder = config, folder
        self.members = list(members)
        dense = all(m.kind == "dense" for m in self.members)
        if self.config.method == "concat" and not dense:
            raise ItsmError("method 'concat' needs dense (embedding) members only",
                            where=str(spec), fix="use method 'zmean' to mix in tfidf/bm25")
        self.name = self.config.name
        self.kind = "dense" if dense else "hybrid"
        w = np.asarray(self.config.weights, dtype=np.float64)
        self.weights = w / w.sum()
        dim = sum(getattr(m, "spec", None).dim for m in self.members) if dense else 0
        self.spec = ModelSpec(
            key=self.name, hub_id=None, dim=dim, path=str(self.folder) if self.folder
            else None, extra={"base_model": self.name, "ensemble": self.config.members,
                              "method": self.config.method,
                              "weights": [float(x) for x in self.weights]})

    @property
    def dims(self) -> tuple[int | None, ...]:
        return (None,)

    def embed(self, texts: Sequence[str], role: str = "document") -> np.ndarray:
        """Concatenated, weight-scaled, unit-length embedding (``concat`` only)."""
        if self.config.method != "concat":
            raise ItsmError("this ensemble has no embedding (method 'zmean' averages "
                            "scores)", where=self.name, fix="use an ensemble with method "
                            "'concat' as a teacher / for search")
        parts = [np.sqrt(w) * m.embed(list(texts), role)
                 for w, m in zip(self.weights, self.members)]
        return np.hstack(parts).astype(np.float32)

    def _combine(self, scores: list[np.ndarray]) -> np.ndarray:
        if self.config.method == "zmean":
            scores = [_z(s) for s in scores]
        return sum(w * s for w, s in zip(self.weights, scores)).astype(np.float32)

    def score_matrix(self, queries, corpus, dim=None) -> np.ndarray:
        if self.config.method == "concat":
            return self.embed(list(queries), "query") @ self.embed(list(corpus), "document").T
        return self._combine([m.score_matrix(queries, corpus) for m in self.members])

    def score_pairs(self, a, b, dim=None) -> np.ndarray:
        if self.config.method == "concat":
            return np.einsum("ij,ij->i", self.embed(list(a), "query"),
                             self.embed(list(b), "document"))
        return self._combine([m.score_pairs(a, b) for m in self.members])


def member_specs(config: EnsembleConfig) -> list[str]:
    """The member specs of an ensemble, with project-relative paths resolved."""
    return [_member_path(m) for m in config.members]
