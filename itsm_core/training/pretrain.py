"""Unsupervised domain adaptation before fine-tuning: SimCSE (default) or TSDAE.

- **SimCSE** (Gao et al. 2021): every training-split text is its own positive; the two
  views differ only by dropout. ``MultipleNegativesRankingLoss`` over (text, text) pairs,
  the other texts of the batch are the negatives.
- **TSDAE** (Wang et al. 2021): ``DenoisingAutoEncoderLoss`` reconstructs a text from the
  sentence embedding of a damaged copy (60 % of the words deleted); the decoder is tied
  to the encoder, so the architecture must have a ``…LMHead`` causal-LM class (BERT-like
  models do; MPNet does not — that is an :class:`ItsmError`).

Data: :func:`pretrain_texts` — unlabelled and labelled texts of the TRAINING split only.
Validation and test incidents are excluded, and so is any training text whose normalised
form equals the text of a validation / test incident (an exact duplicate would leak the
held-out text into the adapted weights). Selection: NDCG@10 on the validation split
(same evaluator as :mod:`itsm_core.training.finetune`), best checkpoint restored; test is
touched only
by the final evaluation. The adapted model folder carries ``itsm_model.json`` with the
base spec, so ``itsm train --model <run>/model`` fine-tunes from it.

:func:`run_stages` runs base → +SimCSE → +fine-tune and writes the stage table with
paired bootstrap CIs (``models/results/stages/``).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from itsm_core.core.config import LEADERBOARD_CSV, MODELS_DIR, RESULTS_DIR, SEED
from itsm_core.core.errors import ItsmError
from itsm_core.core.io import (
    atomic_write_df,
    atomic_write_json,
    git_commit,
    read_run_json,
    sha256_file,
    timestamp,
    unique_run_dir,
)

logger = logging.getLogger(__name__)

METHODS = ("simcse", "tsdae")
HELD_OUT = ("validation", "test")


# ----------------------------------------------------------------------------- data


@dataclass
class PretrainTexts:
    """The texts for unsupervised adaptation and how they were chosen."""

    texts: pd.Series  # number -> text (training split, held-out duplicates removed)
    counts: dict[str, int]


def _incidents_and_texts(dataset: str, incidents_path: str | Path | None = None
                         ) -> tuple[pd.DataFrame, pd.Series, Path]:
    """Incidents (with a split per incident) and their embedded texts, by number."""
    from itsm_core.data.corpus import load_corpus
    from itsm_core.data.datasets import processed_path
    from itsm_core.data.incidents import load_links
    from itsm_core.data.splits import incident_splits_from_links

    inc_path = Path(incidents_path) if incidents_path else processed_path(dataset)
    corpus = load_corpus(inc_path)
    df, texts = corpus.incidents, corpus.texts
    if "split" not in df.columns or df["split"].isna().all():
        links = load_links(corpus.links_path) if corpus.links_path else None
        if links is None or "split" not in links.columns:
            raise ItsmError(
                "incidents have no split column, so validation / test texts cannot be kept "
                "out of pre-training", where=str(inc_path),
                fix="build the data with `itsm data build` or add a split column")
        df = df.assign(split=incident_splits_from_links(df["number"], links).to_numpy())
    return df, texts, inc_path


def pretrain_texts(dataset: str = "it_tickets", *, incidents_path: str | Path | None = None,
                   max_texts: int | None = None, min_words: int = 3,
                   seed: int = SEED) -> PretrainTexts:
    """Training-split texts for unsupervised adaptation or distillation.

    Rows whose split is missing are treated as held out (never used). Validation and
    test incidents are excluded, and so is every training text whose normalised form
    (lower case, whitespace collapsed) equals a validation or test text. Duplicates are
    collapsed, texts shorter than ``min_words`` dropped, then ``max_texts`` are sampled
    (seeded; None = all).

    Args:
        dataset: bundled data set; incidents_path: another processed incidents file.
        max_texts, min_words, seed: the sample.

    Returns:
        :class:`PretrainTexts`: the texts (by number) and the counts of each exclusion.
    """
    from itsm_core.data.splits import normalise_key

    df, texts, _ = _incidents_and_texts(dataset, incidents_path)
    split = df.set_index("number")["split"].astype("string").str.lower()
    split = split.reindex(texts.index)
    keys = texts.map(normalise_key)
    held = split.isin(HELD_OUT) | split.isna()
    held_keys = set(keys[held.to_numpy()])
    train = (split == "train").fillna(False).to_numpy()
    dup_of_held = keys.isin(held_keys).to_numpy() & train
    ok = train & ~dup_of_held
    cand = texts[ok]
    cand_keys = keys[ok]
    long_enough = cand.str.split().str.len().fillna(0) >= min_words
    cand, cand_keys = cand[long_enough.to_numpy()], cand_keys[long_enough.to_numpy()]
    first = ~cand_keys.duplicated().to_numpy()
    cand = cand[first]
    counts = {
        "incidents": len(texts), "held_out_incidents": int(held.sum()),
        "train_incidents": int(train.sum()),
        "train_duplicates_of_held_out_removed": int(dup_of_held.sum()),
        "too_short_removed": int((~long_enough).sum()),
        "duplicates_collapsed": int((~first).sum()), "available": len(cand),
    }
    if len(cand) == 0:
        raise ItsmError("no training-split texts left for pre-training", where=dataset,
                        fix="check the split column (training rows must say 'train')")
    if max_texts and len(cand) > max_texts:
        cand = cand.sample(n=max_texts, random_state=seed)
    counts["used"] = len(cand)
    return PretrainTexts(texts=cand, counts=counts)


def held_out_keys(dataset: str = "it_tickets", *, incidents_path: str | Path | None = None
                  ) -> set[str]:
    """Normalised texts of every validation / test incident (for leakage checks)."""
    from itsm_core.data.splits import normalise_key

    df, texts, _ = _incidents_and_texts(dataset, incidents_path)
    split = df.set_index("number")["split"].astype("string").str.lower().reindex(texts.index)
    held = (split.isin(HELD_OUT) | split.isna()).to_numpy()
    return set(texts[held].map(normalise_key))


def delete_noise(text: str, del_ratio: float = 0.6, rng: random.Random | None = None) -> str:
    """TSDAE noise: delete ``del_ratio`` of the words (whitespace tokens), keep >= 1."""
    rng = rng or random
    words = text.split()
    if not words:
        return text
    kept = [w for w in words if rng.random() >= del_ratio]
    return " ".join(kept) if kept else rng.choice(words)


# ----------------------------------------------------------------------------- config


@dataclass
class PretrainConfig:
    """Hyper-parameters of one adaptation run (stored in ``pretrain_meta.json``)."""

    model: str = "minilm"
    dataset: str = "it_tickets"
    method: str = "simcse"
    max_texts: int | None = 4000
    max_seq_length: int = 64
    batch_size: int = 64
    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    mnrl_scale: float = 20.0  # SimCSE temperature 0.05
    del_ratio: float = 0.6
    eval_steps: int = 20
    max_validation_corpus: int = 1000
    min_words: int = 3
    seed: int = SEED
    name: str | None = None
    output_dir: str | None = None
    evaluate_test: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


PROFILES: dict[str, dict[str, Any]] = {
    # 2 CPU cores: ~4k texts, 1 epoch, 64 tokens (see README for the measured minutes)
    "default": {"max_texts": 4000, "max_seq_length": 64, "batch_size": 64, "eval_steps": 20},
    # every training-split text (47k tickets: GPU or a patient CPU)
    "full": {"max_texts": None, "max_seq_length": 128, "batch_size": 64, "eval_steps": 100},
    "smoke": {"max_texts": 32, "max_seq_length": 32, "batch_size": 8, "max_steps": 2,
              "eval_steps": 1, "evaluate_test": False},
}


def config_for_profile(profile: str = "default", **overrides: Any) -> PretrainConfig:
    """A :class:`PretrainConfig` from a named profile plus explicit overrides."""
    from itsm_core.core.profiles import config_from_profile

    return config_from_profile(PretrainConfig, PROFILES, profile, overrides, _check)


def _check(cfg: PretrainConfig) -> None:
    if cfg.method not in METHODS:
        raise ItsmError(f"unknown pre-training method {cfg.method!r}", where="--method",
                        fix=f"choose from {list(METHODS)}")
    if cfg.max_texts is not None and cfg.max_texts < 2:
        raise ItsmError("need at least 2 texts (in-batch negatives)", where="--max-texts",
                        fix="pass --max-texts >= 2 (or 0 for all)")
    if cfg.batch_size < 2 and cfg.method == "simcse":
        raise ItsmError("SimCSE needs a batch of at least 2 (the negatives are in-batch)",
                        where="--batch-size", fix="use --batch-size 32 or more")
    if not 0 < cfg.del_ratio < 1:
        raise ItsmError("del_ratio must lie in (0, 1)", where="del_ratio")


# ----------------------------------------------------------------------------- run


@dataclass
class PretrainResult:
    run_dir: Path
    model_dir: Path
    meta: dict[str, Any]
    test_record: dict[str, Any] | None


def _loss_and_data(model, cfg: PretrainConfig, texts: list[str]):
    from datasets import Dataset

    if cfg.method == "simcse":
        from sentence_transformers.sentence_transformer.losses import (
            MultipleNegativesRankingLoss,
        )

        return (MultipleNegativesRankingLoss(model, scale=cfg.mnrl_scale),
                Dataset.from_dict({"anchor": texts, "positive": texts}))
    from sentence_transformers.sentence_transformer.losses import DenoisingAutoEncoderLoss

    rng = random.Random(cfg.seed)
    damaged = [delete_noise(t, cfg.del_ratio, rng) for t in texts]
    try:
        loss = DenoisingAutoEncoderLoss(model, tie_encoder_decoder=True)
    except (ValueError, AssertionError, KeyError, OSError) as exc:
        raise ItsmError(f"TSDAE does not suit this architecture ({exc})", where="--method",
                        fix="use --method simcse (works with any encoder)") from exc
    return loss, Dataset.from_dict({"damaged": damaged, "original": texts})


def at_seq_length(evaluator, length: int):
    """The evaluator, run with the model's token limit set to ``length`` (then restored).

    Training uses a short limit for speed; selection on validation and the final
    evaluation both see the model at the limit it is used with.
    """
    from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

    class AtSeqLength(SentenceEvaluator):
        def __init__(self):
            super().__init__()
            self.inner = evaluator
            self.name = getattr(evaluator, "name", "")
            self.primary_metric = evaluator.primary_metric
            self.greater_is_better = getattr(evaluator, "greater_is_better", True)

        def __call__(self, model, *args, **kwargs):
            old = model.max_seq_length
            model.max_seq_length = length
            try:
                return self.inner(model, *args, **kwargs)
            finally:
                model.max_seq_length = old

    return AtSeqLength()


def run_pretrain(cfg: PretrainConfig, *, incidents_path: str | Path | None = None
                 ) -> PretrainResult:
    """Adapt a model on training-split texts, select on validation, evaluate on test."""
    from sentence_transformers import SentenceTransformerTrainer

    from itsm_core.encoders.registry import MODEL_META_FILE, load_sentence_transformer
    from itsm_core.evaluation.benchmark import BenchmarkConfig, build_benchmark, evaluate_model
    from itsm_core.training.finetune import (
        subsample_corpus,
        validation_evaluator,
        validation_selected_args,
    )

    _check(cfg)
    t_start = time.time()
    pt = pretrain_texts(cfg.dataset, incidents_path=incidents_path, max_texts=cfg.max_texts,
                        min_words=cfg.min_words, seed=cfg.seed)
    _, _, inc_path = _incidents_and_texts(cfg.dataset, incidents_path)
    model, spec = load_sentence_transformer(cfg.model)
    base_name = spec.extra.get("base_model") if spec.extra else None
    eval_seq_length = model.max_seq_length  # the base's: adapted and base compare alike
    model.max_seq_length = cfg.max_seq_length
    torch.manual_seed(cfg.seed)
    texts = pt.texts.tolist()
    loss, train_ds = _loss_and_data(model, cfg, texts)
    run_name = cfg.name or f"{spec.key}-{cfg.method}"
    if cfg.output_dir:
        from itsm_core.core.io import new_run_dir

        run_dir = new_run_dir(cfg.output_dir)
    else:
        run_dir = unique_run_dir(MODELS_DIR, f"{run_name}_{cfg.dataset}")

    val_bench = subsample_corpus(build_benchmark(inc_path, config=BenchmarkConfig(
        query_split="validation", threshold_split="validation", n_resamples=0)),
        cfg.max_validation_corpus, cfg.seed)
    evaluator = at_seq_length(validation_evaluator(val_bench, replace(spec, key=run_name)),
                              eval_seq_length)
    steps_per_epoch = max(1, len(train_ds) // cfg.batch_size)
    eval_steps = max(1, min(cfg.eval_steps, steps_per_epoch))
    args = validation_selected_args(run_dir, cfg, eval_steps)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_ds,
                                         loss=loss, evaluator=evaluator)
    base_val = evaluator(model)
    t0 = time.time()
    trainer.train()
    train_seconds = time.time() - t0
    model = trainer.model
    model.max_seq_length = eval_seq_length  # trained short for speed, used like the base
    model_dir = run_dir / "model"
    model.save_pretrained(str(model_dir))
    meta_spec = {**spec.to_dict(), "path": None, "extra": {
        "base_model": base_name or spec.key, "pretrained": cfg.method}}
    steps = trainer.state.global_step
    meta = {
        "name": run_name, "spec": meta_spec, "base_model": base_name or spec.key,
        "pretrain_config": asdict(cfg), "method": cfg.method,
        "loss": type(loss).__name__,
        "texts": pt.counts, "texts_sha256": _texts_hash(texts),
        "eval_max_seq_length": eval_seq_length,
        "incidents": str(inc_path), "incidents_sha256": sha256_file(inc_path),
        "git_commit": git_commit(), "threads": torch.get_num_threads(),
        "train_seconds": round(train_seconds, 1), "global_steps": steps,
        "texts_per_second": round(steps * cfg.batch_size / max(train_seconds, 1e-9), 2),
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_validation_ndcg@10": trainer.state.best_metric,
        "base_validation": base_val,
        "log_history": trainer.state.log_history,
    }
    atomic_write_json(model_dir / MODEL_META_FILE, {"name": run_name, "spec": meta_spec})
    atomic_write_json(run_dir / "pretrain_meta.json", meta)
    record = None
    if cfg.evaluate_test:
        record = evaluate_model(str(model_dir), build_benchmark(inc_path), run_dir / "evaluate",
                                leaderboard=LEADERBOARD_CSV)
    meta["total_seconds"] = round(time.time() - t_start, 1)
    atomic_write_json(run_dir / "pretrain_meta.json", meta)
    return PretrainResult(run_dir, model_dir, meta, record)


def _texts_hash(texts: list[str]) -> str:
    import hashlib

    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") + b"\x00")
    return h.hexdigest()


def load_pretrain_meta(run_dir: str | Path) -> dict[str, Any]:
    """A pre-training run's metadata (for reports)."""
    return read_run_json(run_dir, "pretrain_meta.json", "itsm pretrain")


