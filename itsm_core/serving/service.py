"""The similar-incident service: an HTTP API and a web page over one or more indexes.

``create_app(ServiceConfig(...))`` gives a FastAPI application (``itsm serve`` runs it
with uvicorn). Model and index are loaded once per collection. Reads take the current
generation of a collection by reference; writes (``POST /incidents``, ``DELETE
/incidents/{number}``) build the next generation copy-on-write, commit it to disk (files,
then the manifest atomically) and only then swap the reference, so a concurrent read sees
the old or the new generation, never a mixture, and an acknowledged write survives a
crash.

Bad requests get a JSON 4xx that says what is wrong (``{"error", "where", "fix"}`` or
FastAPI's validation ``{"detail": [...]}``), never a traceback. Binding a non-loopback
address requires an API key (``X-API-Key`` header, compared in constant time).
"""

from __future__ import annotations

import hmac
import ipaddress
import tempfile
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from itsm_core.core.errors import ItsmError
from itsm_core.serving.index import IndexBase, SearchFilter, _load_texts, latest_index
from itsm_core.serving.store import open_store


class NotFound(ItsmError):
    """An incident or collection that is not there (HTTP 404)."""


API_KEY_HEADER = "X-API-Key"
CollectionParam = Annotated[str | None, Query(alias="collection",
                                              description="collection (default: the first)")]
MAX_K = 100


@dataclass
class ServiceConfig:
    """What the service serves and its limits.

    Attributes:
        indexes: ``{collection name: index folder}``; the first is the default.
        api_key: required in the ``X-API-Key`` header when set (mandatory off loopback).
        max_body_bytes: larger request bodies get 413.
        max_text_chars: a longer query text gets 422.
        max_batch: most incidents one ``POST /incidents`` may add.
    """

    indexes: dict[str, Path | str] = field(default_factory=dict)
    store: str | None = None
    lexical: str = "bm25"
    api_key: str | None = None
    max_body_bytes: int = 2_000_000
    max_text_chars: int = 20_000
    max_batch: int = 1_000


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse a non-loopback address without an API key (before anything is loaded)."""
    if not is_loopback(host) and not api_key:
        raise ItsmError(f"binding {host} (not loopback) needs an API key", where="--host",
                        fix="set ITSM_API_KEY (or pass --api-key-file FILE); clients send it "
                        f"in the {API_KEY_HEADER} header")


def default_indexes(index: list[Path] | None, store: str | None = None
                    ) -> dict[str, Path | str]:
    """``{name: folder}`` of ``--index`` folders (``name=folder`` or a folder), or the newest
    bundled index; with a PostgreSQL ``store``, ``{name: collection}`` of the given
    collection names (default: every collection there)."""
    if store:
        from itsm_core.serving.store import collections

        names = [str(i) for i in index] if index else [c["name"] for c in collections(store)]
        return {n.partition("=")[0]: n.partition("=")[2] or n for n in names}
    if not index:
        found = latest_index()
        return {found.name.split("_", 1)[-1]: found}
    out: dict[str, Path] = {}
    for item in index:
        name, sep, folder = str(item).partition("=")
        path = Path(folder if sep else name)
        out[name if sep else path.name.split("_", 1)[-1]] = path
    return out


# --------------------------------------------------------------------------- collections


class Collection:
    """One index served: the current generation and a writer lock."""

    def __init__(self, name: str, location: Path | str, store: str | None = None,
                 lexical: str = "bm25"):
        self.name = name
        self.current: IndexBase = (
            open_store(store=store, collection=str(location), lexical=lexical) if store
            else open_store(Path(location)))
        self.current.encoder()  # load the model once, at start-up
        self._write = threading.Lock()

    def add(self, records: list[dict[str, Any]]) -> tuple[int, IndexBase]:
        """Encode and commit new incidents (canonical field names), then swap."""
        txt = self.current.meta["text"]
        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / "incidents.jsonl"
            pd.DataFrame(records).to_json(f, orient="records", lines=True, force_ascii=False)
            new, _, _ = _load_texts(f, None, txt["fields"], txt.get("max_chars_per_field"))
        with self._write:
            nxt, n = self.current.added(new, source="POST /incidents")
            self.current = nxt
        return n, nxt

    def remove(self, number: str) -> tuple[int, IndexBase]:
        with self._write:
            nxt, n = self.current.removed([number])
            self.current = nxt
        return n, nxt


# ------------------------------------------------------------------------------ schemas


class SimilarRequest(BaseModel):
    """``POST /similar``: a text (or short description + description) and options."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    short_description: str | None = None
    description: str | None = None
    k: int = Field(10, ge=1, le=MAX_K)
    mode: Literal["hybrid", "dense", "bm25"] = "hybrid"
    dim: int | None = Field(None, ge=1)
    filters: dict[str, str | list[str]] | None = None
    resolved_only: bool = False
    opened_from: str | None = None
    opened_to: str | None = None
    threshold: float | None = Field(None, ge=-1.0, le=1.0)
    collection: str | None = None

    @model_validator(mode="after")
    def _has_text(self) -> SimilarRequest:
        if not (self.text or "").strip() and not ((self.short_description or "").strip()
                                                   or (self.description or "").strip()):
            raise ValueError("give a non-empty 'text', or 'short_description' / "
                             "'description'")
        return self


