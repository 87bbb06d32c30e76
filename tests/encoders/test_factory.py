"""The one scorer factory: every spec form, composite scorers built from built members."""

from __future__ import annotations

import numpy as np
import pytest

from itsm_core.core.errors import ItsmError
from itsm_core.encoders.ensemble import EnsembleScorer, create_ensemble
from itsm_core.encoders.factory import load_scorer
from itsm_core.encoders.hybrid import HybridScorer, parse_hybrid_spec
from itsm_core.encoders.scorers import BM25Scorer, TfidfScorer

QUERIES = ["vpn tunnel drops", "printer out of toner", "password reset"]
CORPUS = ["the vpn tunnel keeps dropping", "toner empty on printer 3", "reset my password",
          "outlook crashes on start"]


def test_lexical_specs_are_case_insensitive():
    assert isinstance(load_scorer("TFIDF"), TfidfScorer)
    assert isinstance(load_scorer(" bm25 "), BM25Scorer)


def test_empty_spec_names_the_registry():
    with pytest.raises(ItsmError, match="minilm"):
        load_scorer("  ")


def test_zmean_ensemble_folder_averages_the_z_scored_member_scores(tmp_path):
    folder = create_ensemble(["tfidf", "bm25"], tmp_path / "ens", method="zmean",
                             weights=[3, 1])
    scorer = load_scorer(str(folder))
    assert isinstance(scorer, EnsembleScorer) and scorer.kind == "hybrid"
    assert [m.name for m in scorer.members] == ["tfidf", "bm25"]
    got = scorer.score_matrix(QUERIES, CORPUS)

    def z(x):
        return (x - x.mean()) / x.std()

    want = 0.75 * z(TfidfScorer().score_matrix(QUERIES, CORPUS)) + 0.25 * z(
        BM25Scorer().score_matrix(QUERIES, CORPUS))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got.argmax(axis=1).tolist() == [0, 1, 2]


def test_concat_ensemble_refuses_lexical_members():
    with pytest.raises(ItsmError, match="zmean"):
        load_scorer("ensemble:tfidf,bm25")


def test_hybrid_spec_parsing():
    assert parse_hybrid_spec("hybrid:minilm") == ("minilm", None)
    dense, fusion = parse_hybrid_spec("hybrid:models/x@0.7")
    assert dense == "models/x" and fusion.method == "weighted" and fusion.weight == 0.7
    assert parse_hybrid_spec("hybrid:minilm@rrf")[1].method == "rrf"
    for bad in ("hybrid:bm25", "hybrid:", "hybrid:minilm@heavy", "hybrid:hybrid:minilm"):
        with pytest.raises(ItsmError):
            parse_hybrid_spec(bad)


def test_a_chosen_fusion_is_written_as_the_spec_that_reads_it_back():
    from itsm_core.encoders.hybrid import Fusion, format_hybrid_spec

    for fusion in (Fusion("weighted", 0.7, chosen_on="best ndcg@10 on validation"),
                   Fusion("weighted", 0.0), Fusion("rrf", 0.5)):
        spec = format_hybrid_spec("models/x/model", fusion)
        dense, back = parse_hybrid_spec(spec)
        assert dense == "models/x/model"
        assert (back.method, back.weight) == (fusion.method, fusion.weight)
    with pytest.raises(ItsmError, match="no spec form"):
        format_hybrid_spec("minilm", Fusion("rrf", 0.3))


@pytest.mark.weights
def test_hybrid_is_built_around_a_built_dense_scorer():
    scorer = load_scorer("hybrid:minilm@0.6")
    assert isinstance(scorer, HybridScorer) and scorer.dense.kind == "dense"
    assert scorer.fusion.weight == 0.6
    # a given fusion is never re-chosen: calibrate does not even build the validation set
    assert scorer.calibrate(lambda: pytest.fail("validation built")) is scorer.fusion


def test_resolve_trained_reads_trained_names_as_their_newest_folder(tmp_path, isolated_results):
    import json

    from itsm_core.encoders.factory import resolve_trained
    from itsm_core.runs.schema import append_leaderboard

    for spec in ("minilm", "bm25", "ensemble:minilm,mpnet", str(tmp_path), "org/some-model"):
        assert resolve_trained(spec, "tiny") == spec  # specs, folders, hub ids: unchanged
    with pytest.raises(ItsmError, match="unknown model 'tiny-ft'") as exc:
        resolve_trained("hybrid:tiny-ft@0.6", "tiny")
    assert "itsm train --dataset tiny" in exc.value.fix
    for stamp in ("20260101T000000Z", "20260102T000000Z"):
        run = tmp_path / "models" / f"{stamp}_x"
        (run / "model").mkdir(parents=True)
        (run / "evaluate").mkdir()
        rec = {"task": "evaluate", "dataset": "tiny", "split": "test", "model": "tiny-ft",
               "timestamp": stamp, "model_arg": str(run / "model")}
        (run / "evaluate" / "metrics.json").write_text(json.dumps(rec))
        append_leaderboard(rec, run / "evaluate", isolated_results.leaderboard)
    newest = str(tmp_path / "models" / "20260102T000000Z_x" / "model")
    assert resolve_trained("tiny-ft", "tiny") == newest
    assert resolve_trained("hybrid:tiny-ft@0.6", "tiny") == f"hybrid:{newest}@0.6"
    assert resolve_trained("hybrid:tiny-ft", "tiny") == f"hybrid:{newest}"
    # the retriever of a two-stage spec, hybrid or not, with k / w kept as written
    assert resolve_trained("rerank:ce/model@tiny-ft", "tiny") == f"rerank:ce/model@{newest}"
    assert (resolve_trained("rerank:ce/model@hybrid:tiny-ft@0.6#20,0.1", "tiny")
            == f"rerank:ce/model@hybrid:{newest}@0.6#20,0.1")
    assert resolve_trained("rerank:ce/model@bm25#5", "tiny") == "rerank:ce/model@bm25#5"
    with pytest.raises(ItsmError, match="unknown model 'other-ft'"):
        resolve_trained("rerank:ce/model@other-ft", "tiny")
    # members of an inline ensemble; the ensemble is then named after the trained names
    assert (resolve_trained("ensemble:tiny-ft, bm25", "tiny")
            == f"ensemble:{newest},bm25")
    with pytest.raises(ItsmError, match="unknown model 'other-ft'"):
        resolve_trained("ensemble:tiny-ft,other-ft", "tiny")


def test_inline_ensemble_names_trained_members_by_their_recorded_name(tmp_path):
    import json

    from itsm_core.encoders.ensemble import read_ensemble
    from itsm_core.encoders.registry import MODEL_META_FILE, REGISTRY

    model = tmp_path / "run" / "model"
    model.mkdir(parents=True)
    (model / MODEL_META_FILE).write_text(json.dumps(
        {"name": "tiny-ft", "spec": REGISTRY["minilm"].to_dict()}))
    config, folder = read_ensemble(f"ensemble:{model},bm25")
    assert folder is None and config.members == [str(model), "bm25"]
    assert config.name == "ensemble(tiny-ft+bm25)"  # not "ensemble(model+bm25)"
    (model / MODEL_META_FILE).write_text("{not json")
    assert read_ensemble(f"ensemble:{model},bm25")[0].name == "ensemble(model+bm25)"
