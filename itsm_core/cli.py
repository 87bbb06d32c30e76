"""The ``itsm`` command line: the one entry point shared by users, notebooks and make.

Every command turns :class:`~itsm_core.errors.ItsmError` into a one-paragraph message on
stderr and exit code 2 (no traceback); other exceptions are real bugs and propagate.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from itsm_core import compat
from itsm_core.errors import ItsmError

# no model hub at run time unless the user explicitly allows it
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(help="Fine-tune and honestly evaluate embedding models for ITSM incidents.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Build the bundled data sets.", no_args_is_help=True)
report_app = typer.Typer(help="Run a notebook with papermill and export HTML.",
                         no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(report_app, name="report")
err = Console(stderr=True)
out = Console()


def friendly(fn):
    """Print ItsmError as a clear message and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ItsmError as exc:
            err.print("[bold red]error:[/]", escape(str(exc)), highlight=False,
                      soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper


def _csv_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


@app.callback()
@friendly
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    compat.check()  # a known-broken library combination stops here, in one line


@data_app.command("build")
@friendly
def data_build(
    only: Annotated[str | None, typer.Option(help="comma-separated data set names")] = None,
) -> None:
    """Build data_new/processed/* (incidents, splits, links, manifests) from data_new/raw."""
    from itsm_core.data import build_all

    for name, path in build_all(_csv_list(only)).items():
        out.print(f"built [bold]{name}[/] -> {path}")


@app.command("models")
def models_cmd() -> None:
    """List the model registry (keys usable as --model)."""
    from itsm_core.models import registry_table

    table = Table("key", "hub id", "dim", "pooling", "prefixes", "remote code",
                  "matryoshka", "LoRA targets", "offline")
    for r in registry_table():
        table.add_row(r["key"], r["hub_id"] or "", str(r["dim"]), r["pooling"],
                      "yes" if r["prefixes"] else "", "yes" if r["trust_remote_code"] else "",
                      ",".join(map(str, r["matryoshka_dims"])), ",".join(r["lora"]),
                      "packaged" if r["offline"] else "hub/path")
    out.print(table)
    out.print("Baselines: tfidf, bm25. Any local model folder or hub id also works.")


@app.command("evaluate")
@friendly
def evaluate_cmd(
    model: Annotated[str, typer.Option(help="registry key, model folder, hub id, tfidf or bm25")],
    incidents: Annotated[Path, typer.Option(help="incidents file (CSV, JSON, JSONL, Parquet)")],
    out_dir: Annotated[Path, typer.Option("--out", help="new directory for this run")],
    columns: Annotated[str | None, typer.Option(
        help="column mapping: 'servicenow' or a mapping JSON file")] = None,
    labels: Annotated[str | None, typer.Option(
        help="label hierarchy for graded relevance, e.g. category,subcategory")] = None,
    links: Annotated[Path | None, typer.Option(
        help="CSV of duplicate links (two incident-number columns, optional split)")] = None,
    text_fields: Annotated[str | None, typer.Option(
        help="fields embedded as text (default short_description,description)")] = None,
    corpus: Annotated[str | None, typer.Option(help="'split' or 'all'")] = None,
    split: Annotated[str, typer.Option(help="query split")] = "test",
    encoding: Annotated[str, typer.Option(help="text encoding of the incidents file")] = "utf-8",
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for CIs")] = 1000,
    allow_label_leakage: Annotated[bool, typer.Option(
        help="allow a label column inside the embedded text (not recommended)")] = False,
    leaderboard: Annotated[bool, typer.Option(help="append a leaderboard row")] = True,
) -> None:
    """Evaluate one model with evaluate_v2; writes <out>/metrics.json and a leaderboard row."""
    from itsm_core.config import LEADERBOARD_CSV
    from itsm_core.evaluate import BenchmarkConfig, build_benchmark, evaluate_model
    from itsm_core.io import new_run_dir

    if not incidents.exists():
        raise ItsmError("incidents file not found", where=str(incidents),
                        fix="check the path (bundled data: run `itsm data build` first)")
    if links is not None and not links.exists():
        raise ItsmError("links file not found", where=str(links), fix="check the path")
    new_run_dir(out_dir)  # fail fast, before any heavy work
    cfg = BenchmarkConfig(query_split=split, corpus=corpus, n_resamples=bootstrap,
                          allow_label_leakage=allow_label_leakage)
    bench = build_benchmark(incidents, columns=columns, labels=_csv_list(labels), links=links,
                            text_fields=_csv_list(text_fields), config=cfg, encoding=encoding)
    rec = evaluate_model(model, bench, out_dir,
                         leaderboard=LEADERBOARD_CSV if leaderboard else None)
    _print_record(rec)
    out.print(f"wrote {out_dir / 'metrics.json'}")


def _print_record(rec: dict) -> None:
    from itsm_core.results import HEADLINE_METRICS

    table = Table(title=f"{rec['model']} on {rec['dataset']} ({rec['split']}, "
                  f"{rec['n_queries']} queries)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    for m in HEADLINE_METRICS:
        v, ci = rec.get(m), rec.get(f"{m}_ci") or [None, None]
        if v is None:
            continue
        ci_s = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci[0] is not None else ""
        table.add_row(m, f"{v:.3f}", ci_s)
    out.print(table)


@app.command("benchmark")
@friendly
def benchmark_cmd(
    models: Annotated[str, typer.Option(help="comma-separated model specs")] =
    "tfidf,bm25,minilm,mpnet",
    datasets: Annotated[str, typer.Option(help="comma-separated bundled data sets")] =
    "it_tickets,gitbugs_hadoop",
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples")] = 1000,
) -> None:
    """Evaluate several models on bundled data sets (benchmark built once per data set).

    Each model gets a new run directory under models/results/runs/ and a leaderboard row.
    """
    from itsm_core.config import RUNS_DIR
    from itsm_core.data import processed_path
    from itsm_core.evaluate import BenchmarkConfig, build_benchmark, evaluate_model
    from itsm_core.io import unique_run_dir

    for ds in _csv_list(datasets) or []:
        bench = build_benchmark(processed_path(ds), config=BenchmarkConfig(n_resamples=bootstrap))
        out.print(f"[bold]{ds}[/]: {len(bench.query_ids)} queries x {len(bench.corpus_ids)} "
                  f"corpus, {bench.describe()['n_test_pairs']} test pairs")
        for model in _csv_list(models) or []:
            run_dir = unique_run_dir(RUNS_DIR, f"evaluate_{ds}_{Path(model).name}")
            rec = evaluate_model(model, bench, run_dir)
            _print_record(rec)


@app.command("leaderboard")
@friendly
def leaderboard_cmd(
    dataset: Annotated[str | None, typer.Option(help="only this data set")] = None,
    markdown: Annotated[bool, typer.Option(help="print a Markdown table")] = False,
    all_runs: Annotated[bool, typer.Option("--all", help="include ablation variants")] = False,
) -> None:
    """Show the latest evaluation per model with 95% CIs."""
    from itsm_core.results import format_with_ci, latest_per_model, read_leaderboard

    board = latest_per_model(read_leaderboard(), include_ablation=all_runs)
    if dataset:
        board = board[board["dataset"] == dataset]
    if board.empty:
        raise ItsmError("the leaderboard is empty", fix="run `itsm evaluate` or `make pipeline`")
    table = format_with_ci(board)
    if markdown:
        sys.stdout.write(table.to_markdown(index=False) + "\n")
        return
    t = Table(*table.columns)
    for row in table.itertuples(index=False):
        t.add_row(*map(str, row))
    out.print(t)


@report_app.command("evaluate")
@friendly
def report_evaluate(
    models: Annotated[str | None, typer.Option(help="models to show (default: all)")] = None,
    datasets: Annotated[str, typer.Option(help="data sets to show")] =
    "it_tickets,gitbugs_hadoop",
    output: Annotated[Path | None, typer.Option(help="HTML path")] = None,
) -> None:
    """Run notebooks/04_evaluate_v2.ipynb with papermill and export reports/evaluate_v2.html."""
    from itsm_core.reports import run_report

    html = run_report("04_evaluate_v2", {"models": models or "", "datasets": datasets},
                      output=output, name="evaluate_v2")
    out.print(f"report -> {html}")


@app.command("pairs")
@friendly
def pairs_cmd(
    dataset: Annotated[str, typer.Option(help="bundled data set")] = "it_tickets",
    out_path: Annotated[Path | None, typer.Option(
        "--out", help="new pair file (.parquet); default data_new/processed/pairs/...")] = None,
    negatives: Annotated[str, typer.Option(help="tfidf, embedding, both or none")] = "tfidf",
    band: Annotated[str, typer.Option(help="TF-IDF band for hard negatives")] = "0.3,0.5",
    positives_per_anchor: Annotated[int, typer.Option(help="same-label partners")] = 2,
    hard_positives: Annotated[int, typer.Option(help="low-overlap partners per anchor")] = 1,
    phase_shares: Annotated[str, typer.Option(help="easy,medium,hard shares")] =
    "0.333,0.333,0.334",
    mining_model: Annotated[str, typer.Option(help="model for embedding mining")] = "minilm",
    seed: Annotated[int, typer.Option(help="random seed")] = 42,
) -> None:
    """Generate curriculum training pairs from the TRAINING split, validated."""
    from itsm_core.config import PROCESSED_DIR
    from itsm_core.io import timestamp
    from itsm_core.pairs import TrainPairConfig, write_pair_file
    from itsm_core.train import make_pairs

    lo, hi = (float(x) for x in (_csv_list(band) or ["0.3", "0.5"]))
    shares = tuple(float(x) for x in (_csv_list(phase_shares) or []))
    if len(shares) != 3:
        raise ItsmError("--phase-shares needs three numbers", fix="e.g. 0.33,0.33,0.34")
    cfg = TrainPairConfig(negatives=negatives, tfidf_band=(lo, hi),
                          positives_per_anchor=positives_per_anchor,
                          hard_positives_per_anchor=hard_positives, phase_shares=shares,
                          mining_model=mining_model, seed=seed)
    path = out_path or PROCESSED_DIR / "pairs" / f"{dataset}_{timestamp()}.parquet"
    if path.exists():
        raise ItsmError("pair file already exists; refusing to overwrite", where=str(path),
                        fix="pass a new --out")
    pairs, report = make_pairs(dataset, cfg)
    t = Table(title=f"pair quality ({dataset})")
    t.add_column("check")
    t.add_column("count", justify="right")
    for k, v in report.counts.items():
        t.add_row(k, str(v))
    out.print(t)
    for w in report.warnings:
        out.print(f"[yellow]warning:[/] {w}")
    if not report.ok:
        raise ItsmError("pair validation failed: " + "; ".join(report.errors))
    write_pair_file(pairs, path, {"dataset": dataset, "split": "train",
                                  "quality": report.to_dict()})
    out.print(f"wrote {len(pairs)} pairs -> {path}")


@app.command("train")
@friendly
def train_cmd(
    model: Annotated[str, typer.Option(help="registry key, model folder or hub id")] = "minilm",
    dataset: Annotated[str, typer.Option(help="bundled data set")] = "it_tickets",
    pairs: Annotated[Path | None, typer.Option(help="pair file (default: generate)")] = None,
    profile: Annotated[str, typer.Option(help="default (fast, CPU) or full")] = "default",
    mode: Annotated[str | None, typer.Option(help="lora or full")] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate")] = None,
    epochs: Annotated[float | None, typer.Option(help="epochs")] = None,
    max_steps: Annotated[int | None, typer.Option(help="stop after N steps")] = None,
    batch_size: Annotated[int | None, typer.Option(help="batch size")] = None,
    curriculum: Annotated[bool | None, typer.Option(
        "--curriculum/--no-curriculum", help="easy->hard phases [recipe: on]")] = None,
    negatives: Annotated[bool | None, typer.Option(
        "--negatives/--no-negatives", help="add one mined hard negative per pair "
        "[recipe: off, chosen on validation]")] = None,
    label_aware: Annotated[bool | None, typer.Option(
        "--label-aware/--no-label-aware", help="mask same-label in-batch negatives "
        "[recipe: on]")] = None,
    matryoshka: Annotated[bool | None, typer.Option(
        "--matryoshka/--no-matryoshka", help="MatryoshkaLoss [recipe: on]")] = None,
    name: Annotated[str | None, typer.Option(help="run name")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="run directory")] = None,
    resume: Annotated[str | None, typer.Option(help="checkpoint to resume from")] = None,
    evaluate_test: Annotated[bool, typer.Option(help="evaluate_v2 on test afterwards")] = True,
) -> None:
    """Fine-tune a model (LoRA or full; MatryoshkaLoss over MNRL), select on validation,
    evaluate on test and add its leaderboard row."""
    from itsm_core.train import config_for_profile, run_training

    overrides = {k: v for k, v in dict(
        mode=mode, learning_rate=lr, epochs=epochs, max_steps=max_steps,
        batch_size=batch_size, name=name, output_dir=str(out_dir) if out_dir else None,
        resume_from_checkpoint=resume, pairs=str(pairs) if pairs else None,
        curriculum=curriculum, use_negatives=negatives, label_aware=label_aware,
        matryoshka=matryoshka).items() if v is not None}
    cfg = config_for_profile(profile, model=model, dataset=dataset,
                             evaluate_test=evaluate_test, **overrides)
    res = run_training(cfg)
    out.print(f"run -> {res.run_dir}  (validation NDCG@10 "
              f"{res.meta.get('best_validation_ndcg@10')})")
    if res.test_record:
        _print_record(res.test_record)


@report_app.command("train")
@friendly
def report_train(
    model: Annotated[str, typer.Option(help="model to train")] = "minilm",
    dataset: Annotated[str, typer.Option(help="bundled data set")] = "it_tickets",
    profile: Annotated[str, typer.Option(help="training profile")] = "default",
    output: Annotated[Path | None, typer.Option(help="HTML path")] = None,
) -> None:
    """Run notebooks/03_train.ipynb for one model (it trains) and export
    reports/train_<model>.html with loss and validation curves."""
    from itsm_core.reports import run_report

    name = f"train_{Path(model).name}" + ("" if dataset == "it_tickets" else f"_{dataset}")
    html = run_report("03_train", {"model": model, "dataset": dataset, "profile": profile},
                      output=output, name=name)
    out.print(f"report -> {html}")


@report_app.command("augment")
@friendly
def report_augment(
    dataset: Annotated[str, typer.Option(help="bundled data set")] = "it_tickets",
    expansion_factor: Annotated[float, typer.Option(help="augmented copies per pair")] = 1.0,
    output: Annotated[Path | None, typer.Option(help="HTML path")] = None,
) -> None:
    """Run notebooks/02_augment.ipynb: class balance before / after augmentation of the
    training pairs and examples -> reports/augment[_<dataset>].html."""
    from itsm_core.reports import run_report

    name = "augment" + ("" if dataset == "it_tickets" else f"_{dataset}")
    html = run_report("02_augment", {"dataset": dataset, "expansion_factor": expansion_factor},
                      output=output, name=name)
    out.print(f"report -> {html}")


@app.command("ablation")
@friendly
def ablation_cmd(
    dataset: Annotated[str, typer.Option(help="bundled data set")] = "it_tickets",
    model: Annotated[str, typer.Option(help="model to train")] = "minilm",
    variants: Annotated[str | None, typer.Option(help="comma-separated variants")] = None,
    profile: Annotated[str, typer.Option(help="training profile")] = "default",
    max_steps: Annotated[int | None, typer.Option(help="cap steps per variant")] = None,
    max_pairs: Annotated[int | None, typer.Option(help="pair budget per variant")] = None,
) -> None:
    """Train recipe variants on the same pairs; table of validation and test NDCG@10."""
    from itsm_core.ablation import run_ablation

    table = run_ablation(dataset, model, _csv_list(variants), profile, max_steps,
                         max_pairs=max_pairs)
    t = Table(*["variant", "val ndcg@10", "test ndcg@10 [95% CI]", "diff vs recipe [CI]"])
    for _, r in table.iterrows():
        diff = (f"{r['test_diff_vs_recipe']:+.3f} [{r['test_diff_ci_low']:+.3f}, "
                f"{r['test_diff_ci_high']:+.3f}]" if "test_diff_vs_recipe" in r else "")
        t.add_row(r["variant"], f"{r['val_ndcg@10']:.3f}",
                  f"{r['test_ndcg@10']:.3f} [{r['test_ndcg@10_ci_low']:.3f}, "
                  f"{r['test_ndcg@10_ci_high']:.3f}]", diff)
    out.print(t)


@app.command("sweep")
@friendly
def sweep_cmd(
    param: Annotated[str, typer.Option(help="TrainConfig field, e.g. learning_rate")] =
    "learning_rate",
    values: Annotated[str, typer.Option(help="comma-separated values")] = "2e-4,5e-4,1e-3",
    dataset: Annotated[str, typer.Option(help="bundled data set")] = "it_tickets",
    model: Annotated[str, typer.Option(help="model to train")] = "minilm",
    profile: Annotated[str, typer.Option(help="training profile")] = "default",
    max_pairs: Annotated[int | None, typer.Option(help="pair budget per run")] = None,
    negatives: Annotated[bool | None, typer.Option(
        "--negatives/--no-negatives", help="override the profile's use of hard negatives")
    ] = None,
) -> None:
    """Choose a hyper-parameter on VALIDATION NDCG@10 (test is never evaluated)."""
    from itsm_core.ablation import run_sweep

    extra = {} if negatives is None else {"use_negatives": negatives}
    table = run_sweep(param, _csv_list(values) or [], dataset, model, profile, max_pairs,
                      **extra)
    t = Table(param, "val ndcg@10", "zero-shot val", "best step", "train s", "")
    for _, r in table.iterrows():
        t.add_row(f"{r['value']:g}", f"{r['val_ndcg@10']:.4f}", f"{r['base_val_ndcg@10']:.4f}",
                  str(r["best_step"]), f"{r['train_seconds']:.0f}", "best" if r["best"] else "")
    out.print(t)


@app.command("bench")
@friendly
def bench_cmd(
    what: Annotated[str, typer.Argument(help="train, search or encode")] = "train",
    model: Annotated[str, typer.Option(
        help="train: model to train; encode: export folder (default: newest export)")] =
    "minilm",
    dataset: Annotated[str, typer.Option(help="bundled data set")] = "it_tickets",
    steps: Annotated[int, typer.Option(help="training steps per recipe")] = 20,
    batch_size: Annotated[int, typer.Option(help="batch size")] = 32,
    index: Annotated[Path | None, typer.Option(
        help="search: also time this index (default: newest under models/indexes)")] = None,
    n: Annotated[int, typer.Option(
        help="search: synthetic corpus size; encode: number of texts")] = 0,
) -> None:
    """Print measured figures: `itsm bench train` = pairs/s of the default recipe vs plain
    sentence-transformers on the same pairs, side by side; `itsm bench search` = top-10
    latency p50/p95 per dim (synthetic 50k + the bundled index); `itsm bench encode` =
    sentences/s of torch fp32 / ONNX fp32 / ONNX INT8."""
    if what == "train":
        from itsm_core.bench import train_throughput

        res = train_throughput(model, dataset, steps=steps, batch_size=batch_size)
        t = Table("recipe", "pairs / s")
        t.add_row("plain sentence-transformers (full FT, MNRL)",
                  str(res["plain_st_pairs_per_s"]))
        t.add_row("default recipe (LoRA, Matryoshka, label-aware, curriculum)",
                  str(res["default_recipe_pairs_per_s"]))
        out.print(t)
        out.print(f"ratio default/plain = {res['ratio_default_over_plain']} "
                  f"({res['threads']} threads, batch {batch_size}, {steps} steps)")
    elif what in ("search", "encode"):
        _bench_deploy(what, model, dataset, batch_size, index, n)
    else:
        raise ItsmError(f"unknown benchmark {what!r}",
                        fix="use `itsm bench train`, `itsm bench search` or `itsm bench encode`")


# --- deployment: export / index / search (issue #6, owned by export.py, search.py) ---
index_app = typer.Typer(help="Similar-incident search indexes (build, add, info).",
                        no_args_is_help=True)
app.add_typer(index_app, name="index")


def _resolve_deploy_model(model: str | None, trained: str | None,
                          trained_name: str = "minilm-ft") -> str:
    """--model, or `latest-export`, or the newest run called --trained-name that was
    evaluated on --trained DATASET."""
    if trained:
        from itsm_core.export import trained_model

        found = trained_model(trained, trained_name)
        if not found:
            raise ItsmError(f"no model {trained_name!r} evaluated on {trained!r} on the "
                            "leaderboard", where="--trained",
                            fix=f"train it (`make train` / `itsm train --dataset {trained}`)"
                            ", choose --trained-name, or pass --model")
        return found
    if model == "latest-export":
        from itsm_core.export import latest_export

        found = latest_export()
        if found is None:
            raise ItsmError("no export under models/ yet", where="--model latest-export",
                            fix="run `make export` or `itsm export --model ...` first")
        return str(found)
    if not model:
        raise ItsmError("no model given", fix="pass --model <spec> (or --trained <dataset>)")
    return model


@app.command("export")
@friendly
def export_cmd(
    model: Annotated[str | None, typer.Option(
        help="model to export: registry key, model folder (e.g. models/<run>/model), hub id")]
    = None,
    trained: Annotated[str | None, typer.Option(
        help="export the newest --trained-name run evaluated on this data set instead")] =
    None,
    trained_name: Annotated[str, typer.Option(help="training run name for --trained")] =
    "minilm-ft",
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="new folder (default models/<timestamp>_<name>-onnx)")] = None,
    max_seq_length: Annotated[int | None, typer.Option(
        help="token limit baked into the export (default: the model's)")] = None,
    fp32_nodes: Annotated[str | None, typer.Option(
        help="comma-separated regexes of ONNX node names kept fp32 when quantizing; "
             "'none' = quantize every MatMul; default = the architecture's default")] = None,
    optimize: Annotated[bool, typer.Option(
        help="BERT: fuse the graph (onnxruntime.transformers.optimizer) before quantizing")]
    = False,
    measure: Annotated[bool, typer.Option(
        help="measure torch / ONNX fp32 / ONNX INT8 side by side")] = True,
    dataset: Annotated[str, typer.Option(help="bundled data set for the measurement")] =
    "it_tickets",
    n_texts: Annotated[int, typer.Option(help="validation texts timed per backend")] = 512,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for CIs")] = 1000,
) -> None:
    """Export a model to ONNX (fp32 + dynamic per-channel INT8) with its tokenizer and
    pooling; the folder works as --model everywhere. Reports throughput, size, cosine
    agreement and the NDCG@10 delta (validation and test) side by side."""
    from itsm_core.config import MODELS_DIR
    from itsm_core.export import export_onnx, measure_export
    from itsm_core.io import unique_run_dir

    src = _resolve_deploy_model(model, trained, trained_name)
    patterns = None if fp32_nodes is None else (
        [] if fp32_nodes.strip().lower() == "none" else _csv_list(fp32_nodes) or [])
    base = Path(src).name if Path(src).name != "model" else Path(src).parent.name.split(
        "_", 1)[-1]
    target = out_dir or unique_run_dir(MODELS_DIR, f"{base}-onnx")
    folder = export_onnx(src, target, max_seq_length=max_seq_length, fp32_nodes=patterns,
                         name=f"{base}.onnx", optimize=optimize)
    out.print(f"exported {escape(src)} -> [bold]{folder}[/]")
    if measure:
        rep = measure_export(folder, dataset=dataset, n_texts=n_texts, bootstrap=bootstrap)
        _print_export_report(rep)


