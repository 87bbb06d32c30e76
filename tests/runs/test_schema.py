"""Tests for itsm_core.runs.schema and itsm_core.core.io: run records, leaderboard, atomic
writes."""

from __future__ import annotations

import inspect
import json
import math
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from itsm_core.core import config
from itsm_core.core.errors import ItsmError
from itsm_core.core.io import (
    atomic_write_df,
    atomic_write_json,
    atomic_write_text,
    new_run_dir,
    unique_run_dir,
)
from itsm_core.evaluation import benchmark as evaluate
from itsm_core.reports import views as reports
from itsm_core.runs import schema as results
from itsm_core.runs.schema import (
    HEADLINE_METRICS,
    append_leaderboard,
    format_with_ci,
    leaderboard_row,
    load_run,
    make_record,
    read_leaderboard,
    write_run,
)
from itsm_core.runs.store import latest_per_model

BENCH = {"dataset": "tiny", "split": "test", "relevance": "labels:category,subcategory",
         "n_queries": 12, "n_test_pairs": 40}


def _record(model: str = "tfidf", ndcg: float = 0.5, **extra) -> dict:
    metrics = {m: ndcg for m in HEADLINE_METRICS}
    metrics.update({f"{m}_ci": [ndcg - 0.1, ndcg + 0.1] for m in HEADLINE_METRICS})
    return make_record(task="evaluate", model=model, model_kind="lexical", benchmark=BENCH,
                       metrics=metrics, extra={"threshold": 0.3, **extra})


def test_isolated_results_redirects_every_default(isolated_results) -> None:
    board = isolated_results.leaderboard
    assert board == config.LEADERBOARD_CSV
    assert isolated_results.runs == config.RUNS_DIR
    for func, param in ((append_leaderboard, "path"), (write_run, "leaderboard"),
                        (read_leaderboard, "path"), (evaluate.evaluate_model, "leaderboard"),
                        (reports.latest_runs, "leaderboard")):
        default = inspect.signature(func).parameters[param].default
        assert default in (board, None), (func.__name__, default)
    assert board == reports.LEADERBOARD_CSV
    assert board == results.LEADERBOARD_CSV


def test_make_record_schema() -> None:
    rec = _record(ndcg=0.42)
    assert rec["schema_version"] == 1 and len(rec["run_id"]) == 12
    assert rec["dataset"] == "tiny" and rec["split"] == "test"
    assert rec["model"] == rec["base_model"] == "tfidf"
    assert rec["n_queries"] == 12 and rec["n_test_pairs"] == 40
    assert rec["ndcg@10"] == 0.42 and rec["threshold"] == 0.3
    assert rec["benchmark"] == BENCH
    spec_rec = make_record(task="evaluate", model="run1", model_kind="dense", benchmark=BENCH,
                           metrics={}, model_spec={"key": "run1",
                                                   "extra": {"base_model": "minilm"}})
    assert spec_rec["base_model"] == "minilm"


def test_write_run_writes_files_and_one_leaderboard_row(tmp_path: Path,
                                                        isolated_results) -> None:
    out = tmp_path / "run1"
    table = pd.DataFrame({"query": ["INC1", "INC2"], "ndcg@10": [0.5, float("nan")]})
    path = write_run(out, _record(), {"per_query": table})
    assert path == out / "metrics.json"
    rec = json.loads(path.read_text(encoding="utf-8"))
    assert rec["ndcg@10"] == 0.5 and rec["ndcg@10_ci"] == [0.4, 0.6]
    back = pd.read_csv(out / "per_query.csv")
    assert back["query"].tolist() == ["INC1", "INC2"] and back["ndcg@10"].isna().iloc[1]
    board = read_leaderboard()
    assert len(board) == 1
    row = board.iloc[0]
    assert row["run_id"] == rec["run_id"] and row["run_dir"] == str(out)
    for m in HEADLINE_METRICS:
        assert row[m] == pytest.approx(0.5)
        assert row[f"{m}_ci_low"] == pytest.approx(0.4)
        assert row[f"{m}_ci_high"] == pytest.approx(0.6)
    assert row["threshold"] == pytest.approx(0.3)
    assert load_run(out)["run_id"] == rec["run_id"]
    # a second run appends exactly one more row
    write_run(tmp_path / "run2", _record("bm25"))
    assert read_leaderboard()["model"].tolist() == ["tfidf", "bm25"]


