"""Tests for the adversarial diagnostic (itsm_core.evaluation.diagnostic, `itsm diagnose`,
notebook 05).

The tiny fixture (42 incidents; 12 test and 12 validation incidents, 6 fine labels) is
lexically easy, so few pairs qualify: tests use small n_pairs / min_pairs; one test
checks that the default min_pairs fails loudly on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import PROJECT_ROOT
from typer.testing import CliRunner

from itsm_core.cli.main import app
from itsm_core.core.errors import ItsmError
from itsm_core.evaluation import diagnostic as D
from itsm_core.metrics.stats import best_f1_threshold
from itsm_core.runs.schema import read_leaderboard

SMALL = dict(n_pairs=10, min_pairs=1, k=3, n_shortcut=10, n_boilerplate=6, n_resamples=50)


@pytest.fixture
def small_cfg() -> D.DiagnosticConfig:
    return D.DiagnosticConfig(**SMALL)


@pytest.fixture
def data(tiny_incidents: Path, small_cfg) -> D.DiagnosticData:
    return D.build_diagnostic(tiny_incidents, labels=["category", "subcategory"],
                              config=small_cfg)


def _unordered(pairs: pd.DataFrame) -> list[tuple[str, str]]:
    return [tuple(sorted(p)) for p in zip(pairs["a"], pairs["b"])]


# ---------------------------------------------------------------------------- pair sets


def test_bands_respected(data: D.DiagnosticData) -> None:
    for s in (data.test, data.threshold):
        p, (p_lo, p_hi), (n_lo, n_hi) = s.pairs, s.bands["hard_positive"], \
            s.bands["hard_negative"]
        hp, hn = p[p["kind"] == "hard_positive"], p[p["kind"] == "hard_negative"]
        assert len(hp) >= 1 and len(hn) >= 1
        assert (hp["lexical"] <= p_hi).all() and (hp["lexical"] >= p_lo).all()
        assert (hn["lexical"] >= n_lo).all() and (hn["lexical"] <= n_hi).all()
        # separated bands: every hard negative is lexically closer than every hard positive
        assert p_hi < n_lo
        assert hp["lexical"].max() < hn["lexical"].min()
        assert set(hp["label"]) == {1} and set(hn["label"]) == {0}
        # the numbers used are stored
        assert s.bands["lexical"] == "tfidf" and "relevant_quantiles" in s.bands


def test_relevance_definition(data: D.DiagnosticData, tiny_df: pd.DataFrame) -> None:
    lab = tiny_df.set_index("number")
    for s in (data.test, data.threshold):
        for r in s.pairs.itertuples():
            a, b = lab.loc[r.a], lab.loc[r.b]
            if r.kind == "hard_positive":
                assert (a["category"], a["subcategory"]) == (b["category"], b["subcategory"])
            else:
                assert a["category"] != b["category"]


def test_held_out_only(data: D.DiagnosticData, tiny_df: pd.DataFrame) -> None:
    split_of = tiny_df.set_index("number")["split"]
    test_ids = set(data.test.pairs[["a", "b"]].to_numpy().ravel())
    thr_ids = set(data.threshold.pairs[["a", "b"]].to_numpy().ravel())
    assert {split_of[i] for i in test_ids} == {"test"}
    assert {split_of[i] for i in thr_ids} == {"validation"}
    assert set(data.pools["test"]) == set(tiny_df.loc[tiny_df["split"] == "test", "number"])
    assert not test_ids & thr_ids


def test_no_pair_reused(data: D.DiagnosticData) -> None:
    for s in (data.test, data.threshold):
        keys = _unordered(s.pairs)
        assert len(keys) == len(set(keys))
        assert all(a != b for a, b in keys)
        pos = set(_unordered(s.pairs[s.pairs["label"] == 1]))
        neg = set(_unordered(s.pairs[s.pairs["label"] == 0]))
        assert not pos & neg


def test_balanced_and_counts(data: D.DiagnosticData) -> None:
    c = data.test.counts
    assert c["hard_positive"] == c["hard_negative"] == len(data.test.pairs) // 2
    assert c["hard_positive_in_band"] >= c["hard_positive"]
    assert c["incidents"] == 12 and c["relevant_pairs"] == 6 and c["non_relevant_pairs"] == 48


def test_loud_failure_when_too_few_pairs(tiny_incidents: Path) -> None:
    with pytest.raises(ItsmError) as exc:
        D.build_diagnostic(tiny_incidents, config=D.DiagnosticConfig(n_pairs=300,
                                                                     min_pairs=30))
    msg = str(exc.value)
    assert "too few adversarial pairs" in msg and "30 of each" in msg
    assert "hard positives" in msg and "--min-pairs" in msg  # counts and the fix


def test_nothing_qualifies_without_relevant_pairs() -> None:
    ids = [f"I{i}" for i in range(6)]
    texts = pd.Series([f"printer toner {i}" for i in range(6)], index=ids)
    none = np.zeros((6, 6), dtype=bool)
    with pytest.raises(ItsmError, match="no hard pair can qualify"):
        D.build_adversarial_set(ids, texts, none, ~none, split="test",
                                config=D.DiagnosticConfig(min_pairs=1, n_pairs=5))


def test_build_adversarial_set_bands_and_cap() -> None:
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(40)]
    ids = [f"I{i:02d}" for i in range(40)]
    texts = pd.Series([" ".join(rng.choice(vocab, 6)) for _ in ids], index=ids)
    group = np.arange(40) % 4
    rel = group[:, None] == group[None, :]
    cfg = D.DiagnosticConfig(n_pairs=50, min_pairs=3, max_pairs_per_incident=2, seed=1)
    s = D.build_adversarial_set(ids, texts, rel, ~rel, split="test", config=cfg)
    used = pd.Series(np.r_[s.pairs["a"], s.pairs["b"]])
    for kind, sub in s.pairs.groupby("kind"):
        assert pd.Series(np.r_[sub["a"], sub["b"]]).value_counts().max() <= 2, kind
    assert len(used) == 2 * len(s.pairs)
    assert (s.pairs.loc[s.pairs["label"] == 1, "lexical"] <= s.bands["hard_positive"][1]).all()
    assert (s.pairs.loc[s.pairs["label"] == 0, "lexical"] >= s.bands["hard_negative"][0]).all()
    # absolute bands are used as given (no separation needed when already disjoint)
    cfg_abs = D.DiagnosticConfig(n_pairs=50, min_pairs=1, band_positive=(0.0, 0.1),
                                 band_negative=(0.2, 1.0))
    s2 = D.build_adversarial_set(ids, texts, rel, ~rel, split="test", config=cfg_abs)
    assert s2.bands["hard_positive"] == [0.0, 0.1] and s2.bands["hard_negative"] == [0.2, 1.0]
    assert s2.bands["hard_positive_source"] == "absolute"


def test_identical_texts_excluded() -> None:
    ids = [f"I{i}" for i in range(8)]
    texts = pd.Series(["printer jam tray"] * 2 + [f"vpn error {i} code" for i in range(6)],
                      index=ids)
    group = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    rel = group[:, None] == group[None, :]
    s = D.build_adversarial_set(ids, texts, rel, ~rel, split="test",
                                config=D.DiagnosticConfig(n_pairs=5, min_pairs=1))
    assert s.counts["identical_text_pairs_excluded"] == 1
    assert ("I0", "I1") not in _unordered(s.pairs)


def test_config_checks() -> None:
    with pytest.raises(ItsmError, match="min_pairs"):
        D.DiagnosticConfig(n_pairs=5, min_pairs=10).check()
    with pytest.raises(ItsmError, match="lexical"):
        D.DiagnosticConfig(lexical="jaccard").check()
    with pytest.raises(ItsmError, match="threshold split"):
        D.DiagnosticConfig(threshold_split="test").check()


def test_links_mode(tiny_incidents: Path, tiny_links: Path) -> None:
    cfg = D.DiagnosticConfig(**SMALL)
    d = D.build_diagnostic(tiny_incidents, links=tiny_links, config=cfg)
    assert d.mode == "links"
    links = pd.read_csv(tiny_links, dtype=str)
    linked = {tuple(sorted(p)) for p in zip(links["incident"], links["duplicate_of"])}
    pos = set(_unordered(d.test.pairs[d.test.pairs["label"] == 1]))
    neg = set(_unordered(d.test.pairs[d.test.pairs["label"] == 0]))
    assert pos and pos <= linked and not neg & linked


# ---------------------------------------------------------------------------- scoring


def test_tfidf_fails_and_threshold_from_validation(data: D.DiagnosticData,
                                                    tmp_path: Path) -> None:
    summary = D.run_diagnostic(["tfidf", "bm25"], data=data, out_dir=tmp_path / "runs",
                               leaderboard=tmp_path / "lb.csv")
    assert list(summary["model"]) == ["tfidf", "bm25"]
    tf = summary.set_index("model").loc["tfidf"]
    assert tf["roc_auc"] < 0.7 and tf["verdict"] == "fail"
    for r in summary.itertuples():
        thr_pairs = pd.read_csv(Path(r.run_dir) / "threshold_pairs.csv")
        assert set(thr_pairs["a"]) | set(thr_pairs["b"]) <= set(data.pools["validation"])
        assert r.threshold == pytest.approx(best_f1_threshold(
            thr_pairs["score"].to_numpy(), thr_pairs["label"].to_numpy()), rel=1e-6)
        assert r.verdict == D.verdict(r.roc_auc, r.f1)
        rec = json.loads((Path(r.run_dir) / "metrics.json").read_text())
        assert rec["threshold"] == pytest.approx(r.threshold)
        assert rec["benchmark"]["threshold_split"] == "validation"


def test_probes_return_finite_numbers_in_range(data: D.DiagnosticData, tmp_path: Path
                                               ) -> None:
    summary = D.run_diagnostic(["tfidf", "bm25"], data=data, out_dir=tmp_path / "runs",
                               leaderboard=None)
    for r in summary.to_dict("records"):
        assert 0.0 <= r["shortcut_flip_rate"] <= 1.0
        assert np.isfinite(r["shortcut_mean_abs_delta"]) and r["shortcut_mean_abs_delta"] >= 0
        assert np.isfinite(r["shortcut_rel_delta"])
        assert 0.0 <= r["boilerplate_overlap@3"] <= 1.0
        assert 0.0 <= r["boilerplate_top1_kept"] <= 1.0
        assert np.isfinite(r["boilerplate_mean_abs_delta_top1"])
        assert 0.0 <= r["roc_auc"] <= 1.0 and 0.0 <= r["f1"] <= 1.0
    sc = pd.read_csv(Path(summary["run_dir"].iloc[0]) / "shortcut.csv")
    assert {"inject", "remove"} <= set(sc["probe"])
    bp = pd.read_csv(Path(summary["run_dir"].iloc[0]) / "boilerplate.csv")
    assert len(bp) == 6 and not (bp["query"] == bp["top1_after"]).any()
    assert not (bp["quoted"] == bp["top1_after"]).any()


def test_shortcut_variants_inject_and_remove() -> None:
    pairs = pd.DataFrame({"a": ["A", "C"], "b": ["B", "D"], "kind": KINDS_PAIR,
                          "label": [1, 0], "text_a": ["x y", "u v"],
                          "text_b": ["Hardware failure of the disk", "screen flickers"]})
    v = D.shortcut_variants(pairs, ["network problem"], sorted(D.SHORTCUT_WORDS), n=2, seed=0)
    inj = v[v["probe"] == "inject"]
    assert len(inj) == 2 and all(t.endswith("network problem") for t in inj["text_b_new"])
    rem = v[v["probe"] == "remove"]
    assert list(rem["text_b_new"]) == ["failure of the disk"]


KINDS_PAIR = ["hard_positive", "hard_negative"]


def test_boilerplate_unchanged_for_identity_scorer() -> None:
    """A scorer blind to appended text keeps every neighbour: overlap 1, Δ 0."""

    class FirstWord:
        name, kind = "firstword", "lexical"

        def score_matrix(self, q, c, dim=None):
            return np.array([[float(a.split()[0] == b.split()[0]) + 0.01 * j
                              for j, b in enumerate(c)] for a in q])

    ids = [f"I{i}" for i in range(8)]
    texts = pd.Series([f"w{i % 3} text {i}" for i in range(8)], index=ids)
    groups = pd.Series([str(i % 2) for i in range(8)], index=ids)
    q = D.boilerplate_queries(ids, texts, groups, n=4, seed=0)
    assert all("-----Original Message-----" in t for t in q["text_new"])
    assert (q["query"] != q["quoted"]).all()
    res, table = D.boilerplate_probe(FirstWord(), q, ids, texts, k=3)
    assert res["boilerplate_overlap@3"] == 1.0 and res["boilerplate_top1_kept"] == 1.0
    assert res["boilerplate_mean_abs_delta_top1"] == 0.0


def test_results_schema_and_leaderboard(data: D.DiagnosticData, isolated_results) -> None:
    summary = D.run_diagnostic(["tfidf"], data=data)
    run_dir = Path(summary["run_dir"].iloc[0])
    assert run_dir.parent == isolated_results.runs
    assert run_dir.name.endswith("_diagnose_tiny_incidents_tfidf")
    rec = json.loads((run_dir / "metrics.json").read_text())
    assert rec["task"] == "diagnose" and rec["model"] == "tfidf"
    for key in ("roc_auc", "f1", "precision", "recall", "pr_auc"):
        assert isinstance(rec[key], float) and len(rec[f"{key}_ci"]) == 2
    assert rec["verdict"] in ("pass", "fail")
    assert rec["benchmark"]["test_set"]["bands"]["hard_positive"]
    assert rec["n_test_pairs"] == len(data.test.pairs)
    for name in ("pairs", "threshold_pairs", "worst", "shortcut", "boilerplate"):
        assert (run_dir / f"{name}.csv").exists(), name
    board = read_leaderboard(isolated_results.leaderboard)
    row = board[board["task"] == "diagnose"]
    assert len(row) == 1 and row["model"].iloc[0] == "tfidf"
    assert row["roc_auc"].iloc[0] == pytest.approx(rec["roc_auc"])
    assert row["f1"].iloc[0] == pytest.approx(rec["f1"])
    # read back for the notebook
    back = D.latest_diagnostic(dataset="tiny_incidents")
    assert list(back["model"]) == ["tfidf"] and back["verdict"].iloc[0] == rec["verdict"]
    assert not D.set_table(back).empty and not D.verdict_table(back).empty


def test_worst_examples(data: D.DiagnosticData, tmp_path: Path) -> None:
    summary = D.run_diagnostic(["tfidf"], data=data, out_dir=tmp_path, leaderboard=None)
    pairs = D.scored_pairs(summary)["tfidf"]
    pairs.loc[0, "text_a"] = "x" * 1000
    w = D.worst_examples(pairs, n=1, max_chars=300)
    assert list(w["kind"]) == ["hard_negative", "hard_positive"]
    neg, pos = pairs[pairs["kind"] == "hard_negative"], pairs[pairs["kind"] == "hard_positive"]
    assert w["score"].iloc[0] == neg["score"].max()
    assert w["score"].iloc[1] == pos["score"].min()
    assert w["text_a"].str.len().max() <= 300


# ---------------------------------------------------------------------------- CLI


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "250", "NO_COLOR": "1"})


def test_cli_diagnose(runner, tiny_incidents: Path, isolated_results) -> None:
    res = runner.invoke(app, ["diagnose", "--models", "tfidf,bm25", "--incidents",
                              str(tiny_incidents), "--n-pairs", "10", "--min-pairs", "1",
                              "--bootstrap", "50"])
    assert res.exit_code == 0, res.output
    assert "tfidf" in res.output and "bm25" in res.output and "FAIL" in res.output
    board = read_leaderboard(isolated_results.leaderboard)
    assert sorted(board.loc[board["task"] == "diagnose", "model"]) == ["bm25", "tfidf"]


def test_cli_diagnose_too_few_pairs_fails(runner, tiny_incidents: Path,
                                          isolated_results) -> None:
    res = runner.invoke(app, ["diagnose", "--models", "tfidf", "--incidents",
                              str(tiny_incidents), "--min-pairs", "30"])
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and "too few adversarial pairs" in res.output
    assert "Traceback" not in res.output
    assert not isolated_results.leaderboard.exists()


def test_cli_diagnose_unknown_model(runner, tiny_incidents: Path, isolated_results) -> None:
    res = runner.invoke(app, ["diagnose", "--models", "no-such-model-xyz", "--incidents",
                              str(tiny_incidents), "--n-pairs", "10", "--min-pairs", "1"])
    assert res.exit_code == 2, res.output


def test_cli_report_diagnose_turns_notebook_error_into_message(runner, tmp_path: Path,
                                                               isolated_results,
                                                               monkeypatch) -> None:
    """The notebook's ItsmError (here: data set not built in the test home) -> exit 2."""
    from itsm_core.reports import notebooks as reports

    monkeypatch.setitem(reports.run_report.__kwdefaults__, "notebooks_dir",
                        PROJECT_ROOT / "notebooks")
    monkeypatch.setitem(reports.run_report.__kwdefaults__, "reports_dir", tmp_path / "rep")
    res = runner.invoke(app, ["report", "diagnose", "--models", "tfidf", "--output",
                              str(tmp_path / "r.html")])
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and "notebook failed" in res.output
    assert "data set not built yet" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r.html").exists()