def _print_export_report(rep: dict) -> None:
    t = Table(title=f"{rep['model']}: encode throughput and agreement "
              f"({rep['speed'][0]['n_texts']} validation texts, "
              f"{rep['speed'][0]['threads']} threads)")
    for col in ("backend", "sentences/s", "speed-up", "size MB", "cos mean", "cos min"):
        t.add_column(col, justify="left" if col == "backend" else "right")
    for r in rep["speed"]:
        t.add_row(r["backend"], f"{r['sentences_per_s']:.1f}", f"{r['speedup']:.2f}x",
                  str(r["size_mb"]), f"{r['cos_mean']:.4f}", f"{r['cos_min']:.4f}")
    out.print(t)
    q = Table(title="NDCG@10 by backend (paired difference to torch, 95% CI)")
    for col in ("split", "backend", "ndcg@10", "95% CI", "delta vs torch", "delta CI"):
        q.add_column(col, justify="left" if col in ("split", "backend") else "right")
    for r in rep["quality"]:
        q.add_row(r["split"], r["backend"], f"{r['ndcg@10']:.4f}",
                  f"[{r['ndcg@10_ci'][0]:.4f}, {r['ndcg@10_ci'][1]:.4f}]",
                  f"{r['delta_vs_torch']:+.4f}",
                  f"[{r['delta_ci'][0]:+.4f}, {r['delta_ci'][1]:+.4f}]")
    out.print(q)
    for k, v in rep.get("targets", {}).items():
        out.print(f"target {k}: {'[green]met[/]' if v else '[red]not met[/]'}")


