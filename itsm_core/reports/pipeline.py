"""``itsm pipeline --dataset NAME``: the main job on any registered data set, in process.

The same stages as ``make pipeline`` on the bundled data, every output named after NAME
(runs, models, index, ``reports/*_NAME.html``, ``reports/leaderboard_NAME.md``), so a
desk's runs never overwrite the bundled demo's or another data set's:

baselines + zero-shot → training pairs → fine-tune (notebook 03) → adversarial diagnostic
(notebook 05) → INT8 export (measured) → search index → evaluate_v2 and export reports →
leaderboard. Each stage's wall time is recorded; a stage that cannot run on this data (a
diagnostic with too few adversarial pairs) is reported as skipped with the reason instead
of stopping the job.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from itsm_core.core.config import REPORTS_DIR
from itsm_core.core.errors import ItsmError
from itsm_core.core.io import atomic_write_json, atomic_write_text, git_commit, timestamp

BASELINES = ("tfidf", "bm25", "minilm")


@dataclass
class PipelineResult:
    """What the job produced, stage by stage."""

    dataset: str
    stages: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return round(sum(s["seconds"] for s in self.stages), 1)


def _stage(result: PipelineResult, name: str, fn: Callable[[], Any],
           optional: bool = False, progress: Callable[[str], None] | None = None) -> Any:
    if progress:
        progress(f"[{result.dataset}] {name} …")
    t0 = time.perf_counter()
    try:
        out = fn()
        status = "done"
    except ItsmError as exc:
        if not optional:
            raise
        out, status = None, f"skipped: {exc.problem}"
    result.stages.append({"name": name, "seconds": round(time.perf_counter() - t0, 1),
                          "status": status})
    return out


def run_pipeline(dataset: str, *, profile: str = "default", models: tuple[str, ...] = BASELINES,
                 model: str = "minilm", progress: Callable[[str], None] | None = None
                 ) -> PipelineResult:
    """Run the main job on ``dataset`` (bundled or added with ``itsm data add``).

    Args:
        dataset: the data set name; it needs ground truth (labels, links or groups).
        profile: the fine-tune profile (``default``, ``full``, ``smoke``).
        models: baselines and zero-shot models evaluated beside the fine-tune.
        model: the model to fine-tune (registry key or model folder).
        progress: called with a line at the start of each stage.

    Returns:
        :class:`PipelineResult`; its stage table is also written to
        ``reports/pipeline_timing_<dataset>.json``.

    Raises:
        ItsmError: unknown data set, no ground truth, or a stage that failed.
    """
    from itsm_core.data.datasets import processed_path, read_sidecar
    from itsm_core.encoders.registry import resolve_spec
    from itsm_core.evaluation.benchmark import run_benchmark
    from itsm_core.evaluation.diagnostic import models_to_diagnose
    from itsm_core.reports import notebooks
    from itsm_core.runs.store import latest_model_dir, leaderboard_view
    from itsm_core.serving.export import export_to_models, measure_export
    from itsm_core.serving.index import build_index_into_models
    from itsm_core.training.finetune import write_training_pairs

    side = read_sidecar(processed_path(dataset))
    if side is not None and not side.labels and not side.links:
        raise ItsmError(f"data set {dataset!r} has no ground truth (no labels, links or "
                        "groups)", where="--dataset", fix="re-add it with --labels, --links "
                        "or --groups; without them use it for itsm pretrain and search only")
    res = PipelineResult(dataset)
    _stage(res, "benchmark", lambda: run_benchmark(list(models), [dataset]), progress=progress)
    pairs = _stage(res, "pairs", lambda: write_training_pairs(dataset), progress=progress)
    res.outputs["pairs"] = str(pairs[0])
    res.outputs["train_report"] = str(_stage(
        res, "train", lambda: notebooks.report_train(model, dataset, profile),
        progress=progress))
    trained = latest_model_dir(dataset, f"{resolve_spec(model).key}-ft")
    if trained is None:
        raise ItsmError("the fine-tune left no model evaluated on the test split",
                        where=dataset, fix="see reports/executed/ for the training notebook")
    res.outputs["model"] = trained
    diag = _stage(res, "diagnose", lambda: notebooks.report_diagnose(
        [m for m in models], models_to_diagnose([], dataset, True), dataset, 300, 30, 42),
        optional=True, progress=progress)
    if diag is not None:
        res.outputs["diagnose_report"] = str(diag)

    def export() -> Path:
        folder = export_to_models(trained, max_seq_length=128)
        measure_export(folder, dataset=dataset)
        return folder

    folder = _stage(res, "export", export, progress=progress)
    res.outputs["export"] = str(folder)
    idx = _stage(res, "index", lambda: build_index_into_models(str(folder), dataset=dataset),
                 progress=progress)
    res.outputs["index"] = str(idx.path)

    def reports() -> None:
        res.outputs["evaluate_report"] = str(notebooks.report_evaluate(
            None, dataset, name=f"evaluate_v2_{dataset}"))
        res.outputs["export_report"] = str(notebooks.report_export(folder, idx.path, dataset,
                                                                   1000))
        board = REPORTS_DIR / f"leaderboard_{dataset}.md"
        atomic_write_text(board, leaderboard_view(dataset).to_markdown(index=False) + "\n")
        res.outputs["leaderboard"] = str(board)

    _stage(res, "reports", reports, progress=progress)
    atomic_write_json(REPORTS_DIR / f"pipeline_timing_{dataset}.json", {
        "dataset": dataset, "finished": timestamp(), "git_commit": git_commit(),
        "total_seconds": res.total_seconds, "stages": res.stages, "outputs": res.outputs})
    return res
