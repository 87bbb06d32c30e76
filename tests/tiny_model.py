"""A tiny random BERT sentence-transformer (2 layers, 32-d) for fast training tests.

Built from the packaged MiniLM tokenizer, so no hub access is needed; its weights are
random (quality is meaningless), only the wiring is tested.
"""

from __future__ import annotations

import json
from pathlib import Path


def build_tiny_model(out: Path, name: str = "tiny", seed: int = 0) -> Path:
    """Save a tiny BERT sentence-transformer (mean pooling + normalize) to ``out``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import (
        Normalize,
        Pooling,
        Transformer,
    )
    from transformers import AutoTokenizer, BertConfig, BertModel

    from itsm_core.encoders.registry import resolve_spec

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(resolve_spec("minilm").path)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=128)
    hf_dir = out.parent / f".{out.name}_hf"
    BertModel(cfg).save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)
    model = SentenceTransformer(modules=[Transformer(str(hf_dir), max_seq_length=64),
                                         Pooling(32, "mean"), Normalize()], device="cpu")
    model.save_pretrained(str(out))
    spec = {"key": name, "hub_id": None, "dim": 32, "pooling": "mean",
            "matryoshka_dims": [32, 16], "lora_target_modules": ["query", "key", "value",
                                                                 "dense"],
            "max_seq_length": 64, "path": None, "extra": {}}
    (out / "itsm_model.json").write_text(json.dumps({"name": name, "spec": spec}))
    return out
