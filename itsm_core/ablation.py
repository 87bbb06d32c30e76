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

from itsm_core.config import RESULTS_DIR
from itsm_core.errors import ItsmError
from itsm_core.io import atomic_write_df, atomic_write_json, timestamp
from itsm_core.results import ABLATION_MARK

VARIANTS: dict[str, dict[str, Any]] = {
    "recipe": {},
    "no_curriculum": {"curriculum": False},
    "no_hard_negatives": {"use_negatives": False},
    "no_label_aware": {"label_aware": False},
    "plus_augmentation": {"augment": 0.5},
    "full_finetune": {"mode": "full"},
}
DESCRIPTIONS = {
    "recipe": "LoRA + MatryoshkaLoss(label-aware MNRL), curriculum, TF-IDF hard negatives",
    "no_curriculum": "recipe, random batches instead of easy→medium→hard",
    "no_hard_negatives": "recipe, (anchor, positive) pairs only",
    "no_label_aware": "recipe, plain MNRL (same-label in-batch negatives kept)",
    "plus_augmentation": "recipe + augmented copies of half the pairs",
    "full_finetune": "recipe with full fine-tuning (lr 2e-5) instead of LoRA",
}


def run_ablation(dataset: str = "it_tickets", model: str = "minilm",
                 variants: list[str] | None = None, profile: str = "default",
                 max_steps: int | None = None, out_dir: str | Path | None = None,
                 max_pairs: int | None = None) -> pd.DataFrame:
    """Train and evaluate each variant; write ``ablation_<dataset>_<ts>.csv/.json``."""
    from itsm_core.augment import AugmentConfig, augment_pairs
    from itsm_core.reports import paired_difference
    from itsm_core.train import config_for_profile, make_pairs, run_training

    names = variants or list(VARIANTS)
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise ItsmError(f"unknown ablation variant(s) {unknown}",
                        fix=f"choose from {list(VARIANTS)}")
    pairs, report = make_pairs(dataset)
    if not report.ok:
        raise ItsmError("pair validation failed: " + "; ".join(report.errors))
    base = config_for_profile(profile, model=model, dataset=dataset)
    if max_steps:
        base = replace(base, max_steps=max_steps)
    if max_pairs:
        base = replace(base, max_pairs=max_pairs)
    rows, runs = [], {}
    for name in names:
        opts = dict(VARIANTS[name])
        factor = opts.pop("augment", None)
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
    """The newest ablation table of a data set, or None when none was run."""
    files = sorted(Path(out_dir or RESULTS_DIR / "ablation").glob(f"ablation_{dataset}_*.csv"))
    return pd.read_csv(files[-1]) if files else None