@index_app.command("build")
@friendly
def index_build(
    model: Annotated[str | None, typer.Option(
        help="model spec, export folder, or 'latest-export' (newest itsm export)")] = None,
    incidents: Annotated[Path | None, typer.Option(
        help="incidents file (default: the bundled --dataset)")] = None,
    dataset: Annotated[str, typer.Option(help="bundled data set when no --incidents")] =
    "it_tickets",
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="new folder (default models/indexes/<timestamp>_<name>)")] = None,
    columns: Annotated[str | None, typer.Option(
        help="column mapping: 'servicenow' or a mapping JSON file")] = None,
    text_fields: Annotated[str | None, typer.Option(
        help="fields embedded as text (default: the data set's, else "
             "short_description,description)")] = None,
    dim: Annotated[int | None, typer.Option(help="Matryoshka dim stored (default: full)")] =
    None,
    fusion: Annotated[str, typer.Option(
        help="auto (chosen on the validation split), weighted or rrf")] = "auto",
    fusion_weight: Annotated[float | None, typer.Option(
        help="dense share of the weighted fusion (fixes it; no validation choice)")] = None,
    encoding: Annotated[str, typer.Option(help="text encoding of the incidents file")] =
    "utf-8",
) -> None:
    """Encode every incident into a new search index (embeddings + BM25 + metadata)."""
    from itsm_core.config import MODELS_DIR
    from itsm_core.data import processed_path
    from itsm_core.io import unique_run_dir
    from itsm_core.search import build_index

    spec = _resolve_deploy_model(model, None)
    path = incidents or processed_path(dataset)
    name = (incidents.stem if incidents else dataset) + (f"_{dim}d" if dim else "")
    target = out_dir or unique_run_dir(MODELS_DIR / "indexes", name)
    idx = build_index(spec, path, target, columns=columns, text_fields=_csv_list(text_fields),
                      dim=dim, fusion=fusion, fusion_weight=fusion_weight, encoding=encoding)
    _print_index_info(idx)


