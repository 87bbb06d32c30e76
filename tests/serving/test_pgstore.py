"""The PostgreSQL + pgvector store against a REAL server (see ``pg_url`` in conftest):
the same build as a folder index, the same answers, filters as SQL, transactional writes,
clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest

from itsm_core.core.errors import ItsmError
from itsm_core.serving.index import SearchFilter, SearchIndex, build_index
from itsm_core.serving.pgstore import PgIndex, list_collections, redact
from itsm_core.serving.store import build, open_store


@pytest.fixture(scope="module")
def incidents_csv(tmp_path_factory) -> Path:
    from conftest import tiny_frame

    path = tmp_path_factory.mktemp("data") / "incidents.csv"
    df = tiny_frame()
    df["resolution_notes"] = "restarted the " + df["subcategory"].str.lower() + " service"
    df["state"] = np.where(np.arange(len(df)) % 3 == 0, "Closed", "In Progress")
    df["opened_at"] = pd.date_range("2026-01-01", periods=len(df), freq="D").astype(str)
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def folder(tiny_model, incidents_csv, tmp_path_factory) -> SearchIndex:
    return build_index(str(tiny_model), incidents_csv, tmp_path_factory.mktemp("i") / "idx")


@pytest.fixture(scope="module")
def pg(tiny_model, incidents_csv, pg_url) -> PgIndex:
    return build(str(tiny_model), incidents_csv, store=pg_url, collection="tiny")


def test_the_store_holds_the_same_build_as_a_folder(pg, folder, pg_url):
    assert len(pg) == len(folder) == 42 and pg.dim == folder.dim == 32
    for key in ("fusion", "duplicates", "text", "dim"):
        assert pg.meta[key] == folder.meta[key], key
    assert pg.meta["model"]["fingerprint"] == folder.meta["model"]["fingerprint"]
    assert pg.meta["store"]["kind"] == "postgresql" and pg.store_kind == "postgresql"
    listed = {c["name"]: c for c in list_collections(pg_url)}
    assert listed["tiny"]["incidents"] == 42 and listed["tiny"]["dim"] == 32
    with psycopg.connect(pg_url) as conn:  # the embeddings are the folder's, row by row
        rows = dict(conn.execute("SELECT number, embedding::text FROM itsm_tiny").fetchall())
    stored = np.array([np.array(rows[n].strip("[]").split(","), float)
                       for n in folder.incidents["number"]])
    np.testing.assert_allclose(stored, folder.embeddings, atol=1e-6)


@pytest.mark.parametrize("dim", [None, 16])
def test_dense_search_answers_like_the_folder_index(pg, folder, dim):
    q = ["AnyConnect VPN keeps dropping", "printer jam on floor 3"]
    for a, b in zip(pg.search(q, k=5, mode="dense", dim=dim),
                    folder.search(q, k=5, mode="dense", dim=dim)):
        assert a["number"].tolist() == b["number"].tolist()
        np.testing.assert_allclose(a["score"], b["score"], atol=1e-5)
        assert list(a.columns) == list(b.columns)


@pytest.mark.parametrize("mode", ["bm25", "hybrid"])
def test_lexical_and_hybrid_find_the_incident_by_its_own_words(pg, folder, mode):
    row = folder.incidents.iloc[7]
    hits = pg.search(row["text"], k=3, mode=mode, similarity=True)[0]
    assert hits["number"].iloc[0] == row["number"]
    assert hits["rank"].tolist() == [1, 2, 3] and hits["similarity"].notna().all()


def test_filters_are_sql_where_clauses_with_the_folder_semantics(pg, folder):
    cases = [SearchFilter({"category": "network"}), SearchFilter(resolved_only=True),
             SearchFilter(opened_from="2026-01-10", opened_to="2026-01-20"),
             SearchFilter(exclude=["INC0000001"], numbers=folder.incidents["number"][:9])]
    for f in cases:
        a = pg.search("vpn drops", k=40, mode="dense", filter=f)[0]
        b = folder.search("vpn drops", k=40, mode="dense", filter=f)[0]
        assert len(a) and sorted(a["number"]) == sorted(b["number"]), f
    with pytest.raises(ItsmError, match="no such column"):
        pg.search("vpn", filter=SearchFilter({"colour": "red"}))
    with pytest.raises(ItsmError, match="not a date"):
        pg.search("vpn", filter=SearchFilter(opened_from="yesterday-ish"))


def test_get_categories_and_filter_columns(pg, folder):
    n = folder.incidents["number"].iloc[3]
    assert pg.get(n)["text"] == folder.get(n)["text"] and pg.get("nope") is None
    assert pg.categories() == folder.categories()
    assert pg.filter_columns() == folder.filter_columns()


def test_adds_and_removes_are_transactions_that_move_the_generation(
        tiny_model, incidents_csv, pg_url, tmp_path):
    idx = build(str(tiny_model), incidents_csv, store=pg_url, collection="writes")
    gen = idx.meta["generation"]
    new = tmp_path / "new.csv"
    pd.DataFrame({"number": ["NEW1", "NEW2"], "short_description": ["Badge reader dead",
                  "Coffee machine error E4"], "description": ["door badge", "kitchen"]}
                 ).to_csv(new, index=False)
    assert idx.add(new) == 2 and len(idx) == 44 and idx.meta["generation"] == gen + 1
    assert idx.search("Coffee machine error E4", k=1, mode="bm25")[0]["number"][0] == "NEW2"
    with pytest.raises(ItsmError, match="already in the index"):
        idx.add(new)
    assert len(PgIndex(pg_url, "writes")) == 44  # the refused add wrote nothing
    assert idx.add(new, skip_existing=True) == 0
    _, gone = idx.removed(["NEW1", "UNKNOWN"])
    assert gone == 1 and len(idx) == 43 and idx.meta["generation"] == gen + 2
    assert [h["op"] for h in idx.meta["history"]] == ["build", "add", "remove"]


def test_an_existing_collection_is_never_overwritten_unless_asked(pg, tiny_model,
                                                                 incidents_csv, pg_url):
    with pytest.raises(ItsmError, match="already exists"):
        build(str(tiny_model), incidents_csv, store=pg_url, collection="tiny")
    assert len(PgIndex(pg_url, "tiny")) == 42


def test_clear_errors_for_bad_stores(pg, pg_url, tiny_model, incidents_csv):
    if len(list_collections(pg_url)) < 2:  # run alone: make the store hold two
        build(str(tiny_model), incidents_csv, store=pg_url, collection="second")
    with pytest.raises(ItsmError, match="cannot connect"):
        PgIndex("postgresql://nobody:secret@127.0.0.1:1/none")
    with pytest.raises(ItsmError, match="not a PostgreSQL URL"):
        open_store(store="mysql://x")
    with pytest.raises(ItsmError, match="no collection"):
        PgIndex(pg_url, "missing")
    with pytest.raises(ItsmError, match="collections"):
        PgIndex(pg_url)  # several collections: name one
    with pytest.raises(ItsmError, match="valid collection name"):
        build(str(tiny_model), incidents_csv, store=pg_url, collection="drop table;")
    assert redact("postgresql://u:secret@h:5/db") == "postgresql://u:***@h:5/db"


def test_queries_with_another_model_are_refused(pg, tmp_path):
    from deploy_fixtures import make_tiny_model

    other = make_tiny_model(tmp_path / "other", seed=1)
    with pytest.raises(ItsmError, match="not comparable"):
        pg.search("vpn", model=str(other))


# ------------------------------------------------------------------- service and CLI


def test_the_service_answers_over_the_store(tiny_model, incidents_csv, pg_url):
    from fastapi.testclient import TestClient

    from itsm_core.serving.service import ServiceConfig, create_app

    build(str(tiny_model), incidents_csv, store=pg_url, collection="svc")
    client = TestClient(create_app(ServiceConfig(indexes={"svc": "svc"}, store=pg_url)))
    info = client.get("/info").json()
    assert info["store"] == "postgresql" and info["incidents"] == 42
    assert "category" in info["filter_columns"] and info["categories"]
    res = client.post("/similar", json={"text": "vpn keeps dropping", "k": 3,
                                        "filters": {"category": "network"}}).json()
    assert len(res["results"]) == 3
    assert {h["category"].lower() for h in res["results"]} == {"network"}
    assert all("likely_duplicate" in h and h["similarity"] is not None for h in res["results"])
    number = res["results"][0]["number"]
    assert client.get(f"/incidents/{number}").json()["number"] == number
    near = client.get(f"/incidents/{number}/similar", params={"k": 5}).json()["results"]
    assert number not in [h["number"] for h in near] and len(near) == 5
    added = client.post("/incidents", json={"number": "SVC-1", "short_description":
                                            "Laptop fan loud"})
    assert added.status_code == 201 and added.json()["incidents"] == 43
    assert client.get("/incidents/SVC-1").status_code == 200
    assert client.delete("/incidents/SVC-1").json()["incidents"] == 42
    bad = client.post("/similar", json={"text": "vpn", "filters": {"colour": "red"}})
    assert bad.status_code == 400 and "no such column" in bad.json()["error"]
    assert client.get("/incidents/nope").status_code == 404


def test_cli_builds_lists_and_searches_a_store(tiny_model, incidents_csv, pg_url):
    import json

    from typer.testing import CliRunner

    from itsm_core.cli.main import app

    runner = CliRunner(env={"COLUMNS": "250", "NO_COLOR": "1"})
    res = runner.invoke(app, ["index", "build", "--model", str(tiny_model), "--incidents",
                              str(incidents_csv), "--store", pg_url, "--collection", "cli"])
    assert res.exit_code == 0, res.output
    assert "postgresql" in res.output
    res = runner.invoke(app, ["index", "list", "--store", pg_url])
    assert res.exit_code == 0 and "cli" in res.output
    res = runner.invoke(app, ["search", "printer jam", "--store", pg_url, "--collection",
                              "cli", "--json", "-k", "2"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["index"].endswith("#cli") and len(payload["results"][0]["hits"]) == 2
    res = runner.invoke(app, ["index", "build", "--model", str(tiny_model), "--incidents",
                              str(incidents_csv), "--store", pg_url, "--collection", "cli"])
    assert res.exit_code == 2 and "already exists" in res.output
    res = runner.invoke(app, ["search", "vpn", "--store", "postgresql://x@127.0.0.1:1/db"])
    assert res.exit_code == 2 and "cannot connect" in res.output
    assert "Traceback" not in res.output


def test_bm25s_beside_the_store_ranks_like_the_folder(pg, folder, pg_url):
    beside = PgIndex(pg_url, "tiny", lexical="bm25")
    q = "VPN keeps dropping in the meeting room wifi"
    for f in (None, SearchFilter({"category": "network"})):
        a = beside.search(q, k=5, mode="bm25", filter=f)[0]
        b = folder.search(q, k=5, mode="bm25", filter=f)[0]
        b = b[b["score"] > 0]
        assert a["number"].tolist() == b["number"].tolist()[: len(a)] and len(a)
        np.testing.assert_allclose(a["score"], b["score"][: len(a)], rtol=1e-5)
    with pytest.raises(ItsmError, match="unknown lexical"):
        PgIndex(pg_url, "tiny", lexical="tsvector")


def test_cli_publishes_a_folder_index_without_re_encoding(folder, pg_url):
    from typer.testing import CliRunner

    from itsm_core.cli.main import app

    runner = CliRunner(env={"COLUMNS": "250", "NO_COLOR": "1"})
    res = runner.invoke(app, ["index", "publish", str(folder.path), "--store", pg_url,
                              "--collection", "published"])
    assert res.exit_code == 0, res.output
    assert "postgresql" in res.output and "likely duplicate" in res.output
    pub = PgIndex(pg_url, "published")
    assert pub.meta["fusion"] == folder.meta["fusion"] and len(pub) == len(folder)
    assert [h["op"] for h in pub.meta["history"]] == ["build", "publish"]
    res = runner.invoke(app, ["index", "publish", str(folder.path), "--store", pg_url,
                              "--collection", "published"])
    assert res.exit_code == 2 and "already exists" in res.output


def test_a_reader_follows_another_writers_generation(tiny_model, incidents_csv, pg_url):
    """Two processes' worth of handles: the reader's count, manifest and bm25s texts move
    on with the writer's commits (one snapshot per request)."""
    writer = build(str(tiny_model), incidents_csv, store=pg_url, collection="shared")
    reader = PgIndex(pg_url, "shared", lexical="bm25")
    reader._encoder = writer.encoder()
    assert "W1" not in reader.search("badge reader dead", k=1, mode="bm25")[0]["number"].tolist()
    writer.added(pd.DataFrame({"number": ["W1"], "text": ["Badge reader dead at the door"]}),
                 source="test")
    hit = reader.search("badge reader dead", k=1, mode="bm25")[0]
    assert hit["number"][0] == "W1" and len(reader) == 43
    assert reader.meta["generation"] == writer.meta["generation"]
