"""Batch embedding with Ray Data: the documents of an index build, across actors.

``map_batches`` with a callable class, so each actor loads the model once and encodes many
batches; in local mode (``ray.init(num_cpus=…, include_dashboard=False)``) on one machine,
or on a cluster given its address. The embeddings come back in the input order (each row
carries its position) and go to the store like a local build's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from itsm_core.core.errors import ItsmError


class _Embedder:
    """A Ray actor's callable: the model loaded once, batches encoded on each call."""

    def __init__(self, spec: str, prefix: str, dim: int, threads: int):
        import torch

        from itsm_core.serving.index import load_encoder

        torch.set_num_threads(max(1, threads))
        self.encoder, _, _ = load_encoder(spec, cache=True)
        self.prefix, self.dim = prefix, dim

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from itsm_core.serving.index import _encode_documents

        texts = pd.Series([str(t) for t in batch["text"]])
        emb = _encode_documents(self.encoder, {"document_prefix": self.prefix}, texts,
                                self.dim, batch_size=len(texts))
        return {"row": batch["row"], "embedding": emb}


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start (or join) Ray once per process: local mode unless ``address`` is given."""
    try:
        import ray
    except ImportError:
        raise ItsmError("Ray is not installed", where="--engine ray",
                        fix="run `make env` (ray[data] is in the lock)") from None
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kw = {"address": address} if address else {"num_cpus": num_cpus or os.cpu_count()}
    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
             configure_logging=True, **kw)


def encode_with_ray(spec: str, texts: Sequence[str], prefix: str, dim: int, *,
                    batch_size: int = 64, concurrency: int = 1, address: str | None = None,
                    num_cpus: int | None = None) -> np.ndarray:
    """L2-normalised embeddings of ``texts`` (in their order) computed by Ray actors.

    Args:
        spec: the model spec every actor loads (a folder, an export, a registry key).
        texts: documents; prefix: the model's document prefix; dim: Matryoshka dim.
        batch_size: rows per ``map_batches`` call; concurrency: actors.
        address: a Ray cluster (default: local mode); num_cpus: local-mode CPUs.

    Returns:
        ``(len(texts), dim)`` float32.
    """
    import ray

    init_ray(address, num_cpus)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = len(texts) > 20_000  # long builds show progress
    ctx.enable_operator_progress_bars = ctx.enable_progress_bars
    logging.getLogger("ray.data").setLevel(
        logging.INFO if ctx.enable_progress_bars else logging.WARNING)
    cpus = float(ray.cluster_resources().get("CPU", 1))
    per_actor = max(1.0, cpus // concurrency)
    # longest first, so each batch holds texts of similar length (little padding), as
    # sentence-transformers' own encode does within one call; "row" restores the order
    frame = pd.DataFrame({"row": np.arange(len(texts)), "text": list(texts)})
    frame = frame.iloc[np.argsort(-frame["text"].str.len().to_numpy(), kind="stable")]
    blocks = max(1, min(-(-len(texts) // batch_size), 4 * concurrency))
    bounds = np.linspace(0, len(frame), blocks + 1).astype(int)
    ds = ray.data.from_pandas([frame.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:])])
    out = ds.map_batches(_Embedder, fn_constructor_kwargs={
        "spec": spec, "prefix": prefix, "dim": dim, "threads": int(per_actor)},
        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=per_actor,
        batch_format="numpy")
    emb = np.zeros((len(texts), dim), np.float32)
    seen = 0
    for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
        emb[batch["row"]] = np.stack(batch["embedding"])
        seen += len(batch["row"])
    if seen != len(texts):
        raise ItsmError(f"Ray returned {seen} of {len(texts)} embeddings",
                        where="--engine ray", fix="re-run; check the Ray workers' logs")
    return emb
