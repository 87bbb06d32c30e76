"""ONNX export (fp32 + dynamic INT8) on a tiny random BERT: round trip, fp32 node
patterns, loading as a model spec, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from itsm_core.core.errors import ItsmError
from itsm_core.encoders.onnx import EXPORT_META_FILE, is_export, load_export
from itsm_core.serving.export import (
    FFN_DOWN_PROJECTIONS,
    default_fp32_nodes,
    export_onnx,
    matching_nodes,
)

TEXTS = ["vpn drops every hour", "Printer jam on tray 2",
         "  outlook crashes after the windows update yesterday, mailbox never opens  ",
         "password reset " * 40, "wifi"]


@pytest.fixture(scope="module")
def tiny_export(tiny_model, tmp_path_factory) -> Path:
    return export_onnx(str(tiny_model), tmp_path_factory.mktemp("exp") / "export",
                       max_seq_length=48)


@pytest.fixture(scope="module")
def torch_embeddings(tiny_model) -> np.ndarray:
    from itsm_core.encoders.registry import load_sentence_transformer

    model, _ = load_sentence_transformer(str(tiny_model))
    model.max_seq_length = 48
    return model.encode(TEXTS, batch_size=2, normalize_embeddings=True)


def test_export_folder_is_self_contained(tiny_export):
    meta = json.loads((tiny_export / EXPORT_META_FILE).read_text())
    assert (tiny_export / "model_fp32.onnx").exists() and (tiny_export / "model_int8.onnx").exists()
    assert (tiny_export / "tokenizer" / "tokenizer.json").exists()
    assert meta["max_seq_length"] == 48 and meta["pooling"]["pooling_mode"] == "mean"
    assert meta["spec"]["dim"] == 32 and meta["default_variant"] == "int8"
    assert meta["quantization"]["per_channel"] is True
    assert meta["source"]["weights_sha256"]  # the torch model it came from is identified
    assert is_export(tiny_export) and is_export(tiny_export / "model_fp32.onnx")


def test_fp32_export_matches_torch(tiny_export, torch_embeddings):
    for batch_size in (1, 2, 8):  # padding and length sorting must not change results
        emb = load_export(tiny_export, "fp32").encode(TEXTS, batch_size=batch_size)
        cos = np.einsum("ij,ij->i", emb, torch_embeddings)
        assert cos.min() > 0.9999, (batch_size, cos)


def test_int8_export_agrees_with_torch_within_bound(tiny_export, torch_embeddings):
    enc = load_export(tiny_export)  # the folder alone = INT8
    assert enc.variant == "int8"
    emb = enc.encode(TEXTS, batch_size=4)
    assert emb.shape == (len(TEXTS), 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    cos = np.einsum("ij,ij->i", emb, torch_embeddings)
    assert cos.min() > 0.98 and cos.mean() > 0.99, cos
    import onnx

    ops = {n.op_type for n in onnx.load(str(enc.onnx_path)).graph.node}
    assert "MatMulInteger" in ops  # really quantized
    single = enc.encode(TEXTS[0])
    assert single.shape == (32,)
    # dynamic quantization scales activations per batch: a text encoded alone agrees
    # closely, not bit-exactly, with the same text inside a batch
    assert float(single @ emb[0]) > 0.99
    cut = enc.encode(TEXTS, batch_size=4, truncate_dim=16)  # Matryoshka truncation
    assert cut.shape == (len(TEXTS), 16)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ItsmError, match="truncate_dim"):
        enc.encode(TEXTS, truncate_dim=64)


def test_fp32_node_patterns_stay_unquantized(tiny_model, tmp_path):
    out = export_onnx(str(tiny_model), tmp_path / "x", fp32_nodes=[FFN_DOWN_PROJECTIONS])
    meta = json.loads((out / EXPORT_META_FILE).read_text())
    kept = meta["quantization"]["fp32_nodes"]
    assert len(kept) == 2 and all("/output/dense/MatMul" in n and "attention" not in n
                                  for n in kept)  # one FFN down-projection per layer
    import onnx

    names = {n.name: n.op_type for n in onnx.load(str(out / "model_int8.onnx")).graph.node}
    assert all(names.get(n) == "MatMul" for n in kept)


def test_default_fp32_nodes_per_architecture():
    assert default_fp32_nodes("mpnet") == (FFN_DOWN_PROJECTIONS,)
    assert default_fp32_nodes("bert") == ()
    import re

    pat = re.compile(FFN_DOWN_PROJECTIONS)
    assert pat.search("/st/st.0/encoder/layer.11/output/dense/MatMul")
    assert not pat.search("/st/st.0/encoder/layer.11/attention/output/dense/MatMul")
    assert not pat.search("/st/st.0/encoder/layer.11/intermediate/dense/MatMul")


def test_bad_patterns_and_reused_folder_are_refused(tiny_model, tiny_export, tmp_path):
    with pytest.raises(ItsmError, match="no MatMul node matches"):
        export_onnx(str(tiny_model), tmp_path / "y", fp32_nodes=["does-not-exist"])
    with pytest.raises(ItsmError, match="invalid node pattern"):
        matching_nodes(tiny_export / "model_fp32.onnx", ["("])
    with pytest.raises(ItsmError, match="refusing to overwrite"):
        export_onnx(str(tiny_model), tiny_export)


def test_malformed_or_missing_metadata_is_a_clear_error(tmp_path):
    (tmp_path / EXPORT_META_FILE).write_text("{not json")
    with pytest.raises(ItsmError, match="malformed export metadata"):
        load_export(tmp_path)
    with pytest.raises(ItsmError, match="not an export folder"):
        load_export(tmp_path / "nothing")


def test_export_is_a_model_spec_for_evaluate(tiny_export, tiny_incidents, isolated_results,
                                             tmp_path):
    from itsm_core.encoders.factory import load_scorer
    from itsm_core.encoders.onnx import OnnxEncoder
    from itsm_core.encoders.scorers import DenseScorer
    from itsm_core.evaluation.benchmark import BenchmarkConfig, build_benchmark, evaluate_model

    scorer = load_scorer(str(tiny_export))
    assert isinstance(scorer, DenseScorer) and isinstance(scorer.model.encoder, OnnxEncoder)
    fp32 = load_scorer(str(tiny_export / "model_fp32.onnx"))
    assert fp32.model.variant == "fp32" and fp32.name != scorer.name
    bench = build_benchmark(tiny_incidents, config=BenchmarkConfig(n_resamples=50))
    rec = evaluate_model(str(tiny_export), bench, tmp_path / "run",
                         leaderboard=isolated_results.leaderboard)
    assert rec["model"] == scorer.name and 0.0 <= rec["ndcg@10"] <= 1.0
    assert (tmp_path / "run" / "metrics.json").exists()
    assert isolated_results.leaderboard.exists()


def test_latest_export_and_trained_lookup(tiny_export, tmp_path, isolated_results):
    import shutil

    from itsm_core.runs.store import latest_model_dir
    from itsm_core.serving.export import latest_export

    assert latest_export(tmp_path) is None
    for name in ("20260101T000000Z_a-onnx", "20260102T000000Z_b-onnx"):
        shutil.copytree(tiny_export, tmp_path / name)
    assert latest_export(tmp_path).name == "20260102T000000Z_b-onnx"
    assert latest_model_dir("it_tickets", "minilm-ft", isolated_results.leaderboard) is None


def test_cli_export_trained_without_runs_is_a_clean_error(isolated_results):
    from typer.testing import CliRunner

    from itsm_core.cli.main import app

    res = CliRunner().invoke(app, ["export", "--trained", "it_tickets", "--no-measure"])
    assert res.exit_code == 2 and "no model 'minilm-ft' evaluated on 'it_tickets'" in res.output


def test_optimized_export_fuses_attention_and_agrees(tiny_model, tmp_path, torch_embeddings):
    import onnx

    out = export_onnx(str(tiny_model), tmp_path / "opt", max_seq_length=48, optimize=True)
    ops = {n.op_type for n in onnx.load(str(out / "model_fp32.onnx")).graph.node}
    assert "Attention" in ops  # fused by onnxruntime.transformers.optimizer
    assert "QAttention" in {n.op_type for n in onnx.load(str(out / "model_int8.onnx")).graph.node}
    fp32 = load_export(out, "fp32").encode(TEXTS, batch_size=2)
    assert np.einsum("ij,ij->i", fp32, torch_embeddings).min() > 0.9999
    int8 = load_export(out).encode(TEXTS, batch_size=2)
    assert np.einsum("ij,ij->i", int8, torch_embeddings).min() > 0.98


def test_export_names_are_not_mistaken_for_training_runs(tiny_export):
    from itsm_core.encoders.onnx import read_export_meta

    name = read_export_meta(tiny_export)["name"]
    assert name.endswith(".onnx") and "-ft-" not in name and not name.endswith("-ft")


@pytest.fixture
def tiny_dataset(tmp_path_factory) -> str:
    """The tiny labelled incidents registered as a processed data set (session home)."""
    from conftest import tiny_frame

    from itsm_core.core.config import PROCESSED_DIR
    from itsm_core.data.datasets import DatasetManifest, sidecar_path

    path = PROCESSED_DIR / "tinybench.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tiny_frame().to_parquet(path, index=False)
        DatasetManifest(name="tinybench", text_fields=["short_description", "description"],
                        labels=["category", "subcategory"]).save(sidecar_path(path))
    return "tinybench"


def test_static_int8_is_a_loadable_graph_of_the_same_model(tiny_export, tmp_path,
                                                           torch_embeddings):
    from itsm_core.encoders.onnx import OnnxEncoder
    from itsm_core.serving.export import quantize_static_int8

    out = quantize_static_int8(tiny_export, tmp_path / "static.onnx", TEXTS * 4)
    enc = OnnxEncoder(tiny_export, "int8", onnx_file=out)
    emb = enc.encode(TEXTS)
    assert emb.shape == torch_embeddings.shape
    assert enc.fingerprint != load_export(tiny_export).fingerprint
    assert np.einsum("ij,ij->i", emb, torch_embeddings).mean() > 0.5
    with pytest.raises(ItsmError, match="exists already"):  # never overwritten
        quantize_static_int8(tiny_export, out, TEXTS)


def test_extended_backends_agree_with_torch(tiny_export):
    from itsm_core.serving.export import backend_encoders, compare_backends

    encoders = backend_encoders(tiny_export, extended=True)
    assert list(encoders)[:2] == ["torch fp32", "torch fp32 length-bucketed"]
    rows = {r["backend"]: r for r in compare_backends(tiny_export, TEXTS * 8, batch_size=4,
                                                      encoders=encoders)}
    assert {"torch fp32", "onnx fp32", "onnx int8", "onnx int8 one text per call"} <= set(rows)
    assert rows["torch fp32"]["speedup"] == 1.0
    assert rows["torch fp32 length-bucketed"]["cos_min"] > 0.9999  # batching, same maths
    assert rows["onnx fp32"]["cos_min"] > 0.9999
    assert all(r["sentences_per_s"] > 0 for r in rows.values())


def test_operator_profile_names_where_the_time_goes(tiny_export):
    from itsm_core.serving.export import operator_profile

    rows = operator_profile(tiny_export, TEXTS * 4, batch_size=4)
    ops = {r["op"] for r in rows}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
    assert abs(sum(r["share"] for r in rows) - 1) < 0.01


def test_bench_encode_writes_the_backend_table(tiny_export, tiny_dataset, tmp_path):
    from itsm_core.serving.latency import encode_throughput

    res = encode_throughput(tiny_export, tiny_dataset, n=12, batch_size=4, out_dir=tmp_path,
                            quality_queries=8, quality_corpus=30)
    rows = {r["backend"]: r for r in res["rows"]}
    assert {"torch fp32", "onnx fp32", "onnx int8", "onnx int8 static"} <= set(rows)
    assert rows["torch fp32"]["ndcg_delta"] == 0.0
    assert all(0 <= r["ndcg@10"] <= 1 and len(r["ndcg_delta_ci"]) == 2 for r in rows.values())
    assert res["quality_benchmark"]["split"] == "validation"
    assert res["tokenize_sentences_per_s"] > 0
    saved = json.loads(next(tmp_path.glob("encode_throughput_*.json")).read_text())
    assert [r["backend"] for r in saved["rows"]] == [r["backend"] for r in res["rows"]]


def test_int8_export_behind_the_cache_hits_bit_identically(tiny_export, tmp_path, monkeypatch):
    """Dynamic INT8 scales activations per batch, so the cache encodes its texts one per
    call: a vector encoded among other texts equals the cached one bit for bit."""
    from itsm_core.encoders.cache import wrap_encoder

    monkeypatch.setenv("ITSM_EMBED_CACHE", str(tmp_path / "cache"))
    first = wrap_encoder(load_export(tiny_export), "exp")
    assert first.encoder.batch_invariant is False
    a = first.encode(TEXTS * 3 + ["another text entirely"], normalize_embeddings=True)
    second = wrap_encoder(load_export(tiny_export), "exp")
    b = second.encode(TEXTS, normalize_embeddings=True)
    assert second.stats["hits"] == len(TEXTS) and second.stats["mismatch"] == 0
    assert np.array_equal(a[:len(TEXTS)], b)
    fresh = second.encode_canonical(["unrelated words", *TEXTS[:2]])
    assert np.array_equal(fresh[1:], a[:2])


def test_identical_export_is_reused_not_redone(tiny_model, isolated_results):
    from itsm_core.serving.export import export_or_reuse

    first, _, reused = export_or_reuse(str(tiny_model), max_seq_length=32, measure=False)
    assert not reused and is_export(first)
    again, _, reused = export_or_reuse(str(tiny_model), max_seq_length=32, measure=False)
    assert reused and again == first
    other, _, reused = export_or_reuse(str(tiny_model), max_seq_length=24, measure=False)
    assert not reused and other != first
    forced, _, reused = export_or_reuse(str(tiny_model), max_seq_length=32, measure=False,
                                        reuse=False)
    assert not reused and forced not in (first, other)
    meta = json.loads((first / EXPORT_META_FILE).read_text())
    assert meta["export_key"] == json.loads((forced / EXPORT_META_FILE).read_text())[
        "export_key"]


def test_int8_weights_are_7_bit_exactly_on_cpus_without_vnni(monkeypatch):
    """AVX2-only CPUs saturate ONNX Runtime's u8·s8 sums with 8-bit per-channel weights."""
    import itsm_core.core.compat as compat
    from itsm_core.serving.export import int8_reduce_range

    monkeypatch.setattr(compat, "cpu_has", lambda *flags: "avx512_vnni" in flags)
    assert int8_reduce_range() is False
    monkeypatch.setattr(compat, "cpu_has", lambda *flags: False)
    assert int8_reduce_range() is True


def test_int8_index_encodes_in_batches_around_the_cache(tiny_export, tiny_incidents, tmp_path,
                                                        monkeypatch):
    """Behind the cache a dynamic INT8 export encodes one text per call (bit-identical);
    an index build encodes it in length-sorted batches instead, as plain encode does."""
    from itsm_core.serving.index import build_index

    monkeypatch.setenv("ITSM_EMBED_CACHE", str(tmp_path / "cache"))
    idx = build_index(str(tiny_export), tiny_incidents, tmp_path / "idx")
    enc = load_export(tiny_export)
    texts = idx.incidents["text"].tolist()
    batched = enc.encode(texts, batch_size=32, normalize_embeddings=True)
    assert np.array_equal(idx.embeddings, batched)
    assert idx.meta["model"]["fingerprint"] == enc.fingerprint
