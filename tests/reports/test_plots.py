"""Figures the reports show: built from result tables, one panel per data set."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from itsm_core.reports import plots  # noqa: E402


def _board() -> pd.DataFrame:
    return pd.DataFrame({
        "dataset": ["a", "a", "b"], "model": ["tfidf", "minilm", "minilm"],
        "model_kind": ["lexical", "dense", "dense"], "ndcg@10": [0.5, 0.6, 0.4],
        "ndcg@10_ci_low": [0.45, 0.55, 0.3], "ndcg@10_ci_high": [0.55, 0.65, 0.5]})


def test_metric_with_ci_has_a_panel_per_dataset_and_grey_baselines():
    fig = plots.metric_with_ci(_board())
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["a: ndcg@10", "b: ndcg@10"]
    bars = axes[0].patches
    assert len(bars) == 2
    colours = {round(b.get_width(), 3): matplotlib.colors.to_hex(b.get_facecolor())
               for b in bars}
    assert colours[0.5] == "#999999" and colours[0.6] == "#3b75af"


def test_training_curves_plot_loss_and_validation():
    loss = pd.DataFrame({"step": [1, 2, 3], "loss": [2.0, 1.5, 1.2],
                         "learning_rate": [1e-3, 8e-4, 5e-4]})
    val = pd.DataFrame({"step": [2, 3], "eval_validation_ndcg@10": [0.6, 0.65]})
    fig = plots.training_curves(loss, val, title="run")
    loss_ax, val_ax = fig.axes[0], fig.axes[1]  # (the learning-rate twin axis comes last)
    assert list(loss_ax.lines[0].get_ydata()) == [2.0, 1.5, 1.2]
    assert [t.get_text() for t in val_ax.get_legend().get_texts()] == ["ndcg@10"]


def test_stage_plot_is_none_without_test_rows():
    table = pd.DataFrame({"stage": ["base"], "dataset": ["a"], "note": ["not evaluated"]})
    assert plots.stage_plot(table) is None


def test_class_balance_pairs_before_and_after_bars():
    rep = pd.DataFrame({"label": [0, 1, 2], "n_before": [5, 3, 2], "share_before": [.5, .3, .2],
                        "n_after": [8, 4, 3], "share_after": [.53, .27, .2]})
    fig = plots.class_balance(rep)
    ax = fig.axes[0]
    assert len(ax.patches) == 6
    assert [t.get_text() for t in ax.get_yticklabels()] == ["2", "1", "0"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["before", "after"]


def test_dataset_card_names_what_a_report_measured(tmp_path):
    from conftest import tiny_frame

    from itsm_core.data.datasets import DatasetManifest, sidecar_path
    from itsm_core.reports.views import dataset_card

    path = tmp_path / "tiny.csv"
    tiny_frame().to_csv(path, index=False)
    DatasetManifest(name="tiny", text_fields=["short_description", "description"],
                    labels=["category", "subcategory"],
                    counts={"incidents": 42, "split": {"train": 18, "validation": 12,
                                                       "test": 12}}).save(sidecar_path(path))
    card = dataset_card("ignored", path)["value"]
    assert card["data set"] == "tiny" and card["incidents"] == 42
    assert card["relevance"] == "labels (category, subcategory)"
    assert card["split (train / validation / test)"] == "18 / 12 / 12"
    # a report never fails on its header: an unknown data set becomes a note
    assert "unknown data set" in dataset_card("no_such_set")["value"]["note"]
