"""Hybrid scoring: BM25 and dense cosine fused per query, as one Scorer.

Scores are fused by a weighted sum of z-scored rows (z-scores, not min-max, so one extreme
score does not squash the rest of its row) or by reciprocal rank fusion (``rrf``, k = 60).
:func:`choose_fusion` picks the method and dense weight on labelled VALIDATION queries;
:class:`HybridScorer` (spec ``hybrid:<dense spec>[@weight|@rrf]``) is the same fusion as a
:class:`~itsm_core.encoders.scorers.Scorer`, so evaluate_v2, the diagnostic and the search
index all use one implementation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from itsm_core.core.errors import ItsmError
from itsm_core.encoders.scorers import BM25Scorer
from itsm_core.metrics import stats as M

logger = logging.getLogger(__name__)

WEIGHT_GRID = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 11))
RRF_K = 60


def _zscore_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    finite = np.where(np.isfinite(x), x, np.nan)
    mu = np.nanmean(finite, axis=1, keepdims=True)
    sd = np.nanstd(finite, axis=1, keepdims=True)
    return (x - mu) / np.where(sd > 1e-12, sd, 1.0)


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based rank of every column within its row (1 = highest score)."""
    order = np.argsort(-x, axis=1, kind="stable")
    ranks = np.empty_like(order)
    rows = np.arange(x.shape[0])[:, None]
    ranks[rows, order] = np.arange(1, x.shape[1] + 1)[None, :]
    return ranks


@dataclass
class Fusion:
    """How dense and BM25 scores are combined (``weight`` = share of the dense side)."""

    method: str = "weighted"  # "weighted" (z-scored rows) or "rrf"
    weight: float = 0.5
    rrf_k: int = RRF_K
    chosen_on: str = "default"
    table: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.method not in ("weighted", "rrf"):
            raise ItsmError(f"unknown fusion method {self.method!r}", where="--fusion",
                            fix="use 'weighted' or 'rrf'")
        if not 0.0 <= float(self.weight) <= 1.0:
            raise ItsmError(f"fusion weight must lie in [0, 1], got {self.weight}",
                            where="--fusion-weight", fix="e.g. 0.6 (share of the dense score)")

    def fuse(self, dense: np.ndarray, lexical: np.ndarray) -> np.ndarray:
        """Fused scores, rows = queries (higher = more similar)."""
        dense, lexical = np.atleast_2d(dense), np.atleast_2d(lexical)
        w = float(self.weight)
        if self.method == "rrf":
            return (w / (self.rrf_k + _ranks(dense))
                    + (1 - w) / (self.rrf_k + _ranks(lexical))).astype(np.float32)
        return (w * _zscore_rows(dense) + (1 - w) * _zscore_rows(lexical)).astype(np.float32)

    def describe(self) -> str:
        return (f"{self.method} (dense weight {self.weight:g}"
                + (f", k={self.rrf_k}" if self.method == "rrf" else "") + f"; {self.chosen_on})")


def choose_fusion(dense: np.ndarray, lexical: np.ndarray, grades: np.ndarray,
                  self_mask: np.ndarray | None = None, *, metric: str = "ndcg@10",
                  chosen_on: str = "validation") -> Fusion:
    """The fusion (weighted at each weight of :data:`WEIGHT_GRID`, or RRF with equal
    weights) with the best mean ``metric`` on the given (validation!) queries.

    ``self_mask`` marks query/corpus cells of the same incident; they are excluded from
    the ranking after fusion, exactly as evaluate_v2 does.
    """
    cands = [Fusion("weighted", w) for w in WEIGHT_GRID] + [Fusion("rrf", 0.5)]
    rows, best, best_v = [], None, -np.inf
    for f in cands:
        s = f.fuse(dense, lexical)
        if self_mask is not None:
            s = np.where(self_mask, -np.inf, s)
        v = float(np.nanmean(M.retrieval_metrics_per_query(s, grades)[metric]))
        rows.append({"method": f.method, "dense_weight": f.weight, metric: round(v, 4)})
        if v > best_v + 1e-9:
            best, best_v = f, v
    assert best is not None
    return replace(best, chosen_on=f"best {metric} on {chosen_on} ({best_v:.4f})", table=rows)


def _self_mask(query_ids: Sequence[str], corpus_ids: Sequence[str]) -> np.ndarray:
    return np.asarray(query_ids, dtype=object)[:, None] == np.asarray(
        corpus_ids, dtype=object)[None, :]


