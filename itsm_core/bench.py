"""Benchmarks that print figures (never timed tests).

``train_throughput`` measures pairs/second of the default training recipe against the
plain sentence-transformers recipe (full fine-tuning, MNRL, default sampler) on the
same pairs, side by side in one process, so the ratio is meaningful on any machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from itsm_core.config import RESULTS_DIR, SEED
from itsm_core.io import atomic_write_json, timestamp


@dataclass
class ThroughputResult:
    recipe: str
    steps: int
    pairs: int
    seconds: float

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds if self.seconds else float("nan")


def _time_recipe(name: str, model_spec: str, pairs: pd.DataFrame, *, lora: bool,
                 matryoshka: bool, label_aware: bool, curriculum: bool, negatives: bool,
                 steps: int, batch_size: int, max_seq_length: int) -> ThroughputResult:
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import (
        MatryoshkaLoss,
        MultipleNegativesRankingLoss,
    )

    from itsm_core.models import load_sentence_transformer
    from itsm_core.train import (
        LabelAwareMNRL,
        PhaseOrderedBatchSampler,
        TrainConfig,
        add_lora,
        build_train_dataset,
    )

    cfg = TrainConfig(model=model_spec, curriculum=curriculum, use_negatives=negatives,
                      batch_size=batch_size, seed=SEED)
    # the caller passes the SAME pair sample to every recipe: one epoch over it, so the
    # recipes differ only in how they process identical texts (not in which texts)
    ds, phases = build_train_dataset(pairs, cfg)
    model, spec = load_sentence_transformer(model_spec)
    model.max_seq_length = max_seq_length
    if lora:
        add_lora(model, spec, cfg)
    inner = LabelAwareMNRL(model) if label_aware else MultipleNegativesRankingLoss(model)
    loss = MatryoshkaLoss(model, inner, matryoshka_dims=list(spec.eval_dims)) \
        if matryoshka else inner
    import functools

    sampler = (functools.partial(PhaseOrderedBatchSampler, phases=tuple(phases))
               if curriculum else BatchSamplers.BATCH_SAMPLER)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(Path("/tmp") / f"itsm_bench_{name}"), max_steps=steps,
        per_device_train_batch_size=batch_size, learning_rate=2e-5, save_strategy="no",
        report_to="none", use_cpu=not torch.cuda.is_available(), batch_sampler=sampler,
        logging_steps=10**6, disable_tqdm=True, seed=SEED)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss)
    t0 = time.perf_counter()
    trainer.train()
    secs = time.perf_counter() - t0
    return ThroughputResult(name, trainer.state.global_step,
                            trainer.state.global_step * batch_size, secs)


def train_throughput(model_spec: str = "minilm", dataset: str = "it_tickets", steps: int = 20,
                     batch_size: int = 32, max_seq_length: int = 128,
                     out_dir: str | Path | None = None) -> dict[str, Any]:
    """Pairs/s of the default recipe vs the plain sentence-transformers recipe."""
    from itsm_core.train import TrainConfig, make_pairs

    recipe = TrainConfig()
    pairs, _ = make_pairs(dataset)
    if recipe.use_negatives:
        pairs = pairs[pairs["negative"].notna()]
    pairs = pairs.sample(steps * batch_size, random_state=SEED)
    # both recipes see the same texts: (anchor, positive[, negative]) as the recipe uses them
    plain = _time_recipe("plain_st", model_spec, pairs, lora=False, matryoshka=False,
                         label_aware=False, curriculum=False, negatives=recipe.use_negatives,
                         steps=steps, batch_size=batch_size, max_seq_length=max_seq_length)
    ours = _time_recipe("default_recipe", model_spec, pairs, lora=recipe.mode == "lora",
                        matryoshka=recipe.matryoshka, label_aware=recipe.label_aware,
                        curriculum=recipe.curriculum, negatives=recipe.use_negatives,
                        steps=steps, batch_size=batch_size, max_seq_length=max_seq_length)
    result = {
        "model": model_spec, "dataset": dataset, "steps": steps, "batch_size": batch_size,
        "max_seq_length": max_seq_length, "threads": torch.get_num_threads(),
        "plain_st_pairs_per_s": round(plain.pairs_per_second, 2),
        "default_recipe_pairs_per_s": round(ours.pairs_per_second, 2),
        "ratio_default_over_plain": round(ours.pairs_per_second / plain.pairs_per_second, 3),
        "note": "plain = full fine-tune, MNRL, random batches; default = LoRA, "
                "MatryoshkaLoss(label-aware MNRL), curriculum sampler; both run one epoch "
                "over the same sample of steps x batch_size pairs (triplets when the recipe uses "
                "hard negatives)", "recipe_uses_negatives": recipe.use_negatives,
    }
    out = Path(out_dir or RESULTS_DIR / "bench")
    atomic_write_json(out / f"train_throughput_{model_spec}_{timestamp()}.json", result)
    return result


def latest_bench(kind: str = "train_throughput", out_dir: str | Path | None = None
                 ) -> dict[str, Any] | None:
    """The newest benchmark JSON of a kind (for reports), or None."""
    import json

    files = sorted(Path(out_dir or RESULTS_DIR / "bench").glob(f"{kind}_*.json"))
    return json.loads(files[-1].read_text()) if files else None


# ----------------------------------------------------------------------------- deployment


def _percentiles_ms(seconds: list[float]) -> dict[str, float]:
    import numpy as np

    ms = np.asarray(seconds) * 1000.0
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "mean_ms": round(float(ms.mean()), 3)}


def _blas_threads() -> int | None:
    try:
        from threadpoolctl import threadpool_info

        return max((i.get("num_threads") or 0 for i in threadpool_info()), default=None)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return None


def _topk(scores, k: int):  # noqa: ANN001 - numpy array
    import numpy as np

    idx = np.argpartition(-scores, k - 1)[:k]
    return idx[np.argsort(-scores[idx])]


def search_latency(n: int = 50_000, dims: tuple[int, ...] = (384, 256, 128, 64),
                   k: int = 10, n_queries: int = 200, index: str | Path | None = None,
                   seed: int = SEED, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Top-``k`` exact search latency (p50 / p95, one query at a time) per dim.

    ``synthetic``: ``n`` random unit vectors (Gaussian, normalised, seeded) per dim, the
    same code path as :class:`itsm_core.search.SearchIndex` (truncate, matrix-vector,
    argpartition). With ``index``, also the real index: dense per dim, BM25 and hybrid
    (query encoding excluded; measured separately as ``encode_query``), plus its build
    time from its manifest. Memory = the float32 matrix held per dim.
    """
    import resource

    import numpy as np

    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    base = rng.standard_normal((n, max(dims)), dtype=np.float32)
    queries = rng.standard_normal((n_queries, max(dims)), dtype=np.float32)
    for d in dims:
        m = np.ascontiguousarray(base[:, :d])
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        q = queries[:, :d] / np.linalg.norm(queries[:, :d], axis=1, keepdims=True)
        times = []
        for v in q:
            t0 = time.perf_counter()
            _topk(m @ v, k)
            times.append(time.perf_counter() - t0)
        rows.append({"corpus": f"synthetic unit vectors (n={n})", "what": "dense", "dim": d,
                     "n": n, "index_mb": round(m.nbytes / 2**20, 1), **_percentiles_ms(times)})
    result: dict[str, Any] = {"k": k, "n_queries": n_queries, "blas_threads": _blas_threads(),
                              "torch_threads": torch.get_num_threads(), "rows": rows}
    if index is not None:
        result.update(_index_latency(index, dims, k, min(n_queries, 100), rows))
    result["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out = Path(out_dir or RESULTS_DIR / "bench")
    atomic_write_json(out / f"search_latency_{timestamp()}.json", result)
    return result


def _index_latency(index: str | Path, dims: tuple[int, ...], k: int, n_queries: int,
                   rows: list[dict[str, Any]]) -> dict[str, Any]:
    from itsm_core.search import SearchIndex

    idx = SearchIndex(index)
    texts = idx.incidents["text"].sample(min(n_queries, len(idx)), random_state=SEED).tolist()
    t0 = time.perf_counter()
    idx.bm25()
    bm25_build = time.perf_counter() - t0
    enc_times = []
    q_full = []
    for t in texts:  # one query at a time, as a user would
        t0 = time.perf_counter()
        q_full.append(idx.embed_queries([t])[0])
        enc_times.append(time.perf_counter() - t0)
    import numpy as np

    q_full = np.stack(q_full)
    name = f"{Path(index).name} (n={len(idx)})"
    for d in [d for d in dims if d <= idx.dim]:
        m = idx.matrix(d)
        q = q_full[:, :d] / np.linalg.norm(q_full[:, :d], axis=1, keepdims=True)
        times = []
        for v in q:
            t0 = time.perf_counter()
            _topk(m @ v, k)
            times.append(time.perf_counter() - t0)
        rows.append({"corpus": name, "what": "dense", "dim": d, "n": len(idx),
                     "index_mb": round(m.nbytes / 2**20, 1), **_percentiles_ms(times)})
    for what in ("bm25", "hybrid"):
        times = []
        for t, v in zip(texts, q_full):
            t0 = time.perf_counter()
            lex = idx.bm25_scores([t])
            s = lex[0] if what == "bm25" else idx.fusion.fuse(idx.matrix() @ v, lex)[0]
            _topk(s, k)
            times.append(time.perf_counter() - t0)
        rows.append({"corpus": name, "what": what, "dim": idx.dim, "n": len(idx),
                     "index_mb": None, **_percentiles_ms(times)})
    build = next((h for h in idx.meta.get("history", []) if h.get("op") == "build"), {})
    return {"index": str(index), "model": idx.model_name,
            "encode_query": _percentiles_ms(enc_times),
            "bm25_build_seconds": round(bm25_build, 2),
            "index_build_seconds": build.get("build_seconds"),
            "index_encode_sentences_per_s": build.get("sentences_per_s"),
            "fusion": idx.fusion.describe()}


def encode_throughput(export_dir: str | Path, dataset: str = "it_tickets", n: int = 512,
                      batch_size: int = 32, out_dir: str | Path | None = None
                      ) -> dict[str, Any]:
    """Sentences/s of torch fp32, ONNX fp32 and ONNX INT8 on the same validation texts
    (same threads, same token limit), with size and cosine agreement to torch."""
    from itsm_core.export import compare_backends, sample_texts

    texts = sample_texts(dataset, "validation", n)
    rows = compare_backends(export_dir, texts, batch_size=batch_size)
    result = {"export": str(export_dir), "dataset": dataset, "rows": rows}
    out = Path(out_dir or RESULTS_DIR / "bench")
    atomic_write_json(out / f"encode_throughput_{timestamp()}.json", result)
    return result
