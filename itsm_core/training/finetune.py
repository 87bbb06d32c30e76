"""Supervised fine-tuning: LoRA (peft) or full, MatryoshkaLoss over MNRL, curriculum.

The recipe (all parts switchable, so the ablation can measure each):

- data: training pairs from :func:`itsm_core.pairs.training.generate_training_pairs` (training
  split only; ``validate_pairs`` must pass — leakage is an error);
- loss: ``MatryoshkaLoss(LabelAwareMNRL)`` with the model's Matryoshka dims; in-batch
  "negatives" that share the anchor's fine label are masked out (they are not negatives);
  or, with a guide model, ``MatryoshkaLoss(GISTEmbedLoss)``: negatives the guide scores
  above the positive are masked instead (:func:`build_loss`);
- curriculum: rows ordered easy → medium → hard and fed by a phase-ordered batch sampler
  under ONE optimizer and ONE cosine schedule (warm-up 15 %, weight decay 0.01);
- adapters: LoRA via ``model.add_adapter`` with the registry's target modules, or full
  fine-tuning;
- selection: NDCG@10 on the *validation* split (evaluate_v2 retrieval, same code as the
  benchmark), best checkpoint restored, early stopping; the test split is only touched
  by the final evaluate_v2 run.

Every run writes a new directory under ``models/`` with the adapter, merged weights,
``itsm_model.json`` (base spec) and ``train_meta.json`` (real hyper-parameters, data
hashes, commit, loss/validation history), then evaluates on test and appends the
leaderboard.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sentence_transformers.base.sampler import DefaultBatchSampler
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from itsm_core.core.config import LEADERBOARD_CSV, MODELS_DIR, SEED, reuse_runs
from itsm_core.core.errors import ItsmError
from itsm_core.core.io import (
    atomic_write_json,
    git_commit,
    read_run_json,
    sha256_file,
    unique_run_dir,
)
from itsm_core.metrics import stats as M

logger = logging.getLogger(__name__)

DEFAULT_LR = {"full": 2e-5, "lora": 1e-3}
"""Full fine-tuning keeps the seed's 2e-5. The LoRA default was chosen on VALIDATION
NDCG@10 with ``itsm sweep`` (MiniLM, it_tickets; README "Choices made on validation"):
at 1,280 pairs 2e-4 / 5e-4 / 1e-3 / 2e-3 gave 0.627 / 0.666 / 0.688 / 0.683, and at the
default budget (3,840 pairs) 5e-4 / 1e-3 gave 0.685 / 0.692."""


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (stored verbatim in ``train_meta.json``)."""

    model: str = "minilm"
    dataset: str = "it_tickets"
    pairs: str | None = None
    mode: str = "lora"
    learning_rate: float | None = None
    lora_r: int = 16
    lora_alpha: int = 32
    # measured on 2 CPU cores (MiniLM, batch 32x3 texts): LoRA dropout 0.1 costs 8.7 s a
    # step against 4.7 s without (full fine-tuning: 5.3 s), so the default is 0.0
    lora_dropout: float = 0.0
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 32
    warmup_ratio: float = 0.15
    weight_decay: float = 0.01
    scheduler: str = "cosine"
    curriculum: bool = True
    # chosen on validation (README, "Choices made on validation"): at 1,280 pairs TF-IDF-band
    # hard negatives gave 0.611 validation NDCG@10 against 0.656 without them
    use_negatives: bool = False
    label_aware: bool = True
    matryoshka: bool = True
    max_seq_length: int = 128
    eval_steps: int = 50
    early_stopping_patience: int = 4
    mnrl_scale: float = 20.0
    max_validation_corpus: int = 1000
    max_pairs: int | None = None
    seed: int = SEED
    merge: bool = True
    name: str | None = None
    output_dir: str | None = None
    resume_from_checkpoint: str | None = None
    evaluate_test: bool = True
    unseen_dataset: str | None = "auto"
    """Also evaluate (test split, reported only, never used for a choice) on a data set the
    run was not trained on, to measure what it forgets: ``auto`` = the other bundled data
    set (gitbugs_hadoop for it_tickets and every other data set, it_tickets for
    gitbugs_hadoop) when it is built; None = skip."""
    wise_ft: tuple[float, ...] | None = (0.0, 0.25, 0.5, 0.75, 1.0)
    """WiSE-FT mixing weights tried after training (:mod:`itsm_core.training.wiseft`): the
    saved model is ``base + α·(tune − base)`` with α chosen on the target's validation
    NDCG@10 and the unseen data set's train + validation retrieval (needs a merged or full
    fine-tune and a built unseen data set); None = keep the tune as trained."""
    forget_tolerance: float = 0.01
    """How far the unseen score may fall below the base model's for an α to be chosen."""
    guide: str | None = None
    """False-negative-aware training: a guide model (a registry key, a model folder, or
    ``base`` = the zero-shot base model) for GISTEmbedLoss inside Matryoshka — in-batch and
    mined negatives that the guide scores above the anchor's positive are left out of the
    loss. None = label-aware (or plain) MNRL."""
    guide_margin: float = 0.0
    """GISTEmbedLoss's absolute margin: a candidate is dropped when the guide scores it
    above (positive − margin)."""
    anchor_weight: float = 10.0
    """Weight of a drift penalty against forgetting (:class:`AnchoredLoss`): the loss adds
    ``anchor_weight · mean(1 − cos(tuned(anchor), base(anchor)))`` over each batch's anchor
    texts, the base model frozen — embeddings move only as far as the contrastive loss pays
    for. 0 = off. Chosen on validation (README, "Drift penalty"; fp32, default pairs and
    120 steps; it_tickets validation NDCG@10 / gitbugs_hadoop train+validation MRR@10 of
    the kept model, base 0.617 / 0.568): W = 0 keeps its WiSE-FT α = 0.25 mix at
    0.668 / 0.579, W = 3 0.656 / 0.570, W = 10 the tune itself at 0.689 / 0.562, W = 20
    0.684 / 0.578 — W = 10 has the best target among the weights whose unseen score stays
    within ``forget_tolerance`` of the base, the rule WiSE-FT's α follows."""
    precision: str = "auto"
    """Training arithmetic: ``fp32``, ``bf16`` (torch autocast; weights and optimizer stay
    fp32) or ``auto`` (bf16 on CPUs with native bf16 — AVX-512 BF16 / AMX — or a bf16 GPU,
    else fp32). The resolved value is recorded in ``train_meta.json``. ``auto`` was chosen
    on validation: the default recipe in bf16 reached 0.6914 validation NDCG@10 against
    0.6916 in fp32, the same WiSE-FT α, in 272 s of training instead of 382 s."""
    gradient_checkpointing: bool = False
    """Keep only each encoder layer's input during the forward pass and recompute the rest
    in the backward pass (:func:`enable_gradient_checkpointing`): the same gradients for
    far less memory, at the cost of one more forward pass per step. For 768-d models on a
    small machine (README, "Memory")."""
    extra: dict[str, Any] = field(default_factory=dict)
    reuse: bool = field(default_factory=reuse_runs)
    """Return the finished run of an identical recipe instead of training again (see
    :func:`recipe_key`); ``ITSM_REUSE_RUNS=0`` or ``itsm train --fresh`` turns it off."""

    def lr(self) -> float:
        if self.mode not in DEFAULT_LR:
            raise ItsmError(f"unknown training mode {self.mode!r}", where="--mode",
                            fix="use 'lora' or 'full'")
        return self.learning_rate or DEFAULT_LR[self.mode]

    def use_bf16(self) -> bool:
        """Whether this run trains under bf16 autocast (``precision`` resolved here)."""
        if self.precision not in ("fp32", "bf16", "auto"):
            raise ItsmError(f"unknown training precision {self.precision!r}",
                            where="precision", fix="use 'fp32', 'bf16' or 'auto'")
        if self.precision != "auto":
            return self.precision == "bf16"
        if torch.cuda.is_available():
            return torch.cuda.is_bf16_supported()
        from itsm_core.core.compat import cpu_has

        return cpu_has("avx512_bf16", "amx_bf16")