@index_app.command("add")
@friendly
def index_add(
    incidents: Annotated[Path, typer.Argument(help="file with the new incidents")],
    index: Annotated[Path | None, typer.Option(help="index folder (default: newest)")] = None,
    columns: Annotated[str | None, typer.Option(
        help="column mapping of the new file (default: the index's)")] = None,
    skip_existing: Annotated[bool, typer.Option(
        help="skip incident numbers already indexed instead of refusing")] = False,
    encoding: Annotated[str, typer.Option(help="text encoding of the incidents file")] =
    "utf-8",
) -> None:
    """Encode and append new incidents to an index (no rebuild; same model and dim)."""
    from itsm_core.search import SearchIndex, latest_index

    idx = SearchIndex(index or latest_index())
    n = idx.add(incidents, columns=columns, skip_existing=skip_existing, encoding=encoding)
    out.print(f"added {n} incidents -> {idx.path} ({len(idx)} in total)")


@index_app.command("info")
@friendly
def index_info(
    index: Annotated[Path | None, typer.Argument(help="index folder (default: newest)")] =
    None,
) -> None:
    """Show an index's model, dim, size, fusion and history."""
    from itsm_core.search import SearchIndex, latest_index

    _print_index_info(SearchIndex(index or latest_index()))


def _print_index_info(idx) -> None:  # noqa: ANN001 - SearchIndex
    m = idx.meta
    t = Table(title=f"index {idx.path}", show_header=False)
    t.add_column("field")
    t.add_column("value")
    build = next((h for h in m.get("history", []) if h.get("op") == "build"), {})
    for k, v in (("model", f"{m['model']['name']} ({m['model']['spec']})"),
                 ("incidents", str(len(idx))), ("dim", str(idx.dim)),
                 ("embeddings MB", f"{idx.embeddings.nbytes / 2**20:.1f}"),
                 ("text fields", ",".join(m["text"]["fields"])),
                 ("fusion", idx.fusion.describe()),
                 ("build seconds", str(build.get("build_seconds"))),
                 ("encode sentences/s", str(build.get("sentences_per_s"))),
                 ("additions", str(sum(1 for h in m.get("history", [])
                                       if h.get("op") == "add")))):
        t.add_row(k, escape(v))
    out.print(t)


