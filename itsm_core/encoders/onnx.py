"""ONNX encoders: an ``itsm export`` folder as an encoder with the sentence-transformers API.

An export folder (``itsm_export.json`` + ``model_fp32.onnx`` / ``model_int8.onnx`` +
``tokenizer/``, written by :mod:`itsm_core.serving.export`) is a model spec everywhere:
:func:`itsm_core.encoders.factory.load_scorer` detects it and plugs an :class:`OnnxEncoder`
(same ``encode`` signature as sentence-transformers) into the usual
:class:`~itsm_core.encoders.scorers.DenseScorer`. ``<folder>/model_fp32.onnx`` selects the
fp32 variant; the folder alone means INT8.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from itsm_core.core.errors import ItsmError
from itsm_core.core.io import sha256_file
from itsm_core.encoders.registry import ModelSpec

EXPORT_META_FILE = "itsm_export.json"
EXPORT_REPORT_FILE = "export_report.json"
VARIANTS = ("int8", "fp32")
ONNX_FILES = {"fp32": "model_fp32.onnx", "int8": "model_int8.onnx"}


def _fingerprint(path: str | Path | None) -> str | None:
    """SHA-256 of a model folder's weight file (safetensors / bin / onnx), if any."""
    if not path:
        return None
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    for name in ("model.safetensors", "pytorch_model.bin", ONNX_FILES["int8"]):
        if (p / name).exists():
            return sha256_file(p / name)
    return None


def is_export(path: str | Path) -> bool:
    """True for an export folder, or one of its ``.onnx`` files."""
    p = Path(str(path)).expanduser()
    if p.suffix == ".onnx":
        p = p.parent
    return (p / EXPORT_META_FILE).is_file()


