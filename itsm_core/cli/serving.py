"""``itsm export | index … | search``: the deployed model and the similar-incident index."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from itsm_core.cli.common import csv_list, friendly, out, print_rows, short


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
    fresh: Annotated[bool, typer.Option(
        help="export again even when an identical measured export exists")] = False,
    reranker: Annotated[str | None, typer.Option(
        help="export this cross-encoder instead (an `itsm rerank` model/ folder, or 'latest'"
        "); checked against torch on validation pairs of --dataset")] = None,
) -> None:
    """Export a model to ONNX (fp32 + dynamic per-channel INT8) with its tokenizer and
    pooling; the folder works as --model everywhere. Reports throughput, size, cosine
    agreement and the NDCG@10 delta (validation and test) side by side. An identical
    earlier export (same model files, options, code) is reused unless --fresh or --out."""
    from itsm_core.serving.export import (
        export_or_reuse,
        export_reranker_measured,
        resolve_model,
        resolve_reranker,
    )

    if reranker is not None:
        src = resolve_reranker(reranker)
        folder = export_reranker_measured(src, out_dir, dataset=dataset)
        out.print(f"exported re-ranker {escape(str(src))} -> [bold]{folder}[/]")
        _print_reranker_agreement(folder)
        return
    src = resolve_model(model, trained, trained_name)
    folder, report, reused = export_or_reuse(
        src, out_dir, max_seq_length=max_seq_length, fp32_nodes=fp32_nodes,
        optimize=optimize, measure=measure, reuse=False if fresh else None, dataset=dataset,
        n_texts=n_texts, bootstrap=bootstrap)
    out.print(f"{'reused the identical export' if reused else 'exported'} {escape(src)} -> "
              f"[bold]{folder}[/]")
    if report:
        _print_export_report(report)


def _print_reranker_agreement(folder: Path) -> None:
    from itsm_core.encoders.rerank import CE_EXPORT_FILE

    rows = json.loads((folder / CE_EXPORT_FILE).read_text(encoding="utf-8")).get(
        "agreement", {}).get("rows", [])
    cols = ("backend", "pairs_per_s", "speedup", "max_abs_diff", "spearman_to_torch")
    print_rows(cols, ([r.get(c, "") for c in cols] for r in rows),
               title="re-ranker backends on validation pairs (same run)", right=cols[1:])


def _print_export_report(rep: dict) -> None:
    speed = rep["speed"]
    print_rows(("backend", "sentences/s", "speed-up", "size MB", "cos mean", "cos min"),
               ((r["backend"], f"{r['sentences_per_s']:.1f}", f"{r['speedup']:.2f}x",
                 r["size_mb"], f"{r['cos_mean']:.4f}", f"{r['cos_min']:.4f}") for r in speed),
               title=f"{rep['model']}: encode throughput and agreement "
               f"({speed[0]['n_texts']} validation texts, {speed[0]['threads']} threads)",
               right=("sentences/s", "speed-up", "size MB", "cos mean", "cos min"))
    print_rows(("split", "backend", "ndcg@10", "95% CI", "delta vs torch", "delta CI"),
               ((r["split"], r["backend"], f"{r['ndcg@10']:.4f}",
                 f"[{r['ndcg@10_ci'][0]:.4f}, {r['ndcg@10_ci'][1]:.4f}]",
                 f"{r['delta_vs_torch']:+.4f}",
                 f"[{r['delta_ci'][0]:+.4f}, {r['delta_ci'][1]:+.4f}]") for r in rep["quality"]),
               title="NDCG@10 by backend (paired difference to torch, 95% CI)",
               right=("ndcg@10", "95% CI", "delta vs torch", "delta CI"))
    for k, v in rep.get("targets", {}).items():
        out.print(f"target {k}: {'[green]met[/]' if v else '[red]not met[/]'}")


index_app = typer.Typer(help="Similar-incident search indexes (build, add, info, list).",
                        no_args_is_help=True)

StoreOpt = Annotated[str | None, typer.Option(
    "--store", envvar="ITSM_STORE",
    help="PostgreSQL + pgvector URL (postgresql://user:pw@host:port/db) instead of an index "
         "folder; default $ITSM_STORE")]
LexicalOpt = Annotated[str, typer.Option(
    help="lexical side of hybrid search in a --store: bm25 (bm25s beside the store, as the "
         "folder index) or fts (PostgreSQL full-text search)")]
CollectionOpt = Annotated[str | None, typer.Option(
    help="collection in the --store (default: the data set / file name when building; the "
         "only one when searching)")]


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
    store: StoreOpt = None,
    collection: CollectionOpt = None,
    replace: Annotated[bool, typer.Option(
        help="rebuild an existing --collection of the --store")] = False,
    engine: Annotated[str, typer.Option(
        help="local (this process) or ray (Ray Data actors)")] = "local",
    batch_size: Annotated[int, typer.Option(help="texts per encode call / Ray batch")] = 32,
    concurrency: Annotated[int, typer.Option(help="Ray actors (--engine ray)")] = 1,
    ray_address: Annotated[str | None, typer.Option(
        help="Ray cluster address (default: local mode on this machine)")] = None,
) -> None:
    """Encode every incident into a new search index (embeddings + lexical + metadata), in
    a folder or a PostgreSQL + pgvector --store."""
    from itsm_core.serving.export import resolve_model
    from itsm_core.serving.store import Engine, build

    idx = build(resolve_model(model), incidents, dataset=dataset, out=out_dir, store=store,
                collection=collection, replace=replace,
                engine=Engine(engine, batch_size, concurrency, ray_address), columns=columns,
                text_fields=csv_list(text_fields), dim=dim, fusion=fusion,
                fusion_weight=fusion_weight, encoding=encoding)
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
    store: StoreOpt = None,
    collection: CollectionOpt = None,
) -> None:
    """Encode and append new incidents to an index (no rebuild; same model and dim)."""
    from itsm_core.serving.store import open_store

    idx = open_store(index, store, collection)
    n = idx.add(incidents, columns=columns, skip_existing=skip_existing, encoding=encoding)
    out.print(f"added {n} incidents -> {idx.path} ({len(idx)} in total)")


@index_app.command("info")
@friendly
def index_info(
    index: Annotated[Path | None, typer.Argument(help="index folder (default: newest)")] =
    None,
    store: StoreOpt = None,
    collection: CollectionOpt = None,
) -> None:
    """Show an index's model, dim, size, fusion and history."""
    from itsm_core.serving.store import open_store

    _print_index_info(open_store(index, store, collection))