class IncidentIn(BaseModel):
    """One incident to add (canonical field names; number and some text required)."""

    model_config = ConfigDict(extra="allow")

    number: str = Field(min_length=1, max_length=200)
    short_description: str | None = None
    description: str | None = None
    category: str | None = None
    subcategory: str | None = None
    service: str | None = None
    assignment_group: str | None = None
    resolution_notes: str | None = None
    opened_at: str | None = None

    @model_validator(mode="after")
    def _has_text(self) -> IncidentIn:
        if not (self.short_description or "").strip() and not (self.description or "").strip():
            raise ValueError("an incident needs a non-empty 'short_description' or "
                             "'description'")
        return self


class IncidentsIn(BaseModel):
    """``POST /incidents``: one incident or ``{"incidents": [...]}``."""

    model_config = ConfigDict(extra="forbid")
    incidents: list[IncidentIn] = Field(min_length=1)


# ---------------------------------------------------------------------------------- app


def _error(status: int, problem: str, where: str | None = None, fix: str | None = None
           ) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": problem, "where": where,
                                                     "fix": fix})


def _clean(value: Any) -> Any:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None
    if value is pd.NA or (not isinstance(value, (str, list, dict)) and pd.isna(value)):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _hits(res: pd.DataFrame, threshold: float | None) -> list[dict[str, Any]]:
    from itsm_core.serving.index import summaries

    rows = []
    res = res.assign(summary=summaries(res)) if len(res) else res.assign(summary=[])
    for r in res.drop(columns=["text"], errors="ignore").to_dict("records"):
        r = {k: _clean(v) for k, v in r.items()}
        sim = r.get("similarity")
        r["likely_duplicate"] = (None if threshold is None or sim is None
                                 else bool(sim >= threshold))
        rows.append(r)
    return rows


