"""The two-stage scorer: spec parsing, the re-ranked order, the choice of k on validation."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from itsm_core.core.errors import ItsmError
from itsm_core.encoders.rerank import RerankScorer, fuse, parse_rerank_spec, rerank_rows
from itsm_core.encoders.scorers import TfidfScorer


class WordCE:
    """A fake cross-encoder: score = shared words / query words, counting calls."""

    def __init__(self) -> None:
        self.pairs_read = 0

    def predict(self, pairs, batch_size=32, show_progress_bar=False):  # noqa: ANN001
        self.pairs_read += len(pairs)
        out = []
        for q, d in pairs:
            qw, dw = set(q.split()), set(d.split())
            out.append(len(qw & dw) / max(1, len(qw)))
        return np.array(out)


class FixedRetriever:
    """A retriever with a given score matrix (rows = queries)."""

    name, kind, dims, spec = "fixed", "dense", (None,), None

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = np.asarray(scores, dtype=np.float32)

    def score_matrix(self, queries, corpus, dim=None):  # noqa: ANN001
        return self.scores[: len(queries), : len(corpus)]


@pytest.mark.parametrize(("spec", "want"), [
    ("rerank:models/ce@minilm", ("models/ce", "minilm", None, None)),
    ("rerank:models/ce@minilm#30", ("models/ce", "minilm", 30, None)),
    ("rerank:models/ce@minilm#30,0.5", ("models/ce", "minilm", 30, 0.5)),
    ("rerank: ce @ hybrid:minilm@0.6 #10", ("ce", "hybrid:minilm@0.6", 10, None)),
])
def test_parse_rerank_spec(spec, want):
    assert parse_rerank_spec(spec) == want


@pytest.mark.parametrize("spec", ["rerank:ce", "rerank:@minilm", "rerank:ce@",
                                  "rerank:ce@minilm#x", "rerank:ce@minilm#0",
                                  "rerank:ce@minilm#5,x", "rerank:ce@minilm#5,0",
                                  "rerank:ce@minilm#5,1.5",
                                  "rerank:ce@rerank:ce2@minilm"])
def test_bad_rerank_specs_say_what_to_write(spec):
    with pytest.raises(ItsmError) as err:
        parse_rerank_spec(spec)
    assert "rerank:" in err.value.fix


def test_rerank_rows_puts_the_cross_encoder_order_on_top_and_keeps_the_rest():
    base = np.array([[0.9, 0.8, 0.7, 0.1, 0.5]])
    order = np.array([[0, 1, 2, 4, 3]])
    ce = np.array([[0.1, 0.3, 0.2, 9.0, 9.0]])  # only the first k = 3 are used
    out = rerank_rows(base, order, ce, 3)
    ranking = list(np.argsort(-out[0], kind="stable"))
    assert ranking == [1, 2, 0, 4, 3]  # CE order on the top 3, retriever order below
    assert out[0, [0, 1, 2]].min() > out[0, [3, 4]].max()


def test_rerank_rows_mixes_retriever_and_cross_encoder_scores_by_weight():
    base = np.array([[0.9, 0.5, 0.1]])
    order = np.array([[0, 1, 2]])
    ce = np.array([[0.2, 0.8, 0.0]])
    rank = lambda w: list(np.argsort(-rerank_rows(base, order, ce, 2, w)[0], kind="stable"))  # noqa: E731
    assert rank(1.0) == [1, 0, 2]  # the cross-encoder alone: 0.8 > 0.2
    assert rank(0.25) == [0, 1, 2]  # mostly the retriever: 0.725 > 0.575
    np.testing.assert_allclose(fuse(base, ce, 0.5), [[0.55, 0.65, 0.05]])
    np.testing.assert_allclose(fuse(np.array([-np.inf]), np.array([0.4]), 0.5), [0.2])


def test_pair_scores_use_the_same_mix_as_the_ranking():
    scorer = RerankScorer(TfidfScorer(), WordCE(), k=5, weight=0.5)
    a, b = ["disk full", "vpn"], ["disk full", "printer"]
    want = 0.5 * TfidfScorer().score_pairs(a, b) + 0.5 * np.array([1.0, 0.0])
    np.testing.assert_allclose(scorer.score_pairs(a, b), want, rtol=1e-5)
    assert RerankScorer(TfidfScorer(), WordCE(), k=5).weight == 1.0  # #k alone: the CE


def test_score_matrix_rescoring_only_the_top_k():
    corpus = ["disk full on server", "printer jam", "vpn drops", "server disk full again"]
    queries = ["disk full server"]
    retr = FixedRetriever([[0.1, 0.9, 0.8, 0.2]])  # a bad retriever: disk docs ranked last
    ce = WordCE()
    top2 = RerankScorer(retr, ce, k=2).score_matrix(queries, corpus)
    assert ce.pairs_read == 2  # one cross-encoder pass per candidate, no more
    assert np.argsort(-top2[0])[:2].tolist() in ([1, 2], [2, 1])  # disk docs not in top 2
    every = RerankScorer(retr, WordCE(), k=4).score_matrix(queries, corpus)
    assert set(np.argsort(-every[0])[:2]) == {0, 3}  # k = corpus: the cross-encoder decides


def test_pair_scores_are_the_cross_encoders_and_each_pair_is_read_once():
    ce = WordCE()
    scorer = RerankScorer(TfidfScorer(), ce, k=5)
    s = scorer.score_pairs(["a b", "a b", "c"], ["a", "a", "d"])
    np.testing.assert_allclose(s, [0.5, 0.5, 0.0])
    assert ce.pairs_read == 2
    assert scorer.dims == (None,) and scorer.name == "rerank-cross-encoder@tfidf"


def test_without_k_the_scorer_asks_for_calibration():
    scorer = RerankScorer(TfidfScorer(), WordCE())
    with pytest.raises(ItsmError) as err:
        scorer.score_matrix(["a"], ["a", "b"])
    assert "calibrate" in err.value.fix


def _bench(n: int = 6) -> SimpleNamespace:
    """Queries q_i whose one relevant document d_i shares its words; the retriever ranks
    d_i third, so re-ranking the top 3 (or more) finds it and k = 1 or 2 does not."""
    texts = {f"q{i}": f"topic{i} alpha{i}" for i in range(n)}
    texts.update({f"d{i}": f"topic{i} alpha{i} beta" for i in range(n)})
    texts.update({f"x{i}": f"noise{i}" for i in range(2 * n)})
    corpus = [f"d{i}" for i in range(n)] + [f"x{i}" for i in range(2 * n)]
    grades = np.zeros((n, len(corpus)), dtype=np.int8)
    grades[np.arange(n), np.arange(n)] = 1
    base = np.zeros((n, len(corpus)), dtype=np.float32)
    for i in range(n):
        base[i, i] = 0.7
        base[i, n + 2 * i] = 0.9
        base[i, n + (2 * i + 1)] = 0.8
    return SimpleNamespace(
        query_ids=[f"q{i}" for i in range(n)], corpus_ids=corpus, grades=grades,
        texts=pd.Series(texts), config=SimpleNamespace(query_split="validation"),
        base=base)


def test_calibrate_chooses_the_smallest_k_that_is_best_on_validation():
    bench = _bench()
    scorer = RerankScorer(FixedRetriever(bench.base), WordCE())
    choice = scorer.calibrate(lambda: bench, grid=(1, 2, 3, 5))
    assert choice.k == 3  # 3 and 5 both find every d_i; ties go to the cheaper k
    by_k = {r["k"]: r["ndcg@10"] for r in choice.table if r["weight"] in (0.0, 1.0)}
    assert by_k[3] == by_k[5] == pytest.approx(1.0)
    assert by_k[0] < 1.0 and by_k[1] == by_k[0]  # k = 0: the retriever alone, as reported
    # every (k, weight) is tried; a tie between weights goes to the cross-encoder alone
    assert {(r["k"], r["weight"]) for r in choice.table if r["k"] == 3} == {
        (3, w) for w in (1.0, 0.75, 0.5, 0.25, 0.1)}
    assert choice.weight == 1.0
    assert "validation" in choice.chosen_on and scorer.k == 3
    # a chosen (or given) k is never re-chosen: the validation set is not built again
    assert scorer.calibrate(lambda: pytest.fail("rebuilt")) is choice


def test_calibrate_keeps_the_retrievers_share_when_it_helps_on_validation():
    """Each stage alone ranks d_i second, behind a different noise document; their mix
    ranks it first, and validation finds that weight."""
    bench = _bench()
    base = bench.base.copy()
    for i in range(len(bench.query_ids)):
        base[i, i], base[i, 6 + 2 * i + 1] = 0.85, 0.3  # x_2i 0.9 > d_i 0.85 > x_2i+1

    class MixedUpCE(WordCE):
        def predict(self, pairs, batch_size=32, show_progress_bar=False):  # noqa: ANN001
            return np.array([0.9 if d.startswith("topic") else float(int(d[5:]) % 2)
                             for _, d in pairs])  # x_2i+1 1.0 > d_i 0.9 > x_2i 0.0

    scorer = RerankScorer(FixedRetriever(base), MixedUpCE())
    choice = scorer.calibrate(lambda: bench, grid=(3,))
    by_w = {r["weight"]: r["ndcg@10"] for r in choice.table if r["k"] == 3}
    assert by_w[0.5] == pytest.approx(1.0) and by_w[1.0] < 1.0
    assert by_w[0.5] > next(r["ndcg@10"] for r in choice.table if r["k"] == 0)
    assert 0.0 < choice.weight < 1.0 and scorer.weight == choice.weight


def test_calibrate_first_calibrates_a_retriever_that_needs_it_on_the_same_benchmark():
    """A hybrid retriever without a fusion (``rerank:<ce>@hybrid:minilm-ft``) is calibrated
    before k / w are chosen, on the one validation benchmark (built once)."""
    bench = _bench()

    class CalibratedRetriever(FixedRetriever):
        def __init__(self, scores: np.ndarray) -> None:
            super().__init__(scores)
            self.seen: list = []

        def calibrate(self, validation):  # noqa: ANN001, ANN201
            self.seen.append(validation())
            return "fusion"

        def score_matrix(self, queries, corpus, dim=None):  # noqa: ANN001
            assert self.seen, "scored before its own calibration"
            return super().score_matrix(queries, corpus, dim)

    built = []
    retriever = CalibratedRetriever(bench.base)
    scorer = RerankScorer(retriever, WordCE())
    choice = scorer.calibrate(lambda: built.append(1) or bench, grid=(3,))
    assert retriever.seen == [bench] and built == [1]
    assert choice.k == 3
