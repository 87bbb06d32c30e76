"""Two-stage retrieval: a retriever's top-k candidates re-scored by a cross-encoder.

A bi-encoder embeds each incident alone; a cross-encoder reads the query and a candidate
together, so it can tell "the same problem" from "the same words" — at the price of one
transformer pass per (query, candidate) pair. The usual answer is two stages: the
retriever ranks the whole corpus, the cross-encoder re-orders its top ``k``.

:class:`RerankScorer` (spec ``rerank:<cross-encoder>@<retriever>[#k[,w]]``) is that
pipeline as a :class:`~itsm_core.encoders.scorers.Scorer`, so evaluate_v2, the diagnostic,
search and the service all take it:

* ``score_matrix``: the top ``k`` of each row (by the retriever) get the re-ranked score,
  placed above every other candidate; the rest keep the retriever's order below.
* ``score_pairs``: the re-ranked score of the pair (the pair tasks of evaluate_v2 and the
  adversarial diagnostic judge exactly what the ranking uses).
* The re-ranked score is ``(1 - w) * retriever + w * cross-encoder`` — score
  interpolation, the usual way to keep what the first stage already ranks well; ``w = 1``
  is the cross-encoder alone.
* :meth:`RerankScorer.calibrate` chooses ``k`` and ``w`` on the VALIDATION queries (best
  NDCG@10; ties go to the smaller, faster ``k``, then to the larger ``w``) unless the spec
  gives them (``#k`` alone keeps ``w = 1``).

The cross-encoder is a sentence-transformers ``CrossEncoder`` folder (``itsm rerank
train``) or its INT8 ONNX export (:mod:`itsm_core.encoders.onnx`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from itsm_core.core.errors import ItsmError
from itsm_core.metrics import stats as M

logger = logging.getLogger(__name__)

K_GRID = (5, 10, 20, 30)
"""Candidate counts tried on validation. A cross-encoder reads one pair per candidate
(~40 pairs/s for MiniLM at ~100 tokens on 2 CPU cores), so the grid stops where the cost
of a query passes a few seconds; the latency bench also reports k = 100."""

WEIGHT_GRID = (1.0, 0.75, 0.5, 0.25, 0.1)
"""Cross-encoder weights ``w`` tried on validation (with every ``k``). The dense
retrievers' cosine and the cross-encoder's probability share a 0-1-ish scale, so a fixed
linear mix is meaningful; for a lexical retriever ``w`` absorbs the scale. The grid goes
down to 0.1 because that was best on it_tickets validation for MiniLM cross-encoders over
minilm-ft (the probabilities spread over (0, 1), the cosines of one top k far less)."""

CALIBRATION_QUERIES = 200
"""Validation queries (seeded sample) the choice of ``k`` is made on: the cross-encoder
reads ``queries x max(K_GRID)`` pairs once, every ``k`` reuses them."""

CE_META_FILE = "itsm_reranker.json"
"""Written next to a trained cross-encoder: base model, training data, recipe, choice."""

CE_EXPORT_FILE = "itsm_reranker_export.json"
"""Marks a cross-encoder's ONNX export folder (``itsm export --reranker``)."""

CE_ONNX_FILES = {"fp32": "reranker_fp32.onnx", "int8": "reranker_int8.onnx"}


