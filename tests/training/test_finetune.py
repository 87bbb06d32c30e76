"""Training: LoRA wiring, adapter round-trip, curriculum sampler, label-aware loss."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from itsm_core.core.errors import ItsmError
from itsm_core.training.finetune import (
    PhaseOrderedBatchSampler,
    TrainConfig,
    add_lora,
    config_for_profile,
    lora_wrapped_modules,
    merge_adapter,
)

TEXTS = ["vpn drops every hour", "printer out of toner", "cannot log in to outlook",
         "laptop screen flickers after update"]


class _DS:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


def test_phase_sampler_keeps_phase_order_and_covers_all_rows():
    phases = ("hard", "easy", "medium") * 10  # 30 rows, interleaved on purpose
    sampler = PhaseOrderedBatchSampler(_DS(30), batch_size=4, drop_last=False, phases=phases)
    batches = list(sampler)
    order = {"easy": 0, "medium": 1, "hard": 2}
    seen_phase = [max(order[phases[i]] for i in b) for b in batches]
    assert seen_phase == sorted(seen_phase), "phases must come easy -> medium -> hard"
    assert all(len({phases[i] for i in b}) == 1 for b in batches), "a batch mixes phases"
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(30)) and len(sampler) == len(batches)


def test_phase_sampler_rejects_length_mismatch():
    with pytest.raises(ValueError):
        PhaseOrderedBatchSampler(_DS(5), batch_size=2, drop_last=False, phases=("easy",) * 4)


def test_profiles_and_unknown_mode():
    assert config_for_profile("smoke").max_steps > 0
    assert config_for_profile("default", mode="full").lr() == 2e-5
    with pytest.raises(ItsmError):
        config_for_profile("nope")
    with pytest.raises(ItsmError):
        TrainConfig(mode="qlora").lr()


@pytest.mark.weights
def test_label_aware_loss_masks_same_label_negatives():
    """With two same-class rows, the masked loss differs from plain MNRL and is lower."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from itsm_core.encoders.registry import load_sentence_transformer
    from itsm_core.training.finetune import LabelAwareMNRL

    model, _ = load_sentence_transformer("minilm")
    emb = [torch.nn.functional.normalize(torch.randn(4, 8), dim=1) for _ in range(2)]
    emb[1][1] = emb[0][0]  # row 1's positive is identical to anchor 0: a strong false negative
    same = torch.tensor([[0, -1], [0, -1], [1, -1], [2, -1]])
    plain = MultipleNegativesRankingLoss(model).compute_loss_from_embeddings(emb, same)
    aware = LabelAwareMNRL(model).compute_loss_from_embeddings(emb, same)
    assert aware < plain
    distinct = torch.tensor([[0, -1], [1, -1], [2, -1], [3, -1]])
    assert torch.isclose(LabelAwareMNRL(model).compute_loss_from_embeddings(emb, distinct),
                         plain)


@pytest.mark.weights
def test_lora_wraps_registry_targets_changes_output_and_reloads(tmp_path):
    from itsm_core.encoders.registry import load_sentence_transformer

    model, spec = load_sentence_transformer("minilm")
    before = model.encode(TEXTS, convert_to_numpy=True)
    add_lora(model, spec, TrainConfig(lora_r=4, lora_alpha=8))
    wrapped = lora_wrapped_modules(model)
    # BERT: q/k/v + attention output dense + intermediate dense + output dense, 6 layers
    assert len(wrapped) == 6 * 6
    assert all(w.rsplit(".", 1)[-1] in {"query", "key", "value", "dense"} for w in wrapped)
    assert not any("pooler" in w for w in wrapped)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable), "only LoRA weights train"
    # LoRA B starts at zero: same output; perturb B to emulate training
    assert np.allclose(model.encode(TEXTS, convert_to_numpy=True), before, atol=1e-5)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.05 * torch.randn_like(p))
    trained = model.encode(TEXTS, convert_to_numpy=True)
    assert not np.allclose(trained, before, atol=1e-3), "adapter must change the output"
    adapter_dir = tmp_path / "adapter"
    model.save_pretrained(str(adapter_dir))
    assert (adapter_dir / "adapter_config.json").exists()
    base, _ = load_sentence_transformer("minilm")
    base.load_adapter(str(adapter_dir))
    np.testing.assert_allclose(base.encode(TEXTS, convert_to_numpy=True), trained, atol=1e-5)
    merged = merge_adapter("minilm", adapter_dir)
    np.testing.assert_allclose(merged.encode(TEXTS, convert_to_numpy=True), trained, atol=1e-4)
    # plain weights under the base model's names only (WiSE-FT interpolates them by name)
    assert merged.state_dict().keys() == load_sentence_transformer("minilm")[0].state_dict(
    ).keys()


