"""Tests for itsm_core.data.datasets: building the two bundled data sets from data_new/raw.

The data sets are built once per module (~3 s) into a temporary folder from the real raw
files; the project's own data_new/processed is never touched.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import PROJECT_ROOT  # noqa: E402

from itsm_core.core.errors import ItsmError
from itsm_core.data.datasets import (
    DatasetManifest,
    build_all,
    build_it_tickets,
    processed_path,
    read_sidecar,
    sidecar_path,
)
from itsm_core.data.incidents import load_links
from itsm_core.data.splits import normalise_key

RAW_DIR = PROJECT_ROOT / "data_new" / "raw"
SPLIT_NAMES = {"train", "validation", "test"}

pytestmark = pytest.mark.skipif(not (RAW_DIR / "it_tickets").is_dir(),
                                reason="data_new/raw is not checked out")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("processed")
    paths = build_all(raw_dir=RAW_DIR, out_dir=out)
    return paths


@pytest.fixture(scope="module")
def it_tickets(built: dict[str, Path]) -> pd.DataFrame:
    return pd.read_parquet(built["it_tickets"])


@pytest.fixture(scope="module")
def gitbugs(built: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    df = pd.read_parquet(built["gitbugs_hadoop"])
    links = pd.read_csv(built["gitbugs_hadoop"].parent / "gitbugs_hadoop_links.csv", dtype=str)
    meta = json.loads(sidecar_path(built["gitbugs_hadoop"]).read_text(encoding="utf-8"))
    return df, links, meta


def test_build_writes_the_expected_files(built: dict[str, Path]) -> None:
    out = built["it_tickets"].parent
    assert set(built) == {"it_tickets", "gitbugs_hadoop"}
    names = {p.name for p in out.iterdir()}
    assert {"it_tickets.parquet", "it_tickets.meta.json", "gitbugs_hadoop.parquet",
            "gitbugs_hadoop.meta.json", "gitbugs_hadoop_links.csv"} <= names
    assert not [n for n in names if n.endswith(".tmp") or n.startswith(".")]  # atomic writes
    assert processed_path("it_tickets", out) == built["it_tickets"]


# ---------------------------------------------------------------------------- it_tickets


def test_it_tickets_rows_numbers_labels(it_tickets: pd.DataFrame) -> None:
    df = it_tickets
    assert len(df) == 47_030
    assert df["number"].is_unique
    labelled = df["category"].notna()
    assert 4_400 <= labelled.sum() <= 4_612  # ~4.5k of the 4,612 labelled raw rows join
    assert df.loc[labelled, "subcategory"].notna().all()
    assert set(df["split"].unique()) == SPLIT_NAMES


def test_it_tickets_no_text_shared_across_splits(it_tickets: pd.DataFrame) -> None:
    key = it_tickets["description"].map(normalise_key)
    splits_per_text = it_tickets.groupby(key.to_numpy())["split"].nunique()
    assert (splits_per_text == 1).all()
    # the labelled subset is split too, with every split holding labelled tickets
    lab = it_tickets[it_tickets["category"].notna()]
    assert set(lab["split"].unique()) == SPLIT_NAMES


def test_it_tickets_split_fractions(it_tickets: pd.DataFrame) -> None:
    share = it_tickets["split"].value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.7, abs=0.02)
    assert share["validation"] == pytest.approx(0.1, abs=0.02)
    assert share["test"] == pytest.approx(0.2, abs=0.02)


def test_it_tickets_sidecar(built: dict[str, Path], it_tickets: pd.DataFrame) -> None:
    side = read_sidecar(built["it_tickets"])
    assert isinstance(side, DatasetManifest)
    assert side.name == "it_tickets"
    assert side.labels == ["category", "subcategory"]
    assert side.text_fields == ["short_description", "description"]
    assert side.links is None and side.eval_corpus == "split"
    assert side.counts["incidents"] == len(it_tickets)
    assert side.counts["labelled"] == int(it_tickets["category"].notna().sum())
    assert side.counts["split"] == it_tickets["split"].value_counts().to_dict()
    assert set(side.raw_sha256) == {"all_tickets_processed_improved_v3.csv",
                                    "all_tickets_labelled_subset.csv"}
    assert all(len(h) == 64 for h in side.raw_sha256.values())
    assert side.seed == 42 and side.provenance


def test_build_is_deterministic(tmp_path: Path, it_tickets: pd.DataFrame) -> None:
    again = pd.read_parquet(build_it_tickets(raw_dir=RAW_DIR, out_dir=tmp_path))
    pd.testing.assert_frame_equal(again, it_tickets)


# ---------------------------------------------------------------------------- gitbugs


def test_gitbugs_rows_and_links_file(gitbugs) -> None:
    df, links, meta = gitbugs
    assert len(df) == 2_503
    assert df["number"].is_unique
    assert set(df["split"].unique()) <= SPLIT_NAMES
    assert list(links.columns) == ["a", "b", "split"]
    assert set(links["split"]) <= SPLIT_NAMES and {"train", "test"} <= set(links["split"])
    assert set(links["a"]) | set(links["b"]) <= set(df["number"])
    assert meta["links"] == "gitbugs_hadoop_links.csv"
    assert meta["labels"] == [] and meta["eval_corpus"] == "all"
    assert meta["counts"]["incidents"] == len(df) and meta["counts"]["links"] == len(links)


def test_gitbugs_test_link_ends_are_test_incidents(gitbugs) -> None:
    df, links, _ = gitbugs
    split_of = df.set_index("number")["split"]
    test_links = links[links["split"] == "test"]
    ends = pd.unique(test_links[["a", "b"]].to_numpy().ravel())
    assert len(ends) > 0
    assert (split_of.loc[ends] == "test").all()
    # no training link reaches a test or validation incident
    train = links[links["split"] == "train"]
    train_ends = pd.unique(train[["a", "b"]].to_numpy().ravel())
    assert (split_of.loc[train_ends] == "train").all()
    # validation link ends are never train incidents
    val = links[links["split"] == "validation"]
    assert (split_of.loc[pd.unique(val[["a", "b"]].to_numpy().ravel())] != "train").all()


def test_gitbugs_authors_test_links_stay_test(gitbugs) -> None:
    df, links, meta = gitbugs
    raw = RAW_DIR / "gitbugs_hadoop"

    def pairs(path: Path) -> set[frozenset[str]]:
        lk = load_links(path)
        return {frozenset(p) for p in zip(lk["a"], lk["b"])}

    authors_test, authors_train = pairs(raw / "hadoop_bugs-test.csv"), pairs(
        raw / "hadoop_bugs-train.csv")
    split_of = {frozenset(p): s for *p, s in links[["a", "b", "split"]].itertuples(index=False)}
    in_file = [k for k in authors_test if k in split_of]
    assert len(in_file) == len(authors_test) > 0
    assert all(split_of[k] == "test" for k in in_file)
    counts = meta["counts"]
    assert counts["authors_test_links"] == len(authors_test)
    assert counts["authors_train_links"] == len(authors_train)
    assert counts["authors_train_test_overlap"] == len(authors_test & authors_train) > 0
    assert sum(counts["links_split"].values()) == len(links)


# ---------------------------------------------------------------------------- errors


def test_missing_raw_file_names_path_and_fix(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    (raw / "it_tickets").mkdir(parents=True)
    with pytest.raises(ItsmError) as exc:
        build_all(["it_tickets"], raw_dir=raw, out_dir=tmp_path / "out")
    msg = str(exc.value)
    assert str(raw / "it_tickets" / "all_tickets_processed_improved_v3.csv") in msg
    assert "missing" in msg and "git checkout" in msg
    assert not (tmp_path / "out" / "it_tickets.parquet").exists()


def test_unknown_dataset_name_raises(tmp_path: Path) -> None:
    with pytest.raises(ItsmError, match="unknown data set") as exc:
        build_all(["it_tickets", "no_such_set"], raw_dir=RAW_DIR, out_dir=tmp_path)
    assert "gitbugs_hadoop" in str(exc.value)  # the fix lists the valid names
    assert not list(tmp_path.iterdir())  # validated before anything is built
    with pytest.raises(ItsmError):
        processed_path("no_such_set", tmp_path)


def test_processed_path_not_built_yet(tmp_path: Path) -> None:
    with pytest.raises(ItsmError, match="itsm data build"):
        processed_path("it_tickets", tmp_path)


def test_malformed_sidecar_is_an_itsm_error(tmp_path: Path) -> None:
    inc = tmp_path / "x.parquet"
    sidecar_path(inc).write_text("{not json", encoding="utf-8")
    assert sidecar_path(inc).name == "x.meta.json"
    with pytest.raises(ItsmError, match="malformed"):
        read_sidecar(inc)
    assert read_sidecar(tmp_path / "other.csv") is None
