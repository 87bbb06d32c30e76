"""Similar-incident search: a saved index (dense + BM25) and hybrid fusion.

An index is a folder::

    <index>/
      itsm_index.json            # the manifest: model (spec + fingerprint), dim, text
                                 # builder, fusion chosen on VALIDATION, history
      embeddings-0001.npy        # (n, dim) float32, L2-normalised (Matryoshka-truncated)
      incidents-0001.parquet     # number, text and the display columns that exist

The manifest is the commit point: ``itsm index add`` encodes only the new incidents,
writes the next generation of both data files, then atomically replaces the manifest
(:func:`itsm_core.io.atomic_write_json`) and removes the previous generation; a reader
always sees one consistent generation. Queries are refused (:class:`ItsmError`) when they
would be embedded with a model other than the one the index was built with.

Search is exact (one matrix-vector product with numpy, then ``argpartition``): at 50k
incidents x 384 dims that is ~19M multiply-adds per query, a few milliseconds, so an
approximate index (faiss, HNSW) would add a dependency and recall loss for nothing.

**Hybrid** scores fuse BM25 (bm25s, as :class:`~itsm_core.scoring.BM25Scorer`) and dense
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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from itsm_core.errors import ItsmError
from itsm_core.io import (
    atomic_write_json,
    file_lock,
    git_commit,
    new_run_dir,
    sha256_file,
    timestamp,
)

logger = logging.getLogger(__name__)

INDEX_META_FILE = "itsm_index.json"
INDEX_VERSION = 1
DISPLAY_COLUMNS = ("short_description", "title", "category", "subcategory", "topic_group",
                   "service", "assignment_group", "resolution_notes", "opened_at")
WEIGHT_GRID = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 11))
RRF_K = 60
MODES = ("hybrid", "dense", "bm25")


# ----------------------------------------------------------------------------- fusion


def _zscore_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    finite = np.where(np.isfinite(x), x, np.nan)
    mu = np.nanmean(finite, axis=1, keepdims=True)
    sd = np.nanstd(finite, axis=1, keepdims=True)
    return (x - mu) / np.where(sd > 1e-12, sd, 1.0)


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based rank of every column within its row (1 = highest score)."""
    order = np.argsort(-x, axis=1, kind="stable")
    ranks = np.empty_like(order)
    rows = np.arange(x.shape[0])[:, None]
    ranks[rows, order] = np.arange(1, x.shape[1] + 1)[None, :]
    return ranks


@dataclass
class Fusion:
    """How dense and BM25 scores are combined (``weight`` = share of the dense side)."""

    method: str = "weighted"  # "weighted" (z-scored rows) or "rrf"
    weight: float = 0.5
    rrf_k: int = RRF_K
    chosen_on: str = "default"
    table: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.method not in ("weighted", "rrf"):
            raise ItsmError(f"unknown fusion method {self.method!r}", where="--fusion",
                            fix="use 'weighted' or 'rrf'")
        if not 0.0 <= float(self.weight) <= 1.0:
            raise ItsmError(f"fusion weight must lie in [0, 1], got {self.weight}",
                            where="--fusion-weight", fix="e.g. 0.6 (share of the dense score)")

    def fuse(self, dense: np.ndarray, lexical: np.ndarray) -> np.ndarray:
        """Fused scores, rows = queries (higher = more similar)."""
        dense, lexical = np.atleast_2d(dense), np.atleast_2d(lexical)
        w = float(self.weight)
        if self.method == "rrf":
            return (w / (self.rrf_k + _ranks(dense))
                    + (1 - w) / (self.rrf_k + _ranks(lexical))).astype(np.float32)
        return (w * _zscore_rows(dense) + (1 - w) * _zscore_rows(lexical)).astype(np.float32)

    def describe(self) -> str:
        return (f"{self.method} (dense weight {self.weight:g}"
                + (f", k={self.rrf_k}" if self.method == "rrf" else "") + f"; {self.chosen_on})")