@pytest.mark.weights
def test_smoke_training_run_writes_run_and_selects_on_validation(tmp_path, tiny_bundle):
    """A few steps end to end on a tiny data set: run dir, metadata, test evaluation."""
    from itsm_core.training.finetune import run_training

    cfg = config_for_profile("smoke", model="minilm", dataset="tiny", evaluate_test=True,
                             output_dir=str(tmp_path / "run"))
    res = run_training(cfg, incidents_path=tiny_bundle["incidents"])
    meta = res.meta
    assert (res.model_dir / "itsm_model.json").exists()
    assert (res.run_dir / "adapter" / "adapter_config.json").exists()
    assert meta["learning_rate"] == cfg.lr() and meta["global_steps"] == cfg.max_steps
    assert meta["pairs"]["quality"]["counts"]["heldout_incidents_in_pairs"] == 0
    assert "validation_ndcg@10" in meta["base_validation"]
    assert any("eval_validation_ndcg@10" in h for h in meta["log_history"])
    # where the run's time went, phase by phase, adding up to (at most) its total
    phases = meta["phase_seconds"]
    assert {"training steps + validation passes", "test evaluation"} <= set(phases)
    assert sum(phases.values()) <= meta["total_seconds"] + 1.0
    rec = res.test_record
    assert rec["split"] == "test" and rec["model"] == "minilm-ft"
    with pytest.raises(ItsmError):  # never overwrite a run
        run_training(cfg, incidents_path=tiny_bundle["incidents"])


@pytest.mark.weights
def test_identical_recipe_reuses_the_finished_run(tiny_bundle, isolated_results):
    """A repeat of a finished run (same config, pairs, data, weights, code) is that run;
    any change of the recipe, or reuse=False, trains a new one."""
    from itsm_core.training.finetune import run_training

    def train(**kw):
        cfg = config_for_profile("smoke", model="minilm", dataset="tiny", max_steps=2,
                                 evaluate_test=True, **kw)
        return run_training(cfg, incidents_path=tiny_bundle["incidents"])

    first = train()
    again = train()
    assert again.run_dir == first.run_dir and again.meta.get("reused")
    assert again.test_record == first.test_record
    assert again.meta["recipe_key"] == first.meta["recipe_key"]
    other = train(learning_rate=5e-4)
    assert other.run_dir != first.run_dir and not other.meta.get("reused")
    assert other.meta["recipe_key"] != first.meta["recipe_key"]
    forced = train(reuse=False)
    assert forced.run_dir not in (first.run_dir, other.run_dir)
    assert forced.meta["recipe_key"] == first.meta["recipe_key"]


@pytest.mark.slow
@pytest.mark.weights
def test_resume_from_checkpoint_continues_the_run(tmp_path, tiny_bundle):
    """A run resumed from its step-2 checkpoint ends at the configured step count."""
    from itsm_core.training.finetune import run_training

    out = tmp_path / "run"
    cfg = config_for_profile("smoke", model="minilm", output_dir=str(out))
    first = run_training(cfg, incidents_path=tiny_bundle["incidents"])
    ckpt = out / "checkpoints" / "checkpoint-2"
    assert ckpt.exists() and first.meta["global_steps"] == cfg.max_steps
    resumed = run_training(config_for_profile("smoke", model="minilm", output_dir=str(out),
                                              resume_from_checkpoint=str(ckpt)),
                           incidents_path=tiny_bundle["incidents"])
    assert resumed.meta["global_steps"] == cfg.max_steps
    # the trainer state (log history) is restored from the checkpoint: steps 1-2 appear
    # once (restored), steps 3-4 once (trained after resuming) — nothing is redone
    steps_logged = [h["step"] for h in resumed.meta["log_history"] if "loss" in h]
    assert steps_logged == list(range(1, cfg.max_steps + 1))


