"""Training-throughput benchmark files: the newest one is what reports show."""

from __future__ import annotations

import json

from itsm_core.experiments.throughput import latest_bench


def test_latest_bench_reads_the_newest_file_of_a_kind(tmp_path):
    assert latest_bench("train_throughput", tmp_path) is None
    for ts, ratio in (("20260101T000000Z", 1.1), ("20260301T000000Z", 1.3),
                      ("20260201T000000Z", 1.2)):
        (tmp_path / f"train_throughput_minilm_{ts}.json").write_text(
            json.dumps({"ratio_default_over_plain": ratio}))
    (tmp_path / "search_latency_20270101T000000Z.json").write_text("{}")
    assert latest_bench("train_throughput", tmp_path) == {"ratio_default_over_plain": 1.3}
