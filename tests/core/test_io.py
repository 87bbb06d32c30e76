"""core.io helpers that protect the user's files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from itsm_core.core.io import scratch_cwd

REPO = Path(__file__).resolve().parents[2]  # the checkout (REPO is a temp home here)


def test_scratch_cwd_keeps_stray_files_out_of_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with scratch_cwd() as scratch:
        Path("sym_shape_infer_temp.onnx").write_text("scratch")
        assert Path.cwd() == scratch
    assert Path.cwd() == tmp_path
    assert not scratch.exists()
    assert list(tmp_path.iterdir()) == []


def test_scratch_cwd_returns_even_when_the_block_fails(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError), scratch_cwd():
        raise RuntimeError("tool failed")
    assert Path.cwd() == tmp_path


def test_no_large_file_is_committed():
    """Weights, exports and tool scratch files (a 90 MB ``*.data`` of ONNX Runtime's shape
    inference once slipped in) belong under ignored folders, never in git. The bundled raw
    data sets (``data_new/raw/``, with their provenance README) are the one exception."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True,
                                capture_output=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    big = {f: (REPO / f).stat().st_size for f in listed
           if f and not f.startswith("data_new/raw/") and (REPO / f).is_file()
           and (REPO / f).stat().st_size > 5 * 2**20}
    assert not big, big