@pytest.mark.slow
@pytest.mark.weights
def test_ddp_two_cpu_processes(tmp_path, tiny_bundle):
    """torchrun with 2 CPU processes (gloo) runs the unchanged training entry point."""
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "ITSM_TEST_INCIDENTS": str(tiny_bundle["incidents"]),
           "OMP_NUM_THREADS": "1"}
    script = tmp_path / "ddp_train.py"
    script.write_text(
        "import os\n"
        "from itsm_core.training.finetune import config_for_profile, run_training\n"
        f"cfg = config_for_profile('smoke', model='minilm', output_dir=r'{tmp_path / 'run'}')\n"
        "res = run_training(cfg, incidents_path=os.environ['ITSM_TEST_INCIDENTS'])\n"
        "print('RANK', os.environ.get('RANK'), 'WORLD', os.environ.get('WORLD_SIZE'))\n")
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--standalone", str(script)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WORLD 2" in proc.stdout
    assert (tmp_path / "run" / "model" / "itsm_model.json").exists()


def test_tiny_bundle_has_all_splits(tiny_bundle):
    df = pd.read_csv(tiny_bundle["incidents"])
    assert set(df["split"]) == {"train", "validation", "test"}


@pytest.mark.weights
def test_every_fine_tune_is_also_judged_on_a_data_set_it_did_not_train_on(
        tiny_bundle, isolated_results):
    """The unseen data set's TEST run is written apart (task "unseen") and set against the
    zero-shot base model on the same queries; nothing chooses anything on it."""
    from itsm_core.core.config import PROCESSED_DIR
    from itsm_core.data.datasets import DatasetManifest, processed_path, sidecar_path
    from itsm_core.evaluation.benchmark import build_benchmark, evaluate_model
    from itsm_core.reports.views import forgetting
    from itsm_core.runs.schema import read_leaderboard
    from itsm_core.training.finetune import run_training

    target = PROCESSED_DIR / "tinyother.parquet"
    PROCESSED_DIR.mkdir(parents=True, exist_ok=True)
    pd.read_csv(tiny_bundle["incidents"]).to_parquet(target, index=False)
    DatasetManifest(name="tinyother", text_fields=["short_description", "description"],
                    labels=["category", "subcategory"]).save(sidecar_path(target))
    evaluate_model("minilm", build_benchmark(processed_path("tinyother")),
                   isolated_results.runs / "zero_shot_other",
                   leaderboard=isolated_results.leaderboard)
    cfg = config_for_profile("smoke", model="minilm", dataset="tiny", max_steps=2,
                             evaluate_test=True, unseen_dataset="tinyother")
    res = run_training(cfg, incidents_path=tiny_bundle["incidents"])
    assert res.unseen_record["task"] == "unseen" and res.unseen_record["split"] == "test"
    assert (res.unseen_dir / "per_query.csv").exists()
    assert res.meta["unseen"]["dataset"] == "tinyother"
    wise = res.meta["wise_ft"]  # the mixing weight chosen on validation signals only
    assert [r["alpha"] for r in wise["rows"]] == list(cfg.wise_ft)
    assert wise["alpha"] in wise["feasible"] and 0.0 in wise["feasible"]
    assert "tinyother train+validation" in wise["unseen_metric"]
    board = read_leaderboard(isolated_results.leaderboard)
    assert (board["task"] == "unseen").sum() == 1
    table = forgetting(res)
    assert set(table["baseline"]) == {"minilm"}
    assert {"ndcg@10", "mrr@10"} <= set(table["metric"])
    assert table["verdict"].notna().all()


def test_no_unseen_data_set_is_a_note_not_an_error():
    from types import SimpleNamespace

    from itsm_core.reports.views import forgetting
    from itsm_core.training.finetune import TrainConfig, unseen_dataset

    assert "no unseen" in forgetting(SimpleNamespace(unseen_record=None))["note"].iat[0]
    assert unseen_dataset(TrainConfig(dataset="gitbugs_hadoop", unseen_dataset=None)) is None
    assert unseen_dataset(TrainConfig(dataset="x", unseen_dataset="x")) is None


def test_precision_resolves_auto_from_the_cpu_and_rejects_unknown(monkeypatch):
    import itsm_core.core.compat as compat

    assert TrainConfig(precision="fp32").use_bf16() is False
    assert TrainConfig(precision="bf16").use_bf16() is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(compat, "cpu_has", lambda *flags: True)
    assert TrainConfig(precision="auto").use_bf16() is True
    monkeypatch.setattr(compat, "cpu_has", lambda *flags: False)
    assert TrainConfig(precision="auto").use_bf16() is False
    with pytest.raises(ItsmError, match="precision"):
        TrainConfig(precision="fp16").use_bf16()


