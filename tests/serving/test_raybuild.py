"""Index builds with Ray Data in local mode (a REAL Ray runtime, 2 CPUs): the embeddings
are the in-process build's, in the same order, and go into either store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from itsm_core.core.errors import ItsmError
from itsm_core.serving.index import build_index
from itsm_core.serving.store import Engine, build


@pytest.fixture(scope="module")
def incidents_csv(tmp_path_factory) -> Path:
    from conftest import tiny_frame

    path = tmp_path_factory.mktemp("data") / "incidents.csv"
    tiny_frame().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from itsm_core.serving.raybuild import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_ray_build_equals_the_local_build(ray_local, tiny_model, incidents_csv, tmp_path,
                                          pg_url):
    """Straight into the PostgreSQL store, two actors, several batches each."""
    import psycopg

    local = build_index(str(tiny_model), incidents_csv, tmp_path / "local")
    engine = Engine("ray", batch_size=8, concurrency=2)
    on_ray = build(str(tiny_model), incidents_csv, store=pg_url, collection="ray",
                   engine=engine)
    assert on_ray.meta["engine"]["name"] == "ray" and on_ray.meta["engine"]["concurrency"] == 2
    assert on_ray.meta["fusion"] == local.meta["fusion"]
    with psycopg.connect(pg_url) as conn:
        rows = dict(conn.execute("SELECT number, embedding::text FROM itsm_ray").fetchall())
    stored = np.array([np.array(rows[n].strip("[]").split(","), float)
                       for n in local.incidents["number"]])
    np.testing.assert_allclose(stored, local.embeddings, atol=1e-5)
    hits = on_ray.search("vpn drops", k=5, mode="dense")[0]
    assert hits["number"].tolist() == local.search("vpn drops", k=5, mode="dense")[0][
        "number"].tolist()


def test_engine_options_are_checked():
    with pytest.raises(ItsmError, match="unknown engine"):
        Engine("spark")
    with pytest.raises(ItsmError, match="positive"):
        Engine("ray", concurrency=0)
