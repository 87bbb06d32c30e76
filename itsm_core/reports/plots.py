"""Plots for the reports (matplotlib/seaborn). Each function returns a Figure."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn.metrics import precision_recall_curve, roc_curve

sns.set_theme(style="whitegrid", context="notebook")


def metric_with_ci(board: pd.DataFrame, metric: str = "ndcg@10", by: str = "model",
                   title: str | None = None) -> plt.Figure:
    """Horizontal bars of ``metric`` per model with 95 % CI whiskers, one panel per data set."""
    datasets = list(dict.fromkeys(board["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 0.5 * (
        board.groupby("dataset").size().max() + 2)), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        sub = board[board["dataset"] == ds].sort_values(metric)
        v = sub[metric].to_numpy(dtype=float)
        lo = sub[f"{metric}_ci_low"].to_numpy(dtype=float)
        hi = sub[f"{metric}_ci_high"].to_numpy(dtype=float)
        colors = ["#999999" if k == "lexical" else "#3b75af" for k in sub["model_kind"]]
        ax.barh(sub[by].astype(str), v, xerr=np.vstack([v - lo, hi - v]), color=colors,
                capsize=3)
        ax.set_title(f"{ds}: {metric}")
        ax.set_xlim(0, min(1.0, np.nanmax(hi) * 1.15 if len(hi) else 1.0))
    fig.suptitle(title or f"{metric} with 95% bootstrap CI (grey = lexical baseline)")
    fig.tight_layout()
    return fig


def roc_pr_curves(pairs_by_model: dict[str, pd.DataFrame], title: str = "") -> plt.Figure:
    """ROC and precision–recall curves of the test pair set, one line per model."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, pairs in pairs_by_model.items():
        p = pairs.dropna(subset=["label"])
        y, s = p["label"].astype(int).to_numpy(), p["score"].to_numpy()
        fpr, tpr, _ = roc_curve(y, s)
        prec, rec, _ = precision_recall_curve(y, s)
        ax1.plot(fpr, tpr, label=name)
        ax2.plot(rec, prec, label=name)
    ax1.plot([0, 1], [0, 1], "k:", lw=1)
    ax1.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax2.set(xlabel="recall", ylabel="precision", title="precision–recall")
    ax1.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def score_distributions(pairs_by_model: dict[str, pd.DataFrame], title: str = "") -> plt.Figure:
    """Score histograms of relevant vs non-relevant test pairs per model, by band."""
    n = len(pairs_by_model)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), squeeze=False)
    for ax, (name, pairs) in zip(axes[0], pairs_by_model.items()):
        p = pairs.dropna(subset=["label"]).copy()
        p["pair"] = np.where(p["label"] == 1, "relevant", "not relevant")
        sns.histplot(data=p, x="score", hue="pair", element="step", stat="density",
                     common_norm=False, ax=ax, bins=30)
        ax.set_title(name)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def by_dimension(dims_by_model: dict[str, dict], metric: str = "ndcg@10",
                 title: str = "") -> plt.Figure:
    """``metric`` per Matryoshka dimension (dense models only)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, dims in dims_by_model.items():
        pts = sorted((int(d), v[metric]) for d, v in dims.items() if d.isdigit())
        if len(pts) > 1:
            ax.plot([d for d, _ in pts], [v for _, v in pts], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="embedding dimension (truncated)", ylabel=metric, title=title or metric)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def by_category(cats_by_model: dict[str, Sequence[dict]], metric_label: str = "ndcg@10",
                title: str = "") -> plt.Figure:
    """Mean per-query metric by query category (n in the tick labels)."""
    rows = [{"model": m, "category": f"{r['group']} (n={r['n']})", "mean": r["mean"]}
            for m, recs in cats_by_model.items() for r in recs]
    fig, ax = plt.subplots(figsize=(8, 0.35 * max(len(rows), 8) / max(len(cats_by_model), 1)
                                    + 2))
    if rows:
        sns.barplot(data=pd.DataFrame(rows), y="category", x="mean", hue="model", ax=ax)
    ax.set(xlabel=metric_label, ylabel="", title=title)
    fig.tight_layout()
    return fig


def training_curves(loss: pd.DataFrame, val: pd.DataFrame, title: str = "") -> plt.Figure:
    """Training loss (left) and validation retrieval metrics (right) by step."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if not loss.empty:
        ax1.plot(loss["step"], loss["loss"], lw=1)
        ax1.set(xlabel="step", ylabel="training loss", title="loss")
        if "learning_rate" in loss:
            ax1b = ax1.twinx()
            ax1b.plot(loss["step"], loss["learning_rate"], color="grey", lw=0.8, ls=":")
            ax1b.set_ylabel("learning rate", color="grey")
            ax1b.grid(False)
    for col in [c for c in val.columns if c != "step"]:
        ax2.plot(val["step"], val[col], marker="o", ms=3,
                 label=col.replace("eval_validation_", ""))
    ax2.set(xlabel="step", title="validation (model selection)")
    if len(val.columns) > 1:
        ax2.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def wise_ft_tradeoff(wise: dict | None, title: str = "") -> plt.Figure:
    """WiSE-FT trade-off: target validation NDCG@10 against unseen-duplicate retrieval for
    each mixing weight α (0 = zero-shot base, 1 = the fine-tune), the chosen α ringed, the
    forgetting bound (base − tolerance) dashed. Both axes are VALIDATION signals."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    if not wise or not wise.get("rows"):
        ax.text(0.5, 0.5, "no WiSE-FT sweep in this run", ha="center", va="center")
        ax.set_axis_off()
        return fig
    rows = pd.DataFrame(wise["rows"]).sort_values("alpha")
    ax.plot(rows["unseen"], rows["target"], marker="o", color="#3b75af")
    for a, x, y in zip(rows["alpha"], rows["unseen"], rows["target"]):
        ax.annotate(f"α={a:g}", (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    chosen = rows[rows["alpha"] == wise["alpha"]]
    ax.scatter(chosen["unseen"], chosen["target"], s=180, facecolors="none",
               edgecolors="#d62728", linewidths=2, label=f"chosen α = {wise['alpha']:g}")
    base = rows[rows["alpha"] == 0.0]["unseen"].iat[0]
    ax.axvline(base - wise["tolerance"], color="grey", ls="--", lw=1,
               label=f"base − {wise['tolerance']:g} (forgetting bound)")
    ax.set(xlabel=wise["unseen_metric"], ylabel=wise["target_metric"],
           title=title or "WiSE-FT: target gain vs what is forgotten (validation)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def ablation_bars(table: pd.DataFrame, metric: str = "ndcg@10", title: str = "") -> plt.Figure:
    """Validation and test ``metric`` per recipe variant, with test CIs."""
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(table) + 1.5))
    y = np.arange(len(table))
    ax.barh(y + 0.2, table[f"val_{metric}"], height=0.4, label="validation", color="#9ecae1")
    err = np.vstack([table[f"test_{metric}"] - table[f"test_{metric}_ci_low"],
                     table[f"test_{metric}_ci_high"] - table[f"test_{metric}"]])
    ax.barh(y - 0.2, table[f"test_{metric}"], height=0.4, xerr=err, capsize=3,
            label="test (95% CI)", color="#3b75af")
    ax.set_yticks(y, table["variant"])
    ax.set(xlabel=metric, title=title or f"ablation: {metric}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def adversarial_distributions(scored_pairs_by_model: dict[str, pd.DataFrame],
                              thresholds: dict[str, float] | None = None,
                              title: str = "") -> plt.Figure:
    """Score histograms of hard positives vs hard negatives of the adversarial set, one
    panel per model; the dashed line is the model's validation threshold."""
    n = max(len(scored_pairs_by_model), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), squeeze=False)
    palette = {"hard_positive": "#3b75af", "hard_negative": "#d62728"}
    for ax, (name, pairs) in zip(axes[0], scored_pairs_by_model.items()):
        sns.histplot(data=pairs, x="score", hue="kind", hue_order=list(palette),
                     palette=palette, element="step", stat="density", common_norm=False,
                     ax=ax, bins=30)
        if thresholds and name in thresholds and np.isfinite(thresholds[name]):
            ax.axvline(thresholds[name], color="k", ls="--", lw=1)
        ax.set_title(name)
    fig.suptitle(title or "adversarial set: hard positives vs hard negatives "
                 "(dashed = validation threshold)")
    fig.tight_layout()
    return fig


