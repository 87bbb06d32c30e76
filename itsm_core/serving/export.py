"""Deployment export: a trained model as ONNX (fp32 + dynamic INT8) with its tokenizer.

``export_model`` turns any model spec that sentence-transformers loads (a registry key, a
fine-tuned run's ``model/`` folder with its LoRA adapter already merged, a hub id) into a
self-contained folder::

    <out>/
      itsm_export.json      # what the folder is: spec, pooling, max_seq_length, variants,
                            # excluded nodes, source fingerprint, measured report
      model_fp32.onnx       # torch.onnx.export of transformer + pooling (+ Dense) layers
      model_int8.onnx       # onnxruntime.quantization.quantize_dynamic, per-channel INT8
      tokenizer/            # the model's fast tokenizer (tokenizer.json)
      export_report.json    # the side-by-side measurement (also inside itsm_export.json)

The folder is a model spec everywhere (``itsm evaluate --model <folder>``, ``itsm index
build --model <folder>``): :func:`itsm_core.encoders.factory.load_scorer` detects
``itsm_export.json``
and plugs an :class:`OnnxEncoder` (same ``encode`` signature as sentence-transformers) into
the usual :class:`~itsm_core.encoders.scorers.DenseScorer`. ``<folder>/model_fp32.onnx`` selects
the fp32 variant; the folder alone means INT8.

Quantization keeps some MatMuls in fp32 where INT8 costs accuracy. Which ones is a
parameter (regular expressions over ONNX node names, :data:`FP32_NODE_DEFAULTS` per
architecture); MPNet's FFN down-projections (``layer.N/output/dense``) are the known case.
Choices are justified on cosine agreement with torch over validation texts, never on test.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from itsm_core.core.errors import ItsmError
from itsm_core.core.io import atomic_write_json, git_commit, sha256_file, timestamp
from itsm_core.encoders.onnx import (
    EXPORT_META_FILE,
    EXPORT_REPORT_FILE,
    ONNX_FILES,
    VARIANTS,
    _fingerprint,
    load_export,
    read_export_meta,
)
from itsm_core.encoders.registry import ModelSpec

logger = logging.getLogger(__name__)

OPSET = 17

FFN_DOWN_PROJECTIONS = r"/layer\.\d+/output/dense/MatMul$"
"""The second FFN matmul of every encoder layer (BERT and MPNet both name it
``encoder.layer.N.output.dense``; the attention output is ``attention/output/dense`` in
BERT and ``attention/o`` in MPNet, so it does not match)."""

FP32_NODE_DEFAULTS: dict[str, tuple[str, ...]] = {
    # MPNet: INT8 FFN down-projections measurably lower cosine agreement (outlier
    # activations after GELU); they stay fp32.
    "mpnet": (FFN_DOWN_PROJECTIONS,),
    "bert": (),
}
"""Default node-name patterns kept in fp32, by ``config.json`` ``model_type``."""


# ----------------------------------------------------------------------------- export


class _NoPreprocessHint(logging.Filter):
    """onnxruntime's quantizers log "Please consider to run pre-processing before
    quantization" on the root logger for every call; the graphs here are exported with
    constant folding and shape inference already, so the hint is noise in every command."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


logging.getLogger().addFilter(_NoPreprocessHint())


def default_fp32_nodes(model_type: str | None) -> tuple[str, ...]:
    """Default fp32 patterns for an architecture (``config.json`` ``model_type``)."""
    return FP32_NODE_DEFAULTS.get(str(model_type or "").lower(), ())


def _model_type(path: str | Path | None) -> str | None:
    cfg = Path(path or "") / "config.json"
    if cfg.exists():
        try:
            return json.loads(cfg.read_text(encoding="utf-8")).get("model_type")
        except json.JSONDecodeError:
            return None
    return None


def matching_nodes(onnx_path: str | Path, patterns: Sequence[str],
                   op_types: Sequence[str] = ("MatMul", "Gemm")) -> list[str]:
    """Names of ``op_types`` nodes of an ONNX graph that match any regex in ``patterns``."""
    import onnx

    if not patterns:
        return []
    try:
        regexes = [re.compile(p) for p in patterns]
    except re.error as exc:
        raise ItsmError(f"invalid node pattern ({exc})", where="--fp32-nodes",
                        fix="pass regular expressions over ONNX node names, e.g. "
                        f"'{FFN_DOWN_PROJECTIONS}'") from exc
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in op_types
            and any(r.search(n.name) for r in regexes)]


class _EmbeddingGraph:
    """torch module: token ids -> pooled sentence embedding (not yet normalised)."""

    def __new__(cls, st_model, input_names: Sequence[str]):  # noqa: ANN001
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.st = st_model

            def forward(self, *tensors):
                feats = dict(zip(input_names, tensors))
                return self.st(feats)["sentence_embedding"]

        return Wrapped().eval()


def int8_reduce_range() -> bool:
    """7-bit INT8 weights (``reduce_range``) on CPUs without VNNI.

    Without VNNI, ONNX Runtime's u8·s8 kernels add pairs of products in saturating 16-bit
    registers; with full 8-bit per-channel weights the sums overflow. Measured on an AMD
    EPYC with AVX2 only (2026-12-02): the tiny test model's INT8 cosine to torch fell to
    0.79 with 8-bit weights and was back above 0.98 with ``reduce_range``. On VNNI CPUs the
    full 8 bits are kept. Recorded in ``export_meta.json`` (``quantization.reduce_range``);
    an export built on a VNNI machine and served on an AVX2-only one should be rebuilt there.
    """
    from itsm_core.core.compat import cpu_has

    return not cpu_has("avx512_vnni", "avx_vnni", "amx_int8")