# ----------------------------------------------------------------------------- stages


def latest_eval_dir(dataset: str, model: str, leaderboard: str | Path | None = None
                    ) -> Path | None:
    """Evaluation directory of the newest test run of ``model`` on ``dataset`` that kept its
    per-query file (needed for paired comparisons)."""
    from itsm_core.runs.store import latest_run

    return latest_run(model, dataset, leaderboard=leaderboard, require="per_query.csv")


COMPARED_TRAIN_KEYS = ("mode", "learning_rate", "epochs", "max_steps", "batch_size",
                       "use_negatives", "curriculum", "label_aware", "matryoshka",
                       "max_seq_length", "max_pairs", "seed", "lora_r", "lora_alpha")


def finetune_alone_dir(dataset: str, train_config: dict[str, Any], model: str = "minilm-ft",
                       leaderboard: str | Path | None = None) -> tuple[Path | None, str]:
    """Newest evaluation of the plain fine-tune trained with the same config.

    Returns ``(eval_dir or None, note)``; the note says what differs when no run matches.
    """
    from itsm_core.runs.schema import read_leaderboard

    board = read_leaderboard(leaderboard or LEADERBOARD_CSV)
    rows = board[(board["task"] == "evaluate") & (board["dataset"] == dataset)
                 & (board["model"] == model) & (board["split"] == "test")]
    diffs = []
    for d in rows.sort_values("timestamp", ascending=False)["run_dir"]:
        meta_file = Path(str(d)).parent / "train_meta.json"
        if not meta_file.exists() or not (Path(str(d)) / "per_query.csv").exists():
            continue
        other = read_run_json(meta_file.parent, "train_meta.json", "itsm train")
        other_cfg = other.get("train_config", {})
        diff = {k: (other_cfg.get(k), train_config.get(k)) for k in COMPARED_TRAIN_KEYS
                if other_cfg.get(k) != train_config.get(k)}
        if not diff:
            return Path(str(d)), "same training config"
        diffs.append(f"{Path(str(d)).parent.name}: {diff}")
    return None, ("no plain fine-tune with the same training config"
                  + (f" (closest differ: {diffs[0]})" if diffs else ""))


