"""``itsm ablation | sweep | bench | timing``: experiments and printed benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from itsm_core.cli.common import csv_list, floats, friendly, out, print_rows
from itsm_core.core.errors import ItsmError


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
    from itsm_core.experiments.ablation import run_ablation

    table = run_ablation(dataset, model, csv_list(variants), profile, max_steps,
                         max_pairs=max_pairs)
    rows = []
    for _, r in table.iterrows():
        diff = (f"{r['test_diff_vs_recipe']:+.3f} [{r['test_diff_ci_low']:+.3f}, "
                f"{r['test_diff_ci_high']:+.3f}]" if "test_diff_vs_recipe" in r else "")
        rows.append((r["variant"], f"{r['val_ndcg@10']:.3f}",
                     f"{r['test_ndcg@10']:.3f} [{r['test_ndcg@10_ci_low']:.3f}, "
                     f"{r['test_ndcg@10_ci_high']:.3f}]", diff))
    print_rows(("variant", "val ndcg@10", "test ndcg@10 [95% CI]", "diff vs recipe [CI]"), rows)


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
    from itsm_core.experiments.ablation import run_sweep

    extra = {} if negatives is None else {"use_negatives": negatives}
    table = run_sweep(param, csv_list(values) or [], dataset, model, profile, max_pairs,
                      **extra)
    print_rows((param, "val ndcg@10", "zero-shot val", "best step", "train s", ""),
               ((f"{r['value']:g}", f"{r['val_ndcg@10']:.4f}", f"{r['base_val_ndcg@10']:.4f}",
                 r["best_step"], f"{r['train_seconds']:.0f}", "best" if r["best"] else "")
                for _, r in table.iterrows()))


@friendly
def bench_cmd(
    what: Annotated[str, typer.Argument(
        help="train, search, encode, serve, store or rerank")] = "train",
    model: Annotated[str, typer.Option(
        help="train: model to train; encode: export folder (default: newest export) or a "
        "model spec to export first")] =
    "minilm",
    dataset: Annotated[str, typer.Option(help="bundled data set")] = "it_tickets",
    steps: Annotated[int, typer.Option(help="training steps per recipe")] = 20,
    batch_size: Annotated[int, typer.Option(help="batch size")] = 32,
    index: Annotated[Path | None, typer.Option(
        help="search: also time this index (default: newest under models/indexes)")] = None,
    n: Annotated[int, typer.Option(
        help="search: synthetic corpus size; encode: number of texts")] = 0,
    store: Annotated[str | None, typer.Option(
        help="store: a PostgreSQL + pgvector URL (default: a throw-away local server)")] =
    None,
    sizes: Annotated[str, typer.Option(
        help="store: synthetic corpus sizes")] = "50000,1000000",
    reranker: Annotated[str | None, typer.Option(
        help="rerank: the cross-encoder folder (`itsm rerank` model/) or 'latest'")] = None,
    onnx: Annotated[str | None, typer.Option(
        help="rerank: its INT8 export (`itsm export --reranker`; 'latest' = the newest "
        "export of that run), timed beside torch")] = None,
    retriever: Annotated[str, typer.Option(help="rerank: the first stage")] = "minilm",
) -> None:
    """Print measured figures: `itsm bench train` = pairs/s of the default recipe vs plain
    sentence-transformers on the same pairs, side by side; `itsm bench search` = top-10
    latency p50/p95 per dim (synthetic 50k + the bundled index); `itsm bench encode` =
    sentences/s of torch fp32 / ONNX fp32 / ONNX INT8; `itsm bench serve` = requests/s and
    p50/p95 of POST /similar (1 and 8 clients) against the in-process search; `itsm bench
    store` = numpy exact vs pgvector HNSW (build, latency, recall, size, with a filter), the
    bundled index's NDCG@10 from both stores, Ray Data vs in-process embedding; `itsm bench
    rerank` = the latency a cross-encoder adds per query at k = 10, 30, 100 (torch and INT8)."""
    if what == "train":
        _bench_train(model, dataset, steps, batch_size)
    elif what == "encode":
        _bench_encode(model, dataset, n or 512, batch_size)
    elif what == "search":
        _bench_search(n or 50_000, index)
    elif what == "serve":
        _bench_serve(index, n or 200)
    elif what == "store":
        _bench_store(store, [int(x) for x in floats(sizes, "--sizes", "50000,1000000")],
                     index)
    elif what == "rerank":
        _bench_rerank(reranker, onnx, retriever, dataset, n or 20)
    else:
        raise ItsmError(f"unknown benchmark {what!r}", fix="use `itsm bench train`, "
                        "`itsm bench search`, `itsm bench encode`, `itsm bench serve`, "
                        "`itsm bench store` or `itsm bench rerank`")


def _bench_train(model: str, dataset: str, steps: int, batch_size: int) -> None:
    from itsm_core.experiments.throughput import train_throughput

    res = train_throughput(model, dataset, steps=steps, batch_size=batch_size)
    print_rows(("recipe", "pairs / s"), [
        ("plain sentence-transformers (full FT, MNRL)", res["plain_st_pairs_per_s"]),
        ("default recipe (LoRA, Matryoshka, label-aware, curriculum)",
         res["default_recipe_pairs_per_s"])])
    out.print(f"ratio default/plain = {res['ratio_default_over_plain']} "
              f"({res['threads']} threads, batch {batch_size}, {steps} steps)")


def _bench_encode(model: str, dataset: str, n: int, batch_size: int) -> None:
    from itsm_core.serving.export import resolve_model
    from itsm_core.serving.latency import encode_throughput

    folder = resolve_model("latest-export" if model == "minilm" else model)
    res = encode_throughput(folder, dataset, n=n, batch_size=batch_size)
    q = res["quality_benchmark"]
    print_rows(("backend", "sentences/s", "speed-up", "size MB", "cos mean", "cos min",
                "NDCG@10", "Δ NDCG@10 [95% CI]"),
               ((r["backend"], f"{r['sentences_per_s']:.1f}", f"{r['speedup']:.2f}x",
                 r["size_mb"], f"{r['cos_mean']:.4f}", f"{r['cos_min']:.4f}",
                 f"{r['ndcg@10']:.4f}", f"{r['ndcg_delta']:+.4f} [{r['ndcg_delta_ci'][0]:+.4f}"
                 f", {r['ndcg_delta_ci'][1]:+.4f}]") for r in res["rows"]),
               title=f"encode throughput, {escape(res['model'])} at {res['max_seq_length']} "
               f"tokens ({escape(res['export'])}); NDCG on {q['n_queries']} validation "
               f"queries x {q['n_corpus']} documents")
    out.print(f"tokenization alone: {res['tokenize_sentences_per_s']:.0f} sentences/s; "
              f"fastest within 0.005 NDCG and cosine 0.99: {res['best']}")
    if res["int8_operator_profile"]:
        out.print("INT8 time by operator: " + ", ".join(
            f"{r['op']} {r['share']:.0%}" for r in res["int8_operator_profile"][:6]))


def _bench_search(n: int, index: Path | None) -> None:
    from itsm_core.serving.latency import bench_search

    res = bench_search(n, index)
    print_rows(("corpus", "search", "dim", "n", "index MB", "p50 ms", "p95 ms"),
               ((escape(r["corpus"]), r["what"], r["dim"], r["n"], r["index_mb"] or "",
                 f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}") for r in res["rows"]),
               title=f"top-{res['k']} latency, one query at a time ({res['blas_threads']} "
               "BLAS threads)")
    if "encode_query" in res:
        e = res["encode_query"]
        out.print(f"query encoding ({escape(res['model'])}): p50 {e['p50_ms']:.1f} ms, "
                  f"p95 {e['p95_ms']:.1f} ms; index build {res['index_build_seconds']} s "
                  f"({res['index_encode_sentences_per_s']} sentences/s); BM25 build "
                  f"{res['bm25_build_seconds']} s; max RSS {res['max_rss_mb']} MB")


def _bench_rerank(reranker: str | None, onnx: str | None, retriever: str, dataset: str,
                  n: int) -> None:
    from itsm_core.serving.export import resolve_reranker
    from itsm_core.serving.latency import rerank_latency

    if reranker is None:
        raise ItsmError("no re-ranker given", where="--reranker",
                        fix="pass the model/ folder of an `itsm rerank` run")
    res = rerank_latency(resolve_reranker(reranker), retriever=retriever, dataset=dataset,
                         n_queries=n, onnx=resolve_reranker(onnx, onnx=True) if onnx else None)
    print_rows(("stage", "k", "p50 ms", "p95 ms"),
               ((escape(r["backend"]), r["k"] or "", f"{r['p50_ms']:.1f}",
                 f"{r['p95_ms']:.1f}") for r in res["rows"]),
               title=f"latency added per query ({res['n_queries']} validation queries, "
               f"{res['n_corpus']} incidents, {res['torch_threads']} threads)")


def _bench_serve(index: Path | None, n: int) -> None:
    from itsm_core.serving.latency import serve_latency

    res = serve_latency(index, n_requests=n)
    print_rows(("setting", "clients", "requests/s", "p50 ms", "p95 ms"),
               ((r["setting"], r["clients"], r["requests_per_s"], f"{r['p50_ms']:.1f}",
                 f"{r['p95_ms']:.1f}") for r in res["rows"]),
               title=f"{res['mode']} top-{res['k']} over {res['incidents']} incidents "
               f"({res['n_requests']} requests per setting)")
    out.print(f"HTTP overhead (p50, 1 client / in process): "
              f"{res['overhead_p50_http_over_in_process']}x")


timing_app = typer.Typer(help="Per-stage wall time of `make pipeline`.", no_args_is_help=True)


@timing_app.command("reset")
@friendly
def timing_reset() -> None:
    """Start a new pipeline timing record."""
    from itsm_core.experiments.timing import reset

    reset()


@timing_app.command("run", context_settings={"allow_extra_args": True,
                                             "ignore_unknown_options": True})
@friendly
def timing_run(
    ctx: typer.Context,
    stage: Annotated[str, typer.Option(help="stage name in the timing table")],
) -> None:
    """Run `-- COMMAND…` as one timed stage (exit code passed through)."""
    from itsm_core.experiments.timing import run_stage

    rc = run_stage(stage, ctx.args)
    if rc:
        raise typer.Exit(code=rc)


@timing_app.command("show")
@friendly
def timing_show() -> None:
    """Finish the record: print the stage table, write reports/pipeline_timing.json."""
    from itsm_core.experiments.timing import TIMING_JSON, finish, steps_table, timing_table

    record = finish()
    table = timing_table(record)
    print_rows(table.columns, table.itertuples(index=False),
               title="make pipeline: wall time per stage")
    steps = steps_table(record, min_seconds=1.0)
    if len(steps):
        print_rows(steps.columns, ((r.stage, escape(r.command), r.seconds, r.share)
                                   for r in steps.itertuples(index=False)),
                   title="where the time went: each itsm command of a stage")
    out.print(f"timing -> {TIMING_JSON}")


def _bench_store(store: str | None, sizes: list[int], index: Path | None) -> None:
    from itsm_core.metrics.format import fmt_ci
    from itsm_core.serving.storebench import bench_store

    res = bench_store(store, tuple(sizes), index=index)
    print_rows(("store", "n", "filter", "build s", "p50 ms", "p95 ms", "recall@10", "MB"),
               ((r["store"], f"{r['n']:,}", r["filter"], r["build_s"], f"{r['p50_ms']:.2f}",
                 f"{r['p95_ms']:.2f}", f"{r['recall@10']:.4f}", r["size_mb"])
                for r in res["vectors"]), title=f"top-10 search, one query at a time "
               f"({res['cpus']} CPUs; {escape(res['server'].split(' on ')[0])}, pgvector "
               f"{res['pgvector']})")
    print_rows(("store", "mode", "queries", "ndcg@10", "mrr@10"),
               ((r["store"], r["mode"], r["n_queries"], fmt_ci(r["ndcg@10"], *r["ndcg@10_ci"]),
                 fmt_ci(r["mrr@10"], *r["mrr@10_ci"])) for r in res["quality"]),
               title="test split of the index's data set, as served")
    print_rows(("engine", "actors", "texts", "sentences/s", "x in-process", "start-up s",
                "steady sentences/s", "steady x", "max |diff|"),
               ((r["engine"], r["actors"], r["texts"], r["sentences_per_s"],
                 f"{r['vs_in_process']:.2f}", r["startup_s"], r["steady_sentences_per_s"],
                 f"{r['steady_vs_in_process']:.2f}", f"{r['max_abs_diff']:.1e}")
                for r in res["ray"]), title="batch embedding")