def export_onnx(model_spec: str | ModelSpec, out: str | Path, *,
                max_seq_length: int | None = None,
                fp32_nodes: Sequence[str] | None = None,
                name: str | None = None, optimize: bool = False,
                key: str | None = None) -> Path:
    """Export ``model_spec`` to ``out`` (a new, empty folder): fp32 + INT8 ONNX, tokenizer.

    Args:
        model_spec: registry key, model folder (e.g. ``models/<run>/model``) or hub id.
        out: new directory (refused when it exists and is not empty).
        max_seq_length: token limit baked into the export (default: the spec's).
        fp32_nodes: regexes of node names kept in fp32 when quantizing; None = the
            architecture default (:data:`FP32_NODE_DEFAULTS`), ``[]`` = quantize all.
        name: model name in results (default ``<source name>.onnx``; the dot keeps the
            name apart from training-run names such as ``minilm-ft`` / ``…-ft-…``, which
            other tools look up by pattern).
        optimize: BERT-family only: export with eager attention and fuse the graph with
            ``onnxruntime.transformers.optimizer`` (Attention, SkipLayerNorm, BiasGelu,
            EmbedLayerNorm) before quantizing (fused Attention becomes QAttention).
        key: :func:`export_key` of the call, recorded so a repeat can reuse the folder.

    Returns:
        The export folder.
    """
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoTokenizer

    from itsm_core.core.io import new_run_dir, scratch_cwd
    from itsm_core.encoders.registry import load_sentence_transformer

    out = new_run_dir(out).resolve()
    model, spec = load_sentence_transformer(model_spec)
    max_len = int(max_seq_length or spec.max_seq_length or model.max_seq_length or 256)
    model.max_seq_length = max_len
    model.eval()
    mtype = _model_type(spec.path)
    patterns = tuple(default_fp32_nodes(mtype) if fp32_nodes is None else fp32_nodes)

    tok_dir = out / "tokenizer"
    tokenizer = AutoTokenizer.from_pretrained(spec.path or spec.hub_id)
    if not getattr(tokenizer, "is_fast", False):
        raise ItsmError("the model has no fast tokenizer (tokenizer.json); the export needs "
                        "one", where=str(spec.path), fix="export a model with a fast tokenizer")
    tokenizer.save_pretrained(tok_dir)
    sample = tokenizer(["vpn drops every hour", "printer jams on tray two again today"],
                       padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    input_names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in sample]
    optimize = bool(optimize and mtype == "bert")
    if optimize:  # the optimizer fuses the eager attention pattern, not SDPA's
        model[0].auto_model.set_attn_implementation("eager")
    graph = _EmbeddingGraph(model, input_names)
    fp32_path, int8_path = out / ONNX_FILES["fp32"], out / ONNX_FILES["int8"]
    dyn = {k: {0: "batch", 1: "sequence"} for k in input_names}
    dyn["embedding"] = {0: "batch"}
    t0 = time.perf_counter()
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-constant branches
        # the TorchScript exporter (dynamo=False) keeps module paths in node names
        # (…/encoder/layer.3/output/dense/MatMul), which the fp32 patterns select
        torch.onnx.export(graph, tuple(sample[k] for k in input_names), str(fp32_path),
                          dynamo=False, input_names=input_names, output_names=["embedding"],
                          dynamic_axes=dyn, opset_version=OPSET, do_constant_folding=True)
    if optimize:
        from onnxruntime.transformers.optimizer import optimize_model

        cfg = model[0].auto_model.config
        with scratch_cwd():  # its shape inference may leave scratch files in the cwd
            fused = optimize_model(str(fp32_path), model_type="bert",
                                   num_heads=int(cfg.num_attention_heads),
                                   hidden_size=int(cfg.hidden_size))
        fused.save_model_to_file(str(fp32_path))
    export_s = time.perf_counter() - t0
    excluded = matching_nodes(fp32_path, patterns)
    if patterns and not excluded:
        raise ItsmError(f"no MatMul node matches the fp32 patterns {list(patterns)}",
                        where="--fp32-nodes",
                        fix="check the patterns against the node names (onnx.load(...)."
                        "graph.node) or pass an empty list to quantize every MatMul")
    t0 = time.perf_counter()
    with scratch_cwd():
        quantize_dynamic(str(fp32_path), str(int8_path), per_channel=True,
                         reduce_range=int8_reduce_range(),
                         weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                         op_types_to_quantize=["MatMul", "Gemm", "Attention"],
                         extra_options={"DefaultTensorType": 1})  # FLOAT for fused ops
    quant_s = time.perf_counter() - t0
    pooling = _pooling_config(spec.path)
    export_spec = replace(spec, key=name or f"{spec.key}.onnx", max_seq_length=max_len,
                          path=str(out), packaged=None,
                          extra={**spec.extra, "export": True})
    meta = {
        "name": export_spec.key,
        "export_key": key,
        "spec": export_spec.to_dict(),
        "source": {"model": str(model_spec if isinstance(model_spec, str) else spec.key),
                   "path": str(Path(spec.path).resolve()) if spec.path and Path(
                       spec.path).exists() else spec.path, "model_type": mtype,
                   "weights_sha256": _fingerprint(spec.path)},
        "input_names": input_names,
        "pooling": pooling,
        "normalize": True,
        "max_seq_length": max_len,
        "default_variant": "int8",
        "files": {v: ONNX_FILES[v] for v in VARIANTS},
        "sha256": {v: sha256_file(out / ONNX_FILES[v]) for v in VARIANTS},
        "quantization": {"method": "onnxruntime.quantization.quantize_dynamic",
                         "per_channel": True, "weight_type": "QInt8",
                         "fp32_patterns": list(patterns), "fp32_nodes": excluded,
                         "graph_optimized": optimize,
                         "reduce_range": int8_reduce_range()},
        "opset": OPSET, "export_seconds": round(export_s, 2),
        "quantize_seconds": round(quant_s, 2),
        "versions": _versions(),
        "created": timestamp(), "git_commit": git_commit(),
    }
    atomic_write_json(out / EXPORT_META_FILE, meta)
    return out


