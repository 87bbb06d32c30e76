"""A desk's own export as a data set: `itsm data add` for every relevance kind, splits
that keep relevant pairs together, and every bad input with a clear error."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from desk_fixtures import servicenow_export
from typer.testing import CliRunner

from itsm_core.core.errors import ItsmError
from itsm_core.data.datasets import processed_path, read_sidecar
from itsm_core.data.incidents import load_links
from itsm_core.data.register import add_dataset, list_datasets


@pytest.fixture
def export(tmp_path):
    path = tmp_path / "export.csv"
    servicenow_export().to_csv(path, index=False)
    return path


@pytest.fixture
def out(tmp_path):
    (tmp_path / "processed").mkdir()
    return tmp_path / "processed"


def test_labels_by_export_headers(export, out):
    res = add_dataset("desk", export, columns="servicenow", labels=["Category", "Subcategory"],
                      out_dir=out)
    m = res.manifest
    assert res.path == out / "desk.parquet" and (out / "desk.meta.json").exists()
    assert m.labels == ["category", "subcategory"] and m.counts["relevance"] == "labels"
    df = pd.read_parquet(res.path)
    assert len(df) == 480 and set(df["split"]) == {"train", "validation", "test"}
    assert df["resolution_notes"].str.startswith("fixed").all()
    assert m.counts["classes_usable_for_pairs"] == 6
    assert read_sidecar(res.path).name == "desk"
    assert processed_path("desk", out) == res.path


def test_groups_never_straddle_splits(export, out):
    res = add_dataset("desk", export, columns="servicenow", groups="Problem", out_dir=out)
    df = pd.read_parquet(res.path)
    assert res.manifest.labels == ["Problem"] and res.manifest.counts["relevance"] == "groups"
    assert (df.groupby("Problem")["split"].nunique() == 1).all()


def test_links_never_straddle_splits_and_unknown_numbers_are_dropped(export, out, tmp_path):
    links = servicenow_export().groupby("Problem")["Number"].apply(list)
    rows = [(g[0], g[j]) for g in links for j in range(1, len(g))] + [("INC00001", "NOPE")]
    pd.DataFrame(rows, columns=["incident", "duplicate_of"]).to_csv(tmp_path / "l.csv",
                                                                   index=False)
    res = add_dataset("desk", export, columns="servicenow", links=tmp_path / "l.csv",
                      out_dir=out)
    c = res.manifest.counts
    assert c["relevance"] == "links" and c["links_dropped_unknown_numbers"] == 1
    saved = load_links(out / res.manifest.links)
    split_of = pd.read_parquet(res.path).set_index("number")["split"]
    assert all(split_of[a] == split_of[b] == s
               for a, b, s in zip(saved["a"], saved["b"], saved["split"]))


def test_time_split_tests_on_the_newest(export, out):
    res = add_dataset("desk", export, columns="servicenow", labels=["Category"],
                      split_by="time", out_dir=out)
    df = pd.read_parquet(res.path)
    opened = pd.to_datetime(df["opened_at"])
    assert opened[df["split"] == "train"].max() < opened[df["split"] == "test"].min()


def test_evaluate_and_pairs_take_the_name(export, isolated_results, tmp_path, monkeypatch):
    from itsm_core.core import config
    from itsm_core.data import datasets
    from itsm_core.evaluation.benchmark import evaluate_file
    from itsm_core.training.finetune import make_pairs

    out = config.PROCESSED_DIR
    out.mkdir(parents=True, exist_ok=True)
    add_dataset("desk_eval", export, columns="servicenow", labels=["Category", "Subcategory"],
                out_dir=out)
    monkeypatch.setattr(datasets, "PROCESSED_DIR", out)
    rec = evaluate_file("tfidf", None, tmp_path / "run", dataset="desk_eval")
    assert rec["dataset"] == "desk_eval" and rec["split"] == "test" and "ndcg@10_ci" in rec
    # no --out: a new folder of its own in the run store, the earlier run untouched
    again = evaluate_file("tfidf", None, None, dataset="desk_eval")
    assert Path(again["run_dir"]).parent == isolated_results.runs
    assert Path(again["run_dir"]).name.endswith("_evaluate_desk_eval_tfidf")
    assert (Path(again["run_dir"]) / "metrics.json").exists()
    assert (tmp_path / "run" / "metrics.json").exists()
    # a trained model's name is looked up among the data set's runs; none: a clear error
    with pytest.raises(ItsmError, match="unknown model 'desk-ft'.*trained on 'desk_eval'"):
        evaluate_file("hybrid:desk-ft", None, None, dataset="desk_eval")
    pairs, report = make_pairs("desk_eval")
    assert report.ok and len(pairs) > 0


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "bad name!"}, "invalid data set name"),
    ({"name": "it_tickets"}, "bundled"),
    ({"labels": ["Colour"]}, "not in the export"),
    ({"groups": "Number"}, "shared by two incidents"),
    ({"split_by": "random"}, "unknown split"),
    ({"labels": ["Category"], "groups": "Problem"}, "not both"),
])
def test_bad_input_is_refused_and_writes_nothing(export, out, kwargs, match):
    args = {"name": "desk", "incidents": export, "columns": "servicenow",
            "labels": ["Category"], **kwargs}
    with pytest.raises(ItsmError, match=match):
        add_dataset(out_dir=out, **args)
    assert not list(out.iterdir())


def test_too_little_data_says_how_much_is_needed(tmp_path, out):
    small = servicenow_export(n_per_class=8)
    small.to_csv(tmp_path / "small.csv", index=False)
    with pytest.raises(ItsmError, match="validation queries") as exc:
        add_dataset("desk", tmp_path / "small.csv", columns="servicenow", labels=["Category"],
                    out_dir=out)
    assert "--split" in str(exc.value)
    one = servicenow_export().assign(Category="Software")
    one.to_csv(tmp_path / "one.csv", index=False)
    with pytest.raises(ItsmError, match="class"):
        add_dataset("desk", tmp_path / "one.csv", columns="servicenow", labels=["Category"],
                    out_dir=out)


def test_time_split_needs_dates(tmp_path, out):
    servicenow_export().drop(columns=["Opened"]).to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(ItsmError, match="opened_at"):
        add_dataset("desk", tmp_path / "x.csv", columns="servicenow", labels=["Category"],
                    split_by="time", out_dir=out)


def test_replace_and_list(export, out):
    add_dataset("desk", export, columns="servicenow", labels=["Category"], out_dir=out)
    with pytest.raises(ItsmError, match="--replace"):
        add_dataset("desk", export, columns="servicenow", labels=["Category"], out_dir=out)
    add_dataset("desk", export, columns="servicenow", groups="Problem", replace=True,
                out_dir=out)
    add_dataset("plain", export, columns="servicenow", out_dir=out)
    table = list_datasets(out).set_index("name")
    assert table.loc["desk", "relevance"] == "groups" and table.loc["desk", "kind"] == "added"
    assert table.loc["plain", "relevance"] == "none" and table.loc["desk", "incidents"] == 480


def test_cli_data_add_and_list(export, isolated_results, monkeypatch):
    from itsm_core.cli.main import app
    from itsm_core.core import config
    from itsm_core.data import register

    config.PROCESSED_DIR.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(register.add_dataset, "__kwdefaults__",
                        {**register.add_dataset.__kwdefaults__, "out_dir": config.PROCESSED_DIR})
    monkeypatch.setattr(register.list_datasets, "__defaults__", (config.PROCESSED_DIR,))
    res = CliRunner().invoke(app, ["data", "add", "cli_desk", "--incidents", str(export),
                                   "--columns", "servicenow", "--labels", "Category,Subcategory"])
    assert res.exit_code == 0, res.output
    assert (config.PROCESSED_DIR / "cli_desk.parquet").exists() and "labels" in res.output
    listed = CliRunner().invoke(app, ["data", "list"])
    assert listed.exit_code == 0 and "cli_desk" in listed.output
    bad = CliRunner().invoke(app, ["data", "add", "it_tickets", "--incidents", str(export)])
    assert bad.exit_code == 2 and "bundled" in bad.output and "Traceback" not in bad.output