def choose_fusion(dense: np.ndarray, lexical: np.ndarray, grades: np.ndarray,
                  self_mask: np.ndarray | None = None, *, metric: str = "ndcg@10",
                  chosen_on: str = "validation") -> Fusion:
    """The fusion (weighted at each weight of :data:`WEIGHT_GRID`, or RRF with equal
    weights) with the best mean ``metric`` on the given (validation!) queries.

    ``self_mask`` marks query/corpus cells of the same incident; they are excluded from
    the ranking after fusion, exactly as evaluate_v2 does.
    """
    from itsm_core import metrics as M

    cands = [Fusion("weighted", w) for w in WEIGHT_GRID] + [Fusion("rrf", 0.5)]
    rows, best, best_v = [], None, -np.inf
    for f in cands:
        s = f.fuse(dense, lexical)
        if self_mask is not None:
            s = np.where(self_mask, -np.inf, s)
        v = float(np.nanmean(M.retrieval_metrics_per_query(s, grades)[metric]))
        rows.append({"method": f.method, "dense_weight": f.weight, metric: round(v, 4)})
        if v > best_v + 1e-9:
            best, best_v = f, v
    assert best is not None
    return replace(best, chosen_on=f"best {metric} on {chosen_on} ({best_v:.4f})", table=rows)


def validation_benchmark(bench):  # noqa: ANN001 - evaluate.Benchmark
    """The benchmark of the same incidents and config with the VALIDATION queries."""
    from itsm_core.evaluate import build_benchmark

    cfg = replace(bench.config, query_split=bench.config.threshold_split)
    try:
        return build_benchmark(bench.incidents_path, labels=cfg.labels or None,
                               links=cfg.links, text_fields=cfg.text_fields, config=cfg)
    except ItsmError as exc:
        raise ItsmError(f"cannot build the validation benchmark to choose the fusion "
                        f"weight: {exc.problem}", where=bench.incidents_path,
                        fix="give the weight explicitly: --model hybrid:<model>@0.6 (dense "
                        "share) or hybrid:<model>@rrf") from exc


def _self_mask(query_ids: Sequence[str], corpus_ids: Sequence[str]) -> np.ndarray:
    return np.asarray(query_ids, dtype=object)[:, None] == np.asarray(
        corpus_ids, dtype=object)[None, :]


