"""Tests for itsm_core.evaluation.benchmark: benchmark construction, leakage guards and the
metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from itsm_core.core.errors import ItsmError
from itsm_core.data.datasets import DatasetManifest, sidecar_path
from itsm_core.data.text import LabelLeakageWarning
from itsm_core.encoders.factory import load_scorer
from itsm_core.evaluation.benchmark import (
    HEADLINE,
    BenchmarkConfig,
    _masked_scores,
    build_benchmark,
    evaluate_model,
    evaluate_scorer,
)
from itsm_core.runs.schema import read_leaderboard

LABELS = ["category", "subcategory"]
FAST = dict(n_resamples=100)


def _cfg(**kw) -> BenchmarkConfig:
    return BenchmarkConfig(**{**FAST, **kw})


@pytest.fixture
def bench(tiny_incidents: Path):
    return build_benchmark(tiny_incidents, labels=LABELS, config=_cfg())


def _labels_of(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str).set_index("number")


# ---------------------------------------------------------------------------- labels mode


def test_label_benchmark_queries_corpus_and_grades(bench, tiny_incidents: Path) -> None:
    src = _labels_of(tiny_incidents)
    test_ids = list(src.index[src["split"] == "test"])
    assert bench.mode == "labels" and bench.split_scheme == "split"
    assert bench.dataset == "tiny_incidents"
    assert bench.query_ids == test_ids and bench.corpus_ids == test_ids  # corpus = split
    assert bench.grades.shape == (12, 12)
    q, c = bench.query_ids.index, bench.corpus_ids.index
    # INC0006/7: Network/VPN, INC0013: Network/WiFi, INC0020: Hardware/Printer
    assert bench.grades[q("INC0006"), c("INC0007")] == 2  # same category + subcategory
    assert bench.grades[q("INC0006"), c("INC0013")] == 1  # same category only
    assert bench.grades[q("INC0006"), c("INC0020")] == 0  # other category
    assert bench.grades[q("INC0041"), c("INC0034")] == 1  # Software: Password vs Outlook
    # the whole matrix against the source labels
    for i, a in enumerate(bench.query_ids):
        for j, b in enumerate(bench.corpus_ids):
            same_cat = src.at[a, "category"] == src.at[b, "category"]
            same_sub = same_cat and src.at[a, "subcategory"] == src.at[b, "subcategory"]
            assert bench.grades[i, j] == (2 if same_sub else 1 if same_cat else 0)
    assert bench.query_groups.loc["INC0006"] == "Network"


def test_query_itself_is_excluded(bench) -> None:
    for name in ("tfidf", "bm25"):
        scores = _masked_scores(load_scorer(name), bench, None)
        assert np.isneginf(np.diag(scores)).all()  # query == corpus here: diagonal masked
        assert np.isfinite(scores[~np.eye(len(scores), dtype=bool)]).all()
        # the top hit of every query is another incident
        top = scores.argmax(axis=1)
        assert (top != np.arange(len(top))).all()
    res = evaluate_scorer(load_scorer("tfidf"), bench)
    # each test incident has exactly one other incident with its fine label in the test
    # split: the self-match (also grade 2) is not counted as relevant
    assert (res.per_query["n_relevant"] == 1).all()


def test_pair_sets_stay_in_their_split(bench, tiny_incidents: Path) -> None:
    split = _labels_of(tiny_incidents)["split"]
    test_ends = set(bench.test_pairs["a"]) | set(bench.test_pairs["b"])
    thr_ends = set(bench.threshold_pairs["a"]) | set(bench.threshold_pairs["b"])
    assert set(split.loc[list(test_ends)]) == {"test"}
    assert set(split.loc[list(thr_ends)]) == {"validation"}
    assert bench.threshold_source == "validation split"
    assert set(bench.test_pairs["label"].dropna()) == {0.0, 1.0}
    desc = bench.describe()
    assert desc["threshold_source"] == "validation split"
    assert desc["relevance"] == "labels:category,subcategory"
    assert desc["split"] == "test" and desc["n_queries"] == 12
    assert desc["n_test_pairs"] == int(bench.test_pairs["label"].notna().sum())
    json.dumps(desc)  # stored in metrics.json as is


@pytest.mark.parametrize("model", ["tfidf", "bm25"])
def test_evaluate_scorer_headline_with_cis(bench, model: str) -> None:
    res = evaluate_scorer(load_scorer(model), bench)
    m = res.metrics
    for key in HEADLINE:
        assert key in m, key
        v, ci = m[key], m[f"{key}_ci"]
        assert isinstance(ci, list) and len(ci) == 2
        if math.isnan(v) or any(math.isnan(x) for x in ci):
            continue
        lo, hi = ci
        assert lo - 1e-9 <= v <= hi + 1e-9, (key, v, ci)
        if key != "spearman":
            assert 0.0 <= v <= 1.0
    assert m["n_queries_evaluated"] == 12
    assert list(res.per_dim) == ["full"]
    assert res.per_dim["full"]["threshold"] == m["threshold"]
    # lexical similarity finds the duplicate-like incidents far better than chance
    assert m["ndcg@10"] > 0.6 and m["roc_auc"] > 0.75
    # per-query and pair tables line up with the benchmark
    assert res.per_query["query"].tolist() == bench.query_ids
    assert len(res.pair_scores) == len(bench.test_pairs)
    assert ((res.pair_scores["score"] >= m["threshold"]).astype(int)
            == res.pair_scores["predicted"]).all()
    cats = {r["group"]: r["n"] for r in res.per_category}
    assert cats == {"Network": 4, "Hardware": 4, "Software": 4}


def test_threshold_is_chosen_on_validation_pairs(bench) -> None:
    from itsm_core.metrics import stats as M

    scorer = load_scorer("bm25")
    res = evaluate_scorer(scorer, bench)
    thr = bench.threshold_pairs.dropna(subset=["label"])
    expected = M.best_f1_threshold(scorer.score_pairs(thr["text_a"].tolist(),
                                                      thr["text_b"].tolist()),
                                   thr["label"].to_numpy().astype(int))
    assert res.metrics["threshold"] == pytest.approx(expected)


def test_evaluate_model_writes_run(bench, tmp_path: Path, isolated_results) -> None:
    rec = evaluate_model("tfidf", bench, tmp_path / "run")
    assert (tmp_path / "run" / "metrics.json").exists()
    assert {"per_query.csv", "pairs.csv"} <= {p.name for p in (tmp_path / "run").iterdir()}
    board = read_leaderboard()
    assert board["run_id"].tolist() == [rec["run_id"]]
    assert rec["benchmark"]["dataset"] == "tiny_incidents"
    with pytest.raises(ItsmError, match="not empty"):
        evaluate_model("tfidf", bench, tmp_path / "run")
    assert len(read_leaderboard()) == 1


@pytest.mark.weights
def test_dense_record_names_its_arithmetic_beside_the_precision_metric(
        bench, tmp_path: Path, isolated_results) -> None:
    """``precision`` is the pair-classification metric; the encoder's torch arithmetic is
    ``encoder_precision`` (a string there once broke every printed record)."""
    rec = evaluate_model("minilm", bench, tmp_path / "run")
    assert isinstance(rec["precision"], float)
    assert rec["encoder_precision"] in ("fp32", "bf16")


# ---------------------------------------------------------------------------- other modes


def test_file_without_split_column_is_leave_one_out(tiny_incidents: Path,
                                                     tmp_path: Path) -> None:
    df = pd.read_csv(tiny_incidents).drop(columns="split")
    path = tmp_path / "nosplit.csv"
    df.to_csv(path, index=False)
    b = build_benchmark(path, labels=LABELS, config=_cfg())
    assert b.split_scheme == "leave-one-out"
    assert b.query_ids == b.corpus_ids == df["number"].tolist()
    assert "calibration half" in b.threshold_source
    assert b.describe()["split"] == "all"
    # calibration and test pairs come from disjoint halves of the incidents
    ends = lambda p: set(p["a"]) | set(p["b"])  # noqa: E731
    assert not ends(b.test_pairs) & ends(b.threshold_pairs)
    res = evaluate_scorer(load_scorer("tfidf"), b)
    assert (res.per_query["n_relevant"] == 6).all()  # 7 per fine label, minus itself


def test_links_mode(tiny_incidents: Path, tiny_links: Path) -> None:
    b = build_benchmark(tiny_incidents, links=tiny_links, config=_cfg())
    links = pd.read_csv(tiny_links, dtype=str)
    test_links = links[links["split"] == "test"]
    assert b.mode == "links" and b.split_scheme == "split"
    assert b.config.corpus == "all" and len(b.corpus_ids) == 42
    assert set(b.query_ids) == set(test_links["incident"]) | set(test_links["duplicate_of"])
    assert b.threshold_source == "validation links"
    assert set(np.unique(b.grades)) == {0, 1}
    q, c = b.query_ids.index, b.corpus_ids.index
    for a, d in zip(test_links["incident"], test_links["duplicate_of"]):
        assert b.grades[q(a), c(d)] == 1 and b.grades[q(d), c(a)] == 1
    assert (b.grades.sum(axis=1) == 1).all()
    pos = b.test_pairs[b.test_pairs["label"] == 1]
    assert {frozenset(p) for p in zip(pos["a"], pos["b"])} == {
        frozenset(p) for p in zip(test_links["incident"], test_links["duplicate_of"])}
    val = links[links["split"] == "validation"]
    thr_pos = b.threshold_pairs[b.threshold_pairs["label"] == 1]
    assert {frozenset(p) for p in zip(thr_pos["a"], thr_pos["b"])} == {
        frozenset(p) for p in zip(val["incident"], val["duplicate_of"])}
    assert b.describe()["relevance"].startswith("links:")
    res = evaluate_scorer(load_scorer("bm25"), b)
    assert set(HEADLINE) <= set(res.metrics) and res.per_category == []
    assert res.metrics["hit@10"] > 0.5


def test_links_mode_split_corpus(tiny_incidents: Path, tiny_links: Path) -> None:
    b = build_benchmark(tiny_incidents, links=tiny_links, config=_cfg(corpus="split"))
    assert len(b.corpus_ids) == 12
    res = evaluate_scorer(load_scorer("tfidf"), b)
    assert (res.per_query["n_relevant"] == 1).all()


def test_links_to_unknown_incidents(tiny_incidents: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad_links.csv"
    bad.write_text("a,b,split\nINC0006,INC9999,test\n")
    with pytest.raises(ItsmError, match="INC9999"):
        build_benchmark(tiny_incidents, links=bad, config=_cfg())


def test_sidecar_supplies_defaults(tiny_incidents: Path) -> None:
    DatasetManifest(name="tiny_set", text_fields=["short_description"],
                    labels=["category"]).save(sidecar_path(tiny_incidents))
    b = build_benchmark(tiny_incidents, config=_cfg())
    assert b.dataset == "tiny_set"
    assert b.config.labels == ["category"] and b.config.text_fields == ["short_description"]
    assert b.texts["INC0001"] == "VPN disconnects every few minutes"
    assert set(np.unique(b.grades)) == {0, 1}


def test_no_relevance_signal(tiny_incidents: Path, tmp_path: Path) -> None:
    df = pd.read_csv(tiny_incidents).drop(columns=["category", "subcategory"])
    path = tmp_path / "nolabels.csv"
    df.to_csv(path, index=False)
    with pytest.raises(ItsmError, match="no relevance signal"):
        build_benchmark(path, config=_cfg())
    with pytest.raises(ItsmError, match="label column 'priority' not found"):
        build_benchmark(tiny_incidents, labels=["priority"], config=_cfg())


# ---------------------------------------------------------------------------- leakage guard


def test_label_leakage_guard(tiny_incidents: Path) -> None:
    fields = ["short_description", "category"]
    with pytest.raises(ItsmError, match="ground-truth") as exc:
        build_benchmark(tiny_incidents, labels=LABELS, text_fields=fields, config=_cfg())
    assert "allow" in str(exc.value)  # the fix names the override
    with pytest.warns(LabelLeakageWarning):
        b = build_benchmark(tiny_incidents, labels=LABELS, text_fields=fields,
                            config=_cfg(allow_label_leakage=True))
    assert b.texts["INC0001"].endswith("Network")  # the label really is in the text


# ------------------------------------------------------------- vs sentence-transformers


def _st_ir_evaluator():
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator,
    )

    return InformationRetrievalEvaluator


@pytest.mark.weights
def test_minilm_retrieval_matches_sentence_transformers(tiny_incidents: Path) -> None:
    """Per query, our MRR@10 / NDCG@10 / MAP@100 / Recall@k equal ST's evaluator.

    ``labels=['subcategory']`` gives binary grades (subcategory names are unique across
    categories in the fixture). ST does not exclude the query from the corpus, so each
    query is evaluated by ST against the corpus without itself, as our benchmark does.
    """
    from itsm_core.encoders.scorers import DenseScorer

    Evaluator = _st_ir_evaluator()
    b = build_benchmark(tiny_incidents, labels=["subcategory"], config=_cfg())
    assert set(np.unique(b.grades)) == {0, 1}
    scorer = DenseScorer("minilm", show_progress=False)
    res = evaluate_scorer(scorer, b, dims=[None, 64])
    pq = res.per_query
    st_rows = {None: [], 64: []}
    for i, q in enumerate(b.query_ids):
        corpus = {c: b.texts[c] for c in b.corpus_ids if c != q}
        relevant = {c for j, c in enumerate(b.corpus_ids) if b.grades[i, j] and c != q}
        for dim in st_rows:
            ev = Evaluator(queries={q: b.texts[q]}, corpus=corpus, relevant_docs={q: relevant},
                           mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1, 5, 10],
                           precision_recall_at_k=[1, 5, 10], map_at_k=[100],
                           write_csv=False, truncate_dim=dim)
            st_rows[dim].append(ev(scorer.model))
    for i, st in enumerate(st_rows[None]):
        row = pq.loc[i]
        assert row["mrr@10"] == pytest.approx(st["cosine_mrr@10"], abs=1e-4)
        assert row["ndcg@10"] == pytest.approx(st["cosine_ndcg@10"], abs=1e-4)
        assert row["map@100"] == pytest.approx(st["cosine_map@100"], abs=1e-4)
        for k in (1, 5, 10):
            assert row[f"recall@{k}"] == pytest.approx(st[f"cosine_recall@{k}"], abs=1e-4)
            assert row[f"hit@{k}"] == pytest.approx(st[f"cosine_accuracy@{k}"], abs=1e-4)
    assert 0 < pq["mrr@10"].mean() < 1  # a non-trivial ranking was compared
    # Matryoshka truncation (re-normalised) ranks as ST's truncate_dim does
    for metric in ("mrr@10", "ndcg@10"):
        st_mean = np.mean([st[f"cosine_{metric}"] for st in st_rows[64]])
        assert res.per_dim["64"][metric] == pytest.approx(st_mean, abs=1e-4)


def test_decision_benchmark_pools_train_and_validation_queries_never_test(
        tiny_incidents: Path, tiny_links: Path) -> None:
    from itsm_core.evaluation.benchmark import decision_benchmark

    b = decision_benchmark(tiny_incidents, links=tiny_links)
    train = build_benchmark(tiny_incidents, links=tiny_links, config=_cfg(query_split="train"))
    val = build_benchmark(tiny_incidents, links=tiny_links,
                          config=_cfg(query_split="validation"))
    assert set(b.query_ids) == set(train.query_ids) | set(val.query_ids)
    assert len(b.query_ids) == len(set(b.query_ids)) == b.grades.shape[0]
    split = pd.read_csv(tiny_incidents, dtype=str).set_index("number")["split"]
    assert b.corpus_ids == [n for n in train.corpus_ids if split[n] != "test"]
    with pytest.raises(ItsmError, match="never uses the test split"):
        decision_benchmark(tiny_incidents, splits=("train", "test"), links=tiny_links)
    labels = decision_benchmark(tiny_incidents)  # label data: its validation split
    assert labels.mode == "labels" and labels.config.query_split == "validation"
