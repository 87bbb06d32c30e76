"""The run store: newest runs and artifacts, found one way."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from itsm_core.runs.store import (
    latest_file,
    latest_folder,
    latest_json,
    latest_model_dir,
    latest_run,
)


def test_latest_model_dir_takes_the_exact_name(tmp_path: Path) -> None:
    model_dir = tmp_path / "run" / "model"
    model_dir.mkdir(parents=True)
    ev = tmp_path / "run" / "evaluate"
    ev.mkdir()
    (ev / "metrics.json").write_text(json.dumps({"model_arg": str(model_dir)}))
    ev2 = tmp_path / "other" / "evaluate"
    ev2.mkdir(parents=True)
    (ev2 / "metrics.json").write_text(json.dumps({"model_arg": str(tmp_path)}))
    board = pd.DataFrame([
        {"task": "evaluate", "dataset": "it_tickets", "model": "minilm", "timestamp": "1",
         "split": "test",
         "run_dir": str(tmp_path / "nope")},
        {"task": "evaluate", "dataset": "it_tickets", "model": "minilm-ft", "timestamp": "2",
         "split": "test",
         "run_dir": str(ev)},
        # newer, but other models: an export, a hybrid and a SimCSE fine-tune
        *[{"task": "evaluate", "dataset": "it_tickets", "model": m, "timestamp": "3",
           "split": "test",
           "run_dir": str(ev2)} for m in ("minilm-ft.onnx", "hybrid-minilm-ft-onnx",
                                          "minilm-simcse-ft")],
    ])
    path = tmp_path / "lb.csv"
    board.to_csv(path, index=False)
    assert latest_model_dir("it_tickets", "minilm-ft", path) == str(model_dir)
    assert latest_model_dir("gitbugs_hadoop", "minilm-ft", path) is None


def test_latest_run_filters_split_and_required_files(tmp_path: Path) -> None:
    runs = {}
    for name, split, ts, files in (("a", "test", "1", ["metrics.json"]),
                                   ("b", "validation", "3", ["metrics.json"]),
                                   ("c", "test", "2", ["metrics.json", "per_query.csv"]),
                                   ("d", "test", "4", [])):
        folder = tmp_path / name
        folder.mkdir()
        for f in files:
            (folder / f).write_text(json.dumps({"model_arg": name}))
        runs[name] = {"task": "evaluate", "dataset": "x", "model": "m", "split": split,
                      "timestamp": ts, "run_dir": str(folder)}
    lb = tmp_path / "lb.csv"
    pd.DataFrame(runs.values()).to_csv(lb, index=False)
    assert latest_run("m", "x", leaderboard=lb) == tmp_path / "c"  # d lost its files
    assert latest_run("m", "x", leaderboard=lb, split=None) == tmp_path / "b"
    assert latest_run("m", "x", leaderboard=lb, require="per_query.csv") == tmp_path / "c"
    assert latest_run("m", "x", leaderboard=lb,
                      accept=lambda rec: rec["model_arg"] == "a") == tmp_path / "a"
    assert latest_run("m", "other", leaderboard=lb) is None
    assert latest_run("m", leaderboard=tmp_path / "missing.csv") is None


def test_latest_artifacts_sort_by_timestamped_names(tmp_path: Path) -> None:
    for ts in ("20260101T000000Z", "20260301T000000Z", "20260201T000000Z"):
        (tmp_path / f"{ts}_idx").mkdir()
        (tmp_path / f"{ts}_idx" / "itsm_index.json").write_text("{}")
        (tmp_path / f"bench_{ts}.json").write_text(json.dumps({"ts": ts}))
    (tmp_path / "20260401T000000Z_broken").mkdir()  # no marker: not an index
    assert latest_folder(tmp_path, "itsm_index.json").name == "20260301T000000Z_idx"
    assert latest_file(tmp_path, "bench_*.json").name == "bench_20260301T000000Z.json"
    assert latest_json(tmp_path, "bench_*.json") == {"ts": "20260301T000000Z"}
    assert latest_json(tmp_path, "nothing_*.json") is None
    assert latest_folder(tmp_path / "none", "itsm_index.json") is None


def test_unseen_rows_have_their_own_view(tmp_path):
    from itsm_core.core.errors import ItsmError
    from itsm_core.runs.store import leaderboard_view

    board = tmp_path / "leaderboard.csv"
    pd.DataFrame([
        {"run_id": "a", "timestamp": "20261202T000000Z", "task": "evaluate",
         "dataset": "gitbugs_hadoop", "split": "test", "relevance": "links", "model": "minilm",
         "model_kind": "dense", "n_queries": 47, "ndcg@10": 0.5},
        {"run_id": "b", "timestamp": "20261202T000001Z", "task": "unseen",
         "dataset": "gitbugs_hadoop", "split": "test", "relevance": "links",
         "model": "minilm-ft (trained on it_tickets)", "model_kind": "dense", "n_queries": 47,
         "ndcg@10": 0.4},
    ]).to_csv(board, index=False)
    main = leaderboard_view(leaderboard=board)
    assert list(main["model"]) == ["minilm"]
    unseen = leaderboard_view(leaderboard=board, task="unseen")
    assert list(unseen["model"]) == ["minilm-ft (trained on it_tickets)"]
    with pytest.raises(ItsmError, match="'unseen' rows"):
        leaderboard_view(leaderboard=board, task="unseen", dataset="it_tickets")


def test_runs_of_the_same_links_file_in_another_folder_line_up(tmp_path):
    from itsm_core.runs.schema import read_leaderboard, relevance_key
    from itsm_core.runs.store import latest_per_model

    board = tmp_path / "leaderboard.csv"
    rows = [{"run_id": str(i), "timestamp": f"20261202T00000{i}Z", "task": "evaluate",
             "dataset": "gitbugs_hadoop", "split": "test", "model": "minilm",
             "relevance": f"links:/clone{i}/data_new/processed/gitbugs_hadoop_links.csv"}
            for i in range(2)]
    pd.DataFrame(rows).to_csv(board, index=False)
    latest = latest_per_model(read_leaderboard(board))
    assert list(latest["run_id"]) == ["1"]  # one model, one row: the newest
    assert latest["relevance"].iat[0] == "links:gitbugs_hadoop_links.csv"
    assert relevance_key("labels:category,subcategory") == "labels:category,subcategory"
    assert relevance_key(float("nan")) == ""


def test_unknown_leaderboard_task_is_a_clear_error(tmp_path):
    from itsm_core.core.errors import ItsmError
    from itsm_core.runs.store import leaderboard_view

    with pytest.raises(ItsmError, match="unknown leaderboard task") as err:
        leaderboard_view(leaderboard=tmp_path / "none.csv", task="bogus")
    assert "unseen" in err.value.fix
