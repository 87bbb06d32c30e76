"""What the evaluate_v2 and train notebooks show: leaderboard tables, baselines, runs.

Every table is read from what the runs wrote (leaderboard, run folders, benchmark JSONs);
nothing here measures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from itsm_core.core.config import LEADERBOARD_CSV
from itsm_core.core.errors import ItsmError
from itsm_core.evaluation.paired import (
    paired_difference,
    paired_vs_baselines,
    versus_baselines,
    versus_zero_shot,
)
from itsm_core.runs.schema import format_with_ci, read_leaderboard, unseen_model_name
from itsm_core.runs.store import latest_rows

__all__ = ["paired_difference", "paired_vs_baselines", "versus_baselines", "versus_zero_shot"]


def latest_runs(datasets: list[str] | None = None, models: list[str] | None = None,
                leaderboard: str | Path | None = None, task: str = "evaluate") -> pd.DataFrame:
    """Newest leaderboard row per (data set, model), filtered; empty → clear error."""
    board = latest_rows(read_leaderboard(leaderboard or LEADERBOARD_CSV), datasets, models, task)
    if board.empty:
        raise ItsmError("no evaluation runs to report", where=str(leaderboard or LEADERBOARD_CSV),
                        fix="run `itsm benchmark` or `itsm evaluate` first")
    return board


def leaderboard_table(board: pd.DataFrame) -> pd.DataFrame:
    """Display table with CIs (see :func:`itsm_core.runs.schema.format_with_ci`)."""
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


def forgetting(result: Any) -> pd.DataFrame:
    """A training result's run on the data set it was not trained on, paired against the
    zero-shot base model and TF-IDF there (:func:`versus_zero_shot`), or a one-line note
    saying why there is none."""
    if not getattr(result, "unseen_record", None):
        return pd.DataFrame({"note": ["no unseen data set was evaluated (it is not built, or "
                                      "TrainConfig.unseen_dataset is None)"]})
    table = versus_zero_shot(result.unseen_dir, result.unseen_record)
    if table.empty:
        return pd.DataFrame({"note": [f"no zero-shot run on {result.unseen_record['dataset']}"
                                      " to compare with yet (`make benchmark`)"]})
    return table


def seed_tiers(leaderboard: str | Path = LEADERBOARD_CSV, dataset: str | None = None
               ) -> pd.DataFrame:
    """The seed's success tiers of every model with a test evaluation
    (:func:`itsm_core.evaluation.tiers.tier_table`: test pair set Spearman / ROC-AUC / F1 and
    the adversarial diagnostic), plus each data set's Spearman ceiling from its test pairs.
    ``attrs["rows"]`` holds the leaderboard rows used."""
    from itsm_core.evaluation.tiers import spearman_ceiling, tier_table
    from itsm_core.runs.store import latest_per_model

    full = read_leaderboard(leaderboard)
    evals = latest_per_model(full)
    evals = evals[(evals["split"] == "test")
                  & ((evals["dataset"] == dataset) if dataset else True)]
    if evals.empty:
        raise ItsmError("no test-split evaluations on the leaderboard", where=str(leaderboard),
                        fix="run `make pipeline` (or `itsm evaluate`) first")
    used = pd.concat([evals, latest_per_model(full, task="diagnose")])
    table = tier_table(used)
    ceilings = {}
    for ds, runs in evals.groupby("dataset"):
        pairs = Path(str(runs["run_dir"].iat[0])) / "pairs.csv"
        if pairs.exists():
            ceilings[ds] = spearman_ceiling(pd.read_csv(pairs)["grade"].to_numpy())
    table["spearman ceiling"] = table["dataset"].map(ceilings)
    table = table.sort_values(["dataset", "model"]).reset_index(drop=True)
    table.attrs["rows"] = used
    return table


def wise_ft_table(meta: dict[str, Any]) -> pd.DataFrame:
    """A run's WiSE-FT sweep: per mixing weight α the target and unseen VALIDATION scores,
    whether it stays within the forgetting bound and which α was kept (with the reason)."""
    wise = meta.get("wise_ft")
    if not wise:
        return pd.DataFrame({"note": ["no WiSE-FT sweep in this run (TrainConfig.wise_ft is "
                                      "None, no unseen data set is built, or an unmerged "
                                      "LoRA adapter)"]})
    rows = pd.DataFrame(wise["rows"]).rename(columns={"target": wise["target_metric"],
                                                      "unseen": wise["unseen_metric"]})
    rows["within bound"] = rows["alpha"].isin(wise["feasible"])
    rows["kept"] = rows["alpha"] == wise["alpha"]
    rows.attrs["reason"] = wise["reason"]
    return rows.set_index("alpha")


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
        "WiSE-FT α kept": (meta.get("wise_ft") or {}).get("alpha", "–"),
        "git commit": meta.get("git_commit"),
    }
    if meta.get("reused"):  # `make pipeline` again: the finished run of the same recipe
        rows["reused"] = ("yes: trained earlier from the identical recipe (config, pairs, "
                          "data, base weights, code, libraries)")
    return pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows))


def throughput_table(model: str = "minilm") -> pd.DataFrame:
    """The latest ``itsm bench train`` figures (pairs/s, side by side), or a note."""
    from itsm_core.experiments.throughput import latest_bench

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
    from itsm_core.experiments.ablation import latest_ablation

    table = latest_ablation(dataset)
    if table is None:
        return pd.DataFrame({"note": [f"no ablation for {dataset} yet: run "
                                      f"`itsm ablation --dataset {dataset}`"]})
    return table


def dataset_card(dataset: str, incidents: str | Path | None = None) -> pd.DataFrame:
    """What a report is about: the data set's name, size, relevance kind and split sizes
    (from its manifest), so a report shown around says which incidents it measured.

    Args:
        dataset: a bundled or added data set; incidents: a file used instead of it.
    """
    from itsm_core.data.datasets import processed_path, read_sidecar

    try:
        path = Path(incidents) if incidents else processed_path(dataset)
    except ItsmError as exc:
        return pd.DataFrame({"value": {"data set": dataset, "note": exc.problem}})
    side = read_sidecar(path)
    if side is None:
        return pd.DataFrame({"value": {"data set": path.stem, "file": str(path)}})
    c = side.counts
    relevance = c.get("relevance") or ("+".join(
        [*(["labels"] if side.labels else []), *(["links"] if side.links else [])]) or "none")
    split = c.get("split", {})
    return pd.DataFrame({"value": {
        "data set": side.name, "incidents": c.get("incidents"),
        "relevance": relevance + (f" ({', '.join(side.labels)})" if side.labels else ""),
        "split (train / validation / test)": " / ".join(
            str(split.get(s, 0)) for s in ("train", "validation", "test")),
        "text fields": ", ".join(side.text_fields), "source": side.provenance}})


def _kept_validation(meta: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    """(target, unseen, base's unseen) VALIDATION scores of the model a run kept: the chosen
    WiSE-FT α's row (α = 0 is the base), else the best checkpoint's target alone."""
    wise = meta.get("wise_ft") or {}
    rows = {row["alpha"]: row for row in wise.get("rows", [])}
    if wise.get("alpha") in rows:
        kept = rows[wise["alpha"]]
        return kept["target"], kept.get("unseen"), rows.get(0.0, {}).get("unseen")
    return meta.get("best_validation_ndcg@10"), None, None


def finetune_comparison(dataset: str = "it_tickets", metric: str = "ndcg@10",
                        unseen_metric: str = "mrr@10", leaderboard: str | Path | None = None
                        ) -> pd.DataFrame:
    """Every fine-tune of ``dataset`` side by side — which model a desk should train: its
    cost (steps, seconds), the validation scores it was chosen on, its test gain over its
    OWN zero-shot base on the same queries, and what it forgot on the data set it never
    saw (paired against that base there too).

    Args:
        dataset: the data set the fine-tunes were trained (and tested) on.
        metric: the target metric on ``dataset``; unseen_metric: the one on the unseen set.
        leaderboard: where the runs are found (default: the project's).

    Returns:
        One row per fine-tuned model (newest run of each name); ``attrs["rows"]`` holds the
        leaderboard rows used.

    Raises:
        ItsmError: no fine-tune of ``dataset`` on the leaderboard.
    """
    from itsm_core.runs.store import latest_per_model
    from itsm_core.training.finetune import load_train_meta

    full = read_leaderboard(leaderboard or LEADERBOARD_CSV)
    evals, unseen = latest_per_model(full), latest_per_model(full, task="unseen")
    evals, unseen = evals[evals["split"] == "test"], unseen[unseen["split"] == "test"]
    tuned = evals[(evals["dataset"] == dataset) & evals["run_dir"].map(
        lambda d: (Path(str(d)).parent / "train_meta.json").exists())]
    if tuned.empty:
        raise ItsmError(f"no fine-tune of {dataset} with a test evaluation on the leaderboard",
                        fix=f"run `itsm train --dataset {dataset}` (or `make train`)")
    rows, used = [], [tuned]
    for _, r in tuned.sort_values("timestamp").iterrows():
        meta = load_train_meta(Path(str(r["run_dir"])).parent)
        cfg, base = meta.get("train_config", {}), meta.get("base_model")
        zero = evals[(evals["dataset"] == dataset) & (evals["model"] == base)
                     & (evals["relevance"] == r["relevance"])]
        val, val_unseen, base_unseen = _kept_validation(meta)
        row = {"fine-tune": r["model"], "base": base, "mode": cfg.get("mode"),
               "steps x batch": f"{meta.get('global_steps')} x {cfg.get('batch_size')}",
               "precision": meta.get("precision"),
               "train s": meta.get("train_seconds"), "run s": meta.get("total_seconds"),
               "val base": meta.get("base_validation", {}).get(f"validation_{metric}"),
               "val kept": val, "WiSE-FT α": (meta.get("wise_ft") or {}).get("alpha"),
               "unseen val base": base_unseen, "unseen val kept": val_unseen,
               "test": (r[metric], r[f"{metric}_ci_low"], r[f"{metric}_ci_high"])}
        if not zero.empty:
            used.append(zero)
            d = paired_difference(r["run_dir"], zero["run_dir"].iat[0], metric)
            row["test − base"] = (d["diff"], d["ci_low"], d["ci_high"])
        other = unseen[unseen["model"] == unseen_model_name(r["model"], dataset)]
        if not other.empty:
            u = other.iloc[0]
            used.append(other)
            row["unseen set"] = u["dataset"]
            row["unseen test"] = (u[unseen_metric], u[f"{unseen_metric}_ci_low"],
                                  u[f"{unseen_metric}_ci_high"])
            uzero = evals[(evals["dataset"] == u["dataset"]) & (evals["model"] == base)
                          & (evals["relevance"] == u["relevance"])]
            if not uzero.empty:
                used.append(uzero)
                d = paired_difference(u["run_dir"], uzero["run_dir"].iat[0], unseen_metric)
                row["unseen test − base"] = (d["diff"], d["ci_low"], d["ci_high"])
        rows.append(row)
    # every column, also where no row has it (no zero-shot run, no unseen run): NaN
    table = pd.DataFrame(rows).reindex(columns=list(dict.fromkeys(
        [*rows[0], "test − base", "unseen set", "unseen test", "unseen test − base"])))
    table.attrs.update(rows=pd.concat(used), metric=metric, unseen_metric=unseen_metric)
    return table


def hybrid_gains(metrics: tuple[str, ...] = ("ndcg@10", "mrr@10"),
                 leaderboard: str | Path | None = None) -> pd.DataFrame:
    """Every hybrid (BM25 + dense, fusion chosen on validation) of the leaderboard beside
    its own dense side and BM25, paired over the same test queries: what the lexical half
    adds, per data set (on bug-report duplicates it is not what it is on categories).

    The dense side is the newest test run of exactly the folder the hybrid fused
    (``model_arg``), never another model of the same name.

    Args:
        metrics: the metrics compared.
        leaderboard: where the runs are found (default: the project's).

    Returns:
        One row per hybrid (newest run per data set and name): data set, dense model, the
        fusion chosen and the validation scores it was chosen on (None for runs that did
        not store them), ``(value, low, high)`` per scorer and metric, paired differences
        hybrid − dense and hybrid − BM25; ``attrs["rows"]`` holds the leaderboard rows used.

    Raises:
        ItsmError: no hybrid run with its dense side and BM25 on the leaderboard.
    """
    from itsm_core.runs.schema import load_run, relevance_key, same_spec
    from itsm_core.runs.store import latest_per_model, latest_run

    board_path = leaderboard or LEADERBOARD_CSV
    full = read_leaderboard(board_path)
    evals = latest_per_model(full)
    evals = evals[evals["split"] == "test"]
    rows, used = [], []
    for _, h in evals[evals["model_kind"] == "hybrid"].sort_values(
            ["dataset", "timestamp"]).iterrows():
        rec = load_run(h["run_dir"])
        dense_arg = str(rec.get("model_arg", "")).partition(":")[2]
        dense_dir = latest_run(  # the hybrid's own dense folder: name "hybrid-<dense name>"
            str(h["model"]).removeprefix("hybrid-"), h["dataset"], leaderboard=board_path,
            accept=lambda r, a=dense_arg, rel=h["relevance"]: same_spec(
                r.get("model_arg"), a) and relevance_key(r.get("relevance")) == rel)
        bm25 = evals[(evals["dataset"] == h["dataset"]) & (evals["model"] == "bm25")
                     & (evals["relevance"] == h["relevance"])]
        if dense_dir is None or bm25.empty:
            continue
        d_row = full[full["run_dir"].astype(str) == str(dense_dir)].iloc[-1]
        b_row = bm25.iloc[0]
        used += [h.to_frame().T, d_row.to_frame().T, b_row.to_frame().T]
        grid = pd.DataFrame(rec.get("calibration_table") or [])
        alone = grid[(grid.get("method") == "weighted") & (grid.get("dense_weight") == 1.0)] \
            if {"method", "dense_weight"} <= set(grid.columns) else grid.iloc[0:0]
        row: dict[str, Any] = {"data set": h["dataset"], "n_queries": h["n_queries"],
                               "dense": d_row["model"],
                               "fusion": rec.get("calibration") or "given",
                               # validation NDCG@10 of the dense side alone (weight 1) and
                               # of the fusion kept: what the choice was made on
                               "val dense": float(alone.iloc[0, -1]) if len(alone) else None,
                               "val hybrid": float(grid.iloc[:, -1].max()) if len(grid)
                               else None}
        for m in metrics:
            for label, r in (("hybrid", h), ("dense", d_row), ("bm25", b_row)):
                row[f"{label} {m}"] = (r[m], r[f"{m}_ci_low"], r[f"{m}_ci_high"])
            for label, r in (("dense", d_row), ("bm25", b_row)):
                d = paired_difference(h["run_dir"], r["run_dir"], m)
                row[f"hybrid − {label} {m}"] = (d["diff"], d["ci_low"], d["ci_high"])
        rows.append(row)
    if not rows:
        raise ItsmError("no hybrid run with its dense side and BM25 on the leaderboard",
                        fix="run `itsm evaluate --model hybrid:<model> --dataset <set>` "
                        "(and the dense model and bm25 alone: `make benchmark`)")
    table = pd.DataFrame(rows)
    table.attrs.update(rows=pd.concat(used), metrics=metrics)
    return table