# ----------------------------------------------------------------------------- pieces


class LabelAwareMNRL(MultipleNegativesRankingLoss):
    """MNRL whose in-batch negatives never share the anchor's label.

    ``labels`` per row is ``[anchor_class, negative_class]`` (``-1`` = unknown). A batch
    often holds several incidents of one class (and augmented copies of one pair); plain
    MNRL would push them apart as negatives. Here the logits of (anchor i, positive or
    negative j≠i) are masked to -inf whenever j's class equals i's class.
    """

    def compute_loss_from_embeddings(self, embeddings, labels):
        if not isinstance(labels, torch.Tensor) or labels.ndim != 2:
            return super().compute_loss_from_embeddings(embeddings, labels)
        anchor_cls = labels[:, 0]
        n = anchor_cls.size(0)
        blocks = [anchor_cls[:, None] == anchor_cls[None, :]]
        if len(embeddings) > 2:
            blocks.append(anchor_cls[:, None] == labels[None, :, 1])
        mask = torch.cat(blocks, dim=1) & (anchor_cls[:, None] >= 0)
        mask[torch.arange(n), torch.arange(n)] = False  # never mask the true positive
        base = self.similarity_fct

        def masked(a, b):
            s = base(a, b)
            return s.masked_fill(mask, float("-inf")) if s.shape == mask.shape else s

        self.similarity_fct = masked
        try:
            return super().compute_loss_from_embeddings(embeddings, labels)
        finally:
            self.similarity_fct = base