@index_app.command("publish")
@friendly
def index_publish(
    index: Annotated[Path | None, typer.Argument(help="index folder (default: newest)")] =
    None,
    store: StoreOpt = None,
    collection: CollectionOpt = None,
    replace: Annotated[bool, typer.Option(help="overwrite an existing --collection")] = False,
) -> None:
    """Copy a folder index into a PostgreSQL + pgvector --store as it is (nothing is
    re-encoded; fusion and duplicate threshold come along)."""
    from itsm_core.serving.store import publish

    _print_index_info(publish(index, store, collection, replace=replace))


@index_app.command("list")
@friendly
def index_list(store: StoreOpt = None) -> None:
    """List the collections of a PostgreSQL --store (incidents, model, dim, generation)."""
    from itsm_core.serving.store import collections

    rows = collections(store)
    print_rows(["collection", "incidents", "model", "dim", "generation"],
               [[r["name"], r["incidents"], r["model"], r["dim"], r["generation"]]
                for r in rows], title=f"collections ({len(rows)})", right=["incidents"])


@index_app.command("calibrate")
@friendly
def index_calibrate(
    index: Annotated[Path | None, typer.Argument(help="index folder (default: newest)")] =
    None,
    precision: Annotated[float, typer.Option(
        help="precision the likely-duplicate threshold must reach on validation")] = 0.9,
) -> None:
    """Choose the likely-duplicate threshold on the index's VALIDATION incidents and store
    it with the index (the service's default; adjustable per request)."""
    from itsm_core.serving.index import calibrate_duplicates

    found = calibrate_duplicates(index, precision)
    if found.get("threshold") is None:
        out.print(f"no threshold stored: {found.get('chosen_on')}")
        return
    out.print(f"likely duplicate: dense cosine >= {found['threshold']:.4f} — precision "
              f"{found['precision']:.3f}, recall {found['recall']:.3f} of the top-grade "
              f"pairs among the top-{found['k']} neighbours ({found['chosen_on']})")


def _print_index_info(idx) -> None:  # noqa: ANN001 - an IndexBase
    t = Table(title=f"index {idx.path}", show_header=False)
    t.add_column("field")
    t.add_column("value")
    for k, v in idx.summary().items():
        if k != "index":
            t.add_row(k, escape(str(v)))
    out.print(t)


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
    store: StoreOpt = None,
    collection: CollectionOpt = None,
    lexical: LexicalOpt = "bm25",
) -> None:
    """Find the incidents most similar to a text: number, score, description, category,
    resolution notes (whatever the index holds)."""
    from itsm_core.serving.index import search_payload
    from itsm_core.serving.store import open_store

    idx = open_store(index, store, collection, lexical)
    results = idx.search(queries, k=k, mode=mode, dim=dim, model=model)
    if as_json:
        payload = search_payload(idx, queries, results, mode, dim)
        sys.stdout.write(json.dumps(payload, ensure_ascii=False, indent=2) + "\n")
        return
    for q, res in zip(queries, results):
        _print_hits(q, res, f"{mode}, {dim or idx.dim}-d, {idx.model_name}")


def _print_hits(query: str, res, how: str) -> None:  # noqa: ANN001 - pandas DataFrame
    from itsm_core.serving.index import summaries

    t = Table(title=f"{escape(query)}  [dim]({escape(how)})[/]")
    cols = ["number", "score", "short description"] + [c for c in (
        "category", "subcategory", "topic_group", "resolution_notes") if c in res.columns]
    for c in cols:
        t.add_column(c, justify="right" if c == "score" else "left", overflow="fold",
                     max_width=60 if c in ("short description", "resolution_notes") else None)
    res = res.assign(**{"short description": summaries(res)})
    for row in res.to_dict("records"):
        t.add_row(*[f"{row[c]:.3f}" if c == "score" else escape(short(row.get(c)))
                    for c in cols])
    out.print(t)


@friendly
def serve_cmd(
    index: Annotated[list[Path] | None, typer.Option(
        help="index folder, or NAME=FOLDER (with --store: a collection name); repeat to "
             "serve several collections (default: the newest bundled index / every "
             "collection of the store)")] = None,
    host: Annotated[str, typer.Option(help="address to bind (non-loopback needs an API "
                                           "key)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    api_key_file: Annotated[Path | None, typer.Option(
        help="file whose first line is the API key (default: $ITSM_API_KEY)")] = None,
    store: StoreOpt = None,
    lexical: LexicalOpt = "bm25",
) -> None:
    """Serve the similar-incident API (POST /similar, …; OpenAPI at /docs) and the web page
    at / from one process; model and index are loaded once."""
    import os

    from itsm_core.serving.service import api_key_from, serve

    serve(index, host, port, api_key=api_key_from(dict(os.environ), api_key_file),
          store=store, lexical=lexical)
