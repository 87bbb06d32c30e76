"""Knowledge distillation: a teacher (e.g. an ensemble) into one small student model.

Data: the teacher embeds training-split texts only
(:func:`itsm_core.training.pretrain.pretrain_texts`:
validation / test incidents and exact duplicates of their texts are excluded).

Losses (sentence-transformers):

- ``mse`` (default): ``MSELoss`` between the student's embedding, mapped into the
  teacher's space by a learnable linear projection (``projection_dim`` = teacher dim),
  and the teacher's embedding. The projection starts at the least-squares map from the
  student's initial embeddings to the teacher's (fitted on the training texts), so
  training starts from the best linear fit instead of a random map; the projection is
  used only for training — the student keeps its own dimension for search;
- ``margin-mse``: ``MarginMSELoss`` on (anchor, positive, negative) triplets mined with
  the teacher (positive: one of the teacher's 5 nearest neighbours of the anchor among
  the training texts; negative: a rank 20–200 neighbour); the label is the teacher's
  score margin. Only similarities are matched, so no projection is needed.

Selection on validation NDCG@10 (best checkpoint restored); test only in the final
evaluation. :func:`comparison` puts student, teacher, student trained alone and the
zero-shot student side by side: quality with CIs and paired differences, size, encode
speed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from itsm_core.core.config import LEADERBOARD_CSV, MODELS_DIR, SEED
from itsm_core.core.errors import ItsmError
from itsm_core.core.io import (
    atomic_write_json,
    git_commit,
    read_run_json,
    sha256_file,
    unique_run_dir,
)
from itsm_core.runs.schema import same_spec

logger = logging.getLogger(__name__)

LOSSES = ("mse", "margin-mse")


@dataclass
class DistillConfig:
    """Hyper-parameters of one distillation run (stored in ``distill_meta.json``)."""

    teacher: str = ""
    student: str = "minilm"
    dataset: str = "it_tickets"
    loss: str = "mse"
    max_texts: int | None = 3000
    max_seq_length: int = 128
    batch_size: int = 32
    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    eval_steps: int = 25
    max_validation_corpus: int = 1000
    positives_top_k: int = 5
    negatives_rank: tuple[int, int] = (20, 200)
    seed: int = SEED
    name: str | None = None
    output_dir: str | None = None
    evaluate_test: bool = True
    evaluate_teacher: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


PROFILES: dict[str, dict[str, Any]] = {
    # 2 CPU cores: 3k texts, 1 epoch (see README for the measured minutes)
    "default": {"max_texts": 3000, "max_seq_length": 128, "batch_size": 32, "eval_steps": 25},
    "full": {"max_texts": None, "epochs": 2.0, "batch_size": 64, "eval_steps": 100},
    "smoke": {"max_texts": 24, "max_seq_length": 32, "batch_size": 4, "max_steps": 2,
              "eval_steps": 1, "evaluate_test": False, "evaluate_teacher": False},
}


def config_for_profile(profile: str = "default", **overrides: Any) -> DistillConfig:
    """A :class:`DistillConfig` from a named profile plus explicit overrides."""
    from itsm_core.core.profiles import config_from_profile

    return config_from_profile(DistillConfig, PROFILES, profile, overrides, _check)


def _check(cfg: DistillConfig) -> None:
    if not cfg.teacher:
        raise ItsmError("no teacher given", where="--teacher",
                        fix="pass a model spec, e.g. an ensemble folder from `itsm ensemble` "
                        "or ensemble:<a>,<b>")
    if cfg.loss not in LOSSES:
        raise ItsmError(f"unknown distillation loss {cfg.loss!r}", where="--loss",
                        fix=f"choose from {list(LOSSES)}")
    if cfg.max_texts is not None and cfg.max_texts < max(cfg.batch_size, 8):
        raise ItsmError("too few texts for distillation", where="--max-texts",
                        fix="pass at least the batch size (or 0 for all)")


def teacher_embeddings(teacher, texts: list[str]) -> np.ndarray:
    """The teacher's (unit-length) document embeddings; teachers must embed."""
    if not hasattr(teacher, "embed"):
        raise ItsmError(f"teacher {teacher.name!r} has no embeddings (a lexical baseline or a "
                        "score-averaging ensemble)", where="--teacher",
                        fix="use a dense model or an ensemble with method 'concat'")
    return np.asarray(teacher.embed(texts, "document"), dtype=np.float32)


