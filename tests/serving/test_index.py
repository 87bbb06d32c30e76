"""Similar-incident search on a tiny random BERT: index build / load, model mismatch
refusal, incremental add, Matryoshka dims, hybrid fusion (as a Scorer too), JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from itsm_core.core.errors import ItsmError
from itsm_core.encoders.hybrid import Fusion, HybridScorer, choose_fusion
from itsm_core.serving.index import INDEX_META_FILE, SearchIndex, build_index, results_records


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> Path:
    from deploy_fixtures import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("other") / "model", seed=1)


@pytest.fixture(scope="module")
def incidents_csv(tmp_path_factory) -> Path:
    from conftest import tiny_frame

    path = tmp_path_factory.mktemp("data") / "incidents.csv"
    df = tiny_frame()
    df["resolution_notes"] = "restarted the " + df["subcategory"].str.lower() + " service"
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def index(tiny_model, incidents_csv, tmp_path_factory) -> SearchIndex:
    return build_index(str(tiny_model), incidents_csv, tmp_path_factory.mktemp("i") / "idx")


def test_index_is_saved_with_its_metadata(index, tiny_model):
    meta = json.loads((index.path / INDEX_META_FILE).read_text())
    assert meta["n"] == 42 and meta["dim"] == 32 and len(index) == 42
    assert meta["model"]["spec"] == str(tiny_model.resolve()) and meta["model"]["fingerprint"]
    assert meta["text"]["fields"] == ["short_description", "description"]
    assert meta["history"][0]["op"] == "build"
    # the fusion was chosen on the labelled validation split, and the grid is kept
    assert "validation" in meta["fusion"]["chosen_on"]
    assert len(meta["fusion"]["table"]) == 12
    emb = np.load(index.path / meta["files"]["embeddings"])
    assert emb.shape == (42, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    reloaded = SearchIndex(index.path)
    assert reloaded.fusion == index.fusion
    assert set(reloaded.incidents.columns) >= {"number", "text", "category", "resolution_notes"}


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_search_returns_ranked_hits(index, mode):
    res = index.search(["AnyConnect VPN keeps dropping"], k=5, mode=mode)[0]
    assert len(res) == 5 and res["rank"].tolist() == [1, 2, 3, 4, 5]
    assert res["score"].is_monotonic_decreasing
    assert res["number"].is_unique


def test_bm25_mode_finds_the_lexical_match(index):
    hit = index.search("Outlook search returns no results for old email", k=1, mode="bm25")
    assert hit[0]["short_description"].iat[0] == "Outlook search broken"


def test_query_with_another_model_is_refused(index, other_model, tiny_model):
    with pytest.raises(ItsmError, match="was built with model"):
        index.search("vpn", k=3, model=str(other_model))
    index.search("vpn", k=3, model=str(tiny_model))  # the same model is fine


def test_matryoshka_dims(index):
    full = index.search("printer jam", k=3, mode="dense")[0]
    small = index.search("printer jam", k=3, mode="dense", dim=16)[0]
    assert len(full) == len(small) == 3
    assert index.matrix(16).shape == (42, 16)
    with pytest.raises(ItsmError, match="not available in this index"):
        index.search("printer jam", dim=64)


def test_incremental_add_matches_full_build(tiny_model, incidents_csv, index, tmp_path):
    df = pd.read_csv(incidents_csv)
    first, rest = tmp_path / "first.csv", tmp_path / "rest.csv"
    df.iloc[:30].to_csv(first, index=False)
    df.iloc[30:].to_csv(rest, index=False)
    idx = build_index(str(tiny_model), first, tmp_path / "idx", fusion="weighted",
                      fusion_weight=0.5)
    old_files = dict(idx.meta["files"])
    assert idx.add(rest) == 12
    assert len(idx) == 42 and idx.meta["n"] == 42
    assert [h["op"] for h in idx.meta["history"]] == ["build", "add"]
    assert not any((idx.path / f).exists() for f in old_files.values())  # old generation gone
    again = SearchIndex(idx.path)
    assert again.incidents["number"].tolist() == df["number"].tolist()
    cos = np.einsum("ij,ij->i", again.embeddings, index.embeddings)
    assert cos.min() > 0.9999  # same vectors as a full build
    with pytest.raises(ItsmError, match="already in the index"):
        again.add(rest)
    assert again.add(rest, skip_existing=True) == 0


def test_build_refuses_existing_folder_and_bad_dim(tiny_model, incidents_csv, index, tmp_path):
    with pytest.raises(ItsmError, match="refusing to overwrite"):
        build_index(str(tiny_model), incidents_csv, index.path)
    with pytest.raises(ItsmError, match="dim 64 is not available"):
        build_index(str(tiny_model), incidents_csv, tmp_path / "x", dim=64)
    with pytest.raises(ItsmError, match="not a search index"):
        SearchIndex(tmp_path)


def test_fusion_endpoints_and_choice():
    rng = np.random.default_rng(0)
    dense, lex = rng.normal(size=(5, 20)), rng.gamma(2.0, size=(5, 20))
    assert (np.argsort(-Fusion("weighted", 1.0).fuse(dense, lex), axis=1)[:, 0]
            == dense.argmax(axis=1)).all()
    assert (np.argsort(-Fusion("weighted", 0.0).fuse(dense, lex), axis=1)[:, 0]
            == lex.argmax(axis=1)).all()
    rrf = Fusion("rrf", 0.5).fuse(dense, lex)
    assert rrf.shape == (5, 20) and (rrf > 0).all()
    grades = (lex == lex.max(axis=1, keepdims=True)).astype(np.int8)  # BM25 is the oracle
    chosen = choose_fusion(dense, lex, grades)
    assert chosen.method == "weighted" and chosen.weight < 0.5
    with pytest.raises(ItsmError, match="fusion weight"):
        Fusion("weighted", 1.5)


def test_hybrid_scorer_is_evaluated_with_weight_from_validation(
        tiny_model, tiny_incidents, isolated_results, tmp_path):
    from itsm_core.encoders.factory import load_scorer
    from itsm_core.evaluation.benchmark import BenchmarkConfig, build_benchmark, evaluate_model

    fixed = load_scorer(f"hybrid:{tiny_model}@0.7")
    assert isinstance(fixed, HybridScorer) and fixed.fusion.weight == 0.7
    assert load_scorer(f"hybrid:{tiny_model}@rrf").fusion.method == "rrf"
    with pytest.raises(ItsmError, match="needs a dense model"):
        load_scorer("hybrid:bm25")
    bench = build_benchmark(tiny_incidents, config=BenchmarkConfig(n_resamples=50))
    rec = evaluate_model(f"hybrid:{tiny_model}", bench, tmp_path / "run",
                         leaderboard=isolated_results.leaderboard)
    assert rec["model"].startswith("hybrid-") and rec["model_kind"] == "hybrid"
    assert "validation split" in rec["calibration"]
    pairs = fixed.score_pairs(["vpn drops", "printer jam"], ["vpn tunnel", "paper jam"])
    assert pairs.shape == (2,) and np.isfinite(pairs).all()


def test_results_json_records(index):
    res = index.search(["wifi drops", "printer offline"], k=2)
    recs = results_records(res, ["wifi drops", "printer offline"])
    text = json.dumps(recs)
    back = json.loads(text)
    assert [r["query"] for r in back] == ["wifi drops", "printer offline"]
    assert all(len(r["hits"]) == 2 and {"rank", "score", "number"} <= set(r["hits"][0])
               for r in back)


# ----------------------------------------------------------------------------- CLI


def _cli(*args):
    from typer.testing import CliRunner

    from itsm_core.cli.main import app

    return CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"}).invoke(
        app, [str(a) for a in args])


def test_cli_index_build_search_json_add_and_mismatch(tiny_model, other_model,
                                                      incidents_csv, tmp_path):
    df = pd.read_csv(incidents_csv)
    first, rest = tmp_path / "first.csv", tmp_path / "rest.csv"
    df.iloc[:36].to_csv(first, index=False)
    df.iloc[36:].to_csv(rest, index=False)
    folder = tmp_path / "idx"
    res = _cli("index", "build", "--model", tiny_model, "--incidents", first, "--out", folder)
    assert res.exit_code == 0, res.output
    assert "fusion" in res.output
    res = _cli("search", "vpn keeps dropping", "-k", "3", "--index", folder, "--json")
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)  # progress bars of model loading go to stderr
    hits = payload["results"][0]["hits"]
    assert payload["results"][0]["query"] == "vpn keeps dropping" and len(hits) == 3
    assert {"rank", "score", "number", "short_description", "category",
            "resolution_notes"} <= set(hits[0])
    res = _cli("search", "printer jam", "--index", folder, "-k", "2")
    assert res.exit_code == 0 and "resolution_notes" in res.output
    res = _cli("index", "add", rest, "--index", folder)
    assert res.exit_code == 0 and "added 6 incidents" in res.output
    assert json.loads((folder / INDEX_META_FILE).read_text())["n"] == 42
    res = _cli("index", "add", rest, "--index", folder)
    assert res.exit_code == 2 and "already in the index" in res.output
    res = _cli("search", "vpn", "--index", folder, "--model", other_model)
    assert res.exit_code == 2 and "was built with model" in res.output
    assert "Traceback" not in res.output


def test_cli_export_without_measurement(tiny_model, tmp_path):
    res = _cli("export", "--model", tiny_model, "--out", tmp_path / "exp", "--no-measure",
               "--fp32-nodes", "none", "--max-seq-length", "32")
    assert res.exit_code == 0, res.output
    from itsm_core.encoders.onnx import load_export

    enc = load_export(tmp_path / "exp")
    assert enc.max_seq_length == 32 and enc.meta["quantization"]["fp32_nodes"] == []
    res = _cli("export", "--model", tiny_model, "--out", tmp_path / "exp", "--no-measure")
    assert res.exit_code == 2 and "refusing to overwrite" in res.output


def test_summaries_fall_back_to_title_then_text():
    from itsm_core.serving.index import summaries

    hits = pd.DataFrame({"short_description": ["VPN down", "", None],
                         "title": ["t0", "printer title", None],
                         "text": ["a", "b", "x" * 300]})
    got = summaries(hits, width=50).tolist()
    assert got[:2] == ["VPN down", "printer title"]
    assert got[2].startswith("xxx") and len(got[2]) == 50 and got[2].endswith("…")


def test_identical_rebuild_reuses_the_embeddings_and_anything_else_encodes(
        tiny_model, incidents_csv, tmp_path, monkeypatch):
    """A rebuild with the same weights, texts and settings takes the earlier index's
    matrix (bit-identical by construction); other texts, an updated index or
    ITSM_REUSE_RUNS=0 encode again."""
    parent = tmp_path / "indexes"
    first = build_index(str(tiny_model), incidents_csv, parent / "a")
    assert first.meta["encode_key"] and first.meta["embeddings_reused_from"] is None
    second = build_index(str(tiny_model), incidents_csv, parent / "b")
    assert second.meta["embeddings_reused_from"] == str(first.path)
    assert second.meta["encode_key"] == first.meta["encode_key"]
    assert np.array_equal(second.embeddings, first.embeddings)
    assert second.meta["history"][0]["sentences_per_s"] is None  # nothing was encoded
    monkeypatch.setenv("ITSM_REUSE_RUNS", "0")
    assert build_index(str(tiny_model), incidents_csv, parent / "c"
                       ).meta["embeddings_reused_from"] is None
    monkeypatch.delenv("ITSM_REUSE_RUNS")
    df = pd.read_csv(incidents_csv)
    df.loc[0, "description"] = "a different description for the first incident"
    other = tmp_path / "other.csv"
    df.to_csv(other, index=False)
    changed = build_index(str(tiny_model), other, parent / "d")
    assert changed.meta["embeddings_reused_from"] is None
    assert changed.meta["encode_key"] != first.meta["encode_key"]
    # an index changed after its build (generation 2) is never a source
    tail = tmp_path / "tail.csv"
    df.iloc[:30].to_csv(tail, index=False)
    for name in ("e", "f"):
        build_index(str(tiny_model), tail, parent / name)
    grown = SearchIndex(parent / "f")
    rest = tmp_path / "rest.csv"
    df.iloc[30:].to_csv(rest, index=False)
    grown.add(rest)
    again = build_index(str(tiny_model), tail, parent / "g")
    assert again.meta["embeddings_reused_from"] == str(parent / "e")


def test_itsm_index_build_with_the_default_engine_reuses_an_identical_build(
        tiny_model, incidents_csv, tmp_path):
    """``itsm index build`` (serving.store.build, in-process engine) keys its encoding too,
    so a re-run of the pipeline's index stage takes the earlier matrix instead of
    encoding every incident again."""
    from itsm_core.serving.store import build

    parent = tmp_path / "indexes"
    first = build(str(tiny_model), incidents_csv, out=parent / "a")
    assert first.meta["encode_key"] and first.meta["engine"]["name"] == "local"
    second = build(str(tiny_model), incidents_csv, out=parent / "b")
    assert second.meta["embeddings_reused_from"] == str(first.path)
    assert np.array_equal(second.embeddings, first.embeddings)
    assert first.summary()["embeddings"].startswith("encoded at ")
    assert second.summary()["embeddings"].startswith("reused from a ")
