"""Tests for itsm_core.encoders.scorers: lexical baselines, the scorer factory and the dense
scorer."""

from __future__ import annotations

import numpy as np
import pytest

from itsm_core.core.errors import ItsmError
from itsm_core.encoders.factory import load_scorer
from itsm_core.encoders.registry import REGISTRY
from itsm_core.encoders.scorers import BM25Scorer, Scorer, TfidfScorer

CORPUS = [
    "vpn tunnel disconnects every five minutes anyconnect",
    "printer on floor three jams on tray two",
    "outlook crashes after the splash screen",
    "password reset needed after holiday lockout",
]
QUERIES = [
    "anyconnect vpn keeps disconnecting",  # -> 0
    "paper jams in the printer tray",  # -> 1
    "outlook closes at the splash screen",  # -> 2
    "locked out, please reset password",  # -> 3
]


@pytest.mark.parametrize("scorer", [TfidfScorer(), BM25Scorer()], ids=["tfidf", "bm25"])
def test_lexical_scorer_ranks_matching_doc_first(scorer) -> None:
    assert isinstance(scorer, Scorer)
    assert scorer.kind == "lexical" and scorer.dims == (None,)
    scores = scorer.score_matrix(QUERIES, CORPUS)
    assert scores.shape == (4, 4) and scores.dtype == np.float32
    assert scores.argmax(axis=1).tolist() == [0, 1, 2, 3]
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("scorer", [TfidfScorer(), BM25Scorer()], ids=["tfidf", "bm25"])
def test_rare_shared_word_wins(scorer) -> None:
    corpus = ["the laptop screen is broken on the laptop", "the laptop fan is loud",
              "the laptop keyboard zebrafish plugin fails"]
    scores = scorer.score_matrix(["zebrafish laptop"], corpus)[0]
    assert scores.argmax() == 2  # 'zebrafish' is rare, 'laptop' everywhere


def test_tfidf_cosine_properties() -> None:
    t = TfidfScorer()
    m = t.score_matrix(CORPUS, CORPUS)
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-5)  # cosine of a text with itself
    np.testing.assert_allclose(m, m.T, atol=1e-6)
    assert (m >= -1e-6).all() and (m <= 1 + 1e-5).all()
    assert t.score_matrix(["zzz qqq"], CORPUS).max() == 0.0  # no shared word


def test_tfidf_score_pairs_match_matrix_diagonal() -> None:
    t = TfidfScorer()
    pairs = t.score_pairs(QUERIES, CORPUS)
    assert pairs.shape == (4,)
    np.testing.assert_allclose(pairs, np.diag(t.score_matrix(QUERIES, CORPUS)), atol=1e-6)


def test_tfidf_score_pairs_match_matrix_with_shared_texts() -> None:
    t = TfidfScorer()
    a = ["vpn drops every minute", "printer jams on tray", "outlook crashes"]
    b = ["vpn tunnel drops", "printer out of toner", "outlook crashes"]
    np.testing.assert_allclose(t.score_pairs(a, b), np.diag(t.score_matrix(a, b)), atol=1e-6)


def test_bm25_pairs_match_matrix_and_asymmetry() -> None:
    bm = BM25Scorer()
    m = bm.score_matrix(QUERIES, CORPUS)
    np.testing.assert_allclose(bm.score_pairs(QUERIES, CORPUS), np.diag(m), rtol=1e-5)
    # a query without any indexed word (or only stop words) scores 0 everywhere
    assert not bm.score_matrix(["zzz qqq", "the a of"], CORPUS).any()
    # repeated texts: BM25 indexes the distinct right-hand texts once (IDF is corpus
    # dependent, so compare with the matrix over exactly those documents)
    rep = bm.score_pairs([QUERIES[0]] * 2 + [QUERIES[1]], [CORPUS[0], CORPUS[1], CORPUS[1]])
    m2 = bm.score_matrix(QUERIES[:2], CORPUS[:2])
    np.testing.assert_allclose(rep, [m2[0, 0], m2[0, 1], m2[1, 1]], rtol=1e-5)


