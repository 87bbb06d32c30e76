"""The on-disk embedding cache: hits, misses, invalidation, bit-identity, bound, concurrency."""

from __future__ import annotations

import multiprocessing as mp
import shutil
from pathlib import Path

import numpy as np
import pytest

from itsm_core.core.errors import ItsmError
from itsm_core.encoders import cache as C

TEXTS = [f"VPN drops every {i} minutes on the hotel wifi, AnyConnect error {i}"
         for i in range(40)] + ["printer offline", "printer offline", "x " * 90]


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("ITSM_EMBED_CACHE", str(folder))
    monkeypatch.delenv("ITSM_EMBED_CACHE_MB", raising=False)
    return folder


def _encoder(model_dir: Path):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cpu")
    return C.wrap_encoder(st, str(model_dir), model_dir)


def test_second_encoder_hits_and_vectors_are_bit_identical(store, tiny_model):
    first = _encoder(tiny_model)
    a = first.encode(TEXTS, normalize_embeddings=True)
    assert first.stats["misses"] == len(set(TEXTS)) and first.stats["hits"] == 0
    second = _encoder(tiny_model)
    b = second.encode(TEXTS, normalize_embeddings=True)
    assert second.stats == {"hits": len(TEXTS), "misses": 0, "probes": 1, "mismatch": 0}
    assert np.array_equal(a, b)
    # a fresh canonical encoding of any text equals its cached vector bit for bit, whatever
    # else is encoded with it
    fresh = second.encode_canonical(TEXTS[5:9] + ["something else entirely"])
    assert np.array_equal(fresh[:4], a[5:9])


def test_only_new_texts_are_encoded(store, tiny_model):
    _encoder(tiny_model).encode(TEXTS[:10], normalize_embeddings=True)
    enc = _encoder(tiny_model)
    out = enc.encode(TEXTS[:12], normalize_embeddings=True)
    assert (enc.stats["hits"], enc.stats["misses"]) == (10, 2)
    assert out.shape == (12, out.shape[1])


def test_cached_equals_plain_sentence_transformers_up_to_rounding(store, tiny_model):
    enc = _encoder(tiny_model)
    cached = enc.encode(TEXTS, normalize_embeddings=True)
    plain = enc.encoder.encode(TEXTS, batch_size=32, normalize_embeddings=True)
    assert np.allclose(cached, plain, atol=1e-5)


def test_normalisation_and_prefix_are_separate_keys(store, tiny_model):
    enc = _encoder(tiny_model)
    raw = enc.encode(TEXTS[:3], normalize_embeddings=False)
    unit = enc.encode(TEXTS[:3], normalize_embeddings=True)
    assert enc.stats["misses"] == 6  # nothing shared between the two
    assert np.allclose(np.linalg.norm(unit, axis=1), 1, atol=1e-5)
    assert np.allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    enc.encode(["query: " + t for t in TEXTS[:3]], normalize_embeddings=True)
    assert enc.stats["misses"] == 9


