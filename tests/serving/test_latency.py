"""Search latency benchmark: figures per dim, written as JSON (no timing is asserted)."""

from __future__ import annotations

import json

from itsm_core.serving.latency import bench_search, search_latency


def test_search_latency_rows_per_dim_and_json(tmp_path):
    res = search_latency(n=20_000, dims=(16, 8), k=5, n_queries=7, out_dir=tmp_path)
    rows = {r["dim"]: r for r in res["rows"]}
    assert set(rows) == {16, 8} and res["k"] == 5
    for r in rows.values():
        assert 0 <= r["p50_ms"] <= r["p95_ms"] and r["n"] == 20_000
    assert rows[16]["index_mb"] > rows[8]["index_mb"]
    files = list(tmp_path.glob("search_latency_*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["rows"] == res["rows"]


def test_bench_search_without_an_index_times_the_synthetic_corpus(isolated_results):
    res = bench_search(200)
    assert {r["corpus"] for r in res["rows"]} == {"synthetic unit vectors (n=200)"}
    assert "encode_query" not in res