def _metric_ci(eval_dir: Path, metric: str) -> tuple[float, float, float]:
    rec = read_run_json(eval_dir, "metrics.json", "itsm evaluate")
    ci = rec.get(f"{metric}_ci") or [np.nan, np.nan]
    return float(rec.get(metric, np.nan)), float(ci[0]), float(ci[1])


def stage_table(dataset: str, stages: list[tuple[str, Path | None, str]],
                metrics: tuple[str, ...] = ("ndcg@10", "mrr@10"),
                reference: tuple[str, ...] = ("base", "fine-tune alone")) -> pd.DataFrame:
    """Test metrics per stage with 95 % CIs, plus paired bootstrap differences.

    ``stages`` is ``[(stage, eval_dir or None, note)]``; differences are computed against
    each stage named in ``reference`` (when present), on the same test queries.
    """
    from itsm_core.evaluation.paired import paired_difference

    dirs = {s: d for s, d, _ in stages if d is not None}
    rows = []
    for stage, d, note in stages:
        row: dict[str, Any] = {"dataset": dataset, "stage": stage, "note": note,
                               "run_dir": str(d) if d else None}
        if d is not None:
            row["model"] = read_run_json(d, "metrics.json", "itsm evaluate").get("model")
            for m in metrics:
                v, lo, hi = _metric_ci(d, m)
                row.update({m: v, f"{m}_ci_low": lo, f"{m}_ci_high": hi})
                for ref in reference:
                    if ref in dirs and ref != stage:
                        diff = paired_difference(d, dirs[ref], m)
                        tag = ref.replace(" ", "_")
                        row.update({f"{m}_diff_vs_{tag}": diff["diff"],
                                    f"{m}_diff_vs_{tag}_ci_low": diff["ci_low"],
                                    f"{m}_diff_vs_{tag}_ci_high": diff["ci_high"]})
        rows.append(row)
    return pd.DataFrame(rows)


