"""Ablation: which parts of the training recipe help, measured (not assumed).

Every variant trains from the SAME generated pairs with one component switched, is
selected on validation, and is evaluated on test. The table reports the validation
NDCG@10 (the number decisions may use) and the test NDCG@10 with its CI plus the paired
bootstrap difference to the full recipe on the same test queries (reporting only).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from itsm_core.core.config import RESULTS_DIR
from itsm_core.core.errors import ItsmError
from itsm_core.core.io import atomic_write_df, atomic_write_json, timestamp
from itsm_core.runs.store import ABLATION_MARK

VARIANTS: dict[str, dict[str, Any]] = {
    "recipe": {},
    "no_curriculum": {"curriculum": False},
    "plus_tfidf_negatives": {"use_negatives": True, "pairs": {"negatives": "tfidf"}},
    "plus_embedding_negatives": {"use_negatives": True, "pairs": {"negatives": "embedding"}},
    "no_label_aware": {"label_aware": False},
    "plus_augmentation": {"augment": 0.5},
    "full_finetune": {"mode": "full"},
    "guided": {"guide": "base"},
    "guided_embedding_negatives": {"guide": "base", "use_negatives": True,
                                   "pairs": {"negatives": "embedding"}},
    "guided_mpnet": {"guide": "mpnet"},
}
"""Each variant switches ONE thing relative to the default recipe (``TrainConfig()``):
LoRA + MatryoshkaLoss over label-aware MNRL, curriculum order, (anchor, positive) pairs
with in-batch negatives only. ``pairs`` options regenerate the pairs (same seed)."""
DESCRIPTIONS = {
    "recipe": "default: LoRA + MatryoshkaLoss(label-aware MNRL), curriculum, "
              "in-batch negatives only",
    "no_curriculum": "recipe, random batches instead of easy→medium→hard",
    "plus_tfidf_negatives": "recipe + one TF-IDF-band (0.3–0.5) hard negative per pair",
    "plus_embedding_negatives": "recipe + one hard negative mined by the base model "
                                "(sentence-transformers mine_hard_negatives)",
    "no_label_aware": "recipe, plain MNRL (same-label in-batch negatives kept)",
    "plus_augmentation": "recipe + augmented copies of half the pairs",
    "full_finetune": "recipe with full fine-tuning (lr 2e-5) instead of LoRA",
    "guided": "recipe with GISTEmbedLoss (guide: the zero-shot base model) instead of "
              "label-aware MNRL",
    "guided_embedding_negatives": "guided + one hard negative mined by the base model: do "
                                  "mined negatives help once the guide drops false ones?",
    "guided_mpnet": "recipe with GISTEmbedLoss guided by zero-shot MPNet",
}


def run_ablation(dataset: str = "it_tickets", model: str = "minilm",
                 variants: list[str] | None = None, profile: str = "default",
                 max_steps: int | None = None, out_dir: str | Path | None = None,
                 max_pairs: int | None = None) -> pd.DataFrame:
    """Train and evaluate each variant on the same pairs; write
    ``ablation_<dataset>_<ts>.csv/.json`` under ``models/results/ablation/``.

    Args:
        dataset: bundled data set; model: the model to train.
        variants: names from :data:`VARIANTS` (default: all).
        profile: training profile; max_steps / max_pairs: the budget per variant.
        out_dir: where the table goes.

    Returns:
        One row per variant: validation NDCG@10 (what decisions may use), test NDCG@10
        with CI and the paired test difference to the recipe.
    """
    from itsm_core.evaluation.paired import paired_difference
    from itsm_core.pairs.augment import AugmentConfig, augment_pairs
    from itsm_core.pairs.training import TrainPairConfig
    from itsm_core.training.finetune import config_for_profile, make_pairs, run_training

    names = variants or list(VARIANTS)
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise ItsmError(f"unknown ablation variant(s) {unknown}",
                        fix=f"choose from {list(VARIANTS)}")
    pair_sets: dict[str, pd.DataFrame] = {}

    def pairs_for(options: dict[str, Any]) -> pd.DataFrame:
        pair_cfg = TrainPairConfig(**options)
        key = repr(pair_cfg)
        if key not in pair_sets:
            pairs, report = make_pairs(dataset, pair_cfg)
            if not report.ok:
                raise ItsmError("pair validation failed: " + "; ".join(report.errors))
            pair_sets[key] = pairs
        return pair_sets[key]

    base = config_for_profile(profile, model=model, dataset=dataset)
    if max_steps:
        base = replace(base, max_steps=max_steps)
    if max_pairs:
        base = replace(base, max_pairs=max_pairs)
    rows, runs = [], {}
    for name in names:
        opts = dict(VARIANTS[name])
        factor = opts.pop("augment", None)
        pairs = pairs_for(opts.pop("pairs", {}))
        p = augment_pairs(pairs, AugmentConfig(expansion_factor=factor)) if factor else pairs
        cfg = replace(base, name=f"{model}{ABLATION_MARK}{name}", **opts)
        res = run_training(cfg, pairs=p)
        runs[name] = res.run_dir / "evaluate"
        rec = res.test_record or {}
        rows.append({
            "variant": name, "description": DESCRIPTIONS[name],
            "val_ndcg@10": res.meta.get("best_validation_ndcg@10"),
            "test_ndcg@10": rec.get("ndcg@10"),
            "test_ndcg@10_ci_low": (rec.get("ndcg@10_ci") or [None, None])[0],
            "test_ndcg@10_ci_high": (rec.get("ndcg@10_ci") or [None, None])[1],
            "test_mrr@10": rec.get("mrr@10"), "test_roc_auc": rec.get("roc_auc"),
            "pairs_used": res.meta.get("pairs", {}).get("n_used"),
            "train_seconds": res.meta.get("train_seconds"), "run_dir": str(res.run_dir),
        })
    table = pd.DataFrame(rows)
    if "recipe" in runs:
        diffs = [paired_difference(runs[v], runs["recipe"]) if v != "recipe" else
                 {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0} for v in table["variant"]]
        table["test_diff_vs_recipe"] = [d["diff"] for d in diffs]
        table["test_diff_ci_low"] = [d["ci_low"] for d in diffs]
        table["test_diff_ci_high"] = [d["ci_high"] for d in diffs]
    out = Path(out_dir or RESULTS_DIR / "ablation")
    stem = f"ablation_{dataset}_{model}_{timestamp()}"
    atomic_write_df(out / f"{stem}.csv", table)
    atomic_write_json(out / f"{stem}.json", {"dataset": dataset, "model": model,
                                             "profile": profile, "max_steps": max_steps,
                                             "max_pairs": base.max_pairs,
                                             "rows": table.to_dict("records")})
    return table


def latest_ablation(dataset: str = "it_tickets", out_dir: str | Path | None = None
                    ) -> pd.DataFrame | None:
    """The newest measurement of every variant at the newest ablation's settings.

    Ablations may be run a few variants at a time (``--variants recipe,x``); rows of
    earlier files count only when they were measured with the same model, profile, step
    cap and pair budget, and a newer row of a variant replaces an older one. Each row's
    ``file`` says where it comes from (its paired difference is to the recipe of that
    same file). None when no ablation was run.
    """
    import json

    files = sorted(Path(out_dir or RESULTS_DIR / "ablation").glob(f"ablation_{dataset}_*.csv"))
    if not files:
        return None

    def settings(csv: Path) -> tuple | None:
        meta = csv.with_suffix(".json")
        if not meta.exists():
            return None
        m = json.loads(meta.read_text(encoding="utf-8"))
        return (m.get("model"), m.get("profile"), m.get("max_steps"), m.get("max_pairs"))

    want = settings(files[-1])
    same = [f for f in files if f == files[-1] or (want and settings(f) == want)]
    table = pd.concat([pd.read_csv(f).assign(file=f.stem) for f in same], ignore_index=True)
    table = table.drop_duplicates("variant", keep="last")
    order = {v: i for i, v in enumerate(VARIANTS)}
    return table.sort_values("variant", key=lambda c: c.map(order).fillna(len(order))
                             ).reset_index(drop=True)


SWEEPABLE = ("learning_rate", "lora_r", "lora_alpha", "max_pairs", "batch_size",
             "mnrl_scale", "warmup_ratio", "weight_decay")


def _coerce(param: str, value: str | float | int) -> float | int:
    kind = type(getattr(_default_config(), param) or 0.0)
    if param == "learning_rate":
        kind = float
    try:
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError) as exc:
        raise ItsmError(f"value {value!r} is not a number", where=f"--values ({param})",
                        fix="pass comma-separated numbers, e.g. 2e-4,5e-4,1e-3") from exc


def _default_config():
    from itsm_core.training.finetune import TrainConfig

    return TrainConfig()


def run_sweep(param: str, values: list[str | float | int], dataset: str = "it_tickets",
              model: str = "minilm", profile: str = "default", max_pairs: int | None = None,
              out_dir: str | Path | None = None, **overrides: Any) -> pd.DataFrame:
    """Train one run per value of ``param`` and rank them by VALIDATION NDCG@10 only.

    The test split is never evaluated (``evaluate_test=False``), so the chosen value can
    become a default without touching test. Every value trains on the same pairs.
    Writes ``sweep_<param>_<dataset>_<model>_<ts>.csv/.json`` under results/sweeps/.

    Args:
        param: a :class:`~itsm_core.training.finetune.TrainConfig` field.
        values: the values to try.
        dataset, model, profile, max_pairs: what trains, at which budget.
        out_dir: where the table goes; **overrides: other config fields, fixed.

    Returns:
        One row per value: validation NDCG@10, the zero-shot validation score, best step,
        training seconds and which value is best.
    """
    from itsm_core.training.finetune import config_for_profile, make_pairs, run_training

    if param not in SWEEPABLE:
        raise ItsmError(f"cannot sweep {param!r}", where="--param",
                        fix=f"choose one of {list(SWEEPABLE)}")
    if not values:
        raise ItsmError("no values to sweep", where="--values", fix="pass e.g. 2e-4,5e-4,1e-3")
    vals = [_coerce(param, v) for v in values]
    pairs, report = make_pairs(dataset)
    if not report.ok:
        raise ItsmError("pair validation failed: " + "; ".join(report.errors))
    base = config_for_profile(profile, model=model, dataset=dataset, evaluate_test=False,
                              **overrides)
    if max_pairs:
        base = replace(base, max_pairs=max_pairs)
    rows = []
    for v in vals:
        cfg = replace(base, **{param: v}, name=f"{model}{ABLATION_MARK}sweep-{param}-{v:g}")
        res = run_training(cfg, pairs=pairs)
        base_val = res.meta.get("base_validation") or {}
        rows.append({
            "param": param, "value": v,
            "val_ndcg@10": res.meta.get("best_validation_ndcg@10"),
            "base_val_ndcg@10": base_val.get("validation_ndcg@10"),
            "best_step": _best_step(res.meta), "global_steps": res.meta.get("global_steps"),
            "learning_rate": res.meta.get("learning_rate"),
            "pairs_used": res.meta.get("pairs", {}).get("n_used"),
            "train_seconds": res.meta.get("train_seconds"), "run_dir": str(res.run_dir),
        })
    table = pd.DataFrame(rows)
    table["best"] = table["val_ndcg@10"] == table["val_ndcg@10"].max()
    out = Path(out_dir or RESULTS_DIR / "sweeps")
    stem = f"sweep_{param}_{dataset}_{model}_{timestamp()}"
    atomic_write_df(out / f"{stem}.csv", table)
    atomic_write_json(out / f"{stem}.json", {
        "dataset": dataset, "model": model, "profile": profile, "param": param,
        "selection": "validation NDCG@10 (test never evaluated)",
        "config": {k: v for k, v in vars(base).items() if k != "extra"},
        "rows": table.to_dict("records")})
    return table


def _best_step(meta: dict[str, Any]) -> int | None:
    ckpt = meta.get("best_checkpoint") or ""
    tail = str(ckpt).rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def latest_sweep(param: str = "learning_rate", dataset: str = "it_tickets",
                 out_dir: str | Path | None = None) -> pd.DataFrame | None:
    """The newest sweep table of ``param`` on a data set, or None."""
    from itsm_core.runs.store import latest_file

    found = latest_file(out_dir or RESULTS_DIR / "sweeps", f"sweep_{param}_{dataset}_*.csv")
    return pd.read_csv(found) if found is not None else None
