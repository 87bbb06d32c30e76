"""``itsm bench store`` parts on small inputs against the REAL server: the figures are
produced (not judged: no timing is asserted), and the store's served ranking scores the
same benchmark NDCG@10 as the folder index's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from itsm_core.serving.index import build_index
from itsm_core.serving.pgstore import connect
from itsm_core.serving.store import publish
from itsm_core.serving.storebench import bench_vectors, evaluate_store, synthetic


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from conftest import tiny_frame
    from deploy_fixtures import make_tiny_model

    root = tmp_path_factory.mktemp("sb")
    tiny_frame().to_csv(root / "incidents.csv", index=False)
    return build_index(str(make_tiny_model(root / "model")), root / "incidents.csv",
                       root / "idx")


def test_synthetic_vectors_are_unit_and_reproducible():
    a, b = synthetic(500, 32), synthetic(500, 32)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_vector_bench_rows(pg_url):
    with connect(pg_url) as conn:
        rows = bench_vectors(conn, 3000, dim=32, queries=20)
    assert [r["store"].split()[0] for r in rows] == ["numpy", "numpy", "pgvector", "pgvector"]
    hnsw = [r for r in rows if r["store"].startswith("pgvector")]
    assert all(0.5 <= r["recall@10"] <= 1.0 and r["p50_ms"] > 0 and r["size_mb"] > 0
               for r in hnsw)


def test_the_served_pgvector_ranking_scores_like_the_folder(folder, pg_url):
    pg = publish(folder.path, pg_url, "quality")
    assert pg.meta["history"][-1]["op"] == "publish" and len(pg) == len(folder)
    for mode in ("dense", "hybrid"):
        a, b = evaluate_store(folder, mode=mode), evaluate_store(pg, mode=mode)
        assert a["n_queries"] == b["n_queries"] > 0
        if mode == "dense":
            assert a["ndcg@10"] == pytest.approx(b["ndcg@10"], abs=1e-6)
        assert 0 < b["ndcg@10"] <= 1 and len(b["ndcg@10_ci"]) == 2
    assert Path(folder.meta["source"]["incidents"]).exists()


def test_quality_rows_name_the_lexical_scorer_they_used(folder, pg_url, monkeypatch):
    from itsm_core.serving import storebench

    seen = []
    monkeypatch.setattr(storebench, "evaluate_store",
                        lambda idx, mode: seen.append((getattr(idx, "lexical", "folder"),
                                                       mode)) or {"n_queries": 1})
    rows = storebench.bench_quality(pg_url, folder.path)
    labels = {(r["store"], r["mode"]): lex for r, (lex, _) in zip(rows, seen)}
    assert labels[("pgvector HNSW + PostgreSQL full-text search", "bm25")] == "fts"
    assert labels[("pgvector HNSW + bm25s beside it", "bm25")] == "bm25"