def test_write_run_never_overwrites(tmp_path: Path, isolated_results) -> None:
    out = tmp_path / "run"
    write_run(out, _record())
    before = (out / "metrics.json").read_bytes()
    with pytest.raises(ItsmError, match="refusing to overwrite") as exc:
        write_run(out, _record("bm25"))
    assert str(out) in str(exc.value)
    assert (out / "metrics.json").read_bytes() == before
    assert len(read_leaderboard()) == 1  # no row for the refused run


def test_write_run_without_leaderboard(tmp_path: Path, isolated_results) -> None:
    write_run(tmp_path / "run", _record(), leaderboard=None)
    assert not isolated_results.leaderboard.exists()


def test_appends_five_times_five_rows(tmp_path: Path) -> None:
    board = tmp_path / "lb.csv"
    for i in range(5):
        append_leaderboard(_record(f"m{i}"), tmp_path / f"r{i}", board)
    df = read_leaderboard(board)
    assert df["model"].tolist() == [f"m{i}" for i in range(5)]
    assert df["run_id"].is_unique


def test_concurrent_appends_lose_no_row(tmp_path: Path) -> None:
    board = tmp_path / "lb.csv"
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            append_leaderboard(_record(f"t{i}"), None, board)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(read_leaderboard(board)["model"]) == [f"t{i}" for i in range(5)]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_read_leaderboard_missing_has_columns(tmp_path: Path) -> None:
    df = read_leaderboard(tmp_path / "none.csv")
    assert df.empty
    assert {"run_id", "model", "ndcg@10", "ndcg@10_ci_low", "ndcg@10_ci_high",
            "run_dir"} <= set(df.columns)
    assert latest_per_model(df).empty


def test_leaderboard_row_without_ci() -> None:
    rec = make_record(task="evaluate", model="x", model_kind="dense", benchmark=BENCH,
                      metrics={"ndcg@10": 0.7})
    row = leaderboard_row(rec, None)
    assert row["ndcg@10"] == 0.7 and row["ndcg@10_ci_low"] is None and row["run_dir"] is None
    assert row["roc_auc"] is None


def test_format_with_ci() -> None:
    board = pd.DataFrame([
        {"dataset": "b", "model": "tfidf", "model_kind": "lexical", "n_queries": 10,
         "ndcg@10": 0.5123, "ndcg@10_ci_low": 0.49, "ndcg@10_ci_high": 0.5344},
        {"dataset": "b", "model": "minilm", "model_kind": "dense", "n_queries": 10,
         "ndcg@10": 0.7, "ndcg@10_ci_low": np.nan, "ndcg@10_ci_high": np.nan},
        {"dataset": "a", "model": "bm25", "model_kind": "lexical", "n_queries": 5,
         "ndcg@10": np.nan, "ndcg@10_ci_low": np.nan, "ndcg@10_ci_high": np.nan},
    ])
    out = format_with_ci(board, metrics=("ndcg@10",))
    assert list(out.columns) == ["dataset", "model", "model_kind", "n_queries", "ndcg@10"]
    # sorted by data set, then best first
    assert out["model"].tolist() == ["bm25", "minilm", "tfidf"]
    assert out["ndcg@10"].tolist() == ["–", "0.700", "0.512 [0.490, 0.534]"]
    assert format_with_ci(board.iloc[:1], ("ndcg@10",), digits=2)["ndcg@10"][0] == \
        "0.51 [0.49, 0.53]"


