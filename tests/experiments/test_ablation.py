"""Ablation and hyper-parameter sweep orchestration (training itself is mocked here;
real training is covered by tests/test_train.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from itsm_core.core.errors import ItsmError
from itsm_core.experiments import ablation
from itsm_core.training.finetune import TrainConfig, build_train_dataset


def _pairs(n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "anchor": [f"a{i}" for i in range(n)], "positive": [f"p{i}" for i in range(n)],
        "negative": [f"n{i}" for i in range(n)], "label": np.arange(n) % 3,
        "phase": ["easy", "medium", "hard"] * (n // 3),
        "lexical_pos": rng.random(n), "lexical_neg": rng.random(n),
    })


class FakeTraining:
    """Records every config it is given; validation NDCG peaks at lr = 1e-3."""

    def __init__(self, tmp: Path):
        self.tmp, self.configs, self.pair_configs = tmp, [], []

    def make_pairs(self, dataset, cfg=None, incidents_path=None):
        self.pair_configs.append(cfg)
        return _pairs(), SimpleNamespace(ok=True, errors=[])

    def run_training(self, cfg: TrainConfig, pairs=None):
        self.configs.append(cfg)
        val = 0.7 - abs(np.log10(cfg.lr()) + 3) * 0.1
        run = self.tmp / f"run{len(self.configs)}"
        meta = {"best_validation_ndcg@10": val, "learning_rate": cfg.lr(),
                "best_checkpoint": f"{run}/checkpoints/checkpoint-{10 * len(self.configs)}",
                "base_validation": {"validation_ndcg@10": 0.6}, "global_steps": 40,
                "pairs": {"n_used": len(pairs)}, "train_seconds": 1.0}
        rec = {"ndcg@10": val - 0.01, "ndcg@10_ci": [val - 0.03, val + 0.01],
               "mrr@10": 0.5, "roc_auc": 0.7} if cfg.evaluate_test else None
        return SimpleNamespace(run_dir=run, meta=meta, test_record=rec)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    import itsm_core.evaluation.paired
    import itsm_core.training.finetune

    f = FakeTraining(tmp_path)
    monkeypatch.setattr(itsm_core.training.finetune, "make_pairs", f.make_pairs)
    monkeypatch.setattr(itsm_core.training.finetune, "run_training", f.run_training)
    monkeypatch.setattr(itsm_core.evaluation.paired, "paired_difference",
                        lambda a, b: {"diff": 0.01, "ci_low": -0.01, "ci_high": 0.03})
    return f


def test_sweep_never_evaluates_test_and_picks_best_on_validation(fake, tmp_path):
    table = ablation.run_sweep("learning_rate", ["2e-4", "1e-3", "5e-3"], max_pairs=64,
                               out_dir=tmp_path / "sweeps")
    assert [c.evaluate_test for c in fake.configs] == [False, False, False]
    assert [c.learning_rate for c in fake.configs] == [2e-4, 1e-3, 5e-3]
    assert all(c.max_pairs == 64 for c in fake.configs)
    assert table.loc[table["best"], "value"].tolist() == [1e-3]
    assert table["best_step"].tolist() == [10, 20, 30]
    written = list((tmp_path / "sweeps").glob("sweep_learning_rate_it_tickets_minilm_*.csv"))
    assert len(written) == 1 and len(pd.read_csv(written[0])) == 3
    assert ablation.latest_sweep("learning_rate", out_dir=tmp_path / "sweeps") is not None


def test_sweep_rejects_unknown_param_and_non_numbers(fake):
    with pytest.raises(ItsmError, match="cannot sweep"):
        ablation.run_sweep("scheduler", ["cosine"])
    with pytest.raises(ItsmError, match="not a number"):
        ablation.run_sweep("learning_rate", ["fast"])
    with pytest.raises(ItsmError, match="no values"):
        ablation.run_sweep("learning_rate", [])
    assert fake.configs == []


def test_ablation_switches_one_thing_per_variant(fake, tmp_path):
    table = ablation.run_ablation(
        variants=["recipe", "no_curriculum", "plus_tfidf_negatives",
                  "plus_embedding_negatives"], max_pairs=64, out_dir=tmp_path / "abl")
    by = {c.name.rsplit("-", 1)[-1]: c for c in fake.configs}
    assert by["recipe"].use_negatives is False and by["recipe"].curriculum is True
    assert by["no_curriculum"].curriculum is False
    assert by["plus_tfidf_negatives"].use_negatives is True
    # pairs are generated once per distinct pair configuration
    assert sorted(c.negatives for c in fake.pair_configs) == ["embedding", "tfidf"]
    assert table.loc[table["variant"] == "recipe", "test_diff_vs_recipe"].item() == 0.0
    assert {"val_ndcg@10", "test_ndcg@10_ci_low"} <= set(table.columns)


def test_ablation_rejects_unknown_variant(fake):
    with pytest.raises(ItsmError, match="unknown ablation variant"):
        ablation.run_ablation(variants=["recipe", "more_magic"])


def test_without_negatives_curriculum_phase_comes_from_positive_overlap_alone():
    pairs = _pairs(30)
    ds, phases = build_train_dataset(pairs, TrainConfig(use_negatives=False))
    assert "negative" not in ds.column_names
    lex = pd.Series(pairs.set_index("anchor")["lexical_pos"])
    ordered = lex.loc[ds["anchor"]].to_numpy()
    # easy pairs share the most words with their positive, hard ones the fewest
    easy, hard = ordered[phases == "easy"], ordered[phases == "hard"]
    assert easy.min() > hard.max()
    ds_neg, _ = build_train_dataset(pairs, TrainConfig(use_negatives=True))
    assert "negative" in ds_neg.column_names


def test_latest_ablation_merges_newest_row_per_variant_at_the_same_settings(tmp_path):
    import json

    def write(stem, rows, max_pairs):
        pd.DataFrame(rows).to_csv(tmp_path / f"{stem}.csv", index=False)
        (tmp_path / f"{stem}.json").write_text(json.dumps(
            {"model": "minilm", "profile": "default", "max_steps": None,
             "max_pairs": max_pairs}))

    write("ablation_it_tickets_minilm_20260101T000000Z",
          [{"variant": "recipe", "val_ndcg@10": 0.5}, {"variant": "no_curriculum",
                                                       "val_ndcg@10": 0.4}], 999)
    write("ablation_it_tickets_minilm_20260102T000000Z",
          [{"variant": "recipe", "val_ndcg@10": 0.6}, {"variant": "no_curriculum",
                                                       "val_ndcg@10": 0.55},
           {"variant": "plus_tfidf_negatives", "val_ndcg@10": 0.52}], 1280)
    write("ablation_it_tickets_minilm_20260103T000000Z",
          [{"variant": "plus_embedding_negatives", "val_ndcg@10": 0.58},
           {"variant": "recipe", "val_ndcg@10": 0.6}], 1280)
    table = ablation.latest_ablation("it_tickets", out_dir=tmp_path)
    assert table["variant"].tolist() == ["recipe", "no_curriculum", "plus_tfidf_negatives",
                                         "plus_embedding_negatives"]
    # the 999-pair file is a different budget: its rows never mix in
    assert table.set_index("variant")["val_ndcg@10"].to_dict() == {
        "recipe": 0.6, "no_curriculum": 0.55, "plus_tfidf_negatives": 0.52,
        "plus_embedding_negatives": 0.58}
    assert table.set_index("variant").loc["recipe", "file"].endswith("20260103T000000Z")
    assert ablation.latest_ablation("gitbugs_hadoop", out_dir=tmp_path) is None