def least_squares_projection(student: np.ndarray, teacher: np.ndarray
                             ) -> tuple[np.ndarray, np.ndarray, float]:
    """(W, b, R²) of the linear map student → teacher (least squares with intercept)."""
    x = np.hstack([student, np.ones((len(student), 1), dtype=student.dtype)])
    sol, *_ = np.linalg.lstsq(x.astype(np.float64), teacher.astype(np.float64), rcond=None)
    pred = x @ sol
    ss_res = float(((teacher - pred) ** 2).sum())
    ss_tot = float(((teacher - teacher.mean(axis=0)) ** 2).sum())
    return (sol[:-1].T.astype(np.float32), sol[-1].astype(np.float32),
            1.0 - ss_res / max(ss_tot, 1e-12))


def mine_triplets(texts: list[str], emb: np.ndarray, top_k: int = 5,
                  neg_rank: tuple[int, int] = (20, 200), seed: int = SEED) -> pd.DataFrame:
    """(anchor, positive, negative, label = teacher margin) from teacher neighbours."""
    rng = np.random.default_rng(seed)
    n = len(texts)
    lo, hi = min(neg_rank[0], n - 2), min(neg_rank[1], n - 1)
    if n < 3 or hi <= lo or top_k < 1:
        raise ItsmError("too few texts to mine triplets", where="--max-texts",
                        fix="use more texts (at least a few hundred)")
    rows = []
    for s in range(0, n, 1024):
        sims = emb[s:s + 1024] @ emb.T
        for i, row in enumerate(sims, start=s):
            row[i] = -np.inf
            order = np.argsort(-row)
            p = order[rng.integers(0, min(top_k, n - 1))]
            q = order[rng.integers(lo, hi)]
            rows.append((texts[i], texts[p], texts[q], float(row[p] - row[q])))
    return pd.DataFrame(rows, columns=["anchor", "positive", "negative", "label"])


@dataclass
class DistillResult:
    run_dir: Path
    model_dir: Path
    meta: dict[str, Any]
    test_record: dict[str, Any] | None
    teacher_eval: Path | None