class HybridScorer:
    """BM25 + dense fused (see :class:`Fusion`); a :class:`~itsm_core.scoring.Scorer`.

    Spec: ``hybrid:<dense spec>`` (fusion chosen on validation by :meth:`calibrate`),
    ``hybrid:<dense spec>@0.6`` (weighted, dense share 0.6) or ``hybrid:<spec>@rrf``.
    """

    kind = "hybrid"

    def __init__(self, dense, fusion: Fusion | None = None):  # noqa: ANN001 - DenseScorer
        from itsm_core.scoring import BM25Scorer

        self.dense = dense
        self.lexical = BM25Scorer()
        self.fusion = fusion
        self.spec = getattr(dense, "spec", None)
        self.name = f"hybrid-{dense.name}"

    @classmethod
    def from_spec(cls, spec: str, **kwargs: Any) -> HybridScorer:
        from itsm_core.scoring import load_scorer

        rest = spec.split(":", 1)[1].strip()
        fusion = None
        if "@" in rest:
            rest, _, w = rest.rpartition("@")
            if w.strip().lower() == "rrf":
                fusion = Fusion("rrf", 0.5, chosen_on="given")
            else:
                try:
                    fusion = Fusion("weighted", float(w), chosen_on="given")
                except ValueError as exc:
                    raise ItsmError(f"bad fusion weight {w!r}", where=spec,
                                    fix="use hybrid:<model>@0.6 or hybrid:<model>@rrf") from exc
        if not rest or rest.lower() in ("tfidf", "bm25") or rest.startswith("hybrid:"):
            raise ItsmError("hybrid needs a dense model", where=spec,
                            fix="e.g. hybrid:minilm or hybrid:models/<export folder>")
        return cls(load_scorer(rest, **kwargs), fusion)

    @property
    def dims(self) -> tuple[int | None, ...]:
        return self.dense.dims

    def calibrate(self, bench) -> Fusion:  # noqa: ANN001 - evaluate.Benchmark
        """Choose the fusion on the VALIDATION split of ``bench``'s incidents (only when
        none was given); the test queries of ``bench`` are never looked at."""
        if self.fusion is not None:
            return self.fusion
        val = validation_benchmark(bench)
        q = val.texts.loc[val.query_ids].tolist()
        c = val.texts.loc[val.corpus_ids].tolist()
        self.fusion = choose_fusion(self.dense.score_matrix(q, c), self.lexical.score_matrix(q, c),
                                    val.grades, _self_mask(val.query_ids, val.corpus_ids),
                                    chosen_on=f"{val.config.query_split} split")
        logger.info("hybrid fusion: %s", self.fusion.describe())
        return self.fusion

    def _need_fusion(self) -> Fusion:
        if self.fusion is None:
            raise ItsmError("the hybrid scorer has no fusion weight yet", where=self.name,
                            fix="call calibrate(benchmark) (evaluate does) or give one: "
                            "hybrid:<model>@0.6")
        return self.fusion

    def score_matrix(self, queries, corpus, dim=None) -> np.ndarray:
        f = self._need_fusion()
        return f.fuse(self.dense.score_matrix(queries, corpus, dim),
                      self.lexical.score_matrix(queries, corpus))

    def score_pairs(self, a, b, dim=None) -> np.ndarray:
        """Pair score = fused score of ``b`` in ``a``'s ranking over all distinct ``b``
        texts (the normalisation set of a row is the candidate pool, as in retrieval)."""
        ua, ub = list(dict.fromkeys(a)), list(dict.fromkeys(b))
        pa, pb = {t: i for i, t in enumerate(ua)}, {t: i for i, t in enumerate(ub)}
        m = self.score_matrix(ua, ub, dim)
        return np.array([m[pa[x], pb[y]] for x, y in zip(a, b)], dtype=np.float32)


# ----------------------------------------------------------------------------- models


def load_encoder(model: str):
    """(encoder with sentence-transformers ``encode``, spec, fingerprint) of a model spec:
    an export folder / .onnx file, a model folder, a registry key or a hub id."""
    from itsm_core.export import _fingerprint, is_export, load_export
    from itsm_core.models import load_sentence_transformer

    if is_export(model):
        enc = load_export(model)
        return enc, enc.spec, enc.fingerprint
    st, spec = load_sentence_transformer(model)
    return st, spec, _fingerprint(spec.path) or spec.hub_id or spec.key


def _model_arg(model: str) -> str:
    p = Path(model).expanduser()
    return str(p.resolve()) if p.exists() else str(model)


# ----------------------------------------------------------------------------- index


def _load_texts(incidents: str | Path, columns: str | Path | None,
                text_fields: Sequence[str] | None, max_chars_per_field: int | None,
                encoding: str = "utf-8") -> tuple[pd.DataFrame, list[str], int | None]:
    """Incidents (number, text, display columns) via the shared loader and text builder."""
    from itsm_core.data import read_sidecar
    from itsm_core.incidents import load_incidents
    from itsm_core.text import TextBuilder

    path = Path(incidents)
    if not path.exists():
        raise ItsmError("incidents file not found", where=str(path), fix="check the path")
    side = read_sidecar(path)
    if not text_fields:
        text_fields = list(side.text_fields) if side is not None else [
            "short_description", "description"]
        max_chars_per_field = max_chars_per_field or (side.max_chars_per_field if side
                                                      else None)
    df = load_incidents(path, columns, text_fields=text_fields, encoding=encoding)
    builder = TextBuilder(fields=tuple(text_fields), max_chars_per_field=max_chars_per_field)
    show = [c for c in DISPLAY_COLUMNS if c in df.columns
            and (df[c].astype("string").fillna("").str.strip() != "").any()]
    out = df[["number", *show]].copy()
    out.insert(1, "text", builder.build_series(df).to_numpy())
    for c in show:
        out[c] = out[c].astype("string")
    if "split" in df.columns:
        out["split"] = df["split"].astype("string")
    return out.reset_index(drop=True), list(text_fields), max_chars_per_field


