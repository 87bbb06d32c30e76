"""Measured serving latency: exact search at several Matryoshka dims, and encoding
throughput of an export against torch (printed figures; JSON under
``models/results/bench/``). Benchmarks print figures; no test asserts a timing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from itsm_core.core.config import RESULTS_DIR, SEED
from itsm_core.core.io import atomic_write_json, git_commit, timestamp


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
    same code path as :class:`itsm_core.serving.index.SearchIndex` (truncate, matrix-vector,
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
    from itsm_core.serving.index import SearchIndex

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


def encode_throughput(model: str | Path, dataset: str = "it_tickets", n: int = 512,
                      batch_size: int = 32, out_dir: str | Path | None = None, *,
                      quality_queries: int = 300, quality_corpus: int = 3000,
                      candidates: bool = True) -> dict[str, Any]:
    """``itsm bench encode``: every encoding backend of one model side by side in one run.

    Rows: torch fp32 (plain sentence-transformers, the reference), the cache's
    length-bucketed batching, torch bf16 autocast (native-bf16 CPUs), ONNX fp32, ONNX
    dynamic INT8 (the export's), INT8 length-bucketed, and the other INT8 graphs of
    :func:`~itsm_core.serving.export.candidate_graphs` (static calibrated on TRAINING texts,
    INT8 embedding table, fused attention) — sentences/s on the same validation texts with
    the same threads, speed-up, file size, cosine to torch fp32 and the NDCG@10 difference
    to torch fp32 (paired bootstrap CI) on a seeded VALIDATION sub-benchmark
    (:func:`~itsm_core.evaluation.benchmark.sample_benchmark`). Tokenization alone is timed
    separately; when INT8 misses 3x, ONNX Runtime's per-operator profile says where the
    time goes.

    Args:
        model: an export folder, or any model spec (exported first, into a new folder).
        dataset: whose validation texts / benchmark; n: texts timed; batch_size: batch.
        quality_queries, quality_corpus: size of the validation sub-benchmark.
        candidates: also build and measure the other INT8 graphs.

    Returns:
        The result, also written to ``models/results/bench/encode_throughput_<ts>.json``.
    """
    import tempfile

    from itsm_core.data.datasets import processed_path
    from itsm_core.encoders.onnx import is_export
    from itsm_core.encoders.registry import ModelSpec
    from itsm_core.evaluation.benchmark import BenchmarkConfig, build_benchmark, sample_benchmark
    from itsm_core.serving.export import (
        backend_encoders,
        backend_ndcg,
        candidate_graphs,
        compare_backends,
        export_to_models,
        operator_profile,
        read_export_meta,
        sample_texts,
        tokenize_throughput,
    )

    export_dir = Path(model) if is_export(model) else export_to_models(str(model))
    meta = read_export_meta(export_dir)
    texts = sample_texts(dataset, "validation", n)
    with tempfile.TemporaryDirectory(prefix="itsm-int8-") as tmp:
        graphs = candidate_graphs(export_dir, tmp, sample_texts(dataset, "train", 256)) \
            if candidates else {}
        encoders = backend_encoders(export_dir, extended=True, candidates=graphs)
        rows = compare_backends(export_dir, texts, batch_size=batch_size, encoders=encoders)
        bench = sample_benchmark(build_benchmark(processed_path(dataset), config=BenchmarkConfig(
            query_split="validation")), quality_queries, quality_corpus)
        quality = {r["backend"]: r for r in backend_ndcg(
            encoders, ModelSpec.from_dict(meta["spec"]), bench)}
        int8 = next(r for r in rows if r["backend"] == "onnx int8")
        profile = operator_profile(export_dir, texts[:128], batch_size=batch_size) \
            if int8["speedup"] < 3 else []
    for r in rows:
        q = quality[r["backend"]]
        r.update({"ndcg@10": q["ndcg@10"], "ndcg_delta": q["delta_vs_torch"],
                  "ndcg_delta_ci": q["delta_ci"]})
    ok = [r for r in rows if r["ndcg_delta"] >= -0.005 and r["cos_mean"] >= 0.99]
    best = max(ok, key=lambda r: r["sentences_per_s"]) if ok else None
    result = {
        "export": str(export_dir), "model": meta["name"], "dataset": dataset,
        "max_seq_length": meta["max_seq_length"], "rows": rows,
        "tokenize_sentences_per_s": round(tokenize_throughput(export_dir, texts), 1),
        "quality_benchmark": {"split": "validation", "n_queries": len(bench.query_ids),
                              "n_corpus": len(bench.corpus_ids), "seed": bench.config.seed},
        "best": best and {"backend": best["backend"], "speedup": best["speedup"]},
        "targets": {"int8_speedup_ge_3x": bool(int8["speedup"] >= 3.0),
                    "int8_ndcg_loss_le_0.005": bool(int8["ndcg_delta"] >= -0.005)},
        "int8_operator_profile": profile,
        "created": timestamp(), "git_commit": git_commit(),
    }
    out = Path(out_dir or RESULTS_DIR / "bench")
    atomic_write_json(out / f"encode_throughput_{timestamp()}.json", result)
    return result


def bench_search(n: int = 50_000, index: str | Path | None = None) -> dict[str, Any]:
    """``itsm bench search``: :func:`search_latency` on ``n`` synthetic vectors and on
    ``index`` (default: the newest index under ``models/indexes/``, when there is one)."""
    from itsm_core.core.errors import ItsmError
    from itsm_core.serving.index import latest_index

    if index is None:
        try:
            index = latest_index()
        except ItsmError:
            index = None
    return search_latency(n=n, index=index)


def serve_latency(index: str | Path | None = None, *, n_requests: int = 200,
                  concurrency: tuple[int, ...] = (1, 8), k: int = 10, mode: str = "hybrid",
                  seed: int = SEED, out_dir: str | Path | None = None) -> dict[str, Any]:
    """``itsm bench serve``: ``POST /similar`` through the real HTTP stack against the
    in-process search call, side by side in one run.

    The service runs in this process (uvicorn on a free loopback port, model and index
    loaded once); clients are threads with one HTTP connection each. Queries are the
    index's validation incidents (or any incidents when it has no split), sampled with
    ``seed``. Every figure is printed and saved; nothing is asserted.

    Args:
        index: the index folder (default: the newest bundled index).
        n_requests: requests per setting; concurrency: client counts to measure.
        k, mode: the search every request makes.
        seed: query sample; out_dir: where the JSON goes (default models/results/bench).

    Returns:
        ``rows`` (setting, clients, requests/s, p50 / p95 ms), the in-process row first,
        and ``overhead`` (p50 of one HTTP client / p50 in process).
    """
    import socket
    import threading

    import numpy as np
    import uvicorn

    from itsm_core.serving.index import latest_index
    from itsm_core.serving.service import ServiceConfig, create_app

    folder = Path(index) if index else latest_index()
    app = create_app(ServiceConfig(indexes={"bench": folder}))
    idx = app.state.collections["bench"].current  # the service's own loaded index
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    while not server.started:
        time.sleep(0.05)
    try:
        inc = idx.incidents
        pool = inc[inc["split"] == "validation"] if "split" in inc.columns else inc
        pool = pool if len(pool) else inc
        rng = np.random.default_rng(seed)
        queries = pool["text"].iloc[rng.choice(len(pool), size=min(n_requests, len(pool)),
                                               replace=len(pool) < n_requests)].tolist()
        idx.search(queries[0], k=k, mode=mode)  # warm: BM25 built, caches filled
        times = []
        t_all = time.perf_counter()
        for q in queries:
            t0 = time.perf_counter()
            idx.search(q, k=k, mode=mode)
            times.append(time.perf_counter() - t0)
        rows = [{"setting": "in-process SearchIndex.search", "clients": 1,
                 "requests_per_s": round(len(queries) / (time.perf_counter() - t_all), 1),
                 **_percentiles_ms(times)}]
        for clients in concurrency:
            rows.append(_http_row(base, queries, clients, k, mode))
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    http1 = next((r for r in rows[1:] if r["clients"] == 1), None)
    result: dict[str, Any] = {
        "index": str(folder), "incidents": len(idx), "k": k, "mode": mode,
        "n_requests": len(queries), "torch_threads": torch.get_num_threads(), "rows": rows,
        "git_commit": git_commit(),
        "overhead_p50_http_over_in_process": round(http1["p50_ms"] / rows[0]["p50_ms"], 2)
        if http1 and rows[0]["p50_ms"] else None}
    out = Path(out_dir or RESULTS_DIR / "bench")
    atomic_write_json(out / f"serve_latency_{timestamp()}.json", result)
    return result


def _http_row(base: str, queries: list[str], clients: int, k: int, mode: str
              ) -> dict[str, Any]:
    """One concurrency setting: ``clients`` threads, each with its own connection."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    chunks = [queries[i::clients] for i in range(clients)]

    def run(chunk: list[str]) -> list[float]:
        out = []
        with httpx.Client(base_url=base, timeout=120) as c:
            for q in chunk:
                t0 = time.perf_counter()
                r = c.post("/similar", json={"text": q[:20_000], "k": k, "mode": mode})
                r.raise_for_status()
                out.append(time.perf_counter() - t0)
        return out

    t_all = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as ex:
        times = [t for part in ex.map(run, chunks) for t in part]
    return {"setting": "HTTP POST /similar", "clients": clients,
            "requests_per_s": round(len(times) / (time.perf_counter() - t_all), 1),
            **_percentiles_ms(times)}


def rerank_latency(reranker: str | Path, *, retriever: str = "minilm",
                   dataset: str = "it_tickets", ks: tuple[int, ...] = (10, 30, 100),
                   n_queries: int = 20, onnx: str | Path | None = None,
                   out_dir: str | Path | None = None) -> dict[str, Any]:
    """``itsm bench rerank``: the latency a re-ranker adds to one query, at each ``k``.

    One VALIDATION query at a time, the cross-encoder reads the retriever's top ``k``
    (query, incident) pairs — torch and, when given, its INT8 ONNX export, side by side in
    the same run. The retriever's own cost (query encoding + search) is ``itsm bench
    search``'s; this is what the second stage adds on top.

    Returns:
        ``{"rows": [{"backend", "k", "p50_ms", "p95_ms", "mean_ms"}, …], …}`` (also written
        to ``models/results/bench/rerank_latency_<ts>.json``).
    """
    import numpy as np

    from itsm_core.data.datasets import processed_path
    from itsm_core.encoders.factory import load_scorer
    from itsm_core.encoders.rerank import load_cross_encoder
    from itsm_core.evaluation.benchmark import BenchmarkConfig, build_benchmark

    bench = build_benchmark(processed_path(dataset), config=BenchmarkConfig(
        query_split="validation", threshold_split="validation", n_resamples=0))
    rng = np.random.default_rng(SEED)
    q_ids = [bench.query_ids[i] for i in rng.choice(len(bench.query_ids),
                                                    min(n_queries, len(bench.query_ids)),
                                                    replace=False)]
    queries = bench.texts.loc[q_ids].tolist()
    corpus = bench.texts.loc[bench.corpus_ids].tolist()
    from itsm_core.training.rerank import resolve_retriever

    scorer = load_scorer(resolve_retriever(retriever, dataset), show_progress=False)
    full = scorer.score_matrix(queries, corpus)
    tops = [_topk(row, min(max(ks), len(corpus))) for row in full]
    rows = []
    backends = [("cross-encoder torch fp32", load_cross_encoder(reranker))]
    if onnx:
        backends.append(("cross-encoder onnx int8", load_cross_encoder(onnx)))
    for name, ce in backends:
        ce.predict([[queries[0], corpus[0]]] * 4, batch_size=32)  # warm-up
        for k in ks:
            secs = []
            for q, top in zip(queries, tops):
                pairs = [[q, corpus[j]] for j in top[:k]]
                t0 = time.perf_counter()
                ce.predict(pairs, batch_size=32, show_progress_bar=False)
                secs.append(time.perf_counter() - t0)
            rows.append({"backend": name, "k": k, **_percentiles_ms(secs)})
    result = {"reranker": str(reranker), "onnx": str(onnx) if onnx else None,
              "retriever": retriever, "dataset": dataset, "split": "validation",
              "n_queries": len(queries), "n_corpus": len(corpus),
              "torch_threads": torch.get_num_threads(), "rows": rows,
              "created": timestamp(), "git_commit": git_commit()}
    out = Path(out_dir or RESULTS_DIR / "bench")
    atomic_write_json(out / f"rerank_latency_{timestamp()}.json", result)
    return result