class MemoForward:
    """A frozen guide's forward with the last few batches remembered by content.

    MatryoshkaLoss calls the inner loss once per Matryoshka dimension, and GISTEmbedLoss runs
    its guide on every call: without this, the guide encodes the same batch once per
    dimension (4x for MiniLM's 384/256/128/64). The key is a hash of the token ids and the
    attention mask, so a hit is the same input; the guide runs under ``no_grad`` in eval
    mode, so its output for one input is the same.
    """

    def __init__(self, forward, size: int = 3):
        self.forward, self.size = forward, size
        self.memo: dict[bytes, dict[str, torch.Tensor]] = {}
        self.stats = {"hits": 0, "misses": 0}

    @staticmethod
    def key(features: dict[str, torch.Tensor]) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        for name in ("input_ids", "attention_mask"):
            t = features.get(name)
            if t is not None:
                h.update(str(tuple(t.shape)).encode())
                h.update(t.detach().cpu().numpy().tobytes())
        return h.digest()

    def __call__(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        k = self.key(features)
        if k in self.memo:
            self.stats["hits"] += 1
            features.update(self.memo[k])
            return features
        self.stats["misses"] += 1
        out = self.forward(features)
        self.memo[k] = {n: v for n, v in out.items() if isinstance(v, torch.Tensor)
                        and n not in ("input_ids", "attention_mask", "token_type_ids")}
        while len(self.memo) > self.size:
            self.memo.pop(next(iter(self.memo)))
        return out


def frozen_model(spec: str):
    """A model for reference only (a guide, the drift anchor): eval mode, no gradients,
    forward memoised (:class:`MemoForward`)."""
    from itsm_core.encoders.registry import load_sentence_transformer

    model, _ = load_sentence_transformer(spec)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    model.forward = MemoForward(model.forward)
    return model


def load_guide(cfg: TrainConfig):
    """The frozen guide model of a guided run (``cfg.guide``); None when the run has no
    guide."""
    if not cfg.guide:
        return None
    return frozen_model(cfg.model if cfg.guide == "base" else cfg.guide)


class AnchoredLoss(torch.nn.Module):
    """``loss`` plus a drift penalty that keeps the tuned embeddings near the base model's.

    ``weight · mean(1 − cos(model(anchor), base(anchor)))`` over the batch's first column
    (the anchor incidents), ``base`` frozen. A feature-space form of L2-SP / learning without
    forgetting: where WiSE-FT mixes the weights after training, this limits how far the
    geometry moves during it. It costs one more forward + backward of the anchor column
    (the inner loss's own embeddings are not exposed) and a no-grad forward of the base.
    """

    def __init__(self, model, loss: torch.nn.Module, base, weight: float):  # noqa: ANN001
        super().__init__()
        self.model, self.loss, self.base, self.weight = model, loss, base, float(weight)
        self.last_drift = float("nan")

    def forward(self, sentence_features, labels):  # noqa: ANN001 - the loss signature
        value = self.loss(sentence_features, labels)
        anchor = {k: v for k, v in sentence_features[0].items()
                  if k in ("input_ids", "attention_mask", "token_type_ids")}
        tuned = self.model(dict(anchor))["sentence_embedding"]
        with torch.no_grad():
            ref = self.base(dict(anchor))["sentence_embedding"]
        drift = 1.0 - torch.nn.functional.cosine_similarity(tuned, ref.to(tuned.dtype)).mean()
        self.last_drift = float(drift.detach())
        return value + self.weight * drift


def build_loss(model, spec, cfg: TrainConfig, guide=None):  # noqa: ANN001
    """The recipe's loss: ``(inner, loss)`` with ``loss`` = MatryoshkaLoss(inner) over the
    model's Matryoshka dims (or ``inner`` alone without Matryoshka).

    ``inner`` is GISTEmbedLoss with ``guide`` (temperature 1/``mnrl_scale``, like MNRL's
    scale; anchor–positive and anchor–negative logits only, as in MNRL), else label-aware
    MNRL, else plain MNRL. With ``cfg.anchor_weight``, ``loss`` is wrapped in
    :class:`AnchoredLoss` (drift to the frozen base).
    """
    from sentence_transformers.sentence_transformer.losses import (
        GISTEmbedLoss,
        MatryoshkaLoss,
    )

    if not (cfg.anchor_weight >= 0.0 and math.isfinite(cfg.anchor_weight)):
        raise ItsmError(f"anchor weight {cfg.anchor_weight} is not a weight: a negative "
                        "penalty would push the embeddings away from the base model",
                        where="--anchor-weight", fix="use 0 (off) or a positive number, "
                        "e.g. --anchor-weight 10")
    if guide is not None:
        inner = GISTEmbedLoss(model, guide=guide, temperature=1.0 / cfg.mnrl_scale,
                              margin_strategy="absolute", margin=cfg.guide_margin,
                              contrast_anchors=False, contrast_positives=False)
    elif cfg.label_aware:
        inner = LabelAwareMNRL(model, scale=cfg.mnrl_scale)
    else:
        inner = MultipleNegativesRankingLoss(model, scale=cfg.mnrl_scale)
    dims = [d for d in spec.eval_dims if d <= spec.dim]
    loss = MatryoshkaLoss(model, inner, matryoshka_dims=dims) if cfg.matryoshka else inner
    if cfg.anchor_weight:
        loss = AnchoredLoss(model, loss, frozen_model(cfg.model), cfg.anchor_weight)
    return inner, loss


class PhaseOrderedBatchSampler(DefaultBatchSampler):
    """Batches shuffled within each curriculum phase; phases in easy → medium → hard order.

    Rows of one batch never mix phases, and every epoch replays the curriculum under the
    trainer's single optimizer and schedule. Pass it to the trainer as
    ``functools.partial(PhaseOrderedBatchSampler, phases=...)`` (picklable).
    """

    ORDER = {"easy": 0, "medium": 1, "hard": 2}

    def __init__(self, dataset, batch_size, drop_last, valid_label_columns=None,
                 generator=None, seed=0, phases: tuple[str, ...] = ()):
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator,
                         seed=seed)
        if len(dataset) != len(phases):
            raise ValueError("dataset and phase list differ in length")
        self.phase_idx = np.array([self.ORDER.get(p, 1) for p in phases])

    def _batches(self):
        rng = np.random.default_rng(self.seed + getattr(self, "epoch", 0))
        for p in range(3):
            idx = rng.permutation(np.where(self.phase_idx == p)[0])
            for s in range(0, len(idx), self.batch_size):
                b = idx[s:s + self.batch_size]
                if len(b) == self.batch_size or not self.drop_last:
                    yield b.tolist()

    def __iter__(self):
        yield from self._batches()

    def __len__(self):
        return sum(1 for _ in self._batches())


def subsample_corpus(bench, max_corpus: int, seed: int = SEED):
    """The benchmark with its corpus cut to ``max_corpus`` documents for fast selection.

    Every document relevant to some query is kept; the rest is a seeded sample. Used only
    for checkpoint selection on validation (the reported test numbers use the full
    corpus).
    """
    if len(bench.corpus_ids) <= max_corpus:
        return bench
    relevant = np.where(bench.grades.max(axis=0) > 0)[0]
    others = np.setdiff1d(np.arange(len(bench.corpus_ids)), relevant)
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([relevant, rng.choice(
        others, size=max(0, max_corpus - len(relevant)), replace=False)]))
    return replace(bench, corpus_ids=[bench.corpus_ids[i] for i in keep],
                   grades=bench.grades[:, keep])


def in_memory_scorer(spec, model):  # noqa: ANN001
    """A DenseScorer over a model being trained, at the inference precision of every other
    torch encoder (``ITSM_PRECISION``, :func:`itsm_core.encoders.cache.precision`), never
    cached (its weights change between calls)."""
    from itsm_core.encoders.cache import wrap_encoder
    from itsm_core.encoders.scorers import DenseScorer

    return DenseScorer(spec, model=wrap_encoder(model, spec.key, None, cache=False),
                       show_progress=False)


def validation_evaluator(bench, spec, name: str = "validation"):
    """A sentence-transformers evaluator running evaluate_v2 retrieval on validation.

    Uses the same scoring and metric code as the benchmark, so model selection and the
    final report measure the same thing — on different splits.
    """
    from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

    from itsm_core.encoders.cache import wrap_encoder
    from itsm_core.encoders.scorers import DenseScorer
    from itsm_core.evaluation.benchmark import _masked_scores

    class RetrievalValidationEvaluator(SentenceEvaluator):
        def __init__(self):
            super().__init__()
            self.name = name
            self.bench = bench
            self.primary_metric = "ndcg@10"

        def __call__(self, model, output_path=None, epoch=-1, steps=-1, *,
                     cache_path: str | None = None):
            # cache_path: the folder of the weights ``model`` carries unchanged (the
            # zero-shot pass): its vectors may come from the embedding cache
            scorer = (DenseScorer(spec, model=wrap_encoder(model, str(cache_path), cache_path),
                                  show_progress=False)
                      if cache_path else in_memory_scorer(spec, model))
            was_training = model.training
            model.eval()
            with torch.no_grad():
                pq = M.retrieval_metrics_per_query(_masked_scores(scorer, bench, None),
                                                   bench.grades)
            if was_training:
                model.train()
            metrics = {m: float(pq[m].mean()) for m in ("ndcg@10", "mrr@10", "map@100",
                                                         "hit@10")}
            return self.prefix_name_to_metrics(metrics, self.name)

    return RetrievalValidationEvaluator()


