"""Paired comparisons of evaluation runs on the same queries.

A fine-tune "beats" a baseline only when the 95 % CI of the paired difference (the same
test queries, resampled together) lies above zero. Used by training (stage tables),
experiments (ablation) and reports alike, so it lives here, below all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from itsm_core.core.config import LEADERBOARD_CSV
from itsm_core.core.errors import ItsmError
from itsm_core.metrics.stats import paired_bootstrap_diff
from itsm_core.runs.schema import format_with_ci, read_leaderboard, relevance_key
from itsm_core.runs.store import latest_per_model


def paired_difference(run_a: str | Path, run_b: str | Path, metric: str = "ndcg@10",
                      **kwargs: Any) -> dict[str, float]:
    """Paired bootstrap of ``metric`` between two evaluation runs on the same queries."""
    a = pd.read_csv(Path(run_a) / "per_query.csv").set_index("query")[metric]
    b = pd.read_csv(Path(run_b) / "per_query.csv").set_index("query")[metric]
    common = a.index.intersection(b.index)
    if len(common) == 0:
        raise ItsmError("the two runs share no queries", where=f"{run_a} vs {run_b}",
                        fix="compare runs of the same data set and split")
    return paired_bootstrap_diff(a.loc[common].to_numpy(), b.loc[common].to_numpy(), **kwargs)


def versus_baselines(record: dict[str, Any], leaderboard: str | Path | None = None
                     ) -> pd.DataFrame:
    """A trained model's test row beside the baselines and zero-shot models of its data set."""
    board = latest_per_model(read_leaderboard(leaderboard or LEADERBOARD_CSV))
    board = board[(board["dataset"] == record["dataset"])
                  & (board["relevance"] == relevance_key(record.get("relevance")))]
    others = board[board["model_kind"] == "lexical"]
    zero = board[board["model"].isin(["minilm", "mpnet", record.get("base_model")])]
    mine = board[board["run_id"] == record["run_id"]]
    rows = pd.concat([others, zero, mine]).drop_duplicates("run_id")
    return format_with_ci(rows)


def versus_zero_shot(run_dir: str | Path, record: dict[str, Any],
                     metrics: tuple[str, ...] = ("ndcg@10", "mrr@10", "map@100"),
                     leaderboard: str | Path | None = None) -> pd.DataFrame:
    """A fine-tune judged on a data set it was NOT trained on (``task = unseen``) against
    its zero-shot base model and TF-IDF on that data set's same test queries: what the
    fine-tune forgot (difference < 0) or carried over (> 0), paired bootstrap CI.

    Args:
        run_dir: the unseen run's folder (its ``per_query.csv``); record: its record.
        metrics: the metrics compared; leaderboard: where the baselines' runs are found.

    Returns:
        One row per baseline and metric (empty when no baseline run of that data set
        exists yet: ``make benchmark`` writes them).
    """
    board = latest_per_model(read_leaderboard(leaderboard or LEADERBOARD_CSV))
    base = board[(board["dataset"] == record["dataset"])
                 & (board["relevance"] == relevance_key(record.get("relevance")))
                 & board["model"].isin([record.get("base_model"), "tfidf"])]
    rows = []
    for _, b in base.iterrows():
        for m in metrics:
            d = paired_difference(run_dir, b["run_dir"], m)
            rows.append({"data set (not trained on)": record["dataset"],
                         "baseline": b["model"], "metric": m,
                         "fine-tune": round(float(record[m]), 4),
                         "baseline value": round(float(b[m]), 4),
                         "difference": round(d["diff"], 4), "ci_low": round(d["ci_low"], 4),
                         "ci_high": round(d["ci_high"], 4),
                         "verdict": "better" if d["ci_low"] > 0 else
                         ("worse (forgotten)" if d["ci_high"] < 0 else
                          "no significant difference")})
    return pd.DataFrame(rows)


def paired_vs_baselines(record: dict[str, Any], metrics: tuple[str, ...] = (
        "ndcg@10", "mrr@10", "map@100"), leaderboard: str | Path | None = None
        ) -> pd.DataFrame:
    """Paired bootstrap difference (model − baseline) on the same test queries, with CI.

    A fine-tune "beats" a baseline only when the CI of the difference is above zero.
    """
    board = latest_per_model(read_leaderboard(leaderboard or LEADERBOARD_CSV))
    board = board[(board["dataset"] == record["dataset"])
                  & (board["relevance"] == relevance_key(record.get("relevance")))]
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
