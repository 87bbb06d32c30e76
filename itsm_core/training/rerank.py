"""Cross-encoder re-ranker: trained on the TRAINING split, chosen on validation.

The re-ranker reads (query, candidate) together and re-orders the retriever's top ``k``
(:class:`~itsm_core.encoders.rerank.RerankScorer`). Its training data is what it will see
at inference:

1. anchors and positives from the training split's relevance signal (same fine label, or
   a training duplicate link) — never from a model score;
2. candidates mined by the RETRIEVER it will re-rank (sentence-transformers
   ``mine_hard_negatives``, the top of its ranking);
3. every mined candidate graded by the labels, not by the retriever: a "negative" that
   shares the anchor's labels (or duplicate cluster) keeps its grade as target instead of
   0 — the false negatives that made mined negatives hurt the bi-encoder (README
   "ablation") are never trained as negatives.

The cross-encoder starts from packaged weights (MiniLM's encoder, a fresh one-logit head)
and is trained with the ``CrossEncoderTrainer`` under binary cross-entropy on graded
targets (``bce``) or LambdaLoss over each anchor's candidate list (``lambda``); the loss
is a config field, the choice between runs is made on their validation NDCG@10
(``validation`` in the run's ``itsm_reranker.json``), and the number of candidates
re-ranked (``k``) is chosen on validation too. Test is evaluated once, at the end.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from itsm_core.core.config import LEADERBOARD_CSV, MODELS_DIR
from itsm_core.core.errors import ItsmError
from itsm_core.core.io import (
    atomic_write_json,
    git_commit,
    json_safe,
    new_run_dir,
    read_run_json,
    sha256_file,
    unique_run_dir,
)
from itsm_core.runs.schema import unseen_model_name

logger = logging.getLogger(__name__)

LOSSES = ("bce", "lambda")


@dataclass
class RerankConfig:
    """One re-ranker training run.

    Attributes:
        dataset: bundled data set whose TRAINING split gives the pairs.
        base: packaged model the cross-encoder's encoder starts from.
        retriever: the first stage it re-ranks (a model spec or folder); it mines the
            candidates, so training sees the retriever's mistakes.
        name: the re-ranker's name (leaderboard: ``<name>@<retriever name>``).
        loss: ``bce`` (graded targets) or ``lambda`` (LambdaLoss per anchor list).
        max_anchors: anchors sampled from the training split.
        max_corpus: training-split incidents the candidates are mined from (0 = all).
        num_negatives: mined candidates kept per anchor; range_max: how deep to look.
        relative_margin: mined candidates must score below (1 - margin) x the positive
            (None: no margin — the labels grade every candidate, so a score margin is
            not needed as a false-negative guard; measured on it_tickets, a margin of
            0.05 left 4 of 600 anchors with four candidates, because a random same-label
            positive scores below most of the retriever's top 30).
        max_length: tokens of the (query, candidate) pair (128: an it_tickets text has a
            median of 30 tokens, so most pairs fit whole; at 256 a step costs twice as
            much).
        max_anchors / max_length / batch_size defaults: measured on it_tickets validation
            (200 queries). 500 anchors, 256 tokens, batch 16 (125 steps) re-ranked the
            older minilm-ft to 0.679 at k = 5 vs 0.677 alone (fad7a9a); over the
            drift-penalised minilm-ft, 3,000 anchors, 128 tokens, batch 32 (375 steps,
            ~14 min on 2 cores) reach 0.703 with the retriever's score mixed in
            (k = 20, w = 0.1) vs 0.695 alone.
            Starting from the retriever's own weights instead of packaged MiniLM gave
            0.705 — within noise, so the packaged start stays. Mining only among labelled
            incidents (an unlabelled candidate is graded 0 although nothing says it is
            irrelevant; half of the 6,000-incident corpus is unlabelled) gave 0.701: 83 %
            of the mined candidates were then relevant, and the unlabelled ones stay.
            ``mine_hard_negatives`` finds the anchor itself among its top 4 (it is in the
            corpus and is dropped), so 3 candidates per anchor are kept; asking for 5
            (4 kept, 469 steps) gave 0.702 (k = 30, w = 0.1): no better.
        k: candidates re-ranked at inference (None: chosen on validation).
        calibration_queries: validation queries ``k`` is chosen on (seeded sample).
    """

    dataset: str = "it_tickets"
    base: str = "minilm"
    retriever: str = "minilm"
    name: str = "minilm-ce"
    loss: str = "bce"
    max_anchors: int = 3000
    max_corpus: int = 6000
    num_negatives: int = 4
    range_max: int = 30
    relative_margin: float | None = None
    max_length: int = 128
    batch_size: int = 32
    learning_rate: float = 5e-5
    epochs: float = 1.0
    max_steps: int = -1
    warmup_ratio: float = 0.1
    k: int | None = None
    calibration_queries: int = 200
    seed: int = 42
    evaluate_test: bool = True
    output_dir: str | None = None


PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "full": {"max_anchors": 5000, "max_corpus": 0, "epochs": 2.0, "num_negatives": 7},
    "smoke": {"max_anchors": 12, "max_corpus": 120, "num_negatives": 2, "range_max": 10,
              "max_steps": 2, "batch_size": 4, "max_length": 64, "calibration_queries": 8,
              "evaluate_test": False},
}


def _check(cfg: RerankConfig) -> None:
    if cfg.loss not in LOSSES:
        raise ItsmError(f"unknown re-ranker loss {cfg.loss!r}", where="--loss",
                        fix=f"choose from {', '.join(LOSSES)}")
    if cfg.num_negatives < 1 or cfg.max_anchors < 1:
        raise ItsmError("need at least one anchor and one negative per anchor",
                        where="--num-negatives / --max-anchors", fix="e.g. 4 and 1000")


def config_for_profile(profile: str = "default", **overrides: Any) -> RerankConfig:
    """A :class:`RerankConfig` from a named profile plus explicit overrides."""
    from itsm_core.core.profiles import config_from_profile

    return config_from_profile(RerankConfig, PROFILES, profile, overrides, check=_check)


# ----------------------------------------------------------------------------- data


def relevance_keys(incidents: pd.DataFrame, labels: list[str],
                   links: pd.DataFrame | None) -> pd.DataFrame:
    """Per TRAINING incident, the keys its relevance is graded on: the label levels
    (coarse first), or its duplicate cluster among the training links."""
    tr = incidents[incidents["split"] == "train"].set_index("number")
    if labels:
        return tr[labels].astype("string")
    if links is None:
        raise ItsmError("the data set has neither labels nor duplicate links",
                        fix="a re-ranker needs a relevance signal: add labels or links")
    from itsm_core.pairs.training import link_components

    tl = links[links["split"] == "train"] if "split" in links.columns else links
    comp = link_components(set(tr.index), tl)
    return pd.DataFrame({"cluster": pd.Series(comp, dtype="string")}).reindex(tr.index)


def grade(keys: pd.DataFrame, a: list[str], b: list[str]) -> np.ndarray:
    """Graded relevance of each pair (a_i, b_i) in [0, 1]: leading key levels shared /
    number of levels (a missing key shares nothing)."""
    ka, kb = keys.reindex(a).to_numpy(object), keys.reindex(b).to_numpy(object)
    still = np.ones(len(a), dtype=bool)
    g = np.zeros(len(a))
    for j in range(keys.shape[1]):
        same = np.array([x is not pd.NA and x is not None and y is not pd.NA
                         and x == y for x, y in zip(ka[:, j], kb[:, j])], dtype=bool)
        still &= same
        g += still
    return g / max(1, keys.shape[1])


def anchor_positive(keys: pd.DataFrame, texts: pd.Series, cfg: RerankConfig
                    ) -> tuple[pd.DataFrame, list[str]]:
    """Seeded (anchor, positive) pairs of fully relevant training incidents, and the
    training-split corpus the candidates are mined from (it holds every positive)."""
    rng = np.random.default_rng(cfg.seed)
    full = keys.dropna()
    fine = full.agg("\x1f".join, axis=1) if len(full) else pd.Series(dtype="string")
    fine = fine[fine.index.isin(texts.index)]
    groups = fine.groupby(fine).groups
    linked = [n for g in groups.values() if len(g) > 1 for n in g]
    ids = [n for n in keys.index if n in texts.index]
    if cfg.max_corpus and len(ids) > cfg.max_corpus:
        # every incident with a partner may be drawn (links data: all linked reports)
        pool = set(linked) if len(linked) <= cfg.max_corpus // 2 else set(
            rng.choice(linked, cfg.max_corpus // 2, replace=False))
        rest = [n for n in ids if n not in pool]
        ids = sorted(pool) + sorted(rng.choice(rest, cfg.max_corpus - len(pool),
                                               replace=False))
    in_corpus = set(ids)
    members = {k: [n for n in g if n in in_corpus] for k, g in groups.items()}
    cands = [n for n in ids if n in fine.index and len(members[fine[n]]) > 1]
    anchors = rng.choice(cands, min(cfg.max_anchors, len(cands)), replace=False) if cands \
        else []
    rows = []
    for a in anchors:
        others = [n for n in members[fine[a]] if n != a]
        rows.append((a, others[int(rng.integers(len(others)))]))
    if not rows:
        raise ItsmError("no training incident has a relevant partner in the training split",
                        where=cfg.dataset, fix="check the labels / links of the training "
                        "split (a re-ranker learns from relevant pairs)")
    ap = pd.DataFrame(rows, columns=["anchor_id", "positive_id"])
    return ap, ids


def mine_candidates(ap: pd.DataFrame, corpus_ids: list[str], texts: pd.Series,
                    keys: pd.DataFrame, miner, cfg: RerankConfig) -> pd.DataFrame:  # noqa: ANN001
    """``mine_hard_negatives`` with the retriever, then every candidate graded by labels.

    Returns:
        One row per (anchor, candidate): ``anchor``, ``text``, ``target`` (graded
        relevance in [0, 1]; the positive is 1), ``anchor_id``, ``candidate_id``,
        ``source`` (``positive`` / ``mined``) and ``guarded`` (a mined candidate the labels
        call relevant: kept with its grade, not as a negative).
    """
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    corpus = texts.loc[corpus_ids]
    text_id = {t: n for n, t in corpus.items()}
    ds = Dataset.from_dict({"anchor": texts.loc[ap["anchor_id"]].tolist(),
                            "positive": texts.loc[ap["positive_id"]].tolist()})
    mined = mine_hard_negatives(
        ds, miner, corpus=corpus.tolist(), num_negatives=cfg.num_negatives,
        range_max=cfg.range_max, relative_margin=cfg.relative_margin,
        sampling_strategy="top", output_format="n-tuple", batch_size=64,
        verbose=False).to_pandas()
    anchor_id = dict(zip(texts.loc[ap["anchor_id"]], ap["anchor_id"]))
    rows = []
    for r in mined.itertuples(index=False):
        a_text, pos = r[0], r[1]
        a = anchor_id[a_text]
        rows.append((a_text, pos, a, text_id.get(pos), "positive"))
        for neg in r[2:]:
            if neg != a_text:
                rows.append((a_text, neg, a, text_id.get(neg), "mined"))
    df = pd.DataFrame(rows, columns=["anchor", "text", "anchor_id", "candidate_id", "source"])
    df["target"] = grade(keys, df["anchor_id"].tolist(), df["candidate_id"].tolist())
    df.loc[df["source"] == "positive", "target"] = 1.0
    df["guarded"] = (df["source"] == "mined") & (df["target"] > 0)
    return df


def train_dataset(rows: pd.DataFrame, loss: str, seed: int):
    """``datasets.Dataset`` for the loss: (anchor, text, label) pairs for ``bce``; (query,
    docs, labels) lists per anchor for ``lambda``."""
    from datasets import Dataset

    if loss == "bce":
        p = rows.sample(frac=1.0, random_state=seed)
        return Dataset.from_dict({"anchor": p["anchor"].tolist(), "text": p["text"].tolist(),
                                  "label": p["target"].astype(float).tolist()})
    g = rows.groupby("anchor", sort=False).agg(docs=("text", list), labels=("target", list))
    return Dataset.from_dict({"query": g.index.tolist(), "docs": g["docs"].tolist(),
                              "labels": [[float(x) for x in v] for v in g["labels"]]})


# ----------------------------------------------------------------------------- run

HEADLINE = ("ndcg@10", "mrr@10", "map@100")


def paired_rows(run_a: Path, run_b: Path) -> list[dict[str, Any]]:
    """Paired bootstrap differences (a − b) of the headline metrics on the same queries."""
    from itsm_core.evaluation.paired import paired_difference

    return [{"metric": m, **paired_difference(run_a, run_b, m)} for m in HEADLINE]



@dataclass
class RerankResult:
    run_dir: Path
    model_dir: Path
    meta: dict[str, Any]
    test_record: dict[str, Any] | None
    unseen_record: dict[str, Any] | None = None


def resolve_retriever(spec: str, dataset: str) -> str:
    """A retriever spec: a registry key / folder / composite spec as given, or the newest
    trained model of that name on ``dataset`` (``minilm-ft``, also ``hybrid:minilm-ft``)."""
    from itsm_core.encoders.factory import resolve_trained

    return resolve_trained(spec, dataset, where="--retriever")


def _mining_model(retriever: str):  # noqa: ANN202
    """The dense model that mines candidates: the retriever itself, or its dense half."""
    from itsm_core.encoders.registry import load_sentence_transformer

    dense = retriever
    if retriever.lower().startswith("hybrid:"):
        from itsm_core.encoders.hybrid import parse_hybrid_spec

        dense, _ = parse_hybrid_spec(retriever)
    if dense.lower() in ("tfidf", "bm25"):
        dense = "minilm"  # a lexical retriever: candidates mined by zero-shot MiniLM
    model, _ = load_sentence_transformer(dense)
    return model


def _run_dir(cfg: RerankConfig) -> Path:
    if cfg.output_dir:
        return new_run_dir(cfg.output_dir)
    return unique_run_dir(MODELS_DIR / "rerankers", f"{cfg.name}_{cfg.dataset}")


def train_reranker(cfg: RerankConfig, *, incidents_path: str | Path | None = None
                   ) -> RerankResult:
    """Train a cross-encoder re-ranker, choose ``k`` on validation, evaluate on test.

    Args:
        cfg: the run (:func:`config_for_profile`).
        incidents_path: another processed incidents file instead of ``cfg.dataset``'s.

    Returns:
        :class:`RerankResult`: the run folder (``model/``, ``itsm_reranker.json``,
        ``evaluate/``), its metadata and the test record (leaderboard row
        ``<name>@<retriever>``), plus the record on the other bundled data set.
    """
    import torch
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder import (
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss, LambdaLoss

    from itsm_core.data.corpus import load_corpus
    from itsm_core.data.datasets import processed_path
    from itsm_core.data.incidents import load_links
    from itsm_core.encoders.factory import load_scorer
    from itsm_core.encoders.registry import resolve_spec
    from itsm_core.encoders.rerank import CE_META_FILE, RerankScorer, format_rerank_spec
    from itsm_core.evaluation.benchmark import (
        build_benchmark,
        evaluate_model,
        validation_benchmark,
    )
    from itsm_core.training.finetune import other_dataset

    _check(cfg)
    t_start = time.time()
    inc_path = Path(incidents_path) if incidents_path else processed_path(cfg.dataset)
    corpus = load_corpus(inc_path)
    side = corpus.manifest
    labels = list(side.labels) if side and side.labels else []
    links = load_links(corpus.links_path) if corpus.links_path else None
    retriever = resolve_retriever(cfg.retriever, cfg.dataset)
    run_dir = _run_dir(cfg)

    keys = relevance_keys(corpus.incidents, labels, links)
    texts = corpus.texts[corpus.texts.str.strip().str.len() > 0]
    ap, corpus_ids = anchor_positive(keys, texts, cfg)
    rows = mine_candidates(ap, corpus_ids, texts, keys, _mining_model(retriever), cfg)
    train_ds = train_dataset(rows, cfg.loss, cfg.seed)

    torch.manual_seed(cfg.seed)
    base = resolve_spec(cfg.base)
    model = CrossEncoder(str(base.path), num_labels=1, max_length=cfg.max_length,
                         device="cpu", local_files_only=True)
    loss = (BinaryCrossEntropyLoss(model) if cfg.loss == "bce"
            else LambdaLoss(model, mini_batch_size=cfg.batch_size))
    args = CrossEncoderTrainingArguments(
        output_dir=str(run_dir / "checkpoints"), num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size
        if cfg.loss == "bce" else max(1, cfg.batch_size // (cfg.num_negatives + 1)),
        learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_ratio, seed=cfg.seed,
        data_seed=cfg.seed, save_strategy="no", eval_strategy="no", report_to="none",
        logging_steps=10, use_cpu=not torch.cuda.is_available(), disable_tqdm=False)
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=train_ds, loss=loss)
    t0 = time.time()
    trainer.train()
    train_seconds = time.time() - t0
    model_dir = run_dir / "model"
    model.save_pretrained(str(model_dir))

    # k, and the validation score the loss / recipe is compared on: VALIDATION queries
    bench = build_benchmark(inc_path)
    scorer = RerankScorer(load_scorer(retriever), model, cfg.k, name=cfg.name)
    choice = scorer.calibrate(lambda: validation_benchmark(bench),
                              n_queries=cfg.calibration_queries)
    meta: dict[str, Any] = {
        "name": cfg.name, "base_model": base.key, "retriever": retriever,
        "retriever_name": scorer.retriever.name, "dataset": cfg.dataset,
        "config": asdict(cfg), "loss": type(loss).__name__,
        "training_rows": {"n": int(len(rows)), "anchors": int(rows["anchor"].nunique()),
                          "positives": int((rows["source"] == "positive").sum()),
                          "mined": int((rows["source"] == "mined").sum()),
                          "guarded": int(rows["guarded"].sum()),
                          "mean_target_mined": round(float(
                              rows.loc[rows["source"] == "mined", "target"].mean()), 4)},
        "k": choice.k, "weight": choice.weight,
        "validation": {"chosen_on": choice.chosen_on, "table": choice.table},
        **_retriever_fusion(retriever, scorer.retriever),
        "train_seconds": round(train_seconds, 1), "global_steps": trainer.state.global_step,
        "log_history": trainer.state.log_history,
        "incidents": str(inc_path), "incidents_sha256": sha256_file(inc_path),
        "git_commit": git_commit(),
    }
    atomic_write_json(model_dir / CE_META_FILE, {"name": cfg.name, "base_model": base.key,
                                                 "dataset": cfg.dataset})
    atomic_write_json(run_dir / CE_META_FILE, meta)
    spec = format_rerank_spec(model_dir, retriever, choice.k, choice.weight)
    record = unseen = None
    if cfg.evaluate_test:
        record = evaluate_model(spec, bench, run_dir / "evaluate", scorer=scorer,
                                leaderboard=LEADERBOARD_CSV)
        # the retriever alone on the same queries (no leaderboard row: it has its own)
        evaluate_model(retriever, bench, run_dir / "retriever_test",
                       scorer=scorer.retriever, leaderboard=None)
        meta["test"] = {m: record.get(m) for m in HEADLINE}
        meta["test_vs_retriever"] = paired_rows(run_dir / "evaluate",
                                                run_dir / "retriever_test")
        other = other_dataset(cfg.dataset)
        if other:  # reported, never used for a choice: the re-ranker on duplicates elsewhere
            other_bench = build_benchmark(processed_path(other))
            scorer_other = RerankScorer(load_scorer(retriever), model, choice.k,
                                        weight=choice.weight, name=cfg.name)
            unseen = evaluate_model(spec, other_bench, run_dir / f"unseen_{other}",
                                    scorer=scorer_other, leaderboard=LEADERBOARD_CSV,
                                    task="unseen",
                                    name=unseen_model_name(scorer.name, cfg.dataset))
            evaluate_model(retriever, other_bench, run_dir / f"unseen_{other}_retriever",
                           scorer=scorer_other.retriever, leaderboard=None)
            meta["unseen"] = {"dataset": other, **{m: unseen.get(m) for m in HEADLINE},
                              "vs_retriever": paired_rows(
                                  run_dir / f"unseen_{other}",
                                  run_dir / f"unseen_{other}_retriever")}
    atomic_write_json(run_dir / CE_META_FILE, meta)
    if cfg.evaluate_test:
        try:
            meta = diagnose_reranker(run_dir)
        except ItsmError as err:  # e.g. too few adversarial pairs: keep the trained run
            logger.warning("re-ranker diagnostic skipped: %s", err)
            meta["diagnostic"] = {"skipped": str(err)}
    meta["total_seconds"] = round(time.time() - t_start, 1)
    atomic_write_json(run_dir / CE_META_FILE, meta)
    return RerankResult(run_dir, model_dir, meta, record, unseen)


def _retriever_fusion(retriever: str, scorer: Any) -> dict[str, Any]:
    """A hybrid retriever's fusion as chosen on validation (with the spec that fixes it),
    so the run's later passes on the same data set (its diagnostic, ``reranker_spec``)
    reuse it; empty for any other retriever."""
    from itsm_core.encoders.hybrid import format_hybrid_spec, parse_hybrid_spec

    fusion = getattr(scorer, "fusion", None)
    if fusion is None or not retriever.lower().startswith("hybrid:"):
        return {}
    return {"retriever_fusion": {"method": fusion.method, "weight": fusion.weight,
                                 "chosen_on": fusion.chosen_on},
            "retriever_calibrated": format_hybrid_spec(parse_hybrid_spec(retriever)[0],
                                                       fusion)}


def _calibrated_retriever(meta: dict[str, Any]) -> str:
    """The retriever spec of a finished run with any fusion it chose written in."""
    return str(meta.get("retriever_calibrated") or meta["retriever"])


DIAGNOSTIC_FIELDS = ("model", "roc_auc", "roc_auc_ci", "f1", "f1_ci", "threshold", "verdict",
                     "n_hard_positive", "n_hard_negative")


def reranker_spec(run_dir: str | Path) -> str:
    """The two stages of a finished run as a scorer spec, with its chosen ``k`` and weight
    (``rerank:<run>/model@<retriever>#k,w``; a hybrid retriever with the fusion it chose,
    ``…@hybrid:<model>@0.6#k,w``)."""
    from itsm_core.encoders.rerank import CE_META_FILE, format_rerank_spec

    run = Path(run_dir)
    meta = read_run_json(run, CE_META_FILE, "itsm rerank")
    return format_rerank_spec(run / "model", _calibrated_retriever(meta), meta["k"],
                              meta.get("weight", 1.0))


def diagnose_reranker(run_dir: str | Path, *, config=None,  # noqa: ANN001
                      leaderboard: str | Path | None = LEADERBOARD_CSV) -> dict[str, Any]:
    """The adversarial diagnostic of a finished run's two stages and, on the same pairs, of
    its retriever alone (test pairs; each threshold chosen on validation pairs).

    Args:
        run_dir: an ``itsm rerank`` run folder.
        config: the :class:`~itsm_core.evaluation.diagnostic.DiagnosticConfig` (default:
            the one ``itsm diagnose`` uses, so the rows compare with its leaderboard rows).
        leaderboard: where the re-ranked pipeline's diagnose row goes (the retriever's own
            row comes from ``itsm diagnose``; none is added for it here).

    Returns:
        The run's metadata with ``diagnostic`` (``reranked`` / ``retriever``: ROC-AUC, F1,
        their CIs, threshold, verdict), also written to its ``itsm_reranker.json``.
    """
    from itsm_core.encoders.rerank import CE_META_FILE
    from itsm_core.evaluation.diagnostic import (
        DiagnosticConfig,
        build_diagnostic,
        run_diagnostic,
    )

    run = Path(run_dir)
    meta = read_run_json(run, CE_META_FILE, "itsm rerank")
    data = build_diagnostic(meta["incidents"], config=config or DiagnosticConfig())
    out = run / "diagnose"
    rows = {}
    for key, spec, board in (("reranked", reranker_spec(run), leaderboard),
                             ("retriever", _calibrated_retriever(meta), None)):
        row = run_diagnostic([spec], data=data, out_dir=out, leaderboard=board).iloc[0]
        rows[key] = json_safe({f: row[f] for f in DIAGNOSTIC_FIELDS})
    meta["diagnostic"] = rows
    atomic_write_json(run / CE_META_FILE, meta)
    return meta

