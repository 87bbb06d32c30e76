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


@pytest.mark.weights
def test_hybrid_is_built_around_a_built_dense_scorer():
    scorer = load_scorer("hybrid:minilm@0.6")
    assert isinstance(scorer, HybridScorer) and scorer.dense.kind == "dense"
    assert scorer.fusion.weight == 0.6
    # a given fusion is never re-chosen: calibrate does not even build the validation set
    assert scorer.calibrate(lambda: pytest.fail("validation built")) is scorer.fusion