def verdicts(table: pd.DataFrame, metric: str = "ndcg@10") -> pd.DataFrame:
    """One sentence per comparison: helped / hurt / no significant difference (CI)."""
    out = []
    for _, r in table.iterrows():
        for col in [c for c in table.columns if c.startswith(f"{metric}_diff_vs_")
                    and not c.endswith(("_ci_low", "_ci_high"))]:
            if pd.isna(r.get(col)):
                continue
            lo, hi = r[f"{col}_ci_low"], r[f"{col}_ci_high"]
            verdict = ("better" if lo > 0 else "worse" if hi < 0
                       else "no significant difference")
            out.append({"dataset": r["dataset"], "stage": r["stage"],
                        "versus": col.split("_diff_vs_")[1].replace("_", " "),
                        "metric": metric, "difference": round(r[col], 4),
                        "ci_low": round(lo, 4), "ci_high": round(hi, 4), "verdict": verdict})
    return pd.DataFrame(out)


def save_stage_table(table: pd.DataFrame, dataset: str, kind: str = "pretrain",
                     out_dir: str | Path | None = None) -> Path:
    """Write a stage table atomically to ``models/results/stages/<ts>_<n>_<dataset>_<kind>.csv``."""
    folder, ts = Path(out_dir or RESULTS_DIR / "stages"), timestamp()
    i = 0
    while (out := folder / f"{ts}_{i:02d}_{dataset}_{kind}.csv").exists():
        i += 1  # never overwrite an earlier table (names sort by time, then counter)
    return atomic_write_df(out, table)


