"""Pair construction with model-independent lexical difficulty.

Difficulty is measured with a *lexical* score (Jaccard overlap of word sets), never with
an embedding model, so the pair sets that judge a model are not derived from any model.
``easy`` positives share many words and ``easy`` negatives share few; ``hard`` positives
share few words and ``hard`` negatives share many.

This module builds the balanced evaluation pair sets of evaluate_v2; training-pair
generation (curriculum, mined negatives) builds on the same lexical score.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from itsm_core.core.config import SEED
from itsm_core.core.errors import ItsmError

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
    unordered = neg.apply(lambda r: tuple(sorted((r["a"], r["b"]))), axis=1)
    neg = neg[~unordered.duplicated()]
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


# ============================================================================ training


PHASES = ("easy", "medium", "hard")
PAIR_COLUMNS = ("anchor", "positive", "negative", "anchor_id", "positive_id", "negative_id",
                "label", "phase", "source", "negative_source", "lexical_pos", "lexical_neg")


@dataclass
class TrainPairConfig:
    """How training pairs are generated (stored verbatim in the pair file's metadata).

    Attributes:
        labels: label hierarchy; positives share the *full* label (fine label).
        use_topic_group: also pair unlabelled training tickets sharing ``topic_group``
            (a weaker signal; off by default).
        positives_per_anchor: same-label partners drawn per anchor.
        hard_positives_per_anchor: extra partners chosen as the *lowest* word overlap
            among ``hard_positive_pool`` random same-label candidates (cross-lexical hard
            positives: the model cannot rely on shared words).
        negatives: ``tfidf`` (TF-IDF cosine band), ``embedding`` (sentence-transformers
            ``mine_hard_negatives`` with a base model), ``both`` or ``none``.
        tfidf_band: TF-IDF cosine band for hard negatives (the seed's 0.3–0.5).
        mining_model: model spec for embedding mining (``negatives`` = embedding/both).
        phase_shares: share of pairs in easy / medium / hard by difficulty rank.
        min_words: texts with fewer words are dropped (pair validation reports them).
    """

    labels: list[str] = field(default_factory=lambda: ["category", "subcategory"])
    use_topic_group: bool = False
    positives_per_anchor: int = 2
    hard_positives_per_anchor: int = 1
    hard_positive_pool: int = 8
    negatives: str = "tfidf"
    tfidf_band: tuple[float, float] = (0.3, 0.5)
    mining_model: str = "minilm"
    phase_shares: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    min_words: int = 3
    max_anchors: int | None = None
    seed: int = SEED


def _train_frame(df: pd.DataFrame, texts: pd.Series, cfg: TrainPairConfig) -> pd.DataFrame:
    """Training-split incidents with a usable fine label (or links) and enough words."""
    if "split" not in df.columns:
        raise ItsmError("incidents have no split column; training pairs need one so that "
                        "validation and test incidents stay out of training",
                        fix="build the data with `itsm data build` or add a split column")
    tr = df[df["split"] == "train"].copy()
    tr["text"] = texts.loc[tr["number"]].to_numpy()
    tr = tr[tr["text"].str.split().str.len() >= cfg.min_words]
    return tr


def _fine_key(tr: pd.DataFrame, labels: list[str]) -> pd.Series:
    lab = tr[labels].astype("string")
    ok = lab.notna().all(axis=1)
    key = lab.fillna("").agg("\x1f".join, axis=1)
    return key.where(ok)


def _label_positives(tr: pd.DataFrame, key: pd.Series, cfg: TrainPairConfig,
                     rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    ids = tr["number"].to_numpy()
    toks = {n: token_set(t) for n, t in zip(ids, tr["text"])}
    groups = {k: g.to_numpy() for k, g in tr["number"].groupby(key.to_numpy()) if len(g) > 1}
    anchors = [n for n, k in zip(ids, key) if isinstance(k, str) and k in groups]
    if cfg.max_anchors:
        anchors = list(rng.permutation(anchors)[: cfg.max_anchors])
    key_of = dict(zip(ids, key))
    for a in anchors:
        members = groups[key_of[a]]
        others = members[members != a]
        for b in rng.choice(others, size=min(cfg.positives_per_anchor, len(others)),
                            replace=False):
            rows.append((a, b, "same_label"))
        if cfg.hard_positives_per_anchor:
            pool = rng.choice(others, size=min(cfg.hard_positive_pool, len(others)),
                              replace=False)
            ranked = sorted(pool, key=lambda b, a=a: jaccard(toks[a], toks[b]))
            for b in ranked[: cfg.hard_positives_per_anchor]:
                rows.append((a, b, "hard_positive"))
    return pd.DataFrame(rows, columns=["anchor_id", "positive_id", "source"])


def link_components(ids: set[str], links: pd.DataFrame) -> dict[str, str]:
    """Duplicate cluster of each incident in ``ids`` (union-find over links inside ``ids``).

    Incidents linked directly or transitively share a component: none of them may be a
    negative for another, and they form one class for label-aware in-batch negatives.
    """
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent.setdefault(parent[x], parent[x])
            x = parent[x]
        return x

    for a, b in zip(links["a"], links["b"]):
        if a in ids and b in ids:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return {n: find(n) for n in parent}


def _link_positives(tr_ids: set[str], links: pd.DataFrame) -> pd.DataFrame:
    tl = links[links["split"] == "train"] if "split" in links.columns else links
    rows = []
    for a, b in zip(tl["a"], tl["b"]):
        if a in tr_ids and b in tr_ids:
            rows += [(a, b, "link"), (b, a, "link")]
    return pd.DataFrame(rows, columns=["anchor_id", "positive_id", "source"])


def _tfidf_negatives(tr: pd.DataFrame, keys: Sequence[pd.Series], anchors: Sequence[str],
                     band: tuple[float, float], rng: np.random.Generator
                     ) -> dict[str, tuple[str, str]]:
    """One negative per anchor: TF-IDF cosine inside ``band``, never sharing any of
    ``keys`` with the anchor (fine label, duplicate-link component)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    ids = tr["number"].to_numpy()
    pos = {n: i for i, n in enumerate(ids)}
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32)
    X = vec.fit_transform(tr["text"])
    # integer codes per key (missing = -1): robust to pd.NA / NaN / string dtypes
    key_codes = [pd.factorize(pd.Series(k).astype(object).where(pd.Series(k).notna(), None),
                              use_na_sentinel=True)[0] for k in keys]
    out: dict[str, tuple[str, str]] = {}
    uniq = list(dict.fromkeys(anchors))
    for start in range(0, len(uniq), 512):
        chunk = uniq[start:start + 512]
        rows = np.array([pos[a] for a in chunk])
        sims = (X[rows] @ X.T).toarray()
        for r, a in zip(rows, chunk):
            s = sims[np.where(rows == r)[0][0]]
            bad = np.zeros(len(ids), bool)
            for codes in key_codes:
                if codes[r] >= 0:
                    bad |= codes == codes[r]
            bad[r] = True
            in_band = np.where((s >= band[0]) & (s < band[1]) & ~bad)[0]
            if len(in_band):
                out[a] = (ids[rng.choice(in_band)], "tfidf_band")
            else:  # nothing in the band: the most similar allowed text below it
                allowed = np.where(~bad & (s < band[1]))[0]
                if len(allowed):
                    out[a] = (ids[allowed[np.argmax(s[allowed])]], "tfidf_below_band")
    return out


def _embedding_negatives(tr: pd.DataFrame, key: pd.Series, pairs: pd.DataFrame,
                         model: Any, n_candidates: int = 8
                         ) -> dict[tuple[str, str], tuple[str, str]]:
    """Negatives mined with sentence-transformers ``mine_hard_negatives``.

    False-negative guard: of the mined candidates (the two nearest skipped as likely
    duplicates), the first one that does NOT share the anchor's fine label is used;
    candidates of the same label are discarded.
    """
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    text_of = dict(zip(tr["number"], tr["text"]))
    key_of = dict(zip(tr["text"], key))
    id_of = dict(zip(tr["text"], tr["number"]))
    ds = Dataset.from_dict({"anchor": [text_of[a] for a in pairs["anchor_id"]],
                            "positive": [text_of[p] for p in pairs["positive_id"]]})
    # No score margin: the library's relative margin (negative < 0.95 x positive score)
    # emptied all candidates of ~99 % of the pairs on it_tickets, because hard positives
    # (few shared words) score low; the label guard below is the false-negative guard.
    # "triplet" output keeps every candidate (best first) per (anchor, positive).
    mined = mine_hard_negatives(ds, model, corpus=list(tr["text"]), num_negatives=n_candidates,
                                range_min=2, range_max=2 + 4 * n_candidates,
                                sampling_strategy="top", output_format="triplet",
                                batch_size=64, verbose=False)
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for a, p, cand in zip(mined["anchor"], mined["positive"], mined["negative"]):
        pair = (id_of[a], id_of[p])
        if pair in out or not cand:
            continue
        anchor_key = key_of.get(a)
        if anchor_key is None or key_of.get(cand) != anchor_key:
            out[pair] = (id_of[cand], "embedding")
    return out


def assign_phases(lexical_pos: np.ndarray, lexical_neg: np.ndarray,
                  shares: tuple[float, float, float]) -> np.ndarray:
    """Curriculum phase per pair from word overlap alone (no model involved).

    Difficulty = mean of (1 - rank of positive overlap) and (rank of negative overlap):
    a positive sharing few words and a negative sharing many is hard. Pairs without a
    negative use the positive term only. The ``shares`` of lowest / middle / highest
    difficulty become easy / medium / hard.
    """
    n = len(lexical_pos)
    if n == 0:
        return np.array([], dtype=object)
    rank = pd.Series(lexical_pos).rank(pct=True).to_numpy()
    diff = 1.0 - rank
    has_neg = ~np.isnan(lexical_neg)
    if has_neg.any():
        neg_rank = pd.Series(lexical_neg[has_neg]).rank(pct=True).to_numpy()
        diff[has_neg] = (diff[has_neg] + neg_rank) / 2
    order = pd.Series(diff).rank(method="first", pct=True).to_numpy()
    c1, c2 = shares[0], shares[0] + shares[1]
    return np.where(order <= c1, "easy", np.where(order <= c2, "medium", "hard")).astype(object)


def generate_training_pairs(df: pd.DataFrame, texts: pd.Series, cfg: TrainPairConfig | None = None,
                            links: pd.DataFrame | None = None, *,
                            mining_model: Any = None) -> pd.DataFrame:
    """Training pairs (anchor, positive, negative) from the TRAINING split only.

    ``mining_model`` is the loaded sentence-transformers model that mines embedding
    negatives (needed when ``cfg.negatives`` is ``embedding`` or ``both``; the training
    layer loads ``cfg.mining_model`` and passes it, so pair generation never loads models).

    Positives come from the relevance signal (same fine label, or explicit training
    links) — never from an embedding score. Negatives come from a TF-IDF band and/or
    embedding mining, and never share the anchor's fine label (false-negative guard).
    Each pair gets a curriculum ``phase`` from its lexical difficulty and a ``label``
    (integer fine-class id of the anchor) used for label-aware in-batch negatives.

    Args:
        df: canonical incidents with a ``split`` column (only ``train`` rows are used).
        texts: embedded text per incident number.
        cfg: pair settings (labels, negatives, band, positives per anchor, phases, seed).
        links: duplicate links (their ``train`` links give the positives).
        mining_model: see above.

    Returns:
        One row per pair: ids, texts, negative (and its source), phase, label.
    """
    cfg = cfg or TrainPairConfig()
    if cfg.negatives in ("embedding", "both") and mining_model is None:
        raise ItsmError(f"embedding negatives need a mining model (negatives={cfg.negatives!r})",
                        where="generate_training_pairs",
                        fix="pass mining_model= (itsm_core.training.finetune.make_pairs loads "
                        "cfg.mining_model)")
    rng = np.random.default_rng(cfg.seed)
    missing = pd.Index(df["number"]).difference(texts.index)
    if len(missing):
        raise ItsmError(f"{len(missing)} incidents have no text (e.g. {list(missing[:3])})",
                        fix="pass texts indexed by incident number "
                        "(pd.Series(texts, index=df['number']))")
    tr = _train_frame(df, texts, cfg)
    label_key = (_fine_key(tr, cfg.labels)
                 if all(c in tr.columns for c in cfg.labels) and tr[cfg.labels[0]].notna().any()
                 else pd.Series(np.nan, index=tr.index, dtype=object))
    if links is not None:
        train_links = links[links["split"] == "train"] if "split" in links.columns else links
        comp = link_components(set(tr["number"]), train_links)
        key = tr["number"].map(lambda n: f"link:{comp[n]}" if n in comp else np.nan)
        pos = _link_positives(set(tr["number"]), links)
    else:
        key = _fine_key(tr, cfg.labels)
        if cfg.use_topic_group and "topic_group" in tr.columns:
            key = key.fillna("topic:" + tr["topic_group"].astype("string")).where(
                key.notna() | tr["topic_group"].notna())
        # negatives must have a KNOWN different label: unlabelled tickets could share the
        # anchor's class, so the false-negative guard could not vouch for them
        tr, key, label_key = tr[key.notna()], key[key.notna()], label_key[key.notna()]
        pos = _label_positives(tr, key, cfg, rng)
    pos = pos.drop_duplicates(["anchor_id", "positive_id"]).reset_index(drop=True)
    if pos.empty:
        raise ItsmError("no positive training pairs could be formed from the train split",
                        fix="check the labels / links and that the train split has at least "
                        "two incidents per label")
    text_of = dict(zip(tr["number"], tr["text"]))
    key_of = dict(zip(tr["number"], key))
    pos["anchor"] = pos["anchor_id"].map(text_of)
    pos["positive"] = pos["positive_id"].map(text_of)
    pos["negative_id"] = None
    pos["negative_source"] = None
    if cfg.negatives in ("tfidf", "both"):
        negs = _tfidf_negatives(tr, [key, label_key], pos["anchor_id"].tolist(),
                                cfg.tfidf_band, rng)
        pos["negative_id"] = pos["anchor_id"].map(lambda a: negs.get(a, (None, None))[0])
        pos["negative_source"] = pos["anchor_id"].map(lambda a: negs.get(a, (None, None))[1])
    if cfg.negatives in ("embedding", "both"):
        mined = _embedding_negatives(tr, key, pos, mining_model)
        take = np.ones(len(pos), bool) if cfg.negatives == "embedding" else (
            rng.random(len(pos)) < 0.5)
        for i, (a, p) in enumerate(zip(pos["anchor_id"], pos["positive_id"])):
            if take[i] and (a, p) in mined:
                pos.iat[i, pos.columns.get_loc("negative_id")] = mined[(a, p)][0]
                pos.iat[i, pos.columns.get_loc("negative_source")] = mined[(a, p)][1]
    elif cfg.negatives not in ("tfidf", "none"):
        raise ItsmError(f"unknown negative strategy {cfg.negatives!r}",
                        fix="use tfidf, embedding, both or none")
    pos["negative"] = pos["negative_id"].map(lambda n: text_of.get(n) if n else None)
    pos["lexical_pos"] = lexical_scores(pos["anchor"], pos["positive"])
    has_neg = pos["negative"].notna().to_numpy()
    lex_neg = np.full(len(pos), np.nan, dtype=np.float32)
    if has_neg.any():
        lex_neg[has_neg] = lexical_scores(pos.loc[has_neg, "anchor"], pos.loc[has_neg, "negative"])
    pos["lexical_neg"] = lex_neg
    if "topic_group" in tr.columns and links is None:
        tg = dict(zip(tr["number"], tr["topic_group"]))
        cross = pos["anchor_id"].map(tg) != pos["positive_id"].map(tg)
        pos.loc[cross & (pos["source"] == "same_label"), "source"] = "cross_category"
    pos["phase"] = assign_phases(pos["lexical_pos"].to_numpy(), lex_neg, cfg.phase_shares)
    classes = {k: i for i, k in enumerate(sorted({str(k) for k in key_of.values()
                                                   if isinstance(k, str)}))}
    pos["label"] = pos["anchor_id"].map(lambda a: classes.get(key_of.get(a), -1)).astype(int)
    out = pos[list(PAIR_COLUMNS)].reset_index(drop=True)
    n_classes = len(classes)
    out.attrs["meta"] = {"config": asdict(cfg), "n_train_incidents": len(tr),
                         "n_classes": n_classes}
    return out


def order_by_curriculum(pairs: pd.DataFrame, seed: int = SEED) -> pd.DataFrame:
    """Rows shuffled within each phase, phases in easy → medium → hard order."""
    unknown = set(pairs["phase"]) - set(PHASES)
    if unknown:
        raise ItsmError(f"unknown curriculum phase(s) {sorted(map(str, unknown))}",
                        fix=f"phases must be one of {list(PHASES)}")
    parts = [pairs[pairs["phase"] == p].sample(frac=1.0, random_state=seed) for p in PHASES]
    return pd.concat(parts, ignore_index=True)


@dataclass
class PairQualityReport:
    """Outcome of :func:`validate_pairs`; ``errors`` block training, ``warnings`` inform."""

    counts: dict[str, int]
    errors: list[str]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return asdict(self)


def validate_pairs(pairs: pd.DataFrame, incidents: pd.DataFrame,
                   labels: Sequence[str] | None = ("category", "subcategory"),
                   min_words: int = 3, near_duplicate: float = 0.9) -> PairQualityReport:
    """Check a training-pair table before it is used.

    Errors: a validation/test incident inside a pair (leakage across splits), a positive
    whose fine label differs from the anchor's, a negative sharing the anchor's fine
    label. Warnings (counted): exact duplicate pairs, identical anchor/positive texts,
    near-duplicates (word Jaccard ≥ ``near_duplicate``), empty or too-short texts.

    Args:
        pairs: the pair table; incidents: the incidents it was made from (with splits).
        labels: the fine-label columns; min_words / near_duplicate: warning thresholds.

    Returns:
        :class:`PairQualityReport` (``ok``, errors, warnings, counts).
    """
    errors, warnings = [], []
    split_of = incidents.set_index("number")["split"] if "split" in incidents.columns else None
    ids = pd.concat([pairs["anchor_id"], pairs["positive_id"],
                     pairs["negative_id"].dropna()]).astype(str)
    counts: dict[str, int] = {"pairs": len(pairs),
                              "with_negative": int(pairs["negative"].notna().sum())}
    if split_of is not None:
        unknown = set(ids) - set(split_of.index)
        if unknown:
            errors.append(f"{len(unknown)} pair incidents are not in the incidents file")
        held = [n for n in set(ids) & set(split_of.index) if split_of[n] != "train"]
        counts["heldout_incidents_in_pairs"] = len(held)
        if held:
            errors.append(f"leakage: {len(held)} validation/test incidents appear in training "
                          f"pairs (e.g. {sorted(held)[:5]})")
    else:
        errors.append("incidents have no split column: leakage cannot be checked")
    dup = pairs.duplicated(["anchor_id", "positive_id", "negative_id"])
    counts["exact_duplicate_pairs"] = int(dup.sum())
    same = (pairs["anchor"].str.strip().str.lower() == pairs["positive"].str.strip().str.lower())
    counts["identical_texts"] = int(same.sum())
    near = pairs["lexical_pos"] >= near_duplicate if "lexical_pos" in pairs else same
    counts["near_duplicates"] = int((near & ~same).sum())
    short = pd.concat([pairs["anchor"], pairs["positive"], pairs["negative"].dropna()]
                      ).fillna("").str.split().str.len() < min_words
    counts["too_short_texts"] = int(short.sum())
    for name in ("exact_duplicate_pairs", "identical_texts", "near_duplicates",
                 "too_short_texts"):
        if counts[name]:
            warnings.append(f"{counts[name]} {name.replace('_', ' ')}")
    if labels:
        lab = incidents.set_index("number")[list(labels)].astype("string")
        full = lab.notna().all(axis=1)
        key = lab.fillna("").agg("\x1f".join, axis=1).where(full)
        ka, kp = pairs["anchor_id"].map(key), pairs["positive_id"].map(key)
        kn = pairs["negative_id"].map(key)
        conflict_pos = ka.notna() & kp.notna() & (ka != kp) & (pairs["source"] != "link")
        conflict_neg = ka.notna() & kn.notna() & (ka == kn)
        counts["positive_label_conflicts"] = int(conflict_pos.sum())
        counts["negative_label_conflicts"] = int(conflict_neg.sum())
        if conflict_pos.any():
            errors.append(f"{int(conflict_pos.sum())} positives do not share the anchor's label")
        if conflict_neg.any():
            errors.append(f"{int(conflict_neg.sum())} negatives share the anchor's label "
                          "(false negatives)")
    for col in ("phase", "source", "negative_source"):
        if col in pairs:
            for k, v in pairs[col].fillna("none").value_counts().items():
                counts[f"{col}:{k}"] = int(v)
    return PairQualityReport(counts=counts, errors=errors, warnings=warnings)


def write_pair_file(pairs: pd.DataFrame, path: str | Path, meta: dict | None = None) -> Path:
    """Write pairs as Parquet plus ``<name>.meta.json`` (parameters, counts), atomically.

    Refuses to overwrite an existing file: every generation is a new file.
    """
    from itsm_core.core.io import atomic_write_df, atomic_write_json

    path = Path(path)
    if path.suffix != ".parquet":
        raise ItsmError("pair files are Parquet", where=str(path), fix="use a .parquet name")
    if path.exists():
        raise ItsmError("pair file already exists; refusing to overwrite", where=str(path),
                        fix="choose a new --out file name")
    missing = [c for c in ("anchor", "positive", "label", "phase") if c not in pairs.columns]
    if missing:
        raise ItsmError(f"pair table lacks columns {missing}", where=str(path))
    full_meta = copy.deepcopy({**pairs.attrs.get("meta", {}), **(meta or {})})
    full_meta.setdefault("counts", {})
    full_meta["counts"].update({
        "pairs": len(pairs),
        "phase": pairs["phase"].value_counts().to_dict(),
        "source": pairs["source"].value_counts().to_dict() if "source" in pairs else {},
        "with_negative": int(pairs["negative"].notna().sum()) if "negative" in pairs else 0,
    })
    atomic_write_df(path, pairs)
    atomic_write_json(path.with_suffix(".meta.json"), full_meta)
    return path


def read_pair_file(path: str | Path) -> pd.DataFrame:
    """Read a pair file written by :func:`write_pair_file` (metadata in ``attrs['meta']``)."""
    import json

    path = Path(path)
    if not path.exists():
        raise ItsmError("pair file not found", where=str(path), fix="run `itsm pairs` first")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
        raise ItsmError(f"not a readable Parquet pair file ({exc})", where=str(path),
                        fix="regenerate it with `itsm pairs`") from exc
    meta_path = path.with_suffix(".meta.json")
    df.attrs["meta"] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return df
