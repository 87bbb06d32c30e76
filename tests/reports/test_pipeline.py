"""`itsm pipeline --dataset NAME` on a small ServiceNow-shaped export, tiny model: every
stage runs, every output is named after the data set."""

from __future__ import annotations

import json

import pytest

from itsm_core.core.errors import ItsmError


@pytest.fixture(scope="module")
def desk(tmp_path_factory):
    from desk_fixtures import servicenow_export
    from tiny_model import build_tiny_model

    from itsm_core.data.register import add_dataset

    root = tmp_path_factory.mktemp("desk")
    servicenow_export(n_per_class=60).to_csv(root / "export.csv", index=False)
    add_dataset("desk_pipe", root / "export.csv", columns="servicenow",
                labels=["Category", "Subcategory"], replace=True)
    add_dataset("desk_plain", root / "export.csv", columns="servicenow", replace=True)
    return build_tiny_model(root / "tiny")


@pytest.mark.slow  # ~3.5 min on 2 cores (four notebooks, an export, an index): make test-all
def test_pipeline_runs_every_stage_on_an_added_data_set(desk, monkeypatch):
    from conftest import PROJECT_ROOT

    from itsm_core.core.config import REPORTS_DIR
    from itsm_core.reports import notebooks
    from itsm_core.reports.pipeline import run_pipeline
    from itsm_core.serving.index import SearchIndex

    monkeypatch.setitem(notebooks.run_report.__kwdefaults__, "notebooks_dir",
                        PROJECT_ROOT / "notebooks")

    lines = []
    res = run_pipeline("desk_pipe", profile="default", models=("tfidf", "bm25"),
                       model=str(desk), progress=lines.append)
    names = [s["name"] for s in res.stages]
    assert names == ["benchmark", "pairs", "train", "diagnose", "export", "index", "reports"]
    assert all(s["status"] == "done" or s["status"].startswith("skipped")
               for s in res.stages)
    assert len(lines) == len(names)
    for key in ("train_report", "evaluate_report", "export_report", "leaderboard"):
        assert "desk_pipe" in res.outputs[key]
    assert "desk_pipe" in (REPORTS_DIR / "leaderboard_desk_pipe.md").read_text()
    idx = SearchIndex(res.outputs["index"])
    assert len(idx) == 360 and idx.search("vpn tunnel drops", k=3)[0]["number"].notna().all()
    timing = json.loads((REPORTS_DIR / "pipeline_timing_desk_pipe.json").read_text())
    assert [s["name"] for s in timing["stages"]] == names
    assert timing["total_seconds"] == res.total_seconds


def test_pipeline_refuses_a_data_set_without_ground_truth(desk):
    from itsm_core.reports.pipeline import run_pipeline

    with pytest.raises(ItsmError, match="no ground truth"):
        run_pipeline("desk_plain")


def test_the_chain_by_hand_on_a_desk_export_into_postgresql(desk, tmp_path, pg_url,
                                                            isolated_results):
    """The stages the pipeline automates, one call each, on a ServiceNow-shaped export and
    the tiny model, in the default test run: data add -> pairs -> train -> evaluate ->
    export -> index (PostgreSQL + pgvector) -> search."""
    from itsm_core.evaluation.benchmark import evaluate_file
    from itsm_core.serving.export import export_onnx
    from itsm_core.serving.store import build, open_store
    from itsm_core.training.finetune import config_for_profile, make_pairs, run_training

    pairs, report = make_pairs("desk_pipe")
    assert report.ok and len(pairs) > 0
    cfg = config_for_profile("smoke", model=str(desk), dataset="desk_pipe",
                             evaluate_test=True, output_dir=str(tmp_path / "train"))
    trained = run_training(cfg)
    test_metrics = json.loads((trained.run_dir / "test_metrics.json").read_text())
    rec = evaluate_file(str(trained.model_dir), None, tmp_path / "eval", dataset="desk_pipe")
    assert rec["split"] == "test" and rec["dataset"] == "desk_pipe"
    assert test_metrics["ndcg@10"] == pytest.approx(rec["ndcg@10"], abs=1e-6)
    onnx = export_onnx(str(trained.model_dir), tmp_path / "onnx")
    idx = build(str(onnx), dataset="desk_pipe", store=pg_url, collection="desk_chain")
    assert len(idx) == 360 and idx.meta["model"]["spec"] == str(onnx.resolve())
    hits = open_store(store=pg_url, collection="desk_chain").search("vpn tunnel drops", k=3)
    assert hits[0]["number"].notna().all() and len(hits[0]) == 3