def add_lora(model, spec, cfg: TrainConfig) -> None:
    """Wrap the registry's target modules with LoRA adapters (peft via add_adapter)."""
    from peft import LoraConfig, TaskType

    model.add_adapter(LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=list(spec.lora_target_modules), exclude_modules=r".*pooler.*",
        task_type=TaskType.FEATURE_EXTRACTION,
    ))


def _encoder_layers(network: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a BERT-style encoder (``….encoder.layer``), peft-wrapped
    or not."""
    for name, module in network.named_modules():
        if isinstance(module, torch.nn.ModuleList) and (
                name == "encoder.layer" or name.endswith(".encoder.layer")):
            return list(module)
    return []


def _checkpointed(forward):  # noqa: ANN001, ANN202 - wraps any module forward
    """``forward`` recomputed in the backward pass when it runs with gradients."""
    from torch.utils.checkpoint import checkpoint

    @functools.wraps(forward)
    def run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    run.itsm_checkpointed = True
    return run


def enable_gradient_checkpointing(model) -> str:  # noqa: ANN001
    """Turn on activation (gradient) checkpointing for a SentenceTransformer's backbone.

    transformers' own ``activation_checkpointing_enable`` where the model class supports it
    (BERT / MiniLM, most newer encoders); otherwise each ``encoder.layer`` block's forward is
    wrapped in ``torch.utils.checkpoint`` (non-reentrant, RNG state kept, so dropout masks
    and gradients are those of a plain step). MPNet needs the second path: its transformers
    class declares no checkpointing support, and the library call skips it with a warning
    and keeps every activation (measured: ~20 GB for one batch of the default recipe).

    Args:
        model: a SentenceTransformer, before or after LoRA adapters are added.

    Returns:
        How checkpointing was enabled: ``transformers`` or ``per-layer``.

    Raises:
        ItsmError: the backbone neither supports checkpointing nor has encoder blocks.
    """
    network = model[0].auto_model
    if getattr(network, "supports_gradient_checkpointing", False):
        network.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False})
        return "transformers"
    layers = _encoder_layers(network)
    if not layers:
        raise ItsmError(
            f"gradient checkpointing is not available for {type(network).__name__}: it "
            "declares no support and has no encoder.layer blocks to wrap",
            where="--gradient-checkpointing", fix="train without --gradient-checkpointing "
            "(or with a smaller --batch-size)")
    for layer in layers:
        if not getattr(layer.forward, "itsm_checkpointed", False):  # once, not nested
            layer.forward = _checkpointed(layer.forward)
    return "per-layer"


def merge_adapter(base: str, adapter_dir: str | Path, max_seq_length: int | None = None):
    """Base model + saved LoRA adapter merged into plain weights (peft merge_and_unload).

    The merged model needs neither peft nor the adapter to load, and exports to ONNX like
    any other model.
    """
    from peft import PeftModel

    from itsm_core.encoders.registry import load_sentence_transformer

    model, _ = load_sentence_transformer(base)
    module = model[0]
    merged = PeftModel.from_pretrained(module.auto_model, str(adapter_dir)).merge_and_unload()
    # sentence-transformers 5 keeps the network in ``model`` (``auto_model`` is a read-only
    # alias): assigning ``auto_model`` would register the network a second time
    module.model = merged
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def lora_wrapped_modules(model) -> list[str]:
    """Names of modules that carry LoRA weights (for checks and metadata)."""
    return sorted({n.rsplit(".lora_", 1)[0] for n, _ in model.named_parameters()
                   if ".lora_" in n})


def validation_selected_args(run_dir: Path, cfg: Any, eval_steps: int,
                             scheduler: str = "linear"):
    """Trainer arguments of the auxiliary trainers (SimCSE / TSDAE, distillation).

    Checkpoints every ``eval_steps``, best one by validation NDCG@10 restored at the end;
    ``cfg`` supplies epochs, max_steps, batch_size, learning_rate, warmup_ratio,
    weight_decay and seed. Plain random batches, last partial batch dropped.
    """
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    return SentenceTransformerTrainingArguments(
        output_dir=str(run_dir / "checkpoints"), num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, lr_scheduler_type=scheduler, seed=cfg.seed,
        data_seed=cfg.seed, batch_sampler=BatchSamplers.BATCH_SAMPLER,
        eval_strategy="steps", eval_steps=eval_steps, save_strategy="steps",
        save_steps=eval_steps, save_total_limit=2, load_best_model_at_end=True,
        metric_for_best_model="eval_validation_ndcg@10", greater_is_better=True,
        logging_steps=max(1, eval_steps // 4), report_to="none",
        use_cpu=not torch.cuda.is_available(), dataloader_drop_last=True, disable_tqdm=False,
    )


def build_train_dataset(pairs: pd.DataFrame, cfg: TrainConfig):
    """``datasets.Dataset`` with anchor, positive[, negative], label — in curriculum order."""
    from datasets import Dataset

    from itsm_core.pairs.training import order_by_curriculum

    p = pairs.copy()
    use_neg = cfg.use_negatives and "negative" in p and p["negative"].notna().any()
    if use_neg:
        p = p[p["negative"].notna()]
    elif "negative" in p and "lexical_pos" in p:
        # without negatives, a pair's difficulty is its positive's word overlap alone
        from itsm_core.pairs.training import assign_phases

        p["phase"] = assign_phases(p["lexical_pos"].to_numpy(float),
                                   np.full(len(p), np.nan), _phase_shares(pairs))
    if cfg.max_pairs and len(p) > cfg.max_pairs:  # budget: same share from every phase
        p = p.groupby("phase", group_keys=False).sample(
            frac=cfg.max_pairs / len(p), random_state=cfg.seed)
    p = order_by_curriculum(p, cfg.seed) if cfg.curriculum else p.sample(
        frac=1.0, random_state=cfg.seed)
    cols = {"anchor": p["anchor"].tolist(), "positive": p["positive"].tolist()}
    if use_neg:
        cols["negative"] = p["negative"].tolist()
    neg_label = p.get("negative_label", pd.Series(-1, index=p.index)).fillna(-1)
    cols["label"] = [[int(a), int(b)] for a, b in zip(p["label"], neg_label)]
    return Dataset.from_dict(cols), p["phase"].to_numpy()


def _phase_shares(pairs: pd.DataFrame) -> tuple[float, float, float]:
    """The curriculum shares the pairs were generated with (default thirds)."""
    shares = (pairs.attrs.get("meta", {}).get("config", {}) or {}).get("phase_shares")
    return tuple(shares) if shares and len(shares) == 3 else (1 / 3, 1 / 3, 1 / 3)


def negative_labels(pairs: pd.DataFrame, incidents: pd.DataFrame, labels: list[str]
                    ) -> pd.Series:
    """Class id of each pair's negative (same ids as the anchors' ``label``), -1 if none."""
    lab = incidents.set_index("number")[labels].astype("string")
    key = lab.fillna("").agg("\x1f".join, axis=1).where(lab.notna().all(axis=1))
    anchor_key = pairs["anchor_id"].map(key)
    cls = dict(zip(anchor_key, pairs["label"]))
    return pairs["negative_id"].map(key).map(cls).fillna(-1).astype(int)


# ----------------------------------------------------------------------------- run


PROFILES: dict[str, dict[str, Any]] = {
    # MiniLM on 2 CPU cores: 120 steps of 32 (anchor, positive) pairs, ~6.5 min of training
    # (387 s in the learning-rate sweep) plus four validation passes
    "default": {"epochs": 1.0, "batch_size": 32, "eval_steps": 30, "max_pairs": 3840},
    # the longer run (GPU or patient CPU)
    "full": {"epochs": 3.0, "batch_size": 64, "eval_steps": 100,
             "early_stopping_patience": 6},
    # a few steps, for smoke tests
    "smoke": {"max_steps": 4, "batch_size": 8, "eval_steps": 2, "evaluate_test": False},
}


def config_for_profile(profile: str = "default", **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a named profile plus explicit overrides."""
    from itsm_core.core.profiles import config_from_profile

    return config_from_profile(TrainConfig, PROFILES, profile, overrides)