def _truncate(emb: np.ndarray, dim: int | None) -> np.ndarray:
    from itsm_core.scoring import DenseScorer

    return np.ascontiguousarray(DenseScorer.truncate(emb, dim), dtype=np.float32)


class SearchIndex:
    """A loaded index: embeddings, incidents, lazily built BM25, the model that built it."""

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

    def matrix(self, dim: int | None = None) -> np.ndarray:
        """Index embeddings truncated to ``dim`` and re-normalised (cached per dim)."""
        d = self._dim(dim)
        if d not in self._by_dim:
            self._by_dim[d] = _truncate(self.embeddings, d)
        return self._by_dim[d]

    # -- lexical -----------------------------------------------------------------------
    def bm25(self):
        if self._bm25 is None:
            import bm25s
            from bm25s.tokenization import Tokenizer

            tok = Tokenizer(stopwords="en")
            ids = tok.tokenize(self.incidents["text"].tolist(), return_as="ids",
                               update_vocab=True, show_progress=False)
            retriever = bm25s.BM25(k1=1.5, b=0.75)
            retriever.index(ids, show_progress=False)
            self._bm25 = (tok, retriever)
        return self._bm25

    def bm25_scores(self, queries: Sequence[str]) -> np.ndarray:
        tok, retriever = self.bm25()
        q_ids = tok.tokenize(list(queries), return_as="ids", update_vocab=False,
                             show_progress=False)
        out = np.zeros((len(queries), len(self)), dtype=np.float32)
        for i, q in enumerate(q_ids):
            if q:
                out[i] = retriever.get_scores(q)
        return out

    # -- search ------------------------------------------------------------------------
    def scores(self, queries: Sequence[str], mode: str = "hybrid",
               dim: int | None = None) -> np.ndarray:
        if mode not in MODES:
            raise ItsmError(f"unknown search mode {mode!r}", where="--mode",
                            fix=f"use one of {list(MODES)}")
        if mode == "bm25":
            return self.bm25_scores(queries)
        dense = self.embed_queries(queries, dim) @ self.matrix(dim).T
        if mode == "dense":
            return dense
        return self.fusion.fuse(dense, self.bm25_scores(queries))

    def search(self, queries: str | Sequence[str], k: int = 10, *, mode: str = "hybrid",
               dim: int | None = None, model: str | None = None) -> list[pd.DataFrame]:
        """Top-``k`` incidents per query: rank, score, number, text, display columns."""
        if k <= 0:
            raise ItsmError("k must be positive", where="-k", fix="e.g. -k 5")
        self.check_model(model)
        single = isinstance(queries, str)
        qs = [queries] if single else list(queries)
        if not qs or any(not str(q).strip() for q in qs):
            raise ItsmError("empty query", where="search", fix="pass the incident text")
        s = self.scores(qs, mode=mode, dim=dim)
        return [self._top(row, k) for row in s]

    def _top(self, row: np.ndarray, k: int) -> pd.DataFrame:
        k = min(k, len(row))
        idx = np.argpartition(-row, k - 1)[:k]
        idx = idx[np.argsort(-row[idx], kind="stable")]
        out = self.incidents.iloc[idx].copy()
        out.insert(0, "score", row[idx].astype(float))
        out.insert(0, "rank", np.arange(1, k + 1))
        return out.reset_index(drop=True)

    # -- incremental add -----------------------------------------------------------------
    def add(self, incidents: str | Path, *, columns: str | Path | None = None,
            skip_existing: bool = False, encoding: str = "utf-8",
            batch_size: int = 32) -> int:
        """Encode and append new incidents (same model, text builder and dim); returns the
        number added. Numbers already in the index are refused (or skipped)."""
        with file_lock(self.path / INDEX_META_FILE):
            fresh = SearchIndex(self.path)  # another writer may have added meanwhile
            txt = fresh.meta["text"]
            new, _, _ = _load_texts(incidents, columns or txt.get("columns"), txt["fields"],
                                    txt.get("max_chars_per_field"), encoding)
            dup = new["number"].isin(set(fresh.incidents["number"]))
            if dup.any() and not skip_existing:
                raise ItsmError(
                    f"{int(dup.sum())} incident number(s) are already in the index, e.g. "
                    f"{new.loc[dup, 'number'].head(5).tolist()}", where=str(incidents),
                    fix="pass --skip-existing to add only the new ones (an edited incident "
                    "needs a rebuild)")
            new = new[~dup].reset_index(drop=True)
            if new.empty:
                return 0
            t0 = time.perf_counter()
            emb = _encode_documents(fresh.encoder(), fresh.meta["model"], new["text"],
                                    fresh.dim, batch_size)
            secs = time.perf_counter() - t0
            both = pd.concat([fresh.incidents, new[[c for c in new.columns
                                                    if c in fresh.incidents.columns]]],
                             ignore_index=True)
            fresh._commit(np.vstack([fresh.embeddings, emb]), both, {
                "op": "add", "source": str(Path(incidents).resolve()),
                "sha256": sha256_file(incidents), "n": len(new), "at": timestamp(),
                "encode_seconds": round(secs, 2)})
        self.__init__(self.path)
        return len(new)

    def _commit(self, emb: np.ndarray, incidents: pd.DataFrame, event: dict) -> None:
        gen = int(self.meta.get("generation", 0)) + 1
        old = dict(self.meta.get("files", {}))
        files = _write_generation(self.path, gen, emb, incidents)
        meta = {**self.meta, "generation": gen, "files": files, "n": len(incidents),
                "history": [*self.meta.get("history", []), event]}
        atomic_write_json(self.path / INDEX_META_FILE, meta)
        for name in old.values():
            if name not in files.values():
                (self.path / name).unlink(missing_ok=True)
        self.meta = meta