def parse_hybrid_spec(spec: str) -> tuple[str, Fusion | None]:
    """``hybrid:<dense spec>[@weight|@rrf]`` → (dense spec, given fusion or None)."""
    rest = spec.split(":", 1)[1].strip()
    fusion = None
    if "@" in rest:
        rest, _, w = rest.rpartition("@")
        if w.strip().lower() == "rrf":
            fusion = Fusion("rrf", 0.5, chosen_on="given")
        else:
            try:
                fusion = Fusion("weighted", float(w), chosen_on="given")
            except ValueError as exc:
                raise ItsmError(f"bad fusion weight {w!r}", where=spec,
                                fix="use hybrid:<model>@0.6 or hybrid:<model>@rrf") from exc
    if not rest or rest.lower() in ("tfidf", "bm25") or rest.startswith("hybrid:"):
        raise ItsmError("hybrid needs a dense model", where=spec,
                        fix="e.g. hybrid:minilm or hybrid:models/<export folder>")
    return rest, fusion


def format_hybrid_spec(dense: str, fusion: Fusion) -> str:
    """The spec :func:`parse_hybrid_spec` reads back as ``fusion``: ``hybrid:<dense>@w``
    or ``hybrid:<dense>@rrf`` (a fusion chosen on validation, written down so that later
    runs on the same data set reuse it instead of choosing again).

    Raises:
        ItsmError: for an RRF fusion other than the spec's (equal weights, k = 60).
    """
    if fusion.method == "rrf":
        if float(fusion.weight) != 0.5 or fusion.rrf_k != RRF_K:
            raise ItsmError("this RRF fusion has no spec form (only equal weights, "
                            f"k = {RRF_K})", where=f"hybrid:{dense}",
                            fix="pass the fusion to HybridScorer directly")
        return f"hybrid:{dense}@rrf"
    return f"hybrid:{dense}@{float(fusion.weight):g}"


class HybridScorer:
    """BM25 + dense fused (see :class:`Fusion`); a :class:`~itsm_core.encoders.scorers.Scorer`.

    Spec: ``hybrid:<dense spec>`` (fusion chosen on validation by :meth:`calibrate`),
    ``hybrid:<dense spec>@0.6`` (weighted, dense share 0.6) or ``hybrid:<spec>@rrf``.
    """

    kind = "hybrid"

    def __init__(self, dense, fusion: Fusion | None = None):  # noqa: ANN001 - DenseScorer
        self.dense = dense
        self.lexical = BM25Scorer()
        self.fusion = fusion
        self.spec = getattr(dense, "spec", None)
        self.name = f"hybrid-{dense.name}"

    @property
    def dims(self) -> tuple[int | None, ...]:
        return self.dense.dims

    def calibrate(self, validation: Callable[[], Any]) -> Fusion:
        """Choose the fusion on a benchmark whose queries are the VALIDATION split.

        Args:
            validation: builds that benchmark when called (the evaluation layer's
                ``validation_benchmark``; never the test queries); not called when the
                spec already gave a fusion.

        Returns:
            The fusion now in use.
        """
        if self.fusion is not None:
            return self.fusion
        validation = validation()
        q = validation.texts.loc[validation.query_ids].tolist()
        c = validation.texts.loc[validation.corpus_ids].tolist()
        self.fusion = choose_fusion(
            self.dense.score_matrix(q, c), self.lexical.score_matrix(q, c), validation.grades,
            _self_mask(validation.query_ids, validation.corpus_ids),
            chosen_on=f"{validation.config.query_split} split")
        logger.info("hybrid fusion: %s", self.fusion.describe())
        return self.fusion

    def _need_fusion(self) -> Fusion:
        if self.fusion is None:
            raise ItsmError("the hybrid scorer has no fusion weight yet", where=self.name,
                            fix="call calibrate(benchmark) (evaluate does) or give one: "
                            "hybrid:<model>@0.6")
        return self.fusion

    def score_matrix(self, queries, corpus, dim=None) -> np.ndarray:
        f = self._need_fusion()
        return f.fuse(self.dense.score_matrix(queries, corpus, dim),
                      self.lexical.score_matrix(queries, corpus))

    def score_pairs(self, a, b, dim=None) -> np.ndarray:
        """Pair score = fused score of ``b`` in ``a``'s ranking over all distinct ``b``
        texts (the normalisation set of a row is the candidate pool, as in retrieval)."""
        ua, ub = list(dict.fromkeys(a)), list(dict.fromkeys(b))
        pa, pb = {t: i for i, t in enumerate(ua)}, {t: i for i, t in enumerate(ub)}
        m = self.score_matrix(ua, ub, dim)
        return np.array([m[pa[x], pb[y]] for x, y in zip(a, b)], dtype=np.float32)
