"""Training-throughput benchmark files: the newest one is what reports show."""

from __future__ import annotations

import json

import pytest

from itsm_core.experiments.throughput import latest_bench


def test_latest_bench_reads_the_newest_file_of_a_kind(tmp_path):
    assert latest_bench("train_throughput", tmp_path) is None
    for ts, ratio in (("20260101T000000Z", 1.1), ("20260301T000000Z", 1.3),
                      ("20260201T000000Z", 1.2)):
        (tmp_path / f"train_throughput_minilm_{ts}.json").write_text(
            json.dumps({"ratio_default_over_plain": ratio}))
    (tmp_path / "search_latency_20270101T000000Z.json").write_text("{}")
    assert latest_bench("train_throughput", tmp_path) == {"ratio_default_over_plain": 1.3}


@pytest.mark.weights
def test_train_throughput_times_both_recipes_with_the_recipes_own_loss(tiny_bundle, tmp_path):
    """Both recipes train the same pair sample; the default runs as `itsm train` would
    (its loss from build_loss, its precision), plain sentence-transformers in fp32."""
    from itsm_core.experiments.throughput import train_throughput
    from itsm_core.training.finetune import TrainConfig

    res = train_throughput("minilm", "tiny", steps=2, batch_size=4, max_seq_length=32,
                           out_dir=tmp_path, incidents_path=tiny_bundle["incidents"])
    assert res["plain_st_pairs_per_s"] > 0 and res["default_recipe_pairs_per_s"] > 0
    assert res["ratio_default_over_plain"] == pytest.approx(
        res["default_recipe_pairs_per_s"] / res["plain_st_pairs_per_s"], rel=0.01)
    assert res["default_precision"] == ("bf16" if TrainConfig().use_bf16() else "fp32")
    saved = json.loads(next(tmp_path.glob("train_throughput_minilm_*.json")).read_text())
    assert saved == res
