"""Retrieval, pair-classification and correlation metrics, with bootstrap confidence intervals.

Every evaluator in the workbench reduces a model's scores to the numbers in this module, so
they are defined once, here, and cross-checked in the tests against the reference
implementations (``sklearn.metrics`` and sentence-transformers'
``InformationRetrievalEvaluator``).

Retrieval metrics are computed **per query** (:func:`retrieval_metrics_per_query`) rather than
averaged on the spot: the per-query table is what bootstrap confidence intervals
(:func:`summarize_with_ci`), paired model comparisons (:func:`paired_bootstrap_diff`) and
breakdowns by incident category (:func:`breakdown`) need. Summaries are plain dicts of floats
so they serialise to JSON as they are.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

from itsm_core.core.config import BOOTSTRAP_RESAMPLES, CI_LEVEL, SEED
from itsm_core.core.errors import ItsmError

__all__ = [
    "RETRIEVAL_KS",
    "best_f1_threshold",
    "bootstrap_mean_ci",
    "bootstrap_rows_ci",
    "bootstrap_stat_ci",
    "breakdown",
    "pair_classification_metrics",
    "paired_bootstrap_diff",
    "retrieval_metrics_per_query",
    "rows_average_precision",
    "rows_f1",
    "rows_precision",
    "rows_recall",
    "rows_roc_auc",
    "rows_spearman",
    "spearman",
    "summarize_with_ci",
]

RETRIEVAL_KS: tuple[int, ...] = (1, 5, 10)
"""Cut-offs reported for recall@k and hit@k."""

_CHUNK_CELLS = 2_000_000
"""Upper bound on query x corpus cells held per chunk (a few dense float64 copies of it)."""


# --------------------------------------------------------------------------------------------
# Retrieval
# --------------------------------------------------------------------------------------------


def _check_positive_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ItsmError(
            f"{name} must be a positive integer, got {value!r}.",
            where=name,
            fix="Pass a cut-off such as 1, 5, 10 or 100.",
        )


def _grade_rows(grades: np.ndarray | sp.spmatrix | sp.sparray, start: int, stop: int) -> np.ndarray:
    """Dense float64 copy of rows ``start:stop`` of a dense or CSR grade matrix."""
    block = grades[start:stop]
    if sp.issparse(block):
        block = block.toarray()
    return np.array(block, dtype=np.float64)


def _chunk_bounds(n_rows: int, n_cols: int) -> range:
    step = max(1, _CHUNK_CELLS // max(n_cols, 1))
    return range(0, n_rows, step)


def _top_k_ranked(scores: np.ndarray, k: int) -> np.ndarray:
    """Corpus indices of the ``k`` best items per row, best first.

    Ties are broken by lower corpus index first, i.e. exactly as a stable descending sort of the
    full row would rank them, but in O(n_corpus) per row: ``np.argpartition`` finds the k-th best
    score, every item strictly above it is kept, and the items equal to it are filled in by
    ascending index until ``k`` are chosen.
    """
    n_rows, n_cols = scores.shape
    if k >= n_cols:
        return np.argsort(-scores, axis=1, kind="stable")
    neg = -scores
    kth = np.take_along_axis(neg, np.argpartition(neg, k - 1, axis=1)[:, k - 1 : k], axis=1)
    above = neg < kth
    tied = neg == kth
    room = k - above.sum(axis=1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= room))
    idx = np.nonzero(chosen)[1].reshape(n_rows, k)  # ascending corpus index within each row
    order = np.argsort(np.take_along_axis(neg, idx, axis=1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1)


def _ideal_dcg(grades: np.ndarray, k: int) -> np.ndarray:
    """DCG@k of each row's grades sorted best first (the denominator of NDCG)."""
    k = min(k, grades.shape[1])
    if k < grades.shape[1]:
        top = -np.partition(-grades, k - 1, axis=1)[:, :k]
    else:
        top = grades
    top = -np.sort(-top, axis=1)[:, :k]
    return top @ (1.0 / np.log2(np.arange(2, k + 2)))