def latest_stage_table(dataset: str, kind: str = "pretrain",
                       out_dir: str | Path | None = None) -> pd.DataFrame:
    """The newest stage table of a data set, or a one-row note."""
    from itsm_core.runs.store import latest_file

    found = latest_file(out_dir or RESULTS_DIR / "stages", f"*_{dataset}_{kind}.csv")
    if found is None:
        return pd.DataFrame({"note": [f"no {kind} stage table for {dataset} yet: run "
                                      f"`itsm {kind} --dataset {dataset}`"]})
    return pd.read_csv(found)


@dataclass
class StagesResult:
    pretrain: PretrainResult
    finetune: Any | None  # train.TrainResult
    table: pd.DataFrame
    table_path: Path | None


def run_stages(cfg: PretrainConfig, *, finetune: bool = True, train_profile: str = "default",
               base_eval: str | Path | None = None, incidents_path: str | Path | None = None,
               save: bool = True) -> StagesResult:
    """base → +adaptation → +fine-tune, beside the plain fine-tune (same training config).

    The fine-tune uses ``train.config_for_profile(train_profile)`` unchanged, starting
    from the adapted model, so its only difference to the plain fine-tune is the start.
    """
    from itsm_core.training.finetune import config_for_profile as train_config
    from itsm_core.training.finetune import run_training

    pre = run_pretrain(cfg, incidents_path=incidents_path)
    ft = None
    tcfg = train_config(train_profile, model=str(pre.model_dir), dataset=cfg.dataset,
                        seed=cfg.seed, evaluate_test=cfg.evaluate_test,
                        name=f"{pre.meta['name']}-ft")  # run dir + model name, not the path
    if finetune:
        ft = run_training(tcfg, incidents_path=incidents_path)
    if not cfg.evaluate_test:
        return StagesResult(pre, ft, pd.DataFrame(), None)
    table = stages_from_runs(pre.run_dir, ft.run_dir if ft is not None else None,
                             base_eval=base_eval)
    path = save_stage_table(table, cfg.dataset) if save else None
    return StagesResult(pre, ft, table, path)


