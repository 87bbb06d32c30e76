"""Pair construction with model-independent lexical difficulty.

Difficulty is measured with a *lexical* score (Jaccard overlap of word sets), never with
an embedding model, so the pair sets that judge a model are not derived from any model.
``easy`` positives share many words and ``easy`` negatives share few; ``hard`` positives
share few words and ``hard`` negatives share many.

This module builds the balanced evaluation pair sets of evaluate_v2; training-pair
generation (curriculum, mined negatives) builds on the same lexical score.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from itsm_core.config import SEED
from itsm_core.errors import ItsmError

_TOKEN = re.compile(r"[a-z0-9]{2,}")
BANDS = ("easy", "medium", "hard")


def token_set(text: str) -> frozenset[str]:
    """Lower-cased word set of a text (tokens of 2+ alphanumerics)."""
    return frozenset(_TOKEN.findall(str(text).lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a ∩ b| / |a ∪ b| (0 for two empty sets)."""
    if not a and not b:
        return 0.0
    return len(a & b) / len(a | b)


def lexical_scores(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """Jaccard word overlap of aligned text pairs (the model-independent difficulty)."""
    cache: dict[str, frozenset[str]] = {}

    def ts(t: str) -> frozenset[str]:
        if t not in cache:
            cache[t] = token_set(t)
        return cache[t]

    return np.array([jaccard(ts(x), ts(y)) for x, y in zip(a, b)], dtype=np.float32)


def assign_bands(lexical: np.ndarray, label: np.ndarray, edges: tuple[float, float]) -> np.ndarray:
    """Band per pair: positives are hard when overlap is low, negatives when it is high."""
    lo, hi = edges
    low, high = lexical < lo, lexical >= hi
    band = np.full(len(lexical), "medium", dtype=object)
    pos = label == 1
    band[pos & high] = "easy"
    band[pos & low] = "hard"
    band[~pos & low] = "easy"
    band[~pos & high] = "hard"
    return band


@dataclass
class PairSetConfig:
    """How a balanced evaluation pair set is drawn.

    Attributes:
        n_per_band: pairs per (class, band) cell: positives and negatives each get up to
            this many easy, medium and hard pairs, so the set is balanced and always
            contains hard cases.
        partial_share: graded-label data only: partially relevant pairs (e.g. same
            category, other subcategory) added for the Spearman correlation, as a share
            of the positives. They are not used for classification metrics.
        band_quantiles: the lexical-score quantiles (over all candidates) that separate
            low / medium / high overlap.
        candidates_factor: candidates drawn per wanted pair before banding.
    """

    n_per_band: int = 200
    partial_share: float = 0.5
    band_quantiles: tuple[float, float] = (1 / 3, 2 / 3)
    candidates_factor: int = 8
    seed: int = SEED


def annotate(cand: pd.DataFrame, texts: pd.Series,
             band_quantiles: tuple[float, float] = (1 / 3, 2 / 3)) -> pd.DataFrame:
    """Add texts, lexical overlap and band to candidate pairs (``a, b, label`` columns).

    Band edges are quantiles of the lexical score over *all* candidates, so positives
    and negatives are banded on one common scale; the edges are kept in ``attrs``.
    """
    cand = cand.drop_duplicates(["a", "b"]).reset_index(drop=True)
    cand["text_a"] = texts.loc[cand["a"]].to_numpy()
    cand["text_b"] = texts.loc[cand["b"]].to_numpy()
    cand["lexical"] = lexical_scores(cand["text_a"], cand["text_b"])
    lo, hi = (float(np.quantile(cand["lexical"], q)) for q in band_quantiles)
    if hi <= lo:
        hi = float(np.nextafter(lo, 1.0))
    lab = cand["label"].fillna(-1).to_numpy()
    cand["band"] = assign_bands(cand["lexical"].to_numpy(), lab, (lo, hi))
    cand.loc[cand["label"].isna(), "band"] = "partial"
    cand.attrs["band_edges"] = (lo, hi)
    return cand


def sample_balanced(cand: pd.DataFrame, n_per_band: dict[float, int], seed: int) -> pd.DataFrame:
    """Up to ``n_per_band[label]`` pairs from each (label, band) cell, shuffled.

    Labels missing from ``n_per_band`` are kept whole; a NaN label (partial pairs) is
    looked up under the key ``-1``.
    """
    rng = np.random.default_rng(seed)
    parts = []
    for (label, _band), grp in cand.groupby([cand["label"].fillna(-1), "band"]):
        n = n_per_band.get(label, len(grp))
        parts.append(grp.iloc[rng.permutation(len(grp))[:n]])
    out = pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    out.attrs = dict(cand.attrs)
    return out


def label_pair_set(df: pd.DataFrame, texts: pd.Series, labels: Sequence[str],
                   cfg: PairSetConfig | None = None) -> pd.DataFrame:
    """Balanced pair set from graded labels within the incidents of ``df``.

    Grade = number of leading label levels shared (e.g. 2 = same category+subcategory,
    1 = same category only, 0 = different category). ``label`` is 1 for full matches,
    0 for grade 0 and NaN for partial matches (kept for Spearman only). Anchors are
    drawn uniformly over incidents, so large classes do not dominate quadratically.

    Returns columns ``a, b, text_a, text_b, grade, label, lexical, band``.
    """
    cfg = cfg or PairSetConfig()
    labels = list(labels)
    sub = df.dropna(subset=[labels[0]])
    if len(sub) < 4:
        raise ItsmError(f"only {len(sub)} labelled incidents; a pair set needs more",
                        fix="use a larger split or file")
    rng = np.random.default_rng(cfg.seed)
    numbers = sub["number"].to_numpy()
    lab = sub[labels].astype("string").fillna("\x00").to_numpy()
    full_key = pd.Series(["\x1f".join(r) for r in lab], index=numbers)
    groups = {k: g.index.to_numpy() for k, g in full_key.groupby(full_key)}
    n_want = cfg.n_per_band * 3 * cfg.candidates_factor
    anchors = rng.choice(len(numbers), size=n_want)
    rows = []
    for i in anchors:  # positives: same full label
        members = groups[full_key.iat[i]]
        if len(members) > 1:
            j = members[rng.integers(len(members))]
            if j != numbers[i]:
                rows.append((numbers[i], j))
    partners = rng.choice(len(numbers), size=(n_want * 2,))
    anchors2 = rng.choice(len(numbers), size=(n_want * 2,))
    rows += [(numbers[i], numbers[j]) for i, j in zip(anchors2, partners) if i != j]
    cand = pd.DataFrame(rows, columns=["a", "b"])
    pos_of = pd.Series(np.arange(len(numbers)), index=numbers)
    la, lb = lab[pos_of.loc[cand["a"]].to_numpy()], lab[pos_of.loc[cand["b"]].to_numpy()]
    grade = np.zeros(len(cand), dtype=int)
    still = np.ones(len(cand), dtype=bool)
    for level in range(len(labels)):
        still &= (la[:, level] == lb[:, level]) & (la[:, level] != "\x00")
        grade += still
    cand["grade"] = grade
    cand["label"] = np.where(grade == len(labels), 1.0, np.where(grade == 0, 0.0, np.nan))
    # orient each unordered pair once: (a,b) and (b,a) are the same pair
    key = cand[["a", "b"]].apply(lambda r: tuple(sorted(r)), axis=1)
    cand = cand[~key.duplicated()].reset_index(drop=True)
    cand = annotate(cand, texts, cfg.band_quantiles)
    n_partial = int(cfg.n_per_band * 3 * cfg.partial_share)
    out = sample_balanced(cand, {1.0: cfg.n_per_band, 0.0: cfg.n_per_band, -1: n_partial},
                          cfg.seed)
    _require_both(out)
    return out


def link_pair_set(numbers: Sequence[str], links: pd.DataFrame, texts: pd.Series,
                  cfg: PairSetConfig | None = None, all_links: pd.DataFrame | None = None,
                  negative_pool: Sequence[str] | None = None) -> pd.DataFrame:
    """Pair set from explicit links: every link is a positive; negatives are drawn.

    Negatives pair a link end with a random incident from ``negative_pool`` (default
    ``numbers``) that is not linked to it in ``all_links``; they are balanced across
    lexical bands and, in total, as many as the positives.
    """
    cfg = cfg or PairSetConfig()
    all_links = links if all_links is None else all_links
    linked = set(zip(all_links["a"], all_links["b"])) | set(zip(all_links["b"], all_links["a"]))
    pos = links[["a", "b"]].assign(label=1.0, grade=1)
    if pos.empty:
        raise ItsmError("no links in this split, so no positive pairs",
                        fix="check the links file and its split column")
    pool = np.asarray(list(negative_pool if negative_pool is not None else numbers))
    ends = np.asarray(pd.unique(pos[["a", "b"]].to_numpy().ravel()))
    rng = np.random.default_rng(cfg.seed)
    n_cand = max(len(pos) * 3 * cfg.candidates_factor, 300)
    a = ends[rng.integers(len(ends), size=n_cand)]
    b = pool[rng.integers(len(pool), size=n_cand)]
    neg = pd.DataFrame({"a": a, "b": b})
    neg = neg[(neg["a"] != neg["b"]) & ~pd.Series(
        [(x, y) in linked for x, y in zip(neg["a"], neg["b"])], index=neg.index)]
    neg = neg.assign(label=0.0, grade=0)
    cand = annotate(pd.concat([pos, neg], ignore_index=True), texts, cfg.band_quantiles)
    # every positive is kept whatever its band; negatives balanced across bands
    n_neg = max(1, int(np.ceil((cand["label"] == 1).sum() / 3)))
    out = sample_balanced(cand, {0.0: n_neg}, cfg.seed)
    _require_both(out)
    return out


def _require_both(pairs: pd.DataFrame) -> None:
    labels = set(pairs["label"].dropna().astype(int))
    if labels != {0, 1}:
        raise ItsmError(
            f"the evaluation pair set has only class(es) {sorted(labels)}",
            fix="the split needs at least two incidents sharing a label and two that do "
            "not; use a larger file or split",
        )
