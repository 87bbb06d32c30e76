"""Similar-incident search: a saved index (dense + BM25) and hybrid fusion.

An index is a folder::

    <index>/
      itsm_index.json            # the manifest: model (spec + fingerprint), dim, text
                                 # builder, fusion chosen on VALIDATION, history
      embeddings-0001.npy        # (n, dim) float32, L2-normalised (Matryoshka-truncated)
      incidents-0001.parquet     # number, text and the display columns that exist

The manifest is the commit point: ``itsm index add`` encodes only the new incidents,
writes the next generation of both data files, then atomically replaces the manifest
(:func:`itsm_core.core.io.atomic_write_json`) and removes the previous generation; a reader
always sees one consistent generation. Queries are refused (:class:`ItsmError`) when they
would be embedded with a model other than the one the index was built with.

Search is exact (one matrix-vector product with numpy, then ``argpartition``): at 50k
incidents x 384 dims that is ~19M multiply-adds per query, a few milliseconds, so an
approximate index would add recall loss for nothing; at a million incidents the
PostgreSQL + pgvector store (:mod:`itsm_core.serving.pgstore`, HNSW) is ~20x faster
(``itsm bench store``).

**Hybrid** scores fuse BM25 (bm25s, as :class:`~itsm_core.encoders.scorers.BM25Scorer`) and dense
cosine per query, either by a weighted sum of z-scored rows (``weighted``; z-scores rather
than min-max so that one extreme score, such as an incident matching itself, does not
squash the rest of its row) or by reciprocal rank fusion (``rrf``, k = 60). The method and
the dense weight are chosen on the labelled VALIDATION split (never test) and stored with
the index; :class:`HybridScorer` makes the same fusion a Scorer, so ``itsm evaluate
--model hybrid:<dense spec>`` evaluates it with evaluate_v2 (the weight again chosen on
validation through :meth:`HybridScorer.calibrate`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from itsm_core.core.errors import ItsmError
from itsm_core.core.io import (
    atomic_write_json,
    file_lock,
    git_commit,
    new_run_dir,
    sha256_file,
    timestamp,
)
from itsm_core.encoders.hybrid import Fusion, _self_mask, choose_fusion

logger = logging.getLogger(__name__)

INDEX_META_FILE = "itsm_index.json"
INDEX_VERSION = 1
DISPLAY_COLUMNS = ("short_description", "title", "category", "subcategory", "topic_group",
                   "state", "service", "assignment_group", "resolution_notes", "opened_at")
MODES = ("hybrid", "dense", "bm25")
DUPLICATE_PRECISION = 0.9
"""Precision the likely-duplicate threshold is calibrated for (on validation)."""


# ----------------------------------------------------------------------------- models


def load_encoder(model: str, cache: bool = False):
    """(encoder with sentence-transformers ``encode``, spec, fingerprint) of a model spec:
    an export folder / .onnx file, a model folder, a registry key or a hub id.

    ``cache``: documents of a build go through the on-disk embedding cache; queries do not
    (a lookup per query would only add latency)."""
    from itsm_core.encoders.cache import wrap_encoder
    from itsm_core.encoders.onnx import _fingerprint, is_export, load_export
    from itsm_core.encoders.registry import load_sentence_transformer

    if is_export(model):
        enc = load_export(model)
        return wrap_encoder(enc, str(enc.onnx_path), cache=cache), enc.spec, enc.fingerprint
    st, spec = load_sentence_transformer(model)
    return (wrap_encoder(st, spec.path or spec.key, spec.path, cache=cache), spec,
            _fingerprint(spec.path) or spec.hub_id or spec.key)


def _model_arg(model: str) -> str:
    p = Path(model).expanduser()
    return str(p.resolve()) if p.exists() else str(model)


# ----------------------------------------------------------------------------- index


def _load_texts(incidents: str | Path, columns: str | Path | None,
                text_fields: Sequence[str] | None, max_chars_per_field: int | None,
                encoding: str = "utf-8") -> tuple[pd.DataFrame, list[str], int | None]:
    """Incidents (number, text, display columns) via the shared loader and text builder."""
    from itsm_core.data.corpus import load_corpus

    path = Path(incidents)
    if not path.exists():
        raise ItsmError("incidents file not found", where=str(path), fix="check the path")
    corpus = load_corpus(path, columns, text_fields=text_fields,
                         max_chars_per_field=max_chars_per_field, encoding=encoding)
    df, text_fields, max_chars_per_field = (corpus.incidents, corpus.text_fields,
                                            corpus.max_chars_per_field)
    show = [c for c in DISPLAY_COLUMNS if c in df.columns
            and (df[c].astype("string").fillna("").str.strip() != "").any()]
    out = df[["number", *show]].copy()
    out.insert(1, "text", corpus.texts.to_numpy())
    for c in show:
        out[c] = out[c].astype("string")
    if "split" in df.columns:
        out["split"] = df["split"].astype("string")
    return out.reset_index(drop=True), list(text_fields), max_chars_per_field


def _truncate(emb: np.ndarray, dim: int | None) -> np.ndarray:
    from itsm_core.encoders.scorers import DenseScorer

    return np.ascontiguousarray(DenseScorer.truncate(emb, dim), dtype=np.float32)


def _duplicate_text(found: dict) -> str:
    """The stored likely-duplicate threshold in words (or why there is none)."""
    if found.get("threshold") is None:
        return str(found.get("chosen_on"))
    return (f"dense cosine >= {found['threshold']:.4f}: precision {found['precision']:.3f}, "
            f"recall {found['recall']:.3f} (target {found['target_precision']}; "
            f"{found['chosen_on']})")


class IndexBase:
    """What every store of an index shares: the manifest (``meta``: model, dim, text
    builder, fusion, duplicate threshold, history), the model check and query embedding.

    Stores: :class:`SearchIndex` (the embedded default, a folder of numpy + parquet files)
    and :class:`~itsm_core.serving.pgstore.PgIndex` (PostgreSQL + pgvector). Both answer
    ``search``, ``get``, ``added`` / ``removed`` / ``add`` and ``len``.
    """

    path: Any
    meta: dict
    dim: int
    fusion: Fusion
    _encoder: Any = None


    # -- model -------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.meta["model"]["name"]

    def check_model(self, model: str | None) -> None:
        """Refuse a model other than the index's (compared by weight fingerprint)."""
        if model is None:
            return
        _, spec, fp = load_encoder(model)
        mine = self.meta["model"]
        if fp != mine["fingerprint"] or int(spec.dim) < self.dim:
            raise ItsmError(
                f"the index was built with model {mine['name']!r} ({mine['spec']}), not "
                f"with {model!r}: query embeddings of another model are not comparable",
                where=str(self.path),
                fix="query without --model (the index's own model is used), or build a "
                "new index with this model: itsm index build --model ...")

    def encoder(self):
        if self._encoder is None:
            spec = self.meta["model"]["spec"]
            if not (Path(spec).exists() or not Path(spec).is_absolute()):
                raise ItsmError("the model this index was built with is gone",
                                where=spec, fix="rebuild the index with an existing model")
            enc, _, fp = load_encoder(spec)
            if fp != self.meta["model"]["fingerprint"]:
                raise ItsmError("the model folder changed since the index was built (its "
                                "weights differ)", where=spec,
                                fix="rebuild the index: itsm index build --model ...")
            self._encoder = enc
        return self._encoder

    def embed_queries(self, queries: Sequence[str], dim: int | None = None) -> np.ndarray:
        prefix = self.meta["model"].get("query_prefix", "")
        emb = self.encoder().encode([prefix + q for q in queries], batch_size=32,
                                    convert_to_numpy=True, normalize_embeddings=True,
                                    show_progress_bar=False)
        return _truncate(np.asarray(emb, np.float32), self._dim(dim))

    def _dim(self, dim: int | None) -> int:
        if dim is None:
            return self.dim
        if dim <= 0 or dim > self.dim:
            raise ItsmError(f"dim {dim} is not available in this index (built at "
                            f"{self.dim})", where="--dim",
                            fix=f"choose a dim <= {self.dim} (e.g. 64, 128, 256) or omit it")
        return int(dim)

    def duplicate_threshold(self) -> dict[str, Any]:
        """The likely-duplicate threshold stored with the index (``threshold`` None when it
        could not be calibrated, with the reason in ``chosen_on``)."""
        return self.meta.get("duplicates") or {
            "threshold": None, "chosen_on": "not calibrated (index built before calibration "
            "existed: rebuild it)"}

    def summary(self) -> dict[str, Any]:
        """What this index is, as label -> value (one description for ``itsm index info``
        and the reports): store, model, size, text builder, fusion, the build (encoded at
        how many sentences/s, or embeddings reused from an identical earlier build), the
        likely-duplicate threshold and the number of additions since."""
        m = self.meta
        history = m.get("history", [])
        build = next((h for h in history if h.get("op") == "build"), {})
        reused = m.get("embeddings_reused_from")
        return {
            "index": str(self.path), "store": self.store_kind,
            "model": f"{m['model']['name']} ({m['model']['spec']})",
            "incidents": len(self), "dim": self.dim,
            "embeddings MB": round(len(self) * self.dim * 4 / 2**20, 1),
            "text fields": ",".join(m["text"]["fields"]),
            "build seconds": build.get("build_seconds"),
            "embeddings": (f"reused from {Path(reused).name} (same encode_key: no text "
                           "encoded again)" if reused else
                           f"encoded at {build.get('sentences_per_s')} sentences/s"),
            "fusion": self.fusion.describe(),
            "likely duplicate": _duplicate_text(self.duplicate_threshold()),
            "additions": sum(1 for h in history if h.get("op") == "add"),
        }

    @staticmethod
    def _check_query(queries: str | Sequence[str], k: int, mode: str) -> list[str]:
        if k <= 0:
            raise ItsmError("k must be positive", where="-k", fix="e.g. -k 5")
        if mode not in MODES:
            raise ItsmError(f"unknown search mode {mode!r}", where="--mode",
                            fix=f"use one of {list(MODES)}")
        qs = [queries] if isinstance(queries, str) else list(queries)
        if not qs or any(not str(q).strip() for q in qs):
            raise ItsmError("empty query", where="search", fix="pass the incident text")
        return qs

    def added(self, new: pd.DataFrame, *, source: str, sha256: str | None = None,
              skip_existing: bool = False, batch_size: int = 32) -> tuple[IndexBase, int]:
        raise NotImplementedError

    def add(self, incidents: str | Path, *, columns: str | Path | None = None,
            skip_existing: bool = False, encoding: str = "utf-8",
            batch_size: int = 32) -> int:
        """Encode and append new incidents of a file (same model, text builder and dim);
        returns the number added. Numbers already in the index are refused (or skipped).
        This object becomes the new generation."""
        txt = self.meta["text"]
        new, _, _ = _load_texts(incidents, columns or txt.get("columns"), txt["fields"],
                                txt.get("max_chars_per_field"), encoding)
        nxt, n = self.added(new, source=str(Path(incidents).resolve()),
                            sha256=sha256_file(incidents), skip_existing=skip_existing,
                            batch_size=batch_size)
        self.__dict__.update(nxt.__dict__)
        return n

    def _refuse_duplicates(self, new: pd.DataFrame, dup: pd.Series, source: str) -> None:
        raise ItsmError(
            f"{int(dup.sum())} incident number(s) are already in the index, e.g. "
            f"{new.loc[dup, 'number'].head(5).tolist()}", where=source,
            fix="pass --skip-existing to add only the new ones (an edited incident "
            "needs a rebuild)")


