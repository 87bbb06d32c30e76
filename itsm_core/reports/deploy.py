"""What notebooks/08_export_search.ipynb shows: export table, per-dim size / latency /
quality, hybrid vs BM25 vs dense on the test split (with CIs), example queries.

Everything is read from what ``itsm export``, ``itsm index build``, ``itsm bench search``
and evaluate_v2 wrote; what is missing is measured here once (and saved like the CLI
would), so the report never shows a number that was not produced by a real run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from itsm_core.core.config import LEADERBOARD_CSV, RUNS_DIR
from itsm_core.core.errors import ItsmError
from itsm_core.runs.schema import same_spec


def _export_dir(export_dir: str | Path | None) -> Path:
    from itsm_core.serving.export import latest_export

    found = Path(export_dir) if export_dir else latest_export()
    if found is None:
        raise ItsmError("no export under models/ yet", where="export_dir",
                        fix="run `make export` or `itsm export --model ...`")
    return found


def _index_dir(index_dir: str | Path | None) -> Path:
    from itsm_core.serving.index import latest_index

    return Path(index_dir) if index_dir else latest_index()


def export_tables(export_dir: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """The side-by-side export report (speed, quality, targets, quantization)."""
    from itsm_core.encoders.onnx import EXPORT_REPORT_FILE, read_export_meta

    folder = _export_dir(export_dir)
    f = folder / EXPORT_REPORT_FILE
    if not f.exists():
        raise ItsmError("this export has not been measured", where=str(folder),
                        fix="re-run `itsm export` without --no-measure")
    rep = json.loads(f.read_text(encoding="utf-8"))
    meta = read_export_meta(folder)
    speed = pd.DataFrame(rep["speed"])
    quality = pd.DataFrame(rep["quality"])
    quality["ndcg@10_ci"] = quality["ndcg@10_ci"].map(lambda c: f"[{c[0]:.4f}, {c[1]:.4f}]")
    quality["delta_ci"] = quality["delta_ci"].map(lambda c: f"[{c[0]:+.4f}, {c[1]:+.4f}]")
    q = meta["quantization"]
    info = pd.DataFrame({"value": {
        "export folder": str(folder), "source model": meta["source"]["model"],
        "architecture": meta["source"].get("model_type"),
        "max_seq_length": meta["max_seq_length"],
        "pooling": meta["pooling"].get("pooling_mode", "see graph"),
        "quantization": f"{q['method']} (per-channel {q['per_channel']}, {q['weight_type']})",
        "fp32 patterns": ", ".join(q["fp32_patterns"]) or "none (every MatMul is INT8)",
        "fp32 nodes": len(q["fp32_nodes"]),
        **{f"target: {k}": "met" if v else "NOT met" for k, v in rep["targets"].items()},
    }})
    return {"speed": speed, "quality": quality, "info": info}


def latency_table(index_dir: str | Path | None = None, *, rerun: bool = False
                  ) -> pd.DataFrame:
    """Per-dim index size and top-10 latency (synthetic 50k + the index), joined with the
    test NDCG@10 per dim of the index's dense model when it has been evaluated."""
    from itsm_core.experiments.throughput import latest_bench
    from itsm_core.serving.latency import search_latency

    folder = _index_dir(index_dir)
    res = None if rerun else latest_bench("search_latency")
    if res is None or res.get("index") != str(folder):
        res = search_latency(index=folder)
    rows = pd.DataFrame(res["rows"])
    dims = _dense_dims_quality(folder)
    if dims:
        rows["test ndcg@10 (dense)"] = [dims.get(str(d)) if w == "dense" else None
                                        for d, w in zip(rows["dim"], rows["what"])]
        full = max(int(k) for k in dims if k.isdigit())
        rows.loc[(rows["dim"] == full) & (rows["what"] == "dense"),
                 "test ndcg@10 (dense)"] = dims.get(str(full))
    rows.attrs["encode_query"] = res.get("encode_query")
    return rows


def _dense_dims_quality(folder: Path) -> dict[str, float]:
    from itsm_core.serving.index import SearchIndex

    idx = SearchIndex(folder)
    run = _latest_run(idx.model_name, None, model_arg=idx.meta["model"]["spec"])
    if run is None:
        return {}
    dims = json.loads((Path(run) / "metrics.json").read_text(encoding="utf-8")).get("dims", {})
    return {k: round(float(v["ndcg@10"]), 4) for k, v in dims.items() if "ndcg@10" in v}


def _latest_run(model: str, dataset: str | None, leaderboard: str | Path | None = None,
                model_arg: str | None = None) -> str | None:
    """Newest test-split evaluate run of ``model`` (and of exactly ``model_arg`` when
    given, so a re-export with the same name never reuses an older export's run)."""
    from itsm_core.runs.store import latest_run

    accept = None if model_arg is None else (
        lambda rec: same_spec(rec.get("model_arg"), model_arg))
    run = latest_run(model, dataset, leaderboard=leaderboard, accept=accept)
    return str(run) if run is not None else None