def test_load_scorer_lexical_types() -> None:
    assert isinstance(load_scorer("tfidf"), TfidfScorer)
    assert isinstance(load_scorer(" BM25 "), BM25Scorer)
    assert load_scorer("tfidf").name == "tfidf" and load_scorer("bm25").name == "bm25"


@pytest.mark.parametrize("name", ["", "   "])
def test_load_scorer_empty_name(name: str) -> None:
    with pytest.raises(ItsmError) as exc:
        load_scorer(name)
    msg = str(exc.value)
    assert "--model" in msg and "tfidf" in msg and "bm25" in msg


def test_load_scorer_empty_name_lists_registry_keys() -> None:
    with pytest.raises(ItsmError) as exc:
        load_scorer("")
    assert all(key in str(exc.value) for key in REGISTRY)


def test_load_scorer_unknown_name_lists_registry_keys() -> None:
    with pytest.raises(ItsmError) as exc:
        load_scorer("definitely-not-a-model")
    msg = str(exc.value)
    assert "definitely-not-a-model" in msg
    assert all(key in msg for key in REGISTRY)
    assert "tfidf" in msg and "bm25" in msg


# ---------------------------------------------------------------------------- dense


@pytest.fixture(scope="module")
def minilm():
    from itsm_core.encoders.scorers import DenseScorer

    return DenseScorer("minilm", show_progress=False)


TEXTS = ["VPN disconnects every five minutes", "Printer jams on tray 2",
         "The VPN tunnel drops all the time"]


@pytest.mark.weights
def test_dense_minilm_shapes_and_cosine(minilm) -> None:
    assert minilm.name == "minilm" and minilm.kind == "dense"
    assert minilm.dims == (384, 256, 128, 64)
    emb = minilm.embed(TEXTS)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    m = minilm.score_matrix(TEXTS, TEXTS)
    assert m.shape == (3, 3)
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-5)
    assert m[0, 2] > m[0, 1]  # the two VPN texts are closer than VPN vs printer
    np.testing.assert_allclose(minilm.score_pairs(TEXTS, TEXTS), 1.0, atol=1e-5)
    assert minilm.score_matrix(TEXTS[:1], TEXTS, dim=64).shape == (1, 3)
    assert minilm.embed([]).shape == (0, 384)


@pytest.mark.weights
def test_dense_matryoshka_truncation_renormalises(minilm) -> None:
    emb = minilm.embed(TEXTS)
    for dim in (256, 128, 64):
        cut = minilm.truncate(emb, dim)
        assert cut.shape == (3, dim)
        np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(cut, emb[:, :dim] / np.linalg.norm(emb[:, :dim], axis=1,
                                                                      keepdims=True), atol=1e-6)
        m = minilm.score_matrix(TEXTS, TEXTS, dim=dim)
        np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-5)
    assert minilm.truncate(emb, None) is emb and minilm.truncate(emb, 384) is emb


@pytest.mark.weights
def test_dense_embeddings_are_cached(minilm, monkeypatch: pytest.MonkeyPatch) -> None:
    minilm.embed(TEXTS, role="document")

    def boom(*args, **kwargs):
        raise AssertionError("re-encoded a cached text")

    monkeypatch.setattr(minilm.model, "encode", boom)
    assert minilm.embed(list(reversed(TEXTS)), role="document").shape == (3, 384)


def test_bm25_index_build_logs_nothing_below_warning(caplog):
    """bm25s sets its logger to DEBUG when imported; the CLI must not print its chatter."""
    import logging

    from itsm_core.encoders.scorers import bm25_index

    with caplog.at_level(logging.DEBUG):
        bm25_index(["vpn drops", "printer jam", "vpn login"])
    assert not [r for r in caplog.records if r.name.startswith("bm25s")]