def _pooling_config(path: str | Path | None) -> dict[str, Any]:
    for cfg in sorted(Path(path or "").glob("*Pooling*/config.json")):
        try:
            return json.loads(cfg.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            break
    return {}


def _versions() -> dict[str, str]:
    from itsm_core.core.compat import version_strings

    return version_strings(("torch", "onnx", "onnxruntime", "sentence-transformers",
                            "transformers"))


def latest_export(models_dir: str | Path | None = None) -> Path | None:
    """The newest export folder under ``models/`` (by folder name = timestamp), or None."""
    from itsm_core.core.config import MODELS_DIR
    from itsm_core.runs.store import latest_folder

    return latest_folder(models_dir or MODELS_DIR, EXPORT_META_FILE)


# ----------------------------------------------------------------------------- measuring


def torch_reference(meta: dict[str, Any]):
    """The source sentence-transformers model of an export, at the export's token limit."""
    from itsm_core.encoders.registry import load_sentence_transformer

    src = meta["source"]
    where = src.get("path") or src.get("model")
    if not where or not (Path(where).exists() or "/" not in str(where)):
        raise ItsmError("the source model of this export is gone; torch comparisons need it",
                        where=str(where), fix="measure on the machine that exported it")
    model, _ = load_sentence_transformer(src.get("path") or src["model"])
    model.max_seq_length = int(meta["max_seq_length"])
    model.eval()
    return model


def sample_texts(dataset: str = "it_tickets", split: str = "validation", n: int = 512,
                 seed: int = 42, incidents: str | Path | None = None) -> list[str]:
    """``n`` incident texts of one split (the text builder of the data set's manifest)."""
    from itsm_core.core.config import SEED
    from itsm_core.data.datasets import processed_path
    from itsm_core.evaluation.benchmark import BenchmarkConfig, load_for_benchmark

    path = Path(incidents) if incidents else processed_path(dataset)
    df, texts, _, _ = load_for_benchmark(path, columns=None, labels=None, links=None,
                                         text_fields=None, config=BenchmarkConfig())
    if "split" in df.columns and (df["split"] == split).any():
        texts = texts[(df["split"] == split).to_numpy()]
    texts = texts[texts.str.len() > 0].drop_duplicates()
    return texts.sample(min(n, len(texts)), random_state=seed or SEED).tolist()


def encode_throughput(encoder, texts: Sequence[str], batch_size: int = 32,
                      repeats: int = 1) -> tuple[float, np.ndarray]:
    """Sentences per second of ``encoder.encode`` over ``texts`` (after one warm-up batch);
    best of ``repeats`` runs. Returns (throughput, embeddings)."""
    texts = list(texts)
    encoder.encode(texts[:batch_size], batch_size=batch_size, convert_to_numpy=True,
                   normalize_embeddings=True, show_progress_bar=False)
    best, emb = 0.0, None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        emb = encoder.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                             normalize_embeddings=True, show_progress_bar=False)
        best = max(best, len(texts) / (time.perf_counter() - t0))
    return best, np.asarray(emb, dtype=np.float32)


def quantize_static_int8(export_dir: str | Path, out: str | Path,
                         calibration_texts: Sequence[str], *, batch_size: int = 16) -> Path:
    """Static (calibrated) INT8 of an export's fp32 graph, for comparison with the dynamic
    INT8 the export ships: ``onnxruntime.quantization.quantize_static`` (QOperator format,
    QUInt8 activations, per-channel QInt8 weights, MinMax ranges), the same MatMuls kept
    fp32 as the export's dynamic model.

    Args:
        export_dir: an ``itsm export`` folder; out: the ``.onnx`` file to write (new).
        calibration_texts: texts whose activation ranges fix the scales — TRAINING texts,
            never the texts the result is measured on.

    Returns:
        ``out``.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    meta = read_export_meta(export_dir)
    out = Path(out)
    if out.exists():
        raise ItsmError("the static INT8 file exists already", where=str(out),
                        fix="choose a new file name")
    fp32 = load_export(export_dir, "fp32")
    encs = fp32.tokenizer.encode_batch([str(t).strip() for t in calibration_texts])
    feeds = [fp32._batch(encs, np.arange(s, min(s + batch_size, len(encs))))
             for s in range(0, len(encs), batch_size)]

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    pre = out.with_suffix(".pre.onnx")
    try:
        quant_pre_process(str(fp32.onnx_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), _Reader(), quant_format=QuantFormat.QOperator,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                        nodes_to_exclude=list(meta["quantization"]["fp32_nodes"]),
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        pre.unlink(missing_ok=True)
        for extra in out.parent.glob("augmented_model*.onnx"):
            extra.unlink(missing_ok=True)
    return out


def quantize_embeddings_too(export_dir: str | Path, out: str | Path) -> Path:
    """The export's dynamic INT8 with the token-embedding table (``Gather``) quantized as
    well: the file shrinks by ~3/4 of the table; the lookups dequantize rows on the fly."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    meta = read_export_meta(export_dir)
    out = Path(out)
    if out.exists():
        raise ItsmError("the file exists already", where=str(out), fix="choose a new name")
    quantize_dynamic(str(Path(export_dir) / meta["files"]["fp32"]), str(out),
                     per_channel=True, weight_type=QuantType.QInt8,
                     reduce_range=bool(meta["quantization"].get("reduce_range", False)),
                     nodes_to_exclude=list(meta["quantization"]["fp32_nodes"]),
                     op_types_to_quantize=["MatMul", "Gemm", "Attention", "Gather"],
                     extra_options={"DefaultTensorType": 1})
    return out


