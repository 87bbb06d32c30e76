"""Tests for the ``itsm`` command line (typer CliRunner on itsm_core.cli.main.app)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import FIXTURES  # noqa: E402
from typer.testing import CliRunner

from itsm_core.cli.main import app
from itsm_core.data.incidents import EmptyTextWarning
from itsm_core.data.text import LabelLeakageWarning
from itsm_core.encoders.registry import REGISTRY

CONTRACT_KEYS = ("ndcg@10", "mrr@10", "recall@10", "map@100", "roc_auc", "pr_auc", "f1",
                 "spearman")


@pytest.fixture
def runner() -> CliRunner:
    # wide terminal so that rich never wraps names; no colour codes in the captured text
    return CliRunner(env={"COLUMNS": "250", "NO_COLOR": "1"})


def _invoke(runner: CliRunner, *args: str):
    return runner.invoke(app, [str(a) for a in args])


def _assert_clean_failure(result, *needles: str) -> str:
    """Exit code 2, an ``error:`` message holding every needle, and no traceback."""
    text = result.output
    assert result.exit_code == 2, text
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in text
    assert "error:" in text
    flat = " ".join(text.split())
    for needle in needles:
        assert " ".join(needle.split()) in flat, (needle, text)
    return text


def _check_metrics(path: Path) -> dict:
    rec = json.loads(path.read_text(encoding="utf-8"))
    for key in CONTRACT_KEYS:
        assert key in rec, key
        ci = rec[f"{key}_ci"]
        assert isinstance(ci, list) and len(ci) == 2
    assert isinstance(rec["ndcg@10"], float) and 0 <= rec["ndcg@10"] <= 1
    return rec


# ---------------------------------------------------------------------------- success


def test_evaluate_contract(runner, tiny_incidents: Path, tmp_path: Path,
                           isolated_results) -> None:
    out = tmp_path / "run"
    result = _invoke(runner, "evaluate", "--model", "tfidf", "--incidents", tiny_incidents,
                     "--labels", "category,subcategory", "--out", out)
    assert result.exit_code == 0, result.output
    rec = _check_metrics(out / "metrics.json")
    assert rec["model"] == "tfidf" and rec["dataset"] == "tiny_incidents"
    assert rec["benchmark"]["relevance"] == "labels:category,subcategory"
    assert rec["benchmark"]["threshold_source"] == "validation split"
    assert {"per_query.csv", "pairs.csv", "metrics.json"} <= {p.name for p in out.iterdir()}
    assert "ndcg@10" in result.output and "metrics.json" in result.output
    board = pd.read_csv(isolated_results.leaderboard, dtype=str)
    assert board["run_id"].tolist() == [rec["run_id"]] and board["run_dir"][0] == str(out)


def test_evaluate_links(runner, tiny_incidents: Path, tiny_links: Path, tmp_path: Path,
                        isolated_results) -> None:
    out = tmp_path / "run"
    result = _invoke(runner, "evaluate", "--model", "bm25", "--incidents", tiny_incidents,
                     "--links", tiny_links, "--out", out, "--bootstrap", "50",
                     "--no-leaderboard")
    assert result.exit_code == 0, result.output
    rec = _check_metrics(out / "metrics.json")
    assert rec["benchmark"]["mode"] == "links"
    assert rec["benchmark"]["threshold_source"] == "validation links"
    assert not isolated_results.leaderboard.exists()  # --no-leaderboard


def test_evaluate_servicenow_columns(runner, tiny_incidents: Path, tmp_path: Path,
                                     isolated_results) -> None:
    # the bundled fixture is a ServiceNow export: too small to evaluate, but it must fail
    # with a message, not a traceback
    with pytest.warns(EmptyTextWarning, match="dropped 1 of 5"):
        result = _invoke(runner, "evaluate", "--model", "tfidf", "--incidents",
                         FIXTURES / "servicenow_export.csv", "--columns", "servicenow",
                         "--labels", "category", "--out", tmp_path / "small")
    _assert_clean_failure(result, "labelled incidents")
    # the tiny data set exported with ServiceNow display headers evaluates fine
    export = pd.read_csv(tiny_incidents, dtype=str).rename(columns={
        "number": "Number", "short_description": "Short description",
        "description": "Description", "category": "Category", "subcategory": "Subcategory"})
    export["Assignment group"] = "Service Desk"
    path = tmp_path / "servicenow.csv"
    export.to_csv(path, index=False)
    out = tmp_path / "run"
    result = _invoke(runner, "evaluate", "--model", "tfidf", "--incidents", path,
                     "--columns", "servicenow", "--labels", "category,subcategory",
                     "--out", out, "--bootstrap", "50")
    assert result.exit_code == 0, result.output
    rec = _check_metrics(out / "metrics.json")
    assert rec["n_queries"] == 12


def test_models_lists_registry(runner) -> None:
    result = _invoke(runner, "models")
    assert result.exit_code == 0, result.output
    for key in REGISTRY:
        assert key in result.output
    assert "tfidf" in result.output and "bm25" in result.output


def test_leaderboard_after_runs(runner, tiny_incidents: Path, tmp_path: Path,
                                isolated_results) -> None:
    for model in ("tfidf", "bm25"):
        result = _invoke(runner, "evaluate", "--model", model, "--incidents", tiny_incidents,
                         "--labels", "category,subcategory", "--out", tmp_path / model,
                         "--bootstrap", "50")
        assert result.exit_code == 0, result.output
    result = _invoke(runner, "leaderboard", "--markdown")
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("|")]
    assert len(lines) == 4  # header, rule, two models
    assert "tfidf" in result.output and "bm25" in result.output
    assert "tiny_incidents" in result.output
    _assert_clean_failure(_invoke(runner, "leaderboard", "--dataset", "nope"),
                          "leaderboard is empty")
    tiers = _invoke(runner, "leaderboard", "--tiers")
    assert tiers.exit_code == 0, tiers.output
    assert "not run" in tiers.output and "spearman ceiling" in tiers.output


def test_benchmark_and_data_build_never_use_the_project_folders(runner,
                                                                 isolated_results) -> None:
    # under the tests ITSM_HOME is a throw-away folder: nothing is built there, so both
    # commands fail cleanly instead of touching data_new/ or models/ of the project
    result = _invoke(runner, "benchmark", "--models", "tfidf", "--datasets", "it_tickets")
    _assert_clean_failure(result, "data set not built yet", "itsm data build")
    result = _invoke(runner, "data", "build", "--only", "gitbugs_hadoop")
    _assert_clean_failure(result, "raw input file is missing", "hadoop_bugs.csv")
    _assert_clean_failure(_invoke(runner, "data", "build", "--only", "nope"),
                          "unknown data set")
    assert not isolated_results.runs.exists()


def test_leaderboard_empty(runner, isolated_results) -> None:
    result = _invoke(runner, "leaderboard")
    _assert_clean_failure(result, "the leaderboard is empty", "itsm evaluate")
    assert not isolated_results.leaderboard.exists()


# ---------------------------------------------------------------------------- bad inputs


def test_missing_incidents_file(runner, tmp_path: Path, isolated_results) -> None:
    missing = tmp_path / "nope.csv"
    result = _invoke(runner, "evaluate", "--model", "tfidf", "--incidents", missing,
                     "--out", tmp_path / "run")
    _assert_clean_failure(result, str(missing), "not found")
    assert not (tmp_path / "run").exists()  # failed before creating anything


def test_missing_links_file(runner, tiny_incidents: Path, tmp_path: Path,
                            isolated_results) -> None:
    result = _invoke(runner, "evaluate", "--model", "tfidf", "--incidents", tiny_incidents,
                     "--links", tmp_path / "nolinks.csv", "--out", tmp_path / "run")
    _assert_clean_failure(result, "links file not found", "nolinks.csv")


def test_unknown_model(runner, tiny_incidents: Path, tmp_path: Path,
                       isolated_results) -> None:
    result = _invoke(runner, "evaluate", "--model", "no-such-model", "--incidents",
                     tiny_incidents, "--labels", "category", "--out", tmp_path / "run",
                     "--bootstrap", "10")
    text = _assert_clean_failure(result, "unknown model 'no-such-model'", "itsm models")
    assert all(k in text for k in REGISTRY)
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert not isolated_results.leaderboard.exists()


def test_out_dir_with_earlier_run_is_untouched(runner, tiny_incidents: Path, tmp_path: Path,
                                               isolated_results) -> None:
    out = tmp_path / "run"
    args = ["evaluate", "--model", "tfidf", "--incidents", tiny_incidents, "--labels",
            "category,subcategory", "--out", out, "--bootstrap", "20"]
    assert _invoke(runner, *args).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = _invoke(runner, *[a if a != "tfidf" else "bm25" for a in args])
    _assert_clean_failure(result, str(out), "refusing to overwrite", "--out")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert len(pd.read_csv(isolated_results.leaderboard)) == 1


@pytest.mark.parametrize("fixture, needle", [
    ("broken_quote.csv", "malformed CSV"),
    ("duplicate_numbers.csv", "incident numbers must be unique"),
    ("malformed.json", "malformed JSON"),
    ("cp1252.csv", "cannot decode"),
])
def test_bad_incident_files(runner, tmp_path: Path, fixture: str, needle: str,
                            isolated_results) -> None:
    path = FIXTURES / fixture
    result = _invoke(runner, "evaluate", "--model", "tfidf", "--incidents", path,
                     "--out", tmp_path / "run")
    _assert_clean_failure(result, needle, str(path))


def test_missing_mapped_column(runner, tmp_path: Path, isolated_results) -> None:
    mapping = json.loads((FIXTURES / "custom_mapping.json").read_text())
    mapping["category"] = "Kind"  # not a header of custom_headers.csv
    mpath = tmp_path / "mapping.json"
    mpath.write_text(json.dumps(mapping))
    result = _invoke(runner, "evaluate", "--model", "tfidf", "--incidents",
                     FIXTURES / "custom_headers.csv", "--columns", mpath,
                     "--out", tmp_path / "run")
    _assert_clean_failure(result, "category <- 'Kind'", "Ticket ID")


def test_unknown_columns_preset(runner, tiny_incidents: Path, tmp_path: Path,
                                isolated_results) -> None:
    result = _invoke(runner, "evaluate", "--model", "tfidf", "--incidents", tiny_incidents,
                     "--columns", "jira", "--out", tmp_path / "run")
    _assert_clean_failure(result, "--columns", "servicenow")


def test_label_column_that_does_not_exist(runner, tiny_incidents: Path, tmp_path: Path,
                                          isolated_results) -> None:
    result = _invoke(runner, "evaluate", "--model", "tfidf", "--incidents", tiny_incidents,
                     "--labels", "category,priority", "--out", tmp_path / "run")
    _assert_clean_failure(result, "label column 'priority' not found", "--labels")


def test_label_leakage_refused_then_allowed(runner, tiny_incidents: Path, tmp_path: Path,
                                            isolated_results) -> None:
    args = ["evaluate", "--model", "tfidf", "--incidents", tiny_incidents, "--labels",
            "category,subcategory", "--text-fields", "short_description,category",
            "--bootstrap", "20"]
    _assert_clean_failure(_invoke(runner, *args, "--out", tmp_path / "a"),
                          "ground-truth", "--allow-label-leakage")
    with pytest.warns(LabelLeakageWarning):
        ok = _invoke(runner, *args, "--out", tmp_path / "b", "--allow-label-leakage")
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["benchmark"][
        "text_fields"] == ["short_description", "category"]


def test_bad_split_value(runner, tiny_incidents: Path, tmp_path: Path,
                         isolated_results) -> None:
    df = pd.read_csv(tiny_incidents)
    df.loc[0, "split"] = "holdout"
    path = tmp_path / "badsplit.csv"
    df.to_csv(path, index=False)
    result = _invoke(runner, "evaluate", "--model", "tfidf", "--incidents", path,
                     "--out", tmp_path / "run")
    _assert_clean_failure(result, "'holdout'", "split")


# ---------------------------------------------------------------------------- message rendering


def test_error_message_shows_bracketed_path_verbatim(runner, tmp_path: Path,
                                                     isolated_results) -> None:
    missing = tmp_path / "[old]" / "incidents.csv"
    result = _invoke(runner, "evaluate", "--model", "tfidf", "--incidents", missing,
                     "--out", tmp_path / "run")
    _assert_clean_failure(result, str(missing))


def test_error_message_with_closing_tag_in_path(runner, tmp_path: Path,
                                                isolated_results) -> None:
    folder = tmp_path / "[" / "x]"
    missing = folder / "incidents.csv"
    assert "[/x]" in str(missing)
    result = _invoke(runner, "evaluate", "--model", "tfidf", "--incidents", missing,
                     "--out", tmp_path / "run")
    _assert_clean_failure(result, "not found")


def test_no_args_shows_help(runner) -> None:
    result = _invoke(runner)
    assert "evaluate" in result.output and "leaderboard" in result.output



def test_train_flags_left_out_keep_the_recipe_defaults(runner, monkeypatch) -> None:
    """`itsm train` without switches trains the documented recipe; switches override it."""
    from types import SimpleNamespace

    import itsm_core.training.finetune
    from itsm_core.training.finetune import TrainConfig

    seen: list[TrainConfig] = []

    def fake_run(cfg):
        seen.append(cfg)
        return SimpleNamespace(run_dir=Path("x"), meta={}, test_record=None)

    monkeypatch.setattr(itsm_core.training.finetune, "run_training", fake_run)
    assert _invoke(runner, "train").exit_code == 0
    assert _invoke(runner, "train", "--negatives", "--no-curriculum", "--lr", "1e-3"
                   ).exit_code == 0
    recipe = TrainConfig()
    assert (seen[0].use_negatives, seen[0].curriculum, seen[0].label_aware,
            seen[0].matryoshka) == (recipe.use_negatives, recipe.curriculum,
                                   recipe.label_aware, recipe.matryoshka)
    assert seen[1].use_negatives is True and seen[1].curriculum is False
    assert seen[1].learning_rate == 1e-3


def test_report_augment_runs_notebook_02(runner, monkeypatch, tmp_path) -> None:
    import itsm_core.reports.notebooks

    calls = []

    def fake(nb, params, output=None, name=None):
        calls.append((nb, params, name))
        return tmp_path / f"{name}.html"

    monkeypatch.setattr(itsm_core.reports.notebooks, "run_report", fake)
    res = _invoke(runner, "report", "augment", "--dataset", "gitbugs_hadoop",
                  "--expansion-factor", "0.5")
    assert res.exit_code == 0, res.output
    assert calls == [("02_augment", {"dataset": "gitbugs_hadoop", "expansion_factor": 0.5},
                      "augment_gitbugs_hadoop")]


def test_cache_command_shows_and_clears_the_embedding_cache(runner, tmp_path, monkeypatch):
    import numpy as np

    from itsm_core.encoders.cache import CacheKey, EmbeddingCache

    monkeypatch.setenv("ITSM_EMBED_CACHE", str(tmp_path / "c"))
    key = CacheKey("fp", "some/model", "torch-fp32", 128, 1)
    EmbeddingCache(tmp_path / "c").put(key, {b"k" * 32: np.ones(8, np.float32)})
    shown = _invoke(runner, "cache")
    assert shown.exit_code == 0 and "some/model" in shown.output and "torch-fp32" in shown.output
    cleared = _invoke(runner, "cache", "--clear")
    assert cleared.exit_code == 0 and "some/model" not in cleared.output
    assert EmbeddingCache(tmp_path / "c").stats()["entries"] == 0
    monkeypatch.setenv("ITSM_EMBED_CACHE", "off")
    off = _invoke(runner, "cache")
    assert off.exit_code == 0 and "off" in off.output


def test_rerank_bad_input_is_a_clean_message(runner, tiny_incidents: Path, tmp_path: Path,
                                             isolated_results) -> None:
    _assert_clean_failure(_invoke(runner, "rerank", "--loss", "hinge"), "unknown re-ranker loss",
                          "bce")
    _assert_clean_failure(_invoke(runner, "bench", "rerank"), "no re-ranker given",
                          "--reranker")
    _assert_clean_failure(_invoke(runner, "export", "--reranker", "latest"),
                          "no trained re-ranker", "itsm rerank")
    _assert_clean_failure(_invoke(runner, "evaluate", "--model", "rerank:nowhere@tfidf#5",
                                  "--incidents", tiny_incidents, "--out", tmp_path / "r"),
                          "not a cross-encoder folder", "itsm rerank")
