"""Benchmarks that print figures (never timed tests).

``train_throughput`` measures pairs/second of the default training recipe against the
plain sentence-transformers recipe (full fine-tuning, MNRL, default sampler) on the
same pairs, side by side in one process, so the ratio is meaningful on any machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from itsm_core.core.config import RESULTS_DIR, SEED
from itsm_core.core.io import atomic_write_json, git_commit, timestamp


@dataclass
class ThroughputResult:
    recipe: str
    steps: int
    pairs: int
    seconds: float

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds if self.seconds else float("nan")


def _time_recipe(name: str, cfg, pairs: pd.DataFrame, *, steps: int,  # noqa: ANN001
                 max_seq_length: int) -> ThroughputResult:
    """Train ``steps`` steps of ``cfg`` (a :class:`~itsm_core.training.finetune.TrainConfig`)
    with the recipe's own pieces: :func:`~itsm_core.training.finetune.build_loss`, its
    sampler, LoRA and precision."""
    import functools

    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers

    from itsm_core.encoders.registry import load_sentence_transformer
    from itsm_core.training.finetune import (
        PhaseOrderedBatchSampler,
        add_lora,
        build_loss,
        build_train_dataset,
        load_guide,
    )

    # the caller passes the SAME pair sample to every recipe: one epoch over it, so the
    # recipes differ only in how they process identical texts (not in which texts)
    ds, phases = build_train_dataset(pairs, cfg)
    model, spec = load_sentence_transformer(cfg.model)
    model.max_seq_length = max_seq_length
    if cfg.mode == "lora":
        add_lora(model, spec, cfg)
    _, loss = build_loss(model, spec, cfg, load_guide(cfg))
    sampler = (functools.partial(PhaseOrderedBatchSampler, phases=tuple(phases))
               if cfg.curriculum else BatchSamplers.BATCH_SAMPLER)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(Path("/tmp") / f"itsm_bench_{name}"), max_steps=steps,
        per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.lr(),
        save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(),
        batch_sampler=sampler, logging_steps=10**6, disable_tqdm=True, seed=SEED,
        bf16=cfg.use_bf16())
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss)
    t0 = time.perf_counter()
    trainer.train()
    secs = time.perf_counter() - t0
    return ThroughputResult(name, trainer.state.global_step,
                            trainer.state.global_step * cfg.batch_size, secs)


def train_throughput(model_spec: str = "minilm", dataset: str = "it_tickets", steps: int = 20,
                     batch_size: int = 32, max_seq_length: int = 128,
                     out_dir: str | Path | None = None,
                     incidents_path: str | Path | None = None) -> dict[str, Any]:
    """Pairs/s of the default recipe vs the plain sentence-transformers recipe, side by side.

    Args:
        model_spec: the model both recipes train; dataset: whose training pairs.
        steps, batch_size, max_seq_length: the budget both get.
        out_dir: where the JSON goes (default ``models/results/bench``).
        incidents_path: another processed incidents file instead of ``dataset``'s.

    Returns:
        Both pairs/s figures, their ratio and what each recipe was (the default is
        :class:`~itsm_core.training.finetune.TrainConfig` as it trains, precision included;
        plain = full fine-tune, MNRL, random batches, fp32).
    """
    from itsm_core.training.finetune import TrainConfig, make_pairs

    recipe = TrainConfig(model=model_spec, batch_size=batch_size, seed=SEED)
    plain_cfg = TrainConfig(model=model_spec, batch_size=batch_size, seed=SEED, mode="full",
                            matryoshka=False, label_aware=False, curriculum=False,
                            guide=None, precision="fp32",
                            use_negatives=recipe.use_negatives)
    pairs, _ = make_pairs(dataset, incidents_path=incidents_path)
    if recipe.use_negatives:
        pairs = pairs[pairs["negative"].notna()]
    pairs = pairs.sample(steps * batch_size, random_state=SEED)
    # both recipes see the same texts: (anchor, positive[, negative]) as the recipe uses them
    plain = _time_recipe("plain_st", plain_cfg, pairs, steps=steps,
                         max_seq_length=max_seq_length)
    ours = _time_recipe("default_recipe", recipe, pairs, steps=steps,
                        max_seq_length=max_seq_length)
    result = {
        "model": model_spec, "dataset": dataset, "steps": steps, "batch_size": batch_size,
        "max_seq_length": max_seq_length, "threads": torch.get_num_threads(),
        "plain_st_pairs_per_s": round(plain.pairs_per_second, 2),
        "default_recipe_pairs_per_s": round(ours.pairs_per_second, 2),
        "ratio_default_over_plain": round(ours.pairs_per_second / plain.pairs_per_second, 3),
        "default_precision": "bf16" if recipe.use_bf16() else "fp32",
        "note": "plain = full fine-tune, MNRL, random batches, fp32; default = the recipe "
                "as it trains (LoRA, MatryoshkaLoss(label-aware MNRL), curriculum sampler, "
                "its precision); both run one epoch over the same sample of steps x "
                "batch_size pairs (triplets when the recipe uses hard negatives)",
        "recipe_uses_negatives": recipe.use_negatives, "git_commit": git_commit(),
    }
    out = Path(out_dir or RESULTS_DIR / "bench")
    atomic_write_json(out / f"train_throughput_{model_spec}_{timestamp()}.json", result)
    return result


def latest_bench(kind: str = "train_throughput", out_dir: str | Path | None = None
                 ) -> dict[str, Any] | None:
    """The newest benchmark JSON of a kind (for reports), or None."""
    from itsm_core.runs.store import latest_json

    return latest_json(out_dir or RESULTS_DIR / "bench", f"{kind}_*.json")
