"""Domain adaptation: leakage-free text selection, SimCSE / TSDAE runs on a tiny model."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from itsm_core.core.errors import ItsmError
from itsm_core.data.splits import normalise_key
from itsm_core.training.pretrain import (
    config_for_profile,
    delete_noise,
    format_stage_table,
    held_out_keys,
    pretrain_texts,
    stage_table,
    verdicts,
)


@pytest.fixture
def bundle(tmp_path):
    """Tiny incidents + sidecar, with unlabelled rows and a held-out duplicate planted.

    - two unlabelled training rows (no category) must be used;
    - a training row whose text equals a TEST incident's text (other case / spacing)
      must be excluded.
    """
    from conftest import tiny_frame

    from itsm_core.data.datasets import DatasetManifest, sidecar_path

    df = tiny_frame()
    test_row = df[df["split"] == "test"].iloc[0]
    extra = pd.DataFrame([
        {"number": "UNL001", "short_description": "Monitor flickers",
         "description": "External monitor flickers after docking", "split": "train"},
        {"number": "UNL002", "short_description": "Teams audio broken",
         "description": "No sound in Teams meetings on the headset", "split": "train"},
        {"number": "DUP001", "short_description": test_row["short_description"].upper(),
         "description": "  " + test_row["description"].replace(" ", "  "), "split": "train"},
    ])
    df = pd.concat([df, extra], ignore_index=True)
    path = tmp_path / "tiny.csv"
    df.to_csv(path, index=False)
    DatasetManifest(name="tiny", text_fields=["short_description", "description"],
                    labels=["category", "subcategory"]).save(sidecar_path(path))
    return {"incidents": path, "frame": df}


def test_pretrain_texts_are_training_split_only_and_drop_held_out_duplicates(bundle):
    pt = pretrain_texts("tiny", incidents_path=bundle["incidents"])
    df = bundle["frame"]
    used = set(pt.texts.index)
    held = set(df.loc[df["split"].isin(["validation", "test"]), "number"])
    assert not used & held, "a validation / test incident reached pre-training"
    assert {"UNL001", "UNL002"} <= used, "unlabelled training texts must be used"
    assert "DUP001" not in used, "a duplicate of a test text must be excluded"
    keys = held_out_keys("tiny", incidents_path=bundle["incidents"])
    assert not {normalise_key(t) for t in pt.texts} & keys
    assert pt.counts["train_duplicates_of_held_out_removed"] == 1
    assert pt.counts["used"] == len(pt.texts) == 3 * 6 + 2


def test_pretrain_texts_sample_is_seeded_and_capped(bundle):
    a = pretrain_texts("tiny", incidents_path=bundle["incidents"], max_texts=5, seed=1)
    b = pretrain_texts("tiny", incidents_path=bundle["incidents"], max_texts=5, seed=1)
    c = pretrain_texts("tiny", incidents_path=bundle["incidents"], max_texts=5, seed=2)
    assert len(a.texts) == 5 and list(a.texts.index) == list(b.texts.index)
    assert list(a.texts.index) != list(c.texts.index)


def test_no_split_column_is_a_clear_error(tmp_path):
    from conftest import tiny_frame

    path = tmp_path / "nosplit.csv"
    tiny_frame().drop(columns="split").to_csv(path, index=False)
    with pytest.raises(ItsmError, match="split"):
        pretrain_texts("x", incidents_path=path)


def test_gitbugs_pretraining_uses_training_bugs_only():
    """On the bundled GitBugs data: no incident of a validation / test link is used."""
    from conftest import PROJECT_ROOT

    from itsm_core.data.incidents import load_links

    processed = PROJECT_ROOT / "data_new" / "processed"
    inc = processed / "gitbugs_hadoop.parquet"
    if not inc.exists():
        pytest.skip("bundled data not built")
    pt = pretrain_texts("gitbugs_hadoop", incidents_path=inc)
    links = load_links(processed / "gitbugs_hadoop_links.csv")
    held = set(links.loc[links["split"] != "train", ["a", "b"]].to_numpy().ravel())
    assert held and not held & set(pt.texts.index)
    assert pt.counts["used"] > 2000  # the unlabelled bug texts are the point


def test_profiles_and_bad_config():
    assert config_for_profile("smoke").max_steps > 0
    assert config_for_profile("full").max_texts is None
    with pytest.raises(ItsmError):
        config_for_profile("nope")
    with pytest.raises(ItsmError, match="method"):
        config_for_profile("default", method="bert-flow")
    with pytest.raises(ItsmError):
        config_for_profile("default", batch_size=1)


def test_delete_noise_keeps_a_word_and_deletes_about_the_ratio():
    import random

    rng = random.Random(0)
    text = " ".join(f"w{i}" for i in range(200))
    kept = delete_noise(text, 0.6, rng).split()
    assert 50 < len(kept) < 110 and set(kept) <= set(text.split())
    assert delete_noise("single", 0.99, rng) == "single"


def _fake_eval(dir_, model, values):
    dir_.mkdir(parents=True)
    pd.DataFrame({"query": [f"q{i}" for i in range(len(values))], "ndcg@10": values,
                  "mrr@10": values}).to_csv(dir_ / "per_query.csv", index=False)
    mean = sum(values) / len(values)
    (dir_ / "metrics.json").write_text(json.dumps({
        "model": model, "ndcg@10": mean, "ndcg@10_ci": [mean - .1, mean + .1],
        "mrr@10": mean, "mrr@10_ci": [mean - .1, mean + .1]}))
    return dir_


def test_stage_table_paired_differences_and_verdicts(tmp_path):
    base = _fake_eval(tmp_path / "b", "minilm", [0.2, 0.4, 0.3, 0.5] * 10)
    better = _fake_eval(tmp_path / "s", "minilm-simcse", [0.6, 0.8, 0.7, 0.9] * 10)
    same = _fake_eval(tmp_path / "f", "minilm-ft", [0.2, 0.4, 0.3, 0.5] * 10)
    table = stage_table("tiny", [("base", base, ""), ("+SimCSE", better, ""),
                                 ("fine-tune alone", same, ""), ("missing", None, "n/a")])
    r = table.set_index("stage")
    assert r.loc["+SimCSE", "ndcg@10_diff_vs_base"] == pytest.approx(0.4)
    assert r.loc["+SimCSE", "ndcg@10_diff_vs_base_ci_low"] > 0
    assert r.loc["fine-tune alone", "ndcg@10_diff_vs_base"] == pytest.approx(0.0)
    assert pd.isna(r.loc["missing", "ndcg@10"])
    v = verdicts(table)
    got = {(x.stage, x.versus): x.verdict for x in v.itertuples()}
    assert got[("+SimCSE", "base")] == "better"
    assert got[("base", "fine-tune alone")] == "no significant difference"
    shown = format_stage_table(table)
    assert "ndcg@10 Δ vs base" in shown.columns
    from itsm_core.reports.plots import stage_plot

    fig = stage_plot(table, "ndcg@10")
    assert len(fig.axes[0].patches) == 3  # the stage without a result is not drawn
    assert stage_plot(table.iloc[3:], "ndcg@10") is None


@pytest.mark.weights
@pytest.mark.parametrize("method", ["simcse", "tsdae"])
def test_pretrain_run_on_tiny_model_writes_adapted_model(tmp_path, bundle, method,
                                                         isolated_results):
    """A 2-step SimCSE / TSDAE run: model folder with base spec, meta, validation history,
    test evaluation and a fine-tune that starts from the adapted folder."""
    from tiny_model import build_tiny_model

    from itsm_core.encoders.registry import resolve_spec
    from itsm_core.training.pretrain import run_pretrain

    tiny = build_tiny_model(tmp_path / "tiny")
    cfg = config_for_profile("smoke", model=str(tiny), dataset="tiny", method=method,
                             evaluate_test=True, output_dir=str(tmp_path / "run"))
    res = run_pretrain(cfg, incidents_path=bundle["incidents"])
    meta = res.meta
    assert meta["global_steps"] == 2 and meta["method"] == method
    assert meta["texts"]["used"] == 20 and meta["texts"]["train_duplicates_of_held_out_removed"]
    assert "validation_ndcg@10" in meta["base_validation"]
    assert any("eval_validation_ndcg@10" in h for h in meta["log_history"])
    spec = resolve_spec(str(res.model_dir))
    assert spec.key == f"tiny-{method}" and spec.extra["base_model"] == "tiny"
    assert spec.matryoshka_dims == (32, 16)
    from sentence_transformers import SentenceTransformer

    # trained at 32 tokens for speed, saved (and evaluated) at the base model's 64
    assert cfg.max_seq_length == 32 and meta["eval_max_seq_length"] == 64
    assert SentenceTransformer(str(res.model_dir), device="cpu").max_seq_length == 64
    assert res.test_record["model"] == f"tiny-{method}"
    assert (res.run_dir / "evaluate" / "per_query.csv").exists()
    with pytest.raises(ItsmError):  # never overwrite a run
        run_pretrain(cfg, incidents_path=bundle["incidents"])


@pytest.mark.weights
def test_stages_fine_tune_starts_from_the_adapted_model(tmp_path, bundle, isolated_results):
    from tiny_model import build_tiny_model

    from itsm_core.training.pretrain import run_stages

    tiny = build_tiny_model(tmp_path / "tiny")
    cfg = config_for_profile("smoke", model=str(tiny), dataset="tiny", evaluate_test=True)
    res = run_stages(cfg, train_profile="smoke", incidents_path=bundle["incidents"])
    assert res.finetune.meta["train_config"]["model"] == str(res.pretrain.model_dir)
    assert res.finetune.test_record["model"] == "tiny-simcse-ft"
    stages = list(res.table["stage"])
    assert stages == ["base", "+SimCSE", "+SimCSE → fine-tune", "fine-tune alone",
                      "lexical baseline"]
    # no zero-shot / plain fine-tune runs exist in the isolated leaderboard: noted, not faked
    t = res.table.set_index("stage")
    assert pd.isna(t.loc["base", "ndcg@10"]) and "itsm evaluate" in t.loc["base", "note"]
    assert pd.isna(t.loc["lexical baseline", "ndcg@10"])
    assert t.loc["+SimCSE → fine-tune", "ndcg@10"] >= 0
    assert res.table_path.exists()
    # the table can be rebuilt from the finished runs, e.g. with a given plain fine-tune
    from typer.testing import CliRunner

    from itsm_core.cli.main import app

    ft_eval = res.finetune.run_dir / "evaluate"
    again = CliRunner().invoke(app, ["stages", "--pretrain-run", str(res.pretrain.run_dir),
                                     "--finetune-run", str(res.finetune.run_dir),
                                     "--alone-eval", str(ft_eval)])
    assert again.exit_code == 0, again.output
    from itsm_core.training.pretrain import latest_stage_table

    rebuilt = latest_stage_table("tiny").set_index("stage")
    assert rebuilt.loc["fine-tune alone", "ndcg@10"] == pytest.approx(
        t.loc["+SimCSE → fine-tune", "ndcg@10"])
    assert rebuilt.loc["+SimCSE → fine-tune", "ndcg@10_diff_vs_fine-tune_alone"] == 0
    assert len(list(res.table_path.parent.glob("*_tiny_pretrain.csv"))) == 2  # none overwritten


def test_best_lexical_baseline_is_the_higher_one(tmp_path, isolated_results):
    from itsm_core.runs.schema import append_leaderboard
    from itsm_core.training.pretrain import best_lexical_eval_dir

    assert best_lexical_eval_dir("tiny") == (None, "")
    for name, vals in (("tfidf", [0.3, 0.3]), ("bm25", [0.5, 0.6])):
        d = _fake_eval(tmp_path / name, name, vals)
        append_leaderboard({"task": "evaluate", "dataset": "tiny", "split": "test",
                            "model": name, "timestamp": "20260101T000000Z"}, d,
                           isolated_results.leaderboard)
    assert best_lexical_eval_dir("tiny") == (tmp_path / "bm25", "bm25")