def candidate_graphs(export_dir: str | Path, folder: str | Path,
                     calibration_texts: Sequence[str]) -> dict[str, Path]:
    """Other INT8 graphs of an export's model, built into ``folder`` for
    ``itsm bench encode``: static (calibrated on ``calibration_texts``, TRAINING texts),
    INT8 with an INT8 embedding table, and (BERT family) the fused graph (Attention →
    QAttention, SkipLayerNorm, BiasGelu) re-exported from the source model.

    Returns:
        Backend name -> ONNX file.
    """
    from itsm_core.core.io import scratch_cwd

    meta = read_export_meta(export_dir)
    export_dir, folder = Path(export_dir).resolve(), Path(folder).resolve()
    src = meta["source"].get("path")
    with scratch_cwd():  # onnxruntime's shape inference leaves scratch files in the cwd
        found = {"onnx int8 static": quantize_static_int8(export_dir, folder / "static.onnx",
                                                          calibration_texts),
                 "onnx int8 + int8 embeddings": quantize_embeddings_too(
                     export_dir, folder / "gather.onnx")}
        if meta["source"].get("model_type") == "bert" and src and Path(src).exists():
            fused = export_onnx(src, folder / "fused",
                                max_seq_length=int(meta["max_seq_length"]),
                                fp32_nodes=meta["quantization"]["fp32_patterns"],
                                optimize=True)
            found["onnx int8 fused"] = fused / ONNX_FILES["int8"]
    return found


def backend_encoders(export_dir: str | Path, *, threads: int | None = None,
                     extended: bool = False, candidates: dict[str, Path] | None = None
                     ) -> dict[str, tuple[Any, float | None]]:
    """The encoders compared side by side, by backend name, with their file size in MB.

    Always ``torch fp32`` (plain sentence-transformers, the reference), ``onnx fp32`` and
    ``onnx int8`` (the export's dynamic INT8). ``extended`` adds the cache's canonical
    batching (:func:`itsm_core.encoders.cache.canonical_batches`) for torch and INT8, torch
    bf16 autocast (CPUs with native bf16 only) and the ``candidates`` graphs
    (:func:`candidate_graphs`).
    """
    from itsm_core.encoders.cache import CachedEncoder, bf16_supported
    from itsm_core.encoders.onnx import OnnxEncoder

    meta = read_export_meta(export_dir)
    ref = torch_reference(meta)
    src = meta["source"].get("path")
    src_file = next((Path(src) / f for f in ("model.safetensors", "pytorch_model.bin")
                     if src and (Path(src) / f).exists()), None)
    torch_mb = round(src_file.stat().st_size / 2**20, 1) if src_file else None
    found: dict[str, tuple[Any, float | None]] = {"torch fp32": (ref, torch_mb)}
    if extended:
        found["torch fp32 length-bucketed"] = (
            CachedEncoder(ref, None, None, canonical=True), torch_mb)
        if bf16_supported():
            found["torch bf16"] = (CachedEncoder(ref, None, None, precision="bf16"), torch_mb)
            found["torch bf16 length-bucketed"] = (CachedEncoder(
                ref, None, None, precision="bf16", canonical=True), torch_mb)
    for variant in ("fp32", "int8"):
        enc = load_export(export_dir, variant=variant, threads=threads)
        found[f"onnx {variant}"] = (enc, round(enc.onnx_path.stat().st_size / 2**20, 1))
    if extended:
        int8, mb = found["onnx int8"]
        # what the cache does with it: one text per call (dynamic scales span the batch)
        found["onnx int8 one text per call" if not int8.batch_invariant
              else "onnx int8 length-bucketed"] = (
            CachedEncoder(int8, None, None, canonical=True), mb)
        for name, file in (candidates or {}).items():
            enc = OnnxEncoder(export_dir, "int8", threads=threads, onnx_file=file)
            found[name] = (enc, round(Path(file).stat().st_size / 2**20, 1))
    return found


def tokenize_throughput(export_dir: str | Path, texts: Sequence[str]) -> float:
    """Sentences/s of tokenization alone (the export's fast tokenizer), best of 3."""
    enc = load_export(export_dir, "fp32")
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        enc.tokenizer.encode_batch([str(t).strip() for t in texts])
        best = max(best, len(texts) / (time.perf_counter() - t0))
    return best


