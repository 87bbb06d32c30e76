"""WiSE-FT: weight interpolation and the two-signal choice of the mixing weight."""

from __future__ import annotations

import pytest
import torch

from itsm_core.training.wiseft import choose_alpha, interpolate_state, interpolated_model, sweep


def _rows(*triples):
    return [{"alpha": a, "target": t, "unseen": u} for a, t, u in triples]


def test_the_best_target_among_the_alphas_that_do_not_forget_is_chosen():
    rows = _rows((0.0, 0.60, 0.50), (0.5, 0.66, 0.495), (0.75, 0.68, 0.47), (1.0, 0.69, 0.33))
    choice = choose_alpha(rows, target_metric="t", unseen_metric="u", tolerance=0.01)
    assert choice.alpha == 0.5
    assert choice.feasible == [0.0, 0.5]
    assert "0.5" in choice.reason and "full fine-tune scores 0.6900" in choice.reason


def test_a_tune_that_forgets_nothing_is_kept_whole_and_one_that_always_forgets_is_not():
    keep = choose_alpha(_rows((0.0, 0.6, 0.5), (0.5, 0.65, 0.5), (1.0, 0.7, 0.52)),
                        target_metric="t", unseen_metric="u")
    assert keep.alpha == 1.0 and "full fine-tune" in keep.reason
    drop = choose_alpha(_rows((0.0, 0.6, 0.5), (0.5, 0.7, 0.45), (1.0, 0.7, 0.3)),
                        target_metric="t", unseen_metric="u", unseen_dataset="gitbugs")
    assert drop.alpha == 0.0 and "base model is kept" in drop.reason


def test_the_choice_needs_the_base_model_as_reference():
    with pytest.raises(ValueError, match="alpha = 0"):
        choose_alpha(_rows((0.5, 0.6, 0.5), (1.0, 0.7, 0.5)), target_metric="t",
                     unseen_metric="u")


def test_interpolation_is_linear_in_every_float_weight_and_keeps_integer_buffers():
    base = {"w": torch.zeros(2, 2), "ids": torch.arange(3)}
    tuned = {"w": torch.ones(2, 2) * 4, "ids": torch.arange(3) + 1}
    mid = interpolate_state(base, tuned, 0.25)
    assert torch.equal(mid["w"], torch.ones(2, 2))
    assert torch.equal(mid["ids"], tuned["ids"])
    with pytest.raises(ValueError, match="differ"):
        interpolate_state({"w": base["w"]}, tuned, 0.5)
    with pytest.raises(ValueError, match="shape"):
        interpolate_state({"w": torch.zeros(3), "ids": base["ids"]}, tuned, 0.5)


def test_the_interpolated_model_sits_between_the_two_and_leaves_them_alone(tiny_model):
    from sentence_transformers import SentenceTransformer

    base = SentenceTransformer(str(tiny_model), device="cpu")
    tuned = SentenceTransformer(str(tiny_model), device="cpu")
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.1)
    before = {k: v.clone() for k, v in tuned.state_dict().items()}
    half = interpolated_model(base, tuned, 0.5)
    for k, v in half.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (base.state_dict()[k] + before[k]) / 2)
    assert all(torch.equal(v, before[k]) for k, v in tuned.state_dict().items())
    seen = []
    rows = sweep(base, tuned, (0.5, 1.0), lambda m: seen.append(m) or {"target": 0.0,
                                                                         "unseen": 0.0})
    assert [r["alpha"] for r in rows] == [0.0, 0.5, 1.0]
    assert seen[0] is base and seen[2] is tuned
