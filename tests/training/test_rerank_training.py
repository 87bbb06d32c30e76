"""Re-ranker training: training-split data only, label-graded candidates, k on validation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from itsm_core.core.errors import ItsmError
from itsm_core.training.rerank import (
    RerankConfig,
    anchor_positive,
    config_for_profile,
    grade,
    mine_candidates,
    relevance_keys,
    train_dataset,
)


def test_grade_counts_leading_label_levels_shared():
    keys = pd.DataFrame({"category": ["a", "a", "a", "b", None],
                         "subcategory": ["x", "x", "y", "x", "x"]},
                        index=["1", "2", "3", "4", "5"]).astype("string")
    np.testing.assert_allclose(grade(keys, ["1", "1", "1", "1", "5"],
                                     ["2", "3", "4", "5", "5"]), [1.0, 0.5, 0.0, 0.0, 0.0])


def test_unknown_loss_and_profile_are_clear_errors():
    with pytest.raises(ItsmError) as err:
        config_for_profile("default", loss="hinge")
    assert "bce" in err.value.fix
    with pytest.raises(ItsmError):
        config_for_profile("gpu-please")


def test_candidates_come_from_the_training_split_and_are_graded_by_labels(
        tiny_bundle, tiny_model):
    from conftest import tiny_frame
    from sentence_transformers import SentenceTransformer

    from itsm_core.data.corpus import load_corpus

    corpus = load_corpus(tiny_bundle["incidents"])
    keys = relevance_keys(corpus.incidents, ["category", "subcategory"], None)
    cfg = RerankConfig(max_anchors=50, max_corpus=0, num_negatives=3, range_max=10,
                       relative_margin=0.0)
    ap, ids = anchor_positive(keys, corpus.texts, cfg)
    df = tiny_frame().set_index("number")
    train = set(df.index[df["split"] == "train"])
    assert set(ids) == train and set(ap["anchor_id"]) | set(ap["positive_id"]) <= train
    rows = mine_candidates(ap, ids, corpus.texts, keys,
                           SentenceTransformer(str(tiny_model), device="cpu"), cfg)
    assert set(rows["candidate_id"].dropna()) <= train  # nothing held out is trained on
    assert (rows.loc[rows["source"] == "positive", "target"] == 1.0).all()
    mined = rows[rows["source"] == "mined"]
    assert len(mined) > 0
    # the guard: a mined candidate the labels call relevant is never a 0-target negative
    same_cat = (df.loc[mined["anchor_id"], "category"].to_numpy()
                == df.loc[mined["candidate_id"], "category"].to_numpy())
    assert (mined["target"].to_numpy()[same_cat] > 0).all()
    assert (mined["target"].to_numpy()[~same_cat] == 0).all()
    assert mined["guarded"].to_numpy().tolist() == same_cat.tolist()
    lists = train_dataset(rows, "lambda", 0)
    assert set(lists.column_names) == {"query", "docs", "labels"}
    assert sum(len(d) for d in lists["docs"]) == len(rows)


def test_a_hybrid_retriever_keeps_the_fusion_it_chose_for_later_passes(tmp_path):
    from itsm_core.encoders.hybrid import Fusion
    from itsm_core.encoders.rerank import CE_META_FILE, parse_rerank_spec
    from itsm_core.training.rerank import _retriever_fusion, reranker_spec

    class Chosen:  # a calibrated hybrid retriever
        def __init__(self) -> None:
            self.fusion = Fusion("weighted", 0.8, chosen_on="best ndcg@10 on validation")

    fused = _retriever_fusion("hybrid:models/run/model", Chosen())
    assert fused["retriever_calibrated"] == "hybrid:models/run/model@0.8"
    assert fused["retriever_fusion"]["chosen_on"] == "best ndcg@10 on validation"
    assert _retriever_fusion("models/run/model", Chosen()) == {}  # not a hybrid
    run = tmp_path / "run"
    run.mkdir()
    meta = {"retriever": "hybrid:models/run/model", "k": 20, "weight": 0.5, **fused}
    (run / CE_META_FILE).write_text(json.dumps(meta))
    ce, retriever, k, w = parse_rerank_spec(reranker_spec(run))
    assert (ce, retriever, k, w) == (str(run / "model"), "hybrid:models/run/model@0.8",
                                     20, 0.5)
    del meta["retriever_calibrated"]  # a run from before: the retriever as given
    (run / CE_META_FILE).write_text(json.dumps(meta))
    assert parse_rerank_spec(reranker_spec(run))[1] == "hybrid:models/run/model"


@pytest.mark.weights
def test_a_smoke_reranker_run_chooses_k_on_validation_and_evaluates_test(
        tiny_bundle, tiny_model, isolated_results):
    from itsm_core.encoders.factory import load_scorer
    from itsm_core.encoders.rerank import CE_META_FILE, RerankScorer
    from itsm_core.evaluation.diagnostic import DiagnosticConfig
    from itsm_core.runs.schema import read_leaderboard
    from itsm_core.training.rerank import diagnose_reranker, train_reranker

    cfg = config_for_profile("smoke", dataset="tiny", base=str(tiny_model),
                             retriever=str(tiny_model), evaluate_test=True,
                             output_dir=str(isolated_results.runs / "ce"))
    res = train_reranker(cfg, incidents_path=tiny_bundle["incidents"])
    meta = res.meta
    assert (res.model_dir / "config.json").exists() and (res.run_dir / CE_META_FILE).exists()
    assert meta["global_steps"] == cfg.max_steps and meta["training_rows"]["positives"] > 0
    table = {(r["k"], r["weight"]): r["ndcg@10"] for r in meta["validation"]["table"]}
    assert (0, 0.0) in table and (meta["k"], meta["weight"]) in table  # retriever alone too
    assert "validation split" in meta["validation"]["chosen_on"]
    rec = res.test_record
    assert rec["split"] == "test" and rec["model_kind"] == "rerank"
    assert rec["model"] == f"rerank-{cfg.name}@{res.meta['retriever_name']}"
    board = read_leaderboard(isolated_results.leaderboard)
    assert rec["model"] in set(board["model"])
    assert len(board) == 1  # the retriever's own pass on the same queries adds no row
    diffs = {r["metric"]: r for r in meta["test_vs_retriever"]}
    assert set(diffs) == {"ndcg@10", "mrr@10", "map@100"}
    assert all(r["ci_low"] <= r["diff"] <= r["ci_high"] for r in diffs.values())
    # the saved folder is a spec everywhere: the factory builds the same two stages
    scorer = load_scorer(f"rerank:{res.model_dir}@{tiny_model}#{meta['k']},{meta['weight']}",
                         show_progress=False)
    assert isinstance(scorer, RerankScorer) and scorer.k == meta["k"]
    assert scorer.weight == meta["weight"]
    assert scorer.name == rec["model"]
    # the tiny test split has too few adversarial pairs: the run is kept, the reason noted
    assert "too few adversarial pairs" in meta["diagnostic"]["skipped"]
    with pytest.raises(ItsmError):  # never overwrite a run
        train_reranker(cfg, incidents_path=tiny_bundle["incidents"])
    # the diagnostic of both stages, and of the retriever alone on the same pairs
    small = DiagnosticConfig(n_pairs=2, min_pairs=1, n_shortcut=2, n_boilerplate=2)
    meta = diagnose_reranker(res.run_dir, config=small, leaderboard=isolated_results.leaderboard)
    diag = meta["diagnostic"]
    assert diag["reranked"]["model"] == rec["model"]
    assert diag["retriever"]["model"] == meta["retriever_name"]
    for d in diag.values():
        assert 0.0 <= d["roc_auc"] <= 1.0 and d["verdict"] in ("pass", "fail")
        assert d["roc_auc_ci"][0] <= d["roc_auc"] <= d["roc_auc_ci"][1]
    assert diag["reranked"]["n_hard_positive"] == diag["retriever"]["n_hard_positive"]
    saved = json.loads((res.run_dir / CE_META_FILE).read_text(encoding="utf-8"))
    assert saved["diagnostic"] == diag
    board = read_leaderboard(isolated_results.leaderboard)
    assert set(board.loc[board["task"] == "diagnose", "model"]) == {rec["model"]}