def stage_plot(table, metric: str = "ndcg@10", by: str = "stage"):  # noqa: ANN001 - DataFrame
    """Bars with 95 % CIs per stage of a stage table (None when nothing was evaluated on
    test)."""
    from itsm_core.training.pretrain import stage_board

    board = stage_board(table)
    if board.empty or metric not in board.columns:
        return None
    return metric_with_ci(board, metric, by=by)


def comparison_plot(table, metric: str = "ndcg@10"):  # noqa: ANN001 - DataFrame
    """Bars with 95 % CIs per role of a distillation comparison (None when nothing was
    evaluated on test)."""
    from itsm_core.training.distill import comparison_board

    return stage_plot(comparison_board(table), metric, by="role")


def class_balance(report: pd.DataFrame, title: str = "") -> plt.Figure:
    """Share of training pairs per label before and after augmentation, as paired bars
    (the rows of :func:`itsm_core.pairs.augment.balance_report`)."""
    rep = report.sort_values("share_before")
    y = np.arange(len(rep))
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(rep) + 1.5))
    ax.barh(y - 0.2, rep["share_before"], height=0.4, label="before", color="#999999")
    ax.barh(y + 0.2, rep["share_after"], height=0.4, label="after", color="#3b75af")
    ax.set_yticks(y, rep["label"].astype(str), fontsize=7)
    ax.set_xlabel("share of training pairs")
    ax.legend(loc="lower right")
    ax.set_title(title or "class balance before / after augmentation")
    fig.tight_layout()
    return fig