class SearchIndex(IndexBase):
    """The embedded store: a folder with embeddings, incidents, lazily built BM25."""

    store_kind = "folder"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        f = self.path / INDEX_META_FILE
        if not f.exists():
            raise ItsmError("not a search index (no itsm_index.json)", where=str(self.path),
                            fix="build one with `itsm index build --model ... --incidents ...`")
        try:
            self.meta = json.loads(f.read_text(encoding="utf-8"))
            files = self.meta["files"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise ItsmError(f"malformed index manifest ({exc})", where=str(f),
                            fix="rebuild the index") from exc
        self.embeddings = np.load(self.path / files["embeddings"], mmap_mode=None)
        self.incidents = pd.read_parquet(self.path / files["incidents"])
        self.dim = int(self.meta["dim"])
        self.fusion = Fusion(**self.meta["fusion"])
        self._encoder = None
        self._bm25 = None
        self._by_dim: dict[int, np.ndarray] = {self.dim: self.embeddings}

    def __len__(self) -> int:
        return len(self.incidents)

    def matrix(self, dim: int | None = None) -> np.ndarray:
        """Index embeddings truncated to ``dim`` and re-normalised (cached per dim)."""
        d = self._dim(dim)
        if d not in self._by_dim:
            self._by_dim[d] = _truncate(self.embeddings, d)
        return self._by_dim[d]

    # -- lexical -----------------------------------------------------------------------
    def bm25(self):
        if self._bm25 is None:
            from itsm_core.encoders.scorers import bm25_index

            self._bm25 = bm25_index(self.incidents["text"].tolist())
        return self._bm25

    def bm25_scores(self, queries: Sequence[str]) -> np.ndarray:
        from itsm_core.encoders.scorers import bm25_query_scores

        return bm25_query_scores(self.bm25(), queries, len(self))

    # -- search ------------------------------------------------------------------------
    def scores(self, queries: Sequence[str], mode: str = "hybrid",
               dim: int | None = None) -> np.ndarray:
        """Scores of ``queries`` against every indexed incident in ``mode``."""
        return self._scored(queries, mode, dim)[0]

    def _scored(self, queries: Sequence[str], mode: str, dim: int | None,
                need_dense: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(scores in ``mode``, dense cosines or None); the query is embedded once."""
        if mode not in MODES:
            raise ItsmError(f"unknown search mode {mode!r}", where="--mode",
                            fix=f"use one of {list(MODES)}")
        dense = None if mode == "bm25" and not need_dense else (
            self.embed_queries(queries, dim) @ self.matrix(dim).T)
        if mode == "bm25":
            return self.bm25_scores(queries), dense
        if mode == "dense":
            return dense, dense
        return self.fusion.fuse(dense, self.bm25_scores(queries)), dense

    def search(self, queries: str | Sequence[str], k: int = 10, *, mode: str = "hybrid",
               dim: int | None = None, model: str | None = None, similarity: bool = False,
               filter: SearchFilter | None = None) -> list[pd.DataFrame]:  # noqa: A002
        """Top-``k`` incidents per query: rank, score, number, text, display columns.

        Args:
            queries: incident text(s).
            k: hits per query; mode: ``hybrid``, ``dense`` or ``bm25``; dim: Matryoshka dim.
            model: only a check: it must be the index's own model.
            similarity: add ``similarity``, the dense cosine of each hit (what the
                likely-duplicate threshold is calibrated on), whatever the mode.
            filter: a :class:`SearchFilter` (the form every store takes); incidents
                outside it are never returned.
        """
        qs = self._check_query(queries, k, mode)
        self.check_model(model)
        where = None if filter is None else filter.mask(self.incidents)
        s, dense = self._scored(qs, mode, dim, need_dense=similarity)
        if where is not None:
            s = np.where(where[None, :], s, -np.inf)
        return [self._top(row, k, None if dense is None or not similarity else dense[i])
                for i, row in enumerate(s)]

    def get(self, number: str) -> dict[str, Any] | None:
        """One indexed incident (number, text, display columns), or None."""
        hit = self.incidents[self.incidents["number"] == str(number)]
        return None if hit.empty else hit.iloc[0].to_dict()

    def filter_columns(self) -> list[str]:
        """Columns a :class:`SearchFilter` may filter on."""
        return [c for c in self.incidents.columns if c not in ("number", "text", "split")]

    def categories(self, limit: int = 200) -> list[str]:
        """The distinct categories held (for the page's filter), at most ``limit``."""
        if "category" not in self.incidents.columns:
            return []
        return sorted(self.incidents["category"].dropna().astype(str).unique())[:limit]

    def _top(self, row: np.ndarray, k: int, cosine: np.ndarray | None = None) -> pd.DataFrame:
        k = min(k, int(np.isfinite(row).sum()))
        if k <= 0:
            return self.incidents.iloc[:0].assign(rank=[], score=[])
        idx = np.argpartition(-row, k - 1)[:k]
        idx = idx[np.argsort(-row[idx], kind="stable")]
        out = self.incidents.iloc[idx].copy()
        if cosine is not None:
            out.insert(0, "similarity", cosine[idx].astype(float))
        out.insert(0, "score", row[idx].astype(float))
        out.insert(0, "rank", np.arange(1, k + 1))
        return out.reset_index(drop=True)

    # -- generations (copy-on-write) -----------------------------------------------------
    def _derived(self, emb: np.ndarray, incidents: pd.DataFrame, meta: dict) -> SearchIndex:
        """A new in-memory generation sharing this one's encoder; readers holding this
        object keep a consistent (old) view until they let go of it."""
        new = object.__new__(SearchIndex)
        new.__dict__ = {**self.__dict__, "embeddings": emb, "incidents": incidents,
                        "meta": meta, "fusion": Fusion(**meta["fusion"]), "_bm25": None,
                        "_by_dim": {self.dim: emb}}
        return new

    def _latest(self) -> SearchIndex:
        """This object, or the generation on disk when another writer moved it on."""
        on_disk = json.loads((self.path / INDEX_META_FILE).read_text(encoding="utf-8"))
        if on_disk.get("generation") == self.meta.get("generation"):
            return self
        fresh = SearchIndex(self.path)
        fresh._encoder = self._encoder
        return fresh

    def added(self, new: pd.DataFrame, *, source: str, sha256: str | None = None,
              skip_existing: bool = False, batch_size: int = 32) -> tuple[SearchIndex, int]:
        """The next generation with ``new`` incidents (``number``, ``text`` and display
        columns, as :func:`_load_texts` gives them) encoded and appended.

        The generation's files and then the manifest (atomically, the commit point) are
        on disk before this returns: an acknowledged add survives a crash.

        Returns:
            ``(new generation, number added)``; this object is left unchanged.

        Raises:
            ItsmError: numbers already indexed (unless ``skip_existing``).
        """
        with file_lock(self.path / INDEX_META_FILE):
            cur = self._latest()
            dup = new["number"].isin(set(cur.incidents["number"]))
            if dup.any() and not skip_existing:
                self._refuse_duplicates(new, dup, source)
            new = new[~dup].reset_index(drop=True)
            if new.empty:
                return cur, 0
            t0 = time.perf_counter()
            emb = _encode_documents(cur.encoder(), cur.meta["model"], new["text"], cur.dim,
                                    batch_size)
            secs = time.perf_counter() - t0
            both = pd.concat([cur.incidents, new[[c for c in new.columns
                                                  if c in cur.incidents.columns]]],
                             ignore_index=True)
            meta = cur._commit(np.vstack([cur.embeddings, emb]), both, {
                "op": "add", "source": source, "sha256": sha256, "n": len(new),
                "at": timestamp(), "encode_seconds": round(secs, 2)})
            return cur._derived(np.vstack([cur.embeddings, emb]), both, meta), len(new)

    def removed(self, numbers: Sequence[str]) -> tuple[SearchIndex, int]:
        """The next generation without ``numbers`` (committed like :meth:`added`).

        Returns:
            ``(new generation, number removed)``; unknown numbers are not an error here
            (the caller decides), and removing nothing commits nothing.
        """
        with file_lock(self.path / INDEX_META_FILE):
            cur = self._latest()
            drop = cur.incidents["number"].isin(set(map(str, numbers))).to_numpy()
            if not drop.any():
                return cur, 0
            keep = ~drop
            emb = np.ascontiguousarray(cur.embeddings[keep])
            rest = cur.incidents[keep].reset_index(drop=True)
            meta = cur._commit(emb, rest, {"op": "remove", "n": int(drop.sum()),
                                           "numbers": sorted(map(str, numbers))[:100],
                                           "at": timestamp()})
            return cur._derived(emb, rest, meta), int(drop.sum())

    def _commit(self, emb: np.ndarray, incidents: pd.DataFrame, event: dict) -> dict:
        """Write the next generation's files, then its manifest (the commit point); the
        previous generation's files are removed after. Returns the new manifest."""
        gen = int(self.meta.get("generation", 0)) + 1
        old = dict(self.meta.get("files", {}))
        files = _write_generation(self.path, gen, emb, incidents)
        meta = {**self.meta, "generation": gen, "files": files, "n": len(incidents),
                "history": [*self.meta.get("history", []), event]}
        atomic_write_json(self.path / INDEX_META_FILE, meta)
        for name in old.values():
            if name not in files.values():
                (self.path / name).unlink(missing_ok=True)
        return meta


def _write_generation(path: Path, gen: int, emb: np.ndarray, incidents: pd.DataFrame
                      ) -> dict[str, str]:
    from itsm_core.core.io import atomic_write_df

    files = {"embeddings": f"embeddings-{gen:04d}.npy",
             "incidents": f"incidents-{gen:04d}.parquet"}
    tmp = path / f".{files['embeddings']}.tmp"
    with open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(emb, dtype=np.float32))
    tmp.replace(path / files["embeddings"])
    atomic_write_df(path / files["incidents"], incidents)
    return files


def _encode_documents(encoder, model_meta: dict, texts: pd.Series, dim: int,
                      batch_size: int) -> np.ndarray:  # noqa: ANN001
    """Every document's vector. An encoder whose output depends on its batch (dynamic INT8
    ONNX scales activations over the batch) skips the per-text embedding cache, which would
    have to encode it one text per call (measured: 242 vs ~560 sentences/s for MiniLM INT8
    at 128 tokens); such an index is reused whole instead (:func:`_reusable_embeddings`)."""
    prefix = model_meta.get("document_prefix", "")
    inner = getattr(encoder, "encoder", encoder)
    if not getattr(inner, "batch_invariant", True):
        encoder = inner  # length-sorted batches of `batch_size`, as plain encode does
    emb = encoder.encode([prefix + t for t in texts.tolist()], batch_size=batch_size,
                         convert_to_numpy=True, normalize_embeddings=True,
                         show_progress_bar=len(texts) > 2000)
    return _truncate(np.asarray(emb, np.float32), dim)


def encode_key(model_meta: dict, texts: pd.Series, dim: int, batch_size: int,
               backend: str) -> str:
    """What determines an index's embeddings: the model's fingerprint, backend and token
    limit, every text as encoded (in order), the dim, the batch size and the library
    versions. Two builds with the same key produce bit-identical matrices."""
    import hashlib

    from itsm_core.core.compat import version_strings

    h = hashlib.sha256()
    prefix = model_meta.get("document_prefix", "")
    for t in texts.tolist():
        h.update((prefix + t).encode("utf-8"))
        h.update(b"\0")
    torch_threads = None
    try:
        import torch

        torch_threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    blob = {"fingerprint": model_meta.get("fingerprint"), "backend": backend,
            "max_seq_length": model_meta.get("max_seq_length"), "texts": h.hexdigest(),
            "dim": dim, "batch_size": batch_size, "threads": torch_threads,
            "versions": version_strings(("torch", "transformers", "sentence-transformers",
                                         "onnxruntime", "tokenizers", "numpy"))}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def _reusable_embeddings(parent: Path, key: str, n: int) -> tuple[np.ndarray, Path] | None:
    """The embeddings of the newest finished index under ``parent`` built with the same
    :func:`encode_key` and never updated since (generation 1), or None."""
    from itsm_core.runs.store import latest_matching

    found = latest_matching(parent, INDEX_META_FILE, "encode_key", key,
                            where=lambda meta: meta.get("generation") == 1)
    if found is None:
        return None
    try:
        meta = json.loads((found / INDEX_META_FILE).read_text(encoding="utf-8"))
        emb = np.load(found / meta["files"]["embeddings"])
    except (OSError, ValueError, KeyError):
        return None
    return (emb, found) if emb.shape[0] == n else None


@dataclass
class _Built:
    """An index built in memory, before it is written to a store."""

    meta: dict[str, Any]
    incidents: pd.DataFrame
    embeddings: np.ndarray
    encoder: Any = None


EncodeFn = Callable[[str, Any, dict, pd.Series, int], np.ndarray]
"""(model spec, loaded encoder, model manifest, texts, dim) -> L2-normalised embeddings."""


def build_index(model: str, incidents: str | Path, out: str | Path, **options: Any
                ) -> SearchIndex:
    """Encode every incident with ``model`` into a new index folder ``out`` (the embedded
    store); ``options`` as :func:`build_in_memory`."""
    out = new_run_dir(out)
    options.setdefault("reuse_from", out.parent)
    built = build_in_memory(model, incidents, **options)
    idx = _bootstrap(out, built.meta, built.embeddings, built.incidents)
    idx._encoder = built.encoder
    return idx


def build_in_memory(model: str, incidents: str | Path, *,
                    columns: str | Path | None = None,
                    text_fields: Sequence[str] | None = None,
                    max_chars_per_field: int | None = None, dim: int | None = None,
                    fusion: str = "auto", fusion_weight: float | None = None,
                    encoding: str = "utf-8", batch_size: int = 32,
                    duplicate_precision: float = DUPLICATE_PRECISION,
                    encode: EncodeFn | None = None, engine: dict | None = None,
                    reuse_from: str | Path | None = None) -> _Built:
    """Encode every incident with ``model`` and calibrate, in memory: what every store
    writes (:func:`build_index` a folder, ``serving.store`` PostgreSQL).

    The likely-duplicate threshold is calibrated on the same VALIDATION incidents
    (:func:`_duplicates_on_validation`) for ``duplicate_precision`` and stored with the
    index.

    ``fusion``: ``auto`` chooses method and weight on the labelled VALIDATION split of the
    file (:func:`choose_fusion`; with no labelled validation split the default equal-weight
    z-score fusion is kept and recorded as such); ``weighted`` / ``rrf`` with
    ``fusion_weight`` fix them.

    Args:
        model: the model spec that embeds (an export folder, a model folder, a key).
        incidents: the incidents file; out: the new index folder (folder store).
        columns, text_fields, max_chars_per_field, encoding: how texts are read and built
            (defaults: the data set manifest's).
        dim: Matryoshka dim stored (default: full); batch_size: encoding batch.
        encode: how documents are embedded (default: in this process); engine: its
            settings, recorded in the manifest.
        reuse_from: a folder of indexes: when one there was built with the same
            :func:`encode_key` (same weights, backend, texts, dim, batch size, libraries),
            its embeddings are taken instead of encoding again (``ITSM_REUSE_RUNS=0``: never).

    Returns:
        The manifest, incidents, embeddings and the loaded encoder.
    """
    t_all = time.perf_counter()
    df, fields, max_chars = _load_texts(incidents, columns, text_fields, max_chars_per_field,
                                        encoding)
    if df.empty:
        raise ItsmError("no incidents with text to index", where=str(incidents),
                        fix="check --text-fields / --columns")
    encoder, spec, fp = load_encoder(model, cache=True)
    full = int(spec.dim or encoder.get_sentence_embedding_dimension())
    dim = int(dim or full)
    if dim > full or dim <= 0:
        raise ItsmError(f"dim {dim} is not available for {spec.key} ({full}-d)",
                        where="--dim", fix=f"choose a dim <= {full}")
    model_meta = {"spec": _model_arg(model), "name": spec.key, "fingerprint": fp,
                  "full_dim": full, "query_prefix": spec.query_prefix,
                  "document_prefix": spec.document_prefix,
                  "max_seq_length": getattr(encoder, "max_seq_length", None)}
    t0 = time.perf_counter()
    key = reused = None
    if encode is None:
        inner = getattr(encoder, "encoder", encoder)
        backend = (f"onnx-{inner.variant}" if hasattr(inner, "session")
                   else f"torch-{getattr(encoder, 'precision', 'fp32')}")
        key = encode_key(model_meta, df["text"], dim, batch_size, backend)
        from itsm_core.core.config import reuse_runs

        found = _reusable_embeddings(Path(reuse_from), key, len(df)) \
            if reuse_from and reuse_runs() else None
        if found is not None:
            emb, reused = found[0], str(found[1])
            logger.warning("index embeddings reused from %s (same weights, texts and "
                           "settings; ITSM_REUSE_RUNS=0 encodes again)", reused)
        else:
            emb = _encode_documents(encoder, model_meta, df["text"], dim, batch_size)
    else:
        emb = encode(model_meta["spec"], encoder, model_meta, df["text"], dim)
    encode_s = time.perf_counter() - t0
    meta: dict[str, Any] = {
        "version": INDEX_VERSION, "created": timestamp(), "git_commit": git_commit(),
        "model": model_meta, "dim": dim,
        "text": {"fields": fields, "max_chars_per_field": max_chars,
                 "columns": str(columns) if columns else None},
        "source": {"incidents": str(Path(incidents).resolve()),
                   "sha256": sha256_file(incidents)},
        "generation": 1, "files": {}, "n": len(df),
        "engine": engine or {"name": "local", "batch_size": batch_size},
        "encode_key": key, "embeddings_reused_from": reused,
    }
    view = _validation_view(_Built(meta, df, emb), incidents, columns)
    meta["duplicates"] = _duplicates_on_validation(view, duplicate_precision)
    if fusion == "auto" and fusion_weight is None:
        chosen = _fusion_on_validation(view)
    else:
        method = "weighted" if fusion == "auto" else fusion
        chosen = Fusion(method, 0.5 if fusion_weight is None else float(fusion_weight),
                        chosen_on="given")
    build_s = time.perf_counter() - t_all
    meta.update({"fusion": asdict(chosen), "history": [{
        "op": "build", "source": meta["source"]["incidents"], "n": len(df), "at": timestamp(),
        "encode_seconds": round(encode_s, 2), "build_seconds": round(build_s, 2),
        "sentences_per_s": round(len(df) / encode_s, 1) if encode_s and not reused
        else None}]})
    return _Built(meta, df, emb, encoder)


def _bootstrap(out: Path, meta: dict, emb: np.ndarray, df: pd.DataFrame) -> SearchIndex:
    files = _write_generation(out, 1, emb, df)
    atomic_write_json(out / INDEX_META_FILE, {**meta, "generation": 1, "files": files})
    return SearchIndex(out)


@dataclass
class _Validation:
    """The labelled VALIDATION incidents of an indexed file, with their index embeddings
    (nothing re-encoded), or why there are none (``reason``)."""

    bench: Any = None  # evaluation Benchmark with query_split "validation"
    queries: np.ndarray | None = None
    corpus: np.ndarray | None = None
    reason: str = ""


def _validation_view(idx: SearchIndex | _Built, incidents: str | Path,
                     columns: str | Path | None) -> _Validation:
    """What the index may calibrate on: never the test split."""
    from itsm_core.evaluation.benchmark import BenchmarkConfig, build_benchmark

    txt = idx.meta["text"]
    try:
        val = build_benchmark(incidents, columns=columns, text_fields=txt["fields"],
                              config=BenchmarkConfig(
                                  query_split="validation",
                                  max_chars_per_field=txt["max_chars_per_field"]))
    except ItsmError as exc:
        logger.warning("nothing calibrated on validation: %s", exc.problem)
        return _Validation(reason=f"no validation benchmark ({exc.problem})")
    if val.split_scheme != "split" or val.config.query_split != "validation":
        return _Validation(reason="the file has no labelled validation split")
    pos = {n: i for i, n in enumerate(idx.incidents["number"])}
    if not all(n in pos for n in [*val.query_ids, *val.corpus_ids]):
        return _Validation(reason="validation incidents missing from the index")
    return _Validation(val, idx.embeddings[[pos[n] for n in val.query_ids]],
                       idx.embeddings[[pos[n] for n in val.corpus_ids]])


def _duplicates_on_validation(view: _Validation, precision: float, k: int = 10
                              ) -> dict[str, Any]:
    """The dense-cosine threshold above which a validation query's top-``k`` neighbour
    (among validation incidents) is truly relevant at the top grade (same fine label, or a
    linked duplicate) with at least ``precision``. Records the precision and recall
    reached."""
    from itsm_core.metrics.stats import threshold_for_precision

    if view.bench is None:
        return {"threshold": None, "target_precision": precision,
                "chosen_on": f"not calibrated: {view.reason}"}
    val = view.bench
    sims = np.where(_self_mask(val.query_ids, val.corpus_ids), -np.inf,
                    view.queries @ view.corpus.T)
    grades = np.asarray(val.grades.todense() if hasattr(val.grades, "todense")
                        else val.grades)
    top = np.argsort(-sims, axis=1)[:, :k]
    rows = np.arange(len(top))[:, None]
    found = threshold_for_precision(sims[rows, top].ravel(),
                                    (grades[rows, top] >= grades.max()).ravel(), precision)
    where = f"validation split ({len(val.query_ids)} queries, top-{k} neighbours)"
    if found["threshold"] is None:
        where = f"not calibrated: no threshold reaches precision {precision} on the {where}"
    return {**found, "on": "dense cosine", "k": k, "chosen_on": where}


def _fusion_on_validation(view: _Validation) -> Fusion:
    """The fusion with the best validation NDCG@10 (:func:`choose_fusion`)."""
    from itsm_core.encoders.scorers import BM25Scorer

    if view.bench is None:
        return Fusion(chosen_on=f"default: {view.reason}")
    val = view.bench
    lex = BM25Scorer().score_matrix(val.texts.loc[val.query_ids].tolist(),
                                    val.texts.loc[val.corpus_ids].tolist())
    return choose_fusion(view.queries @ view.corpus.T, lex, val.grades,
                         _self_mask(val.query_ids, val.corpus_ids),
                         chosen_on=f"validation split ({len(val.query_ids)} queries)")


def latest_index(models_dir: str | Path | None = None) -> Path:
    """The newest index under ``models/indexes/`` (folder names start with a timestamp)."""
    from itsm_core.core.config import MODELS_DIR
    from itsm_core.runs.store import latest_folder

    root = Path(models_dir or MODELS_DIR) / "indexes"
    found = latest_folder(root, INDEX_META_FILE)
    if found is None:
        raise ItsmError("no search index yet", where=str(root),
                        fix="run `make index` or `itsm index build --model ... "
                        "--incidents ...`, or pass --index")
    return found


def summaries(hits: pd.DataFrame, width: int = 120) -> pd.Series:
    """Per hit: its short description, else its title, else the start of its text."""
    out = pd.Series([""] * len(hits), index=hits.index, dtype=object)
    for col in ("text", "title", "short_description"):  # last wins: most specific first
        if col in hits.columns:
            vals = hits[col].astype("string").fillna("").str.strip()
            out = out.where(vals == "", vals)
    return out.map(lambda s: s if len(s) <= width else s[: width - 1] + "…")


def results_records(results: list[pd.DataFrame], queries: Sequence[str]) -> list[dict]:
    """JSON-ready results: one object per query with its hits."""
    out = []
    for q, df in zip(queries, results):
        hits = json.loads(df.to_json(orient="records", force_ascii=False))
        out.append({"query": q, "hits": hits})
    return out


def build_index_into_models(model: str, incidents: str | Path | None = None,
                            dataset: str = "it_tickets", out: str | Path | None = None,
                            **options: Any) -> SearchIndex:
    """``itsm index build``: a NEW index of an incidents file (default: the bundled
    ``dataset``) under ``models/indexes/<timestamp>_<name>[_<dim>d]``.

    Args:
        model: the model spec that embeds (an export folder, a model folder, a key).
        incidents: the incidents file; dataset: the bundled data set when none is given.
        out: the new index folder (default under ``models/indexes/``).
        **options: :func:`build_index` options (``columns``, ``text_fields``, ``dim``,
            ``fusion``, ``fusion_weight``, ``encoding``).
    """
    from itsm_core.core.config import MODELS_DIR
    from itsm_core.core.io import unique_run_dir
    from itsm_core.data.datasets import processed_path

    path = Path(incidents) if incidents else processed_path(dataset)
    dim = options.get("dim")
    name = (path.stem if incidents else dataset) + (f"_{dim}d" if dim else "")
    target = out or unique_run_dir(MODELS_DIR / "indexes", name)
    return build_index(model, path, target, **options)


def open_index(index: str | Path | None = None) -> SearchIndex:
    """The index at ``index``, or the newest under ``models/indexes/``."""
    return SearchIndex(index or latest_index())


def search_payload(idx: SearchIndex, queries: Sequence[str], results: list[pd.DataFrame],
                   mode: str, dim: int | None) -> dict[str, Any]:
    """``itsm search --json``: index, model, mode, dim and the hits of every query."""
    return {"index": str(idx.path), "model": idx.model_name, "mode": mode,
            "dim": dim or idx.dim, "results": results_records(results, queries)}


RESOLVED_STATES = ("resolved", "closed", "cancelled", "canceled")
"""States that count as resolved for ``resolved_only`` (ServiceNow's wording)."""


def filter_mask(incidents: pd.DataFrame, filters: dict[str, Any] | None = None, *,
                resolved_only: bool = False, opened_from: str | None = None,
                opened_to: str | None = None) -> np.ndarray | None:
    """Boolean mask of the index rows that pass the filters (None: no filter at all).

    Args:
        incidents: the index's incident table.
        filters: ``{column: value or [values]}``: exact, case-insensitive matches on any
            column the index holds (category, assignment_group, service, state, …).
        resolved_only: only incidents whose ``state`` is resolved / closed, or that
            carry resolution notes when the index has no state.
        opened_from, opened_to: an inclusive ``opened_at`` range (ISO dates or times).

    Raises:
        ItsmError: a filter on a column the index does not hold (listing those it has),
            or an unparsable date.
    """
    if not filters and not resolved_only and not opened_from and not opened_to:
        return None
    mask = np.ones(len(incidents), dtype=bool)
    allowed = [c for c in incidents.columns if c not in ("text", "split")]
    for col, wanted in (filters or {}).items():
        if col not in allowed:
            raise ItsmError(f"cannot filter on {col!r}: the index has no such column",
                            where="filters", fix=f"filter on one of {allowed}")
        values = {str(v).strip().lower() for v in (wanted if isinstance(wanted, list)
                                                    else [wanted])}
        mask &= incidents[col].astype("string").str.strip().str.lower().isin(values) \
            .fillna(False).to_numpy()
    if resolved_only:
        if "state" in incidents.columns:
            mask &= incidents["state"].astype("string").str.strip().str.lower().isin(
                RESOLVED_STATES).fillna(False).to_numpy()
        elif "resolution_notes" in incidents.columns:
            mask &= (incidents["resolution_notes"].astype("string").fillna("")
                     .str.strip() != "").to_numpy()
        else:
            raise ItsmError("resolved_only needs a state or resolution_notes column",
                            where="resolved_only", fix="drop the filter for this index")
    if opened_from or opened_to:
        if "opened_at" not in incidents.columns:
            raise ItsmError("the index has no opened_at column", where="opened_from/opened_to",
                            fix="drop the date filter for this index")
        opened = pd.to_datetime(incidents["opened_at"], errors="coerce", utc=True)
        for bound, keep in ((opened_from, lambda o, b: o >= b), (opened_to, lambda o, b: o <= b)):
            if bound:
                mask &= keep(opened, utc_bound(bound)).fillna(False).to_numpy()
    return mask


def utc_bound(bound: str) -> pd.Timestamp:
    """An ``opened_from`` / ``opened_to`` value as a UTC timestamp (naive = UTC), or a
    clear error. Shared by every store's date filter."""
    try:
        b = pd.Timestamp(bound)
    except ValueError as exc:
        raise ItsmError(f"not a date: {bound!r}", where="opened_from/opened_to",
                        fix="use an ISO date such as 2026-11-30") from exc
    return b.tz_localize("UTC") if b.tzinfo is None else b.tz_convert("UTC")


def calibrate_duplicates(index: str | Path | None = None,
                         precision: float = DUPLICATE_PRECISION) -> dict[str, Any]:
    """(Re-)calibrate an index's likely-duplicate threshold on the VALIDATION incidents of
    the file it was built from (its own embeddings; nothing is re-encoded) and store it in
    the manifest (atomically, under the index lock). For indexes built before the
    threshold existed, or to choose another precision.

    Returns:
        The stored calibration (threshold, precision and recall reached, counts).
    """
    folder = Path(index) if index else latest_index()
    with file_lock(folder / INDEX_META_FILE):
        idx = SearchIndex(folder)
        found = _duplicates_on_validation(_validation_view(
            idx, idx.meta["source"]["incidents"], idx.meta["text"].get("columns")), precision)
        atomic_write_json(folder / INDEX_META_FILE, {**idx.meta, "duplicates": found})
    return found


@dataclass
class SearchFilter:
    """Which incidents a search may return, in a form every store applies: the folder
    index as a row mask (:meth:`mask`), PostgreSQL as a ``WHERE`` clause.

    Attributes:
        columns: ``{column: value or [values]}``, exact case-insensitive matches.
        resolved_only, opened_from, opened_to: as :func:`filter_mask`.
        exclude: incident numbers never returned (e.g. the query incident itself).
        numbers: when set, only these incidents (e.g. one split's, for an evaluation).
    """

    columns: dict[str, Any] | None = None
    resolved_only: bool = False
    opened_from: str | None = None
    opened_to: str | None = None
    exclude: Sequence[str] = ()
    numbers: Sequence[str] | None = None

    def mask(self, incidents: pd.DataFrame) -> np.ndarray | None:
        """Boolean mask over ``incidents`` rows (None: everything passes)."""
        mask = filter_mask(incidents, self.columns, resolved_only=self.resolved_only,
                           opened_from=self.opened_from, opened_to=self.opened_to)
        if not self.exclude and self.numbers is None:
            return mask
        mask = np.ones(len(incidents), bool) if mask is None else mask.copy()
        numbers = incidents["number"].astype(str)
        if self.exclude:
            mask &= ~numbers.isin(set(map(str, self.exclude))).to_numpy()
        if self.numbers is not None:
            mask &= numbers.isin(set(map(str, self.numbers))).to_numpy()
        return mask
