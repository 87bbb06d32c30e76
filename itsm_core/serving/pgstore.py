"""The search index in PostgreSQL + pgvector: the store for desks past one machine.

One collection (one index) is one table ``itsm_<name>``::

    number text PRIMARY KEY, text text, <display columns> text, split text,
    opened_ts timestamptz,                        -- parsed opened_at, for date filters
    embedding vector(dim),                        -- L2-normalised, HNSW (cosine ops)
    tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED  -- GIN

and one row of ``itsm_collections`` (name, the index manifest as ``jsonb``: model spec and
fingerprint, dim, text builder, fusion and duplicate threshold chosen on VALIDATION,
generation, history). Adds and removes run in one transaction that also moves the
generation on (the metadata row is locked ``FOR UPDATE``), so a reader sees all of an add
or none of it.

Search:

- ``dense``: HNSW with ``hnsw.iterative_scan = relaxed_order``, so a filter (a SQL
  ``WHERE``) does not starve the top-k; hits are re-sorted by exact cosine. At a Matryoshka
  dim below the stored one the scan is exact (``l2_normalize(subvector(...))``: the
  HNSW index is on the full dim).
- ``bm25`` (the lexical side), two choices (``lexical=``): ``bm25`` (the default), bm25s
  over the collection's texts held beside the store by the serving process - the folder
  index's scorer, rebuilt when the generation moves on; or ``fts``, PostgreSQL full-text
  search, ``ts_rank`` of the query's lexemes OR-ed together against the GIN-indexed
  ``tsvector`` (nothing held outside the database, transactional with the rows).
  ``itsm bench store`` measured both on the bundled index: bm25s beside the store gives
  the folder's lexical and hybrid NDCG@10 (0.616 / 0.649 vs 0.616 / 0.648), full-text
  search loses 0.09 lexically and 0.003 in hybrid (``ts_rank`` has no IDF).
- ``hybrid``: the union of the dense and lexical top candidates (``candidates`` each),
  fused by the index's stored :class:`~itsm_core.encoders.hybrid.Fusion` over those
  candidates.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd

from itsm_core.core.errors import ItsmError
from itsm_core.core.io import timestamp
from itsm_core.encoders.hybrid import Fusion
from itsm_core.serving.index import (
    RESOLVED_STATES,
    IndexBase,
    SearchFilter,
    _encode_documents,
    utc_bound,
)

META_TABLE = "itsm_collections"
LEXICAL = ("fts", "bm25")
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,40}$")
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 64
"""pgvector's defaults, written out so the build records them."""