def parse_rerank_spec(spec: str) -> tuple[str, str, int | None, float | None]:
    """``rerank:<cross-encoder>@<retriever>[#k[,w]]`` → (cross-encoder, retriever spec, k,
    w).

    The retriever may itself be any spec (``hybrid:minilm@0.6`` included): the split is at
    the FIRST ``@``, and ``#k`` (optionally ``,w``, the cross-encoder's weight in (0, 1]) is
    read off the end.
    """
    rest = spec.split(":", 1)[1].strip()
    ce, sep, retriever = rest.partition("@")
    k: int | None = None
    w: float | None = None
    if "#" in retriever:
        retriever, _, k_text = retriever.rpartition("#")
        k_text, comma, w_text = k_text.partition(",")
        try:
            k = int(k_text)
            w = float(w_text) if comma else None
        except ValueError as exc:
            raise ItsmError(f"bad candidate count / weight {k_text + comma + w_text!r}",
                            where=spec, fix="use rerank:<cross-encoder>@<retriever>#30 "
                            "or #30,0.5 (k, and the cross-encoder's weight)") from exc
        if k < 1:
            raise ItsmError("the candidate count must be at least 1", where=spec,
                            fix="e.g. rerank:<cross-encoder>@<retriever>#30")
        if w is not None and not 0.0 < w <= 1.0:
            raise ItsmError(f"the cross-encoder's weight must be in (0, 1], not {w}",
                            where=spec, fix="e.g. rerank:<cross-encoder>@<retriever>#30,0.5")
    ce, retriever = ce.strip(), retriever.strip()
    if not sep or not ce or not retriever:
        raise ItsmError("a re-ranking spec needs a cross-encoder and a retriever",
                        where=spec, fix="e.g. rerank:models/rerankers/<run>/model@minilm "
                        "(optionally #k, the candidates re-scored, and ,w, the "
                        "cross-encoder's weight; default: both chosen on validation)")
    if retriever.lower().startswith("rerank:"):
        raise ItsmError("a re-ranker cannot retrieve for another re-ranker", where=spec,
                        fix="rerank:<cross-encoder>@<retriever> with a bi-encoder, hybrid or "
                        "lexical retriever after '@'")
    return ce, retriever, k, w


def format_rerank_spec(cross_encoder: str | Path, retriever: str, k: int,
                       weight: float = 1.0) -> str:
    """The spec :func:`parse_rerank_spec` reads back: ``rerank:<ce>@<retriever>#k,w``."""
    return f"rerank:{cross_encoder}@{retriever}#{int(k)},{float(weight):g}"


class OnnxCrossEncoder:
    """A cross-encoder's ONNX export with the ``CrossEncoder.predict`` signature.

    Pairs are tokenized together by the exported fast tokenizer (truncated to the export's
    ``max_length``), sorted by length and batched with per-batch padding; the score is the
    sigmoid of the one logit, as ``CrossEncoder.predict`` returns it.
    """

    def __init__(self, path: str | Path, variant: str | None = None,
                 threads: int | None = None):
        import json

        from itsm_core.encoders.onnx import cpu_session, fast_tokenizer

        p = Path(path)
        if p.suffix == ".onnx":
            variant = variant or next((v for v, f in CE_ONNX_FILES.items() if f == p.name),
                                      None)
            p = p.parent
        meta_file = p / CE_EXPORT_FILE
        try:
            self.meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ItsmError(f"not a readable re-ranker export ({type(exc).__name__})",
                            where=str(meta_file),
                            fix="re-run `itsm export --reranker <model folder>`") from exc
        self.variant = variant or "int8"
        if self.variant not in CE_ONNX_FILES:
            raise ItsmError(f"unknown export variant {self.variant!r}", where=str(path),
                            fix=f"use one of {sorted(CE_ONNX_FILES)}")
        self.path, self.name = p, str(self.meta.get("name", p.name))
        self.onnx_path = p / CE_ONNX_FILES[self.variant]
        tok_file = p / "tokenizer" / "tokenizer.json"
        if not self.onnx_path.exists() or not tok_file.exists():
            raise ItsmError("the re-ranker export is incomplete", where=str(p),
                            fix="re-run `itsm export --reranker <model folder>`")
        self.max_length = int(self.meta["max_length"])
        self.tokenizer = fast_tokenizer(tok_file, self.max_length)
        self.input_names = list(self.meta["input_names"])
        self.session = cpu_session(self.onnx_path, threads)

    def predict(self, pairs: Sequence[Sequence[str]], batch_size: int = 32,
                show_progress_bar: bool = False, **_: Any) -> np.ndarray:
        """Scores in (0, 1) of each (query, candidate) pair."""
        out = np.zeros(len(pairs), dtype=np.float32)
        if not len(pairs):
            return out
        encs = self.tokenizer.encode_batch([(str(a).strip(), str(b).strip())
                                            for a, b in pairs])
        order = np.argsort([len(e.ids) for e in encs], kind="stable")
        starts = range(0, len(pairs), max(1, int(batch_size)))
        if show_progress_bar:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="onnx re-rank")
        for s in starts:
            idx = order[s:s + batch_size]
            width = max(1, max(len(encs[j].ids) for j in idx))
            feeds = {n: np.zeros((len(idx), width), dtype=np.int64)
                     for n in ("input_ids", "attention_mask", "token_type_ids")}
            for r, j in enumerate(idx):
                e, n = encs[j], len(encs[j].ids)
                feeds["input_ids"][r, :n] = e.ids
                feeds["attention_mask"][r, :n] = 1
                feeds["token_type_ids"][r, :n] = e.type_ids
            logits = self.session.run(["logits"], {k: feeds[k] for k in self.input_names})[0]
            out[idx] = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64).reshape(-1)))
        return out


