"""What notebook 08 shows about an index: summary, the fusion grid chosen on validation,
and example queries (read from the index; nothing re-measured)."""

from __future__ import annotations

from pathlib import Path

import pytest

from itsm_core.reports import deploy
from itsm_core.serving.index import build_index


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory) -> Path:
    from conftest import tiny_frame
    from deploy_fixtures import make_tiny_model

    root = tmp_path_factory.mktemp("deploy")
    model = make_tiny_model(root / "model")
    df = tiny_frame()
    df["resolution_notes"] = "restarted the " + df["subcategory"].str.lower() + " service"
    df.to_csv(root / "incidents.csv", index=False)
    return build_index(str(model), root / "incidents.csv", root / "idx").path


def test_index_summary_and_fusion_grid(index_dir):
    summary = deploy.index_summary(index_dir)["value"]
    assert summary["incidents"] == 42 and summary["dim"] == 32
    assert "validation" in summary["fusion"]
    assert summary["store"] == "folder" and summary["embeddings"].startswith("encoded at ")
    grid = deploy.fusion_grid(index_dir)
    assert len(grid) == 12 and {"method", "dense_weight", "ndcg@10"} <= set(grid.columns)
    assert set(grid["method"]) == {"weighted", "rrf"}


def test_example_queries_show_number_score_and_notes(index_dir):
    out = deploy.example_queries("vpn drops | printer jam", index_dir, k=3)
    assert list(out) == ["vpn drops", "printer jam"]
    for hits in out.values():
        assert len(hits) == 3 and {"number", "score", "summary", "resolution_notes"} <= set(
            hits.columns)
        assert hits["score"].is_monotonic_decreasing
