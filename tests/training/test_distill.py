"""Ensembles (a Scorer like any model) and distillation into a small student."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

# imported at collection time, so that isolated_results can redirect their path constants
import itsm_core.training.distill  # noqa: F401
import itsm_core.training.pretrain  # noqa: F401
from itsm_core.core.errors import ItsmError
from itsm_core.encoders.ensemble import (
    EnsembleConfig,
    create_ensemble,
    is_ensemble_spec,
    read_ensemble,
)

TEXTS = ["vpn drops every hour", "printer out of toner", "cannot log in to outlook",
         "laptop screen flickers after update", "wifi keeps disconnecting"]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from tiny_model import build_tiny_model

    root = tmp_path_factory.mktemp("tiny_models")
    return [build_tiny_model(root / f"tiny{i}", name=f"tiny{i}", seed=i) for i in range(2)]


def test_ensemble_config_errors():
    with pytest.raises(ItsmError, match="two members"):
        EnsembleConfig(members=["minilm"])
    with pytest.raises(ItsmError, match="weights"):
        EnsembleConfig(members=["a", "b"], weights=[1.0])
    with pytest.raises(ItsmError, match="positive"):
        EnsembleConfig(members=["a", "b"], weights=[1.0, 0.0])
    with pytest.raises(ItsmError, match="method"):
        EnsembleConfig(members=["a", "b"], method="vote")
    with pytest.raises(ItsmError, match="nested"):
        EnsembleConfig(members=["ensemble:a,b", "c"])


def test_inline_spec_is_parsed():
    assert is_ensemble_spec("ensemble:minilm,mpnet") and not is_ensemble_spec("minilm")
    cfg, folder = read_ensemble("ensemble:minilm, mpnet")
    assert cfg.members == ["minilm", "mpnet"] and folder is None and cfg.weights == [1.0, 1.0]


def test_create_ensemble_checks_members_and_never_overwrites(tmp_path, tiny_models):
    with pytest.raises(ItsmError):
        create_ensemble(["minilm", str(tmp_path / "missing")], tmp_path / "e0")
    folder = create_ensemble([str(m) for m in tiny_models], tmp_path / "e1", name="ens",
                             weights=[2, 1])
    data = json.loads((folder / "itsm_ensemble.json").read_text())
    assert data["name"] == "ens" and data["weights"] == [2, 1] and is_ensemble_spec(folder)
    with pytest.raises(ItsmError):
        create_ensemble([str(m) for m in tiny_models], tmp_path / "e1")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "itsm_ensemble.json").write_text("{not json")
    with pytest.raises(ItsmError, match="malformed"):
        read_ensemble(str(tmp_path / "bad"))


def test_concat_ensemble_cosine_is_weighted_mean_of_member_cosines(tmp_path, tiny_models):
    from itsm_core.encoders.factory import load_scorer
    from itsm_core.encoders.scorers import DenseScorer

    folder = create_ensemble([str(m) for m in tiny_models], tmp_path / "e", weights=[3, 1])
    ens = load_scorer(str(folder), show_progress=False)
    assert ens.kind == "dense" and ens.dims == (None,) and ens.spec.dim == 64
    emb = ens.embed(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    members = [DenseScorer(str(m), show_progress=False) for m in tiny_models]
    want = 0.75 * members[0].score_matrix(TEXTS, TEXTS) + 0.25 * members[1].score_matrix(
        TEXTS, TEXTS)
    np.testing.assert_allclose(ens.score_matrix(TEXTS, TEXTS), want, atol=1e-5)
    np.testing.assert_allclose(ens.score_pairs(TEXTS, TEXTS[::-1]),
                               np.diag(want[:, ::-1]), atol=1e-5)


def test_zmean_mixes_lexical_members_and_concat_refuses_them(tiny_models, tmp_path):
    from itsm_core.encoders.factory import load_scorer

    with pytest.raises(ItsmError, match="zmean"):
        load_scorer(f"ensemble:tfidf,{tiny_models[0]}")
    folder = create_ensemble(["tfidf", str(tiny_models[0])], tmp_path / "z", method="zmean")
    ens = load_scorer(str(folder), show_progress=False)
    s = ens.score_matrix(TEXTS, TEXTS)
    assert s.shape == (5, 5) and ens.kind == "hybrid"
    assert np.argmax(s[0]) == 0  # a text is most similar to itself under both members
    with pytest.raises(ItsmError, match="no embedding"):
        ens.embed(TEXTS)


def test_ensemble_plugs_into_evaluate(tmp_path, tiny_models, tiny_bundle, isolated_results):
    from itsm_core.evaluation.benchmark import BenchmarkConfig, build_benchmark, evaluate_model

    bench = build_benchmark(tiny_bundle["incidents"], config=BenchmarkConfig(n_resamples=50))
    spec = "ensemble:" + ",".join(str(m) for m in tiny_models)
    rec = evaluate_model(spec, bench, tmp_path / "run", leaderboard=isolated_results.leaderboard)
    assert rec["model"].startswith("ensemble(") and 0 <= rec["ndcg@10"] <= 1
    board = pd.read_csv(isolated_results.leaderboard)
    assert board["model"].iloc[-1] == rec["model"]


def test_least_squares_projection_recovers_a_linear_map():
    from itsm_core.training.distill import least_squares_projection

    rng = np.random.default_rng(0)
    s = rng.normal(size=(200, 8)).astype(np.float32)
    true_w = rng.normal(size=(12, 8)).astype(np.float32)
    t = s @ true_w.T + 0.5
    w, b, r2 = least_squares_projection(s, t)
    np.testing.assert_allclose(w, true_w, atol=1e-3)
    np.testing.assert_allclose(b, 0.5, atol=1e-3)
    assert r2 == pytest.approx(1.0, abs=1e-6)


def test_mine_triplets_uses_teacher_neighbours():
    from itsm_core.training.distill import mine_triplets

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(60, 6)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    texts = [f"t{i}" for i in range(60)]
    trip = mine_triplets(texts, emb, top_k=3, neg_rank=(20, 50))
    assert len(trip) == 60 and (trip["anchor"] != trip["positive"]).all()
    assert (trip["label"] > 0).all(), "a top-3 neighbour always beats a rank-20+ one"
    with pytest.raises(ItsmError):
        mine_triplets(texts[:2], emb[:2])


def test_distill_config_errors():
    from itsm_core.training.distill import config_for_profile

    with pytest.raises(ItsmError, match="teacher"):
        config_for_profile("default")
    with pytest.raises(ItsmError, match="loss"):
        config_for_profile("default", teacher="mpnet", loss="kl")
    with pytest.raises(ItsmError):
        config_for_profile("nope", teacher="mpnet")


def test_lexical_teacher_is_a_clear_error():
    from itsm_core.encoders.factory import load_scorer
    from itsm_core.training.distill import teacher_embeddings

    with pytest.raises(ItsmError, match="no embeddings"):
        teacher_embeddings(load_scorer("bm25"), TEXTS)


@pytest.mark.weights
@pytest.mark.parametrize("loss", ["mse", "margin-mse"])
def test_distill_tiny_ensemble_into_tiny_student(tmp_path, tiny_models, tiny_bundle, loss,
                                                 isolated_results):
    """2 steps end to end: teacher = ensemble of two tiny models, student = a tiny model;
    student and teacher are evaluated on test and compared (quality, size, speed)."""
    from itsm_core.encoders.registry import resolve_spec
    from itsm_core.training.distill import comparison, config_for_profile, run_distill
    from itsm_core.training.pretrain import pretrain_texts

    teacher = create_ensemble([str(m) for m in tiny_models], tmp_path / "teacher",
                              name="tiny-ensemble")
    cfg = config_for_profile("smoke", teacher=str(teacher), student=str(tiny_models[0]),
                             dataset="tiny", loss=loss, evaluate_test=True,
                             evaluate_teacher=True, output_dir=str(tmp_path / "run"))
    res = run_distill(cfg, incidents_path=tiny_bundle["incidents"])
    meta = res.meta
    assert meta["global_steps"] == 2 and meta["teacher_dim"] == 64 and meta["student_dim"] == 32
    emb = np.load(res.run_dir / "teacher_embeddings.npy")
    n_train = len(pretrain_texts("tiny", incidents_path=tiny_bundle["incidents"]).texts)
    assert emb.shape == (min(n_train, cfg.max_texts), 64)
    if loss == "mse":
        assert meta["projection"] == "Linear(32→64)" and 0 <= meta["projection_init_r2"] <= 1
    else:
        assert meta["triplets"] == emb.shape[0]
    spec = resolve_spec(str(res.model_dir))
    assert spec.key == "tiny0-distilled" and spec.dim == 32
    assert spec.extra["distilled_from"] == str(teacher)
    assert res.test_record["model"] == "tiny0-distilled"
    assert res.teacher_eval and (res.teacher_eval / "metrics.json").exists()
    board = pd.read_csv(isolated_results.leaderboard)
    assert {"tiny0-distilled", "tiny-ensemble"} <= set(board["model"])
    table = comparison(res.run_dir, speed_texts=8).set_index("role")
    assert table.loc["teacher", "models"] == 2 and table.loc["student (distilled)", "models"] == 1
    assert table.loc["teacher", "embedding_dim"] == 64
    assert table.loc["student (distilled)", "encode_sentences_per_s"] > 0
    assert "student_minus_this_ndcg@10" in table.columns
    assert pd.isna(table.loc["student trained alone", "ndcg@10"])  # none in this leaderboard


def test_cli_ensemble_distill_pretrain_errors_and_ensemble_folder(tmp_path, tiny_models):
    from typer.testing import CliRunner

    from itsm_core.cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["ensemble", "--members", f"{tiny_models[0]},{tiny_models[1]}",
                              "--out", str(tmp_path / "ens"), "--weights", "1,2"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "ens" / "itsm_ensemble.json").read_text())["weights"] == [1, 2]
    for args, msg in ((["ensemble", "--members", "minilm", "--out", str(tmp_path / "e2")],
                       "two members"),
                      (["ensemble", "--members", "minilm,mpnet", "--out", str(tmp_path / "e3"),
                        "--weights", "1,x"], "numbers"),
                      (["distill", "--teacher", str(tmp_path / "ens"), "--loss", "kl"], "loss"),
                      (["pretrain", "--method", "bert-flow"], "method"),
                      (["pretrain", "--profile", "huge"], "profile")):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and msg in res.output, (args, res.output)
    assert not (tmp_path / "e2").exists()


def test_trained_model_dirs_resolve_newest_run_or_fail(tmp_path, isolated_results):
    from itsm_core.encoders.ensemble import trained_model_dirs
    from itsm_core.runs.schema import append_leaderboard

    run = tmp_path / "models" / "20260101T000000Z_x"
    (run / "model").mkdir(parents=True)
    (run / "evaluate").mkdir()
    rec = {"task": "evaluate", "dataset": "tiny", "split": "test", "model": "tiny-ft",
           "timestamp": "20260101T000000Z", "model_arg": str(run / "model")}
    (run / "evaluate" / "metrics.json").write_text(json.dumps(rec))
    append_leaderboard(rec, run / "evaluate", isolated_results.leaderboard)
    assert trained_model_dirs(["tiny-ft"], "tiny") == [str(run / "model")]
    with pytest.raises(ItsmError, match="no trained run"):
        trained_model_dirs(["tiny-ft", "other-ft"], "tiny")


def test_same_spec_compares_paths_and_strings(tmp_path):
    from itsm_core.runs.schema import same_spec

    (tmp_path / "e").mkdir()
    assert same_spec(str(tmp_path / "e"), str(tmp_path / "e" / ".." / "e"))
    assert same_spec(f"hybrid:{tmp_path / 'e'}", f"hybrid:{tmp_path}/e/../e")
    assert not same_spec(f"hybrid:{tmp_path / 'e'}", str(tmp_path / "e"))
    assert not same_spec(None, "x") and not same_spec("ensemble:a,b", "ensemble:a,c")