def test_guide_forward_memo_hits_only_the_same_input():
    from itsm_core.training.finetune import MemoForward

    calls = []

    def forward(features):
        calls.append(1)
        return {**features, "sentence_embedding": features["input_ids"].float() * 2}

    memo = MemoForward(forward, size=2)
    a = {"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.ones(1, 3)}
    b = {"input_ids": torch.tensor([[1, 2, 4]]), "attention_mask": torch.ones(1, 3)}
    first = memo(dict(a))["sentence_embedding"]
    again = memo(dict(a))["sentence_embedding"]  # same content, a new dict: a hit
    assert torch.equal(first, again) and len(calls) == 1
    assert torch.equal(memo(dict(b))["sentence_embedding"], b["input_ids"].float() * 2)
    assert len(calls) == 2 and memo.stats == {"hits": 1, "misses": 2}
    memo({"input_ids": torch.tensor([[9]]), "attention_mask": torch.ones(1, 1)})
    memo(dict(a))  # evicted (size 2): encoded again
    assert len(calls) == 4


@pytest.mark.weights
def test_guided_loss_drops_negatives_the_guide_scores_above_the_positive():
    """GISTEmbedLoss with the base model as guide: a batch whose 2nd pair repeats the 1st
    anchor's text has a false negative that MNRL would push away; the guided loss masks it
    (lower loss), and the guide is run once per column, not once per Matryoshka dim."""
    from sentence_transformers.sentence_transformer.losses import (
        GISTEmbedLoss,
        MultipleNegativesRankingLoss,
    )

    from itsm_core.encoders.registry import load_sentence_transformer
    from itsm_core.training.finetune import build_loss, load_guide

    model, spec = load_sentence_transformer("minilm")
    cfg = TrainConfig(guide="base", label_aware=False, anchor_weight=0.0)
    guide = load_guide(cfg)
    inner, loss = build_loss(model, spec, cfg, guide)
    assert isinstance(inner, GISTEmbedLoss) and type(loss).__name__ == "MatryoshkaLoss"
    assert not any(p.requires_grad for p in guide.parameters())
    anchors = ["vpn drops every hour", "vpn drops every hour", "printer out of toner"]
    positives = ["vpn disconnects hourly", "vpn connection lost each hour",
                 "toner empty on printer"]
    features = [model.preprocess(anchors), model.preprocess(positives)]
    labels = torch.zeros(3)
    with torch.no_grad():
        guided = loss(features, labels)
        n_dims = len([d for d in spec.eval_dims if d <= spec.dim])
        assert guide.forward.stats == {"hits": 2 * (n_dims - 1), "misses": 2}
        _, plain = build_loss(model, spec, TrainConfig(label_aware=False, anchor_weight=0.0))
        unguided = plain([model.preprocess(anchors), model.preprocess(positives)], labels)
    assert isinstance(plain.loss, MultipleNegativesRankingLoss)
    assert guided < unguided


@pytest.mark.weights
def test_guided_smoke_run_records_its_guide(tmp_path, tiny_bundle):
    from itsm_core.training.finetune import run_training

    cfg = config_for_profile("smoke", model="minilm", dataset="tiny", guide="base",
                             max_steps=2, wise_ft=None, output_dir=str(tmp_path / "run"))
    res = run_training(cfg, incidents_path=tiny_bundle["incidents"])
    # the default drift penalty wraps the guided loss
    assert res.meta["loss"] == "GISTEmbedLoss in MatryoshkaLoss + 10.0 x drift to base"
    assert res.meta["guide"]["model"] == "base"
    assert res.meta["guide"]["forward_memo"]["hits"] > 0
    assert res.meta["precision"] == ("bf16" if cfg.use_bf16() else "fp32")


def test_zero_shot_validation_pass_is_served_by_the_embedding_cache(tiny_bundle, tiny_model,
                                                                    tmp_path, monkeypatch):
    """The pass over the base's own weights (zero-shot validation, WiSE-FT α = 0) reads and
    fills the embedding cache; a model being trained is never cached."""
    from sentence_transformers import SentenceTransformer

    from itsm_core.encoders.cache import open_cache
    from itsm_core.encoders.registry import ModelSpec
    from itsm_core.evaluation.benchmark import BenchmarkConfig, build_benchmark
    from itsm_core.training.finetune import validation_evaluator

    monkeypatch.setenv("ITSM_EMBED_CACHE", str(tmp_path / "cache"))
    bench = build_benchmark(tiny_bundle["incidents"], config=BenchmarkConfig(
        query_split="validation", threshold_split="validation", n_resamples=0))
    spec = ModelSpec(key="tiny", hub_id=None, path=str(tiny_model), dim=32)
    model = SentenceTransformer(str(tiny_model), device="cpu")
    evaluator = validation_evaluator(bench, spec)
    plain = evaluator(model)
    assert open_cache().stats()["entries"] == 0
    first = evaluator(model, cache_path=str(tiny_model))
    filled = open_cache().stats()["entries"]
    assert filled > 0
    again = evaluator(model, cache_path=str(tiny_model))
    assert open_cache().stats()["entries"] == filled  # every text served from the cache
    assert first == again
    assert first["validation_ndcg@10"] == pytest.approx(plain["validation_ndcg@10"], abs=1e-6)


def test_training_reuses_the_pair_file_itsm_pairs_wrote_for_the_same_inputs(tiny_bundle,
                                                                           monkeypatch):
    """`itsm pairs` writes the pairs; a training run of the same incidents, pair config and
    code reads that file instead of generating them again (ITSM_REUSE_RUNS=0: never)."""
    from itsm_core.core.config import PROCESSED_DIR
    from itsm_core.data.datasets import DatasetManifest, processed_path, sidecar_path
    from itsm_core.pairs.training import TrainPairConfig
    from itsm_core.training.finetune import make_pairs, write_training_pairs

    target = PROCESSED_DIR / "tinypairs.parquet"
    PROCESSED_DIR.mkdir(parents=True, exist_ok=True)
    pd.read_csv(tiny_bundle["incidents"]).to_parquet(target, index=False)
    DatasetManifest(name="tinypairs", text_fields=["short_description", "description"],
                    labels=["category", "subcategory"]).save(sidecar_path(target))
    path, written, _ = write_training_pairs("tinypairs", TrainPairConfig(seed=7))
    assert written.attrs["meta"]["pairs_key"]
    again, report = make_pairs("tinypairs", TrainPairConfig(seed=7))
    assert report.ok and again.attrs["meta"]["reused_from"] == str(path)
    pd.testing.assert_frame_equal(again, written)
    other, _ = make_pairs("tinypairs", TrainPairConfig(seed=8))  # another config: generated
    assert "reused_from" not in other.attrs["meta"]
    monkeypatch.setenv("ITSM_REUSE_RUNS", "0")
    fresh, _ = make_pairs("tinypairs", TrainPairConfig(seed=7))
    assert "reused_from" not in fresh.attrs["meta"]
    pd.testing.assert_frame_equal(fresh, written)
    assert processed_path("tinypairs") == target


@pytest.mark.weights
def test_anchored_loss_adds_drift_to_the_frozen_base_and_trains_through_it():
    """The drift penalty is 0 while the tuned model equals its base, grows when the weights
    move, and its gradient reaches the tuned model (never the frozen base)."""
    from itsm_core.encoders.registry import load_sentence_transformer
    from itsm_core.training.finetune import AnchoredLoss, build_loss

    model, spec = load_sentence_transformer("minilm")
    cfg = TrainConfig(label_aware=False, anchor_weight=0.0)
    _, inner = build_loss(model, spec, cfg)
    _, default = build_loss(model, spec, TrainConfig())
    assert isinstance(default, AnchoredLoss) and default.weight == 10.0
    anchored = AnchoredLoss(model, inner, default.base, weight=5.0)  # its frozen base
    anchors = ["vpn drops every hour", "printer out of toner"]
    positives = ["vpn disconnects hourly", "toner empty on printer"]

    def batch():
        return [model.preprocess(anchors), model.preprocess(positives)], torch.zeros(2)

    with torch.no_grad():
        plain, total = inner(*batch()), anchored(*batch())
    assert anchored.last_drift == pytest.approx(0.0, abs=1e-5)
    assert float(total) == pytest.approx(float(plain), abs=1e-4)
    with torch.no_grad():
        for p in model[0].auto_model.encoder.layer[-1].parameters():
            p.add_(0.05 * torch.randn_like(p))
    total = anchored(*batch())
    assert anchored.last_drift > 1e-3
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(p.grad is None for p in anchored.base.parameters())


@pytest.mark.weights
def test_anchored_smoke_run_records_the_penalty(tmp_path, tiny_bundle):
    from itsm_core.training.finetune import run_training

    cfg = config_for_profile("smoke", model="minilm", dataset="tiny", anchor_weight=2.0,
                             max_steps=2, wise_ft=None, output_dir=str(tmp_path / "run"))
    res = run_training(cfg, incidents_path=tiny_bundle["incidents"])
    assert res.meta["loss"].endswith("+ 2.0 x drift to base")
    assert res.meta["anchor_drift_last"] >= 0.0


def test_a_negative_or_missing_anchor_weight_is_refused_before_any_model_loads():
    from itsm_core.training.finetune import build_loss

    for bad in (-1.0, float("nan")):
        with pytest.raises(ItsmError, match="anchor weight"):
            build_loss(None, None, TrainConfig(anchor_weight=bad))


def _tiny_encoder(kind: str) -> torch.nn.Module:
    from transformers import BertConfig, BertModel, MPNetConfig, MPNetModel

    shape = dict(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                 intermediate_size=64)
    torch.manual_seed(0)
    net = (MPNetModel(MPNetConfig(**shape)) if kind == "mpnet"
           else BertModel(BertConfig(**shape)))
    return net.train()  # dropout on: recomputation must replay the same masks


def _grads_and_saved_bytes(net: torch.nn.Module) -> tuple[list[torch.Tensor], int]:
    ids = torch.randint(5, 100, (4, 12))
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    torch.manual_seed(1)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    out.pow(2).sum().backward()
    return [p.grad.clone() for p in net.parameters() if p.grad is not None], sum(saved)


@pytest.mark.parametrize("kind,how", [("mpnet", "per-layer"), ("bert", "transformers")])
def test_gradient_checkpointing_gives_the_same_gradients_for_less_saved_memory(kind, how):
    """MPNet's transformers class declares no checkpointing support, so its encoder blocks
    are wrapped one by one; BERT (MiniLM) uses the library's own switch. Either way the
    gradients are those of a plain step and the graph keeps far fewer activations."""
    import copy
    import types

    from itsm_core.training.finetune import enable_gradient_checkpointing

    net = _tiny_encoder(kind)
    plain = copy.deepcopy(net)
    torch.manual_seed(2)
    ids = torch.randint(5, 100, (4, 12))
    assert enable_gradient_checkpointing([types.SimpleNamespace(auto_model=net)]) == how
    torch.manual_seed(3)
    ref_grads, ref_bytes = _grads_and_saved_bytes(plain)
    torch.manual_seed(3)
    grads, saved_bytes = _grads_and_saved_bytes(net)
    assert len(grads) == len(ref_grads) > 0
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)
    assert saved_bytes < 0.5 * ref_bytes, (saved_bytes, ref_bytes)
    with torch.no_grad():  # inference is untouched
        net.eval()
        plain.eval()
        torch.testing.assert_close(net(input_ids=ids).last_hidden_state,
                                   plain(input_ids=ids).last_hidden_state)