# ---------------------------------------------------------------------------- notebook


def test_notebook_registered() -> None:
    import nbformat
    from conftest import PROJECT_ROOT

    nb = nbformat.read(PROJECT_ROOT / "notebooks" / "05_adversarial_diagnostic.ipynb", 4)
    src = "\n".join(c.source for c in nb.cells)
    assert 'models = "tfidf,bm25,minilm,mpnet"' in src and 'dataset = "it_tickets"' in src
    assert 'extra_models = ""' in src and "diagnose.run_from_params" in src


def test_notebook_report_smoke_and_loud_failure(tiny_incidents: Path, tmp_path: Path) -> None:
    from papermill.exceptions import PapermillExecutionError

    from itsm_core.reports.notebooks import run_report

    nb_dir = PROJECT_ROOT / "notebooks"
    params = {"models": "tfidf,bm25", "incidents": str(tiny_incidents), "n_pairs": 10,
              "min_pairs": 1, "leaderboard": str(tmp_path / "lb.csv"),
              "out_dir": str(tmp_path / "runs")}
    html = run_report("05_adversarial_diagnostic", params, output=tmp_path / "d.html",
                      reports_dir=tmp_path / "reports", notebooks_dir=nb_dir)
    text = html.read_text(encoding="utf-8")
    assert "FAIL" in text and "tfidf" in text and "hard_negative" in text
    assert text.count("data:image/png") >= 1 and "Traceback" not in text
    # too few pairs: the notebook fails (with the counts) instead of passing
    with pytest.raises(PapermillExecutionError) as exc:
        run_report("05_adversarial_diagnostic", {**params, "n_pairs": 300, "min_pairs": 30},
                   output=tmp_path / "e.html", reports_dir=tmp_path / "reports",
                   notebooks_dir=nb_dir)
    assert exc.value.ename == "ItsmError" and "too few adversarial pairs" in exc.value.evalue
    assert not (tmp_path / "e.html").exists()


# ---------------------------------------------------------------------------- weights


@pytest.mark.weights
def test_minilm_on_tiny(data: D.DiagnosticData, tmp_path: Path) -> None:
    summary = D.run_diagnostic(["minilm"], data=data, out_dir=tmp_path, leaderboard=None)
    r = summary.iloc[0]
    assert r["model_kind"] == "dense" and 0.0 <= r["roc_auc"] <= 1.0
    assert r["verdict"] in ("pass", "fail")
    assert 0.0 <= r["boilerplate_overlap@3"] <= 1.0 and 0.0 <= r["shortcut_flip_rate"] <= 1.0