def stages_from_runs(pretrain_run: str | Path, finetune_run: str | Path | None = None, *,
                     base_eval: str | Path | None = None,
                     alone_eval: str | Path | None = None) -> pd.DataFrame:
    """The stage table of finished runs (no training): base, +adaptation, +fine-tune,
    fine-tune alone (the newest plain fine-tune whose training config equals the one the
    adapted model was fine-tuned with, unless ``alone_eval`` names one)."""
    pre_meta = load_pretrain_meta(pretrain_run)
    dataset = pre_meta["pretrain_config"]["dataset"]
    base_key = pre_meta["base_model"]
    method = pre_meta["method"]
    label = "+SimCSE" if method == "simcse" else "+TSDAE"
    base_dir = Path(base_eval) if base_eval else latest_eval_dir(dataset, base_key)
    stages = [
        ("base", base_dir, f"zero-shot {base_key}" if base_dir else
         f"no zero-shot evaluation of {base_key}: run `itsm evaluate --model {base_key}`"),
        (label, Path(pretrain_run) / "evaluate", pt_summary(pre_meta)),
    ]
    alone_dir, alone_note = (Path(alone_eval), "given") if alone_eval else (None, "")
    if finetune_run is not None:
        ft_meta = read_run_json(finetune_run, "train_meta.json", "itsm train")
        tcfg = ft_meta.get("train_config", {})
        stages.append((f"{label} → fine-tune", Path(finetune_run) / "evaluate",
                       f"{ft_meta.get('global_steps')} steps, lr {ft_meta.get('learning_rate')}"
                       f", {ft_meta.get('train_seconds')} s"))
        if alone_dir is None:
            alone_dir, alone_note = finetune_alone_dir(dataset, tcfg, f"{base_key}-ft")
    stages.append(("fine-tune alone", alone_dir, alone_note or "no fine-tune to compare"))
    lex_dir, lex_name = best_lexical_eval_dir(dataset)
    stages.append(("lexical baseline", lex_dir, f"best of tfidf / bm25 on NDCG@10: {lex_name}"
                   if lex_dir else "no lexical baseline evaluated: run `itsm benchmark`"))
    return stage_table(dataset, stages,
                       reference=("base", "fine-tune alone", "lexical baseline"))