def is_store_url(location: Any) -> bool:
    """True for a ``postgresql://`` / ``postgres://`` URL (else: a folder index)."""
    return str(location).startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """The URL without its password (for messages, manifests and ``/info``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def check_store_url(store: str | None) -> str:
    """``store`` when it is a PostgreSQL URL, else a clear error (also when missing)."""
    if not store:
        raise ItsmError("no store given", where="--store",
                        fix="pass --store postgresql://... (or set ITSM_STORE)")
    if not is_store_url(store):
        raise ItsmError(f"not a PostgreSQL URL: {store!r}", where="--store",
                        fix="use postgresql://user:password@host:port/database")
    return store


def check_collection_name(name: str) -> str:
    """A collection name that is safe as part of a table name."""
    if not NAME_RE.match(name or ""):
        raise ItsmError(f"not a valid collection name: {name!r}", where="--collection",
                        fix="use a letter, then letters, digits or _ (at most 41 characters)")
    return name.lower()


def connect(url: str):
    """A connection with pgvector's types registered (the extension is created when
    missing and the role may create it)."""
    try:
        import psycopg
        from pgvector.psycopg import register_vector
    except ImportError:
        raise ItsmError("the PostgreSQL store needs psycopg and pgvector", where="--store",
                        fix="run `make env` (or pip install 'itsm_core[scale]')") from None
    try:
        conn = psycopg.connect(url, connect_timeout=10, autocommit=True)
    except psycopg.Error as exc:
        raise ItsmError(f"cannot connect to PostgreSQL: {str(exc).strip()[:300]}",
                        where=redact(url), fix="check the URL (postgresql://user:password@"
                        "host:port/database), that the server runs and accepts this user"
                        ) from None
    try:
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is None:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
    except psycopg.Error as exc:
        conn.close()
        raise ItsmError(f"pgvector is not available: {str(exc).strip()[:300]}",
                        where=redact(url), fix="install pgvector (>= 0.8) on the server, or "
                        "have an administrator run CREATE EXTENSION vector") from None
    return conn


def _ensure_meta_table(conn) -> None:  # noqa: ANN001
    conn.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (name text PRIMARY KEY, "
                 "meta jsonb NOT NULL, updated timestamptz NOT NULL DEFAULT now())")


def list_collections(url: str) -> list[dict[str, Any]]:
    """Every collection in the database: name, incidents, model, dim, generation."""
    with connect(url) as conn:
        _ensure_meta_table(conn)
        rows = conn.execute(f"SELECT name, meta FROM {META_TABLE} ORDER BY name").fetchall()
    return [{"name": n, "incidents": m.get("n"), "model": m["model"]["name"],
             "dim": m.get("dim"), "generation": m.get("generation")} for n, m in rows]


def _table(name: str):
    from psycopg import sql

    return sql.Identifier(f"itsm_{name}")


def _opened_ts(df: pd.DataFrame) -> pd.Series:
    if "opened_at" not in df.columns:
        return pd.Series([None] * len(df), index=df.index, dtype=object)
    ts = pd.to_datetime(df["opened_at"], errors="coerce", utc=True)
    return ts.astype(object).where(ts.notna(), None)


def _copy_rows(conn, name: str, columns: list[str], df: pd.DataFrame,  # noqa: ANN001
               emb: np.ndarray, progress: bool = False) -> None:
    """COPY (binary) the rows of ``df`` with their embeddings into the collection."""
    from psycopg import sql
    from tqdm.auto import tqdm

    cols = [*columns, "opened_ts", "embedding"]
    stmt = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT BINARY)").format(
        _table(name), sql.SQL(", ").join(map(sql.Identifier, cols)))
    values = [df[c].astype(object).where(df[c].notna(), None).tolist() for c in columns]
    opened = _opened_ts(df).tolist()
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        copy.set_types(["text"] * len(columns) + ["timestamptz", "vector"])
        for i in tqdm(range(len(df)), disable=not progress, desc="COPY", unit="row",
                      mininterval=2):
            copy.write_row([*(None if v[i] is None else str(v[i]) for v in values),
                            opened[i], emb[i]])


def create_collection(url: str, name: str, meta: dict[str, Any], emb: np.ndarray,
                      incidents: pd.DataFrame, *, replace: bool = False,
                      m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION,
                      progress: bool = False) -> PgIndex:
    """Write a built index (manifest, embeddings, incidents) as collection ``name``.

    All in one transaction: the table, its rows (COPY), the HNSW and GIN indexes and the
    metadata row; a failure leaves the database as it was.

    Args:
        url: ``postgresql://`` URL; name: the collection (table ``itsm_<name>``).
        meta: the index manifest (as a folder index's ``itsm_index.json``).
        emb: (n, dim) L2-normalised float32; incidents: number, text, display columns.
        replace: drop an existing collection of that name (refused otherwise).
        m, ef_construction: HNSW build parameters.

    Returns:
        The opened :class:`PgIndex`.
    """
    from psycopg import sql

    name = check_collection_name(name)
    dim = int(emb.shape[1])
    if dim > 2000:
        raise ItsmError(f"{dim}-d vectors are beyond pgvector's HNSW limit (2000)",
                        where="--dim", fix="store a Matryoshka dim <= 2000 (--dim 1024)")
    columns = list(incidents.columns)
    t0 = time.perf_counter()
    with connect(url) as conn, conn.transaction():
        _ensure_meta_table(conn)
        found = conn.execute(f"SELECT 1 FROM {META_TABLE} WHERE name = %s FOR UPDATE",
                             [name]).fetchone()
        if found and not replace:
            raise ItsmError(f"collection {name!r} already exists in {redact(url)}",
                            where="--collection", fix="choose another --collection, or pass "
                            "--replace to rebuild it")
        table = _table(name)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
        coldefs = sql.SQL(", ").join(
            sql.SQL("{} text").format(sql.Identifier(c)) for c in columns if c != "number")
        conn.execute(sql.SQL(
            "CREATE TABLE {} (number text PRIMARY KEY, {}, opened_ts timestamptz, "
            "embedding vector({}) NOT NULL, tsv tsvector GENERATED ALWAYS AS "
            "(to_tsvector('english', coalesce(text, ''))) STORED)").format(
                table, coldefs, sql.Literal(dim)))
        _copy_rows(conn, name, columns, incidents, emb, progress)
        copied = time.perf_counter() - t0
        conn.execute("SET LOCAL maintenance_work_mem = '1GB'")
        conn.execute(sql.SQL("CREATE INDEX ON {} USING hnsw (embedding vector_cosine_ops) "
                             "WITH (m = {}, ef_construction = {})").format(
            table, sql.Literal(int(m)), sql.Literal(int(ef_construction))))
        conn.execute(sql.SQL("CREATE INDEX ON {} USING gin (tsv)").format(table))
        conn.execute(sql.SQL("ANALYZE {}").format(table))
        meta = {**meta, "n": len(incidents), "generation": int(meta.get("generation", 1)),
                "store": {"kind": "postgresql", "url": redact(url), "collection": name,
                          "hnsw": {"m": int(m), "ef_construction": int(ef_construction)},
                          "lexical": "bm25 (bm25s beside the store) or fts (PostgreSQL "
                                     "ts_rank, english), chosen when opened",
                          "copy_seconds": round(copied, 2),
                          "build_seconds": round(time.perf_counter() - t0, 2)},
                "files": {}}
        conn.execute(f"INSERT INTO {META_TABLE} (name, meta) VALUES (%s, %s) "
                     "ON CONFLICT (name) DO UPDATE SET meta = EXCLUDED.meta, updated = now()",
                     [name, _jsonb(meta)])
    return PgIndex(url, name)


def _jsonb(obj: Any):  # noqa: ANN401
    from psycopg.types.json import Jsonb

    from itsm_core.core.io import json_safe

    return Jsonb(json_safe(obj))


class PgIndex(IndexBase):
    """A collection in PostgreSQL + pgvector, searched with SQL (see the module doc).

    Args:
        url: ``postgresql://`` URL.
        collection: its name; may be omitted when the database holds exactly one.
        ef_search: HNSW candidate list size (recall / latency trade-off).
        candidates: dense and lexical candidates each, fused in ``hybrid`` mode.
        lexical: ``bm25`` (bm25s over the collection's texts, held by this process
            beside the store and rebuilt when the generation moves on; the default, as
            measured) or ``fts`` (PostgreSQL full-text search, in the database).
    """

    store_kind = "postgresql"

    def __init__(self, url: str, collection: str | None = None, *, ef_search: int = 100,
                 candidates: int = 100, lexical: str = "bm25"):
        if lexical not in LEXICAL:
            raise ItsmError(f"unknown lexical scorer {lexical!r}", where="--lexical",
                            fix=f"use one of {list(LEXICAL)}")
        self.url, self.lexical = url, lexical
        self._bm25_state: tuple | None = None
        self._local = threading.local()
        self.ef_search, self.candidates = int(ef_search), int(candidates)
        names = [c["name"] for c in list_collections(url)]
        if collection is None:
            if len(names) != 1:
                raise ItsmError(
                    f"{redact(url)} holds {len(names)} collections ({names[:10]})",
                    where="--collection", fix="name one with --collection" if names else
                    "build one: itsm index build --store URL --collection NAME ...")
            collection = names[0]
        self.collection = check_collection_name(collection)
        if self.collection not in names:
            raise ItsmError(f"no collection {collection!r} in {redact(url)}",
                            where="--collection",
                            fix=f"use one of {names}" if names else
                            "build one: itsm index build --store URL --collection NAME ...")
        self.path = f"{redact(url)}#{self.collection}"
        self._encoder = None
        self._load_meta()
        rows = self._conn().execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
            "ORDER BY ordinal_position", [f"itsm_{self.collection}"]).fetchall()
        self.columns = [r[0] for r in rows if r[0] not in ("opened_ts", "embedding", "tsv")]

    # -- connection and manifest -------------------------------------------------------
    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._local.conn = connect(self.url)
        return conn

    def _load_meta(self, conn=None) -> None:  # noqa: ANN001
        """This object's manifest, as committed (or as ``conn``'s snapshot sees it)."""
        row = (conn or self._conn()).execute(f"SELECT meta FROM {META_TABLE} WHERE name = %s",
                                             [self.collection]).fetchone()
        if row is None:
            raise ItsmError(f"collection {self.collection!r} was dropped", where=self.path,
                            fix="rebuild it: itsm index build --store ... --collection ...")
        self.meta = row[0]
        self.dim = int(self.meta["dim"])
        self.fusion = Fusion(**self.meta["fusion"])

    def __len__(self) -> int:
        return int(self.meta["n"])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()

    # -- filters -----------------------------------------------------------------------
    def filter_columns(self) -> list[str]:
        return [c for c in self.columns if c not in ("number", "text", "split")]

    def _where(self, f: SearchFilter | None):
        """(SQL condition, params) of a :class:`SearchFilter`; same checks and errors as
        :func:`~itsm_core.serving.index.filter_mask`."""
        from psycopg import sql

        conds, params = [sql.SQL("TRUE")], []
        if f is None:
            return conds[0], params
        allowed = self.filter_columns()
        for col, wanted in (f.columns or {}).items():
            if col not in allowed:
                raise ItsmError(f"cannot filter on {col!r}: the index has no such column",
                                where="filters", fix=f"filter on one of {allowed}")
            vals = [str(v).strip().lower() for v in (wanted if isinstance(wanted, list)
                                                      else [wanted])]
            conds.append(sql.SQL("lower(trim({})) = ANY(%s)").format(sql.Identifier(col)))
            params.append(vals)
        if f.resolved_only:
            if "state" in self.columns:
                conds.append(sql.SQL("lower(trim(state)) = ANY(%s)"))
                params.append(list(RESOLVED_STATES))
            elif "resolution_notes" in self.columns:
                conds.append(sql.SQL("coalesce(trim(resolution_notes), '') <> ''"))
            else:
                raise ItsmError("resolved_only needs a state or resolution_notes column",
                                where="resolved_only", fix="drop the filter for this index")
        for bound, op in ((f.opened_from, ">="), (f.opened_to, "<=")):
            if bound:
                if "opened_at" not in self.columns:
                    raise ItsmError("the index has no opened_at column",
                                    where="opened_from/opened_to",
                                    fix="drop the date filter for this index")
                conds.append(sql.SQL(f"opened_ts {op} %s"))
                params.append(utc_bound(bound).to_pydatetime())
        if f.exclude:
            conds.append(sql.SQL("number <> ALL(%s)"))
            params.append([str(n) for n in f.exclude])
        if f.numbers is not None:
            conds.append(sql.SQL("number = ANY(%s)"))
            params.append([str(n) for n in f.numbers])
        return sql.SQL(" AND ").join(conds), params

    # -- search ------------------------------------------------------------------------
    def _distance(self, dim: int):
        from psycopg import sql

        if dim == self.dim:
            return sql.SQL("(embedding <=> %s)")
        return sql.SQL("(l2_normalize(subvector(embedding, 1, {})) <=> %s)").format(
            sql.Literal(dim))

    def _dense_top(self, conn, q: np.ndarray, dim: int, where, params: list,  # noqa: ANN001
                   n: int) -> dict[str, float]:
        from psycopg import sql

        dist = self._distance(dim)
        conn.execute("SELECT set_config('hnsw.ef_search', %s, true), "
                     "set_config('hnsw.iterative_scan', 'relaxed_order', true)",
                     [str(max(self.ef_search, n))])
        rows = conn.execute(sql.SQL("SELECT number, 1 - {} FROM {} WHERE {} ORDER BY {} "
                                    "LIMIT %s").format(dist, _table(self.collection), where,
                                                       dist),
                            [q, *params, q, n]).fetchall()
        return {r[0]: float(r[1]) for r in rows}

    _TSQUERY = ("(SELECT to_tsquery('simple', coalesce(string_agg(quote_literal(lexeme), "
                "' | '), '')) FROM unnest(to_tsvector('english', %s)))")

    def _lexical_top(self, conn, text: str, where, params: list,  # noqa: ANN001
                     n: int) -> tuple[dict[str, float], np.ndarray | None]:
        """(top-``n`` lexical scores among the rows that pass, the query's bm25s score of
        every row or None with full-text search)."""
        from psycopg import sql

        if self.lexical == "bm25":
            row = self._bm25_row(conn, text)
            return self._bm25_top(conn, row, where, params, n), row
        rows = conn.execute(sql.SQL(
            "WITH q AS (SELECT " + self._TSQUERY + " AS tq) SELECT number, "
            "ts_rank(tsv, q.tq) AS r FROM {}, q WHERE tsv @@ q.tq AND {} "
            "ORDER BY r DESC, number LIMIT %s").format(_table(self.collection), where),
            [text, *params, n]).fetchall()
        return {r[0]: float(r[1]) for r in rows}, None

    def _bm25(self, conn) -> tuple:  # noqa: ANN001
        """(generation, numbers, {number: row}, bm25s index) of the collection's texts."""
        from psycopg import sql

        from itsm_core.encoders.scorers import bm25_index

        gen = self.meta.get("generation")
        if self._bm25_state is None or self._bm25_state[0] != gen:
            rows = conn.execute(sql.SQL("SELECT number, text FROM {} ORDER BY number").format(
                _table(self.collection))).fetchall()
            numbers = np.array([r[0] for r in rows], dtype=object)
            self._bm25_state = (gen, numbers, {n: i for i, n in enumerate(numbers)},
                                bm25_index([r[1] or "" for r in rows]))
        return self._bm25_state

    def _bm25_row(self, conn, text: str) -> np.ndarray:  # noqa: ANN001
        from itsm_core.encoders.scorers import bm25_query_scores

        _, numbers, _, index = self._bm25(conn)
        return bm25_query_scores(index, [text], len(numbers))[0]

    def _bm25_top(self, conn, row: np.ndarray, where, params: list,  # noqa: ANN001
                  n: int) -> dict[str, float]:
        from psycopg import sql

        _, numbers, pos, _ = self._bm25(conn)
        row = row.astype(np.float64)
        if where.as_string(conn) != "TRUE":  # the filter is the database's: ask which pass
            allowed = [r[0] for r in conn.execute(sql.SQL("SELECT number FROM {} WHERE {}")
                                                  .format(_table(self.collection), where),
                                                  params).fetchall()]
            keep = np.full(len(row), -np.inf)
            idx = [pos[a] for a in allowed if a in pos]
            keep[idx] = row[idx]
            row = keep
        n = min(n, int(np.isfinite(row).sum()))
        if n <= 0:
            return {}
        top = np.argpartition(-row, n - 1)[:n]
        top = top[np.argsort(-row[top], kind="stable")]
        return {numbers[i]: float(row[i]) for i in top if row[i] > 0}

    def _both(self, conn, q: np.ndarray, text: str, dim: int,  # noqa: ANN001
              numbers: list[str], lex_row: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(dense cosine, lexical score) of ``numbers``, in that order; the lexical score
        from ``lex_row`` (bm25s) when given, else ``ts_rank``."""
        from psycopg import sql

        if lex_row is not None:
            rows = conn.execute(sql.SQL("SELECT number, 1 - {} FROM {} WHERE number = "
                                        "ANY(%s)").format(self._distance(dim),
                                                          _table(self.collection)),
                                [q, numbers]).fetchall()
            cos = {r[0]: float(r[1]) for r in rows}
            _, _, pos, _ = self._bm25(conn)
            return (np.array([cos[n] for n in numbers], np.float32),
                    np.array([lex_row[pos[n]] for n in numbers], np.float32))
        rows = conn.execute(sql.SQL(
            "WITH q AS (SELECT " + self._TSQUERY + " AS tq) SELECT number, 1 - {}, "
            "ts_rank(tsv, q.tq) FROM {}, q WHERE number = ANY(%s)").format(
                self._distance(dim), _table(self.collection)),
            [text, q, numbers]).fetchall()
        got = {r[0]: (float(r[1]), float(r[2])) for r in rows}
        return (np.array([got[n][0] for n in numbers], np.float32),
                np.array([got[n][1] for n in numbers], np.float32))

    def _rows(self, conn, numbers: list[str]) -> pd.DataFrame:  # noqa: ANN001
        from psycopg import sql

        cols = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        rows = conn.execute(sql.SQL("SELECT {} FROM {} WHERE number = ANY(%s)").format(
            cols, _table(self.collection)), [numbers]).fetchall()
        df = pd.DataFrame(rows, columns=self.columns, dtype=object)
        if df.empty:
            return df.astype("string")
        df = df.set_index("number", drop=False).loc[numbers].reset_index(drop=True)
        return df.astype("string")

    def search(self, queries: str | Sequence[str], k: int = 10, *, mode: str = "hybrid",
               dim: int | None = None, model: str | None = None, similarity: bool = False,
               filter: SearchFilter | None = None) -> list[pd.DataFrame]:  # noqa: A002
        """Top-``k`` incidents per query, as :meth:`SearchIndex.search` (same columns)."""
        qs = self._check_query(queries, k, mode)
        self.check_model(model)
        d = self._dim(dim)
        cond, params = self._where(filter)
        emb = self.embed_queries(qs, d) if mode != "bm25" or similarity else None
        conn, out = self._conn(), []
        with conn.transaction():
            self._snapshot(conn)
            for i, text in enumerate(qs):
                out.append(self._one(conn, text, None if emb is None else emb[i], k, mode,
                                     d, cond, params, similarity))
        return out

    def _snapshot(self, conn) -> None:  # noqa: ANN001
        """One snapshot for the whole request (as the folder index's one generation), and
        this object's manifest moved on when another writer moved the collection on."""
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        self._load_meta(conn)

    def _one(self, conn, text: str, q: np.ndarray | None, k: int, mode: str,  # noqa: ANN001
             dim: int, cond, params: list, similarity: bool) -> pd.DataFrame:
        if mode == "dense":
            hits = self._dense_top(conn, q, dim, cond, params, k)
            ranked = sorted(hits.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
            numbers = [n for n, _ in ranked]
            scores = np.array([s for _, s in ranked], np.float32)
            cos = scores
        else:
            n = k if mode == "bm25" else max(self.candidates, k)
            lex, lex_row = self._lexical_top(conn, text, cond, params, n)
            dense = {} if mode == "bm25" else self._dense_top(conn, q, dim, cond, params, n)
            cands = list(dict.fromkeys([*dense, *lex]))
            if not cands:
                return self._frame(pd.DataFrame(columns=self.columns), [], None)
            cos, rank = (self._both(conn, q, text, dim, cands, lex_row) if q is not None
                         else (None, np.array([lex[c] for c in cands], np.float32)))
            fused = rank if mode == "bm25" else self.fusion.fuse(cos[None], rank[None])[0]
            order = np.lexsort((np.arange(len(cands)), -fused))[:k]
            numbers, scores = [cands[j] for j in order], fused[order]
            cos = None if cos is None else cos[order]
        df = self._rows(conn, numbers)
        return self._frame(df, scores, cos if similarity else None)

    @staticmethod
    def _frame(df: pd.DataFrame, scores, cos) -> pd.DataFrame:  # noqa: ANN001
        out = df.reset_index(drop=True)
        if cos is not None:
            out.insert(0, "similarity", np.asarray(cos, float))
        out.insert(0, "score", np.asarray(scores, float))
        out.insert(0, "rank", np.arange(1, len(out) + 1))
        return out

    def get(self, number: str) -> dict[str, Any] | None:
        with self._conn().transaction():
            self._snapshot(self._conn())
            df = self._rows(self._conn(), [str(number)])
        return None if df.empty else df.iloc[0].to_dict()

    def categories(self, limit: int = 200) -> list[str]:
        if "category" not in self.columns:
            return []
        from psycopg import sql

        with self._conn().transaction():
            rows = self._conn().execute(sql.SQL(
                "SELECT DISTINCT category FROM {} WHERE category IS NOT NULL ORDER BY 1 "
                "LIMIT %s").format(_table(self.collection)), [limit]).fetchall()
        return [r[0] for r in rows]

    # -- writes (one transaction each) ---------------------------------------------------
    def _locked_meta(self, conn) -> dict:  # noqa: ANN001
        return conn.execute(f"SELECT meta FROM {META_TABLE} WHERE name = %s FOR UPDATE",
                            [self.collection]).fetchone()[0]

    def _commit_meta(self, conn, meta: dict, n: int, event: dict) -> None:  # noqa: ANN001
        meta.update({"n": n, "generation": int(meta.get("generation", 1)) + 1,
                     "history": [*meta.get("history", []), event]})
        conn.execute(f"UPDATE {META_TABLE} SET meta = %s, updated = now() WHERE name = %s",
                     [_jsonb(meta), self.collection])

    def added(self, new: pd.DataFrame, *, source: str, sha256: str | None = None,
              skip_existing: bool = False, batch_size: int = 32) -> tuple[PgIndex, int]:
        """Encode ``new`` incidents and insert them in one transaction (generation + 1).

        Returns:
            ``(this store, number added)``.
        """
        from psycopg import sql

        conn = self._conn()
        with conn.transaction():
            meta = self._locked_meta(conn)
            have = {r[0] for r in conn.execute(sql.SQL(
                "SELECT number FROM {} WHERE number = ANY(%s)").format(
                    _table(self.collection)), [new["number"].astype(str).tolist()])}
            dup = new["number"].astype(str).isin(have)
            if dup.any() and not skip_existing:
                self._refuse_duplicates(new, dup, source)
            new = new[~dup].reset_index(drop=True)
            if not new.empty:
                t0 = time.perf_counter()
                emb = _encode_documents(self.encoder(), meta["model"], new["text"], self.dim,
                                        batch_size)
                cols = [c for c in self.columns if c in new.columns]
                _copy_rows(conn, self.collection, cols, new[cols], emb)
                self._commit_meta(conn, meta, int(meta["n"]) + len(new), {
                    "op": "add", "source": source, "sha256": sha256, "n": len(new),
                    "at": timestamp(), "encode_seconds": round(time.perf_counter() - t0, 2)})
        self._load_meta()
        return self, len(new)

    def removed(self, numbers: Sequence[str]) -> tuple[PgIndex, int]:
        """Delete ``numbers`` in one transaction (generation + 1 when any was there)."""
        from psycopg import sql

        conn = self._conn()
        with conn.transaction():
            meta = self._locked_meta(conn)
            gone = conn.execute(sql.SQL("DELETE FROM {} WHERE number = ANY(%s)").format(
                _table(self.collection)), [list(map(str, numbers))]).rowcount
            if gone:
                self._commit_meta(conn, meta, int(meta["n"]) - gone, {
                    "op": "remove", "n": gone, "numbers": sorted(map(str, numbers))[:100],
                    "at": timestamp()})
        self._load_meta()
        return self, int(gone)
