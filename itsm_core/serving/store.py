"""One way to build and open an index, whichever store holds it.

Stores: the embedded default, a folder of numpy + parquet files
(:class:`~itsm_core.serving.index.SearchIndex`), and PostgreSQL + pgvector
(:class:`~itsm_core.serving.pgstore.PgIndex`), chosen by ``--store postgresql://…``.
Engines: documents embedded in this process (``local``) or with Ray Data (``ray``,
:mod:`itsm_core.serving.raybuild`). Both stores take the same build (same text builder,
embeddings and the fusion and duplicate threshold chosen on VALIDATION) and answer the
same ``search`` / ``get`` / ``added`` / ``removed``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from itsm_core.core.errors import ItsmError
from itsm_core.serving.index import (
    IndexBase,
    _encode_documents,
    build_in_memory,
    build_index_into_models,
    open_index,
)
from itsm_core.serving.pgstore import (
    PgIndex,
    check_collection_name,
    check_store_url,
    create_collection,
    list_collections,
)

ENGINES = ("local", "ray")


@dataclass
class Engine:
    """How documents are embedded.

    Attributes:
        name: ``local`` (this process) or ``ray`` (Ray Data ``map_batches`` over actors
            that each load the model once).
        batch_size: texts per encode call (per Ray batch).
        concurrency: Ray actors; address: a Ray cluster (default: local mode).
        num_cpus: CPUs local-mode Ray may use (default: all).
    """

    name: str = "local"
    batch_size: int = 32
    concurrency: int = 1
    address: str | None = None
    num_cpus: int | None = None

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise ItsmError(f"unknown engine {self.name!r}", where="--engine",
                            fix=f"use one of {list(ENGINES)}")
        if self.batch_size <= 0 or self.concurrency <= 0:
            raise ItsmError("batch size and concurrency must be positive",
                            where="--batch-size / --concurrency", fix="e.g. 64 and 2")

    def encode(self, spec: str, encoder: Any, model_meta: dict, texts: pd.Series,
               dim: int) -> np.ndarray:
        """L2-normalised document embeddings (Matryoshka-truncated to ``dim``)."""
        if self.name == "local":
            return _encode_documents(encoder, model_meta, texts, dim, self.batch_size)
        from itsm_core.serving.raybuild import encode_with_ray

        return encode_with_ray(spec, texts.tolist(), model_meta.get("document_prefix", ""),
                               dim, batch_size=self.batch_size, concurrency=self.concurrency,
                               address=self.address, num_cpus=self.num_cpus)


def build(model: str, incidents: str | Path | None = None, *, dataset: str = "it_tickets",
          out: str | Path | None = None, store: str | None = None,
          collection: str | None = None, replace: bool = False,
          engine: Engine | None = None, **options: Any) -> IndexBase:
    """``itsm index build``: a NEW index of an incidents file (default: the registered
    ``dataset``'s processed file).

    Args:
        model: the model spec that embeds (an export folder, a model folder, a key).
        incidents: the incidents file; dataset: the data set used when none is given.
        out: the new index folder (folder store; default under ``models/indexes/``).
        store: a ``postgresql://`` URL instead of a folder; collection: its name there
            (default: the data set or file name); replace: rebuild an existing one.
        engine: how documents are embedded (default: in this process).
        **options: :func:`~itsm_core.serving.index.build_in_memory` options.

    Returns:
        The opened index.
    """
    from itsm_core.data.datasets import processed_path

    engine = engine or Engine(batch_size=options.pop("batch_size", 32))
    options.update(engine=asdict(engine), batch_size=engine.batch_size)
    if engine.name != "local":  # in this process build_in_memory encodes, keyed for reuse
        options["encode"] = engine.encode
    if not store:
        if collection or replace:
            raise ItsmError("--collection / --replace apply to a PostgreSQL store",
                            where="--collection", fix="add --store postgresql://... or drop "
                            "them (a folder index is always new)")
        return build_index_into_models(model, incidents, dataset, out, **options)
    if out:
        raise ItsmError("--out and --store are two places for one index", where="--out",
                        fix="choose one")
    check_store_url(store)
    path = Path(incidents) if incidents else processed_path(dataset)
    name = check_collection_name(collection or (path.stem if incidents else dataset))
    if not replace and name in [c["name"] for c in list_collections(store)]:  # before encoding
        raise ItsmError(f"collection {name!r} already exists", where="--collection",
                        fix="choose another --collection, or pass --replace to rebuild it")
    built = build_in_memory(model, path, **options)
    idx = create_collection(store, name, built.meta, built.embeddings, built.incidents,
                            replace=replace, progress=len(built.incidents) > 20_000)
    idx._encoder = built.encoder
    return idx


def publish(index: str | Path | None, store: str | None, collection: str | None = None, *,
            replace: bool = False) -> PgIndex:
    """``itsm index publish``: copy a folder index (default: the newest) into a PostgreSQL
    store as it is - same embeddings, incidents and manifest (fusion and duplicate
    threshold chosen on validation); nothing is re-encoded.

    Args:
        index: the folder; store: the ``postgresql://`` URL; collection: its name there
            (default: the folder's data set name); replace: overwrite an existing one.
    """
    check_store_url(store)
    folder = open_index(index)
    name = check_collection_name(collection or Path(folder.path).name.split("_", 1)[-1])
    meta = {**folder.meta, "history": [*folder.meta.get("history", []), {
        "op": "publish", "source": str(folder.path), "n": len(folder)}]}
    idx = create_collection(store, name, meta, folder.embeddings, folder.incidents,
                            replace=replace, progress=len(folder) > 20_000)
    idx._encoder = folder._encoder
    return idx


def collections(store: str | None) -> list[dict[str, Any]]:
    """``itsm index list``: the collections of a PostgreSQL store."""
    return list_collections(check_store_url(store))


def open_store(index: str | Path | None = None, store: str | None = None,
               collection: str | None = None, lexical: str = "bm25") -> IndexBase:
    """The index to search: a collection of a PostgreSQL ``store`` (its lexical scorer
    ``lexical``: ``fts`` or ``bm25``, see :class:`PgIndex`), else the folder ``index``
    (default: the newest under ``models/indexes/``)."""
    if store:
        check_store_url(store)
        if index:
            raise ItsmError("--index and --store are two places for one index",
                            where="--index", fix="choose one (--collection names the one "
                            "in the store)")
        return PgIndex(store, collection, lexical=lexical)
    if collection:
        raise ItsmError("--collection applies to a PostgreSQL store", where="--collection",
                        fix="add --store postgresql://...")
    return open_index(index)