def run_distill(cfg: DistillConfig, *, incidents_path: str | Path | None = None
                ) -> DistillResult:
    """Distil ``cfg.teacher`` into ``cfg.student``; evaluate student (and teacher) on test."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss, MSELoss

    from itsm_core.encoders.factory import load_scorer
    from itsm_core.encoders.registry import MODEL_META_FILE, load_sentence_transformer
    from itsm_core.evaluation.benchmark import BenchmarkConfig, build_benchmark, evaluate_model
    from itsm_core.training.finetune import (
        subsample_corpus,
        validation_evaluator,
        validation_selected_args,
    )
    from itsm_core.training.pretrain import _incidents_and_texts, latest_eval_dir, pretrain_texts

    _check(cfg)
    t_start = time.time()
    pt = pretrain_texts(cfg.dataset, incidents_path=incidents_path, max_texts=cfg.max_texts,
                        seed=cfg.seed)
    _, _, inc_path = _incidents_and_texts(cfg.dataset, incidents_path)
    texts = pt.texts.tolist()
    teacher = load_scorer(cfg.teacher, show_progress=False)
    t0 = time.time()
    t_emb = teacher_embeddings(teacher, texts)
    teacher_seconds = time.time() - t0

    model, spec = load_sentence_transformer(cfg.student)
    model.max_seq_length = cfg.max_seq_length
    torch.manual_seed(cfg.seed)
    run_name = cfg.name or f"{spec.key}-distilled"
    if cfg.output_dir:
        from itsm_core.core.io import new_run_dir

        run_dir = new_run_dir(cfg.output_dir)
    else:
        run_dir = unique_run_dir(MODELS_DIR, f"{run_name}_{cfg.dataset}")
    np.save(run_dir / "teacher_embeddings.npy", t_emb)
    info: dict[str, Any] = {"teacher_dim": int(t_emb.shape[1]), "student_dim": spec.dim}
    if cfg.loss == "mse":
        s_emb = model.encode(texts, batch_size=64, convert_to_numpy=True,
                             normalize_embeddings=False)
        loss = MSELoss(model, projection_dim=t_emb.shape[1])
        w, b, r2 = least_squares_projection(s_emb, t_emb)
        with torch.no_grad():
            loss.projection.weight.copy_(torch.from_numpy(w))
            loss.projection.bias.copy_(torch.from_numpy(b))
        info.update({"projection": f"Linear({s_emb.shape[1]}→{t_emb.shape[1]})",
                     "projection_init": "least squares", "projection_init_r2": round(r2, 4),
                     "initial_mse": float(((s_emb @ w.T + b - t_emb) ** 2).mean())})
        train_ds = Dataset.from_dict({"text": texts, "label": t_emb.tolist()})
    else:
        trip = mine_triplets(texts, t_emb, cfg.positives_top_k, cfg.negatives_rank, cfg.seed)
        loss = MarginMSELoss(model)
        info.update({"triplets": len(trip), "mean_teacher_margin": float(trip["label"].mean())})
        train_ds = Dataset.from_pandas(trip, preserve_index=False)

    val_bench = subsample_corpus(build_benchmark(inc_path, config=BenchmarkConfig(
        query_split="validation", threshold_split="validation", n_resamples=0)),
        cfg.max_validation_corpus, cfg.seed)
    evaluator = validation_evaluator(val_bench, replace(spec, key=run_name))
    steps_per_epoch = max(1, len(train_ds) // cfg.batch_size)
    eval_steps = max(1, min(cfg.eval_steps, steps_per_epoch))
    args = validation_selected_args(run_dir, cfg, eval_steps)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_ds,
                                         loss=loss, evaluator=evaluator)
    base_val = evaluator(model)
    t1 = time.time()
    trainer.train()
    train_seconds = time.time() - t1
    model = trainer.model
    model_dir = run_dir / "model"
    model.save_pretrained(str(model_dir))
    base_key = (spec.extra or {}).get("base_model") or spec.key
    meta_spec = {**spec.to_dict(), "path": None, "extra": {
        "base_model": base_key, "distilled_from": cfg.teacher}}
    steps = trainer.state.global_step
    meta = {
        "name": run_name, "spec": meta_spec, "base_model": base_key,
        "teacher": cfg.teacher, "teacher_name": teacher.name,
        "distill_config": asdict(cfg), "loss": type(loss).__name__, **info,
        "texts": pt.counts, "incidents": str(inc_path),
        "incidents_sha256": sha256_file(inc_path), "git_commit": git_commit(),
        "threads": torch.get_num_threads(),
        "teacher_embed_seconds": round(teacher_seconds, 1),
        "train_seconds": round(train_seconds, 1), "global_steps": steps,
        "texts_per_second": round(steps * cfg.batch_size / max(train_seconds, 1e-9), 2),
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_validation_ndcg@10": trainer.state.best_metric,
        "base_validation": base_val, "log_history": trainer.state.log_history,
    }
    atomic_write_json(model_dir / MODEL_META_FILE, {"name": run_name, "spec": meta_spec})
    atomic_write_json(run_dir / "distill_meta.json", meta)
    record, teacher_eval = None, None
    if cfg.evaluate_test:
        bench = build_benchmark(inc_path)
        record = evaluate_model(str(model_dir), bench, run_dir / "evaluate",
                                leaderboard=LEADERBOARD_CSV)
        teacher_eval = latest_eval_dir(cfg.dataset, teacher.name)
        if teacher_eval is not None and not same_spec(read_run_json(
                teacher_eval, "metrics.json", "itsm evaluate").get("model_arg"), cfg.teacher):
            teacher_eval = None  # same name, another model: evaluate this teacher
        if teacher_eval is None and cfg.evaluate_teacher:
            evaluate_model(cfg.teacher, bench, run_dir / "teacher_evaluate",
                           leaderboard=LEADERBOARD_CSV, scorer=teacher)
            teacher_eval = run_dir / "teacher_evaluate"
    meta["teacher_eval"] = str(teacher_eval) if teacher_eval else None
    meta["total_seconds"] = round(time.time() - t_start, 1)
    atomic_write_json(run_dir / "distill_meta.json", meta)
    return DistillResult(run_dir, model_dir, meta, record, teacher_eval)


def load_distill_meta(run_dir: str | Path) -> dict[str, Any]:
    return read_run_json(run_dir, "distill_meta.json", "itsm distill")


# ----------------------------------------------------------------------------- comparison


def _folder_size_mb(path: str | Path | None) -> float | None:
    if not path or not Path(path).is_dir():
        return None
    return round(sum(f.stat().st_size for f in Path(path).rglob("*")
                     if f.is_file() and f.suffix in (".safetensors", ".bin", ".onnx"))
                 / 2**20, 1)


def model_size(scorer) -> dict[str, Any]:
    """Parameters, weight files on disk (MB) and embedding dimension of a scorer."""
    members = getattr(scorer, "members", None) or [scorer]
    params, mb = 0, 0.0
    for m in members:
        model = getattr(m, "model", None)
        if model is not None:
            params += sum(p.numel() for p in model.parameters())
        mb += _folder_size_mb(getattr(getattr(m, "spec", None), "path", None)) or 0.0
    return {"parameters_m": round(params / 1e6, 1), "weights_mb": round(mb, 1),
            "embedding_dim": getattr(getattr(scorer, "spec", None), "dim", None),
            "models": len(members)}


def encode_speed(scorer, texts: list[str], repeats: int = 1) -> float:
    """Sentences per second for encoding ``texts`` (fresh cache each time, after warm-up)."""
    def reset(s):
        for m in getattr(s, "members", None) or [s]:
            if hasattr(m, "_cache"):
                m._cache.clear()

    scorer.embed(texts[:8], "document")
    best = 0.0
    for _ in range(repeats):
        reset(scorer)
        t0 = time.perf_counter()
        scorer.embed(texts, "document")
        best = max(best, len(texts) / (time.perf_counter() - t0))
    reset(scorer)
    return round(best, 1)


def comparison(result_dir: str | Path, *, alone: str | Path | None = None,
               zero_shot: str | Path | None = None, speed_texts: int = 256,
               metrics: tuple[str, ...] = ("ndcg@10", "mrr@10")) -> pd.DataFrame:
    """Student vs teacher vs student trained alone vs zero-shot student (test set).

    Quality: value [95 % CI] and paired differences of the student to each other model
    on the same test queries. Size and encode speed are measured here, on
    ``speed_texts`` validation texts, one model after the other in this process.
    """
    from itsm_core.encoders.factory import load_scorer
    from itsm_core.evaluation.paired import paired_difference
    from itsm_core.training.finetune import config_for_profile as train_config
    from itsm_core.training.pretrain import (
        _incidents_and_texts,
        finetune_alone_dir,
        latest_eval_dir,
    )

    meta = load_distill_meta(result_dir)
    run_dir = Path(result_dir)
    dataset, base = meta["distill_config"]["dataset"], meta["base_model"]
    if alone is None:
        alone, _ = finetune_alone_dir(dataset, asdict(train_config("default", model=base)),
                                      f"{base}-ft")
    if zero_shot is None:
        zero_shot = latest_eval_dir(dataset, base)
    teacher_eval = meta.get("teacher_eval")
    candidates = [("student (distilled)", str(run_dir / "model"), run_dir / "evaluate"),
                  ("teacher", meta["teacher"], Path(teacher_eval) if teacher_eval else None),
                  ("student trained alone", str(Path(alone).parent / "model") if alone
                   else None, Path(alone) if alone else None),
                  ("zero-shot student", meta["distill_config"]["student"],
                   Path(zero_shot) if zero_shot else None)]
    df, texts, _ = _incidents_and_texts(dataset, meta.get("incidents"))
    val = texts[(df.set_index("number")["split"].reindex(texts.index) == "validation")
                .to_numpy()]
    sample = val.sample(n=min(speed_texts, len(val)), random_state=SEED).tolist()
    student_eval = run_dir / "evaluate"
    rows = []
    for role, spec, eval_dir in candidates:
        row: dict[str, Any] = {"role": role, "model_spec": spec,
                               "eval_dir": str(eval_dir) if eval_dir else None}
        if eval_dir is not None and (Path(eval_dir) / "metrics.json").exists():
            rec = read_run_json(eval_dir, "metrics.json", "itsm evaluate")
            row["model"] = rec.get("model")
            for m in metrics:
                ci = rec.get(f"{m}_ci") or [np.nan, np.nan]
                row.update({m: rec.get(m), f"{m}_ci_low": ci[0], f"{m}_ci_high": ci[1]})
                if role != "student (distilled)" and student_eval.exists():
                    d = paired_difference(student_eval, eval_dir, m)
                    row.update({f"student_minus_this_{m}": d["diff"],
                                f"student_minus_this_{m}_ci_low": d["ci_low"],
                                f"student_minus_this_{m}_ci_high": d["ci_high"]})
        if spec:
            scorer = load_scorer(spec, show_progress=False)
            row.update(model_size(scorer))
            row["encode_sentences_per_s"] = encode_speed(scorer, sample)
            row["speed_threads"] = torch.get_num_threads()
            del scorer
        rows.append(row)
    return pd.DataFrame(rows)


def format_comparison(table: pd.DataFrame, metrics: tuple[str, ...] = ("ndcg@10", "mrr@10"),
                      digits: int = 3) -> pd.DataFrame:
    """Display version of :func:`comparison` (value [CI], Δ [CI])."""
    out = table[["role"]].copy()
    out["model"] = table.get("model")

    from itsm_core.metrics.format import fmt_ci

    def fmt(r, c, sign=""):
        return fmt_ci(r.get(c), r.get(c + "_ci_low"), r.get(c + "_ci_high"), digits=digits,
                      signed=sign == "+")

    for m in metrics:
        out[m] = [fmt(r, m) for _, r in table.iterrows()]
        col = f"student_minus_this_{m}"
        if col in table:
            out[f"student − this ({m})"] = [fmt(r, col, "+") for _, r in table.iterrows()]
    for c in ("parameters_m", "weights_mb", "embedding_dim", "encode_sentences_per_s"):
        if c in table:
            out[c] = table[c]
    return out


def save_comparison(table: pd.DataFrame, run_dir: str | Path) -> Path:
    from itsm_core.core.io import atomic_write_df

    return atomic_write_df(Path(run_dir) / "comparison.csv", table)


def distill_summary(meta: dict[str, Any]) -> pd.DataFrame:
    """The real settings and outcome of a distillation run, as a two-column table."""
    c = meta.get("distill_config", {})
    rows = {
        "teacher": meta.get("teacher"), "student": c.get("student"), "loss": meta.get("loss"),
        "teacher dim → student dim": f"{meta.get('teacher_dim')} → {meta.get('student_dim')}",
        "projection": meta.get("projection", "–"),
        "projection init R²": meta.get("projection_init_r2", "–"),
        "texts (training split)": meta.get("texts", {}).get("used"),
        "max_seq_length": c.get("max_seq_length"), "batch size": c.get("batch_size"),
        "learning rate": c.get("learning_rate"), "epochs": c.get("epochs"),
        "steps": meta.get("global_steps"),
        "teacher embedding seconds": meta.get("teacher_embed_seconds"),
        "train seconds": meta.get("train_seconds"), "threads": meta.get("threads"),
        "validation NDCG@10 before": meta.get("base_validation", {}).get(
            "validation_ndcg@10"),
        "validation NDCG@10 best": meta.get("best_validation_ndcg@10"),
        "git commit": meta.get("git_commit"),
    }
    return pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows))


def run_from_params(teacher: str, student: str = "minilm", dataset: str = "it_tickets",
                    loss: str = "mse", profile: str = "default", max_texts: int | None = -1,
                    compare: bool = True, **overrides: Any
                    ) -> tuple[DistillResult, pd.DataFrame]:
    """Notebook / CLI entry: distil, then compare (``max_texts`` -1 = profile, 0 = all)."""
    if max_texts is not None and max_texts >= 0:
        overrides["max_texts"] = max_texts or None
    cfg = config_for_profile(profile, teacher=teacher, student=student, dataset=dataset,
                             loss=loss, **{k: v for k, v in overrides.items() if v is not None})
    res = run_distill(cfg)
    table = pd.DataFrame()
    if compare and cfg.evaluate_test:
        table = comparison(res.run_dir)
        save_comparison(table, res.run_dir)
    return res, table


def comparison_board(table: pd.DataFrame) -> pd.DataFrame:
    """Rows with a test result, shaped for :func:`itsm_core.reports.plots.metric_with_ci`."""
    if "ndcg@10" not in table.columns:
        return pd.DataFrame()
    meta_cols = {"dataset": "distillation", "model_kind": "dense"}
    return table.dropna(subset=["ndcg@10"]).assign(**meta_cols)
