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


def test_serve_latency_measures_http_beside_in_process(tmp_path):
    from conftest import tiny_frame
    from deploy_fixtures import make_tiny_model

    from itsm_core.serving.index import build_index
    from itsm_core.serving.latency import serve_latency

    model = make_tiny_model(tmp_path / "model")
    tiny_frame().to_csv(tmp_path / "incidents.csv", index=False)
    index = build_index(str(model), tmp_path / "incidents.csv", tmp_path / "idx").path
    res = serve_latency(index, n_requests=12, concurrency=(1, 3), out_dir=tmp_path / "b")
    settings = [(r["setting"], r["clients"]) for r in res["rows"]]
    assert settings == [("in-process SearchIndex.search", 1), ("HTTP POST /similar", 1),
                        ("HTTP POST /similar", 3)]
    for r in res["rows"]:
        assert r["requests_per_s"] > 0 and 0 <= r["p50_ms"] <= r["p95_ms"]
    assert res["overhead_p50_http_over_in_process"] > 0 and res["n_requests"] == 12
    assert len(list((tmp_path / "b").glob("serve_latency_*.json"))) == 1
