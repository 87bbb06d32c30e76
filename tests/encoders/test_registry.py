"""Tests for itsm_core.encoders.registry: registry entries, offline-safe resolution, model
metadata."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from itsm_core.core.errors import ItsmError
from itsm_core.encoders.registry import (
    BERT_LORA_TARGETS,
    MODEL_META_FILE,
    REGISTRY,
    ModelSpec,
    registry_table,
    resolve_spec,
    spec_from_path,
)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------------------- registry


@pytest.mark.parametrize("key", sorted(REGISTRY))
def test_registry_entry_is_complete(key: str) -> None:
    spec = REGISTRY[key]
    assert spec.key == key
    assert spec.hub_id and "/" in spec.hub_id
    assert isinstance(spec.dim, int) and spec.dim > 0
    assert spec.pooling in {"mean", "cls"}
    dims = spec.matryoshka_dims
    assert dims, "every registry model is evaluated at truncated dimensions"
    assert list(dims) == sorted(dims, reverse=True) and len(set(dims)) == len(dims)
    assert max(dims) <= spec.dim and min(dims) > 0
    assert spec.lora_target_modules and all(spec.lora_target_modules)
    assert spec.eval_dims[0] == spec.dim
    assert spec.max_seq_length > 0
    assert spec.path is None  # registry entries are resolved to a path on use only


def test_registry_specifics() -> None:
    nomic = REGISTRY["nomic"]
    assert nomic.query_prefix == "search_query: "
    assert nomic.document_prefix == "search_document: "
    assert nomic.trust_remote_code

    gte = REGISTRY["gte-large"]
    assert gte.trust_remote_code and gte.pooling == "cls"
    assert "qkv_proj" in gte.lora_target_modules
    assert not set(BERT_LORA_TARGETS) & set(gte.lora_target_modules)

    for key in ("uae-large", "bge-base"):
        spec = REGISTRY[key]
        assert set(spec.lora_target_modules) == {"query", "key", "value", "dense"}
        assert spec.query_prefix.strip() and spec.document_prefix == ""
        assert not spec.trust_remote_code

    assert {"q", "k", "v", "o"} <= set(REGISTRY["mpnet"].lora_target_modules)
    assert REGISTRY["minilm"].lora_target_modules == BERT_LORA_TARGETS
    assert REGISTRY["minilm"].packaged and REGISTRY["mpnet"].packaged
    assert REGISTRY["minilm"].eval_dims == (384, 256, 128, 64)
    assert REGISTRY["mpnet"].eval_dims == (768, 512, 256, 128, 64)


def test_registry_table_rows() -> None:
    rows = registry_table()
    assert [r["key"] for r in rows] == list(REGISTRY)
    by_key = {r["key"]: r for r in rows}
    assert by_key["minilm"]["offline"] and not by_key["gte-large"]["offline"]
    assert by_key["nomic"]["prefixes"] and not by_key["minilm"]["prefixes"]
    json.dumps(rows)  # plain JSON


def test_eval_dims_skip_dims_not_below_full() -> None:
    spec = ModelSpec(key="x", hub_id=None, dim=300, matryoshka_dims=(512, 300, 128))
    assert spec.eval_dims == (300, 128)


def test_model_spec_round_trip() -> None:
    for spec in REGISTRY.values():
        d = spec.to_dict()
        assert isinstance(d["matryoshka_dims"], list)
        assert isinstance(d["lora_target_modules"], list)
        back = ModelSpec.from_dict(json.loads(json.dumps(d)))
        assert back == spec
        assert back.to_dict() == d
    custom = replace(REGISTRY["minilm"], path="/some/where", extra={"base_model": "minilm"})
    back = ModelSpec.from_dict({**custom.to_dict(), "unknown_future_field": 1})
    assert back == custom and back.extra == {"base_model": "minilm"}


# ---------------------------------------------------------------------------- resolution


def test_hub_model_offline_fails_fast_with_fix(offline) -> None:
    t0 = time.perf_counter()
    with pytest.raises(ItsmError) as exc:
        resolve_spec("gte-large")
    assert time.perf_counter() - t0 < 5
    msg = str(exc.value)
    assert "not available offline" in msg
    assert "Alibaba-NLP/gte-large-en-v1.5" in msg
    assert "hf download" in msg and "HF_HUB_OFFLINE" in msg  # how to fix


def test_hub_id_of_registry_model_resolves_via_registry(offline) -> None:
    with pytest.raises(ItsmError, match="'nomic'.*not available offline"):
        resolve_spec("nomic-ai/nomic-embed-text-v1.5")


def test_unknown_hub_id_offline(offline) -> None:
    t0 = time.perf_counter()
    with pytest.raises(ItsmError, match="not available offline"):
        resolve_spec("some-org/some-unknown-model")
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize("name", ["/no/such/model/dir", "./no-such-model/x/y", "garbage name!",
                                  "minilm2"])
def test_unknown_names_raise(name: str, offline) -> None:
    with pytest.raises(ItsmError) as exc:
        resolve_spec(name)
    msg = str(exc.value)
    assert "unknown model" in msg
    assert all(k in msg for k in REGISTRY)


def test_folder_without_model_files(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("not a model")
    for spec in (str(tmp_path), tmp_path):
        with pytest.raises(ItsmError, match="modules.json or config.json") as exc:
            resolve_spec(spec)
        assert str(tmp_path) in str(exc.value)


def test_plain_model_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    spec = resolve_spec(str(tmp_path))
    assert spec.path == str(tmp_path) and spec.key == tmp_path.name and spec.hub_id is None


def test_spec_from_path_reads_itsm_metadata(tmp_path: Path) -> None:
    run = tmp_path / "minilm-lora-run1"
    run.mkdir()
    base = replace(REGISTRY["minilm"], extra={"base_model": "minilm"})
    (run / MODEL_META_FILE).write_text(json.dumps({"name": "minilm-itsm-v1",
                                                   "spec": base.to_dict()}))
    spec = spec_from_path(run)
    assert spec.key == "minilm-itsm-v1"
    assert spec.path == str(run)
    assert spec.dim == 384 and spec.matryoshka_dims == (384, 256, 128, 64)
    assert spec.lora_target_modules == BERT_LORA_TARGETS
    assert spec.extra == {"base_model": "minilm"}
    assert resolve_spec(str(run)) == spec  # same through the public entry point
    # without a name the folder name is the key
    (run / MODEL_META_FILE).write_text(json.dumps({"spec": REGISTRY["nomic"].to_dict()}))
    spec = spec_from_path(run)
    assert spec.key == run.name and spec.query_prefix == "search_query: "


@pytest.mark.parametrize("content", ["{not json", '{"name": "x"}'], ids=["bad-json", "no-spec"])
def test_malformed_model_metadata_is_an_itsm_error(tmp_path: Path, content: str) -> None:
    (tmp_path / MODEL_META_FILE).write_text(content)
    with pytest.raises(ItsmError):
        spec_from_path(tmp_path)


# ---------------------------------------------------------------------------- packaged weights


@pytest.mark.weights
def test_resolve_minilm_gives_packaged_path() -> None:
    spec = resolve_spec("minilm")
    path = Path(spec.path)
    assert path.is_dir()
    assert (path / "modules.json").exists() or (path / "config.json").exists()
    assert spec.key == "minilm" and spec.dim == 384
    # the hub id of a packaged model resolves to the same local folder, offline
    assert resolve_spec("sentence-transformers/all-MiniLM-L6-v2").path == spec.path


@pytest.mark.weights
@pytest.mark.slow
def test_mpnet_reassembly_and_load() -> None:
    from itsm_core.encoders.registry import load_sentence_transformer, mpnet_path

    folder = mpnet_path()
    assert (folder / "modules.json").exists()
    assert not list(folder.parent.glob(".mpnet-*"))  # no half-written temp folder left
    assert mpnet_path() == folder  # second call: cached
    model, spec = load_sentence_transformer("mpnet")
    assert spec.dim == 768 and spec.path == str(folder)
    emb = model.encode(["printer jams"], normalize_embeddings=True)
    assert emb.shape == (1, 768)