@app.command("search")
@friendly
def search_cmd(
    queries: Annotated[list[str], typer.Argument(help="incident text(s) to search for")],
    k: Annotated[int, typer.Option("-k", "--top", help="hits per query")] = 5,
    index: Annotated[Path | None, typer.Option(help="index folder (default: newest under "
                                                    "models/indexes)")] = None,
    mode: Annotated[str, typer.Option(help="hybrid, dense or bm25")] = "hybrid",
    dim: Annotated[int | None, typer.Option(help="Matryoshka dim (<= the index's)")] = None,
    model: Annotated[str | None, typer.Option(
        help="model to embed the query with (must be the index's own; default: it is)")] =
    None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for machines")] = False,
) -> None:
    """Find the incidents most similar to a text: number, score, description, category,
    resolution notes (whatever the index holds)."""
    import json

    from itsm_core.search import SearchIndex, latest_index, results_records, summaries

    idx = SearchIndex(index or latest_index())
    results = idx.search(queries, k=k, mode=mode, dim=dim, model=model)
    if as_json:
        payload = {"index": str(idx.path), "model": idx.model_name, "mode": mode,
                   "dim": dim or idx.dim, "results": results_records(results, queries)}
        sys.stdout.write(json.dumps(payload, ensure_ascii=False, indent=2) + "\n")
        return
    for q, res in zip(queries, results):
        t = Table(title=f"{escape(q)}  [dim]({mode}, {dim or idx.dim}-d, "
                  f"{escape(idx.model_name)})[/]")
        cols = ["number", "score", "short description"] + [c for c in (
            "category", "subcategory", "topic_group", "resolution_notes") if c in res.columns]
        for c in cols:
            t.add_column(c, justify="right" if c == "score" else "left", overflow="fold",
                         max_width=60 if c in ("short description", "resolution_notes")
                         else None)
        res = res.assign(**{"short description": summaries(res)})
        for row in res.to_dict("records"):
            t.add_row(*[f"{row[c]:.3f}" if c == "score" else escape(_short(row.get(c)))
                        for c in cols])
        out.print(t)


def _short(v, n: int = 160) -> str:  # noqa: ANN001
    import pandas as pd

    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return ""
    s = str(v)
    return s if len(s) <= n else s[: n - 1] + "…"


@report_app.command("export")
@friendly
def report_export(
    export_dir: Annotated[Path | None, typer.Option(help="export folder (default: newest)")] =
    None,
    index_dir: Annotated[Path | None, typer.Option(help="index folder (default: newest)")] =
    None,
    dataset: Annotated[str, typer.Option(help="bundled data set")] = "it_tickets",
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for CIs")] = 1000,
    output: Annotated[Path | None, typer.Option(help="HTML path")] = None,
) -> None:
    """Run notebooks/08_export_search.ipynb and export reports/export_search.html: export
    table, per-dim size/latency, hybrid vs BM25 vs dense (test, CIs), example queries."""
    from papermill.exceptions import PapermillExecutionError

    from itsm_core.reports import run_report

    try:
        html = run_report("08_export_search", {
            # absolute: the notebook runs with notebooks/ as its working directory
            "export_dir": str(export_dir.resolve()) if export_dir else "",
            "index_dir": str(index_dir.resolve()) if index_dir else "",
            "dataset": dataset, "bootstrap": bootstrap}, output=output, name="export_search")
    except PapermillExecutionError as exc:
        if exc.ename == "ItsmError":
            raise ItsmError(f"the export report notebook failed: {exc.evalue}",
                            where="reports/executed/export_search.ipynb") from None
        raise
    out.print(f"report -> {html}")


def _bench_deploy(what: str, model: str, dataset: str, batch_size: int,
                  index: Path | None, n: int) -> None:
    from itsm_core.bench import encode_throughput, search_latency

    if what == "encode":
        folder = _resolve_deploy_model("latest-export" if model == "minilm" else model, None)
        res = encode_throughput(folder, dataset, n=n or 512, batch_size=batch_size)
        t = Table("backend", "sentences/s", "speed-up", "size MB", "cos mean", "cos min",
                  title=f"encode throughput ({escape(folder)})")
        for r in res["rows"]:
            t.add_row(r["backend"], f"{r['sentences_per_s']:.1f}", f"{r['speedup']:.2f}x",
                      str(r["size_mb"]), f"{r['cos_mean']:.4f}", f"{r['cos_min']:.4f}")
        out.print(t)
        return
    from itsm_core.search import latest_index

    if index is None:
        try:
            index = latest_index()
        except ItsmError:
            index = None
    res = search_latency(n=n or 50_000, index=index)
    t = Table("corpus", "search", "dim", "n", "index MB", "p50 ms", "p95 ms",
              title=f"top-{res['k']} latency, one query at a time ({res['blas_threads']} "
              f"BLAS threads)")
    for r in res["rows"]:
        t.add_row(escape(r["corpus"]), r["what"], str(r["dim"]), str(r["n"]),
                  str(r["index_mb"] or ""), f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}")
    out.print(t)
    if "encode_query" in res:
        e = res["encode_query"]
        out.print(f"query encoding ({escape(res['model'])}): p50 {e['p50_ms']:.1f} ms, "
                  f"p95 {e['p95_ms']:.1f} ms; index build {res['index_build_seconds']} s "
                  f"({res['index_encode_sentences_per_s']} sentences/s); BM25 build "
                  f"{res['bm25_build_seconds']} s; max RSS {res['max_rss_mb']} MB")
