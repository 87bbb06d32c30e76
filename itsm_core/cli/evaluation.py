"""``itsm models | evaluate | benchmark | leaderboard | diagnose``: measuring models."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from itsm_core.cli.common import csv_list, f3, friendly, out, print_record, print_rows


@friendly
def cache_cmd(
    clear: Annotated[bool, typer.Option(help="delete every cached embedding")] = False,
) -> None:
    """The on-disk embedding cache: where it is, its size and bound, one row per model and
    backend (ITSM_EMBED_CACHE=off disables it; ITSM_EMBED_CACHE_MB bounds it)."""
    from itsm_core.encoders.cache import open_cache

    cache = open_cache()
    if cache is None:
        out.print("the embedding cache is off (ITSM_EMBED_CACHE=off)")
        return
    if clear:
        cache.clear()
    st = cache.stats()
    print_rows(("model", "backend", "vectors", "MB"),
               ((escape(k["source"]), k["backend"], f"{k['n']:,}", f"{k['bytes'] / 2**20:.1f}")
                for k in st["keys"]),
               title=f"embedding cache {escape(st['file'])}: {st['bytes'] / 2**20:.1f} of "
               f"{st['max_bytes'] / 2**20:.0f} MB")


def models_cmd() -> None:
    """List the model registry (keys usable as --model)."""
    from itsm_core.encoders.registry import registry_table

    rows = [(r["key"], r["hub_id"] or "", str(r["dim"]), r["pooling"],
             "yes" if r["prefixes"] else "", "yes" if r["trust_remote_code"] else "",
             ",".join(map(str, r["matryoshka_dims"])), ",".join(r["lora"]),
             "packaged" if r["offline"] else "hub/path") for r in registry_table()]
    print_rows(("key", "hub id", "dim", "pooling", "prefixes", "remote code", "matryoshka",
                "LoRA targets", "offline"), rows)
    out.print("Baselines: tfidf, bm25. Any local model folder or hub id also works.")


@friendly
def evaluate_cmd(
    model: Annotated[str, typer.Option(
        help="registry key, model folder, hub id, tfidf or bm25, any composite spec "
        "(hybrid:…, rerank:…, ensemble:…); with --dataset also a trained model's name "
        "(minilm-ft, hybrid:minilm-ft: its newest run on that data set)")],
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="new directory for this run (default: a new folder under "
        "models/results/runs)")] = None,
    incidents: Annotated[Path | None, typer.Option(
        help="incidents file (CSV, JSON, JSONL, Parquet)")] = None,
    dataset: Annotated[str | None, typer.Option(
        help="a bundled or added data set instead of --incidents (its test split)")] = None,
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
    from itsm_core.evaluation.benchmark import BenchmarkConfig, evaluate_file

    cfg = BenchmarkConfig(query_split=split, corpus=corpus, n_resamples=bootstrap,
                          allow_label_leakage=allow_label_leakage)
    rec = evaluate_file(model, incidents, out_dir, dataset=dataset, columns=columns,
                        labels=csv_list(labels),
                        links=links, text_fields=csv_list(text_fields), config=cfg,
                        encoding=encoding, leaderboard=leaderboard)
    print_record(rec)
    out.print(f"wrote {Path(rec.get('run_dir') or out_dir) / 'metrics.json'}")


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
    from itsm_core.evaluation.benchmark import run_benchmark

    def announce(ds, bench) -> None:  # noqa: ANN001 - progress line per data set
        out.print(f"[bold]{ds}[/]: {len(bench.query_ids)} queries x {len(bench.corpus_ids)} "
                  f"corpus, {bench.describe()['n_test_pairs']} test pairs")

    run_benchmark(csv_list(models) or [], csv_list(datasets) or [], bootstrap=bootstrap,
                  on_benchmark=announce, on_record=print_record)


@friendly
def leaderboard_cmd(
    dataset: Annotated[str | None, typer.Option(help="only this data set")] = None,
    markdown: Annotated[bool, typer.Option(help="print a Markdown table")] = False,
    all_runs: Annotated[bool, typer.Option("--all", help="include ablation variants")] = False,
    task: Annotated[str, typer.Option(
        help="evaluate, or unseen (fine-tunes on the data set they did not train on)")] =
    "evaluate",
    tiers: Annotated[bool, typer.Option(
        help="the seed's success tiers per model (test pairs + adversarial diagnostic)")] =
    False,
) -> None:
    """Show the latest evaluation per model with 95% CIs (or, --tiers, the seed's tiers)."""
    from itsm_core.reports.views import seed_tiers
    from itsm_core.runs.store import leaderboard_view

    table = (seed_tiers(dataset=dataset) if tiers
             else leaderboard_view(dataset, include_ablation=all_runs, task=task))
    if markdown:
        sys.stdout.write(table.to_markdown(index=False) + "\n")
        return
    print_rows(table.columns, table.itertuples(index=False))


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
    from itsm_core.evaluation.diagnostic import DiagnosticConfig, diagnose_dataset

    cfg = DiagnosticConfig(split=split, n_pairs=n_pairs, min_pairs=min_pairs, seed=seed,
                           lexical=lexical, n_resamples=bootstrap)
    summary = diagnose_dataset(csv_list(models) or [], dataset, incidents, cfg,
                               with_trained=with_trained, leaderboard=leaderboard)
    _print_diagnostic(summary)


def _print_diagnostic(summary) -> None:  # noqa: ANN001 - pandas DataFrame
    from itsm_core.evaluation.diagnostic import verdict_table

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
                      f3(s.get("shortcut_flip_rate")), f3(s.get("shortcut_rel_delta")),
                      f3(s.get(f"boilerplate_overlap@{k}")))
    out.print(table)
    for r in summary.itertuples():
        out.print(f"{r.model} -> {r.run_dir}")
