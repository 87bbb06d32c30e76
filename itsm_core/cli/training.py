"""``itsm pairs | augment | train | pretrain | stages | ensemble | distill | rerank``:
training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from itsm_core.cli.common import (
    csv_list,
    floats,
    friendly,
    out,
    print_frame,
    print_record,
    print_rows,
)
from itsm_core.core.errors import ItsmError


def _max_texts_help(default: str) -> str:
    return f"training-split texts to use (0 = all; default: the profile's, {default})"


@friendly
def pairs_cmd(
    dataset: Annotated[str, typer.Option(help="bundled data set")] = "it_tickets",
    out_path: Annotated[Path | None, typer.Option(
        "--out", help="new pair file (.parquet); default data_new/processed/pairs/...")] = None,
    negatives: Annotated[str, typer.Option(help="tfidf, embedding, both or none")] = "tfidf",
    band: Annotated[str, typer.Option(help="TF-IDF band for hard negatives")] = "0.3,0.5",
    positives_per_anchor: Annotated[int, typer.Option(help="same-label partners")] = 2,
    hard_positives: Annotated[int, typer.Option(help="low-overlap partners per anchor")] = 1,
    phase_shares: Annotated[str | None, typer.Option(
        help="easy,medium,hard shares (default: equal thirds, as training uses)")] = None,
    mining_model: Annotated[str, typer.Option(help="model for embedding mining")] = "minilm",
    seed: Annotated[int, typer.Option(help="random seed")] = 42,
) -> None:
    """Generate curriculum training pairs from the TRAINING split, validated."""
    from itsm_core.pairs.training import TrainPairConfig
    from itsm_core.training.finetune import write_training_pairs

    edges = floats(band, "--band", "0.3,0.5") or [0.3, 0.5]
    if len(edges) != 2:
        raise ItsmError("--band needs two numbers", fix="e.g. --band 0.3,0.5")
    lo, hi = edges
    shares = (tuple(floats(phase_shares, "--phase-shares", "0.33,0.33,0.34"))
              if phase_shares else TrainPairConfig.phase_shares)
    if len(shares) != 3:
        raise ItsmError("--phase-shares needs three numbers", fix="e.g. 0.33,0.33,0.34")
    cfg = TrainPairConfig(negatives=negatives, tfidf_band=(lo, hi),
                          positives_per_anchor=positives_per_anchor,
                          hard_positives_per_anchor=hard_positives, phase_shares=shares,
                          mining_model=mining_model, seed=seed)
    path, pairs, report = write_training_pairs(dataset, cfg, out_path)
    print_rows(("check", "count"), report.counts.items(), title=f"pair quality ({dataset})",
               right=("count",))
    for w in report.warnings:
        out.print(f"[yellow]warning:[/] {w}")
    out.print(f"wrote {len(pairs)} pairs -> {path}")


@friendly
def augment_cmd(
    pairs: Annotated[Path, typer.Option(help="training pair file (Parquet)")],
    out_path: Annotated[Path, typer.Option("--out", help="new pair file to write")],
    expansion_factor: Annotated[float, typer.Option(
        help="augmented copies per pair on average (0.5: half the pairs get one)")] = 1.0,
    methods: Annotated[str, typer.Option(
        help="comma-separated methods: deletion,swap,duplication")] =
    "deletion,swap,duplication",
    side: Annotated[str, typer.Option(help="text augmented: anchor, positive or both")] =
    "anchor",
    protect: Annotated[str | None, typer.Option(
        help="comma-separated extra terms never changed (case-insensitive words)")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 42,
) -> None:
    """Add augmented copies of TRAINING pairs (deletion, swap, duplication); never val/test."""
    from itsm_core.pairs.augment import AugmentConfig, augment_pair_file

    cfg = AugmentConfig(expansion_factor=expansion_factor, methods=tuple(csv_list(methods)
                        or ()), augment_side=side, seed=seed,
                        protected_terms=tuple(csv_list(protect) or ()))
    after, rep = augment_pair_file(pairs, out_path, cfg)
    print_rows(("label", "n before", "share before", "n after", "share after"),
               ((r.label, r.n_before, f"{r.share_before:.3f}", r.n_after,
                 f"{r.share_after:.3f}") for r in rep.itertuples(index=False)),
               title="class balance before / after augmentation",
               right=("label", "n before", "share before", "n after", "share after"))
    stats = after.attrs["meta"]["augmentation"]
    out.print(f"added {stats['n_added']} augmented rows to {stats['n_original']} pairs "
              f"({stats['n_dropped_identical']} identical copies dropped) -> {out_path}")


@friendly
def train_cmd(
    model: Annotated[str, typer.Option(help="registry key, model folder or hub id")] = "minilm",
    dataset: Annotated[str, typer.Option(help="bundled data set")] = "it_tickets",
    pairs: Annotated[Path | None, typer.Option(help="pair file (default: generate)")] = None,
    profile: Annotated[str, typer.Option(help="default (fast, CPU) or full")] = "default",
    mode: Annotated[str | None, typer.Option(help="lora or full")] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate")] = None,
    epochs: Annotated[float | None, typer.Option(help="epochs")] = None,
    max_steps: Annotated[int | None, typer.Option(help="stop after N steps")] = None,
    batch_size: Annotated[int | None, typer.Option(help="batch size")] = None,
    curriculum: Annotated[bool | None, typer.Option(
        "--curriculum/--no-curriculum", help="easy->hard phases [recipe: on]")] = None,
    negatives: Annotated[bool | None, typer.Option(
        "--negatives/--no-negatives", help="add one mined hard negative per pair "
        "[recipe: off, chosen on validation]")] = None,
    label_aware: Annotated[bool | None, typer.Option(
        "--label-aware/--no-label-aware", help="mask same-label in-batch negatives "
        "[recipe: on]")] = None,
    matryoshka: Annotated[bool | None, typer.Option(
        "--matryoshka/--no-matryoshka", help="MatryoshkaLoss [recipe: on]")] = None,
    guide: Annotated[str | None, typer.Option(
        help="GISTEmbedLoss guide: a registry key, a model folder or 'base' (negatives the "
        "guide scores above the positive are dropped) [recipe: none]")] = None,
    precision: Annotated[str | None, typer.Option(
        help="training arithmetic: fp32, bf16 or auto (bf16 where the CPU/GPU has it)")] =
    None,
    anchor_weight: Annotated[float | None, typer.Option(
        help="drift penalty against forgetting: weight of mean(1 - cos) between tuned and "
        "base embeddings of the anchors [recipe: 0 = off]")] = None,
    gradient_checkpointing: Annotated[bool | None, typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing", help="recompute activations "
        "in the backward pass: same result, far less memory, slower steps [recipe: off]")] = None,
    name: Annotated[str | None, typer.Option(help="run name")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="run directory")] = None,
    resume: Annotated[str | None, typer.Option(help="checkpoint to resume from")] = None,
    evaluate_test: Annotated[bool, typer.Option(help="evaluate_v2 on test afterwards")] = True,
    fresh: Annotated[bool, typer.Option(
        help="train even when a finished run of the same recipe exists")] = False,
) -> None:
    """Fine-tune a model (LoRA or full; MatryoshkaLoss over MNRL), select on validation,
    evaluate on test and add its leaderboard row. A finished run of the identical recipe
    (config, pairs, data, base weights, code, libraries) is reused unless --fresh."""
    from itsm_core.training.finetune import config_for_profile, run_training

    overrides = {k: v for k, v in dict(
        mode=mode, learning_rate=lr, epochs=epochs, max_steps=max_steps,
        batch_size=batch_size, name=name, output_dir=str(out_dir) if out_dir else None,
        resume_from_checkpoint=resume, pairs=str(pairs) if pairs else None,
        curriculum=curriculum, use_negatives=negatives, label_aware=label_aware,
        matryoshka=matryoshka, guide=guide, precision=precision,
        anchor_weight=anchor_weight, gradient_checkpointing=gradient_checkpointing,
        reuse=False if fresh else None).items() if v is not None}
    res = run_training(config_for_profile(profile, model=model, dataset=dataset,
                                          evaluate_test=evaluate_test, **overrides))
    out.print(f"{'reused finished run (same recipe)' if res.meta.get('reused') else 'run'} "
              f"-> {res.run_dir}  (validation NDCG@10 "
              f"{res.meta.get('best_validation_ndcg@10')})")
    if res.test_record:
        print_record(res.test_record)


@friendly
def pretrain_cmd(
    model: Annotated[str, typer.Option(help="registry key or model folder")] = "minilm",
    dataset: Annotated[str, typer.Option(help="bundled data set")] = "it_tickets",
    method: Annotated[str, typer.Option(help="simcse or tsdae")] = "simcse",
    profile: Annotated[str, typer.Option(help="default (CPU, ~4k texts), full, smoke")] =
    "default",
    max_texts: Annotated[int | None, typer.Option(help=_max_texts_help("4000"))] = None,
    max_seq_length: Annotated[int | None, typer.Option(help="token limit")] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate")] = None,
    epochs: Annotated[float | None, typer.Option(help="epochs")] = None,
    max_steps: Annotated[int | None, typer.Option(help="stop after N steps")] = None,
    batch_size: Annotated[int | None, typer.Option(help="batch size")] = None,
    finetune: Annotated[bool, typer.Option(
        help="then run the supervised fine-tune (itsm train) from the adapted model")] = True,
    train_profile: Annotated[str, typer.Option(help="profile of that fine-tune")] = "default",
    name: Annotated[str | None, typer.Option(help="run name")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="new run directory")] = None,
    evaluate_test: Annotated[bool, typer.Option(help="evaluate_v2 on test afterwards")] = True,
) -> None:
    """Unsupervised domain adaptation (SimCSE / TSDAE) on TRAINING-split texts, selected on
    validation; then base -> +adaptation -> +fine-tune vs fine-tune alone, with CIs."""
    from itsm_core.training.pretrain import format_stage_table, pt_summary, run_from_params

    res = run_from_params(
        model=model, dataset=dataset, method=method, profile=profile,
        train_profile=train_profile, max_texts=-1 if max_texts is None else max_texts,
        finetune=finetune, max_seq_length=max_seq_length, learning_rate=lr, epochs=epochs,
        max_steps=max_steps, batch_size=batch_size, name=name,
        output_dir=str(out_dir) if out_dir else None, evaluate_test=evaluate_test)
    meta = res.pretrain.meta
    out.print(f"adapted model -> {res.pretrain.model_dir}  ({pt_summary(meta)}; validation "
              f"NDCG@10 {meta['base_validation'].get('validation_ndcg@10')} -> "
              f"{meta['best_validation_ndcg@10']})")
    if res.finetune is not None:
        out.print(f"fine-tuned from it -> {res.finetune.run_dir}")
    if not res.table.empty:
        print_frame(format_stage_table(res.table).drop(columns=["dataset", "note"]),
                    f"stages on {dataset} (test; value [95% CI], paired differences)")
        out.print(f"stage table -> {res.table_path}")


@friendly
def stages_cmd(
    pretrain_run: Annotated[Path, typer.Option(help="run directory of `itsm pretrain`")],
    finetune_run: Annotated[Path | None, typer.Option(
        help="run directory of the fine-tune that started from it")] = None,
    alone_eval: Annotated[Path | None, typer.Option(
        help="evaluation dir of the plain fine-tune (default: newest with the same config)")]
    = None,
) -> None:
    """Rebuild the stage table of finished runs (no training), e.g. once the plain
    fine-tune with the same config exists; writes models/results/stages/."""
    from itsm_core.training.pretrain import (
        format_stage_table,
        load_pretrain_meta,
        save_stage_table,
        stages_from_runs,
    )

    table = stages_from_runs(pretrain_run, finetune_run, alone_eval=alone_eval)
    dataset = load_pretrain_meta(pretrain_run)["pretrain_config"]["dataset"]
    print_frame(format_stage_table(table).drop(columns=["dataset", "note"]),
                f"stages on {dataset} (test; value [95% CI], paired differences)")
    out.print(f"stage table -> {save_stage_table(table, dataset)}")


@friendly
def ensemble_cmd(
    members: Annotated[str, typer.Option(help="comma-separated model specs (keys, folders)")],
    out_dir: Annotated[Path, typer.Option("--out", help="new folder for the ensemble")],
    name: Annotated[str | None, typer.Option(help="model name (default: folder name)")] =
    None,
    weights: Annotated[str | None, typer.Option(help="comma-separated weights")] = None,
    method: Annotated[str, typer.Option(help="concat (embeddings) or zmean (scores)")] =
    "concat",
    trained_on: Annotated[str | None, typer.Option(
        help="members are model NAMES (e.g. minilm-ft): use the newest trained run of each "
        "on this data set")] = None,
) -> None:
    """Define an ensemble; evaluate it like any model: itsm evaluate --model <folder>."""
    from itsm_core.encoders.ensemble import create_ensemble

    folder = create_ensemble(csv_list(members) or [], out_dir, name=name,
                             weights=floats(weights, "--weights", "1,1,0.5"), method=method,
                             trained_on=trained_on)
    out.print(f"ensemble -> {folder}  (use it as --model / --teacher)")


@friendly
def distill_cmd(
    teacher: Annotated[str, typer.Option(help="teacher model spec (e.g. an ensemble folder)")],
    student: Annotated[str, typer.Option(help="student model (registry key or folder)")] =
    "minilm",
    dataset: Annotated[str, typer.Option(help="bundled data set")] = "it_tickets",
    loss: Annotated[str, typer.Option(help="mse (projection) or margin-mse")] = "mse",
    profile: Annotated[str, typer.Option(help="default (CPU, ~3k texts), full, smoke")] =
    "default",
    max_texts: Annotated[int | None, typer.Option(help=_max_texts_help("3000"))] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate")] = None,
    epochs: Annotated[float | None, typer.Option(help="epochs")] = None,
    max_steps: Annotated[int | None, typer.Option(help="stop after N steps")] = None,
    batch_size: Annotated[int | None, typer.Option(help="batch size")] = None,
    name: Annotated[str | None, typer.Option(help="run name")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="new run directory")] = None,
    compare: Annotated[bool, typer.Option(
        help="compare student / teacher / student alone (quality, size, speed)")] = True,
) -> None:
    """Distil a teacher into a small student on TRAINING-split texts; select on validation,
    evaluate student (and teacher) on test, add leaderboard rows."""
    from itsm_core.training.distill import format_comparison, run_from_params

    res, table = run_from_params(
        teacher=teacher, student=student, dataset=dataset, loss=loss, profile=profile,
        max_texts=-1 if max_texts is None else max_texts, compare=compare,
        learning_rate=lr, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
        name=name, output_dir=str(out_dir) if out_dir else None)
    out.print(f"student -> {res.model_dir}  (validation NDCG@10 "
              f"{res.meta['base_validation'].get('validation_ndcg@10')} -> "
              f"{res.meta['best_validation_ndcg@10']})")
    if not table.empty:
        print_frame(format_comparison(table), f"distillation on {dataset} (test)")
        out.print(f"comparison -> {res.run_dir / 'comparison.csv'}")


@friendly
def rerank_cmd(
    dataset: Annotated[str, typer.Option(help="bundled data set (its TRAINING split)")] =
    "it_tickets",
    retriever: Annotated[str, typer.Option(
        help="first stage it re-ranks and mines candidates with: a model spec, or a trained "
        "model's name (minilm-ft = the newest on --dataset)")] = "minilm-ft",
    base: Annotated[str, typer.Option(help="packaged weights the cross-encoder starts from")]
    = "minilm",
    loss: Annotated[str, typer.Option(help="bce (graded targets) or lambda (LambdaLoss)")] =
    "bce",
    profile: Annotated[str, typer.Option(help="default (CPU), full or smoke")] = "default",
    k: Annotated[int | None, typer.Option(
        help="candidates re-ranked per query (default: chosen on validation)")] = None,
    max_anchors: Annotated[int | None, typer.Option(help="training anchors")] = None,
    max_steps: Annotated[int | None, typer.Option(help="stop after N steps")] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate")] = None,
    name: Annotated[str | None, typer.Option(help="re-ranker name")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="new run directory")] = None,
    evaluate_test: Annotated[bool, typer.Option(help="evaluate_v2 on test afterwards")] = True,
) -> None:
    """Train a cross-encoder re-ranker on TRAINING pairs with candidates mined by the
    retriever (graded by labels, never by a model), choose k and the cross-encoder's weight
    on validation, then evaluate retriever + re-ranker on test (leaderboard row), on the
    other data set and by the adversarial diagnostic."""
    from itsm_core.training.rerank import config_for_profile, train_reranker

    overrides = {key: v for key, v in dict(
        retriever=retriever, base=base, loss=loss, k=k, max_anchors=max_anchors,
        max_steps=max_steps, learning_rate=lr, name=name,
        output_dir=str(out_dir) if out_dir else None).items() if v is not None}
    res = train_reranker(config_for_profile(profile, dataset=dataset,
                                            evaluate_test=evaluate_test, **overrides))
    meta = res.meta
    out.print(f"re-ranker -> {res.model_dir}  (k={meta['k']}, cross-encoder weight "
              f"{meta['weight']:g}; {meta['validation']['chosen_on']})")
    _print_rerank(res)


def _print_rerank(res) -> None:  # noqa: ANN001 - a RerankResult
    """The run's choice on validation, test record, paired differences and diagnostic."""
    meta = res.meta
    print_rows(("k", "cross-encoder weight", "validation ndcg@10"),
               ((r["k"] or "retriever alone", f"{r.get('weight', 1.0):g}" if r["k"] else "",
                 r["ndcg@10"]) for r in meta["validation"]["table"]),
               title="candidates re-ranked (validation)", right=("validation ndcg@10",))
    if res.test_record:
        print_record(res.test_record)
    for title, rows in (("test", meta.get("test_vs_retriever")),
                        (f"unseen {meta.get('unseen', {}).get('dataset')}",
                         meta.get("unseen", {}).get("vs_retriever"))):
        if rows:
            print_rows(("metric", "re-ranked − retriever", "95% CI"),
                       ((r["metric"], f"{r['diff']:+.3f}",
                         f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]") for r in rows),
                       title=f"{title}: paired difference on the same queries",
                       right=("re-ranked − retriever",))
    diag = meta.get("diagnostic") or {}
    if "reranked" in diag:
        print_rows(("scorer", "ROC-AUC", "F1", "verdict"),
                   ((label, f"{d['roc_auc']:.3f}", f"{d['f1']:.3f}", d["verdict"])
                    for label, d in (("re-ranked", diag["reranked"]),
                                     ("retriever alone", diag["retriever"]))),
                   title="adversarial diagnostic (test pairs)", right=("ROC-AUC", "F1"))
    elif "skipped" in diag:
        from rich.markup import escape

        out.print(f"adversarial diagnostic skipped: {escape(diag['skipped'])}")
