"""A tiny random BERT sentence-transformers model (2 layers, 32-d) for fast export /
search tests. It uses MiniLM's packaged tokenizer, so it needs no hub and no download.
"""

from __future__ import annotations

from pathlib import Path


def make_tiny_model(path: Path, seed: int = 0) -> Path:
    """Write a tiny sentence-transformers model (mean pooling, normalised) to ``path``."""
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
    raw = path.parent / f".{path.name}-raw"
    tok = AutoTokenizer.from_pretrained(resolve_spec("minilm").path)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=128, initializer_range=0.5)
    BertModel(cfg).save_pretrained(raw)
    tok.save_pretrained(raw)
    st = SentenceTransformer(modules=[Transformer(str(raw), max_seq_length=64),
                                      Pooling(32, "mean"), Normalize()], device="cpu")
    st.save(str(path))
    return path
