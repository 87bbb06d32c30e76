"""Tests for the thin notebooks and the papermill/nbconvert report pipeline."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import PROJECT_ROOT as ROOT  # noqa: E402

sys.path.insert(0, str(ROOT / "tools"))
from notebooks import NOTEBOOKS  # noqa: E402  (tools/notebooks.py: the notebooks' source)

NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOK_PATHS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
ALLOWED_IMPORT = re.compile(r"^\s*(from itsm_core(\.\w+)* import |from IPython(\.\w+)* import "
                            r"|import IPython)")


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def test_notebooks_exist_and_match_the_builder() -> None:
    assert NOTEBOOK_PATHS, "no notebooks in notebooks/"
    assert {p.name for p in NOTEBOOK_PATHS} == set(NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.name)
def test_notebook_committed_clean(path: Path) -> None:
    nb = _read(path)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: outputs committed"
            assert cell.execution_count is None, f"{path.name}: execution count committed"
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.name)
def test_exactly_one_parameters_cell(path: Path) -> None:
    nb = _read(path)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    cell = tagged[0]
    assert cell.cell_type == "code"
    # only simple assignments (papermill overrides them): comments and `name = literal`
    for line in cell.source.splitlines():
        assert not line.strip() or line.lstrip().startswith("#") or re.match(
            r"^\w+ = .+$", line), line
    # the parameters cell comes before any code that uses them
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert first_code is cell


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.name)
def test_notebook_on_disk_equals_builder_output(path: Path) -> None:
    disk, built = _read(path), NOTEBOOKS[path.name]
    assert len(disk.cells) == len(built.cells)
    for i, (a, b) in enumerate(zip(disk.cells, built.cells)):
        assert a.cell_type == b.cell_type, i
        assert a.source == b.source, f"cell {i} differs: rerun python tools/notebooks.py"
        assert a.get("metadata", {}).get("tags", []) == b.get("metadata", {}).get("tags", [])
    assert disk.metadata["kernelspec"] == built.metadata["kernelspec"]


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.name)
def test_notebook_cells_hold_no_logic(path: Path) -> None:
    for cell in _read(path).cells:
        if cell.cell_type != "code":
            continue
        for line in cell.source.splitlines():
            stripped = line.strip()
            assert not re.match(r"^(async\s+)?def\s|^class\s|^lambda\b", stripped), line
            if re.match(r"^(import|from)\s", stripped):
                assert ALLOWED_IMPORT.match(stripped), f"{path.name}: {line}"
            if stripped.startswith("%"):
                assert stripped.startswith("%matplotlib"), line
            assert not stripped.startswith("!"), line  # no shell escapes


def test_report_smoke(tiny_incidents: Path, tmp_path: Path, isolated_results) -> None:
    """Evaluate tfidf + bm25 on the tiny file, then render the evaluate_v2 report."""
    from itsm_core.evaluation.benchmark import BenchmarkConfig, build_benchmark, evaluate_model
    from itsm_core.reports.notebooks import run_report

    bench = build_benchmark(tiny_incidents, labels=["category", "subcategory"],
                            config=BenchmarkConfig(n_resamples=50))
    for model in ("tfidf", "bm25"):
        evaluate_model(model, bench, tmp_path / "runs" / model)
    board = isolated_results.leaderboard
    assert board.exists()

    reports_dir = tmp_path / "reports"
    html_path = run_report(
        "04_evaluate_v2",
        {"models": "", "datasets": bench.dataset, "leaderboard": str(board)},
        output=tmp_path / "r.html", reports_dir=reports_dir, notebooks_dir=NOTEBOOK_DIR,
    )
    assert html_path == tmp_path / "r.html" and html_path.exists()
    html = html_path.read_text(encoding="utf-8")
    assert "tfidf" in html and "bm25" in html and "tiny_incidents" in html
    assert html.count("data:image/png") >= 1
    assert "Traceback" not in html and "ItsmError" not in html
    executed = _read(reports_dir / "executed" / "04_evaluate_v2.ipynb")
    errors = [o for c in executed.cells if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    # the notebook in the repository is not modified by running it
    assert all(c.get("outputs", []) == [] for c in _read(NOTEBOOK_DIR / "04_evaluate_v2.ipynb")
               .cells if c.cell_type == "code")


def test_report_unknown_notebook(tmp_path: Path) -> None:
    from itsm_core.core.errors import ItsmError
    from itsm_core.reports.notebooks import run_report

    with pytest.raises(ItsmError, match="04_evaluate_v2"):
        run_report("99_nope", {}, reports_dir=tmp_path, notebooks_dir=NOTEBOOK_DIR)


def test_report_html_shows_results_not_logs(tmp_path: Path) -> None:
    """stderr (warnings, logs) stays in the executed notebook; progress bars never start."""
    from itsm_core.reports.notebooks import run_report

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import sys\nfrom tqdm.auto import tqdm\n"
        "print('a warning nobody should see', file=sys.stderr)\n"
        "total = sum(tqdm(range(3), desc='progress-bar-here'))\nprint('result', total + x)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    (tmp_path / "nbs").mkdir()
    nbformat.write(nb, tmp_path / "nbs" / "noisy.ipynb")
    html = run_report("noisy", {"x": 1}, output=tmp_path / "n.html", notebooks_dir=tmp_path /
                      "nbs", reports_dir=tmp_path / "rep").read_text(encoding="utf-8")
    assert "result 4" in html
    assert "a warning nobody should see" not in html and "progress-bar-here" not in html
    outputs = " ".join(str(o.get("text", "")) for c in _read(
        tmp_path / "rep" / "executed" / "noisy.ipynb").cells for o in c.get("outputs", []))
    assert "a warning nobody should see" in outputs and "progress-bar-here" not in outputs