def make_pairs(dataset: str, cfg=None, incidents_path: str | Path | None = None):
    """Generate and validate training pairs for a bundled data set (or incidents file).

    Args:
        dataset: bundled data set; cfg: :class:`~itsm_core.pairs.training.TrainPairConfig`.
        incidents_path: another processed incidents file instead.

    Returns:
        ``(pairs, quality_report)``; the caller decides what to do with errors.
    """
    from itsm_core.data.corpus import load_corpus
    from itsm_core.data.datasets import processed_path
    from itsm_core.data.incidents import load_links
    from itsm_core.pairs.training import (
        TrainPairConfig,
        generate_training_pairs,
        read_pair_file,
        validate_pairs,
    )

    inc_path = Path(incidents_path) if incidents_path else processed_path(dataset)
    corpus = load_corpus(inc_path)
    side = corpus.manifest
    labels = list(side.labels) if side and side.labels else []
    cfg = cfg or TrainPairConfig()
    if labels:
        cfg.labels = labels
    incidents, texts = corpus.incidents, corpus.texts
    mined = cfg.negatives in ("embedding", "both")
    key = None if mined else pairs_key(inc_path, corpus.links_path, cfg)
    written = written_pairs(key) if key else None
    if written is not None:
        pairs = read_pair_file(written)
        pairs.attrs["meta"]["reused_from"] = str(written)
        logger.warning("training pairs reused from %s (same incidents, pair config and code; "
                       "ITSM_REUSE_RUNS=0 generates them again)", written)
    else:
        links = load_links(corpus.links_path) if corpus.links_path else None
        miner = None
        if mined:
            from itsm_core.encoders.registry import load_sentence_transformer

            miner, _ = load_sentence_transformer(cfg.mining_model)
        pairs = generate_training_pairs(incidents, texts, cfg, links=links, mining_model=miner)
    if key:
        pairs.attrs.setdefault("meta", {})["pairs_key"] = key
    return pairs, validate_pairs(pairs, incidents, labels=labels or None)


def pairs_key(incidents_path: Path, links_path: Path | None, cfg) -> str:  # noqa: ANN001
    """SHA-256 of what generated training pairs depend on: the incidents file, its sidecar
    and links, the pair config, the ``itsm_core`` source and the libraries that draw and
    score them. Generation is seeded, so a pair file written with the same key holds
    exactly these pairs (embedding-mined pairs also depend on a model: never keyed)."""
    from itsm_core.core.compat import version_strings
    from itsm_core.core.io import source_fingerprint
    from itsm_core.data.datasets import sidecar_path

    files = [incidents_path, sidecar_path(incidents_path), links_path]
    doc = {"files": [sha256_file(f) if f and Path(f).exists() else None for f in files],
           "config": asdict(cfg), "source": source_fingerprint(),
           "versions": version_strings(("numpy", "pandas", "scikit-learn", "pyarrow"))}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def written_pairs(key: str) -> Path | None:
    """The newest pair file ``itsm pairs`` wrote with :func:`pairs_key` ``key``, or None
    (also when ``ITSM_REUSE_RUNS=0``)."""
    from itsm_core.core.config import PROCESSED_DIR, reuse_runs

    if not reuse_runs():
        return None
    for meta in sorted((PROCESSED_DIR / "pairs").glob("*.meta.json"), reverse=True):
        try:
            found = json.loads(meta.read_text(encoding="utf-8")).get("pairs_key")
        except (OSError, ValueError):
            continue
        pair_file = meta.with_name(meta.name.removesuffix(".meta.json") + ".parquet")
        if found == key and pair_file.exists():
            return pair_file
    return None


@dataclass
class TrainResult:
    run_dir: Path
    model_dir: Path
    meta: dict[str, Any]
    test_record: dict[str, Any] | None
    unseen_record: dict[str, Any] | None = None
    """The run on a data set it was not trained on (see ``TrainConfig.unseen_dataset``)."""

    @property
    def unseen_dir(self) -> Path | None:
        """Folder of the unseen-data-set evaluation (its ``per_query.csv``)."""
        if not self.unseen_record:
            return None
        return self.run_dir / f"unseen_{self.unseen_record['dataset']}"