# --- end deployment ---


# --- diagnose (owned by diagnose.py) ---
def _diagnose_models(models: str, dataset: str, with_trained: bool) -> list[str]:
    from itsm_core.diagnose import latest_trained_model

    names = _csv_list(models) or []
    if with_trained:
        trained = latest_trained_model(dataset)
        if trained and trained not in names:
            names.append(trained)
    return names


@app.command("diagnose")
@friendly
def diagnose_cmd(
    models: Annotated[str, typer.Option(help="comma-separated model specs")] =
    "tfidf,bm25,minilm,mpnet",
    dataset: Annotated[str, typer.Option(help="bundled data set")] = "it_tickets",
    incidents: Annotated[Path | None, typer.Option(
        help="incidents file instead of the bundled data set")] = None,
    n_pairs: Annotated[int, typer.Option(help="pairs per kind (hard positives / "
                                              "negatives)")] = 300,
    min_pairs: Annotated[int, typer.Option(
        help="fail when fewer pairs of either kind qualify")] = 30,
    seed: Annotated[int, typer.Option(help="random seed")] = 42,
    lexical: Annotated[str, typer.Option(help="lexical score of the bands: tfidf or bm25")] =
    "tfidf",
    split: Annotated[str, typer.Option(help="held-out split of the diagnostic")] = "test",
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for CIs")] = 1000,
    with_trained: Annotated[bool, typer.Option(
        help="add the newest fine-tuned model of the data set (from the leaderboard)")] =
    False,
    leaderboard: Annotated[bool, typer.Option(help="append leaderboard rows")] = True,
) -> None:
    """Adversarial diagnostic: hard positives (relevant, few shared words) vs hard negatives
    (other category, many shared words) from held-out incidents; threshold from validation;
    verdict pass iff ROC-AUC >= 0.70 and F1 >= 0.70; shortcut and boilerplate probes."""
    from itsm_core.config import LEADERBOARD_CSV
    from itsm_core.data import processed_path
    from itsm_core.diagnose import DiagnosticConfig, run_diagnostic

    path = incidents if incidents is not None else processed_path(dataset)
    ds = dataset if incidents is None else path.stem.split(".")[0]
    cfg = DiagnosticConfig(split=split, n_pairs=n_pairs, min_pairs=min_pairs, seed=seed,
                           lexical=lexical, n_resamples=bootstrap)
    summary = run_diagnostic(_diagnose_models(models, ds, with_trained), path, cfg,
                             leaderboard=LEADERBOARD_CSV if leaderboard else None)
    _print_diagnostic(summary)


def _print_diagnostic(summary) -> None:  # noqa: ANN001 - pandas DataFrame
    from itsm_core.diagnose import verdict_table

    info = summary.attrs.get("diagnostic", {})
    test = info.get("test_set", {})
    bands, counts = test.get("bands", {}), test.get("counts", {})
    if bands:
        out.print(f"[bold]{info.get('dataset')}[/] {test.get('split')} split: "
                  f"{counts.get('hard_positive')} hard positives ({bands.get('lexical')} <= "
                  f"{bands['hard_positive'][1]:.4f}) + {counts.get('hard_negative')} hard "
                  f"negatives (>= {bands['hard_negative'][0]:.4f}); threshold from "
                  f"{info.get('threshold_split')}")
    vt = verdict_table(summary)
    k = (info.get("config") or {}).get("k", 10)
    table = Table(title="adversarial diagnostic (pass: ROC-AUC >= 0.70 and F1 >= 0.70)")
    for col in (*vt.columns, "shortcut flips", "shortcut rel. Δ", f"boilerplate overlap@{k}"):
        table.add_column(str(col), justify="left" if col in ("model", "kind") else "right")
    for (_, r), (_, s) in zip(vt.iterrows(), summary.iterrows()):
        colour = "green" if r["verdict"] == "PASS" else "red"
        table.add_row(*[escape(str(v)) for v in r.drop("verdict")],
                      f"[{colour}]{r['verdict']}[/]",
                      _f3(s.get("shortcut_flip_rate")), _f3(s.get("shortcut_rel_delta")),
                      _f3(s.get(f"boilerplate_overlap@{k}")))
    out.print(table)
    for r in summary.itertuples():
        out.print(f"{r.model} -> {r.run_dir}")


def _f3(v) -> str:  # noqa: ANN001
    try:
        return "–" if v is None or v != v else f"{float(v):.3f}"
    except (TypeError, ValueError):
        return "–"


@report_app.command("diagnose")
@friendly
def report_diagnose(
    models: Annotated[str, typer.Option(help="comma-separated model specs")] =
    "tfidf,bm25,minilm,mpnet",
    dataset: Annotated[str, typer.Option(help="bundled data set")] = "it_tickets",
    with_trained: Annotated[bool, typer.Option(
        help="add the newest fine-tuned model of the data set (from the leaderboard)")] =
    True,
    n_pairs: Annotated[int, typer.Option(help="pairs per kind")] = 300,
    min_pairs: Annotated[int, typer.Option(help="fail below this many pairs per kind")] = 30,
    seed: Annotated[int, typer.Option(help="random seed")] = 42,
    output: Annotated[Path | None, typer.Option(help="HTML path")] = None,
) -> None:
    """Run notebooks/05_adversarial_diagnostic.ipynb with papermill and export
    reports/adversarial_diagnostic.html (fails when the adversarial set cannot be built)."""
    from papermill.exceptions import PapermillExecutionError

    from itsm_core.reports import run_report

    names = _diagnose_models(models, dataset, False)
    extra = _diagnose_models("", dataset, with_trained)
    try:
        html = run_report("05_adversarial_diagnostic", {
            "models": ",".join(names), "dataset": dataset, "extra_models": ",".join(extra),
            "n_pairs": n_pairs, "min_pairs": min_pairs, "seed": seed},
            output=output, name="adversarial_diagnostic")
    except PapermillExecutionError as exc:
        if exc.ename == "ItsmError":
            raise ItsmError(f"the adversarial diagnostic notebook failed: {exc.evalue}",
                            where="reports/executed/adversarial_diagnostic.ipynb") from None
        raise
    out.print(f"report -> {html}")
# --- end diagnose ---