def _write_generation(path: Path, gen: int, emb: np.ndarray, incidents: pd.DataFrame
                      ) -> dict[str, str]:
    from itsm_core.io import atomic_write_df

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
    prefix = model_meta.get("document_prefix", "")
    emb = encoder.encode([prefix + t for t in texts.tolist()], batch_size=batch_size,
                         convert_to_numpy=True, normalize_embeddings=True,
                         show_progress_bar=len(texts) > 2000)
    return _truncate(np.asarray(emb, np.float32), dim)


def build_index(model: str, incidents: str | Path, out: str | Path, *,
                columns: str | Path | None = None, text_fields: Sequence[str] | None = None,
                max_chars_per_field: int | None = None, dim: int | None = None,
                fusion: str = "auto", fusion_weight: float | None = None,
                encoding: str = "utf-8", batch_size: int = 32) -> SearchIndex:
    """Encode every incident with ``model`` into a new index folder ``out``.

    ``fusion``: ``auto`` chooses method and weight on the labelled VALIDATION split of the
    file (:func:`choose_fusion`; with no labelled validation split the default equal-weight
    z-score fusion is kept and recorded as such); ``weighted`` / ``rrf`` with
    ``fusion_weight`` fix them.
    """
    out = new_run_dir(out)
    t_all = time.perf_counter()
    df, fields, max_chars = _load_texts(incidents, columns, text_fields, max_chars_per_field,
                                        encoding)
    if df.empty:
        raise ItsmError("no incidents with text to index", where=str(incidents),
                        fix="check --text-fields / --columns")
    encoder, spec, fp = load_encoder(model)
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
    emb = _encode_documents(encoder, model_meta, df["text"], dim, batch_size)
    encode_s = time.perf_counter() - t0
    meta: dict[str, Any] = {
        "version": INDEX_VERSION, "created": timestamp(), "git_commit": git_commit(),
        "model": model_meta, "dim": dim,
        "text": {"fields": fields, "max_chars_per_field": max_chars,
                 "columns": str(columns) if columns else None},
        "source": {"incidents": str(Path(incidents).resolve()),
                   "sha256": sha256_file(incidents)},
        "generation": 0, "files": {}, "n": len(df),
        "fusion": asdict(Fusion(chosen_on="default (not yet chosen)")),
        "history": [],
    }
    idx = _bootstrap(out, meta, emb, df)
    idx._encoder = encoder
    if fusion == "auto" and fusion_weight is None:
        chosen = _fusion_on_validation(idx, incidents, columns, dim)
    else:
        method = "weighted" if fusion == "auto" else fusion
        chosen = Fusion(method, 0.5 if fusion_weight is None else float(fusion_weight),
                        chosen_on="given")
    idx.fusion = chosen
    build_s = time.perf_counter() - t_all
    idx.meta.update({"fusion": asdict(chosen), "history": [{
        "op": "build", "source": meta["source"]["incidents"], "n": len(df), "at": timestamp(),
        "encode_seconds": round(encode_s, 2), "build_seconds": round(build_s, 2),
        "sentences_per_s": round(len(df) / encode_s, 1) if encode_s else None}]})
    atomic_write_json(out / INDEX_META_FILE, idx.meta)
    return idx