def create_app(config: ServiceConfig) -> FastAPI:
    """The FastAPI application serving ``config.indexes`` (loaded here, once).

    Args:
        config: collections, API key and limits.

    Returns:
        The application (OpenAPI at ``/docs``, the web page at ``/``).
    """
    if not config.indexes:
        raise ItsmError("no index to serve", where="--index",
                        fix="build one: make index (or itsm index build ...)")
    collections = {name: Collection(name, loc, config.store, config.lexical)
                   for name, loc in config.indexes.items()}
    default = next(iter(collections))
    app = FastAPI(title="ITSM similar-incident service",
                  description="Past incidents most similar to a new one, from an itsm index.")
    app.state.collections = collections

    def collection(name: str | None) -> Collection:
        if name is None:
            return collections[default]
        if name not in collections:
            raise NotFound(f"unknown collection {name!r}", where="collection",
                            fix=f"use one of {sorted(collections)}")
        return collections[name]

    @app.middleware("http")
    async def guard(request: Request, call_next):  # noqa: ANN001, ANN202
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > config.max_body_bytes:
            return _error(413, f"request body larger than {config.max_body_bytes} bytes",
                          "body", "send fewer incidents per request")
        open_paths = ("/health", "/", "/docs", "/openapi.json", "/static/app.js")
        if config.api_key and request.url.path not in open_paths:
            given = request.headers.get(API_KEY_HEADER, "")
            if not hmac.compare_digest(given.encode(), config.api_key.encode()):
                return _error(401, "missing or wrong API key", API_KEY_HEADER,
                              f"send the key in the {API_KEY_HEADER} header")
        return await call_next(request)

    @app.exception_handler(ItsmError)
    async def itsm_error(_request: Request, exc: ItsmError) -> JSONResponse:
        return _error(404 if isinstance(exc, NotFound) else 400, exc.problem, exc.where,
                      exc.fix)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", [])), "msg": e.get("msg")} for e in exc.errors()]
        return JSONResponse(status_code=422, content={
            "error": "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors),
            "detail": errors})

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(exc).__name__})", None,
                      "see the service log")

    @app.get("/health")
    def health() -> dict[str, Any]:
        """200 once the models and indexes are loaded."""
        return {"status": "ok", "collections": sorted(collections)}

    @app.get("/info")
    def info(collection_name: CollectionParam = None) -> dict[str, Any]:
        """Model, fingerprint, dims, counts, generation and the duplicate threshold."""
        idx = collection(collection_name).current
        m = idx.meta
        return {"collection": collection_name or default, "collections": sorted(collections),
                "model": m["model"]["name"], "model_spec": m["model"]["spec"],
                "fingerprint": m["model"]["fingerprint"], "dim": idx.dim,
                "dims": [d for d in (idx.dim, 256, 128, 64) if d <= idx.dim],
                "incidents": len(idx), "generation": m.get("generation"),
                "fusion": idx.fusion.describe(), "duplicates": idx.duplicate_threshold(),
                "store": idx.store_kind, "lexical": getattr(idx, "lexical", "bm25"),
                "filter_columns": idx.filter_columns(),
                "categories": idx.categories()}

    def _search(coll: Collection, text: str, req: SimilarRequest,
                exclude: str | None = None) -> dict[str, Any]:
        if len(text) > config.max_text_chars:
            raise ItsmError(f"text longer than {config.max_text_chars} characters",
                            where="text", fix="send the incident's short description and "
                            "description only")
        idx = coll.current  # one generation for the whole request
        where = SearchFilter(req.filters, req.resolved_only, req.opened_from, req.opened_to,
                             exclude=() if exclude is None else (exclude,))
        stored = idx.duplicate_threshold()
        threshold = req.threshold if req.threshold is not None else stored.get("threshold")
        res = idx.search(text, k=req.k, mode=req.mode, dim=req.dim, filter=where,
                         similarity=True)[0]
        return {"collection": coll.name, "model": idx.model_name, "mode": req.mode,
                "dim": req.dim or idx.dim, "generation": idx.meta.get("generation"),
                "threshold": threshold, "results": _hits(res, threshold)}

    @app.post("/similar")
    def similar(req: SimilarRequest) -> dict[str, Any]:
        """Ranked similar incidents, each with ``likely_duplicate`` (dense cosine >= the
        calibrated threshold, or the request's ``threshold``)."""
        text = (req.text or "").strip() or " ".join(
            t for t in ((req.short_description or "").strip(),
                        (req.description or "").strip()) if t)
        return _search(collection(req.collection), text, req)

    def _incident(coll: Collection, number: str) -> dict[str, Any]:
        hit = coll.current.get(number)
        if hit is None:
            raise NotFound(f"incident {number!r} is not in the index", where="number",
                            fix="search by text instead, or add it: POST /incidents")
        return hit

    @app.get("/incidents/{number}")
    def incident(number: str, collection_name: CollectionParam = None) -> dict[str, Any]:
        """One indexed incident (text, display columns, resolution notes)."""
        row = _incident(collection(collection_name), number)
        return {k: _clean(v) for k, v in row.items()}

    @app.get("/incidents/{number}/similar")
    def incident_similar(number: str, k: int = 10, mode: str = "hybrid",
                         collection_name: CollectionParam = None) -> dict[str, Any]:
        """Incidents similar to an indexed one (itself excluded)."""
        coll = collection(collection_name)
        row = _incident(coll, number)
        req = SimilarRequest(text=str(row["text"]), k=k, mode=mode)
        return _search(coll, str(row["text"]), req, exclude=number)

    @app.post("/incidents", status_code=201)
    def add_incidents(body: IncidentsIn | IncidentIn, collection_name: CollectionParam = None
                      ) -> dict[str, Any]:
        """Encode and add incidents; durable (committed to disk) before the 201."""
        items = body.incidents if isinstance(body, IncidentsIn) else [body]
        if len(items) > config.max_batch:
            raise ItsmError(f"{len(items)} incidents in one request (max {config.max_batch})",
                            where="incidents", fix="send them in smaller batches")
        coll = collection(collection_name)
        n, idx = coll.add([i.model_dump(exclude_none=True) for i in items])
        return {"added": n, "incidents": len(idx), "generation": idx.meta.get("generation")}

    @app.delete("/incidents/{number}")
    def delete_incident(number: str, collection_name: CollectionParam = None) -> JSONResponse:
        """Remove an incident from the index (a new generation)."""
        coll = collection(collection_name)
        n, idx = coll.remove(number)
        if not n:
            return _error(404, f"incident {number!r} is not in the index", "number", None)
        return JSONResponse({"deleted": number, "incidents": len(idx),
                             "generation": idx.meta.get("generation")})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("itsm_core.serving").joinpath("static/index.html").read_text(
            encoding="utf-8")

    @app.get("/static/app.js", include_in_schema=False)
    def script() -> HTMLResponse:
        js = resources.files("itsm_core.serving").joinpath("static/app.js").read_text(
            encoding="utf-8")
        return HTMLResponse(js, media_type="application/javascript")

    return app


