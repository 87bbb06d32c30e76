"""The seed's success tiers from the honest pair set and the diagnostic."""

from __future__ import annotations

import math

import pandas as pd

from itsm_core.evaluation.tiers import model_tier, spearman_ceiling, tier_table


def _eval(model, spearman, roc, f1, low=0.0, ds="it_tickets", ts="1"):
    return {"task": "evaluate", "dataset": ds, "model": model, "timestamp": ts,
            "spearman": spearman, "roc_auc": roc, "f1": f1, "spearman_ci_low": spearman - low,
            "roc_auc_ci_low": roc - low, "f1_ci_low": f1 - low}


def _diag(model, verdict, roc=0.75, ds="it_tickets"):
    return {"task": "diagnose", "dataset": ds, "model": model, "timestamp": "1",
            "verdict": verdict, "roc_auc": roc, "roc_auc_ci_low": roc - 0.04, "f1": 0.72}


def test_each_tier_needs_its_bars_and_every_lower_tier():
    good = _eval("m", 0.70, 0.88, 0.80)
    assert model_tier(good, model="m", dataset="d", diagnostic=_diag("m", "pass"),
                      ensemble_distill=False).tier == "production ready"
    # the same figures without a passed diagnostic are not even minimum viable
    assert model_tier(good, model="m", dataset="d", diagnostic=_diag("m", "fail"),
                      ensemble_distill=False).tier == "none"
    assert model_tier(good, model="m", dataset="d", diagnostic=None,
                      ensemble_distill=False).checks["diagnostic"] == "not run"
    top = _eval("m", 0.80, 0.95, 0.80)
    assert model_tier(top, model="m", dataset="d", diagnostic=_diag("m", "pass"),
                      ensemble_distill=False).tier == "production ready"
    assert model_tier(top, model="m", dataset="d", diagnostic=_diag("m", "pass"),
                      ensemble_distill=True).tier == "stretch"
    # F1 below the production bar stops at minimum viable even with a stretch Spearman
    assert model_tier(_eval("m", 0.80, 0.95, 0.70), model="m", dataset="d",
                      diagnostic=_diag("m", "pass"), ensemble_distill=True
                      ).tier == "minimum viable"


def test_the_robust_tier_uses_the_ci_lower_bounds():
    res = model_tier(_eval("m", 0.70, 0.88, 0.80, low=0.06), model="m", dataset="d",
                     diagnostic=_diag("m", "pass", roc=0.72), ensemble_distill=False)
    assert res.tier == "production ready"
    assert res.robust_tier == "none"  # diagnostic ROC-AUC lower bound 0.68 < 0.70


def test_tier_table_pairs_each_model_with_its_own_latest_diagnostic():
    board = pd.DataFrame([
        _eval("tfidf", 0.30, 0.70, 0.66), _eval("minilm-ft", 0.60, 0.84, 0.76),
        _diag("tfidf", "fail"), {**_diag("minilm-ft", "fail"), "timestamp": "0"},
        _diag("minilm-ft", "pass"), _eval("minilm", 0.5, 0.8, 0.7, ds="gitbugs_hadoop"),
    ])
    table = tier_table(board).set_index(["dataset", "model"])
    assert table.loc[("it_tickets", "minilm-ft"), "tier"] == "minimum viable"
    assert table.loc[("it_tickets", "tfidf"), "tier"] == "none"
    assert table.loc[("gitbugs_hadoop", "minilm"), "diagnostic"] == "not run"
    assert tier_table(pd.DataFrame()).empty


def test_the_spearman_ceiling_of_coarse_grades_is_below_one():
    grades = [0] * 50 + [1] * 30 + [2] * 20
    ceiling = spearman_ceiling(grades)
    assert 0.8 < ceiling < 1.0
    assert spearman_ceiling(list(range(10))) > 0.999
    assert math.isnan(spearman_ceiling([1, 1, 1]))