def test_latest_per_model_keeps_newest() -> None:
    rows = []
    for ts, model, value in [("20260101T000000Z", "tfidf", 0.1), ("20260103T000000Z", "tfidf",
                             0.3), ("20260102T000000Z", "tfidf", 0.2),
                             ("20260101T000000Z", "bm25", 0.5)]:
        rows.append({"task": "evaluate", "dataset": "d", "split": "test", "relevance": "r",
                     "model": model, "timestamp": ts, "ndcg@10": value})
    rows.append({**rows[0], "task": "train", "timestamp": "20270101T000000Z", "ndcg@10": 0.9})
    rows.append({**rows[0], "dataset": "other", "ndcg@10": 0.7})
    out = latest_per_model(pd.DataFrame(rows))
    got = {(d, m): v for d, m, v in zip(out["dataset"], out["model"], out["ndcg@10"])}
    assert got == {("d", "tfidf"): 0.3, ("d", "bm25"): 0.5, ("other", "tfidf"): 0.7}
    assert len(latest_per_model(pd.DataFrame(rows), task=None)) == 4  # + the train row


def test_load_run_missing(tmp_path: Path) -> None:
    with pytest.raises(ItsmError, match="no metrics.json"):
        load_run(tmp_path)


# ---------------------------------------------------------------------------- io


def test_new_run_dir(tmp_path: Path) -> None:
    fresh = new_run_dir(tmp_path / "a" / "b")
    assert fresh.is_dir()
    assert new_run_dir(fresh) == fresh  # empty: fine
    (fresh / "metrics.json").write_text("{}")
    with pytest.raises(ItsmError, match="not empty") as exc:
        new_run_dir(fresh)
    assert str(fresh) in str(exc.value) and "--out" in str(exc.value)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ItsmError):
        new_run_dir(a_file)


def test_unique_run_dir_never_reuses(tmp_path: Path) -> None:
    made = {unique_run_dir(tmp_path, "evaluate_x") for _ in range(3)}
    assert len(made) == 3 and all(p.is_dir() and "evaluate_x" in p.name for p in made)


def test_atomic_write_json_is_strict(tmp_path: Path) -> None:
    obj = {"a": float("nan"), "b": [1.0, np.float32("nan"), np.float64(2.5)],
           "c": np.int64(3), "d": np.array([1, 2]), "e": Path("/x"), "f": {"g": math.nan},
           "h": {3, 1}, "i": (np.nan, 1)}
    path = atomic_write_json(tmp_path / "sub" / "m.json", obj)
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text

    def no_constants(name: str):
        raise AssertionError(f"non-strict JSON constant {name}")

    back = json.loads(text, parse_constant=no_constants)
    assert back == {"a": None, "b": [1.0, None, 2.5], "c": 3, "d": [1, 2], "e": "/x",
                    "f": {"g": None}, "h": [1, 3], "i": [None, 1]}
    assert not [p for p in path.parent.iterdir() if p.name != "m.json"]  # no temp left


def test_atomic_writes_replace_and_respect_umask(tmp_path: Path) -> None:
    p = atomic_write_text(tmp_path / "t.txt", "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    mask = os.umask(0)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask
    df = pd.DataFrame({"x": [1, 2]})
    for name in ("d.csv", "d.parquet"):
        q = atomic_write_df(tmp_path / name, df)
        back = pd.read_parquet(q) if name.endswith("parquet") else pd.read_csv(q)
        pd.testing.assert_frame_equal(back, df)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["d.csv", "d.parquet", "t.txt"]


def test_latest_per_model_hides_ablation_variants_unless_asked():
    from itsm_core.runs.store import latest_per_model

    board = pd.DataFrame({
        "task": ["evaluate"] * 3, "dataset": ["d"] * 3, "split": ["test"] * 3,
        "relevance": ["labels:c"] * 3, "timestamp": ["1", "2", "3"],
        "model": ["minilm", "minilm-ablation-recipe", "minilm-ft"]})
    assert set(latest_per_model(board)["model"]) == {"minilm", "minilm-ft"}
    assert "minilm-ablation-recipe" in set(latest_per_model(board, include_ablation=True)["model"])