# --- augment (owned by augment.py) ---
@app.command("augment")
@friendly
def augment_cmd(
    pairs: Annotated[Path, typer.Option(help="training pair file (Parquet)")],
    out_path: Annotated[Path, typer.Option("--out", help="new pair file to write")],
    expansion_factor: Annotated[float, typer.Option(
        help="augmented copies per pair on average (0.5: half the pairs get one)")] = 1.0,
    methods: Annotated[str, typer.Option(
        help="comma-separated methods: deletion,swap,duplication")] =
    "deletion,swap,duplication",
    side: Annotated[str, typer.Option(help="text augmented: anchor, positive or both")] =
    "anchor",
    protect: Annotated[str | None, typer.Option(
        help="comma-separated extra terms never changed (case-insensitive words)")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 42,
) -> None:
    """Add augmented copies of TRAINING pairs (deletion, swap, duplication); never val/test."""
    from itsm_core.augment import AugmentConfig, augment_pairs, balance_report
    from itsm_core.pairs import read_pair_file, write_pair_file

    if out_path.exists():
        raise ItsmError("output file already exists; refusing to overwrite it",
                        where=str(out_path), fix="pass a new --out path")
    if not pairs.exists():
        raise ItsmError("pair file not found", where=str(pairs), fix="check the --pairs path")
    cfg = AugmentConfig(expansion_factor=expansion_factor, methods=tuple(_csv_list(methods)
                        or ()), augment_side=side, seed=seed,
                        protected_terms=tuple(_csv_list(protect) or ()))
    before = read_pair_file(pairs)
    after = augment_pairs(before, cfg)
    rep = balance_report(before, after)
    table = Table(title="class balance before / after augmentation")
    for col in ("label", "n before", "share before", "n after", "share after"):
        table.add_column(col, justify="right")
    for r in rep.itertuples(index=False):
        table.add_row(str(r.label), str(r.n_before), f"{r.share_before:.3f}", str(r.n_after),
                      f"{r.share_after:.3f}")
    out.print(table)
    write_pair_file(after, out_path, after.attrs.get("meta", {}))
    stats = after.attrs["meta"]["augmentation"]
    out.print(f"added {stats['n_added']} augmented rows to {stats['n_original']} pairs "
              f"({stats['n_dropped_identical']} identical copies dropped) -> {out_path}")
# --- end augment ---


# --- pretrain / ensemble / distill (owned by pretrain.py, ensemble.py, distill.py) ---
def _max_texts_help(default: str) -> str:
    return f"training-split texts to use (0 = all; default: the profile's, {default})"


def _abs_if_path(spec: str) -> str:
    """Notebooks run in notebooks/: hand them absolute paths for local folders."""
    return str(Path(spec).resolve()) if Path(spec).exists() else spec


def _print_frame(df, title: str) -> None:  # noqa: ANN001 - pandas DataFrame
    t = Table(*[str(c) for c in df.columns], title=title)
    for _, r in df.iterrows():
        t.add_row(*[escape(str(v)) for v in r.to_numpy()])
    out.print(t)


@app.command("pretrain")
@friendly
def pretrain_cmd(
    model: Annotated[str, typer.Option(help="registry key or model folder")] = "minilm",
    dataset: Annotated[str, typer.Option(help="bundled data set")] = "it_tickets",
    method: Annotated[str, typer.Option(help="simcse or tsdae")] = "simcse",
    profile: Annotated[str, typer.Option(help="default (CPU, ~4k texts), full, smoke")] =
    "default",
    max_texts: Annotated[int | None, typer.Option(help=_max_texts_help("4000"))] = None,
    max_seq_length: Annotated[int | None, typer.Option(help="token limit")] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate")] = None,
    epochs: Annotated[float | None, typer.Option(help="epochs")] = None,
    max_steps: Annotated[int | None, typer.Option(help="stop after N steps")] = None,
    batch_size: Annotated[int | None, typer.Option(help="batch size")] = None,
    finetune: Annotated[bool, typer.Option(
        help="then run the supervised fine-tune (itsm train) from the adapted model")] = True,
    train_profile: Annotated[str, typer.Option(help="profile of that fine-tune")] = "default",
    name: Annotated[str | None, typer.Option(help="run name")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="new run directory")] = None,
    evaluate_test: Annotated[bool, typer.Option(help="evaluate_v2 on test afterwards")] = True,
) -> None:
    """Unsupervised domain adaptation (SimCSE / TSDAE) on TRAINING-split texts, selected on
    validation; then base -> +adaptation -> +fine-tune vs fine-tune alone, with CIs."""
    from itsm_core.pretrain import format_stage_table, pt_summary, run_from_params

    res = run_from_params(
        model=model, dataset=dataset, method=method, profile=profile,
        train_profile=train_profile, max_texts=-1 if max_texts is None else max_texts,
        finetune=finetune, max_seq_length=max_seq_length, learning_rate=lr, epochs=epochs,
        max_steps=max_steps, batch_size=batch_size, name=name,
        output_dir=str(out_dir) if out_dir else None, evaluate_test=evaluate_test)
    meta = res.pretrain.meta
    before = meta["base_validation"].get("validation_ndcg@10")
    out.print(f"adapted model -> {res.pretrain.model_dir}  ({pt_summary(meta)}; validation "
              f"NDCG@10 {before} -> {meta['best_validation_ndcg@10']})")
    if res.finetune is not None:
        out.print(f"fine-tuned from it -> {res.finetune.run_dir}")
    if not res.table.empty:
        _print_frame(format_stage_table(res.table).drop(columns=["dataset", "note"]),
                     f"stages on {dataset} (test; value [95% CI], paired differences)")
        out.print(f"stage table -> {res.table_path}")


@app.command("stages")
@friendly
def stages_cmd(
    pretrain_run: Annotated[Path, typer.Option(help="run directory of `itsm pretrain`")],
    finetune_run: Annotated[Path | None, typer.Option(
        help="run directory of the fine-tune that started from it")] = None,
    alone_eval: Annotated[Path | None, typer.Option(
        help="evaluation dir of the plain fine-tune (default: newest with the same config)")]
    = None,
) -> None:
    """Rebuild the stage table of finished runs (no training), e.g. once the plain
    fine-tune with the same config exists; writes models/results/stages/."""
    from itsm_core.pretrain import (
        format_stage_table,
        load_pretrain_meta,
        save_stage_table,
        stages_from_runs,
    )

    table = stages_from_runs(pretrain_run, finetune_run, alone_eval=alone_eval)
    dataset = load_pretrain_meta(pretrain_run)["pretrain_config"]["dataset"]
    _print_frame(format_stage_table(table).drop(columns=["dataset", "note"]),
                 f"stages on {dataset} (test; value [95% CI], paired differences)")
    out.print(f"stage table -> {save_stage_table(table, dataset)}")


@report_app.command("pretrain")
@friendly
def report_pretrain(
    model: Annotated[str, typer.Option(help="model to adapt")] = "minilm",
    dataset: Annotated[str, typer.Option(help="bundled data set")] = "it_tickets",
    method: Annotated[str, typer.Option(help="simcse or tsdae")] = "simcse",
    profile: Annotated[str, typer.Option(help="pre-training profile")] = "default",
    train_profile: Annotated[str, typer.Option(help="fine-tune profile")] = "default",
    max_texts: Annotated[int, typer.Option(help="-1 = the profile's, 0 = all")] = -1,
    output: Annotated[Path | None, typer.Option(help="HTML path")] = None,
) -> None:
    """Run notebooks/06_pretrain.ipynb (it trains) -> reports/pretrain_<dataset>.html."""
    from itsm_core.reports import run_report

    html = run_report("06_pretrain", {
        "model": _abs_if_path(model), "dataset": dataset, "method": method, "profile": profile,
        "train_profile": train_profile, "max_texts": max_texts},
        output=output, name=f"pretrain_{dataset}")
    out.print(f"report -> {html}")


