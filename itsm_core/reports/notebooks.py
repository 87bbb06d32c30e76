"""Reports: run a numbered notebook with papermill and export it to HTML (nbconvert).

Notebooks only call functions from this package; everything they show is loaded here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from itsm_core.core.config import NOTEBOOKS_DIR, REPORTS_DIR
from itsm_core.core.errors import ItsmError
from itsm_core.core.io import atomic_write_text


def run_report(notebook: str, parameters: dict[str, Any], *, output: str | Path | None = None,
               name: str | None = None, kernel: str | None = None,
               notebooks_dir: Path = NOTEBOOKS_DIR, reports_dir: Path = REPORTS_DIR) -> Path:
    """Execute ``notebooks/<notebook>.ipynb`` with ``parameters``; write ``reports/<name>.html``.

    The executed notebook is kept beside the HTML under ``reports/executed/`` for
    debugging. Code cells are hidden in the HTML (they only call itsm_core).

    Args:
        notebook: the notebook's stem (``03_train``); parameters: papermill parameters.
        output: the HTML path (default ``reports/<name>.html``); name: the report name.
        kernel: the Jupyter kernel (default: the notebook's).
        notebooks_dir, reports_dir: where notebooks are and reports go.

    Returns:
        The HTML file written (atomically; an error in a cell writes none).
    """
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    src = notebooks_dir / f"{notebook}.ipynb"
    if not src.exists():
        names = sorted(p.stem for p in notebooks_dir.glob("*.ipynb"))
        raise ItsmError("notebook not found", where=str(src), fix=f"choose one of {names}")
    name = name or notebook
    html_path = Path(output) if output else reports_dir / f"{name}.html"
    executed = reports_dir / "executed" / f"{name}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    # figures must render inline in the executed notebook whatever the caller's backend;
    # progress bars belong in a terminal, not in a report (the kernel inherits this env)
    kernel_env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline",
                  "TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    saved = {k: os.environ.get(k) for k in kernel_env}
    os.environ.update(kernel_env)
    try:
        pm.execute_notebook(str(src), str(executed), parameters=parameters,
                            kernel_name=kernel, progress_bar=False, cwd=str(notebooks_dir))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    nb = nbformat.read(executed, as_version=4)
    # the HTML shows results; warnings and logs stay in the executed notebook (debugging)
    for cell in nb.cells:
        if cell.get("outputs"):
            cell.outputs = [o for o in cell.outputs
                            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    body, _ = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                           exclude_output_prompt=True).from_notebook_node(nb)
    atomic_write_text(html_path, body)
    return html_path


# --------------------------------------------------------------- one function per report


def _abs_if_path(spec: str) -> str:
    """Notebooks run in notebooks/: hand them absolute paths for local folders."""
    return str(Path(spec).resolve()) if spec and Path(spec).exists() else spec


def _suffix(dataset: str) -> str:
    """Report names of the bundled main data set carry no suffix (``train_minilm.html``)."""
    return "" if dataset == "it_tickets" else f"_{dataset}"


def _run(notebook: str, parameters: dict[str, Any], output: str | Path | None,
         name: str) -> Path:
    """:func:`run_report`, with a notebook's own ItsmError turned into an ItsmError (the
    CLI prints it in one paragraph) instead of papermill's traceback."""
    from papermill.exceptions import PapermillExecutionError

    try:
        return run_report(notebook, parameters, output=output, name=name)
    except PapermillExecutionError as exc:
        if exc.ename == "ItsmError":
            raise ItsmError(f"the {name} notebook failed: {exc.evalue}",
                            where=f"reports/executed/{name}.ipynb") from None
        raise


def report_evaluate(models: str | None, datasets: str, output: str | Path | None = None,
                    name: str = "evaluate_v2") -> Path:
    """notebooks/04_evaluate_v2 → ``reports/<name>.html`` (leaderboard, curves)."""
    return _run("04_evaluate_v2", {"models": models or "", "datasets": datasets}, output,
                name)


def report_train(model: str, dataset: str, profile: str, output: str | Path | None = None
                 ) -> Path:
    """notebooks/03_train (it trains) → ``reports/train_<model>[_<dataset>].html``."""
    return _run("03_train", {"model": model, "dataset": dataset, "profile": profile}, output,
                f"train_{Path(model).name}{_suffix(dataset)}")


def report_augment(dataset: str, expansion_factor: float, output: str | Path | None = None
                   ) -> Path:
    """notebooks/02_augment → ``reports/augment[_<dataset>].html``."""
    return _run("02_augment", {"dataset": dataset, "expansion_factor": expansion_factor},
                output, f"augment{_suffix(dataset)}")


def report_export(export_dir: str | Path | None, index_dir: str | Path | None, dataset: str,
                  bootstrap: int, output: str | Path | None = None) -> Path:
    """notebooks/08_export_search → ``reports/export_search[_<dataset>].html``."""
    return _run("08_export_search", {
        # absolute: the notebook runs with notebooks/ as its working directory
        "export_dir": str(Path(export_dir).resolve()) if export_dir else "",
        "index_dir": str(Path(index_dir).resolve()) if index_dir else "",
        "dataset": dataset, "bootstrap": bootstrap}, output, f"export_search{_suffix(dataset)}")


def report_diagnose(models: list[str], extra_models: list[str], dataset: str, n_pairs: int,
                    min_pairs: int, seed: int, output: str | Path | None = None) -> Path:
    """notebooks/05_adversarial_diagnostic → ``reports/adversarial_diagnostic[_<dataset>]
    .html`` (fails, with the counts, when the adversarial set cannot be built)."""
    return _run("05_adversarial_diagnostic", {
        "models": ",".join(models), "dataset": dataset, "extra_models": ",".join(extra_models),
        "n_pairs": n_pairs, "min_pairs": min_pairs, "seed": seed}, output,
        f"adversarial_diagnostic{_suffix(dataset)}")


def report_pretrain(model: str, dataset: str, method: str, profile: str, train_profile: str,
                    max_texts: int, output: str | Path | None = None) -> Path:
    """notebooks/06_pretrain (it trains) → ``reports/pretrain_<dataset>.html``."""
    return _run("06_pretrain", {
        "model": _abs_if_path(model), "dataset": dataset, "method": method, "profile": profile,
        "train_profile": train_profile, "max_texts": max_texts}, output, f"pretrain_{dataset}")


def report_distill(teacher: str, student: str, dataset: str, loss: str, profile: str,
                   max_texts: int, output: str | Path | None = None) -> Path:
    """notebooks/07_distill (it trains) → ``reports/distill_<dataset>.html``."""
    return _run("07_distill", {
        "teacher": _abs_if_path(teacher), "student": _abs_if_path(student),
        "dataset": dataset, "loss": loss, "profile": profile, "max_texts": max_texts}, output,
        f"distill_{dataset}")
