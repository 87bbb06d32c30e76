"""Tests for itsm_core.metrics.stats: hand-computed cases plus cross-checks against sklearn
and ST."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    ndcg_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from itsm_core.core.errors import ItsmError
from itsm_core.metrics import stats as metrics
from itsm_core.metrics.stats import (
    best_f1_threshold,
    bootstrap_mean_ci,
    bootstrap_rows_ci,
    bootstrap_stat_ci,
    breakdown,
    pair_classification_metrics,
    paired_bootstrap_diff,
    retrieval_metrics_per_query,
    spearman,
    summarize_with_ci,
)

L3 = math.log2(3)  # discount denominator at rank 2
NEG = -np.inf

# --------------------------------------------------------------------------------------------
# Retrieval: hand-computed cases
# --------------------------------------------------------------------------------------------

# 3 queries x 5 docs. The binary threshold defaults to the max grade (2).
HAND_SCORES = np.array(
    [
        # ranking d0 > d2 > d4 > d3 > d1
        [0.9, 0.1, 0.8, 0.3, 0.5],
        # d1 and d2 tie at 0.7 -> d1 first (lower index); d3 excluded (-inf) -> ranked last
        # ranking d1 > d2 > d4 > d0 > d3
        [0.2, 0.7, 0.7, NEG, 0.4],
        # no grade-2 item -> every metric NaN
        [0.5, 0.4, 0.3, 0.2, 0.1],
    ]
)
HAND_GRADES = np.array(
    [
        [0, 2, 1, 0, 2],  # relevant (>= 2): d1, d4
        [2, 0, 2, 2, 1],  # relevant: d0, d2 (d3 is excluded, its grade ignored)
        [1, 1, 0, 0, 0],  # nothing relevant
    ]
)
HAND_KW: dict = {"ks": (1, 3), "ndcg_k": 3, "mrr_k": 2, "map_k": 3}


def test_hand_computed_columns_and_index() -> None:
    df = retrieval_metrics_per_query(HAND_SCORES, HAND_GRADES, **HAND_KW)
    assert list(df.columns) == [
        "ndcg@3", "mrr@2", "map@3", "recall@1", "recall@3", "hit@1", "hit@3", "n_relevant"
    ]  # fmt: skip
    assert list(df.index) == [0, 1, 2]
    assert df["n_relevant"].tolist() == [2, 2, 0]


def test_hand_computed_query0() -> None:
    row = retrieval_metrics_per_query(HAND_SCORES, HAND_GRADES, **HAND_KW).loc[0]
    # ranked grades: d0=0, d2=1, d4=2, d3=0, d1=2
    # DCG@3  = 0/1 + 1/log2(3) + 2/log2(4) = 0.63093 + 1.0 = 1.63093
    # IDCG@3 = grades sorted [2, 2, 1, 0, 0] -> 2/1 + 2/log2(3) + 1/2 = 3.76186
    assert row["ndcg@3"] == pytest.approx((1 / L3 + 1.0) / (2 + 2 / L3 + 0.5))
    assert row["ndcg@3"] == pytest.approx(1.63093 / 3.76186, abs=1e-5)  # 0.43354
    # first relevant (d4) at rank 3 -> outside the top 2 -> MRR@2 = 0
    assert row["mrr@2"] == 0.0
    # top-3 hits [0, 0, 1]: precision@3 = 1/3; divided by min(3, n_rel=2) = 2 -> 1/6
    assert row["map@3"] == pytest.approx(1 / 6)
    # recall@1 = 0/2, recall@3 = 1/2; hit@1 = 0, hit@3 = 1
    assert (row["recall@1"], row["recall@3"]) == (0.0, 0.5)
    assert (row["hit@1"], row["hit@3"]) == (0.0, 1.0)


def test_hand_computed_query1_ties_and_exclusion() -> None:
    row = retrieval_metrics_per_query(HAND_SCORES, HAND_GRADES, **HAND_KW).loc[1]
    # ranked grades (tie d1/d2 -> d1 first): d1=0, d2=2, d4=1, d0=2, d3 excluded
    # DCG@3  = 0 + 2/log2(3) + 1/2 = 1.76186
    # IDCG@3 over non-excluded grades [2, 0, 2, 1] sorted [2, 2, 1, 0] = 3.76186
    #   (with d3's grade 2 counted it would be 2 + 2/log2(3) + 2/2 = 4.26186)
    assert row["ndcg@3"] == pytest.approx((2 / L3 + 0.5) / (2 + 2 / L3 + 0.5))
    assert row["ndcg@3"] == pytest.approx(1.76186 / 3.76186, abs=1e-5)  # 0.46835
    # first relevant (d2) at rank 2 -> 1/2 (would be 1.0 if the tie went to d2)
    assert row["mrr@2"] == 0.5
    # top-3 hits [0, 1, 0]: precision@2 = 1/2; / min(3, 2) -> 0.25
    assert row["map@3"] == pytest.approx(0.25)
    assert (row["recall@1"], row["recall@3"]) == (0.0, 0.5)
    assert (row["hit@1"], row["hit@3"]) == (0.0, 1.0)
    assert row["n_relevant"] == 2  # d3 (grade 2, excluded) not counted


def test_query_without_relevant_items_is_nan() -> None:
    df = retrieval_metrics_per_query(HAND_SCORES, HAND_GRADES, **HAND_KW)
    assert df.loc[2].drop("n_relevant").isna().all()
    # with a lower bar, query 2 has relevant items (d0, d1 at ranks 1, 2) and perfect scores
    low = retrieval_metrics_per_query(HAND_SCORES, HAND_GRADES, binary_min_grade=1, **HAND_KW)
    assert low.loc[2, "n_relevant"] == 2
    assert low.loc[2, "mrr@2"] == 1.0
    assert low.loc[2, "ndcg@3"] == pytest.approx(1.0)
    # MAP@3: hits [1, 1, 0] -> (1/1 + 2/2) / min(3, 2) = 1.0
    assert low.loc[2, "map@3"] == pytest.approx(1.0)


def test_map_divides_by_min_k_and_n_relevant() -> None:
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]])  # ranking d0..d4
    grades = np.array([[1, 0, 1, 1, 1]])  # 4 relevant; ranked hits [1, 0, 1, 1, 1]
    df = retrieval_metrics_per_query(scores, grades, ks=(1,), ndcg_k=5, mrr_k=5, map_k=3)
    # MAP@3 = (1/1 + 2/3) / min(3, 4) = 1.66667 / 3 = 0.55556 (plain AP@3 would divide by 4)
    assert df.loc[0, "map@3"] == pytest.approx((1 + 2 / 3) / 3)
    df = retrieval_metrics_per_query(scores, grades, ks=(1,), ndcg_k=5, mrr_k=5, map_k=5)
    # MAP@5 = (1 + 2/3 + 3/4 + 4/5) / min(5, 4) = 3.21667 / 4 = 0.80417
    assert df.loc[0, "map@5"] == pytest.approx((1 + 2 / 3 + 3 / 4 + 4 / 5) / 4)
    # binary NDCG@5: DCG = 1 + 1/log2(4) + 1/log2(5) + 1/log2(6); IDCG = 1 + 1/log2(3) + ...
    dcg = 1 + 1 / 2 + 1 / math.log2(5) + 1 / math.log2(6)
    idcg = 1 + 1 / L3 + 1 / 2 + 1 / math.log2(5)
    assert df.loc[0, "ndcg@5"] == pytest.approx(dcg / idcg)


def test_excluded_cells_are_never_hits() -> None:
    # the only relevant doc of query 0 is itself (excluded) -> no relevant item -> NaN;
    # query 1's relevant doc d0 has the top score but is excluded -> NaN as well.
    scores = np.array([[NEG, 0.5, 0.4], [NEG, 0.9, 0.1]])
    grades = np.array([[1, 0, 0], [1, 0, 0]])
    df = retrieval_metrics_per_query(scores, grades, binary_min_grade=1, ks=(1, 3))
    assert df["n_relevant"].tolist() == [0, 0]
    assert df.drop(columns="n_relevant").isna().all().all()
    # the self-match carries the top grade 3; the default bar is the max *non-excluded*
    # grade (2), so d2 still counts as relevant and sits at rank 2.
    scores = np.array([[NEG, 0.9, 0.5]])
    grades = np.array([[3, 0, 2]])
    df = retrieval_metrics_per_query(scores, grades, ks=(1, 2))
    assert df.loc[0, "n_relevant"] == 1
    assert df.loc[0, "mrr@10"] == 0.5
    assert (df.loc[0, "hit@1"], df.loc[0, "hit@2"]) == (0.0, 1.0)


def test_all_tied_scores_rank_by_index() -> None:
    scores = np.zeros((1, 6))
    grades = np.array([[0, 0, 1, 0, 0, 1]])
    df = retrieval_metrics_per_query(scores, grades, ks=(2, 3), mrr_k=4, map_k=4, ndcg_k=4)
    # ranking = d0..d5: first relevant d2 at rank 3 -> MRR 1/3
    assert df.loc[0, "mrr@4"] == pytest.approx(1 / 3)
    assert (df.loc[0, "hit@2"], df.loc[0, "hit@3"]) == (0.0, 1.0)
    # MAP@4: hits [0, 0, 1, 0] -> (1/3) / min(4, 2)
    assert df.loc[0, "map@4"] == pytest.approx(1 / 6)


def test_sparse_grades_and_chunking_match_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.random((40, 30)), 1)  # many ties
    np.fill_diagonal(scores, NEG)
    grades = rng.integers(0, 4, (40, 30)) * (rng.random((40, 30)) < 0.3)
    dense = retrieval_metrics_per_query(scores, grades, ks=(1, 5), map_k=20)
    sparse = retrieval_metrics_per_query(scores, sp.csr_matrix(grades), ks=(1, 5), map_k=20)
    pd.testing.assert_frame_equal(dense, sparse)
    monkeypatch.setattr(metrics, "_CHUNK_CELLS", 70)  # 2 queries per chunk
    chunked = retrieval_metrics_per_query(scores, sp.coo_array(grades), ks=(1, 5), map_k=20)
    pd.testing.assert_frame_equal(dense, chunked)
    assert dense["ndcg@10"].notna().sum() > 30


def test_retrieval_input_errors() -> None:
    with pytest.raises(ItsmError, match="shape"):
        retrieval_metrics_per_query(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ItsmError, match=">= 0"):
        retrieval_metrics_per_query(np.zeros((1, 2)), np.array([[1, -1]]))
    with pytest.raises(ItsmError, match="NaN"):
        retrieval_metrics_per_query(np.array([[np.nan, 1.0]]), np.array([[1, 0]]))
    with pytest.raises(ItsmError, match="binary_min_grade"):
        retrieval_metrics_per_query(np.zeros((1, 2)), np.array([[1, 0]]), binary_min_grade=0)
    with pytest.raises(ItsmError, match="positive integer"):
        retrieval_metrics_per_query(np.zeros((1, 2)), np.array([[1, 0]]), ks=(0,))


# --------------------------------------------------------------------------------------------
# Retrieval: cross-checks against sklearn and sentence-transformers
# --------------------------------------------------------------------------------------------


def test_graded_ndcg_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    n_q, n_c = 30, 40
    scores = rng.random((n_q, n_c))  # continuous -> no ties
    grades = rng.integers(0, 4, (n_q, n_c)) * (rng.random((n_q, n_c)) < 0.4)
    grades[:, 0] = np.maximum(grades[:, 0], 1)  # every query has a positive grade
    excluded = rng.random((n_q, n_c)) < 0.1
    excluded[:, 0] = False
    scores[excluded] = NEG
    for k in (3, 10, n_c):
        df = retrieval_metrics_per_query(scores, grades, binary_min_grade=1, ndcg_k=k)
        for i in range(n_q):
            keep = ~excluded[i]
            expected = ndcg_score(grades[i, keep][None], scores[i, keep][None], k=k)
            assert df.loc[i, f"ndcg@{k}"] == pytest.approx(expected, abs=1e-12)


def _st_metrics(scores: np.ndarray, relevant: np.ndarray, i: int) -> dict:
    """Run ST's InformationRetrievalEvaluator.compute_metrics on query i's full hit list."""
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator,
    )

    n_c = scores.shape[1]
    keep = [j for j in range(n_c) if np.isfinite(scores[i, j])]  # excluded cells left out
    evaluator = InformationRetrievalEvaluator(
        queries={"q": "query"},
        corpus={j: f"doc {j}" for j in range(n_c)},
        relevant_docs={"q": {j for j in keep if relevant[i, j]}},
        mrr_at_k=[10],
        ndcg_at_k=[10],
        accuracy_at_k=[1, 5, 10],
        precision_recall_at_k=[1, 5, 10],
        map_at_k=[100],
        write_csv=False,
    )
    hits = [{"corpus_id": j, "score": float(scores[i, j])} for j in keep]
    return evaluator.compute_metrics([hits])


@pytest.mark.parametrize("decimals", [None, 1], ids=["no-ties", "ties"])
def test_binary_metrics_match_sentence_transformers(decimals: int | None) -> None:
    pytest.importorskip("sentence_transformers")
    rng = np.random.default_rng(1)
    n_q, n_c = 25, 150  # n_c > map_k=100: exercises the argpartition path
    scores = rng.random((n_q, n_c))
    if decimals is not None:
        scores = np.round(scores, decimals)  # heavy ties, broken by corpus index in both
    np.fill_diagonal(scores, NEG)
    relevant = (rng.random((n_q, n_c)) < 0.05).astype(int)
    relevant[:, 0] = 1
    df = retrieval_metrics_per_query(scores, relevant)
    assert (df["n_relevant"] > 0).all()
    for i in range(n_q):
        st = _st_metrics(scores, relevant, i)
        row = df.loc[i]
        assert row["mrr@10"] == pytest.approx(st["mrr@k"][10])
        assert row["ndcg@10"] == pytest.approx(st["ndcg@k"][10])
        assert row["map@100"] == pytest.approx(st["map@k"][100])
        for k in (1, 5, 10):
            assert row[f"recall@{k}"] == pytest.approx(st["recall@k"][k])
            assert row[f"hit@{k}"] == pytest.approx(st["accuracy@k"][k])
    assert df["hit@10"].mean() > 0  # the comparison covered some actual hits


# --------------------------------------------------------------------------------------------
# Pair classification and correlation
# --------------------------------------------------------------------------------------------


def test_pair_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 200)
    scores = labels * 0.3 + rng.random(200)
    out = pair_classification_metrics(scores, labels, threshold=0.6)
    predicted = (scores >= 0.6).astype(int)
    assert set(out) == {"roc_auc", "pr_auc", "f1", "precision", "recall", "accuracy", "threshold"}
    assert out["roc_auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert out["pr_auc"] == pytest.approx(average_precision_score(labels, scores))
    assert out["f1"] == pytest.approx(f1_score(labels, predicted))
    assert out["precision"] == pytest.approx(precision_score(labels, predicted))
    assert out["recall"] == pytest.approx(recall_score(labels, predicted))
    assert out["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert out["threshold"] == 0.6
    assert all(isinstance(v, float) for v in out.values())


def test_best_f1_threshold_small_case() -> None:
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    labels = np.array([0, 0, 1, 1])
    # t=0.1 -> F1 2/3; t=0.35 -> P 2/3, R 1, F1 0.8; t=0.4 -> 0.5; t=0.8 -> 2/3
    assert best_f1_threshold(scores, labels) == 0.35
    assert pair_classification_metrics(scores, labels, 0.35)["f1"] == pytest.approx(0.8)


def test_best_f1_threshold_is_maximal() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 80)
    scores = labels * 0.2 + rng.random(80)
    t = best_f1_threshold(scores, labels)
    brute = max(f1_score(labels, (scores >= c).astype(int)) for c in scores)
    assert f1_score(labels, (scores >= t).astype(int)) == pytest.approx(brute)


def test_pair_metrics_one_class_raises() -> None:
    with pytest.raises(ItsmError, match="both positives and negatives"):
        pair_classification_metrics(np.array([0.1, 0.9]), np.array([1, 1]), 0.5)
    with pytest.raises(ItsmError, match="both positives and negatives"):
        best_f1_threshold(np.array([0.1, 0.9]), np.array([0, 0]))
    with pytest.raises(ItsmError, match="labels"):
        pair_classification_metrics(np.array([0.1, 0.9]), np.array([0, 2]), 0.5)


def test_spearman() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.random(50), rng.integers(0, 4, 50)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert math.isnan(spearman([1.0], [2.0]))


# --------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------


def test_bootstrap_mean_ci_contains_mean_and_is_deterministic() -> None:
    values = np.random.default_rng(6).random(100)
    low, high = bootstrap_mean_ci(values, n_resamples=500)
    assert low < values.mean() < high
    assert (low, high) == bootstrap_mean_ci(values, n_resamples=500)
    assert (low, high) != bootstrap_mean_ci(values, n_resamples=500, seed=7)
    narrow = bootstrap_mean_ci(values, n_resamples=500, level=0.5)
    assert low < narrow[0] < narrow[1] < high


def test_bootstrap_mean_ci_narrows_with_more_data() -> None:
    rng = np.random.default_rng(8)
    small = bootstrap_mean_ci(rng.random(30), n_resamples=500)
    large = bootstrap_mean_ci(rng.random(3000), n_resamples=500)
    assert large[1] - large[0] < (small[1] - small[0]) / 4


def test_bootstrap_mean_ci_nan_and_degenerate() -> None:
    values = np.array([0.2, np.nan, 0.4, 0.9, np.nan, 0.1])
    assert bootstrap_mean_ci(values, n_resamples=200) == bootstrap_mean_ci(
        values[~np.isnan(values)], n_resamples=200
    )
    assert all(math.isnan(v) for v in bootstrap_mean_ci(np.array([0.5, np.nan])))
    assert all(math.isnan(v) for v in bootstrap_mean_ci(np.array([])))
    assert bootstrap_mean_ci(np.ones(10), n_resamples=100) == (1.0, 1.0)


def test_bootstrap_stat_ci_paired_and_skips_failures() -> None:
    rng = np.random.default_rng(9)
    x = rng.random(50)
    # rows resampled jointly: x - x is 0 on every resample (unpaired it would not be)
    assert bootstrap_stat_ci(lambda a, b: float(np.mean(a - b)), x, x.copy()) == (0.0, 0.0)
    # 1 positive in 8: about a third of resamples hold one class and make roc_auc raise
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.65])
    low, high = bootstrap_stat_ci(roc_auc_score, labels, scores, n_resamples=300)
    assert 0.0 <= low <= roc_auc_score(labels, scores) <= high <= 1.0
    assert bootstrap_stat_ci(roc_auc_score, labels, scores, n_resamples=300) == (low, high)

    def always_fails(*_: np.ndarray) -> float:
        raise ValueError("nope")

    assert all(math.isnan(v) for v in bootstrap_stat_ci(always_fails, x, n_resamples=20))
    with pytest.raises(ItsmError, match="lengths"):
        bootstrap_stat_ci(roc_auc_score, labels, scores[:-1])


@pytest.mark.parametrize("n, n_pos", [(60, 30), (9, 2), (200, 12)])
def test_vectorised_pair_metrics_equal_sklearn_on_every_resample(n: int, n_pos: int) -> None:
    """The rows_* statistics give sklearn's / scipy's value on each resample (ties and
    one-class resamples included), so bootstrap_rows_ci equals bootstrap_stat_ci."""
    rng = np.random.default_rng(n)
    labels = np.zeros(n, dtype=np.int64)
    labels[rng.choice(n, n_pos, replace=False)] = 1
    scores = np.round(rng.random(n) + 0.3 * labels, 1)  # rounded: many ties
    grades = np.round(2 * scores + rng.random(n), 0)
    predicted = scores >= 0.6
    at = lambda metric: lambda y, p: metric(y, p, zero_division=0)  # noqa: E731
    cases = [
        (metrics.rows_roc_auc, roc_auc_score, (labels, scores)),
        (metrics.rows_average_precision, average_precision_score, (labels, scores)),
        (metrics.rows_f1, at(f1_score), (labels, predicted)),
        (metrics.rows_precision, at(precision_score), (labels, predicted)),
        (metrics.rows_recall, at(recall_score), (labels, predicted)),
        (metrics.rows_spearman, spearman, (scores, grades)),
    ]
    idx = np.random.default_rng(3).integers(0, n, size=(200, n))
    for rows_fn, reference, arrays in cases:
        with np.errstate(divide="ignore", invalid="ignore"):
            got = rows_fn(*(a[idx] for a in arrays))
        for row, value in zip(idx, got):
            try:
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    want = float(reference(*(a[row] for a in arrays)))
            except ValueError:  # one class only: sklearn refuses, the row is NaN
                want = math.nan
            if math.isnan(want) or (rows_fn is metrics.rows_average_precision
                                    and labels[row].sum() == 0):
                assert math.isnan(value), rows_fn.__name__
            else:
                assert value == pytest.approx(want, abs=1e-12), rows_fn.__name__
        if rows_fn is metrics.rows_average_precision and n_pos < 5:
            continue  # sklearn scores a resample without positives 0; here it is skipped
        assert bootstrap_rows_ci(rows_fn, *arrays, n_resamples=300) == pytest.approx(
            bootstrap_stat_ci(reference, *arrays, n_resamples=300), abs=1e-12)


def test_paired_bootstrap_diff_detects_real_difference() -> None:
    rng = np.random.default_rng(10)
    b = rng.random(200)
    a = b + 0.1 + rng.normal(0, 0.02, 200)
    out = paired_bootstrap_diff(a, b, n_resamples=500)
    assert set(out) == {"diff", "ci_low", "ci_high", "p_value"}
    assert out["diff"] == pytest.approx(np.mean(a - b))
    assert 0.09 < out["ci_low"] < out["diff"] < out["ci_high"] < 0.11
    assert out["p_value"] == 0.0
    assert out == paired_bootstrap_diff(a, b, n_resamples=500)


def test_paired_bootstrap_diff_straddles_zero_when_identical_ish() -> None:
    rng = np.random.default_rng(11)
    b = rng.random(200)
    noise = rng.normal(0, 0.02, 200)
    a = b + (noise - noise.mean())  # per-query differences, nothing systematic
    out = paired_bootstrap_diff(a, b, n_resamples=500)
    assert out["diff"] == pytest.approx(0.0, abs=1e-12)
    assert out["ci_low"] < 0 < out["ci_high"]
    assert 0.05 < out["p_value"] < 0.95


def test_paired_bootstrap_diff_drops_nan_pairs_jointly() -> None:
    a = np.array([0.5, np.nan, 0.7, 0.9, 0.3])
    b = np.array([0.4, 0.2, np.nan, 0.6, 0.3])
    out = paired_bootstrap_diff(a, b, n_resamples=200)
    # remaining pairs 0, 3, 4: diffs 0.1, 0.3, 0.0
    assert out["diff"] == pytest.approx(0.4 / 3)
    assert out == paired_bootstrap_diff(a[[0, 3, 4]], b[[0, 3, 4]], n_resamples=200)
    single = paired_bootstrap_diff(np.array([0.5]), np.array([0.2]))
    assert single["diff"] == pytest.approx(0.3) and math.isnan(single["ci_low"])


def test_summarize_with_ci_keys_and_values() -> None:
    df = retrieval_metrics_per_query(HAND_SCORES, HAND_GRADES, binary_min_grade=1, **HAND_KW)
    out = summarize_with_ci(df, n_resamples=200)
    metric_columns = [c for c in df.columns if c != "n_relevant"]
    assert set(out) == set(metric_columns) | {f"{c}_ci" for c in metric_columns}
    for column in metric_columns:
        assert out[column] == pytest.approx(df[column].mean())
        ci = out[f"{column}_ci"]
        assert isinstance(ci, list) and len(ci) == 2
        assert ci[0] <= out[column] <= ci[1]
    only = summarize_with_ci(df, ["mrr@2"], n_resamples=50)
    assert set(only) == {"mrr@2", "mrr@2_ci"}
    # NaN queries are skipped: default bar leaves query 2 NaN, the mean covers queries 0, 1
    default = retrieval_metrics_per_query(HAND_SCORES, HAND_GRADES, **HAND_KW)
    assert summarize_with_ci(default, ["mrr@2"], n_resamples=50)["mrr@2"] == pytest.approx(0.25)
    with pytest.raises(ItsmError, match="unknown metric"):
        summarize_with_ci(df, ["nope"])


def test_breakdown_groups() -> None:
    per_query = pd.DataFrame({"ndcg@10": [1.0, 0.5, np.nan, 0.0, 0.2, 0.4, 0.6]})
    by = pd.Series(["net", "db", "db", "net", "app", "net", "db"], name="category")
    table = breakdown(per_query, by, n_resamples=200)
    assert table.index.name == "category"
    assert list(table.columns) == ["n", "mean", "ci_low", "ci_high"]
    assert list(table.index) == ["net", "db", "app"]  # sorted by n desc (NaN row not counted)
    assert table["n"].tolist() == [3, 2, 1]
    assert table.loc["net", "mean"] == pytest.approx(1.4 / 3)
    assert table.loc["db", "mean"] == pytest.approx(0.55)
    assert table.loc["net", "ci_low"] <= table.loc["net", "mean"] <= table.loc["net", "ci_high"]
    assert math.isnan(table.loc["app", "ci_low"])  # one query: no interval
    same = breakdown(per_query, by.to_numpy(), n_resamples=200)
    assert same.index.name == "group" and same["mean"].tolist() == table["mean"].tolist()
    with pytest.raises(ItsmError, match="group labels"):
        breakdown(per_query, by[:3])