def best_lexical_eval_dir(dataset: str, metric: str = "ndcg@10",
                          leaderboard: str | Path | None = None) -> tuple[Path | None, str]:
    """Evaluation dir of the best lexical baseline (newest run each) on ``dataset``."""
    best: tuple[float, Path | None, str] = (-1.0, None, "")
    for name in ("tfidf", "bm25"):
        d = latest_eval_dir(dataset, name, leaderboard)
        if d is not None:
            v = read_run_json(d, "metrics.json", "itsm evaluate").get(metric, -1.0)
            if v is not None and v > best[0]:
                best = (v, d, name)
    return best[1], best[2]


def pt_summary(meta: dict[str, Any]) -> str:
    c = meta.get("pretrain_config", {})
    return (f"{meta.get('method')} on {meta.get('texts', {}).get('used')} training texts, "
            f"{meta.get('global_steps')} steps, {meta.get('train_seconds')} s, "
            f"seq {c.get('max_seq_length')}, lr {c.get('learning_rate')}")


def pretrain_summary(meta: dict[str, Any]) -> pd.DataFrame:
    """The real settings and outcome of a pre-training run, as a two-column table."""
    c = meta.get("pretrain_config", {})
    rows = {
        "base model": meta.get("base_model"), "method": meta.get("method"),
        "loss": meta.get("loss"), "texts used": meta.get("texts", {}).get("used"),
        "texts available (training split)": meta.get("texts", {}).get("available"),
        "held-out duplicates removed": meta.get("texts", {}).get(
            "train_duplicates_of_held_out_removed"),
        "max_seq_length": c.get("max_seq_length"), "batch size": c.get("batch_size"),
        "learning rate": c.get("learning_rate"), "epochs": c.get("epochs"),
        "steps": meta.get("global_steps"), "train seconds": meta.get("train_seconds"),
        "texts / second": meta.get("texts_per_second"), "threads": meta.get("threads"),
        "validation NDCG@10 before": meta.get("base_validation", {}).get(
            "validation_ndcg@10"),
        "validation NDCG@10 best": meta.get("best_validation_ndcg@10"),
        "best checkpoint": meta.get("best_checkpoint"), "git commit": meta.get("git_commit"),
    }
    return pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows))


def format_stage_table(table: pd.DataFrame, metrics: tuple[str, ...] = ("ndcg@10", "mrr@10"),
                       digits: int = 3) -> pd.DataFrame:
    """Display version: value [CI] and paired differences [CI]."""
    if "stage" not in table.columns:
        return table
    out = table[["dataset", "stage"]].copy()
    out["model"] = table.get("model")

    from itsm_core.metrics.format import fmt_ci

    def fmt(v, lo, hi, sign=""):
        return fmt_ci(v, lo, hi, digits=digits, signed=sign == "+")

    for m in metrics:
        if m not in table.columns:
            continue
        out[m] = [fmt(r[m], r[f"{m}_ci_low"], r[f"{m}_ci_high"]) for _, r in table.iterrows()]
        for c in [c for c in table.columns if c.startswith(f"{m}_diff_vs_")
                  and not c.endswith(("_ci_low", "_ci_high"))]:
            out[c.replace("_diff_vs_", " Δ vs ").replace("_", " ")] = [
                fmt(r[c], r[f"{c}_ci_low"], r[f"{c}_ci_high"], "+") for _, r in table.iterrows()]
    out["note"] = table["note"]
    return out


def run_from_params(model: str = "minilm", dataset: str = "it_tickets", method: str = "simcse",
                    profile: str = "default", train_profile: str = "default",
                    max_texts: int | None = -1, finetune: bool = True, **overrides: Any
                    ) -> StagesResult:
    """Notebook / CLI entry: ``max_texts`` -1 = the profile's, 0 = all training texts."""
    if max_texts is not None and max_texts >= 0:
        overrides["max_texts"] = max_texts or None
    cfg = config_for_profile(profile, model=model, dataset=dataset, method=method,
                             **{k: v for k, v in overrides.items() if v is not None})
    return run_stages(cfg, finetune=finetune, train_profile=train_profile)


def stage_board(table: pd.DataFrame) -> pd.DataFrame:
    """Stages with a test result, shaped for :func:`itsm_core.reports.plots.metric_with_ci`."""
    if "ndcg@10" not in table.columns:
        return pd.DataFrame()
    return table.dropna(subset=["ndcg@10"]).assign(model_kind="dense")


def history_frames(meta: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(loss by step, validation metrics by step) of a pre-training / distillation run."""
    from itsm_core.training.finetune import history_frames as frames

    return frames(meta)
