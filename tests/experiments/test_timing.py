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
