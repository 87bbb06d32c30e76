"""One on-disk embedding cache for every stage that encodes, and the encoder that uses it.

The benchmark, the diagnostic, the ablation's validation passes, the export checks, the
index and the reports all encode the same texts with the same models; a re-run encodes them
all again. :class:`CachedEncoder` wraps any encoder with the sentence-transformers
``encode`` signature (a ``SentenceTransformer`` or an ONNX export) and looks every text up
first, keyed by

- the model's **fingerprint** — SHA-256 over every file of its folder (weights, configs,
  tokenizer, pooling), or the ONNX file's SHA-256 — so new weights are a new key and the
  entries of the old weights of the same model are deleted on first use;
- the **backend** (``torch-fp32``, ``torch-bf16``, ``onnx-int8`` …), the token limit, the
  normalisation, the torch thread count and the library versions;
- the SHA-256 of the **text as encoded** (any query / document prefix included).

**Bit-identical or not used.** A transformer's output for one text changes in the last
bits with the batch it is encoded in (kernel choice depends on the batch's shape; padding
changes the shape). So the cached encoder encodes every miss *canonically*: texts are
grouped by their exact token count (no padding at all) and run in batches whose size
depends on that length alone (short lengths: :data:`SHORT_BATCH` rows, the last batch filled
up with repeats; long lengths: one text per call, which is also the fastest way for long
texts on a CPU). Dynamic INT8 ONNX graphs scale activations over the whole batch, so their
texts are always encoded one per call (``batch_invariant = False`` on the encoder). A
text's vector is then a function of the text, the weights and the backend only. Every
call that hits the cache re-encodes :attr:`CachedEncoder.probe` of the hits canonically
and compares the bits; on any difference the key's entries are dropped
and everything is encoded again (``mismatch`` in :attr:`CachedEncoder.stats`).

**Storage** is one SQLite file (WAL, busy timeout: safe for concurrent runs and Ray
actors), bounded in size (:data:`DEFAULT_MAX_MB`, ``$ITSM_EMBED_CACHE_MB``); when full, the
least recently used keys go first. ``diskcache`` was not used because it has no bulk get /
set (the index reads ~50k vectors per call) and writes on every read for its LRU.

Environment: ``ITSM_EMBED_CACHE`` = a folder for the cache file, or ``off`` / ``0`` to
disable it (default ``$ITSM_CACHE/embeddings``); ``ITSM_PRECISION`` = ``auto`` (default:
bf16 where native), ``fp32`` or ``bf16`` (torch autocast on CPUs with AVX-512 BF16 / AMX;
measured in ``itsm bench encode``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from itsm_core.core.compat import version_strings
from itsm_core.core.config import CACHE_DIR
from itsm_core.core.errors import ItsmError
from itsm_core.core.io import sha256_file

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
"""Bumped whenever the canonical encoding or the key changes (old entries then miss)."""
DEFAULT_MAX_MB = 4096
SHORT_BATCH = 16
"""Rows per canonical batch for texts shorter than :data:`LONG_TOKENS`."""
LONG_TOKENS = 64
"""From this many tokens on, texts are encoded one per call (no padding, measured fastest
on 2 cores: 41 vs 36 gitbugs texts/s for MiniLM fp32), except at the model's token limit,
where texts are plentiful and batches of :data:`SHORT_BATCH` pay off."""
PRECISIONS = ("fp32", "bf16")
_OFF = {"0", "off", "false", "no", "none"}
_CHUNK = 500  # SQLite host parameters per bulk query


# ----------------------------------------------------------------------------- settings


def cache_dir() -> Path | None:
    """Folder of the cache file, or None when ``ITSM_EMBED_CACHE`` disables the cache."""
    env = os.environ.get("ITSM_EMBED_CACHE", "").strip()
    if env.lower() in _OFF:
        return None
    return Path(env).expanduser() if env else CACHE_DIR / "embeddings"


def max_cache_bytes() -> int:
    """Size bound of the cache (``$ITSM_EMBED_CACHE_MB``, default :data:`DEFAULT_MAX_MB`)."""
    raw = os.environ.get("ITSM_EMBED_CACHE_MB", "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_MAX_MB
    except ValueError as exc:
        raise ItsmError(f"ITSM_EMBED_CACHE_MB={raw!r} is not a number",
                        where="environment", fix="set a size in MB, e.g. 4096") from exc
    return int(mb * 1024 * 1024)


def bf16_supported() -> bool:
    """True on CPUs with native bf16 arithmetic (AVX-512 BF16 or AMX), where torch's bf16
    autocast is fast; elsewhere it is emulated and slower than fp32."""
    from itsm_core.core.compat import cpu_has

    return cpu_has("avx512_bf16", "amx_bf16")


DEFAULT_PRECISION = "auto"
"""What an unset ``ITSM_PRECISION`` means: bf16 autocast where the CPU has native bf16.
Chosen on validation (README "bf16 by default"): zero-shot MiniLM / MPNet and the default
fine-tune moved by at most 0.007 NDCG@10 / MRR@10 on it_tickets validation and the gitbugs
train + validation links, and no WiSE-FT or checkpoint choice changed."""


def precision() -> str:
    """Torch inference precision: ``$ITSM_PRECISION`` — ``fp32``, ``bf16`` or ``auto``
    (bf16 where :func:`bf16_supported`, else fp32); unset = :data:`DEFAULT_PRECISION`."""
    value = (os.environ.get("ITSM_PRECISION", "").strip().lower() or DEFAULT_PRECISION)
    if value == "auto":
        return "bf16" if bf16_supported() else "fp32"
    if value not in PRECISIONS:
        raise ItsmError(f"ITSM_PRECISION={value!r} is not supported", where="environment",
                        fix=f"use one of {', '.join((*PRECISIONS, 'auto'))}")
    return value


# ----------------------------------------------------------------------------- keys


def _text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def folder_fingerprint(path: str | Path) -> str:
    """SHA-256 over the relative names and SHA-256s of every file below ``path`` (a model
    folder: weights, configs, tokenizer, pooling) or of the file itself.

    Hashing ~440 MB of MPNet weights takes about a second; callers memoise it with
    :meth:`EmbeddingCache.fingerprint`.
    """
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file() and ".cache" not in x.parts):
        h.update(str(f.relative_to(p)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def _stat_token(path: Path) -> str:
    files = [path] if path.is_file() else sorted(
        x for x in path.rglob("*") if x.is_file() and ".cache" not in x.parts)
    return hashlib.sha256(json.dumps(
        [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]).encode()
    ).hexdigest()


def _versions() -> dict[str, str]:
    return version_strings(("torch", "transformers", "sentence-transformers", "onnxruntime",
                            "tokenizers"))


@dataclass(frozen=True)
class CacheKey:
    """What, besides the text, determines an embedding.

    Attributes:
        fingerprint: content hash of the weights (:func:`folder_fingerprint`).
        source: where the model lives (path or spec) — entries of an older fingerprint of
            the same source and backend are deleted when a new fingerprint appears.
        backend: ``torch-fp32``, ``torch-bf16``, ``onnx-int8``, ``onnx-fp32`` …
        max_seq_length: token limit; threads: intra-op threads (kernels may split work
            differently with another count).
    """

    fingerprint: str
    source: str
    backend: str
    max_seq_length: int | None
    threads: int
    versions: dict[str, str] = field(default_factory=_versions, hash=False)

    @property
    def namespace(self) -> str:
        d = asdict(self)
        d.pop("source")
        d["cache_version"] = CACHE_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:32]


# ----------------------------------------------------------------------------- storage


class EmbeddingCache:
    """The SQLite store: ``(namespace, text hash) -> float32 vector``, size-bounded (LRU by
    namespace, then oldest entries), safe for concurrent processes.

    Args:
        folder: where ``embeddings.sqlite`` lives (created).
        max_bytes: size bound of the stored vectors.
    """

    FILE = "embeddings.sqlite"

    def __init__(self, folder: str | Path, max_bytes: int | None = None):
        self.folder = Path(folder)
        self.max_bytes = int(max_bytes if max_bytes is not None else max_cache_bytes())
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._create()
        except (OSError, sqlite3.Error) as exc:
            raise ItsmError(f"the embedding cache cannot be opened ({exc})",
                            where=str(self.folder / self.FILE),
                            fix="check the folder's permissions / free space, point "
                            "ITSM_EMBED_CACHE at another folder, or set "
                            "ITSM_EMBED_CACHE=off") from exc

    def _create(self, attempts: int = 8) -> None:
        """Tables and WAL mode (both persist in the file). Two processes creating the file at
        once can see "database is locked" without the busy timeout applying (switching the
        journal mode takes the file exclusively), so creation is retried with back-off."""
        for attempt in range(attempts):
            try:
                with self._connect() as con:
                    # before the first table exists: evicted pages go back to the file system
                    con.execute("PRAGMA auto_vacuum=INCREMENTAL")
                    con.execute("PRAGMA journal_mode=WAL")
                    con.executescript("""
                        CREATE TABLE IF NOT EXISTS entries (
                            ns TEXT NOT NULL, key BLOB NOT NULL, vec BLOB NOT NULL,
                            PRIMARY KEY (ns, key)) WITHOUT ROWID;
                        CREATE TABLE IF NOT EXISTS namespaces (
                            ns TEXT PRIMARY KEY, source TEXT, backend TEXT, fingerprint TEXT,
                            dim INTEGER, n INTEGER DEFAULT 0, bytes INTEGER DEFAULT 0,
                            used REAL, info TEXT);
                        CREATE TABLE IF NOT EXISTS fingerprints (
                            path TEXT PRIMARY KEY, token TEXT, fingerprint TEXT);
                    """)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.05 * 2 ** attempt)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.folder / self.FILE, timeout=60, isolation_level=None)
        try:
            con.execute("PRAGMA synchronous=NORMAL")
            yield con
        finally:
            con.close()

    # -- fingerprints -------------------------------------------------------------------

    def fingerprint(self, path: str | Path) -> str:
        """:func:`folder_fingerprint`, memoised by the files' names, sizes and mtimes."""
        p = Path(path).resolve()
        token = _stat_token(p)
        with self._connect() as con:
            row = con.execute("SELECT token, fingerprint FROM fingerprints WHERE path=?",
                              (str(p),)).fetchone()
            if row and row[0] == token:
                return row[1]
            fp = folder_fingerprint(p)
            con.execute("INSERT OR REPLACE INTO fingerprints VALUES (?, ?, ?)",
                        (str(p), token, fp))
        return fp

    # -- entries ------------------------------------------------------------------------

    def get(self, key: CacheKey, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        """Stored vectors of the text hashes ``keys`` (missing ones absent)."""
        ns = key.namespace
        out: dict[bytes, np.ndarray] = {}
        uniq = list(dict.fromkeys(keys))
        with self._connect() as con:
            for s in range(0, len(uniq), _CHUNK):
                part = uniq[s:s + _CHUNK]
                rows = con.execute(
                    f"SELECT key, vec FROM entries WHERE ns=? AND key IN "
                    f"({','.join('?' * len(part))})", (ns, *part)).fetchall()
                out.update((k, np.frombuffer(v, dtype=np.float32)) for k, v in rows)
            if out:
                con.execute("UPDATE namespaces SET used=? WHERE ns=?", (time.time(), ns))
        return out

    def put(self, key: CacheKey, items: dict[bytes, np.ndarray]) -> None:
        """Store vectors, drop the entries of older weights of the same source and backend,
        then evict least recently used keys until the cache fits its bound."""
        if not items:
            return
        ns = key.namespace
        rows = [(ns, k, np.ascontiguousarray(v, dtype=np.float32).tobytes())
                for k, v in items.items()]
        dim = len(next(iter(items.values())))
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                stale = [r[0] for r in con.execute(
                    "SELECT ns FROM namespaces WHERE source=? AND backend=? AND "
                    "fingerprint<>?", (key.source, key.backend, key.fingerprint))]
                for old in stale:
                    self._drop(con, old)
                con.execute(
                    "INSERT OR IGNORE INTO namespaces (ns, source, backend, fingerprint, "
                    "dim, used, info) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (ns, key.source, key.backend, key.fingerprint, dim, time.time(),
                     json.dumps(asdict(key))))
                before = con.total_changes
                con.executemany("INSERT OR IGNORE INTO entries VALUES (?, ?, ?)", rows)
                added = con.total_changes - before
                con.execute("UPDATE namespaces SET n=n+?, bytes=bytes+?, used=? WHERE ns=?",
                            (added, added * dim * 4, time.time(), ns))
                evicted = self._evict(con, keep=ns)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            if evicted or stale:
                con.execute("PRAGMA incremental_vacuum")

    def drop(self, key: CacheKey) -> None:
        """Delete every entry of ``key``."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            self._drop(con, key.namespace)
            con.execute("COMMIT")

    @staticmethod
    def _drop(con: sqlite3.Connection, ns: str) -> None:
        con.execute("DELETE FROM entries WHERE ns=?", (ns,))
        con.execute("DELETE FROM namespaces WHERE ns=?", (ns,))

    def _evict(self, con: sqlite3.Connection, keep: str) -> bool:
        """Drop least recently used keys (then the oldest entries of ``keep``) until the
        stored vectors fit the bound; True when anything was deleted."""
        total = con.execute("SELECT COALESCE(SUM(bytes), 0) FROM namespaces").fetchone()[0]
        if total <= self.max_bytes:
            return False
        for ns, size in con.execute(
                "SELECT ns, bytes FROM namespaces WHERE ns<>? ORDER BY used", (keep,)
        ).fetchall():
            if total <= self.max_bytes:
                return True
            self._drop(con, ns)
            total -= size
        if total > self.max_bytes:  # the key being written alone is over the bound
            n, size = con.execute("SELECT n, bytes FROM namespaces WHERE ns=?",
                                  (keep,)).fetchone()
            per = size / max(n, 1)
            excess = int(np.ceil((total - self.max_bytes) / max(per, 1)))
            con.execute("DELETE FROM entries WHERE ns=? AND key IN (SELECT key FROM "
                        "entries WHERE ns=? LIMIT ?)", (keep, keep, excess))
            con.execute("UPDATE namespaces SET n=n-?, bytes=bytes-? WHERE ns=?",
                        (excess, int(excess * per), keep))
        return True

    def stats(self) -> dict[str, Any]:
        """Keys, entries and stored bytes (for ``itsm cache`` and tests)."""
        with self._connect() as con:
            rows = con.execute("SELECT source, backend, n, bytes, used FROM namespaces "
                               "ORDER BY used DESC").fetchall()
        return {"file": str(self.folder / self.FILE), "max_bytes": self.max_bytes,
                "bytes": int(sum(r[3] for r in rows)), "entries": int(sum(r[2] for r in rows)),
                "keys": [{"source": r[0], "backend": r[1], "n": r[2], "bytes": r[3],
                          "used": r[4]} for r in rows]}

    def clear(self) -> None:
        """Delete every entry (the file stays)."""
        with self._connect() as con:
            con.execute("DELETE FROM entries")
            con.execute("DELETE FROM namespaces")
            con.execute("VACUUM")


def open_cache() -> EmbeddingCache | None:
    """The cache configured by the environment, or None when it is disabled."""
    folder = cache_dir()
    return EmbeddingCache(folder) if folder is not None else None


# ----------------------------------------------------------------------------- encoder


def _token_lengths(encoder: Any, texts: Sequence[str]) -> list[int]:
    """Token count of each text as the encoder will see it (after truncation)."""
    tok = getattr(encoder, "tokenizer", None)
    if hasattr(tok, "encode_batch"):  # a `tokenizers` tokenizer (ONNX export) truncates
        return [len(e.ids) for e in tok.encode_batch(list(texts))]
    limit = getattr(encoder, "max_seq_length", None) or 512
    ids = tok([t.strip() for t in texts], truncation=True, max_length=int(limit),
              add_special_tokens=True)["input_ids"]
    return [len(x) for x in ids]


def canonical_batches(lengths: Sequence[int], limit: int | None,
                      rows: int = SHORT_BATCH) -> list[list[int]]:
    """Index batches whose shape depends on each text alone: one exact token length per
    batch (no padding), :data:`SHORT_BATCH` rows for short texts and texts at the limit
    (the last batch of a length filled up with repeats of its last index), one row for the
    others.

    Args:
        lengths: token count per text; limit: the model's token limit.
        rows: rows per short batch; 1 for encoders whose output depends on the other rows
            of a batch even without padding (dynamic INT8 scales activations per batch).

    Returns:
        Batches of indices into ``lengths`` (a filled-up batch repeats an index).
    """
    groups: dict[int, list[int]] = defaultdict(list)
    for i, n in enumerate(lengths):
        groups[int(n)].append(i)
    batches = []
    for n in sorted(groups):
        idx = groups[n]
        if rows > 1 and (n < LONG_TOKENS or (limit and n >= limit)):
            for s in range(0, len(idx), rows):
                part = idx[s:s + rows]
                batches.append(part + [part[-1]] * (rows - len(part)))
        else:
            batches.extend([i] for i in idx)
    return batches


class CachedEncoder:
    """An encoder (``encode`` like sentence-transformers) behind the embedding cache.

    Attributes other than ``encode`` are the wrapped encoder's (``tokenizer``,
    ``max_seq_length``, ``get_sentence_embedding_dimension`` …). ``stats`` counts ``hits``,
    ``misses``, ``probes`` and ``mismatch`` over the encoder's life.

    Args:
        encoder: a ``SentenceTransformer`` or an :class:`~itsm_core.encoders.onnx.OnnxEncoder`.
        key: the cache key (see :func:`cache_key`); cache: the store (None: no caching).
        precision: ``fp32`` or ``bf16`` (torch autocast; torch encoders only).
        probe: cache hits re-encoded and compared bit for bit per call.
        canonical: without a cache, still encode in canonical batches (what
            ``itsm bench encode`` times as "length-bucketed").
    """

    def __init__(self, encoder: Any, key: CacheKey | None, cache: EmbeddingCache | None,
                 precision: str = "fp32", probe: int = 1, canonical: bool = False):
        self.encoder = encoder
        self.key = key
        self.cache = cache if key is not None else None
        self.precision = precision
        self.probe = int(probe)
        self.canonical = canonical
        self.stats = {"hits": 0, "misses": 0, "probes": 0, "mismatch": 0}

    def __getattr__(self, name: str) -> Any:
        if "encoder" not in self.__dict__:  # during unpickling / copying
            raise AttributeError(name)
        return getattr(self.__dict__["encoder"], name)

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        if self.precision == "bf16" and not hasattr(self.encoder, "session"):
            import torch

            with torch.autocast("cpu", dtype=torch.bfloat16):
                yield
        else:
            yield

    def _raw(self, texts: list[str], batch_size: int, normalize: bool,
             progress: bool = False) -> np.ndarray:
        with self._autocast():
            emb = self.encoder.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                      normalize_embeddings=normalize,
                                      show_progress_bar=progress)
        return np.asarray(emb, dtype=np.float32)

    def encode_canonical(self, texts: Sequence[str], normalize: bool = True,
                         progress: bool = False) -> np.ndarray:
        """Embeddings that depend on each text alone (see :func:`canonical_batches`)."""
        texts = list(texts)
        out = None
        batches = canonical_batches(
            _token_lengths(self.encoder, texts), getattr(self.encoder, "max_seq_length", None),
            SHORT_BATCH if getattr(self.encoder, "batch_invariant", True) else 1)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="encode", unit="text")
        for b in batches:
            emb = self._raw([texts[i] for i in b], len(b), normalize)
            if out is None:
                out = np.zeros((len(texts), emb.shape[1]), np.float32)
            out[b] = emb
            if bar is not None:
                bar.update(len(set(b)))
        if bar is not None:
            bar.close()
        return out if out is not None else np.zeros((0, 0), np.float32)

    def encode(self, sentences: str | Sequence[str], batch_size: int = 32,
               convert_to_numpy: bool = True, normalize_embeddings: bool = False,
               show_progress_bar: bool = False, **kwargs: Any) -> np.ndarray:
        """sentence-transformers' ``encode``; texts already in the cache are not encoded.

        Calls with other options (``truncate_dim``, prompts, tensors) bypass the cache.
        """
        single = isinstance(sentences, str)
        texts = [sentences] if single else [str(s) for s in sentences]
        if self.canonical and self.cache is None and texts and convert_to_numpy \
                and not kwargs:
            out = self.encode_canonical(texts, bool(normalize_embeddings), show_progress_bar)
            return out[0] if single else out
        if kwargs or not convert_to_numpy or self.cache is None or not texts:
            with self._autocast():
                return self.encoder.encode(sentences, batch_size=batch_size,
                                           convert_to_numpy=convert_to_numpy,
                                           normalize_embeddings=normalize_embeddings,
                                           show_progress_bar=show_progress_bar, **kwargs)
        out = self._cached(texts, bool(normalize_embeddings), show_progress_bar)
        return out[0] if single else out

    def _cached(self, texts: list[str], normalize: bool, progress: bool) -> np.ndarray:
        key = self.key if normalize else _unnormalised(self.key)
        keys = [_text_key(t) for t in texts]
        try:
            found = self.cache.get(key, keys)
        except sqlite3.Error as exc:  # a broken cache must not stop a long run
            self._give_up(exc)
            return self.encode_canonical(texts, normalize, progress and len(texts) > 256)
        if found and self.probe > 0:
            found = self._verified(key, texts, keys, found, normalize)
            if self.cache is None:  # the drop after a mismatch failed
                return self.encode_canonical(texts, normalize, progress and len(texts) > 256)
        todo = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in found))
        self.stats["hits"] += len(texts) - sum(k not in found for k in keys)
        self.stats["misses"] += len(todo)
        if todo:
            emb = self.encode_canonical(todo, normalize, progress and len(todo) > 256)
            new = {_text_key(t): e for t, e in zip(todo, emb)}
            try:
                self.cache.put(key, new)
            except sqlite3.Error as exc:
                self._give_up(exc)
            found.update(new)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def _give_up(self, exc: Exception) -> None:
        """Stop using a cache that fails (disk full, a lock held past the timeout, a
        damaged file): warn once and go on encoding — vectors stay canonical."""
        logger.warning("embedding cache %s failed (%s: %s); this run goes on without it. "
                       "Fix: free disk space, `itsm cache --clear`, or ITSM_EMBED_CACHE=off",
                       self.cache.folder if self.cache else "?", type(exc).__name__, exc)
        self.cache = None
        self.stats["failed"] = 1

    def _verified(self, key: CacheKey, texts: list[str], keys: list[bytes],
                  found: dict[bytes, np.ndarray], normalize: bool) -> dict[bytes, np.ndarray]:
        hit = [i for i, k in enumerate(keys) if k in found]
        pick = np.random.default_rng(len(texts)).choice(
            hit, size=min(self.probe, len(hit)), replace=False)
        fresh = self.encode_canonical([texts[i] for i in pick], normalize)
        self.stats["probes"] += len(pick)
        if all(np.array_equal(found[keys[i]], f) for i, f in zip(pick, fresh)):
            return found
        self.stats["mismatch"] += 1
        logger.warning("embedding cache: a cached vector of %s (%s) differs from a fresh "
                       "encoding; its entries are dropped and the texts encoded again",
                       key.source, key.backend)
        try:
            self.cache.drop(key)
        except sqlite3.Error as exc:
            self._give_up(exc)
        return {}


def _unnormalised(key: CacheKey) -> CacheKey:
    return CacheKey(key.fingerprint, key.source, key.backend + "-raw", key.max_seq_length,
                    key.threads, key.versions)


def cache_key(fingerprint: str | None, source: str, backend: str,
              max_seq_length: int | None) -> CacheKey | None:
    """The key of an encoder, or None when it has no fingerprint (nothing is cached)."""
    if not fingerprint:
        return None
    import torch

    return CacheKey(fingerprint=fingerprint, source=source, backend=backend,
                    max_seq_length=int(max_seq_length) if max_seq_length else None,
                    threads=int(torch.get_num_threads()))


def wrap_encoder(encoder: Any, source: str, path: str | Path | None = None, *,
                 cache: bool = True, prec: str | None = None) -> CachedEncoder:
    """Any loaded encoder behind the cache (and, for torch, at the configured precision).

    Args:
        encoder: a ``SentenceTransformer`` or an ONNX export's encoder (keyed by its ONNX
            file's SHA-256); an already wrapped encoder is returned as it is.
        source: what identifies the model (spec / path), for dropping stale weights.
        path: a torch model's folder (fingerprinted; None, e.g. a hub id: not cached).
        cache: False = precision only, nothing cached (query encoding, timing).
        prec: torch precision (default :func:`precision`).

    Returns:
        The :class:`CachedEncoder`.
    """
    if isinstance(encoder, CachedEncoder):
        return encoder
    try:
        store = open_cache() if cache else None
    except ItsmError as exc:  # an unusable cache costs speed, never the run
        logger.warning("%s: %s — encoding without the cache", exc.where, exc.problem)
        store = None
    limit = getattr(encoder, "max_seq_length", None)
    if hasattr(encoder, "session"):  # an ONNX export: its file hash is the fingerprint
        key = cache_key(encoder.fingerprint if store else None, str(source),
                        f"onnx-{encoder.variant}", limit)
        return CachedEncoder(encoder, key, store)
    prec = prec or precision()
    fp = store.fingerprint(path) if store is not None and path and Path(path).exists() \
        else None
    return CachedEncoder(encoder, cache_key(fp, str(source), f"torch-{prec}", limit), store,
                         precision=prec)
