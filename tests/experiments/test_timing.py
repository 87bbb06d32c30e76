"""Per-stage pipeline timing: stages recorded even when one fails, total = sum."""

from __future__ import annotations

import json
import sys

import pytest

from itsm_core.core.errors import ItsmError
from itsm_core.experiments import timing


def test_stages_are_recorded_with_exit_codes_and_summed(tmp_path):
    path = tmp_path / "pipeline_timing.json"
    timing.reset(path)
    assert timing.run_stage("ok", [sys.executable, "-c", "pass"], path) == 0
    assert timing.run_stage("fails", [sys.executable, "-c", "raise SystemExit(3)"], path) == 3
    record = timing.finish(path)
    assert [s["name"] for s in record["stages"]] == ["ok", "fails"]
    assert [s["rc"] for s in record["stages"]] == [0, 3]
    assert record["total_seconds"] == pytest.approx(sum(s["seconds"] for s in record["stages"]))
    on_disk = json.loads(path.read_text())
    assert set(on_disk) >= {"total_seconds", "stages"}
    table = timing.timing_table(on_disk)
    assert list(table["name"]) == ["ok", "fails", "total"] and table["rc"].iat[-1] == 3


def test_reset_starts_a_new_record(tmp_path):
    path = tmp_path / "t.json"
    timing.reset(path)
    timing.run_stage("a", [sys.executable, "-c", "pass"], path)
    timing.reset(path)
    timing.run_stage("b", [sys.executable, "-c", "pass"], path)
    assert [s["name"] for s in timing.finish(path)["stages"]] == ["b"]


def test_bad_commands_are_clear_errors(tmp_path):
    with pytest.raises(ItsmError, match="no command"):
        timing.run_stage("x", [], tmp_path / "t.json")
    with pytest.raises(ItsmError, match="cannot run"):
        timing.run_stage("x", ["/no/such/program"], tmp_path / "t.json")
    with pytest.raises(ItsmError, match="make pipeline"):
        timing.finish(tmp_path / "never.json")


def test_every_finished_run_is_kept_and_runs_compare_side_by_side(tmp_path):
    path, history = tmp_path / "pipeline_timing.json", tmp_path / "history"
    records = []
    for code in ("import time; time.sleep(0.6)", "import time; time.sleep(0.2)"):
        timing.reset(path)
        timing.run_stage("benchmark", [sys.executable, "-c", code], path)
        records.append(timing.finish(path, history))
    kept = sorted(history.glob("pipeline_*.json"))
    assert len(kept) == 2 and json.loads(kept[-1].read_text()) == records[-1]
    table = timing.compare_runs(*records).set_index("name")
    assert list(table.index) == ["benchmark", "total"]
    first, second = (r["stages"][0]["seconds"] for r in records)
    assert table.loc["benchmark", "earlier s"] == first
    assert table.loc["total", "speed-up"] == pytest.approx(
        records[0]["total_seconds"] / records[1]["total_seconds"], abs=0.06)


def test_each_itsm_command_of_a_stage_is_recorded_as_a_step(tmp_path, monkeypatch):
    path = tmp_path / "pipeline_timing.json"
    timing.reset(path)
    itsm = [sys.executable, "-m", "itsm_core.cli.main"]
    assert timing.run_stage("index", [sys.executable, "-c", (
        "import subprocess, sys; "
        f"[subprocess.check_call({itsm!r} + [c]) for c in ('models', 'cache')]")], path) == 0
    record = timing.finish(path)
    steps = record["steps"]
    assert [(s["stage"], s["command"]) for s in steps] == [("index", "itsm models"),
                                                           ("index", "itsm cache")]
    assert all(0 < s["seconds"] <= record["total_seconds"] for s in steps)
    table = timing.steps_table(record)
    assert list(table.columns) == ["stage", "command", "seconds", "share"]
    assert table["seconds"].is_monotonic_decreasing
    # outside a timed stage a user's own `itsm` call records nothing
    monkeypatch.delenv(timing.STAGE_ENV, raising=False)
    monkeypatch.delenv(timing.PATH_ENV, raising=False)
    assert timing.record_step("itsm models", 1.0) is False
    assert timing.steps_table({"stages": [], "total_seconds": 0}).empty
