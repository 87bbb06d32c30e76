"""WiSE-FT: the fine-tune interpolated in weight space with its zero-shot base, the mixing
weight chosen on TWO validation signals (Wortsman et al., "Robust fine-tuning of zero-shot
models", 2022).

A fine-tune that gains on its own labels can forget what "the same problem" means in other
text (measured: the it_tickets fine-tune loses MRR@10 on gitbugs_hadoop duplicates it never
saw). ``θ(α) = θ_base + α · (θ_ft − θ_base)`` walks the line between the two models; with a
merged LoRA fine-tune this is exactly scaling the adapter (``W + α·s·BA``). For each α the
model is scored on

- the TARGET signal: the training data set's validation retrieval (NDCG@10, the checkpoint
  selection's benchmark), and
- the UNSEEN signal: retrieval on another data set the run never trained on, its train +
  validation queries only (:func:`itsm_core.evaluation.benchmark.decision_benchmark`); its
  test split is only reported, never used here.

:func:`choose_alpha` keeps the α with the best target score among those whose unseen score
is not more than ``tolerance`` below the base's (α = 0). Nothing here touches a test split.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

logger = logging.getLogger(__name__)

DEFAULT_ALPHAS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
FORGET_TOLERANCE = 0.01
"""How far the unseen-duplicate score may fall below the zero-shot base's (the issue's
bound for a recipe choice)."""


@dataclass
class WiseChoice:
    """The sweep and its decision (stored in ``train_meta.json`` under ``wise_ft``)."""

    alpha: float
    rows: list[dict[str, float]]
    target_metric: str
    unseen_metric: str
    unseen_dataset: str
    tolerance: float
    reason: str
    feasible: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def interpolate_state(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor],
                      alpha: float) -> dict[str, torch.Tensor]:
    """``base + alpha · (tuned − base)`` for every floating tensor; others from ``tuned``.

    Raises:
        ValueError: the two state dicts do not hold the same tensors (not one architecture).
    """
    if base.keys() != tuned.keys():
        missing = sorted(set(base) ^ set(tuned))[:5]
        raise ValueError(f"the models differ in their weights (e.g. {missing})")
    out = {}
    for k, t in tuned.items():
        b = base[k]
        if b.shape != t.shape:
            raise ValueError(f"weight {k} has shape {tuple(b.shape)} vs {tuple(t.shape)}")
        out[k] = torch.lerp(b.to(t.dtype), t, alpha) if t.is_floating_point() else t.clone()
    return out


def interpolated_model(base, tuned, alpha: float):  # noqa: ANN001 - SentenceTransformer
    """A copy of ``tuned`` carrying the weights ``θ(alpha)`` (``tuned`` is left as it is)."""
    model = copy.deepcopy(tuned)
    model.load_state_dict(interpolate_state(base.state_dict(), tuned.state_dict(), alpha))
    return model


def choose_alpha(rows: Sequence[dict[str, float]], *, target_metric: str, unseen_metric: str,
                 tolerance: float = FORGET_TOLERANCE, unseen_dataset: str = "") -> WiseChoice:
    """The α with the best target score whose unseen score stays within ``tolerance`` of
    the base's (the row with ``alpha == 0``). Ties go to the larger α (more of the tune).

    Args:
        rows: one dict per α with ``alpha``, ``target`` and ``unseen`` scores.
        target_metric / unseen_metric: what ``target`` / ``unseen`` measure (for the record).
        tolerance: allowed drop of the unseen score below the base's.

    Returns:
        :class:`WiseChoice`; α = 0 (the base model) when every α > 0 forgets more.
    """
    rows = sorted(rows, key=lambda r: r["alpha"])
    base = next((r for r in rows if r["alpha"] == 0.0), None)
    if base is None:
        raise ValueError("the sweep needs alpha = 0 (the base model) as the reference")
    floor = base["unseen"] - tolerance
    feasible = [r for r in rows if r["unseen"] >= floor - 1e-12]
    best = max(feasible, key=lambda r: (r["target"], r["alpha"]))
    full = rows[-1]
    if best is full:
        reason = (f"the full fine-tune (α = {full['alpha']:g}) keeps {unseen_metric} within "
                  f"{tolerance:g} of the base and has the best {target_metric}")
    elif best["alpha"] == 0.0:
        reason = (f"every α > 0 loses more than {tolerance:g} {unseen_metric} on "
                  f"{unseen_dataset or 'the unseen set'}: the base model is kept")
    else:
        reason = (f"α = {best['alpha']:g}: best {target_metric} ({best['target']:.4f}) among "
                  f"the α whose {unseen_metric} stays ≥ base − {tolerance:g} "
                  f"({floor:.4f}); the full fine-tune scores {full['target']:.4f} / "
                  f"{full['unseen']:.4f}")
    return WiseChoice(alpha=float(best["alpha"]), rows=[dict(r) for r in rows],
                      target_metric=target_metric, unseen_metric=unseen_metric,
                      unseen_dataset=unseen_dataset, tolerance=tolerance, reason=reason,
                      feasible=[float(r["alpha"]) for r in feasible])


def sweep(base, tuned, alphas: Sequence[float],  # noqa: ANN001 - SentenceTransformers
          score: Callable[[Any], dict[str, float]]) -> list[dict[str, float]]:
    """``score(model)`` of ``θ(α)`` for every α (``score`` returns ``target`` / ``unseen``
    and any other figures); α = 0 is always included."""
    rows = []
    for alpha in sorted({0.0, *map(float, alphas)}):
        model = base if alpha == 0.0 else tuned if alpha == 1.0 else \
            interpolated_model(base, tuned, alpha)
        model.eval()
        with torch.no_grad():
            row = {"alpha": alpha, **score(model)}
        logger.info("WiSE-FT α=%.2f: %s", alpha,
                    ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "alpha"))
        rows.append(row)
    return rows