def operator_profile(export_dir: str | Path, texts: Sequence[str], *, variant: str = "int8",
                     batch_size: int = 32, threads: int | None = None,
                     onnx_file: str | Path | None = None) -> list[dict[str, Any]]:
    """Where an ONNX graph spends its time: ONNX Runtime's profiler over ``texts``, node
    time summed per operator type, largest first (``share`` of all node time).

    Returns:
        Rows ``{"op": …, "ms": …, "share": …, "calls": …}``.
    """
    import tempfile

    import onnxruntime as ort

    from itsm_core.encoders.onnx import OnnxEncoder

    enc = OnnxEncoder(export_dir, variant, threads=threads, onnx_file=onnx_file)
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = enc.session.get_session_options().intra_op_num_threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        enc.session = ort.InferenceSession(str(enc.onnx_path), opts,
                                           providers=["CPUExecutionProvider"])
        enc.encode(list(texts), batch_size=batch_size)
        events = json.loads(Path(enc.session.end_profiling()).read_text(encoding="utf-8"))
    per: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            per.setdefault(e.get("args", {}).get("op_name", "?"), []).append(
                float(e.get("dur", 0)) / 1000)
    total = sum(sum(v) for v in per.values()) or 1.0
    return sorted(({"op": op, "ms": round(sum(v), 1), "share": round(sum(v) / total, 3),
                    "calls": len(v)} for op, v in per.items()),
                  key=lambda r: -r["ms"])


def compare_backends(export_dir: str | Path, texts: Sequence[str], *, batch_size: int = 32,
                     repeats: int = 1, threads: int | None = None,
                     encoders: dict[str, tuple[Any, float | None]] | None = None
                     ) -> list[dict[str, Any]]:
    """Backends side by side on the same texts, same threads: sentences/s, speed-up over
    torch fp32, file size, cosine agreement with torch fp32.

    Args:
        export_dir: the export; texts: what is encoded; batch_size, repeats: timing.
        threads: intra-op threads for torch and ONNX Runtime (default torch's).
        encoders: :func:`backend_encoders` (default: torch fp32, ONNX fp32, ONNX INT8).
    """
    import torch

    meta = read_export_meta(export_dir)
    if threads:
        torch.set_num_threads(int(threads))
    threads = torch.get_num_threads()
    encoders = encoders or backend_encoders(export_dir, threads=threads)
    rows, tps, ref_emb = [], None, None
    for name, (enc, size_mb) in encoders.items():
        t, emb = encode_throughput(enc, texts, batch_size, repeats)
        if tps is None:
            tps, ref_emb = t, emb
        cos = np.einsum("ij,ij->i", emb, ref_emb)
        rows.append({"backend": name, "sentences_per_s": round(t, 1),
                     "speedup": round(t / tps, 2), "size_mb": size_mb,
                     "cos_mean": round(float(cos.mean()), 5),
                     "cos_min": round(float(cos.min()), 5)})
    for r in rows:
        r.update({"threads": threads, "batch_size": batch_size, "n_texts": len(texts),
                  "max_seq_length": meta["max_seq_length"]})
    return rows


def backend_ndcg(encoders: dict[str, tuple[Any, float | None]], spec: ModelSpec, bench
                 ) -> list[dict[str, Any]]:
    """NDCG@10 per backend on ``bench`` (CIs) and the paired bootstrap difference to the
    first backend (torch fp32) on the same queries."""
    from itsm_core.encoders.scorers import DenseScorer
    from itsm_core.evaluation.benchmark import retrieval_per_query
    from itsm_core.metrics import stats as M

    boot = dict(n_resamples=bench.config.n_resamples, level=bench.config.ci_level,
                seed=bench.config.seed)
    rows, base = [], None
    for name, (enc, _) in encoders.items():
        sc = DenseScorer(replace(spec, key=name), model=enc, show_progress=False)
        table = retrieval_per_query(sc, bench)
        pq = table.set_index("query")["ndcg@10"].dropna()
        summary = M.summarize_with_ci(table, ["ndcg@10"], **boot)
        row = {"backend": name, "split": bench.config.query_split,
               "ndcg@10": round(float(summary["ndcg@10"]), 4),
               "ndcg@10_ci": [round(float(x), 4) for x in summary["ndcg@10_ci"]]}
        if base is None:
            base = pq
            row.update({"delta_vs_torch": 0.0, "delta_ci": [0.0, 0.0]})
        else:
            d = M.paired_bootstrap_diff(pq.to_numpy(), base.loc[pq.index].to_numpy(), **boot)
            row.update({"delta_vs_torch": round(float(d["diff"]), 4),
                        "delta_ci": [round(float(d["ci_low"]), 4),
                                     round(float(d["ci_high"]), 4)]})
        rows.append(row)
    return rows


def ndcg_by_backend(export_dir: str | Path, bench, *, threads: int | None = None
                    ) -> list[dict[str, Any]]:
    """NDCG@10 of torch fp32, ONNX fp32 and ONNX INT8 on one benchmark (its query split),
    with CIs and the paired bootstrap difference to torch on the same queries; the
    encodings go through the embedding cache (the timing passes never do)."""
    from itsm_core.encoders.cache import wrap_encoder

    meta = read_export_meta(export_dir)
    src = meta["source"].get("path") or meta["source"]["model"]
    encoders = backend_encoders(export_dir, threads=threads)
    cached = {"torch fp32": (wrap_encoder(encoders["torch fp32"][0], src, src, prec="fp32"),
                             None)}
    for variant in ("fp32", "int8"):
        enc = encoders[f"onnx {variant}"][0]
        cached[f"onnx {variant}"] = (wrap_encoder(enc, str(enc.onnx_path)), None)
    return backend_ndcg(cached, ModelSpec.from_dict(meta["spec"]), bench)


