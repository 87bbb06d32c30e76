"""The similar-incident service: every endpoint and every bad input, over a tiny index.

API tests use FastAPI's TestClient (in process); one test starts the real `itsm serve`
process on a free loopback port and stops it by its PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from itsm_core.core.errors import ItsmError
from itsm_core.metrics.stats import threshold_for_precision
from itsm_core.serving.index import SearchIndex, build_index
from itsm_core.serving.service import ServiceConfig, check_bind, create_app, is_loopback


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    from conftest import tiny_frame
    from deploy_fixtures import make_tiny_model

    root = tmp_path_factory.mktemp("svc")
    model = make_tiny_model(root / "model")
    df = tiny_frame()
    df["resolution_notes"] = "restarted the " + df["subcategory"].str.lower() + " service"
    df.loc[df.index[:5], "resolution_notes"] = ""
    df.to_csv(root / "incidents.csv", index=False)
    return build_index(str(model), root / "incidents.csv", root / "idx").path


@pytest.fixture
def index_dir(built, tmp_path) -> Path:
    """A private copy: write tests never disturb each other."""
    return Path(shutil.copytree(built, tmp_path / "idx"))


@pytest.fixture
def client(index_dir) -> TestClient:
    return TestClient(create_app(ServiceConfig(indexes={"tiny": index_dir})))


def _json_4xx(res, status: int | None = None) -> dict:
    assert 400 <= res.status_code < 500, res.text
    if status is not None:
        assert res.status_code == status, res.text
    body = res.json()
    assert body.get("error"), body
    assert "Traceback" not in res.text
    return body


# ------------------------------------------------------------------------------ reading


def test_health_and_info(client, index_dir):
    assert client.get("/health").json() == {"status": "ok", "collections": ["tiny"]}
    info = client.get("/info").json()
    assert info["incidents"] == 42 and info["dim"] == 32 and info["generation"] == 1
    assert info["model_spec"] and info["fingerprint"]
    assert {"category", "resolution_notes"} <= set(info["filter_columns"])
    dup = info["duplicates"]
    assert dup["chosen_on"].startswith(("validation split", "not calibrated"))
    if dup["threshold"] is not None:
        assert dup["precision"] >= dup["target_precision"] == 0.9 and 0 < dup["recall"] <= 1
    assert client.get("/docs").status_code == 200
    assert "/similar" in client.get("/openapi.json").json()["paths"]


def test_similar_returns_k_ranked_results(client):
    res = client.post("/similar", json={"text": "VPN tunnel keeps dropping", "k": 5})
    assert res.status_code == 200
    body = res.json()
    hits = body["results"]
    assert len(hits) == 5 and body["mode"] == "hybrid"
    for h in hits:
        assert {"number", "score", "likely_duplicate", "similarity", "short_description",
                "summary", "category", "resolution_notes"} <= set(h)
        assert h["summary"]
        assert "text" not in h
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_fields_instead_of_text_and_every_mode(client):
    for mode in ("hybrid", "dense", "bm25"):
        res = client.post("/similar", json={"short_description": "printer jam",
                                            "description": "paper stuck", "k": 3,
                                            "mode": mode, "dim": 16})
        assert res.status_code == 200 and len(res.json()["results"]) == 3
        assert res.json()["dim"] == 16


def test_threshold_per_request_decides_likely_duplicate(client):
    always = client.post("/similar", json={"text": "vpn", "k": 3, "threshold": -1.0}).json()
    never = client.post("/similar", json={"text": "vpn", "k": 3, "threshold": 1.0}).json()
    assert all(h["likely_duplicate"] is True for h in always["results"])
    assert all(h["likely_duplicate"] is False for h in never["results"])
    assert always["threshold"] == -1.0


def test_filters(client):
    cat = client.post("/similar", json={"text": "it is broken", "k": 20,
                                        "filters": {"category": "network"}}).json()
    assert cat["results"] and {h["category"] for h in cat["results"]} == {"Network"}
    both = client.post("/similar", json={"text": "it is broken", "k": 50,
                                         "filters": {"subcategory": ["VPN", "WiFi"]}}).json()
    assert {h["subcategory"] for h in both["results"]} == {"VPN", "WiFi"}
    done = client.post("/similar", json={"text": "it is broken", "k": 50,
                                         "resolved_only": True}).json()
    assert len(done["results"]) == 37 and all(h["resolution_notes"] for h in done["results"])
    bad = client.post("/similar", json={"text": "x", "filters": {"colour": "red"}})
    assert "category" in _json_4xx(bad, 400)["fix"]


def test_similar_to_an_indexed_incident_excludes_it(client, index_dir):
    number = SearchIndex(index_dir).incidents["number"].iloc[0]
    res = client.get(f"/incidents/{number}/similar", params={"k": 41})
    assert res.status_code == 200
    numbers = [h["number"] for h in res.json()["results"]]
    assert number not in numbers and len(numbers) == 41
    one = client.get(f"/incidents/{number}").json()
    assert one["number"] == number and "resolution_notes" in one
    _json_4xx(client.get("/incidents/NOPE/similar"), 404)
    _json_4xx(client.get("/incidents/NOPE"), 404)


@pytest.mark.parametrize("body", [
    {}, {"text": ""}, {"text": "   "}, {"text": "x", "k": 0}, {"text": "x", "k": 101},
    {"text": "x", "mode": "fuzzy"}, {"text": "x", "unknown": 1}, {"text": "x", "dim": 0},
    {"description": ""}, {"text": 5},
])
def test_bad_similar_requests_get_json_422(client, body):
    _json_4xx(client.post("/similar", json=body), 422)


def test_other_bad_requests(client):
    _json_4xx(client.post("/similar", content=b"not json",
                          headers={"Content-Type": "application/json"}), 422)
    _json_4xx(client.post("/similar", json={"text": "x", "dim": 999}), 400)
    _json_4xx(client.post("/similar", json={"text": "x", "collection": "other"}), 404)
    _json_4xx(client.post("/similar", content=b"{" + b" " * 3_000_000 + b"}",
                          headers={"Content-Type": "application/json"}), 413)
    _json_4xx(client.post("/similar", json={"text": "x" * 20_001}), 400)
    _json_4xx(client.post("/similar", json={"text": "x", "opened_from": "yesterday-ish"}),
              400)


# ------------------------------------------------------------------------------ writing


def test_add_is_durable_and_searchable(client, index_dir):
    new = [{"number": "NEW0001", "short_description": "Badge reader broken at gate 7",
            "description": "the badge reader at the car park gate rejects every card",
            "category": "Facilities", "resolution_notes": "replaced the reader"},
           {"number": "NEW0002", "short_description": "Badge reader offline",
            "category": "Facilities"}]
    res = client.post("/incidents", json={"incidents": new})
    assert res.status_code == 201, res.text
    assert res.json() == {"added": 2, "incidents": 44, "generation": 2}
    # committed before the 201: a fresh load from disk has it
    assert "NEW0001" in set(SearchIndex(index_dir).incidents["number"])
    hits = client.post("/similar", json={"text": "badge reader", "k": 44,
                                         "filters": {"category": "facilities"}}).json()
    assert {h["number"] for h in hits["results"]} == {"NEW0001", "NEW0002"}
    assert client.get("/info").json()["generation"] == 2
    single = client.post("/incidents", json={"number": "NEW0003", "description": "x y z"})
    assert single.status_code == 201 and single.json()["added"] == 1


def test_bad_adds(client, index_dir):
    existing = SearchIndex(index_dir).incidents["number"].iloc[0]
    res = client.post("/incidents", json={"incidents": [{"number": existing,
                                                         "short_description": "again"}]})
    assert "already in the index" in _json_4xx(res, 400)["error"]
    _json_4xx(client.post("/incidents", json={"incidents": []}), 422)
    _json_4xx(client.post("/incidents", json={"number": "N1"}), 422)  # no text
    _json_4xx(client.post("/incidents", json={"short_description": "no number"}), 422)
    assert client.get("/info").json()["generation"] == 1  # nothing was written


def test_delete(client, index_dir):
    number = SearchIndex(index_dir).incidents["number"].iloc[3]
    res = client.delete(f"/incidents/{number}")
    assert res.status_code == 200 and res.json()["incidents"] == 41
    assert number not in set(SearchIndex(index_dir).incidents["number"])
    _json_4xx(client.get(f"/incidents/{number}"), 404)
    _json_4xx(client.delete(f"/incidents/{number}"), 404)


def test_reads_during_writes_see_one_whole_generation(client):
    """While adds run, every response comes from one generation: its hits are all in it."""
    errors: list[str] = []

    def writer() -> None:
        for i in range(4):
            r = client.post("/incidents", json={"number": f"W{i}",
                                                "short_description": f"vpn issue {i}"})
            if r.status_code != 201:
                errors.append(r.text)

    t = threading.Thread(target=writer)
    t.start()
    seen = set()
    while t.is_alive() or len(seen) < 2:
        body = client.post("/similar", json={"text": "vpn issue", "k": 50}).json()
        gen = body["generation"]
        seen.add(gen)
        # generation g holds the 42 originals plus W0..W(g-2)
        assert len(body["results"]) == min(50, 42 + gen - 1)
        if len(seen) > 5:
            break
    t.join()
    final = client.post("/similar", json={"text": "vpn issue", "k": 50}).json()
    assert not errors and final["generation"] == 5 and len(final["results"]) == 46


# ----------------------------------------------------------------------------- security


def test_api_key_is_required_when_configured(index_dir):
    c = TestClient(create_app(ServiceConfig(indexes={"tiny": index_dir}, api_key="s3cret")))
    assert c.get("/health").status_code == 200
    body = _json_4xx(c.post("/similar", json={"text": "vpn"}), 401)
    assert "X-API-Key" in body["fix"]
    _json_4xx(c.post("/similar", json={"text": "vpn"}, headers={"X-API-Key": "wrong"}), 401)
    ok = c.post("/similar", json={"text": "vpn", "k": 2}, headers={"X-API-Key": "s3cret"})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 2


def test_bind_rules():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "key")
    with pytest.raises(ItsmError, match="API key"):
        check_bind("0.0.0.0", None)


def test_cli_refuses_a_public_bind_without_a_key(monkeypatch):
    from typer.testing import CliRunner

    from itsm_core.cli.main import app

    monkeypatch.delenv("ITSM_API_KEY", raising=False)
    res = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert res.exit_code == 2 and "API key" in res.output and "ITSM_API_KEY" in res.output


def test_calibration_reaches_the_target_precision():
    scores = [0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4]
    relevant = [1, 1, 1, 0, 1, 0, 0]
    got = threshold_for_precision(scores, relevant, 0.8)
    assert got["threshold"] == 0.6 and got["precision"] == 0.8 and got["recall"] == 1.0
    assert threshold_for_precision(scores, relevant, 1.0)["threshold"] == 0.8
    assert threshold_for_precision([0.1], [0], 0.9)["threshold"] is None


# ---------------------------------------------------------------------- the real server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_itsm_serve_answers_on_loopback(index_dir):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "itsm_core.cli.main", "serve", "--index",
                             str(index_dir), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "service did not start"
                time.sleep(0.5)
        req = urllib.request.Request(f"{base}/similar", method="POST",
                                     data=json.dumps({"text": "vpn drops", "k": 5}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            hits = json.loads(r.read())["results"]
        assert len(hits) == 5 and all("likely_duplicate" in h for h in hits)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_calibrate_stores_the_threshold_in_the_manifest(index_dir):
    from itsm_core.serving.index import calibrate_duplicates

    found = calibrate_duplicates(index_dir, precision=0.5)
    assert SearchIndex(index_dir).duplicate_threshold() == json.loads(
        json.dumps(found))
    assert found["target_precision"] == 0.5 and found["k"] == 10
    if found["threshold"] is not None:
        assert found["precision"] >= 0.5
    assert SearchIndex(index_dir).meta["generation"] == 1  # not a new generation