def is_reranker_export(path: str | Path) -> bool:
    """True for a re-ranker export folder (or one of its ``.onnx`` files)."""
    p = Path(str(path)).expanduser()
    return ((p.parent if p.suffix == ".onnx" else p) / CE_EXPORT_FILE).is_file()


def load_cross_encoder(path: str | Path, *, max_length: int | None = None,
                       device: str | None = None):
    """A sentence-transformers ``CrossEncoder`` from a local folder (offline; no hub), or
    the INT8 (default) / fp32 ONNX one of a re-ranker export.

    Raises:
        ItsmError: the folder does not exist or holds no cross-encoder.
    """
    if is_reranker_export(path):
        return OnnxCrossEncoder(path)
    path = Path(path).expanduser()
    if not (path / "config.json").exists():
        raise ItsmError("not a cross-encoder folder (no config.json)", where=str(path),
                        fix="train one with `itsm rerank` and pass its model/ folder")
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(path), max_length=max_length, device=device or "cpu",
                        local_files_only=True)


def rerank_rows(base: np.ndarray, order: np.ndarray, ce_top: np.ndarray, k: int,
                weight: float = 1.0) -> np.ndarray:
    """Scores where each row's first ``k`` candidates of ``order`` carry the re-ranked score
    ``(1 - weight) * retriever + weight * cross-encoder`` above every other candidate,
    which keep the retriever's order.

    Args:
        base: retriever scores, (queries, corpus).
        order: each row's candidates by falling retriever score (at least ``k`` columns).
        ce_top: cross-encoder scores of those candidates, same shape as ``order``.
        k: how many candidates are re-scored.
        weight: the cross-encoder's weight (1: its score alone decides the top ``k``).
    """
    base = np.asarray(base, dtype=np.float64)
    finite = np.where(np.isfinite(base), base, np.nan)
    rowmax = np.nanmax(np.where(np.isnan(finite), -np.inf, finite), axis=1, keepdims=True)
    rowmax = np.where(np.isfinite(rowmax), rowmax, 0.0)
    out = base - rowmax - 1.0  # every candidate <= -1, in the retriever's order
    top = order[:, :k]
    mixed = fuse(np.take_along_axis(base, top, axis=1),
                 np.asarray(ce_top, dtype=np.float64)[:, :k], weight)
    lifted = mixed - mixed.min(axis=1, keepdims=True) + 1.0  # >= 1: above all the others
    np.put_along_axis(out, top, lifted, axis=1)
    return out.astype(np.float32)