def test_new_weights_invalidate_the_old_entries(store, tiny_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    before = _encoder(model).encode(TEXTS, normalize_embeddings=True)
    assert C.open_cache().stats()["entries"] == len(set(TEXTS))
    from safetensors.torch import load_file, save_file

    weights = next(model.rglob("model.safetensors"))
    state = load_file(weights)
    name = next(k for k in state if k.endswith("word_embeddings.weight"))
    state[name] = state[name] * 1.5
    save_file(state, weights)
    enc = _encoder(model)
    after = enc.encode(TEXTS, normalize_embeddings=True)
    assert enc.stats["hits"] == 0 and enc.stats["misses"] == len(set(TEXTS))
    assert not np.allclose(before, after)
    stats = C.open_cache().stats()
    assert len(stats["keys"]) == 1 and stats["entries"] == len(set(TEXTS))  # old ones gone


def test_a_vector_that_differs_from_a_fresh_one_is_not_used(store, tiny_model):
    enc = _encoder(tiny_model)
    good = enc.encode(TEXTS[:4], normalize_embeddings=True)
    cache = C.open_cache()
    import sqlite3

    with sqlite3.connect(Path(cache.folder) / cache.FILE) as con:  # corrupt every entry
        con.execute("UPDATE entries SET vec=?", (np.ones_like(good[0]).tobytes(),))
    again = _encoder(tiny_model)
    out = again.encode(TEXTS[:4], normalize_embeddings=True)
    assert again.stats["mismatch"] == 1 and again.stats["misses"] == 4
    assert np.array_equal(out, good)


def test_cache_stays_within_its_bound(store, tiny_model, monkeypatch):
    enc = _encoder(tiny_model)
    dim = enc.encode(TEXTS[:1], normalize_embeddings=True).shape[1]
    monkeypatch.setenv("ITSM_EMBED_CACHE_MB", str((10 * dim * 4 + 1) / 1024 / 1024))
    small = _encoder(tiny_model)
    out = small.encode(TEXTS, normalize_embeddings=True)
    assert out.shape[0] == len(TEXTS)
    stats = C.open_cache().stats()
    assert stats["bytes"] <= stats["max_bytes"] and stats["entries"] == 10


def test_least_recently_used_key_is_evicted_first(store, tiny_model, monkeypatch):
    a = _encoder(tiny_model)
    a.encode(TEXTS[:5], normalize_embeddings=True)
    a.encode(TEXTS[:5], normalize_embeddings=False)  # a second key, used last
    dim = a.encode(TEXTS[:1], normalize_embeddings=True).shape[1]
    monkeypatch.setenv("ITSM_EMBED_CACHE_MB", str((12 * dim * 4 + 1) / 1024 / 1024))
    _encoder(tiny_model).encode(TEXTS[10:17], normalize_embeddings=True)  # 5 + 7 > 5 + 5
    keys = C.open_cache().stats()["keys"]
    assert [k["backend"] for k in keys] == ["torch-fp32"]  # the raw key went, not this one
    assert keys[0]["n"] == 12


def _worker(args: tuple[str, str, int]) -> int:
    import os

    folder, model, start = args
    os.environ["ITSM_EMBED_CACHE"] = folder
    from sentence_transformers import SentenceTransformer

    enc = C.wrap_encoder(SentenceTransformer(model, device="cpu"), model, model)
    enc.encode(TEXTS[start:start + 30], normalize_embeddings=True)
    return enc.stats["misses"]


def test_concurrent_processes_share_the_cache(store, tiny_model):
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        misses = pool.map(_worker, [(str(store), str(tiny_model), 0),
                                    (str(store), str(tiny_model), 10)])
    assert sum(misses) >= len(set(TEXTS[:40]))
    enc = _encoder(tiny_model)
    enc.encode(TEXTS[:40], normalize_embeddings=True)
    assert enc.stats["misses"] == 0


def test_disabled_cache_encodes_every_time(monkeypatch, tiny_model):
    monkeypatch.setenv("ITSM_EMBED_CACHE", "off")
    assert C.open_cache() is None
    enc = _encoder(tiny_model)
    assert enc.key is None
    assert enc.encode(TEXTS[:3], normalize_embeddings=True).shape[0] == 3
    assert enc.stats["hits"] == enc.stats["misses"] == 0


def test_canonical_batches_depend_on_length_only():
    batches = C.canonical_batches([3, 3, 100, 3, 128, 128, 70], limit=128)
    short = next(b for b in batches if 0 in b)
    assert len(short) == C.SHORT_BATCH and set(short) == {0, 1, 3}
    assert [2] in batches and [6] in batches  # long texts alone
    limit = next(b for b in batches if 4 in b)
    assert len(limit) == C.SHORT_BATCH and set(limit) == {4, 5}


@pytest.mark.parametrize("env,value", [("ITSM_EMBED_CACHE_MB", "lots"),
                                       ("ITSM_PRECISION", "fp8")])
def test_bad_settings_say_what_to_do(monkeypatch, env, value):
    monkeypatch.setenv(env, value)
    with pytest.raises(ItsmError) as err:
        C.max_cache_bytes() if env.endswith("MB") else C.precision()
    assert err.value.fix


def test_precision_auto_follows_the_cpu_and_unset_is_the_default(monkeypatch):
    monkeypatch.setenv("ITSM_PRECISION", "auto")
    monkeypatch.setattr(C, "bf16_supported", lambda: True)
    assert C.precision() == "bf16"
    monkeypatch.setattr(C, "bf16_supported", lambda: False)
    assert C.precision() == "fp32"
    monkeypatch.setenv("ITSM_PRECISION", "BF16")
    assert C.precision() == "bf16"
    monkeypatch.delenv("ITSM_PRECISION")
    monkeypatch.setattr(C, "DEFAULT_PRECISION", "fp32")
    assert C.precision() == "fp32"


def test_unwritable_cache_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ItsmError, match="cannot be opened"):
        C.EmbeddingCache(blocker / "sub")


def test_a_broken_cache_file_does_not_stop_the_run(store, tiny_model, caplog):
    enc = _encoder(tiny_model)
    expected = enc.encode_canonical(TEXTS[:5])
    (store / C.EmbeddingCache.FILE).write_bytes(b"this is not a database" * 100)
    for f in store.glob(C.EmbeddingCache.FILE + "-*"):  # WAL / shared memory files
        f.unlink()
    with caplog.at_level("WARNING"):
        out = enc.encode(TEXTS[:5], normalize_embeddings=True)
    assert np.array_equal(out, expected)
    assert enc.stats["failed"] == 1 and "goes on without it" in caplog.text
    assert enc.encode(TEXTS[:2], normalize_embeddings=True).shape[0] == 2  # still encodes


def test_an_unopenable_cache_folder_means_encoding_without_it(tmp_path, monkeypatch,
                                                              tiny_model, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ITSM_EMBED_CACHE", str(blocker / "sub"))
    with caplog.at_level("WARNING"):
        enc = _encoder(tiny_model)
    assert enc.cache is None and "without the cache" in caplog.text
    assert enc.encode(TEXTS[:3], normalize_embeddings=True).shape[0] == 3