def write_training_pairs(dataset: str, cfg=None, out: str | Path | None = None):  # noqa: ANN001
    """``itsm pairs``: generate, validate and write a NEW pair file of ``dataset``.

    Args:
        dataset: bundled data set name.
        cfg: :class:`~itsm_core.pairs.training.TrainPairConfig` (default: the defaults).
        out: the pair file (``.parquet``) to create; default
            ``data_new/processed/pairs/<dataset>_<timestamp>.parquet``.

    Returns:
        ``(path, pairs, quality_report)``.

    Raises:
        ItsmError: the file exists already (nothing is overwritten), or validation failed
            (nothing is written; the message lists the errors).
    """
    from itsm_core.core.config import PROCESSED_DIR
    from itsm_core.core.io import timestamp
    from itsm_core.pairs.training import write_pair_file

    path = Path(out) if out else PROCESSED_DIR / "pairs" / f"{dataset}_{timestamp()}.parquet"
    if path.exists():
        raise ItsmError("pair file already exists; refusing to overwrite", where=str(path),
                        fix="pass a new --out")
    pairs, report = make_pairs(dataset, cfg)
    if not report.ok:
        counts = ", ".join(f"{k}={v}" for k, v in report.counts.items())
        raise ItsmError("pair validation failed: " + "; ".join(report.errors),
                        where=dataset, fix=f"nothing was written (counts: {counts})")
    write_pair_file(pairs, path, {"dataset": dataset, "split": "train",
                                  "quality": report.to_dict()})
    return path, pairs, report


def _dist_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def recipe_key(cfg: TrainConfig, pairs: pd.DataFrame, incidents_path: Path,
               base_path: str | None) -> str:
    """SHA-256 of everything a training run's result depends on: the config (without where
    it is written), the training pairs, the incidents file, the base model's files, the
    ``itsm_core`` source and the library versions. Training is seeded, so a finished run
    with the same key is that run again."""
    from itsm_core.core.compat import version_strings
    from itsm_core.core.io import source_fingerprint
    from itsm_core.encoders.cache import folder_fingerprint

    conf = {k: v for k, v in asdict(cfg).items()
            if k not in ("output_dir", "resume_from_checkpoint", "reuse")}
    h = hashlib.sha256(json.dumps(conf, sort_keys=True, default=str).encode())
    h.update(pd.util.hash_pandas_object(pairs.astype(str), index=False).to_numpy().tobytes())
    h.update(sha256_file(incidents_path).encode())
    h.update((folder_fingerprint(base_path) if base_path and Path(base_path).exists()
              else str(cfg.model)).encode())
    h.update(source_fingerprint().encode())
    for dist, version in version_strings(("torch", "transformers", "sentence-transformers",
                                          "peft")).items():
        h.update(f"{dist}={version}".encode())
    h.update(str(torch.get_num_threads()).encode())
    h.update(f"bf16={cfg.use_bf16()}".encode())  # 'auto' resolves per machine
    return h.hexdigest()


UNSEEN_DEFAULT = {"it_tickets": "gitbugs_hadoop", "gitbugs_hadoop": "it_tickets"}


def unseen_dataset(cfg: TrainConfig) -> str | None:
    """The data set a run is also judged on but never trained on, if it is built."""
    return other_dataset(cfg.dataset, cfg.unseen_dataset)


def other_dataset(dataset: str, name: str | None = "auto") -> str | None:
    """``name`` (``auto``: the bundled data set of the other kind) when it is not
    ``dataset`` and is built; else None."""
    from itsm_core.data.datasets import processed_path

    if name == "auto":
        name = UNSEEN_DEFAULT.get(dataset, "gitbugs_hadoop")
    if not name or name == dataset:
        return None
    try:
        path = processed_path(name)
    except ItsmError:
        return None
    return name if path.exists() else None


def choose_wise_ft(cfg: TrainConfig, spec, tuned, target_bench, other: str):  # noqa: ANN001
    """Sweep WiSE-FT mixing weights of ``tuned`` (merged / full fine-tune of ``cfg.model``)
    and choose one on the two validation signals (:func:`itsm_core.training.wiseft.choose_alpha`).

    Args:
        cfg: the run's config (``wise_ft`` weights, ``forget_tolerance``).
        spec: the base model's registry spec; tuned: the fine-tuned model.
        target_bench: the training data set's VALIDATION benchmark (checkpoint selection's).
        other: the unseen data set; its train + validation queries decide, never its test.

    Returns:
        ``(choice, model)``: the :class:`~itsm_core.training.wiseft.WiseChoice` and the model
        at the chosen α (``tuned`` itself at α = 1).
    """
    from itsm_core.data.datasets import processed_path
    from itsm_core.encoders.cache import wrap_encoder
    from itsm_core.encoders.registry import load_sentence_transformer
    from itsm_core.encoders.scorers import DenseScorer
    from itsm_core.evaluation.benchmark import decision_benchmark, retrieval_per_query
    from itsm_core.training import wiseft

    unseen_bench = decision_benchmark(processed_path(other))
    unseen_metric = "mrr@10" if unseen_bench.mode == "links" else "ndcg@10"
    base, _ = load_sentence_transformer(cfg.model)
    base.max_seq_length = tuned.max_seq_length  # both sides at the tune's token limit

    def score(model) -> dict[str, float]:  # noqa: ANN001
        # α = 0 is the base's own weights: its vectors come from (and go to) the embedding
        # cache, keyed by the base folder's fingerprint and this token limit
        scorer = (DenseScorer(spec, model=wrap_encoder(base, spec.path or spec.key, spec.path),
                              show_progress=False)
                  if model is base else in_memory_scorer(spec, model))
        target = retrieval_per_query(scorer, target_bench)
        unseen = retrieval_per_query(scorer, unseen_bench)
        return {"target": float(target["ndcg@10"].mean()),
                "unseen": float(unseen[unseen_metric].mean()),
                "unseen_ndcg@10": float(unseen["ndcg@10"].mean())}

    rows = wiseft.sweep(base, tuned, cfg.wise_ft or (), score)
    choice = wiseft.choose_alpha(rows, target_metric=f"{cfg.dataset} validation ndcg@10",
                                 unseen_metric=f"{other} train+validation {unseen_metric}",
                                 tolerance=cfg.forget_tolerance, unseen_dataset=other)
    logger.warning("WiSE-FT: %s", choice.reason)
    if choice.alpha == 1.0:
        return choice, tuned
    return choice, (base if choice.alpha == 0.0
                    else wiseft.interpolated_model(base, tuned, choice.alpha))