def fuse(retriever: np.ndarray, cross: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * retriever + weight * cross`` (the cross-encoder alone at 1, with
    no retriever score read; a non-finite retriever score counts as 0)."""
    cross = np.asarray(cross, dtype=np.float64)
    if weight >= 1.0:
        return cross
    r = np.asarray(retriever, dtype=np.float64)
    return (1.0 - weight) * np.where(np.isfinite(r), r, 0.0) + weight * cross


@dataclass
class KChoice:
    """The candidate count and cross-encoder weight in use, and how they were chosen."""

    k: int
    chosen_on: str = "given"
    table: list[dict[str, Any]] = field(default_factory=list)
    weight: float = 1.0

    def describe(self) -> str:
        w = "" if self.weight >= 1.0 else f", cross-encoder weight {self.weight:g}"
        return f"top-{self.k} re-ranked{w} ({self.chosen_on})"


class RerankScorer:
    """Retriever + cross-encoder re-ranking of its top ``k``; a
    :class:`~itsm_core.encoders.scorers.Scorer` (see the module docstring).

    Args:
        retriever: the first-stage scorer (dense, hybrid or lexical).
        cross_encoder: anything with ``predict(pairs, batch_size=…, show_progress_bar=…)``
            (a sentence-transformers ``CrossEncoder`` or the INT8 ONNX one).
        k: candidates re-scored per query (None: chosen by :meth:`calibrate`).
        weight: the cross-encoder's weight in the re-ranked score (None: 1 with a given
            ``k``, else chosen by :meth:`calibrate` with ``k``).
        name: the cross-encoder's name in the scorer's name.
    """

    kind = "rerank"

    def __init__(self, retriever, cross_encoder, k: int | None = None,  # noqa: ANN001
                 name: str = "cross-encoder", batch_size: int = 32,
                 show_progress: bool = True, weight: float | None = None):
        self.retriever = retriever
        self.cross_encoder = cross_encoder
        self.choice = KChoice(k, weight=1.0 if weight is None else float(weight)) if k \
            else None
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.spec = getattr(retriever, "spec", None)
        self.name = f"rerank-{name}@{retriever.name}"
        self._cache: dict[tuple[str, str], float] = {}

    @property
    def dims(self) -> tuple[int | None, ...]:
        return (None,)  # the retriever at full dimension; a cross-encoder has no dims

    @property
    def k(self) -> int:
        """The candidates re-scored per query."""
        return self._chosen().k

    @property
    def weight(self) -> float:
        """The cross-encoder's weight in the re-ranked score."""
        return self._chosen().weight

    def _chosen(self) -> KChoice:
        if self.choice is None:
            raise ItsmError("the re-ranker has no candidate count yet", where=self.name,
                            fix="call calibrate(validation) (evaluate does) or give one: "
                            "rerank:<cross-encoder>@<retriever>#30")
        return self.choice

    def cross_scores(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Cross-encoder score of every pair (each distinct pair read once)."""
        todo = list(dict.fromkeys((x, y) for x, y in zip(a, b) if (x, y) not in self._cache))
        # longest first, so each batch pads to similar lengths (and the progress bar's
        # first estimate is the pessimistic one)
        todo.sort(key=lambda p: len(p[0]) + len(p[1]), reverse=True)
        if todo:
            scores = self.cross_encoder.predict(
                [list(p) for p in todo], batch_size=self.batch_size,
                show_progress_bar=self.show_progress and len(todo) > self.batch_size)
            self._cache.update(zip(todo, np.asarray(scores, dtype=np.float64).ravel()))
        return np.array([self._cache[(x, y)] for x, y in zip(a, b)], dtype=np.float32)

    def _candidates(self, queries: Sequence[str], corpus: Sequence[str], k: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(retriever scores, top-k order per row, cross-encoder scores of that order)."""
        base = np.asarray(self.retriever.score_matrix(queries, corpus), dtype=np.float32)
        k = min(k, base.shape[1])
        part = np.argpartition(-base, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(
            part, np.argsort(-np.take_along_axis(base, part, axis=1), axis=1, kind="stable"),
            axis=1)
        qs = [queries[i] for i in range(len(queries)) for _ in range(k)]
        cs = [corpus[j] for j in order.ravel()]
        ce = self.cross_scores(qs, cs).reshape(order.shape)
        return base, order, ce

    def score_matrix(self, queries, corpus, dim=None) -> np.ndarray:
        queries, corpus = list(queries), list(corpus)
        if not queries or not corpus:
            return np.zeros((len(queries), len(corpus)), np.float32)
        base, order, ce = self._candidates(queries, corpus, self.k)
        return rerank_rows(base, order, ce, order.shape[1], self.weight)

    def score_pairs(self, a, b, dim=None) -> np.ndarray:
        a, b = list(a), list(b)
        ce = self.cross_scores(a, b)
        w = self.weight if self.choice is not None else 1.0
        if w >= 1.0:
            return ce
        return fuse(self.retriever.score_pairs(a, b), ce, w).astype(np.float32)

    def calibrate(self, validation: Callable[[], Any], *, grid: Sequence[int] = K_GRID,
                  weights: Sequence[float] = WEIGHT_GRID,
                  n_queries: int = CALIBRATION_QUERIES, metric: str = "ndcg@10",
                  seed: int = 42) -> KChoice:
        """Choose ``k`` and the cross-encoder's weight on a benchmark of VALIDATION queries
        (never the test ones).

        Args:
            validation: builds that benchmark when called (not called when ``k`` was given).
            grid: the candidate counts tried; weights: the cross-encoder weights tried with
                each; n_queries: the seeded query sample.
            metric: what is maximised (ties within 1e-4 go to the smaller ``k``, then to
                the larger weight).

        A retriever that is itself calibrated on validation (a hybrid without a fusion)
        is calibrated first, on the same benchmark.

        Returns:
            The :class:`KChoice` now in use (its table: ``metric`` at every (``k``, weight);
            ``k = 0`` is the retriever alone).
        """
        once = functools.cache(validation)  # one benchmark for the retriever and k / w
        if callable(getattr(self.retriever, "calibrate", None)):
            self.retriever.calibrate(once)  # a hybrid retriever's fusion, on validation
        if self.choice is not None:
            return self.choice
        bench = once()
        rng = np.random.default_rng(seed)
        rows = np.arange(len(bench.query_ids))
        has = rows[bench.grades.max(axis=1) > 0]
        rows = np.sort(rng.choice(has, min(n_queries, len(has)), replace=False))
        q_ids = [bench.query_ids[i] for i in rows]
        q = bench.texts.loc[q_ids].tolist()
        c = bench.texts.loc[bench.corpus_ids].tolist()
        grades = bench.grades[rows]
        self_mask = (np.asarray(q_ids, dtype=object)[:, None]
                     == np.asarray(bench.corpus_ids, dtype=object)[None, :])
        base, order, ce = self._candidates(q, c, max(grid))

        def value(scores: np.ndarray) -> float:
            return float(np.nanmean(M.retrieval_metrics_per_query(
                np.where(self_mask, -np.inf, scores), grades)[metric]))

        retr = value(base)
        table = [{"k": 0, "weight": 0.0, metric: round(retr, 4)}]  # the retriever alone
        best: tuple[int, float] | None = None
        best_v = -np.inf
        for k in sorted(g for g in grid if g <= order.shape[1]):
            for w in sorted(weights, reverse=True):
                v = value(rerank_rows(base, order, ce, k, w))
                table.append({"k": k, "weight": float(w), metric: round(v, 4)})
                if v > best_v + 1e-4:
                    best, best_v = (k, float(w)), v
        assert best is not None
        where = f"{bench.config.query_split} split, {len(rows)} queries"
        self.choice = KChoice(best[0], f"best {metric} on {where}: {best_v:.4f}; retriever "
                              f"alone {retr:.4f}", table, weight=best[1])
        logger.info("re-ranker: %s", self.choice.describe())
        return self.choice