def measure_export(export_dir: str | Path, *, dataset: str = "it_tickets",
                   n_texts: int = 512, batch_size: int = 32, splits: Sequence[str] = (
                       "validation", "test"), bootstrap: int = 1000,
                   threads: int | None = None) -> dict[str, Any]:
    """The export report in one run: throughput / size / cosine agreement on validation
    texts, and NDCG@10 per backend on the benchmark splits (validation for decisions, test
    reported). Written to ``export_report.json`` and into ``itsm_export.json``."""
    from itsm_core.data.datasets import processed_path
    from itsm_core.evaluation.benchmark import BenchmarkConfig, build_benchmark

    export_dir = Path(export_dir)
    meta = read_export_meta(export_dir)
    texts = sample_texts(dataset, "validation", n_texts)
    speed = compare_backends(export_dir, texts, batch_size=batch_size, threads=threads)
    quality = []
    for split in splits:
        bench = build_benchmark(processed_path(dataset), config=BenchmarkConfig(
            query_split=split, n_resamples=bootstrap))
        quality += ndcg_by_backend(export_dir, bench, threads=threads)
    int8 = next(r for r in speed if r["backend"] == "onnx int8")
    test = {r["backend"]: r for r in quality if r["split"] == "test"}
    targets = {}
    if "onnx int8" in test:
        targets = {"int8_speedup_ge_3x": bool(int8["speedup"] >= 3.0),
                   "int8_ndcg_loss_le_0.005": bool(-test["onnx int8"]["delta_vs_torch"]
                                                    <= 0.005)}
    report = {"export": str(export_dir), "model": meta["name"], "dataset": dataset,
              "speed": speed, "quality": quality, "targets": targets,
              "fp32_nodes": meta["quantization"]["fp32_nodes"],
              "fp32_patterns": meta["quantization"]["fp32_patterns"]}
    atomic_write_json(export_dir / EXPORT_REPORT_FILE, report)
    atomic_write_json(export_dir / EXPORT_META_FILE, {**meta, "report": report})
    return report


def pattern_agreement(export_dir: str | Path, candidates: dict[str, Sequence[str]],
                      texts: Sequence[str], *, threads: int | None = None
                      ) -> list[dict[str, Any]]:
    """Cosine agreement with the fp32 ONNX model of INT8 variants that keep different node
    sets in fp32 (quantized into a temporary folder; the export is not changed).

    This is how the fp32 defaults are justified: on validation texts, never on test.
    """
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    export_dir = Path(export_dir)
    fp32 = load_export(export_dir, "fp32", threads=threads)
    ref = fp32.encode(list(texts), batch_size=32)
    rows = []
    with tempfile.TemporaryDirectory(prefix="itsm-quant-") as tmp:
        for label, patterns in candidates.items():
            nodes = matching_nodes(fp32.onnx_path, patterns)
            target = Path(tmp) / f"{len(rows)}.onnx"
            quantize_dynamic(str(fp32.onnx_path), str(target), per_channel=True,
                             reduce_range=int8_reduce_range(),
                             weight_type=QuantType.QInt8, nodes_to_exclude=nodes,
                             op_types_to_quantize=["MatMul", "Gemm"])
            enc = load_export(export_dir, "fp32", threads=threads)
            import onnxruntime as ort

            enc.session = ort.InferenceSession(str(target), enc.session.get_session_options(),
                                               providers=["CPUExecutionProvider"])
            t, emb = encode_throughput(enc, texts)
            cos = np.einsum("ij,ij->i", emb, ref)
            rows.append({"fp32 nodes": label, "n_fp32_matmuls": len(nodes),
                         "cos_mean": round(float(cos.mean()), 5),
                         "cos_min": round(float(cos.min()), 5),
                         "sentences_per_s": round(t, 1),
                         "size_mb": round(target.stat().st_size / 2**20, 1)})
    return rows


# ----------------------------------------------------------------------------- commands


def resolve_model(model: str | None, trained: str | None = None,
                  trained_name: str = "minilm-ft") -> str:
    """The model spec a deployment command works on.

    Args:
        model: a model spec, or ``latest-export`` (the newest ``itsm export`` folder).
        trained: instead, the newest run called ``trained_name`` evaluated on this data set.
        trained_name: the training run name for ``trained``.

    Raises:
        ItsmError: nothing found / nothing given, with what to run.
    """
    from itsm_core.runs.store import latest_model_dir

    if trained:
        found = latest_model_dir(trained, trained_name)
        if not found:
            raise ItsmError(f"no model {trained_name!r} evaluated on {trained!r} on the "
                            "leaderboard", where="--trained",
                            fix=f"train it (`make train` / `itsm train --dataset {trained}`)"
                            ", choose --trained-name, or pass --model")
        return found
    if model == "latest-export":
        found = latest_export()
        if found is None:
            raise ItsmError("no export under models/ yet", where="--model latest-export",
                            fix="run `make export` or `itsm export --model ...` first")
        return str(found)
    if not model:
        raise ItsmError("no model given", fix="pass --model <spec> (or --trained <dataset>)")
    return model