def api_key_from(env: dict[str, str], key_file: Path | None = None) -> str | None:
    """The API key: the first line of ``key_file``, else ``$ITSM_API_KEY``, else None."""
    if key_file is not None:
        try:
            key = Path(key_file).read_text(encoding="utf-8").strip().splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            raise ItsmError(f"cannot read an API key ({exc})", where=str(key_file),
                            fix="put the key on the file's first line") from None
        if not key:
            raise ItsmError("the API key file is empty", where=str(key_file),
                            fix="put the key on the file's first line")
        return key
    return env.get("ITSM_API_KEY") or None


def serve(index: list[Path] | None = None, host: str = "127.0.0.1", port: int = 8000, *,
          api_key: str | None = None, log_level: str = "info", store: str | None = None,
          lexical: str = "bm25") -> None:
    """``itsm serve``: check the bind address, load the indexes once, run uvicorn.

    Args:
        index: index folders (or ``name=folder``; with ``store``: collection names);
            default: the newest bundled index (every collection of the store).
        host, port: where to listen (loopback by default; others need ``api_key``).
        api_key: required in the ``X-API-Key`` header when set.
        log_level: uvicorn's log level; store: a PostgreSQL + pgvector URL; lexical: its
            lexical scorer (``fts`` or ``bm25``).
    """
    import uvicorn

    check_bind(host, api_key)  # before anything heavy is loaded
    app = create_app(ServiceConfig(indexes=default_indexes(index, store), api_key=api_key,
                                   store=store, lexical=lexical))
    uvicorn.run(app, host=host, port=port, log_level=log_level)
