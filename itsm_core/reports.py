"""Reports: run a numbered notebook with papermill and export it to HTML (nbconvert).

Notebooks only call functions from this package; everything they show is loaded here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from itsm_core.config import LEADERBOARD_CSV, NOTEBOOKS_DIR, REPORTS_DIR
from itsm_core.errors import ItsmError
from itsm_core.io import atomic_write_text
from itsm_core.results import format_with_ci, latest_per_model, read_leaderboard


def run_report(notebook: str, parameters: dict[str, Any], *, output: str | Path | None = None,
               name: str | None = None, kernel: str | None = None,
               notebooks_dir: Path = NOTEBOOKS_DIR, reports_dir: Path = REPORTS_DIR) -> Path:
    """Execute ``notebooks/<notebook>.ipynb`` with ``parameters``; write ``reports/<name>.html``.

    The executed notebook is kept beside the HTML under ``reports/executed/`` for
    debugging. Code cells are hidden in the HTML (they only call itsm_core).
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
    # figures must render inline in the executed notebook whatever the caller's backend
    old_backend = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        pm.execute_notebook(str(src), str(executed), parameters=parameters,
                            kernel_name=kernel, progress_bar=False, cwd=str(notebooks_dir))
    finally:
        if old_backend is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = old_backend
    nb = nbformat.read(executed, as_version=4)
    body, _ = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                           exclude_output_prompt=True).from_notebook_node(nb)
    atomic_write_text(html_path, body)
    return html_path


def latest_runs(datasets: list[str] | None = None, models: list[str] | None = None,
                leaderboard: str | Path | None = None, task: str = "evaluate") -> pd.DataFrame:
    """Newest leaderboard row per (data set, model), filtered; empty → clear error."""
    board = latest_per_model(read_leaderboard(leaderboard or LEADERBOARD_CSV), task=task)
    if datasets:
        board = board[board["dataset"].isin(datasets)]
    if models:
        board = board[board["model"].isin(models)]
    if board.empty:
        raise ItsmError("no evaluation runs to report", where=str(leaderboard or LEADERBOARD_CSV),
                        fix="run `itsm benchmark` or `itsm evaluate` first")
    return board.reset_index(drop=True)


def leaderboard_table(board: pd.DataFrame) -> pd.DataFrame:
    """Display table with CIs (see :func:`itsm_core.results.format_with_ci`)."""
    return format_with_ci(board)


def run_pairs(board: pd.DataFrame, dataset: str) -> dict[str, pd.DataFrame]:
    """Scored test pairs (``pairs.csv``) of each run of one data set, keyed by model."""
    out = {}
    for r in board[board["dataset"] == dataset].itertuples():
        p = Path(r.run_dir) / "pairs.csv"
        if p.exists():
            out[r.model] = pd.read_csv(p)
    return out


def run_json(board: pd.DataFrame, dataset: str, key: str) -> dict[str, Any]:
    """One field of each run's metrics.json (e.g. ``dims``, ``per_category``) by model."""
    out = {}
    for r in board[board["dataset"] == dataset].itertuples():
        p = Path(r.run_dir) / "metrics.json"
        if p.exists():
            val = json.loads(p.read_text(encoding="utf-8")).get(key)
            if val:
                out[r.model] = val
    return out


def baseline_comparison(board: pd.DataFrame, metric: str = "ndcg@10") -> pd.DataFrame:
    """Per data set: each model's metric minus the best lexical baseline's."""
    rows = []
    for ds, sub in board.groupby("dataset"):
        lex = sub[sub["model_kind"] == "lexical"]
        if lex.empty:
            continue
        best = lex.loc[lex[metric].idxmax()]
        for _, r in sub.iterrows():
            rows.append({"dataset": ds, "model": r["model"], metric: r[metric],
                         "best_baseline": best["model"],
                         "delta_vs_baseline": r[metric] - best[metric]})
    return pd.DataFrame(rows)


def benchmark_table(board: pd.DataFrame) -> pd.DataFrame:
    """Per data set: queries, corpus, pairs, split scheme and threshold source."""
    rows = {}
    for r in board.itertuples():
        p = Path(r.run_dir) / "metrics.json"
        if r.dataset in rows or not p.exists():
            continue
        b = json.loads(p.read_text(encoding="utf-8")).get("benchmark", {})
        rows[r.dataset] = {k: b.get(k) for k in (
            "relevance", "split", "split_scheme", "corpus", "n_queries", "n_corpus",
            "n_test_pairs", "n_threshold_pairs", "threshold_source", "text_fields")}
    return pd.DataFrame.from_dict(rows, orient="index")


