"""Scorers: one interface for lexical baselines and embedding models.

Evaluation, the diagnostic and search only ever talk to a :class:`Scorer`:
``score_matrix(queries, corpus, dim)`` and ``score_pairs(a, b, dim)``. The lexical
baselines (TF-IDF, BM25 via bm25s) and dense models (sentence-transformers, later ONNX
exports and ensembles) implement it, so every baseline sits beside every model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from itsm_core.encoders.cache import wrap_encoder
from itsm_core.encoders.registry import ModelSpec, load_sentence_transformer

logger = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)

LEXICAL = ("tfidf", "bm25")


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores text pairs: higher = more similar."""

    name: str
    kind: str  # "lexical" or "dense"

    @property
    def dims(self) -> tuple[int | None, ...]:
        """Dimensions to evaluate at; ``(None,)`` for scorers without embeddings."""
        ...

    def score_matrix(self, queries: Sequence[str], corpus: Sequence[str],
                     dim: int | None = None) -> np.ndarray: ...

    def score_pairs(self, a: Sequence[str], b: Sequence[str],
                    dim: int | None = None) -> np.ndarray: ...


class TfidfScorer:
    """TF-IDF cosine (word 1–2-grams, sublinear tf), fitted on the texts it scores.

    Fitting IDF on the (unlabelled) evaluation texts is standard for a lexical baseline
    and uses no labels.
    """

    name = "tfidf"
    kind = "lexical"
    dims: tuple[int | None, ...] = (None,)

    def __init__(self, ngram_range: tuple[int, int] = (1, 2), min_df: int = 1):
        self.ngram_range = ngram_range
        self.min_df = min_df

    def _vectorizer(self, texts: Sequence[str]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(ngram_range=self.ngram_range, min_df=self.min_df,
                              sublinear_tf=True, dtype=np.float32)
        vec.fit(list(texts))
        return vec

    def score_matrix(self, queries, corpus, dim=None) -> np.ndarray:
        # each distinct text counts once in the IDF, as in score_pairs
        vec = self._vectorizer(list(dict.fromkeys([*corpus, *queries])))
        q, c = vec.transform(queries), vec.transform(corpus)
        return (q @ c.T).toarray().astype(np.float32)

    def score_pairs(self, a, b, dim=None) -> np.ndarray:
        vec = self._vectorizer(list(dict.fromkeys([*a, *b])))
        va, vb = vec.transform(a), vec.transform(b)
        return np.asarray(va.multiply(vb).sum(axis=1)).ravel().astype(np.float32)


def bm25_index(corpus: Sequence[str], k1: float = 1.5, b: float = 0.75):
    """(tokenizer, bm25s retriever) over ``corpus`` (English stop words): the one BM25 set-up
    of the baseline and of the search index."""
    import bm25s
    from bm25s.tokenization import Tokenizer

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG when imported
    tok = Tokenizer(stopwords="en")
    ids = tok.tokenize(list(corpus), return_as="ids", update_vocab=True, show_progress=False)
    retriever = bm25s.BM25(k1=k1, b=b)
    retriever.index(ids, show_progress=False)
    return tok, retriever


def bm25_query_scores(index, queries: Sequence[str], n_docs: int) -> np.ndarray:  # noqa: ANN001
    """BM25 score of every query against every indexed document, (queries, n_docs)."""
    tok, retriever = index
    q_ids = tok.tokenize(list(queries), return_as="ids", update_vocab=False,
                         show_progress=False)
    out = np.zeros((len(q_ids), n_docs), dtype=np.float32)
    for i, q in enumerate(q_ids):
        if q:
            out[i] = retriever.get_scores(q)
    return out


class BM25Scorer:
    """BM25 (bm25s, Lucene variant, English stop words); query = left text.

    BM25 is asymmetric and unnormalised; ROC-AUC and thresholds chosen on validation
    handle that without any rescaling.
    """

    name = "bm25"
    kind = "lexical"
    dims: tuple[int | None, ...] = (None,)

    def __init__(self, k1: float = 1.5, b: float = 0.75):
        self.k1, self.b = k1, b

    def _index(self, corpus: Sequence[str]):
        return bm25_index(corpus, self.k1, self.b)

    def score_matrix(self, queries, corpus, dim=None) -> np.ndarray:
        return bm25_query_scores(self._index(corpus), queries, len(corpus))

    def score_pairs(self, a, b, dim=None) -> np.ndarray:
        docs = list(dict.fromkeys(b))
        pos = {t: i for i, t in enumerate(docs)}
        tok, retriever = self._index(docs)
        uniq_q = list(dict.fromkeys(a))
        q_ids = tok.tokenize(uniq_q, return_as="ids", update_vocab=False, show_progress=False)
        rows = {t: (retriever.get_scores(q) if q else np.zeros(len(docs)))
                for t, q in zip(uniq_q, q_ids)}
        return np.array([rows[x][pos[y]] for x, y in zip(a, b)], dtype=np.float32)


class DenseScorer:
    """Cosine similarity of sentence-transformers embeddings, with Matryoshka truncation.

    Each distinct text is encoded once (per role: query or document prefix) and kept in
    memory, so retrieval, pair classification and every dimension share one encoding pass;
    a model loaded from a spec also sits behind the on-disk embedding cache
    (:mod:`itsm_core.encoders.cache`), so other stages and re-runs do not encode it again.
    Truncated embeddings are re-normalised before the cosine.
    """

    kind = "dense"

    def __init__(self, spec: ModelSpec | str, batch_size: int = 64,
                 show_progress: bool = True, device: str | None = None, model=None):
        if model is None:  # loaded from a spec: behind the embedding cache
            st, self.spec = load_sentence_transformer(spec, device=device)
            self.model = wrap_encoder(st, self.spec.path or self.spec.key, self.spec.path)
        else:  # an in-memory model (e.g. during training) or a wrapped one; spec describes it
            self.model, self.spec = model, spec
        self.name = self.spec.key
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    @property
    def dims(self) -> tuple[int | None, ...]:
        return self.spec.eval_dims

    def embed(self, texts: Sequence[str], role: str = "document") -> np.ndarray:
        """Full-dimension, L2-normalised embeddings (float32), encoded at most once."""
        prefix = self.spec.query_prefix if role == "query" else self.spec.document_prefix
        todo = [t for t in dict.fromkeys(texts) if (role, t) not in self._cache]
        if todo:
            emb = self.model.encode(
                [prefix + t for t in todo], batch_size=self.batch_size,
                convert_to_numpy=True, normalize_embeddings=True,
                show_progress_bar=self.show_progress and len(todo) > self.batch_size,
            ).astype(np.float32)
            self._cache.update({(role, t): e for t, e in zip(todo, emb)})
        return np.stack([self._cache[(role, t)] for t in texts]) if texts else np.zeros(
            (0, self.spec.dim), np.float32)

    @staticmethod
    def truncate(emb: np.ndarray, dim: int | None) -> np.ndarray:
        """First ``dim`` components, re-normalised (Matryoshka truncation)."""
        if dim is None or dim >= emb.shape[1]:
            return emb
        cut = emb[:, :dim]
        norms = np.linalg.norm(cut, axis=1, keepdims=True)
        return cut / np.clip(norms, 1e-12, None)

    def score_matrix(self, queries, corpus, dim=None) -> np.ndarray:
        q = self.truncate(self.embed(list(queries), "query"), dim)
        c = self.truncate(self.embed(list(corpus), "document"), dim)
        return q @ c.T

    def score_pairs(self, a, b, dim=None) -> np.ndarray:
        ea = self.truncate(self.embed(list(a), "query"), dim)
        eb = self.truncate(self.embed(list(b), "document"), dim)
        return np.einsum("ij,ij->i", ea, eb)
