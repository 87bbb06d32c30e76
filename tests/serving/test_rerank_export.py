"""The cross-encoder's ONNX export: fp32 is the model, INT8 agrees, the folder is a spec."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.mark.weights
def test_the_int8_export_of_a_cross_encoder_agrees_with_torch_and_is_a_spec(
        tiny_model, tmp_path):
    """Export a (random, untrained) cross-encoder; its INT8 scores order pairs like torch
    and the export folder plugs into a rerank: spec."""
    from sentence_transformers import CrossEncoder

    from itsm_core.encoders.factory import load_scorer
    from itsm_core.encoders.rerank import CE_EXPORT_FILE, OnnxCrossEncoder
    from itsm_core.serving.export import export_reranker

    ce_dir = tmp_path / "ce"
    CrossEncoder(str(tiny_model), num_labels=1, max_length=64, device="cpu",
                 local_files_only=True).save_pretrained(str(ce_dir))
    pairs = [("vpn drops every hour", "vpn disconnects"), ("printer jam", "toner empty"),
             ("outlook will not open", "mail client crashes"), ("a", "b"),
             ("laptop screen flickers", "display flicker after update")] * 4
    folder = export_reranker(ce_dir, tmp_path / "onnx", pairs=pairs)
    meta = json.loads((folder / CE_EXPORT_FILE).read_text())
    by = {r["backend"]: r for r in meta["agreement"]["rows"]}
    assert set(by) == {"torch fp32", "onnx fp32", "onnx int8"}
    assert by["onnx fp32"]["max_abs_diff"] < 1e-4  # the graph is the model
    assert by["onnx int8"]["max_abs_diff"] < 0.05
    torch_scores = CrossEncoder(str(ce_dir), device="cpu").predict(pairs)
    np.testing.assert_allclose(OnnxCrossEncoder(folder, "fp32").predict(pairs),
                               torch_scores, atol=1e-4)
    scorer = load_scorer(f"rerank:{folder}@tfidf#3", show_progress=False)
    assert isinstance(scorer.cross_encoder, OnnxCrossEncoder)
    assert scorer.score_matrix(["vpn drops"], ["vpn disconnects", "toner"]).shape == (1, 2)
