"""``itsm bench store``: the two stores and the two engines, measured side by side.

Printed figures and a JSON under ``models/results/bench/store_<ts>.json``; no test asserts
a timing. Three parts:

1. **Vectors**: exact numpy (one matrix-vector product) against pgvector HNSW on the same
   synthetic L2-normalised vectors (clustered, as embeddings are: uniform random vectors in
   384-d are HNSW's worst case and nothing like incident text): build time, p50 / p95
   top-10 latency one query at a time, recall@10 of HNSW against exact, memory / disk, and
   the same with a 10 %-selective filter (``WHERE cat = …``, iterative index scan).
2. **Quality**: an existing index (default: the newest bundled one) copied into pgvector
   without re-encoding, and the benchmark's test NDCG@10 / MRR@10 of both stores in dense,
   hybrid and lexical mode (:func:`evaluate_store`), with either lexical scorer of the
   PostgreSQL store (full-text search, or bm25s beside it).
3. **Ray**: sentences/s of Ray Data batch embedding against the in-process encoder on the
   same texts and cores, at 1 and 2 actors.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from itsm_core.core.config import RESULTS_DIR, SEED
from itsm_core.core.io import atomic_write_json, git_commit, timestamp
from itsm_core.serving.index import IndexBase, SearchFilter, SearchIndex, latest_index
from itsm_core.serving.pgserver import local_postgres
from itsm_core.serving.pgstore import (
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    PgIndex,
    check_store_url,
    connect,
    redact,
)
from itsm_core.serving.store import publish

BENCH_SERVER_SETTINGS = {"fsync": "off", "synchronous_commit": "off",
                         "full_page_writes": "off", "shared_buffers": "2GB",
                         "max_parallel_maintenance_workers": "1"}
"""A throw-away server for the benchmark: durability off, the HNSW graph in memory."""


def _ms(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def synthetic(n: int, dim: int = 384, seed: int = SEED, clusters: int = 1000,
              spread: float = 0.35) -> np.ndarray:
    """``n`` clustered L2-normalised float32 vectors (a unit centre per cluster plus
    Gaussian noise of norm ~``spread``)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    step = 200_000
    for a in range(0, n, step):
        b = min(n, a + step)
        x = centres[rng.integers(0, clusters, b - a)] + rng.standard_normal(
            (b - a, dim)).astype(np.float32) * (spread / np.sqrt(dim))
        out[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _exact_top(matrix: np.ndarray, q: np.ndarray, k: int, mask: np.ndarray | None = None
               ) -> np.ndarray:
    s = matrix @ q
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    idx = np.argpartition(-s, k - 1)[:k]
    return idx[np.argsort(-s[idx])]


def _load_vectors(conn, vecs: np.ndarray, cats: np.ndarray) -> float:  # noqa: ANN001
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    conn.execute("DROP TABLE IF EXISTS itsm_bench_vectors")
    conn.execute(f"CREATE TABLE itsm_bench_vectors (id int PRIMARY KEY, cat int NOT NULL, "
                 f"embedding vector({vecs.shape[1]}) NOT NULL)")
    with conn.cursor() as cur, cur.copy("COPY itsm_bench_vectors (id, cat, embedding) FROM "
                                        "STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(["int4", "int4", "vector"])
        for i in tqdm(range(len(vecs)), desc=f"COPY {len(vecs):,} vectors", unit="row",
                      mininterval=5, disable=len(vecs) < 100_000):
            copy.write_row([i, int(cats[i]), vecs[i]])
    return time.perf_counter() - t0


def bench_vectors(conn, n: int, dim: int = 384, queries: int = 200, k: int = 10,  # noqa: ANN001
                  ef_search: int = 100) -> list[dict[str, Any]]:
    """Exact numpy vs pgvector HNSW at ``n`` synthetic vectors (see the module doc)."""
    vecs = synthetic(n + queries, dim)
    vecs, qs = vecs[:n], vecs[n:]
    cats = np.random.default_rng(SEED).integers(0, 10, n)
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    exact_matrix = np.ascontiguousarray(vecs)
    np_build = time.perf_counter() - t0
    truth, truth_f, times, times_f = [], [], [], []
    for q in qs:
        t = time.perf_counter()
        truth.append(_exact_top(exact_matrix, q, k))
        times.append(time.perf_counter() - t)
        t = time.perf_counter()
        truth_f.append(_exact_top(exact_matrix, q, k, cats == 3))
        times_f.append(time.perf_counter() - t)
    mem = round(exact_matrix.nbytes / 2**20, 1)
    for filt, tt in (("none", times), ("cat = 3 (10 %)", times_f)):
        rows.append({"store": "numpy exact", "n": n, "filter": filt, "build_s":
                     round(np_build, 2), "recall@10": 1.0, "size_mb": mem, **_ms(tt)})
    copy_s = _load_vectors(conn, vecs, cats)
    t0 = time.perf_counter()
    conn.execute("SET maintenance_work_mem = '4GB'")
    conn.execute(f"CREATE INDEX ON itsm_bench_vectors USING hnsw (embedding vector_cosine_ops)"
                 f" WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})")
    index_s = time.perf_counter() - t0
    conn.execute("VACUUM ANALYZE itsm_bench_vectors")
    size = conn.execute("SELECT pg_total_relation_size('itsm_bench_vectors')").fetchone()[0]
    for filt, cond, want in (("none", "", truth), ("cat = 3 (10 %)", "WHERE cat = 3", truth_f)):
        got, tt = [], []
        for q in qs:
            t = time.perf_counter()
            with conn.transaction():
                conn.execute("SELECT set_config('hnsw.ef_search', %s, true), set_config("
                             "'hnsw.iterative_scan', 'relaxed_order', true)", [str(ef_search)])
                ids = [r[0] for r in conn.execute(
                    f"SELECT id FROM itsm_bench_vectors {cond} ORDER BY embedding <=> %s "
                    "LIMIT %s", [q, k]).fetchall()]
            tt.append(time.perf_counter() - t)
            got.append(ids)
        recall = float(np.mean([len(set(g) & set(w.tolist())) / k for g, w in zip(got, want)]))
        rows.append({"store": f"pgvector HNSW (ef_search {ef_search})", "n": n,
                     "filter": filt, "build_s": round(copy_s + index_s, 1),
                     "copy_s": round(copy_s, 1), "index_s": round(index_s, 1),
                     "recall@10": round(recall, 4), "size_mb": round(size / 2**20, 1),
                     **_ms(tt)})
    conn.execute("DROP TABLE itsm_bench_vectors")
    return rows


def evaluate_store(idx: IndexBase, incidents: str | Path | None = None, *, mode: str = "dense",
                   k: int = 10) -> dict[str, Any]:
    """Test-split NDCG@10 / MRR@10 of an index AS SERVED: every test query goes through the
    store's own ``search`` (restricted to the benchmark's corpus, the query itself
    excluded), so what is measured is what a desk gets back - HNSW, SQL filters and all.

    Args:
        idx: either store; incidents: the labelled file (default: the index's source).
        mode: ``dense`` or ``hybrid``; k: hits per query (10 for NDCG@10).

    Returns:
        ``ndcg@10``, ``mrr@10`` (means and 95 % bootstrap CIs) and the query count.
    """
    from itsm_core.evaluation.benchmark import BenchmarkConfig, build_benchmark
    from itsm_core.metrics.stats import retrieval_metrics_per_query, summarize_with_ci

    txt = idx.meta["text"]
    bench = build_benchmark(incidents or idx.meta["source"]["incidents"],
                            columns=txt.get("columns"), text_fields=txt["fields"],
                            config=BenchmarkConfig(max_chars_per_field=txt[
                                "max_chars_per_field"]))
    pos = {n: j for j, n in enumerate(bench.corpus_ids)}
    scores = np.full((len(bench.query_ids), len(bench.corpus_ids)), -1e6, np.float32)
    for i, qid in enumerate(bench.query_ids):
        hits = idx.search(str(bench.texts.loc[qid]), k=k, mode=mode, filter=SearchFilter(
            exclude=[qid], numbers=bench.corpus_ids))[0]
        for r, n in enumerate(hits["number"]):
            scores[i, pos[n]] = float(k - r)
        if qid in pos:
            scores[i, pos[qid]] = -np.inf
    per_q = retrieval_metrics_per_query(scores, bench.grades)
    summary = summarize_with_ci(per_q[["ndcg@10", "mrr@10"]])
    return {"n_queries": len(bench.query_ids), **summary}


def bench_quality(url: str, index: str | Path | None = None) -> list[dict[str, Any]]:
    """Test NDCG@10 / MRR@10 of one index from the folder and from pgvector."""
    folder = SearchIndex(index or latest_index())
    publish(folder.path, url, "itsm_bench_quality", replace=True)
    pg = PgIndex(url, "itsm_bench_quality", lexical="fts")
    pg_bm25 = PgIndex(url, "itsm_bench_quality", lexical="bm25")
    pg._encoder = pg_bm25._encoder = folder.encoder()
    rows = []
    for mode in ("dense", "hybrid", "bm25"):
        stores = [("folder (numpy exact, bm25s)", folder),
                  ("pgvector HNSW + PostgreSQL full-text search", pg),
                  ("pgvector HNSW + bm25s beside it", pg_bm25)]
        for name, idx in stores if mode != "dense" else stores[:2]:
            t0 = time.perf_counter()
            res = evaluate_store(idx, mode=mode)
            rows.append({"store": name, "mode": mode, "index": str(folder.path),
                         "seconds": round(time.perf_counter() - t0, 1), **res})
    pg.close()
    pg_bm25.close()
    return rows


def bench_ray(model: str = "minilm", dataset: str = "it_tickets", n: int = 2000,
              batch_size: int = 64, actors: tuple[int, ...] = (1, 2)) -> list[dict[str, Any]]:
    """Sentences/s of the in-process encoder and of Ray Data at each actor count, on the
    same ``n`` texts of the data set. A Ray run includes starting the actors and loading
    the model in each, as a build's does; a run on ``2 x actors`` texts measures that
    fixed cost, so ``steady_sentences_per_s`` is the rate once the actors are up."""
    from itsm_core.data.corpus import load_corpus
    from itsm_core.data.datasets import processed_path
    from itsm_core.serving.index import load_encoder
    from itsm_core.serving.raybuild import encode_with_ray, init_ray

    texts = load_corpus(processed_path(dataset)).texts.tolist()[:n]
    enc, spec, _ = load_encoder(model)
    dim = int(spec.dim or enc.get_sentence_embedding_dimension())
    t0 = time.perf_counter()
    ref = enc.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                     convert_to_numpy=True, show_progress_bar=False)
    local_s = time.perf_counter() - t0
    rows = [{"engine": "in-process", "actors": 1, "texts": len(texts),
             "seconds": round(local_s, 1), "sentences_per_s": round(len(texts) / local_s, 1),
             "vs_in_process": 1.0, "startup_s": 0.0,
             "steady_sentences_per_s": round(len(texts) / local_s, 1),
             "steady_vs_in_process": 1.0, "max_abs_diff": 0.0}]
    init_ray(num_cpus=os.cpu_count())
    for a in actors:
        t0 = time.perf_counter()
        encode_with_ray(model, texts[: 2 * a], "", dim, batch_size=1, concurrency=a)
        fixed = time.perf_counter() - t0  # actor start-up + model load, ~no encoding
        t0 = time.perf_counter()
        emb = encode_with_ray(model, texts, "", dim, batch_size=batch_size, concurrency=a)
        s = time.perf_counter() - t0
        steady = len(texts) / max(s - fixed, 1e-9)
        rows.append({"engine": "ray data", "actors": a, "texts": len(texts),
                     "seconds": round(s, 1), "sentences_per_s": round(len(texts) / s, 1),
                     "vs_in_process": round(local_s / s, 3), "startup_s": round(fixed, 1),
                     "steady_sentences_per_s": round(steady, 1),
                     "steady_vs_in_process": round(steady * local_s / len(texts), 3),
                     "max_abs_diff": float(np.abs(emb - ref).max())})
    return rows


def bench_store(store: str | None = None, sizes: tuple[int, ...] = (50_000, 1_000_000), *,
                index: str | Path | None = None, ray: bool = True, quality: bool = True,
                out_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the three parts (see the module doc) against ``store`` (default: a throw-away
    local server) and write the JSON.

    Args:
        store: a ``postgresql://`` URL (tables ``itsm_bench_*`` are made and dropped).
        sizes: synthetic corpus sizes; index: the index for the quality part.
        ray, quality: run those parts.

    Returns:
        ``{"vectors": rows, "quality": rows, "ray": rows, …}``.
    """
    if store:
        check_store_url(store)
    result: dict[str, Any] = {"created": timestamp(), "git_commit": git_commit(),
                              "cpus": os.cpu_count(), "sizes": list(sizes)}

    def run(url: str) -> None:
        result["store"] = redact(url)
        with connect(url) as conn:
            result["server"] = conn.execute("SELECT version()").fetchone()[0]
            result["pgvector"] = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
            result["vectors"] = [r for n in sizes for r in bench_vectors(conn, n)]
        result["quality"] = bench_quality(url, index) if quality else []

    if store:
        run(store)
    else:
        with local_postgres(BENCH_SERVER_SETTINGS) as server:
            run(server.url)
    result["ray"] = bench_ray() if ray else []
    out = Path(out_dir or RESULTS_DIR / "bench")
    atomic_write_json(out / f"store_{timestamp()}.json", result)
    return result
