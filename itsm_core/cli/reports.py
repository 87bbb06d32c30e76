"""``itsm report …`` (papermill notebook → HTML) and ``itsm readme``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from itsm_core.cli.common import csv_list, friendly, out
from itsm_core.core.errors import ItsmError

report_app = typer.Typer(help="Run a notebook with papermill and export HTML.",
                         no_args_is_help=True)
Output = Annotated[Path | None, typer.Option(help="HTML path")]
Dataset = Annotated[str, typer.Option(help="bundled data set")]


def _done(html: Path) -> None:
    out.print(f"report -> {html}")


@report_app.command("evaluate")
@friendly
def report_evaluate(
    models: Annotated[str | None, typer.Option(help="models to show (default: all)")] = None,
    datasets: Annotated[str, typer.Option(help="data sets to show")] =
    "it_tickets,gitbugs_hadoop",
    output: Output = None,
) -> None:
    """Run notebooks/04_evaluate_v2.ipynb with papermill and export reports/evaluate_v2.html."""
    from itsm_core.reports.notebooks import report_evaluate as run

    _done(run(models, datasets, output))


@report_app.command("train")
@friendly
def report_train(
    model: Annotated[str, typer.Option(help="model to train")] = "minilm",
    dataset: Dataset = "it_tickets",
    profile: Annotated[str, typer.Option(help="training profile")] = "default",
    output: Output = None,
) -> None:
    """Run notebooks/03_train.ipynb for one model (it trains) and export
    reports/train_<model>.html with loss and validation curves."""
    from itsm_core.reports.notebooks import report_train as run

    _done(run(model, dataset, profile, output))


@report_app.command("augment")
@friendly
def report_augment(
    dataset: Dataset = "it_tickets",
    expansion_factor: Annotated[float, typer.Option(help="augmented copies per pair")] = 1.0,
    output: Output = None,
) -> None:
    """Run notebooks/02_augment.ipynb: class balance before / after augmentation of the
    training pairs and examples -> reports/augment[_<dataset>].html."""
    from itsm_core.reports.notebooks import report_augment as run

    _done(run(dataset, expansion_factor, output))


@report_app.command("export")
@friendly
def report_export(
    export_dir: Annotated[Path | None, typer.Option(help="export folder (default: newest)")] =
    None,
    index_dir: Annotated[Path | None, typer.Option(help="index folder (default: newest)")] =
    None,
    dataset: Dataset = "it_tickets",
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for CIs")] = 1000,
    output: Output = None,
) -> None:
    """Run notebooks/08_export_search.ipynb and export reports/export_search.html: export
    table, per-dim size/latency, hybrid vs BM25 vs dense (test, CIs), example queries."""
    from itsm_core.reports.notebooks import report_export as run

    _done(run(export_dir, index_dir, dataset, bootstrap, output))


@report_app.command("diagnose")
@friendly
def report_diagnose(
    models: Annotated[str, typer.Option(help="comma-separated model specs")] =
    "tfidf,bm25,minilm,mpnet",
    dataset: Dataset = "it_tickets",
    with_trained: Annotated[bool, typer.Option(
        help="add the newest fine-tuned model of the data set (from the leaderboard)")] =
    True,
    n_pairs: Annotated[int, typer.Option(help="pairs per kind")] = 300,
    min_pairs: Annotated[int, typer.Option(help="fail below this many pairs per kind")] = 30,
    seed: Annotated[int, typer.Option(help="random seed")] = 42,
    output: Output = None,
) -> None:
    """Run notebooks/05_adversarial_diagnostic.ipynb with papermill and export
    reports/adversarial_diagnostic.html (fails when the adversarial set cannot be built)."""
    from itsm_core.evaluation.diagnostic import models_to_diagnose
    from itsm_core.reports.notebooks import report_diagnose as run

    _done(run(csv_list(models) or [], models_to_diagnose([], dataset, with_trained), dataset,
              n_pairs, min_pairs, seed, output))


@report_app.command("pretrain")
@friendly
def report_pretrain(
    model: Annotated[str, typer.Option(help="model to adapt")] = "minilm",
    dataset: Dataset = "it_tickets",
    method: Annotated[str, typer.Option(help="simcse or tsdae")] = "simcse",
    profile: Annotated[str, typer.Option(help="pre-training profile")] = "default",
    train_profile: Annotated[str, typer.Option(help="fine-tune profile")] = "default",
    max_texts: Annotated[int, typer.Option(help="-1 = the profile's, 0 = all")] = -1,
    output: Output = None,
) -> None:
    """Run notebooks/06_pretrain.ipynb (it trains) -> reports/pretrain_<dataset>.html."""
    from itsm_core.reports.notebooks import report_pretrain as run

    _done(run(model, dataset, method, profile, train_profile, max_texts, output))


@report_app.command("distill")
@friendly
def report_distill(
    teacher: Annotated[str, typer.Option(help="teacher model spec")],
    student: Annotated[str, typer.Option(help="student model")] = "minilm",
    dataset: Dataset = "it_tickets",
    loss: Annotated[str, typer.Option(help="mse or margin-mse")] = "mse",
    profile: Annotated[str, typer.Option(help="distillation profile")] = "default",
    max_texts: Annotated[int, typer.Option(help="-1 = the profile's, 0 = all")] = -1,
    output: Output = None,
) -> None:
    """Run notebooks/07_distill.ipynb (it trains) -> reports/distill_<dataset>.html."""
    from itsm_core.reports.notebooks import report_distill as run

    _done(run(teacher, student, dataset, loss, profile, max_texts, output))


@friendly
def readme_cmd(
    check: Annotated[bool, typer.Option(
        help="only check that the README's marked tables equal reports/tables/*.md")] = False,
    tables: Annotated[str | None, typer.Option(
        help="tables to re-render (default: every table the README marks)")] = None,
    readme: Annotated[Path | None, typer.Option(help="README to rewrite")] = None,
    render: Annotated[bool, typer.Option(
        help="re-render reports/tables/ from the run outputs (--no-render: splice only)")]
    = True,
) -> None:
    """Regenerate the README's result tables from the pipeline's run outputs."""
    from itsm_core.reports.readme import README, check_readme, refresh_readme

    target = readme or README
    if check:
        stale = check_readme(target)
        if stale:
            raise ItsmError(f"README tables out of date: {', '.join(stale)}", where=str(target),
                            fix="run `itsm readme` (after `make pipeline`) and commit "
                                "README.md with reports/tables/")
        out.print(f"README tables match reports/tables/ ({target})")
        return
    for name, path in refresh_readme(target, render=render, names=csv_list(tables)).items():
        out.print(f"{name:12s} -> {path}")
    out.print(f"README tables rewritten -> {target}")


@friendly
def pipeline_cmd(
    dataset: Annotated[str, typer.Option(help="a bundled or added data set (itsm data add)")],
    profile: Annotated[str, typer.Option(help="fine-tune profile: default, full, smoke")] =
    "default",
    models: Annotated[str, typer.Option(help="baselines / zero-shot models beside it")] =
    "tfidf,bm25,minilm",
) -> None:
    """The main job on one data set: baselines, pairs, fine-tune, diagnose, export, index,
    reports and leaderboard, every output named after the data set."""
    from itsm_core.cli.common import print_rows
    from itsm_core.reports.pipeline import run_pipeline

    res = run_pipeline(dataset, profile=profile, models=tuple(csv_list(models) or ()),
                       progress=out.print)
    print_rows(("stage", "seconds", "status"),
               ((s["name"], s["seconds"], s["status"]) for s in res.stages),
               title=f"itsm pipeline --dataset {dataset} ({res.total_seconds} s)")
    for k, v in res.outputs.items():
        out.print(f"{k:16s} {v}")
    out.print(f"serve it: itsm serve --index {res.outputs['index']}")