def hybrid_comparison(dense_spec: str | None = None, dataset: str = "it_tickets", *,
                      bootstrap: int = 1000, leaderboard: str | Path | None = None
                      ) -> dict[str, pd.DataFrame]:
    """BM25, the dense model and hybrid (fusion chosen on validation) on the TEST split
    with 95 % CIs, and the paired difference hybrid − each on the same queries.

    Runs that are already on the leaderboard are reused; missing ones are evaluated with
    evaluate_v2 (new run directory, leaderboard row), exactly as ``itsm evaluate`` does.
    """
    from itsm_core.core.io import unique_run_dir
    from itsm_core.data.datasets import processed_path
    from itsm_core.encoders.factory import load_scorer
    from itsm_core.evaluation.benchmark import BenchmarkConfig, build_benchmark, evaluate_model
    from itsm_core.evaluation.paired import paired_difference
    from itsm_core.runs.schema import format_with_ci, load_run

    lb = Path(leaderboard or LEADERBOARD_CSV)
    dense_spec = str(dense_spec or _export_dir(None))
    specs = {"bm25": "bm25", "dense": dense_spec, "hybrid": f"hybrid:{dense_spec}"}
    bench = None
    runs: dict[str, str] = {}
    for role, spec in specs.items():
        scorer = load_scorer(spec, show_progress=False)
        run = _latest_run(scorer.name, dataset, lb, model_arg=spec)
        if run is None:
            if bench is None:
                bench = build_benchmark(processed_path(dataset),
                                        config=BenchmarkConfig(n_resamples=bootstrap))
            run_dir = unique_run_dir(RUNS_DIR, f"evaluate_{dataset}_{scorer.name}")
            evaluate_model(spec, bench, run_dir, leaderboard=lb, scorer=scorer)
            run = str(run_dir)
        runs[role] = run
    recs = {role: load_run(r) for role, r in runs.items()}
    board = pd.DataFrame([{**{k: v for k, v in rec.items() if not isinstance(v, (dict, list))},
                           **{f"{m}_ci_low": (rec.get(f"{m}_ci") or [None, None])[0]
                              for m in ("ndcg@10", "mrr@10", "recall@10", "map@100",
                                        "roc_auc", "f1")},
                           **{f"{m}_ci_high": (rec.get(f"{m}_ci") or [None, None])[1]
                              for m in ("ndcg@10", "mrr@10", "recall@10", "map@100",
                                        "roc_auc", "f1")}}
                          for rec in recs.values()])
    table = format_with_ci(board)
    diffs = []
    for other in ("bm25", "dense"):
        for m in ("ndcg@10", "mrr@10", "map@100"):
            d = paired_difference(runs["hybrid"], runs[other], m)
            diffs.append({"comparison": f"hybrid − {other}", "metric": m,
                          "difference": round(d["diff"], 4), "ci_low": round(d["ci_low"], 4),
                          "ci_high": round(d["ci_high"], 4),
                          "verdict": "hybrid better" if d["ci_low"] > 0 else
                          ("hybrid worse" if d["ci_high"] < 0 else "no significant difference")})
    fusion = pd.DataFrame({"value": {
        "dense model": recs["dense"]["model"],
        "fusion (chosen on validation)": recs["hybrid"].get("calibration"),
        "hybrid run": runs["hybrid"]}})
    return {"table": table, "paired": pd.DataFrame(diffs), "fusion": fusion}


def fusion_grid(index_dir: str | Path | None = None) -> pd.DataFrame:
    """The validation NDCG@10 of every fusion candidate the index chose from."""
    from itsm_core.serving.index import SearchIndex

    idx = SearchIndex(_index_dir(index_dir))
    table = pd.DataFrame(idx.fusion.table)
    if table.empty:
        return pd.DataFrame({"note": [f"fusion not chosen on validation: "
                                      f"{idx.fusion.chosen_on}"]})
    return table


def index_summary(index_dir: str | Path | None = None) -> pd.DataFrame:
    """The index's own description (:meth:`~itsm_core.serving.index.IndexBase.summary`)
    as a one-column table."""
    from itsm_core.serving.index import SearchIndex

    return pd.DataFrame({"value": SearchIndex(_index_dir(index_dir)).summary()})


def example_queries(queries: Sequence[str] | str, index_dir: str | Path | None = None,
                    k: int = 5, mode: str = "hybrid") -> dict[str, pd.DataFrame]:
    """Top-``k`` neighbours of each query (number, score, summary, category, notes)."""
    from itsm_core.serving.index import SearchIndex

    if isinstance(queries, str):
        queries = [q.strip() for q in queries.split("|") if q.strip()]
    idx = SearchIndex(_index_dir(index_dir))
    out = {}
    for q, res in zip(queries, idx.search(list(queries), k=k, mode=mode)):
        from itsm_core.serving.index import summaries

        res.insert(3, "summary", summaries(res))
        keep = [c for c in ("rank", "score", "number", "summary", "category", "subcategory",
                            "topic_group", "resolution_notes") if c in res.columns]
        res = res[keep].copy()
        res["score"] = res["score"].round(3)
        out[q] = res
    return out