def finished_run(key: str) -> TrainResult | None:
    """The newest complete run under ``models/`` trained from recipe ``key``, or None."""
    from itsm_core.runs.store import latest_matching

    run = latest_matching(MODELS_DIR, "train_meta.json", "recipe_key", key)
    if run is None or not (run / "model").is_dir():
        return None
    meta = load_train_meta(run)
    if "total_seconds" not in meta:  # interrupted before its test evaluation finished
        return None
    test = run / "test_metrics.json"
    record = json.loads(test.read_text(encoding="utf-8")) if test.exists() else None
    if meta["train_config"].get("evaluate_test") and record is None:
        return None
    unseen = run / "unseen_metrics.json"
    return TrainResult(run, run / "model", {**meta, "reused": True}, record,
                       json.loads(unseen.read_text(encoding="utf-8")) if unseen.exists()
                       else None)


def _run_dir(cfg: TrainConfig) -> Path:
    if cfg.output_dir:
        out = Path(cfg.output_dir)
        if _dist_rank() != 0:  # under DDP only rank 0 checks (the others see its files)
            out.mkdir(parents=True, exist_ok=True)
            return out
        if out.exists() and any(out.iterdir()) and not cfg.resume_from_checkpoint:
            raise ItsmError("output directory already exists and is not empty", where=str(out),
                            fix="choose a new --out, or pass --resume to continue that run")
        out.mkdir(parents=True, exist_ok=True)
        return out
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ItsmError("distributed training needs an explicit --out (all ranks must agree)",
                        fix="pass --out models/<name>")
    name = cfg.name or f"{cfg.model.replace('/', '_')}_{cfg.dataset}_{cfg.mode}"
    return unique_run_dir(MODELS_DIR, name)