@app.command("ensemble")
@friendly
def ensemble_cmd(
    members: Annotated[str, typer.Option(help="comma-separated model specs (keys, folders)")],
    out_dir: Annotated[Path, typer.Option("--out", help="new folder for the ensemble")],
    name: Annotated[str | None, typer.Option(help="model name (default: folder name)")] =
    None,
    weights: Annotated[str | None, typer.Option(help="comma-separated weights")] = None,
    method: Annotated[str, typer.Option(help="concat (embeddings) or zmean (scores)")] =
    "concat",
    trained_on: Annotated[str | None, typer.Option(
        help="members are model NAMES (e.g. minilm-ft): use the newest trained run of each "
        "on this data set")] = None,
) -> None:
    """Define an ensemble; evaluate it like any model: itsm evaluate --model <folder>."""
    from itsm_core.ensemble import create_ensemble, trained_model_dirs

    try:
        w = [float(x) for x in _csv_list(weights) or []]
    except ValueError:
        raise ItsmError("weights must be numbers", where="--weights",
                        fix="e.g. --weights 1,1,0.5") from None
    names = _csv_list(members) or []
    if trained_on:
        names = trained_model_dirs(names, trained_on)
    folder = create_ensemble(names, out_dir, name=name, weights=w, method=method)
    out.print(f"ensemble -> {folder}  (use it as --model / --teacher)")


@app.command("distill")
@friendly
def distill_cmd(
    teacher: Annotated[str, typer.Option(help="teacher model spec (e.g. an ensemble folder)")],
    student: Annotated[str, typer.Option(help="student model (registry key or folder)")] =
    "minilm",
    dataset: Annotated[str, typer.Option(help="bundled data set")] = "it_tickets",
    loss: Annotated[str, typer.Option(help="mse (projection) or margin-mse")] = "mse",
    profile: Annotated[str, typer.Option(help="default (CPU, ~3k texts), full, smoke")] =
    "default",
    max_texts: Annotated[int | None, typer.Option(help=_max_texts_help("3000"))] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate")] = None,
    epochs: Annotated[float | None, typer.Option(help="epochs")] = None,
    max_steps: Annotated[int | None, typer.Option(help="stop after N steps")] = None,
    batch_size: Annotated[int | None, typer.Option(help="batch size")] = None,
    name: Annotated[str | None, typer.Option(help="run name")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="new run directory")] = None,
    compare: Annotated[bool, typer.Option(
        help="compare student / teacher / student alone (quality, size, speed)")] = True,
) -> None:
    """Distil a teacher into a small student on TRAINING-split texts; select on validation,
    evaluate student (and teacher) on test, add leaderboard rows."""
    from itsm_core.distill import format_comparison, run_from_params

    res, table = run_from_params(
        teacher=teacher, student=student, dataset=dataset, loss=loss, profile=profile,
        max_texts=-1 if max_texts is None else max_texts, compare=compare,
        learning_rate=lr, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
        name=name, output_dir=str(out_dir) if out_dir else None)
    out.print(f"student -> {res.model_dir}  (validation NDCG@10 "
              f"{res.meta['base_validation'].get('validation_ndcg@10')} -> "
              f"{res.meta['best_validation_ndcg@10']})")
    if not table.empty:
        _print_frame(format_comparison(table), f"distillation on {dataset} (test)")
        out.print(f"comparison -> {res.run_dir / 'comparison.csv'}")


@report_app.command("distill")
@friendly
def report_distill(
    teacher: Annotated[str, typer.Option(help="teacher model spec")],
    student: Annotated[str, typer.Option(help="student model")] = "minilm",
    dataset: Annotated[str, typer.Option(help="bundled data set")] = "it_tickets",
    loss: Annotated[str, typer.Option(help="mse or margin-mse")] = "mse",
    profile: Annotated[str, typer.Option(help="distillation profile")] = "default",
    max_texts: Annotated[int, typer.Option(help="-1 = the profile's, 0 = all")] = -1,
    output: Annotated[Path | None, typer.Option(help="HTML path")] = None,
) -> None:
    """Run notebooks/07_distill.ipynb (it trains) -> reports/distill_<dataset>.html."""
    from itsm_core.reports import run_report

    html = run_report("07_distill", {
        "teacher": _abs_if_path(teacher), "student": _abs_if_path(student),
        "dataset": dataset, "loss": loss, "profile": profile, "max_texts": max_texts},
        output=output, name=f"distill_{dataset}")
    out.print(f"report -> {html}")
# --- end pretrain / ensemble / distill ---


if __name__ == "__main__":  # pragma: no cover
    app()


@app.command("readme")
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
    from itsm_core.readme_tables import README, check_readme, refresh_readme

    target = readme or README
    if check:
        stale = check_readme(target)
        if stale:
            raise ItsmError(f"README tables out of date: {', '.join(stale)}", where=str(target),
                            fix="run `itsm readme` (after `make pipeline`) and commit "
                                "README.md with reports/tables/")
        out.print(f"README tables match reports/tables/ ({target})")
        return
    written = refresh_readme(target, render=render, names=_csv_list(tables))
    for name, path in written.items():
        out.print(f"{name:12s} -> {path}")
    out.print(f"README tables rewritten -> {target}")


timing_app = typer.Typer(help="Per-stage wall time of `make pipeline`.", no_args_is_help=True)
app.add_typer(timing_app, name="timing")


@timing_app.command("reset")
@friendly
def timing_reset() -> None:
    """Start a new pipeline timing record."""
    from itsm_core.timing import reset

    reset()


@timing_app.command("run", context_settings={"allow_extra_args": True,
                                             "ignore_unknown_options": True})
@friendly
def timing_run(
    ctx: typer.Context,
    stage: Annotated[str, typer.Option(help="stage name in the timing table")],
) -> None:
    """Run `-- COMMAND…` as one timed stage (exit code passed through)."""
    from itsm_core.timing import run_stage

    rc = run_stage(stage, ctx.args)
    if rc:
        raise typer.Exit(code=rc)


@timing_app.command("show")
@friendly
def timing_show() -> None:
    """Finish the record: print the stage table, write reports/pipeline_timing.json."""
    from itsm_core.timing import TIMING_JSON, finish, timing_table

    table = timing_table(finish())
    t = Table(*table.columns, title="make pipeline: wall time per stage")
    for row in table.itertuples(index=False):
        t.add_row(*map(str, row))
    out.print(t)
    out.print(f"timing -> {TIMING_JSON}")
