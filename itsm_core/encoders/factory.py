"""The one scorer factory: a model spec string in, a :class:`Scorer` out.

Every layer above (evaluation, training, serving, reports, the CLI) builds scorers here and
nowhere else. Composite scorers (ensembles, hybrids) receive their members already built,
so no encoder module imports this factory back.
"""

from __future__ import annotations

from typing import Any

from itsm_core.core.errors import ItsmError
from itsm_core.encoders.ensemble import PREFIX as ENSEMBLE_PREFIX
from itsm_core.encoders.ensemble import (
    EnsembleScorer,
    inline_members,
    is_ensemble_spec,
    member_specs,
    read_ensemble,
)
from itsm_core.encoders.hybrid import HybridScorer, parse_hybrid_spec
from itsm_core.encoders.onnx import export_scorer, is_export
from itsm_core.encoders.registry import REGISTRY
from itsm_core.encoders.rerank import RerankScorer, load_cross_encoder, parse_rerank_spec
from itsm_core.encoders.scorers import BM25Scorer, DenseScorer, Scorer, TfidfScorer


def load_scorer(spec: str, **kwargs: Any) -> Scorer:
    """Scorer for a model spec.

    Args:
        spec: ``tfidf``, ``bm25``, ``ensemble:a,b`` or an ensemble folder,
            ``hybrid:<dense spec>[@w|@rrf]``, ``rerank:<cross-encoder>@<retriever>[#k[,w]]``,
            an ``itsm export`` folder or ``.onnx`` file,
            a registry key, a model folder or a hub id.
        **kwargs: passed to the dense scorers (``batch_size``, ``show_progress``, …).

    Returns:
        A :class:`~itsm_core.encoders.scorers.Scorer`.

    Raises:
        ItsmError: for an empty or unknown spec (with the registry keys to choose from).
    """
    name = str(spec).strip()
    if not name:
        raise ItsmError("empty model name", where="--model",
                        fix=f"pass a registry key ({', '.join(sorted(REGISTRY))}), a model "
                        "folder, a hub id, 'tfidf' or 'bm25'")
    if name.lower() == "tfidf":
        return TfidfScorer()
    if name.lower() == "bm25":
        return BM25Scorer()
    if is_ensemble_spec(name):  # ensemble:a,b or a folder with itsm_ensemble.json
        config, folder = read_ensemble(name)
        members = [load_scorer(m, **kwargs) for m in member_specs(config)]
        return EnsembleScorer(config, members, folder)
    if name.lower().startswith("rerank:"):  # retriever top-k re-scored by a cross-encoder
        ce_path, retriever, k, weight = parse_rerank_spec(name)
        ce = load_cross_encoder(ce_path)
        return RerankScorer(load_scorer(retriever, **kwargs), ce, k, weight=weight,
                            name=_reranker_name(ce_path),
                            show_progress=kwargs.get("show_progress", True))
    if name.lower().startswith("hybrid:"):  # BM25 + dense, fusion chosen on validation
        dense_spec, fusion = parse_hybrid_spec(name)
        return HybridScorer(load_scorer(dense_spec, **kwargs), fusion)
    if is_export(name):  # an `itsm export` folder (INT8) or one of its .onnx files
        return export_scorer(name, **kwargs)
    return DenseScorer(name, **kwargs)


def resolve_trained(spec: str, dataset: str, *, where: str = "--model") -> str:
    """A model spec with trained-model NAMES replaced by the newest such model's folder.

    ``minilm-ft`` (or ``minilm-simcse-ft``, ``mpnet-ft``, …) is read as the newest model of
    that name evaluated on ``dataset``'s test split (the run store), also as the dense side
    of ``hybrid:<name>[@w|@rrf]`` and as the retriever of ``rerank:<ce>@<name>[#k[,w]]``
    (``rerank:<ce>@hybrid:minilm-ft#20``) and as a member of ``ensemble:<a>,<b>``
    (``ensemble:minilm-ft,minilm-simcse-ft``). Registry keys, ``tfidf`` / ``bm25``,
    folders and ensemble folders pass unchanged.

    Args:
        spec: what the user wrote after ``--model`` / ``--retriever``.
        dataset: the data set whose trained runs a name refers to.
        where: the option named in the error.

    Returns:
        A spec :func:`load_scorer` takes.

    Raises:
        ItsmError: for a name that is neither a spec nor a model trained on ``dataset``.
    """
    from pathlib import Path

    from itsm_core.runs.store import latest_model_dir

    name = str(spec).strip()
    if name.lower().startswith("rerank:"):  # the retriever may be a trained name
        _, retriever, _, _ = parse_rerank_spec(name)
        head, _, rest = name.partition("@")
        tail = rest.strip()[len(retriever):]  # "#k[,w]", as written
        return f"{head}@{resolve_trained(retriever, dataset, where=where)}{tail}"
    if name.startswith(ENSEMBLE_PREFIX):  # each member may be a trained name
        return ENSEMBLE_PREFIX + ",".join(resolve_trained(m, dataset, where=where)
                                          for m in inline_members(name))
    if name.lower().startswith("hybrid:"):
        dense, _ = parse_hybrid_spec(name)
        suffix = name.split(":", 1)[1].strip()[len(dense):]
        return f"hybrid:{resolve_trained(dense, dataset, where=where)}{suffix}"
    if (not name or name in REGISTRY or name.lower() in ("tfidf", "bm25") or ":" in name
            or Path(name).exists() or "/" in name):
        return name  # a spec, folder or hub id: load_scorer judges it
    found = latest_model_dir(dataset, name)
    if not found:
        raise ItsmError(f"unknown model {name!r}: neither a model spec nor a model "
                        f"trained on {dataset!r}", where=where,
                        fix=f"train it first (`itsm train --dataset {dataset}`), or pass a "
                        f"registry key ({', '.join(sorted(REGISTRY))}; `itsm models`) or a "
                        "model folder")
    return found


def _reranker_name(path: str) -> str:
    """A trained re-ranker's run name (its ``itsm_reranker.json``), else the folder's."""
    import json
    from pathlib import Path

    from itsm_core.encoders.rerank import CE_EXPORT_FILE, CE_META_FILE

    p = Path(path)
    if p.suffix == ".onnx":
        p = p.parent
    for meta in (p / CE_EXPORT_FILE, p / CE_META_FILE, p.parent / CE_META_FILE):
        if meta.exists():
            try:
                return str(json.loads(meta.read_text(encoding="utf-8")).get("name") or p.name)
            except json.JSONDecodeError:
                break
    return p.name if p.name != "model" else p.parent.name