def retrieval_metrics_per_query(
    scores: np.ndarray,
    grades: np.ndarray | sp.spmatrix | sp.sparray,
    *,
    binary_min_grade: int | None = None,
    ks: tuple[int, ...] = RETRIEVAL_KS,
    ndcg_k: int = 10,
    mrr_k: int = 10,
    map_k: int = 100,
) -> pd.DataFrame:
    """Rank the corpus for every query and score the ranking against graded relevance.

    Definitions (``rank`` starts at 1; "relevant" means ``grade >= binary_min_grade``):

    * **Ranking**: corpus items sorted by score, descending; ties are broken by the lower corpus
      index first (a stable sort), the same rule sentence-transformers applies with corpus ids
      that sort like their positions.
    * **Exclusion**: cells whose score is ``-inf`` (e.g. the query itself, set by the caller)
      are excluded: their grade is ignored everywhere -- they are never hits, and they do not
      count in the ideal DCG or in ``n_relevant``.
    * ``ndcg@k``: graded NDCG with *linear* gains, ``DCG = sum(grade_r / log2(r + 1))`` over the
      top k, divided by the DCG of the query's grades sorted best first over the whole
      (non-excluded) corpus. Equals ``sklearn.metrics.ndcg_score`` when there are no score ties.
    * ``mrr@k``: ``1 / rank`` of the first relevant item within the top k, else 0.
    * ``map@k``: sentence-transformers' convention: the sum of precision@rank over the relevant
      items in the top k, divided by ``min(k, n_relevant)``.
    * ``recall@k``: ``|relevant ∩ top k| / n_relevant``.
    * ``hit@k``: 1.0 if any relevant item is in the top k, else 0.0 (ST's "accuracy@k").

    Queries without a single relevant (non-excluded) item have no meaningful recall, MRR or MAP,
    so **all** their metric columns are NaN (``n_relevant`` is 0). Callers drop them before
    averaging -- ``DataFrame.mean`` and :func:`summarize_with_ci` skip NaN -- so every metric is
    averaged over the same set of queries.

    Memory stays bounded for large inputs (5000 x 5000 and beyond): queries are processed in
    chunks, and only the top ``max(ks, ndcg_k, mrr_k, map_k)`` items of each query are sorted.

    Args:
        scores: ``(n_queries, n_corpus)`` similarity scores; higher is more similar. ``-inf``
            marks excluded cells; NaN is not allowed.
        grades: ``(n_queries, n_corpus)`` graded relevance ``>= 0`` (0 = not relevant), as a
            dense array or a ``scipy.sparse`` matrix.
        binary_min_grade: the grade from which an item counts as relevant for MRR, MAP,
            recall and hit. Defaults to the highest grade in ``grades`` among non-excluded
            cells (so a self-match carrying the top grade does not raise the bar).
        ks: cut-offs for ``recall@k`` and ``hit@k``.
        ndcg_k: cut-off for NDCG.
        mrr_k: cut-off for MRR.
        map_k: cut-off for MAP.

    Returns:
        One row per query (index ``0..n_queries-1``) with columns ``ndcg@{ndcg_k}``,
        ``mrr@{mrr_k}``, ``map@{map_k}``, ``recall@{k}`` and ``hit@{k}`` for each k in ``ks``,
        and ``n_relevant`` (count of relevant, non-excluded items).

    Raises:
        ItsmError: on mismatched shapes, negative grades, NaN scores or invalid cut-offs.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ItsmError(
            f"scores must be a 2-D (n_queries, n_corpus) matrix, got shape {scores.shape}.",
            where="scores",
        )
    if tuple(grades.shape) != scores.shape:
        raise ItsmError(
            f"grades has shape {tuple(grades.shape)} but scores has shape {scores.shape}.",
            where="grades",
            fix="Build both matrices over the same queries (rows) and corpus (columns).",
        )
    if np.isnan(scores).any():
        raise ItsmError(
            "scores contain NaN.",
            where="scores",
            fix="Check the embeddings for NaN; mark excluded cells with -inf, not NaN.",
        )
    if sp.issparse(grades):
        grades = sp.csr_array(grades)
        grade_min = grades.data.min() if grades.nnz else 0
    else:
        grades = np.asarray(grades)
        grade_min = grades.min() if grades.size else 0
    if grade_min < 0:
        raise ItsmError(
            "grades must be >= 0 (0 = not relevant).",
            where="grades",
            fix="Encode non-relevant pairs as 0 and relevant ones as positive grades.",
        )
    ks = tuple(ks)
    for k, name in [
        *((k, "ks") for k in ks),
        (ndcg_k, "ndcg_k"),
        (mrr_k, "mrr_k"),
        (map_k, "map_k"),
    ]:
        _check_positive_int(k, name)

    n_queries, n_corpus = scores.shape
    chunks = _chunk_bounds(n_queries, n_corpus)
    step = chunks.step

    if binary_min_grade is None:
        max_grade = 0.0
        for start in chunks:
            g = _grade_rows(grades, start, start + step)
            g[np.isneginf(scores[start : start + step])] = 0.0
            if g.size:
                max_grade = max(max_grade, float(g.max()))
        threshold = max_grade if max_grade > 0 else 1.0
    else:
        if not binary_min_grade > 0:
            raise ItsmError(
                f"binary_min_grade must be > 0, got {binary_min_grade!r}.",
                where="binary_min_grade",
                fix="Grade 0 means 'not relevant'; pass the lowest grade that counts as relevant.",
            )
        threshold = float(binary_min_grade)

    top_n = min(max((*ks, ndcg_k, mrr_k, map_k)), n_corpus)
    ranks = np.arange(1, top_n + 1, dtype=np.float64)
    discount = 1.0 / np.log2(ranks + 1.0)
    names = [f"ndcg@{ndcg_k}", f"mrr@{mrr_k}", f"map@{map_k}"]
    names += [f"recall@{k}" for k in ks] + [f"hit@{k}" for k in ks]
    out = {name: np.full(n_queries, np.nan) for name in names}
    n_relevant = np.zeros(n_queries, dtype=np.int64)

    for start in chunks if n_corpus else ():
        stop = min(start + step, n_queries)
        s = np.asarray(scores[start:stop], dtype=np.float64)
        g = _grade_rows(grades, start, stop)
        g[np.isneginf(s)] = 0.0
        relevant = g >= threshold
        n_rel = relevant.sum(axis=1)
        n_relevant[start:stop] = n_rel

        ranked = _top_k_ranked(s, top_n)
        gains = np.take_along_axis(g, ranked, axis=1)
        hits = np.take_along_axis(relevant, ranked, axis=1)
        safe_n_rel = np.maximum(n_rel, 1)
        chunk: dict[str, np.ndarray] = {}

        kk = min(ndcg_k, top_n)
        idcg = _ideal_dcg(g, ndcg_k)
        chunk[names[0]] = (gains[:, :kk] @ discount[:kk]) / np.where(idcg > 0, idcg, 1.0)

        top = hits[:, :mrr_k]
        chunk[names[1]] = np.where(top.any(axis=1), 1.0 / (np.argmax(top, axis=1) + 1.0), 0.0)

        top = hits[:, :map_k]
        precision_at_hit = np.cumsum(top, axis=1) / ranks[: top.shape[1]] * top
        chunk[names[2]] = precision_at_hit.sum(axis=1) / np.minimum(map_k, safe_n_rel)

        for k in ks:
            found = hits[:, :k].sum(axis=1)
            chunk[f"recall@{k}"] = found / safe_n_rel
            chunk[f"hit@{k}"] = (found > 0).astype(np.float64)

        for name, values in chunk.items():
            out[name][start:stop] = np.where(n_rel > 0, values, np.nan)

    frame = pd.DataFrame(out, index=pd.RangeIndex(n_queries))
    frame["n_relevant"] = n_relevant
    return frame


# --------------------------------------------------------------------------------------------
# Pair classification and correlation
# --------------------------------------------------------------------------------------------


def _check_pairs(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ItsmError(
            f"{scores.size} scores but {labels.size} labels.",
            where="pair set",
            fix="Pass one score per labelled pair.",
        )
    if not np.isin(labels, (0, 1)).all():
        raise ItsmError(
            "pair labels must be 0 (different) or 1 (similar).",
            where="pair set",
        )
    labels = labels.astype(np.int64)
    if np.unique(labels).size < 2:
        raise ItsmError(
            f"the pair set has only {'positive' if labels.size and labels[0] else 'negative'} "
            "pairs; ROC-AUC, PR-AUC and F1 need both positives and negatives.",
            where="pair set",
            fix="Sample negative (and positive) pairs so both classes are present.",
        )
    return scores, labels


def pair_classification_metrics(
    scores: np.ndarray, labels: np.ndarray, threshold: float
) -> dict[str, float]:
    """Score a pair classifier "similar if ``score >= threshold``" against 0/1 labels.

    ``roc_auc`` and ``pr_auc`` (average precision) are threshold-free; ``f1``, ``precision``,
    ``recall`` and ``accuracy`` use the given threshold, which should come from
    :func:`best_f1_threshold` on the *validation* pairs so the test numbers stay honest.

    Args:
        scores: similarity score per pair.
        labels: 1 for a similar pair, 0 otherwise.
        threshold: decision threshold (a pair is predicted similar when ``score >= threshold``).

    Returns:
        ``{"roc_auc", "pr_auc", "f1", "precision", "recall", "accuracy", "threshold"}``.

    Raises:
        ItsmError: if the pair set lacks positives or negatives, or sizes mismatch.
    """
    scores, labels = _check_pairs(scores, labels)
    predicted = (scores >= threshold).astype(np.int64)
    return {
        "roc_auc": float(roc_auc_score(labels, scores)),
        "pr_auc": float(average_precision_score(labels, scores)),
        "f1": float(f1_score(labels, predicted, zero_division=0)),
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted, zero_division=0)),
        "accuracy": float(accuracy_score(labels, predicted)),
        "threshold": float(threshold),
    }


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score threshold that maximises F1 of "similar if ``score >= threshold``".

    Call this on the **validation** pair set only and reuse the threshold on the test set:
    choosing it on the test pairs would overstate F1, precision, recall and accuracy.

    Candidate thresholds are the distinct scores (``sklearn.metrics.precision_recall_curve``);
    among equally good ones the lowest is returned.

    Raises:
        ItsmError: if the pair set lacks positives or negatives, or sizes mismatch.
    """
    scores, labels = _check_pairs(scores, labels)
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(thresholds[int(np.argmax(f1))])