def parse_fp32_nodes(value: str | None) -> list[str] | None:
    """``--fp32-nodes``: None = the architecture's default, ``none`` = quantize every
    MatMul, else comma-separated regexes of ONNX node names kept fp32."""
    if value is None:
        return None
    if value.strip().lower() == "none":
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


def export_key(src: str, max_seq_length: int | None, fp32_nodes: str | None,
               optimize: bool) -> str:
    """SHA-256 of what an export depends on: the source model's files, the options, the
    opset, the library versions and the ``itsm_core`` source."""
    import hashlib

    from itsm_core.core.io import source_fingerprint
    from itsm_core.encoders.cache import folder_fingerprint
    from itsm_core.encoders.registry import resolve_spec

    path = resolve_spec(src).path
    weights = folder_fingerprint(path) if path and Path(path).exists() else str(src)
    return hashlib.sha256(json.dumps(
        {"weights": weights, "max_seq_length": max_seq_length, "fp32_nodes": fp32_nodes,
         "optimize": optimize, "opset": OPSET, "versions": _versions(),
         "reduce_range": int8_reduce_range(), "code": source_fingerprint()},
        sort_keys=True).encode()).hexdigest()


def export_or_reuse(src: str, out: str | Path | None = None, *,
                    max_seq_length: int | None = None, fp32_nodes: str | None = None,
                    optimize: bool = False, measure: bool = True, reuse: bool | None = None,
                    **measure_options: Any) -> tuple[Path, dict[str, Any] | None, bool]:
    """``itsm export``: a new export (measured), or — for a default location and
    ``reuse`` — the measured export folder made earlier from the identical model, options
    and code (:func:`export_key`; ``make pipeline`` again re-exports nothing).

    Args:
        src: the model spec; out: a new folder (default ``models/<ts>_<name>-onnx``).
        max_seq_length, fp32_nodes, optimize: as :func:`export_onnx`.
        measure: measure the export (:func:`measure_export`, ``measure_options``).
        reuse: allow reusing an identical earlier export (default:
            :func:`~itsm_core.core.config.reuse_runs`).

    Returns:
        ``(folder, report or None, reused)``.
    """
    from itsm_core.core.config import MODELS_DIR, reuse_runs
    from itsm_core.runs.store import latest_matching

    key = export_key(src, max_seq_length, fp32_nodes, optimize)
    if out is None and (reuse_runs() if reuse is None else reuse):
        prior = latest_matching(MODELS_DIR, EXPORT_META_FILE, "export_key", key)
        if prior is not None and (not measure or (prior / EXPORT_REPORT_FILE).exists()):
            report = json.loads((prior / EXPORT_REPORT_FILE).read_text(encoding="utf-8")) \
                if measure else None
            return prior, report, True
    folder = export_to_models(src, out, max_seq_length=max_seq_length,
                              fp32_nodes=fp32_nodes, optimize=optimize, key=key)
    return folder, measure_export(folder, **measure_options) if measure else None, False


def export_to_models(src: str, out: str | Path | None = None, *,
                     max_seq_length: int | None = None, fp32_nodes: str | None = None,
                     optimize: bool = False, key: str | None = None) -> Path:
    """Export ``src`` into a NEW folder (default
    ``models/<timestamp>_<name>-onnx``, named after the run for a run's ``model/``)."""
    from itsm_core.core.config import MODELS_DIR
    from itsm_core.core.io import unique_run_dir

    base = Path(src).name if Path(src).name != "model" else Path(src).parent.name.split(
        "_", 1)[-1]
    target = out or unique_run_dir(MODELS_DIR, f"{base}-onnx")
    return export_onnx(src, target, max_seq_length=max_seq_length,
                       fp32_nodes=parse_fp32_nodes(fp32_nodes), name=f"{base}.onnx",
                       optimize=optimize, key=key)


# ----------------------------------------------------------------------------- re-ranker