def train_summary(meta: dict[str, Any]) -> pd.DataFrame:
    """The real hyper-parameters and outcome of a training run, as a two-column table."""
    cfg = meta.get("train_config", {})
    rows = {
        "base model": meta.get("base_model"), "mode": cfg.get("mode"),
        "learning rate": meta.get("learning_rate"), "epochs": cfg.get("epochs"),
        "batch size": cfg.get("batch_size"), "warmup ratio": cfg.get("warmup_ratio"),
        "weight decay": cfg.get("weight_decay"), "scheduler": cfg.get("scheduler"),
        "loss": meta.get("loss"), "matryoshka dims": meta.get("matryoshka_dims"),
        "curriculum": cfg.get("curriculum"), "hard negatives": cfg.get("use_negatives"),
        "label-aware in-batch negatives": cfg.get("label_aware"),
        "LoRA r / alpha": f"{cfg.get('lora_r')} / {cfg.get('lora_alpha')}"
        if cfg.get("mode") == "lora" else "–",
        "LoRA-wrapped modules": len(meta.get("lora_wrapped_modules", [])),
        "training pairs used": meta.get("pairs", {}).get("n_used"),
        "steps": meta.get("global_steps"), "train seconds": meta.get("train_seconds"),
        "pairs / second": meta.get("pairs_per_second"),
        "validation NDCG@10 before": meta.get("base_validation", {}).get(
            "validation_ndcg@10"),
        "validation NDCG@10 best": meta.get("best_validation_ndcg@10"),
        "best checkpoint": meta.get("best_checkpoint"),
        "git commit": meta.get("git_commit"),
    }
    return pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows))


def versus_baselines(record: dict[str, Any], leaderboard: str | Path | None = None
                     ) -> pd.DataFrame:
    """A trained model's test row beside the baselines and zero-shot models of its data set."""
    board = latest_per_model(read_leaderboard(leaderboard or LEADERBOARD_CSV))
    board = board[(board["dataset"] == record["dataset"])
                  & (board["relevance"] == record.get("relevance"))]
    others = board[board["model_kind"] == "lexical"]
    zero = board[board["model"].isin(["minilm", "mpnet", record.get("base_model")])]
    mine = board[board["run_id"] == record["run_id"]]
    rows = pd.concat([others, zero, mine]).drop_duplicates("run_id")
    return format_with_ci(rows)


def paired_difference(run_a: str | Path, run_b: str | Path, metric: str = "ndcg@10",
                      **kwargs: Any) -> dict[str, float]:
    """Paired bootstrap of ``metric`` between two evaluation runs on the same queries."""
    from itsm_core.metrics import paired_bootstrap_diff

    a = pd.read_csv(Path(run_a) / "per_query.csv").set_index("query")[metric]
    b = pd.read_csv(Path(run_b) / "per_query.csv").set_index("query")[metric]
    common = a.index.intersection(b.index)
    if len(common) == 0:
        raise ItsmError("the two runs share no queries", where=f"{run_a} vs {run_b}",
                        fix="compare runs of the same data set and split")
    return paired_bootstrap_diff(a.loc[common].to_numpy(), b.loc[common].to_numpy(), **kwargs)


def throughput_table(model: str = "minilm") -> pd.DataFrame:
    """The latest ``itsm bench train`` figures (pairs/s, side by side), or a note."""
    from itsm_core.bench import latest_bench

    res = latest_bench("train_throughput")
    if res is None or res.get("model") != model:
        return pd.DataFrame({"note": [f"no throughput benchmark for {model} yet: run "
                                      f"`itsm bench train --model {model}`"]})
    return pd.DataFrame({
        "recipe": ["plain sentence-transformers (full FT, MNRL, random batches)",
                   "default recipe (LoRA, MatryoshkaLoss(label-aware MNRL), curriculum)"],
        "pairs / s": [res["plain_st_pairs_per_s"], res["default_recipe_pairs_per_s"]],
        "setting": [f"{res['steps']} steps, batch {res['batch_size']}, "
                    f"{res['threads']} threads, max_seq_length {res['max_seq_length']}"] * 2,
    })


def ablation_table(dataset: str = "it_tickets") -> pd.DataFrame:
    """The latest ablation of a data set (validation + test NDCG@10), or a note."""
    from itsm_core.ablation import latest_ablation

    table = latest_ablation(dataset)
    if table is None:
        return pd.DataFrame({"note": [f"no ablation for {dataset} yet: run "
                                      f"`itsm ablation --dataset {dataset}`"]})
    return table


def paired_vs_baselines(record: dict[str, Any], metrics: tuple[str, ...] = (
        "ndcg@10", "mrr@10", "map@100"), leaderboard: str | Path | None = None
        ) -> pd.DataFrame:
    """Paired bootstrap difference (model − baseline) on the same test queries, with CI.

    A fine-tune "beats" a baseline only when the CI of the difference is above zero.
    """
    board = latest_per_model(read_leaderboard(leaderboard or LEADERBOARD_CSV))
    board = board[(board["dataset"] == record["dataset"])
                  & (board["relevance"] == record.get("relevance"))]
    mine = board[board["run_id"] == record["run_id"]]
    if mine.empty:
        raise ItsmError("the run is not on the leaderboard", fix="evaluate it first")
    base = board[(board["model_kind"] == "lexical")
                 | board["model"].isin(["minilm", "mpnet", record.get("base_model")])]
    rows = []
    for _, b in base[base["run_id"] != record["run_id"]].iterrows():
        for m in metrics:
            d = paired_difference(mine["run_dir"].iat[0], b["run_dir"], m)
            rows.append({"baseline": b["model"], "metric": m, "difference": round(d["diff"], 4),
                         "ci_low": round(d["ci_low"], 4), "ci_high": round(d["ci_high"], 4),
                         "verdict": "better" if d["ci_low"] > 0 else
                         ("worse" if d["ci_high"] < 0 else "no significant difference")})
    return pd.DataFrame(rows)