def run_training(cfg: TrainConfig, *, pairs: pd.DataFrame | None = None,
                 incidents_path: str | Path | None = None) -> TrainResult:
    """Train one model end to end and evaluate it on the test split (rank 0).

    Args:
        cfg: the training config (:func:`config_for_profile`).
        pairs: training pairs (default: ``cfg.pairs`` or generated from the TRAINING split).
        incidents_path: another processed incidents file instead of ``cfg.dataset``'s.

    Returns:
        :class:`TrainResult`: run folder, ``train_meta.json`` content (hyper-parameters,
        history, best validation checkpoint) and the test record.
    """
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from transformers import EarlyStoppingCallback

    from itsm_core.data.datasets import processed_path, read_sidecar
    from itsm_core.data.incidents import load_incidents
    from itsm_core.encoders.registry import MODEL_META_FILE, load_sentence_transformer
    from itsm_core.evaluation.benchmark import BenchmarkConfig, build_benchmark, evaluate_model
    from itsm_core.pairs.training import TrainPairConfig, read_pair_file, validate_pairs

    t_start = time.time()
    inc_path = Path(incidents_path) if incidents_path else processed_path(cfg.dataset)
    side = read_sidecar(inc_path)
    labels = list(side.labels) if side and side.labels else []
    incidents = load_incidents(inc_path)
    if pairs is None:
        if cfg.pairs:
            pairs = read_pair_file(cfg.pairs)
            report = validate_pairs(pairs, incidents, labels=labels or None)
        else:
            pairs, report = make_pairs(cfg.dataset, TrainPairConfig(seed=cfg.seed),
                                       incidents_path=inc_path)
    else:
        report = validate_pairs(pairs, incidents, labels=labels or None)
    if not report.ok:
        raise ItsmError("training pairs failed validation: " + "; ".join(report.errors),
                        fix="regenerate pairs from the training split with `itsm pairs`")
    if labels and "negative_id" in pairs:
        pairs = pairs.assign(negative_label=negative_labels(pairs, incidents, labels))

    from itsm_core.encoders.registry import resolve_spec

    key = recipe_key(cfg, pairs, inc_path, resolve_spec(cfg.model).path)
    if cfg.reuse and not cfg.output_dir and not cfg.resume_from_checkpoint:
        prior = finished_run(key)
        if prior is not None:
            logger.warning("reusing %s: it was trained from the same recipe (config, pairs, "
                           "incidents, base weights, code, libraries); ITSM_REUSE_RUNS=0 "
                           "trains again", prior.run_dir)
            return prior
    run_dir = _run_dir(cfg)
    model, spec = load_sentence_transformer(cfg.model)
    model.max_seq_length = cfg.max_seq_length
    val_bench = subsample_corpus(build_benchmark(inc_path, config=BenchmarkConfig(
        query_split="validation", threshold_split="validation", n_resamples=0)),
        cfg.max_validation_corpus, cfg.seed)
    evaluator = validation_evaluator(val_bench, replace(spec, key=cfg.name or spec.key))
    clock = PhaseClock(t_start)
    clock.mark("setup (model, pairs, benchmarks)")
    # before any adapter exists: the base's own weights, so the embedding cache serves them
    base_val = evaluator(model, cache_path=spec.path)
    clock.mark("zero-shot validation pass")
    torch.manual_seed(cfg.seed)
    if cfg.mode == "lora":
        add_lora(model, spec, cfg)
    checkpointing = enable_gradient_checkpointing(model) if cfg.gradient_checkpointing \
        else None
    train_ds, phases = build_train_dataset(pairs, cfg)
    guide = load_guide(cfg)
    inner, loss = build_loss(model, spec, cfg, guide)
    dims = [d for d in spec.eval_dims if d <= spec.dim]
    steps_per_epoch = max(1, len(train_ds) // cfg.batch_size)
    eval_steps = max(1, min(cfg.eval_steps, steps_per_epoch))
    args = SentenceTransformerTrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        learning_rate=cfg.lr(), warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.scheduler, seed=cfg.seed, data_seed=cfg.seed,
        batch_sampler=(functools.partial(PhaseOrderedBatchSampler, phases=tuple(phases))
                       if cfg.curriculum else BatchSamplers.NO_DUPLICATES),
        eval_strategy="steps", eval_steps=eval_steps, save_strategy="steps",
        save_steps=eval_steps, save_total_limit=2, load_best_model_at_end=True,
        metric_for_best_model="eval_validation_ndcg@10", greater_is_better=True,
        logging_steps=max(1, eval_steps // 5), report_to="none",
        use_cpu=not torch.cuda.is_available(), dataloader_drop_last=False, disable_tqdm=False,
        bf16=cfg.use_bf16(),
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train_ds, loss=loss, evaluator=evaluator,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience)],
    )
    clock.mark("setup (model, pairs, benchmarks)")
    t0 = time.time()
    trainer.train(resume_from_checkpoint=cfg.resume_from_checkpoint)
    train_seconds = time.time() - t0
    clock.mark("training steps + validation passes")
    if _dist_rank() != 0:
        return TrainResult(run_dir, run_dir / "model", {}, None)

    model = trainer.model
    adapter_dir, model_dir = run_dir / "adapter", run_dir / "model"
    wrapped = lora_wrapped_modules(model) if cfg.mode == "lora" else []
    if cfg.mode == "lora":
        model.save_pretrained(str(adapter_dir))
        if cfg.merge:
            model = merge_adapter(cfg.model, adapter_dir, cfg.max_seq_length)
    clock.mark("adapter save + merge")
    wise = None
    other = unseen_dataset(cfg)
    if cfg.wise_ft and other and (cfg.mode == "full" or cfg.merge):
        wise, model = choose_wise_ft(cfg, spec, model, evaluator.bench, other)
        clock.mark("WiSE-FT sweep (validation signals)")
    model.save_pretrained(str(model_dir))
    run_name = cfg.name or f"{spec.key}-ft" + ("" if cfg.mode == "lora" else "-full")
    n_pairs = len(train_ds)
    meta = {
        "name": run_name,
        "recipe_key": key,
        "spec": {**spec.to_dict(), "path": None,
                 "extra": {"base_model": spec.key, "trained": True}},
        "base_model": spec.key,
        "train_config": asdict(cfg),
        "learning_rate": cfg.lr(),
        "precision": "bf16" if cfg.use_bf16() else "fp32",
        "trainer_args": {k: v for k, v in trainer.args.to_dict().items()
                         if isinstance(v, (int, float, str, bool, type(None)))},
        "lora_wrapped_modules": wrapped,
        "gradient_checkpointing": checkpointing,
        "matryoshka_dims": dims if cfg.matryoshka else [],
        "loss": type(inner).__name__ + (" in MatryoshkaLoss" if cfg.matryoshka else "")
        + (f" + {cfg.anchor_weight} x drift to base" if cfg.anchor_weight else ""),
        "anchor_drift_last": (loss.last_drift if isinstance(loss, AnchoredLoss) else None),
        "guide": ({"model": cfg.guide, "margin": cfg.guide_margin,
                   "forward_memo": guide.forward.stats} if guide is not None else None),
        "pairs": {"n_used": n_pairs, "meta": pairs.attrs.get("meta", {}),
                  "quality": report.to_dict(),
                  "file": cfg.pairs, "sha256": sha256_file(cfg.pairs) if cfg.pairs else None},
        "incidents": str(inc_path), "incidents_sha256": sha256_file(inc_path),
        "git_commit": git_commit(),
        "train_seconds": round(train_seconds, 1),
        "pairs_per_second": round(n_pairs * cfg.epochs / max(train_seconds, 1e-9), 2)
        if cfg.max_steps < 0 else round(trainer.state.global_step * cfg.batch_size
                                        / max(train_seconds, 1e-9), 2),
        "global_steps": trainer.state.global_step,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_validation_ndcg@10": trainer.state.best_metric,
        "base_validation": base_val,
        "wise_ft": wise.to_dict() if wise else None,
        "log_history": trainer.state.log_history,
    }
    atomic_write_json(model_dir / MODEL_META_FILE, {"name": run_name, "spec": meta["spec"]})
    atomic_write_json(run_dir / "train_meta.json", meta)
    record = None
    if cfg.evaluate_test:
        bench = build_benchmark(inc_path)
        eval_dir = run_dir / "evaluate"
        if eval_dir.exists():  # a resumed run keeps its earlier evaluation
            eval_dir = unique_run_dir(run_dir, "evaluate")
        record = evaluate_model(str(model_dir), bench, eval_dir, leaderboard=LEADERBOARD_CSV)
        # the run's test result beside the model, with the keys of `itsm evaluate`
        atomic_write_json(run_dir / "test_metrics.json", record)
        clock.mark("test evaluation")
    unseen = None
    # reported, never used for a choice: what the fine-tune forgets elsewhere
    if other and cfg.evaluate_test:
        from itsm_core.data.datasets import processed_path
        from itsm_core.runs.schema import unseen_model_name

        unseen = evaluate_model(str(model_dir), build_benchmark(processed_path(other)),
                                run_dir / f"unseen_{other}", leaderboard=LEADERBOARD_CSV,
                                task="unseen", name=unseen_model_name(run_name, cfg.dataset))
        atomic_write_json(run_dir / "unseen_metrics.json", unseen)
        meta["unseen"] = {"dataset": other, **{m: unseen.get(m) for m in (
            "ndcg@10", "mrr@10", "map@100")}}
        clock.mark(f"unseen evaluation ({other})")
    meta["total_seconds"] = round(time.time() - t_start, 1)
    meta["phase_seconds"] = clock.seconds
    logger.warning("%s: seconds per phase %s", run_name, clock.seconds)
    atomic_write_json(run_dir / "train_meta.json", meta)
    return TrainResult(run_dir, model_dir, meta, record, unseen)


class PhaseClock:
    """Wall time per phase of a run (``train_meta.json["phase_seconds"]``): where a
    training's time goes besides its steps (validation, WiSE-FT, test and unseen passes)."""

    def __init__(self, start: float | None = None) -> None:
        self._last = time.time() if start is None else start
        self.seconds: dict[str, float] = {}

    def mark(self, phase: str) -> float:
        """Close ``phase`` now; returns its seconds (a repeated name adds up)."""
        now = time.time()
        took = now - self._last
        self._last = now
        self.seconds[phase] = round(self.seconds.get(phase, 0.0) + took, 1)
        return took


def load_train_meta(run_dir: str | Path) -> dict[str, Any]:
    """A training run's metadata (for reports)."""
    return read_run_json(run_dir, "train_meta.json", "itsm train")


def history_frames(meta: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training loss by step, validation metrics by step) from the log history."""
    hist = pd.DataFrame(meta.get("log_history", []))
    if hist.empty:
        return hist, hist
    loss = hist.dropna(subset=["loss"])[["step", "loss", "learning_rate"]] if "loss" in hist \
        else pd.DataFrame()
    val_cols = [c for c in hist.columns if c.startswith("eval_validation_")]
    val = hist.dropna(subset=val_cols[:1])[["step", *val_cols]] if val_cols else pd.DataFrame()
    return loss.reset_index(drop=True), val.reset_index(drop=True)