def export_reranker(model_dir: str | Path, out: str | Path, *,
                    pairs: Sequence[Sequence[str]] | None = None,
                    max_length: int | None = None) -> Path:
    """A trained cross-encoder (``itsm rerank`` ``model/`` folder) as fp32 + dynamic INT8
    ONNX with its tokenizer; a spec everywhere a cross-encoder is (``rerank:<out>@…``).

    Args:
        model_dir: the sentence-transformers ``CrossEncoder`` folder.
        out: a new, empty folder.
        pairs: (query, candidate) pairs the INT8 graph is checked on against torch
            (validation pairs, never test); the agreement goes into the metadata.
        max_length: token limit of a pair (default: the cross-encoder's).

    Returns:
        The export folder (``itsm_reranker_export.json``, ``reranker_fp32.onnx``,
        ``reranker_int8.onnx``, ``tokenizer/``).
    """
    import warnings

    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from itsm_core.core.io import new_run_dir, scratch_cwd
    from itsm_core.encoders.rerank import (
        CE_EXPORT_FILE,
        CE_META_FILE,
        CE_ONNX_FILES,
        OnnxCrossEncoder,
        load_cross_encoder,
    )
    from itsm_core.metrics.stats import spearman

    src = Path(model_dir)
    ce = load_cross_encoder(src)
    out = new_run_dir(out).resolve()
    max_len = int(max_length or ce.max_seq_length or 256)
    tokenizer = ce.tokenizer
    tokenizer.save_pretrained(out / "tokenizer")
    if not (out / "tokenizer" / "tokenizer.json").exists():
        raise ItsmError("the cross-encoder has no fast tokenizer (tokenizer.json)",
                        where=str(src), fix="train it from a model with a fast tokenizer")
    sample = tokenizer(["vpn drops every hour", "printer jams"], ["vpn is down", "toner"],
                       padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    input_names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in sample]
    hf = ce.model.eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hf = hf

        def forward(self, *tensors):
            return self.hf(**dict(zip(input_names, tensors))).logits

    fp32, int8 = out / CE_ONNX_FILES["fp32"], out / CE_ONNX_FILES["int8"]
    dyn = {k: {0: "batch", 1: "sequence"} for k in input_names}
    dyn["logits"] = {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Logits().eval(), tuple(sample[k] for k in input_names), str(fp32),
                          dynamo=False, input_names=input_names, output_names=["logits"],
                          dynamic_axes=dyn, opset_version=OPSET, do_constant_folding=True)
    with scratch_cwd():
        quantize_dynamic(str(fp32), str(int8), per_channel=True,
                         reduce_range=int8_reduce_range(), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"])
    name_meta = src / CE_META_FILE
    name = (json.loads(name_meta.read_text(encoding="utf-8")).get("name")
            if name_meta.exists() else src.name)
    meta: dict[str, Any] = {
        "name": f"{name}.onnx", "source": str(src.resolve()),
        "source_sha256": _fingerprint(src), "input_names": input_names,
        "max_length": max_len, "files": dict(CE_ONNX_FILES),
        "sha256": {v: sha256_file(out / f) for v, f in CE_ONNX_FILES.items()},
        "quantization": {"method": "onnxruntime.quantization.quantize_dynamic",
                         "per_channel": True, "weight_type": "QInt8",
                         "reduce_range": int8_reduce_range()},
        "opset": OPSET, "versions": _versions(), "created": timestamp(),
        "git_commit": git_commit(),
    }
    atomic_write_json(out / CE_EXPORT_FILE, meta)
    if pairs:  # agreement and speed of each variant against torch, side by side
        pairs = [list(p) for p in pairs]
        rows = []
        t0 = time.perf_counter()
        ref = np.asarray(ce.predict(pairs, batch_size=32, show_progress_bar=False))
        torch_s = time.perf_counter() - t0
        rows.append({"backend": "torch fp32", "pairs_per_s": round(len(pairs) / torch_s, 1)})
        for variant in ("fp32", "int8"):
            enc = OnnxCrossEncoder(out, variant=variant)
            t0 = time.perf_counter()
            got = enc.predict(pairs, batch_size=32)
            secs = time.perf_counter() - t0
            rows.append({"backend": f"onnx {variant}", "pairs_per_s": round(len(pairs) / secs, 1),
                         "speedup": round(torch_s / secs, 2),
                         "max_abs_diff": round(float(np.max(np.abs(got - ref))), 4),
                         "spearman_to_torch": round(float(spearman(got, ref)), 4)})
        meta["agreement"] = {"n_pairs": len(pairs), "rows": rows}
        atomic_write_json(out / CE_EXPORT_FILE, meta)
    return out


def export_reranker_measured(model_dir: str | Path, out: str | Path | None = None, *,
                             dataset: str = "it_tickets", n_pairs: int = 512) -> Path:
    """``itsm export --reranker``: :func:`export_reranker` into ``out`` (default
    ``<run>/onnx`` beside the model folder, or a new sibling), checked against torch on
    ``n_pairs`` VALIDATION pairs of ``dataset``'s benchmark."""
    from itsm_core.core.io import unique_run_dir
    from itsm_core.data.datasets import processed_path
    from itsm_core.evaluation.benchmark import BenchmarkConfig, build_benchmark

    src = Path(model_dir)
    if out is None:
        out = unique_run_dir(src.parent, "onnx")
    bench = build_benchmark(processed_path(dataset), config=BenchmarkConfig(
        query_split="validation", threshold_split="validation", n_resamples=0))
    tp = bench.threshold_pairs.sample(min(n_pairs, len(bench.threshold_pairs)),
                                      random_state=bench.config.seed)
    return export_reranker(src, out, pairs=list(zip(tp["text_a"], tp["text_b"])))


def resolve_reranker(value: str | Path, *, onnx: bool = False) -> Path:
    """``--reranker``: a folder as given, or ``latest`` = the newest finished ``itsm
    rerank`` run's ``model/`` (``onnx=True``: the newest INT8 export inside that run).

    Raises:
        ItsmError: nothing found, with what to run.
    """
    from itsm_core.encoders.rerank import CE_EXPORT_FILE, CE_META_FILE
    from itsm_core.runs.store import latest_folder

    if str(value) != "latest":
        return Path(value)
    from itsm_core.core.config import MODELS_DIR

    runs = sorted(p.parent for p in (MODELS_DIR / "rerankers").glob(f"*/{CE_META_FILE}")
                  if (p.parent / "model").is_dir())
    if not runs:
        raise ItsmError("no trained re-ranker under models/rerankers/", where="latest",
                        fix="run `itsm rerank` (or `make rerank`) first")
    if not onnx:
        return runs[-1] / "model"
    found = latest_folder(runs[-1], CE_EXPORT_FILE)
    if found is None:
        raise ItsmError("the newest re-ranker has no export yet", where=str(runs[-1]),
                        fix="run `itsm export --reranker latest` first")
    return found