def spearman(scores: np.ndarray, grades: np.ndarray) -> float:
    """Spearman rank correlation between model scores and graded similarity.

    Returns NaN (instead of warning) when either input is constant or has fewer than two
    values, where the correlation is undefined.
    """
    x = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(grades, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ItsmError(f"{x.size} scores but {y.size} grades.", where="spearman")
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(x, y).statistic)


# --------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------


def _bootstrap_means(values: np.ndarray, n_resamples: int, level: float, seed: int) -> Any:
    """scipy's percentile bootstrap of the mean, or None when it is undefined (n < 2)."""
    if values.size < 2:
        return None
    batch = max(1, min(n_resamples, _CHUNK_CELLS // values.size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        return stats.bootstrap(
            (values,),
            np.mean,
            n_resamples=n_resamples,
            batch=batch,
            vectorized=True,
            axis=-1,
            confidence_level=level,
            method="percentile",
            rng=np.random.default_rng(seed),
        )


def _finite_pair(low: float, high: float) -> tuple[float, float]:
    if not (np.isfinite(low) and np.isfinite(high)):
        return math.nan, math.nan
    return float(low), float(high)


def bootstrap_mean_ci(
    values: np.ndarray,
    *,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CI_LEVEL,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values``.

    NaNs (e.g. queries without relevant items) are dropped first. Deterministic for a given
    ``seed``. Returns ``(nan, nan)`` when fewer than two values remain; constant values give
    the zero-width interval ``(c, c)``.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    res = _bootstrap_means(values[~np.isnan(values)], n_resamples, level, seed)
    if res is None:
        return math.nan, math.nan
    return _finite_pair(res.confidence_interval.low, res.confidence_interval.high)


def _aligned(arrays: tuple, where: str) -> tuple[tuple[np.ndarray, ...], int]:
    if not arrays:
        raise ItsmError(f"{where} needs at least one array.", where=where)
    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ItsmError(
            f"arrays have different lengths {[len(a) for a in arrays]}.",
            where=where,
            fix="Pass aligned arrays (one row per sample in each).",
        )
    return arrays, n


def _percentile_ci(values: np.ndarray, level: float) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size < 2:
        return math.nan, math.nan
    alpha = (1.0 - level) / 2.0
    low, high = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
    return _finite_pair(low, high)


def bootstrap_stat_ci(
    stat: Callable[..., float],
    *arrays: np.ndarray,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CI_LEVEL,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of any statistic over paired samples.

    Rows of all ``arrays`` are resampled jointly (row i of each array stays together), and
    ``stat(*resampled_arrays)`` is evaluated on each resample -- e.g.
    ``bootstrap_stat_ci(roc_auc_score, labels, scores)``. Resamples on which ``stat`` raises or
    returns NaN (typically a resample holding one class only) are skipped rather than failing
    the whole interval; scipy's ``bootstrap`` cannot skip them, hence the plain numpy loop.
    For the pair metrics use :func:`bootstrap_rows_ci` (same resamples, vectorised).

    Returns ``(nan, nan)`` for fewer than two rows or fewer than two usable resamples.
    """
    arrays, n = _aligned(arrays, "bootstrap_stat_ci")
    if n < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. sklearn's UndefinedMetricWarning
                values.append(float(stat(*(a[idx] for a in arrays))))
        except (ValueError, ArithmeticError):
            continue
    return _percentile_ci(np.asarray(values), level)


def bootstrap_rows_ci(
    row_stat: Callable[..., np.ndarray],
    *arrays: np.ndarray,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CI_LEVEL,
    seed: int = SEED,
) -> tuple[float, float]:
    """:func:`bootstrap_stat_ci` for a statistic vectorised over resamples.

    ``row_stat(*resampled)`` gets each array resampled as a 2-D ``(resamples, n)`` block and
    returns one value per resample, NaN where the statistic is undefined (skipped, as
    :func:`bootstrap_stat_ci` skips them). The resample indices are the same as
    :func:`bootstrap_stat_ci`'s for the same ``seed``, so with the ``rows_*`` statistics of
    this module the interval equals the one computed with ``sklearn.metrics`` / scipy on every
    resample (checked in the tests) — measured 2026-12-07: ~100 of the 127 s that a cached
    re-run of ``itsm benchmark`` spent went to sklearn's input validation inside that loop
    (48 intervals x 1,000 resamples).

    Returns ``(nan, nan)`` for fewer than two rows or fewer than two usable resamples.
    """
    arrays, n = _aligned(arrays, "bootstrap_rows_ci")
    if n < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    per_block = max(1, min(n_resamples, _CHUNK_CELLS // (8 * n)))
    values, done = [], 0
    while done < n_resamples:
        b = min(per_block, n_resamples - done)
        idx = rng.integers(0, n, size=(b, n))  # the same stream as b draws of size n
        with np.errstate(divide="ignore", invalid="ignore"):
            values.append(np.asarray(row_stat(*(a[idx] for a in arrays)), np.float64))
        done += b
    return _percentile_ci(np.concatenate(values), level)


def rows_roc_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC-AUC of each row (the Mann-Whitney U of average ranks, which equals sklearn's
    ``roc_auc_score`` with ties); NaN for a row holding one class only."""
    pos = labels == 1
    n_pos = pos.sum(axis=1)
    n_neg = labels.shape[1] - n_pos
    ranks = stats.rankdata(scores, axis=1)
    u = (ranks * pos).sum(axis=1) - n_pos * (n_pos + 1) / 2.0
    return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def rows_average_precision(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Average precision of each row, as ``sklearn.metrics.average_precision_score``: the sum
    over distinct score thresholds (descending) of the recall gained times the precision
    there — tied scores form one threshold. NaN for a row without positives, where AP is
    undefined (sklearn returns 0 with a warning; skipped here, as ROC-AUC's one-class rows)."""
    n = labels.shape[1]
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked = np.take_along_axis(scores, order, axis=1)
    hits = np.take_along_axis(labels == 1, order, axis=1)
    precision = np.cumsum(hits, axis=1) / np.arange(1, n + 1)
    last_of_tie = np.ones(ranked.shape, dtype=bool)
    last_of_tie[:, :-1] = ranked[:, :-1] != ranked[:, 1:]
    position = np.where(last_of_tie, np.arange(n), n)
    group_end = np.minimum.accumulate(position[:, ::-1], axis=1)[:, ::-1]
    at_threshold = np.take_along_axis(precision, group_end, axis=1)
    n_pos = hits.sum(axis=1)
    return np.where(n_pos > 0, (hits * at_threshold).sum(axis=1) / n_pos, np.nan)


def _confusion(labels: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, ...]:
    pos, pred = labels == 1, predicted.astype(bool)
    return ((pos & pred).sum(axis=1), (~pos & pred).sum(axis=1), (pos & ~pred).sum(axis=1))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den is 0 (sklearn's ``zero_division=0``)."""
    return np.divide(num, den, out=np.zeros(num.shape, np.float64), where=den > 0)


def rows_precision(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Precision of each row of 0/1 predictions (``zero_division=0``)."""
    tp, fp, _ = _confusion(labels, predicted)
    return _ratio(tp, tp + fp)


def rows_recall(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Recall of each row of 0/1 predictions (``zero_division=0``)."""
    tp, _, fn = _confusion(labels, predicted)
    return _ratio(tp, tp + fn)


def rows_f1(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """F1 of each row of 0/1 predictions, 2·tp / (2·tp + fp + fn) (``zero_division=0``)."""
    tp, fp, fn = _confusion(labels, predicted)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def rows_spearman(scores: np.ndarray, grades: np.ndarray) -> np.ndarray:
    """:func:`spearman` of each row (Pearson correlation of average ranks); NaN where a row's
    scores or grades are constant."""
    x = stats.rankdata(scores, axis=1)
    y = stats.rankdata(grades, axis=1)
    x -= x.mean(axis=1, keepdims=True)
    y -= y.mean(axis=1, keepdims=True)
    den = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    constant = (np.ptp(scores, axis=1) == 0) | (np.ptp(grades, axis=1) == 0)
    return np.where(constant | (den == 0), np.nan, (x * y).sum(axis=1) / den)


def paired_bootstrap_diff(
    a: np.ndarray,
    b: np.ndarray,
    *,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CI_LEVEL,
    seed: int = SEED,
) -> dict[str, float]:
    """Paired bootstrap of the mean difference ``a - b`` between two models.

    ``a`` and ``b`` are the same per-query metric of two models on the *same* queries, aligned
    row by row; pairing removes the query-difficulty variance that two independent intervals
    would double count. Pairs where either value is NaN are dropped together.

    Returns:
        ``{"diff": mean(a - b), "ci_low", "ci_high", "p_value"}`` where ``p_value`` is the
        fraction of resampled mean differences ``<= 0`` -- a one-sided bootstrap p-value for
        "a is better than b". CI and p-value are NaN with fewer than two pairs.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ItsmError(
            f"a has {a.size} values but b has {b.size}.",
            where="paired_bootstrap_diff",
            fix="Compare per-query metrics of both models on the same, aligned queries.",
        )
    keep = ~(np.isnan(a) | np.isnan(b))
    d = a[keep] - b[keep]
    result = {"diff": float(d.mean()) if d.size else math.nan}
    res = _bootstrap_means(d, n_resamples, level, seed)
    if res is None:
        return result | {"ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan}
    low, high = _finite_pair(res.confidence_interval.low, res.confidence_interval.high)
    p_value = float(np.mean(res.bootstrap_distribution <= 0))
    return result | {"ci_low": low, "ci_high": high, "p_value": p_value}


def summarize_with_ci(
    per_query: pd.DataFrame,
    columns: Sequence[str] | None = None,
    **bootstrap_kwargs: Any,
) -> dict[str, float]:
    """Mean and bootstrap CI of each metric column of a per-query table.

    NaN rows (queries without relevant items) are skipped per column.

    Args:
        per_query: e.g. the output of :func:`retrieval_metrics_per_query`.
        columns: metric columns to summarise; default every numeric column except
            ``n_relevant``.
        **bootstrap_kwargs: ``n_resamples``, ``level``, ``seed`` for :func:`bootstrap_mean_ci`.

    Returns:
        ``{"<metric>": mean, "<metric>_ci": [low, high], ...}`` (the ``_ci`` value is a
        two-element list, ready for JSON).
    """
    if columns is None:
        columns = [
            c
            for c in per_query.columns
            if c != "n_relevant" and pd.api.types.is_numeric_dtype(per_query[c])
        ]
    missing = [c for c in columns if c not in per_query.columns]
    if missing:
        raise ItsmError(
            f"unknown metric column(s) {missing}.",
            where="summarize_with_ci",
            fix=f"Choose from {list(per_query.columns)}.",
        )
    summary: dict[str, Any] = {}
    for column in columns:
        values = per_query[column].to_numpy(dtype=np.float64)
        summary[column] = float(pd.Series(values).mean())
        summary[f"{column}_ci"] = list(bootstrap_mean_ci(values, **bootstrap_kwargs))
    return summary


def breakdown(
    per_query: pd.DataFrame,
    by: pd.Series | np.ndarray,
    metric: str = "ndcg@10",
    **bootstrap_kwargs: Any,
) -> pd.DataFrame:
    """Mean of one metric per group of queries (e.g. per incident category), with CIs.

    ``by`` gives each query's group and is aligned with ``per_query`` *by position* (row i of
    ``per_query`` belongs to ``by[i]``). Queries whose metric is NaN are left out; a missing
    group label forms its own group rather than vanishing.

    Returns:
        A frame indexed by group with columns ``n`` (queries counted), ``mean``, ``ci_low``,
        ``ci_high``, sorted by ``n`` descending (ties in group order).
    """
    if metric not in per_query.columns:
        raise ItsmError(
            f"unknown metric {metric!r}.",
            where="breakdown",
            fix=f"Choose from {list(per_query.columns)}.",
        )
    groups = np.asarray(by)
    if groups.ndim != 1 or len(groups) != len(per_query):
        raise ItsmError(
            f"{len(groups)} group labels for {len(per_query)} queries.",
            where="breakdown",
            fix="Pass one group label per query, in the same order as the per-query table.",
        )
    name = by.name if isinstance(by, pd.Series) and by.name is not None else "group"
    frame = pd.DataFrame({name: groups, metric: per_query[metric].to_numpy(dtype=np.float64)})
    frame = frame.dropna(subset=[metric])
    rows = []
    labels = []
    for label, group in frame.groupby(name, dropna=False, sort=True):
        values = group[metric].to_numpy()
        low, high = bootstrap_mean_ci(values, **bootstrap_kwargs)
        labels.append(label)
        rows.append(
            {"n": len(values), "mean": float(values.mean()), "ci_low": low, "ci_high": high}
        )
    index = pd.Index(labels, name=name)
    table = pd.DataFrame(rows, index=index, columns=["n", "mean", "ci_low", "ci_high"])
    return table.sort_values("n", ascending=False, kind="stable")


def threshold_for_precision(scores: np.ndarray, relevant: np.ndarray,
                            target_precision: float = 0.9) -> dict[str, float | int | None]:
    """The lowest score threshold whose precision (share of relevant pairs among those
    scoring at or above it) reaches ``target_precision``.

    Args:
        scores: similarity of each candidate pair; relevant: 1 for a true match, else 0.
        target_precision: the precision the threshold must reach (e.g. 0.9).

    Returns:
        ``threshold`` (None when no threshold reaches the target), the ``precision`` and
        ``recall`` reached there, and the pair counts.
    """
    scores = np.asarray(scores, dtype=float)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.shape != relevant.shape:
        raise ItsmError("scores and relevance flags differ in length",
                        where="threshold_for_precision")
    if not 0 < target_precision <= 1:
        raise ItsmError(f"target precision {target_precision} is not in (0, 1]",
                        where="--precision", fix="e.g. 0.9")
    n_rel = int(relevant.sum())
    base = {"target_precision": float(target_precision), "n_pairs": int(len(scores)),
            "n_relevant": n_rel}
    if n_rel == 0:
        return {**base, "threshold": None, "precision": None, "recall": None}
    order = np.argsort(-scores, kind="stable")
    s, r = scores[order], relevant[order]
    tp = np.cumsum(r)
    precision = tp / np.arange(1, len(s) + 1)
    # only cut where the score changes, so every pair at the threshold is counted
    last_of_value = np.r_[s[1:] != s[:-1], True]
    ok = np.flatnonzero(last_of_value & (precision >= target_precision))
    if not len(ok):
        return {**base, "threshold": None, "precision": None, "recall": None}
    i = int(ok[-1])  # the deepest cut that still meets the target = lowest threshold
    return {**base, "threshold": float(s[i]), "precision": float(precision[i]),
            "recall": float(tp[i] / n_rel)}
