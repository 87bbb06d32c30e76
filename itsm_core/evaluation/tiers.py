"""The seed's success tiers, computed from the honest pair set and the adversarial diagnostic.

The seed defined three tiers of success for a similarity model:

- **minimum viable**: Spearman > 0.55, ROC-AUC > 0.82, adversarial diagnostic passed;
- **production ready**: Spearman > 0.65, ROC-AUC > 0.85, F1 > 0.75;
- **stretch**: Spearman > 0.75, ROC-AUC > 0.90, ensemble + distillation working.

Its figures came from a test set labelled by the baseline model itself. Here Spearman,
ROC-AUC and F1 are those of evaluate_v2's TEST pair set (labels from the data, threshold
from validation) and the diagnostic is the adversarial run of the same model on the same
data set. A tier counts only when every lower tier holds too. Each check is also made on the
bootstrap CI's lower bound ("robust"), so a tier met by the point estimate alone shows as
such.

Spearman here is the rank correlation of a pair's score with its graded relevance (e.g. 2 =
same category and subcategory, 1 = same category only, 0 = different category). The grades
hold only a few distinct values, so even a perfect ordering cannot reach 1:
:func:`spearman_ceiling` is the best any model can score on a pair set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from itsm_core.metrics import stats as M

TIERS: tuple[tuple[str, dict[str, float]], ...] = (
    ("minimum viable", {"spearman": 0.55, "roc_auc": 0.82}),
    ("production ready", {"spearman": 0.65, "roc_auc": 0.85, "f1": 0.75}),
    ("stretch", {"spearman": 0.75, "roc_auc": 0.90}),
)
"""Thresholds per tier (strictly above); minimum viable also needs the diagnostic passed,
stretch also needs an ensemble and a distilled student evaluated on the data set."""


def spearman_ceiling(grades: Sequence[float]) -> float:
    """The highest Spearman a model can reach against these grades: scores that order the
    pairs exactly by grade (ties broken arbitrarily, as any real score does)."""
    g = np.asarray(grades, dtype=float)
    g = g[~np.isnan(g)]
    if g.size < 2 or np.ptp(g) == 0:
        return float("nan")
    perfect = g + np.arange(g.size) / (g.size * 10.0)  # grade order, ties in some order
    return float(M.spearman(perfect, g))


@dataclass
class TierResult:
    """One model's tier and the checks behind it."""

    model: str
    dataset: str
    tier: str
    robust_tier: str
    checks: dict[str, Any]

    def row(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "model": self.model, "tier": self.tier,
                "tier (CI lower bound)": self.robust_tier, **self.checks}


def _tier(values: dict[str, float], diagnostic_passed: bool | None,
          ensemble_distill: bool) -> str:
    reached = "none"
    for name, bars in TIERS:
        ok = all(values.get(m, float("nan")) > bar for m, bar in bars.items())
        if name == "minimum viable":
            ok = ok and bool(diagnostic_passed)
        if name == "stretch":
            ok = ok and ensemble_distill
        if not ok:
            break
        reached = name
    return reached


def model_tier(metrics: dict[str, Any], *, model: str, dataset: str,
               diagnostic: dict[str, Any] | None, ensemble_distill: bool) -> TierResult:
    """The seed's tier of one model from its evaluate_v2 metrics and diagnostic record.

    Args:
        metrics: the evaluate row (``spearman``, ``roc_auc``, ``f1`` and their
            ``*_ci_low``).
        diagnostic: the model's adversarial diagnostic row (``roc_auc``, ``f1``,
            ``verdict``) on the same data set, or None (not run: no tier above none).
        ensemble_distill: an ensemble and a distilled student are evaluated on the data set.

    Returns:
        :class:`TierResult`.
    """
    point = {m: float(metrics.get(m, float("nan"))) for m in ("spearman", "roc_auc", "f1")}
    low = {m: float(metrics.get(f"{m}_ci_low", float("nan"))) for m in point}
    from itsm_core.evaluation.diagnostic import verdict

    found = None if diagnostic is None else (diagnostic.get("verdict") or verdict(
        float(diagnostic["roc_auc"]), float(diagnostic["f1"])))
    passed = None if diagnostic is None else found == "pass"
    robust_pass = None if diagnostic is None else verdict(
        float(diagnostic.get("roc_auc_ci_low", float("nan"))),
        float(diagnostic.get("f1", float("nan")))) == "pass"
    checks = {**point, "diagnostic": "not run" if diagnostic is None else str(found),
              "ensemble + distillation": ensemble_distill}
    return TierResult(model=model, dataset=dataset,
                      tier=_tier(point, passed, ensemble_distill),
                      robust_tier=_tier(low, robust_pass, ensemble_distill), checks=checks)


def tier_table(board: pd.DataFrame) -> pd.DataFrame:
    """Every model's seed tier on every data set of a leaderboard (latest runs).

    Uses the ``evaluate`` rows (test pair set) and, per model and data set, the latest
    ``diagnose`` row. Lexical baselines are tiered too: they are the bar to clear.

    Returns:
        One row per (data set, model): tier, tier by CI lower bounds, the checked values.
    """
    if board.empty:
        return pd.DataFrame()
    latest = board.sort_values("timestamp").drop_duplicates(
        ["task", "dataset", "model"], keep="last")
    evals = latest[latest["task"] == "evaluate"]
    diags = latest[latest["task"] == "diagnose"].set_index(["dataset", "model"])
    rows = []
    for _, r in evals.iterrows():
        names = evals.loc[evals["dataset"] == r["dataset"], "model"].astype(str)
        ens = names.str.startswith("ensemble").any() and names.str.endswith("-distilled").any()
        key = (r["dataset"], r["model"])
        diag = diags.loc[key].to_dict() if key in diags.index else None
        rows.append(model_tier(r.to_dict(), model=str(r["model"]), dataset=str(r["dataset"]),
                               diagnostic=diag, ensemble_distill=bool(ens)).row())
    return pd.DataFrame(rows)