def _bootstrap(out: Path, meta: dict, emb: np.ndarray, df: pd.DataFrame) -> SearchIndex:
    files = _write_generation(out, 1, emb, df)
    atomic_write_json(out / INDEX_META_FILE, {**meta, "generation": 1, "files": files})
    return SearchIndex(out)


def _fusion_on_validation(idx: SearchIndex, incidents: str | Path,
                          columns: str | Path | None, dim: int) -> Fusion:
    """Choose the fusion on the labelled validation incidents of the indexed file, using
    the index's own embeddings (nothing is re-encoded); never the test split."""
    from itsm_core.evaluate import BenchmarkConfig, build_benchmark

    txt = idx.meta["text"]
    try:
        val = build_benchmark(incidents, columns=columns, text_fields=txt["fields"],
                              config=BenchmarkConfig(
                                  query_split="validation",
                                  max_chars_per_field=txt["max_chars_per_field"]))
    except ItsmError as exc:
        logger.warning("fusion weight not chosen on validation: %s", exc.problem)
        return Fusion(chosen_on=f"default: no validation benchmark ({exc.problem})")
    if val.split_scheme != "split" or val.config.query_split != "validation":
        return Fusion(chosen_on="default: the file has no labelled validation split")
    pos = {n: i for i, n in enumerate(idx.incidents["number"])}
    if not all(n in pos for n in [*val.query_ids, *val.corpus_ids]):
        return Fusion(chosen_on="default: validation incidents missing from the index")
    q = idx.embeddings[[pos[n] for n in val.query_ids]]
    c = idx.embeddings[[pos[n] for n in val.corpus_ids]]
    from itsm_core.scoring import BM25Scorer

    lex = BM25Scorer().score_matrix(val.texts.loc[val.query_ids].tolist(),
                                    val.texts.loc[val.corpus_ids].tolist())
    return choose_fusion(q @ c.T, lex, val.grades, _self_mask(val.query_ids, val.corpus_ids),
                         chosen_on=f"validation split ({len(val.query_ids)} queries)")


def latest_index(models_dir: str | Path | None = None) -> Path:
    """The newest index under ``models/indexes/`` (folder names start with a timestamp)."""
    from itsm_core.config import MODELS_DIR

    root = Path(models_dir or MODELS_DIR) / "indexes"
    found = sorted(p.parent for p in root.glob(f"*/{INDEX_META_FILE}"))
    if not found:
        raise ItsmError("no search index yet", where=str(root),
                        fix="run `make index` or `itsm index build --model ... "
                        "--incidents ...`, or pass --index")
    return found[-1]


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
