"""Deterministic, leakage-free train / validation / test splits.

Incidents are split by a salted hash of a *group key* (by default the normalised text),
so identical texts always land in the same split and adding rows never moves existing
ones. Duplicate links are split by link; an incident that ends a test link is a test
incident, whatever its other links say (test > validation > train), so that no test
incident can reach a training pair.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from itsm_core.core.config import SEED, SPLIT_FRACTIONS, SPLITS
from itsm_core.core.errors import ItsmError

_SPLIT_ALIASES = {"val": "validation", "valid": "validation", "dev": "validation"}


def _unit_hash(key: str, seed: int) -> float:
    """Map ``key`` to a reproducible number in [0, 1) (platform and run independent)."""
    digest = hashlib.sha1(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ItsmError(f"unknown split names {sorted(unknown)}", fix=f"use {list(SPLITS)}")
    total = sum(fractions.values())
    if total <= 0 or any(v < 0 for v in fractions.values()):
        raise ItsmError("split fractions must be non-negative and sum to > 0")
    return {s: fractions.get(s, 0.0) / total for s in SPLITS}


def normalise_key(text: str) -> str:
    """Group key for a text: lower-cased, whitespace collapsed."""
    return re.sub(r"\s+", " ", str(text)).strip().lower()


def assign_splits(
    keys: Iterable[str],
    fractions: Mapping[str, float] = SPLIT_FRACTIONS,
    seed: int = SEED,
) -> np.ndarray:
    """Split label for each key: equal keys always get the same split.

    Args:
        keys: group keys (e.g. normalised incident texts); identical keys share a split.
        fractions: wanted share per split (normalised to sum 1).
        seed: salt of the hash; another seed gives another, equally valid, split.
    """
    fr = _check_fractions(fractions)
    edges = np.cumsum([fr[s] for s in SPLITS])
    out = []
    for key in keys:
        u = _unit_hash(normalise_key(key), seed)
        out.append(SPLITS[int(np.searchsorted(edges, u, side="right").clip(0, len(SPLITS) - 1))])
    return np.asarray(out, dtype=object)


def split_links(
    links: pd.DataFrame,
    fractions: Mapping[str, float] = SPLIT_FRACTIONS,
    seed: int = SEED,
) -> pd.Series:
    """Split label per link row (columns ``a``, ``b``), keyed on the unordered pair.

    A link that already carries a ``split`` value keeps it (e.g. an authors' split).
    """
    keys = [" ".join(sorted((str(a), str(b)))) for a, b in zip(links["a"], links["b"])]
    fresh = pd.Series(assign_splits(keys, fractions, seed), index=links.index)
    if "split" in links:
        given = links["split"].astype("string").str.lower().replace(_SPLIT_ALIASES)
        fresh = given.where(given.notna() & (given != ""), fresh).astype(object)
    return fresh


def incident_splits_from_links(
    numbers: Iterable[str], links: pd.DataFrame, default: str = "train"
) -> pd.Series:
    """Split per incident given split links: test > validation > train precedence.

    Incidents that end no link get ``default`` (they are corpus distractors / unlabelled
    training text).
    """
    rank = {"train": 0, "validation": 1, "test": 2}
    best: dict[str, str] = {}
    for a, b, s in zip(links["a"], links["b"], links["split"]):
        for n in (str(a), str(b)):
            if n not in best or rank[s] > rank[best[n]]:
                best[n] = s
    numbers = [str(n) for n in numbers]
    return pd.Series([best.get(n, default) for n in numbers], index=numbers, dtype=object)


def split_summary(df: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """Counts per split (and per ``by`` column when given) for reports and manifests."""
    if by is None:
        return df["split"].value_counts().reindex(SPLITS, fill_value=0).to_frame("n")
    return pd.crosstab(df[by], df["split"]).reindex(columns=list(SPLITS), fill_value=0)