def test_gradient_checkpointing_finds_the_blocks_under_lora_and_refuses_other_networks():
    import types

    from peft import LoraConfig, get_peft_model

    from itsm_core.training.finetune import _encoder_layers, enable_gradient_checkpointing

    lora = get_peft_model(_tiny_encoder("mpnet"), LoraConfig(r=2, target_modules=["q", "v"]))
    assert len(_encoder_layers(lora)) == 3
    for _ in range(2):  # enabling twice wraps each block once
        assert enable_gradient_checkpointing([types.SimpleNamespace(auto_model=lora)]) == \
            "per-layer"
    block = _encoder_layers(lora)[0]
    assert block.forward.itsm_checkpointed and not getattr(
        block.forward.__wrapped__, "itsm_checkpointed", False)
    with pytest.raises(ItsmError, match="gradient checkpointing is not available") as err:
        enable_gradient_checkpointing([types.SimpleNamespace(auto_model=torch.nn.Linear(2, 2))])
    assert "--batch-size" in err.value.fix


@pytest.mark.weights
def test_checkpointed_smoke_run_records_how(tmp_path, tiny_bundle):
    from itsm_core.training.finetune import run_training

    cfg = config_for_profile("smoke", model="minilm", dataset="tiny", max_steps=2,
                             gradient_checkpointing=True, wise_ft=None,
                             output_dir=str(tmp_path / "run"))
    res = run_training(cfg, incidents_path=tiny_bundle["incidents"])
    assert res.meta["gradient_checkpointing"] == "transformers"
    assert res.meta["train_config"]["gradient_checkpointing"] is True
    assert res.meta["global_steps"] == 2