def read_export_meta(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.suffix == ".onnx":
        p = p.parent
    f = p / EXPORT_META_FILE
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ItsmError("not an export folder (no itsm_export.json)", where=str(p),
                        fix="run `itsm export --model <model>` and pass its output "
                        "folder") from exc
    except json.JSONDecodeError as exc:
        raise ItsmError(f"malformed export metadata ({exc})", where=str(f),
                        fix="re-run `itsm export`") from exc


def fast_tokenizer(tok_file: Path, max_length: int):
    """The exported fast tokenizer, unpadded (batches pad themselves), truncating."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tok_file))
    tokenizer.no_padding()
    tokenizer.enable_truncation(int(max_length))
    return tokenizer


def cpu_session(onnx_path: Path, threads: int | None = None):
    """An ONNX Runtime CPU session with every graph optimisation; ``threads`` defaults to
    torch's intra-op thread count, so comparisons with torch use the same cores."""
    import onnxruntime as ort

    if threads is None:
        import torch

        threads = torch.get_num_threads()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """ONNX Runtime encoder with the sentence-transformers ``encode`` signature.

    Texts are stripped (as sentence-transformers does), tokenized with the exported fast
    tokenizer, sorted by length and batched with per-batch padding; the graph pools, the
    encoder L2-normalises. ``threads`` defaults to torch's intra-op thread count so the
    comparison with torch uses the same cores.
    """

    def __init__(self, path: str | Path, variant: str | None = None,
                 threads: int | None = None, onnx_file: str | Path | None = None):
        p = Path(path)
        if p.suffix == ".onnx":
            variant = variant or next((v for v, f in ONNX_FILES.items() if f == p.name), None)
            p = p.parent
        self.meta = read_export_meta(p)
        self.variant = variant or self.meta.get("default_variant", "int8")
        if self.variant not in VARIANTS:
            raise ItsmError(f"unknown export variant {self.variant!r}", where=str(path),
                            fix=f"use one of {list(VARIANTS)}")
        self.path = p
        # onnx_file: another graph of the same model and tokenizer (a benchmark candidate)
        self.onnx_path = Path(onnx_file) if onnx_file else p / self.meta["files"][self.variant]
        self._other = onnx_file is not None
        if not self.onnx_path.exists():
            raise ItsmError("the export folder is incomplete", where=str(self.onnx_path),
                            fix="re-run `itsm export`")
        self.max_seq_length = int(self.meta["max_seq_length"])
        # dynamic quantization scales activations over the whole batch: a text's vector
        # then depends on the other texts of its batch (the embedding cache encodes alone)
        self.batch_invariant = not (self.variant == "int8" and onnx_file is None)
        tok_file = p / "tokenizer" / "tokenizer.json"
        if not tok_file.exists():
            raise ItsmError("the export has no tokenizer/tokenizer.json", where=str(p),
                            fix="re-run `itsm export`")
        self.tokenizer = fast_tokenizer(tok_file, self.max_seq_length)
        self.input_names = list(self.meta["input_names"])
        self.session = cpu_session(self.onnx_path, threads)
        self.spec = ModelSpec.from_dict(self.meta["spec"])
        suffix = "" if self.variant == "int8" else f"-{self.variant}"
        self.spec = replace(self.spec, key=self.spec.key + suffix, path=str(
            self.path if self.variant == self.meta.get("default_variant") else self.onnx_path))
        self.dim = int(self.spec.dim)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the ONNX file used (identifies the model in search indexes)."""
        return sha256_file(self.onnx_path) if self._other else self.meta["sha256"][self.variant]

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    def _batch(self, encs: list, idx: np.ndarray) -> dict[str, np.ndarray]:
        width = max(1, max(len(encs[j].ids) for j in idx))
        ids = np.zeros((len(idx), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for r, j in enumerate(idx):
            e = encs[j]
            n = len(e.ids)
            ids[r, :n], mask[r, :n], types[r, :n] = e.ids, 1, e.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {k: feeds[k] for k in self.input_names}

    def encode(self, sentences: str | Sequence[str], batch_size: int = 32,
               convert_to_numpy: bool = True, normalize_embeddings: bool = True,
               show_progress_bar: bool = False, truncate_dim: int | None = None,
               **_: Any) -> np.ndarray:
        """Embeddings (n, dim) float32; L2-normalised unless told otherwise.

        ``truncate_dim`` keeps the first dims (Matryoshka), normalised after truncation.
        """
        single = isinstance(sentences, str)
        texts = [sentences] if single else [str(s).strip() for s in sentences]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if texts:
            encs = self.tokenizer.encode_batch(texts)
            order = np.argsort([len(e.ids) for e in encs], kind="stable")
            starts = range(0, len(texts), max(1, int(batch_size)))
            if show_progress_bar:
                from tqdm.auto import tqdm

                starts = tqdm(starts, desc="onnx encode")
            for s in starts:
                idx = order[s:s + batch_size]
                out[idx] = self.session.run(["embedding"], self._batch(encs, idx))[0]
        if truncate_dim:
            if not 0 < int(truncate_dim) <= self.dim:
                raise ItsmError(f"truncate_dim {truncate_dim} is not in 1..{self.dim}",
                                where=str(self.path), fix="choose e.g. 64, 128 or 256")
            out = np.ascontiguousarray(out[:, : int(truncate_dim)])
        if normalize_embeddings and len(out):
            out /= np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)
        return out[0] if single else out


def load_export(path: str | Path, variant: str | None = None,
                threads: int | None = None) -> OnnxEncoder:
    """One call: the encoder of an export folder (or one of its ``.onnx`` files)."""
    return OnnxEncoder(path, variant=variant, threads=threads)


def export_scorer(path: str | Path, **kwargs: Any):
    """A :class:`~itsm_core.encoders.scorers.DenseScorer` backed by an export (the factory
    uses it for export folders)."""
    from itsm_core.encoders.cache import wrap_encoder
    from itsm_core.encoders.scorers import DenseScorer

    enc = load_export(path)
    return DenseScorer(enc.spec, model=wrap_encoder(enc, str(enc.onnx_path)),
                       **{k: v for k, v in kwargs.items()
                          if k in ("batch_size", "show_progress")})
