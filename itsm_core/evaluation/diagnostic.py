"""Adversarial diagnostic: a test that a lexical matcher fails and a good embedding passes.

The seed's diagnostic found no qualifying pair on its test set and so "passed" every
model. This one builds its pairs from held-out incidents so that word overlap points the
*wrong* way, and it fails loudly when too few pairs qualify:

- **Hard positives**: relevant pairs (same full fine label, e.g. category+subcategory;
  or linked as duplicates) that share few words: lexical score ≤ the
  ``positive_quantile`` (25th percentile) of all relevant pairs of the split.
- **Hard negatives**: non-relevant pairs (different first label, i.e. category; or not
  in the same duplicate cluster) that share many words: lexical score ≥ the
  ``negative_quantile`` (75th percentile) of all non-relevant pairs of the split.
  With ``separate_bands`` the two bands never overlap (every hard negative is lexically
  closer than every hard positive), so a lexical matcher fails by construction.

The lexical score is the TF-IDF cosine (the :class:`~itsm_core.encoders.scorers.TfidfScorer`
baseline) fitted on the split's own texts, or a symmetrised BM25 (``lexical="bm25"``).
Pairs of identical texts are left out (no model can separate them). The test set is
built only from the ``split`` incidents and the threshold set only from the
``threshold_split`` incidents; every unordered pair is used once and the two classes are
disjoint by definition. The band numbers used are stored with every result.

Each model then gets, side by side with TF-IDF, BM25 and the zero-shot models:

- ROC-AUC / PR-AUC and F1 / precision / recall at the threshold chosen on the
  *validation* adversarial set (never on the diagnostic set), with bootstrap CIs, and the
  seed's verdict: pass iff ROC-AUC ≥ 0.70 and F1 ≥ 0.70;
- a **category-shortcut probe**: category-ish words (:data:`SHORTCUT_PHRASES`,
  :data:`GENERIC_ITSM_PHRASES`, plus the label values when they are words) appended to or
  removed from one side of a pair; mean |Δscore| and the share of decisions that flip;
- a **boilerplate probe**: a long signature, confidentiality disclaimer and quoted email
  (with an unrelated ticket's text) appended to a query; Jaccard overlap of its top-k
  neighbours before / after (1.0 = unchanged) and |Δ| of its score with its first
  neighbour.

Results use the shared results schema (task ``diagnose``), one run directory and one
leaderboard row per model. ``itsm diagnose`` and notebook 05 call :func:`run_diagnostic`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from itsm_core.core.config import (
    BOOTSTRAP_RESAMPLES,
    CI_LEVEL,
    LEADERBOARD_CSV,
    RUNS_DIR,
    SEED,
    SPLIT_FRACTIONS,
)
from itsm_core.core.errors import ItsmError
from itsm_core.core.io import sha256_file, unique_run_dir
from itsm_core.encoders.scorers import Scorer

logger = logging.getLogger(__name__)

PASS_ROC_AUC: float = 0.70
"""The seed's criterion: a model passes with ROC-AUC ≥ 0.70 …"""
PASS_F1: float = 0.70
"""… and F1 ≥ 0.70 (at the validation threshold) on the adversarial set."""

SHORTCUT_PHRASES: tuple[str, ...] = (
    "hardware issue", "access request", "network problem", "software install",
    "password reset", "account access", "email issue", "printer hardware",
    "laptop hardware", "server problem", "vpn access", "application issue",
)
"""Category-ish phrases injected into one side of a pair by the shortcut probe."""

GENERIC_ITSM_PHRASES: tuple[str, ...] = (
    "service request", "incident ticket", "urgent issue", "user support request",
    "service desk incident", "access problem",
)
"""Generic ITSM phrases, added to the probe for data sets (like it_tickets) whose label
values are codes rather than words."""

SHORTCUT_WORDS: frozenset[str] = frozenset(
    w for p in (*SHORTCUT_PHRASES, *GENERIC_ITSM_PHRASES) for w in p.split())
"""Words the shortcut probe removes from one side (plus label values that are words)."""

BOILERPLATE_TEMPLATE: str = (
    "\n\nBest regards,\nJohn Smith\nSenior Service Desk Analyst | IT Operations\n"
    "Contoso Ltd. | 1 Main Street, Springfield | www.contoso.com\n"
    "Phone: +1 555 0100 | Mobile: +1 555 0199\n\n"
    "CONFIDENTIALITY NOTICE: This e-mail and any attachments are confidential and may be "
    "privileged. They are intended solely for the use of the addressee. If you have "
    "received this e-mail in error, please notify the sender immediately and delete it "
    "from your system. Any unauthorised use, disclosure, copying or distribution is "
    "strictly prohibited. E-mail transmission cannot be guaranteed to be secure or "
    "error-free. Please consider the environment before printing this e-mail.\n\n"
    "-----Original Message-----\n"
    "From: Jane Doe <jane.doe@contoso.com>\n"
    "Sent: Monday, 3 March 2025 09:14\n"
    "To: IT Service Desk <servicedesk@contoso.com>\n"
    "Subject: RE: ticket update\n\n"
    "{quoted}"
)
"""Appended to a query by the boilerplate probe; ``{quoted}`` = an unrelated ticket."""

KINDS = ("hard_positive", "hard_negative")


# ============================================================================ config


@dataclass
class DiagnosticConfig:
    """Everything that defines the adversarial diagnostic (independent of the model).

    Attributes:
        split: held-out split the diagnostic pairs and probes are drawn from.
        threshold_split: split of the adversarial set that chooses each model's threshold.
        n_pairs: pairs per kind (hard positives, hard negatives); the set is balanced, so
            both kinds get ``min(n_pairs, qualifying positives, qualifying negatives)``.
        lexical: ``tfidf`` (cosine, fitted on the split's texts) or ``bm25``
            (symmetrised) — the lexical score that defines the bands.
        positive_quantile: hard positives have lexical score ≤ this quantile of all
            relevant pairs of the split.
        negative_quantile: hard negatives have lexical score ≥ this quantile of all
            non-relevant pairs of the split.
        band_positive / band_negative: absolute ``(low, high)`` lexical bands that
            replace the quantile bands (applied to both splits).
        separate_bands: when the bands overlap, cut both at their midpoint so every hard
            negative is lexically closer than every hard positive.
        min_pairs: fewer qualifying pairs of either kind (in either split) is an error.
        max_pairs_per_incident: an incident appears in at most this many pairs of one
            kind (None: no cap), so a few long texts cannot dominate the set.
        max_pool: at most this many incidents per split are paired (a seeded sample
            beyond; all pairs among them are enumerated).
        n_shortcut / n_boilerplate: pairs / queries of the two probes.
        k: neighbours compared by the boilerplate probe.
        n_resamples / ci_level: bootstrap CIs.
        seed: every sample is deterministic given it.
    """

    split: str = "test"
    threshold_split: str = "validation"
    n_pairs: int = 300
    lexical: str = "tfidf"
    positive_quantile: float = 0.25
    negative_quantile: float = 0.75
    band_positive: tuple[float, float] | None = None
    band_negative: tuple[float, float] | None = None
    separate_bands: bool = True
    min_pairs: int = 30
    max_pairs_per_incident: int | None = 5
    max_pool: int = 2000
    n_shortcut: int = 100
    n_boilerplate: int = 100
    k: int = 10
    n_resamples: int = BOOTSTRAP_RESAMPLES
    ci_level: float = CI_LEVEL
    seed: int = SEED

    def check(self) -> None:
        """Raise :class:`ItsmError` for settings that cannot work."""
        if self.lexical not in ("tfidf", "bm25"):
            raise ItsmError(f"unknown lexical score {self.lexical!r}", where="lexical",
                            fix="use 'tfidf' or 'bm25'")
        if self.split == self.threshold_split:
            raise ItsmError("the threshold split must differ from the diagnostic split",
                            where=f"split={self.split}",
                            fix="choose the threshold on another split (validation)")
        if self.min_pairs < 1 or self.n_pairs < self.min_pairs:
            raise ItsmError(f"need 1 <= min_pairs <= n_pairs, got min_pairs={self.min_pairs}"
                            f", n_pairs={self.n_pairs}", where="--min-pairs / --n-pairs",
                            fix="raise --n-pairs or lower --min-pairs")
        for name in ("positive_quantile", "negative_quantile"):
            q = getattr(self, name)
            if not 0.0 < q < 1.0:
                raise ItsmError(f"{name} must lie strictly between 0 and 1, got {q}",
                                where=name, fix="e.g. 0.25 / 0.75")
        for name in ("band_positive", "band_negative"):
            band = getattr(self, name)
            if band is not None and (len(band) != 2 or band[0] > band[1]):
                raise ItsmError(f"{name} must be (low, high) with low <= high, got {band}",
                                where=name)
        if self.k < 1 or self.max_pool < 4:
            raise ItsmError("k must be >= 1 and max_pool >= 4", where="diagnostic config")


# ============================================================================ pair sets


@dataclass
class AdversarialSet:
    """The adversarial pairs of one split.

    Attributes:
        split: the split every incident of ``pairs`` belongs to.
        pairs: ``a, b, text_a, text_b, label, lexical, kind`` (kind in :data:`KINDS`;
            label 1 for hard positives, 0 for hard negatives).
        bands: the lexical bands used (numbers, quantiles, source).
        counts: incidents, relevant / non-relevant pairs, qualifying and selected pairs.
        notes: anything the reader should know (sampling, band separation).
    """

    split: str
    pairs: pd.DataFrame
    bands: dict[str, Any]
    counts: dict[str, int]
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"split": self.split, "bands": self.bands, "counts": self.counts,
                "notes": self.notes}


def lexical_matrix(texts: Sequence[str], lexical: str = "tfidf") -> np.ndarray:
    """Symmetric all-pairs lexical similarity of ``texts`` (the model-independent score).

    ``tfidf``: the TF-IDF baseline's cosine, IDF fitted on these texts; ``bm25``: BM25
    of each text against the others, averaged over both directions.
    """
    from itsm_core.encoders.scorers import BM25Scorer, TfidfScorer

    texts = list(texts)
    if lexical == "tfidf":
        return TfidfScorer().score_matrix(texts, texts).astype(np.float64)
    if lexical == "bm25":
        s = BM25Scorer().score_matrix(texts, texts).astype(np.float64)
        return (s + s.T) / 2.0
    raise ItsmError(f"unknown lexical score {lexical!r}", fix="use 'tfidf' or 'bm25'")


def _bands(lex: np.ndarray, pos: np.ndarray, neg: np.ndarray, cfg: DiagnosticConfig,
           notes: list[str]) -> dict[str, Any]:
    """Hard-positive band (low, high) and hard-negative band (low, high) for one split."""
    if cfg.band_positive is not None:
        p_lo, p_hi = (float(x) for x in cfg.band_positive)
        p_src = "absolute"
    else:
        p_lo = float(min(0.0, lex[pos].min()))
        p_hi = float(np.quantile(lex[pos], cfg.positive_quantile))
        p_src = f"quantile {cfg.positive_quantile:g} of relevant pairs"
    if cfg.band_negative is not None:
        n_lo, n_hi = (float(x) for x in cfg.band_negative)
        n_src = "absolute"
    else:
        n_lo = float(np.quantile(lex[neg], cfg.negative_quantile))
        n_hi = float(lex[neg].max())
        n_src = f"quantile {cfg.negative_quantile:g} of non-relevant pairs"
    separated = False
    if cfg.separate_bands and n_lo <= p_hi:
        cut = _best_cut(lex[pos & (lex >= p_lo)], lex[neg & (lex <= n_hi)], n_lo, p_hi)
        notes.append(f"lexical bands overlapped (hard positive <= {p_hi:.4f}, hard negative "
                     f">= {n_lo:.4f}); cut at {cut:.4f} (the cut inside the overlap that "
                     "keeps the most pairs of the scarcer kind) so they are disjoint")
        p_hi, n_lo = cut, float(np.nextafter(cut, np.inf))
        separated = True
    if cfg.separate_bands and n_lo <= 0.0:
        # a "hard" negative must share at least something
        n_lo = float(np.nextafter(max(p_hi, 0.0), np.inf))
    return {"hard_positive": [p_lo, p_hi], "hard_negative": [n_lo, n_hi],
            "hard_positive_source": p_src, "hard_negative_source": n_src,
            "separated": separated, "lexical": cfg.lexical,
            "relevant_quantiles": _quantiles(lex[pos]),
            "non_relevant_quantiles": _quantiles(lex[neg])}


def _best_cut(pos_lex: np.ndarray, neg_lex: np.ndarray, lo: float, hi: float) -> float:
    """The cut ``c`` in ``[lo, hi]`` maximising min(#positives <= c, #negatives > c)
    (ties: the cut nearest the middle of the overlap)."""
    pos_s, neg_s = np.sort(pos_lex), np.sort(neg_lex)
    cands = np.unique(np.r_[lo, hi, pos_s[(pos_s >= lo) & (pos_s <= hi)],
                            neg_s[(neg_s >= lo) & (neg_s <= hi)]])
    n_pos = np.searchsorted(pos_s, cands, side="right")
    n_neg = len(neg_s) - np.searchsorted(neg_s, cands, side="right")
    best = np.minimum(n_pos, n_neg)
    ok = np.flatnonzero(best == best.max())
    return float(cands[ok[np.argmin(np.abs(cands[ok] - (lo + hi) / 2.0))]])


def _quantiles(x: np.ndarray) -> dict[str, float]:
    return {f"q{int(q * 100)}": float(np.quantile(x, q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)}


def _capped_sample(idx: np.ndarray, ia: np.ndarray, ib: np.ndarray, n: int,
                   cap: int | None, rng: np.random.Generator) -> list[int]:
    """Up to ``n`` of ``idx`` in random order, each incident used at most ``cap`` times."""
    order = idx[rng.permutation(len(idx))]
    if cap is None:
        return order[:n].tolist()
    used: Counter = Counter()
    out: list[int] = []
    for t in order:
        a, b = ia[t], ib[t]
        if used[a] < cap and used[b] < cap:
            out.append(int(t))
            used[a] += 1
            used[b] += 1
            if len(out) >= n:
                break
    return out


def build_adversarial_set(ids: Sequence[str], texts: pd.Series, relevant: np.ndarray,
                          non_relevant: np.ndarray, *, split: str,
                          config: DiagnosticConfig | None = None, seed: int | None = None,
                          where: str = "incidents") -> AdversarialSet:
    """Hard positives and hard negatives among the incidents ``ids`` (one split).

    Args:
        ids: incident numbers of the split (all pairs among them are candidates).
        texts: incident number -> text.
        relevant / non_relevant: boolean ``(n, n)`` matrices over ``ids`` (only the upper
            triangle is read); a pair may be neither (e.g. same category, other
            subcategory), never both.
        split: name of the split (stored and used in messages).
        config: bands, sizes, caps and seed (seed overridden by ``seed``).

    Raises:
        ItsmError: fewer than ``min_pairs`` hard positives or hard negatives qualify.
    """
    from itsm_core.data.splits import normalise_key

    cfg = config or DiagnosticConfig()
    rng = np.random.default_rng(cfg.seed if seed is None else seed)
    ids = np.asarray(list(ids), dtype=object)
    n = len(ids)
    notes: list[str] = []
    txt = texts.loc[ids].astype(str).to_numpy()
    fix = ("widen the bands (positive_quantile / negative_quantile, or absolute "
           "band_positive / band_negative), lower min_pairs (--min-pairs), or use a file "
           "with a bigger held-out split")
    if n < 4:
        raise ItsmError(f"the {split} split holds only {n} usable incidents; the adversarial "
                        f"set needs at least {max(4, cfg.min_pairs)}", where=where, fix=fix)
    iu, ju = np.triu_indices(n, 1)
    keys = np.array([normalise_key(t) for t in txt], dtype=object)
    distinct = keys[iu] != keys[ju]
    pos = relevant[iu, ju] & distinct
    neg = non_relevant[iu, ju] & distinct & ~pos
    counts: dict[str, int] = {
        "incidents": int(n), "relevant_pairs": int(pos.sum()),
        "non_relevant_pairs": int(neg.sum()),
        "identical_text_pairs_excluded": int((~distinct).sum()),
    }
    if pos.sum() == 0 or neg.sum() == 0:
        raise ItsmError(
            f"adversarial set on the {split} split: {counts['relevant_pairs']} relevant and "
            f"{counts['non_relevant_pairs']} non-relevant pairs among {n} incidents, so no "
            f"hard pair can qualify (need >= {cfg.min_pairs} of each kind)",
            where=where, fix=fix)
    lex = lexical_matrix(txt, cfg.lexical)[iu, ju]
    bands = _bands(lex, pos, neg, cfg, notes)
    (p_lo, p_hi), (n_lo, n_hi) = bands["hard_positive"], bands["hard_negative"]
    hp = np.flatnonzero(pos & (lex >= p_lo) & (lex <= p_hi))
    hn = np.flatnonzero(neg & (lex >= n_lo) & (lex <= n_hi))
    counts["hard_positive_in_band"], counts["hard_negative_in_band"] = len(hp), len(hn)
    cap = cfg.max_pairs_per_incident
    sel_p = _capped_sample(hp, iu, ju, cfg.n_pairs, cap, rng)
    sel_n = _capped_sample(hn, iu, ju, cfg.n_pairs, cap, rng)
    counts["hard_positive_qualifying"] = len(sel_p)
    counts["hard_negative_qualifying"] = len(sel_n)
    if min(len(sel_p), len(sel_n)) < cfg.min_pairs:
        raise ItsmError(
            f"too few adversarial pairs on the {split} split: {len(sel_p)} hard positives "
            f"and {len(sel_n)} hard negatives qualify, {cfg.min_pairs} of each are needed "
            f"({n} incidents, {counts['relevant_pairs']} relevant and "
            f"{counts['non_relevant_pairs']} non-relevant pairs; hard positive: "
            f"{cfg.lexical} <= {p_hi:.4f} ({len(hp)} in band), hard negative: "
            f"{cfg.lexical} >= {n_lo:.4f} ({len(hn)} in band)"
            + (f", at most {cap} pairs per incident" if cap else "") + ")",
            where=where, fix=fix)
    m = min(len(sel_p), len(sel_n))
    if len(sel_p) != len(sel_n):
        notes.append(f"balanced to {m} pairs per kind ({len(sel_p)} hard positives, "
                     f"{len(sel_n)} hard negatives qualified)")
    chosen = np.array(sel_p[:m] + sel_n[:m], dtype=int)
    label = np.r_[np.ones(m, dtype=int), np.zeros(m, dtype=int)]
    a, b = iu[chosen], ju[chosen]
    swap = rng.random(len(chosen)) < 0.5  # random orientation (BM25 is asymmetric)
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    pairs = pd.DataFrame({
        "a": ids[a], "b": ids[b], "text_a": txt[a], "text_b": txt[b], "label": label,
        "lexical": lex[chosen], "kind": np.where(label == 1, KINDS[0], KINDS[1]),
    })
    pairs = pairs.iloc[rng.permutation(len(pairs))].reset_index(drop=True)
    counts["hard_positive"] = counts["hard_negative"] = int(m)
    return AdversarialSet(split=split, pairs=pairs, bands=bands, counts=counts, notes=notes)


# ============================================================================ data


@dataclass
class DiagnosticData:
    """Everything built once per data set and shared by every model."""

    dataset: str
    incidents_path: str
    incidents_sha256: str
    mode: str  # "labels" or "links"
    relevance: str
    config: DiagnosticConfig
    texts: pd.Series  # number -> text
    pools: dict[str, list[str]]  # split -> incident numbers paired
    groups: pd.Series  # number -> coarse group (category / duplicate cluster)
    test: AdversarialSet
    threshold: AdversarialSet
    shortcut_phrases: list[str]
    shortcut_words: list[str]
    text_fields: list[str]
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """Plain-dict summary stored as the ``benchmark`` of every diagnose run."""
        return {
            "dataset": self.dataset, "incidents": self.incidents_path,
            "incidents_sha256": self.incidents_sha256, "mode": self.mode,
            "relevance": self.relevance, "split": self.config.split,
            "threshold_split": self.config.threshold_split,
            "threshold_source": f"best-F1 threshold on the {self.config.threshold_split} "
                                "adversarial set",
            "n_queries": None, "n_test_pairs": len(self.test.pairs),
            "n_threshold_pairs": len(self.threshold.pairs),
            "test_set": self.test.describe(), "threshold_set": self.threshold.describe(),
            "pass_criteria": {"roc_auc": PASS_ROC_AUC, "f1": PASS_F1},
            "shortcut_phrases": self.shortcut_phrases,
            "text_fields": self.text_fields,
            "config": {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in asdict(self.config).items()},
            "notes": self.notes + [f"{s}: {x}" for s in (self.test, self.threshold)
                                   for x in s.notes],
        }


def _is_code(values: Sequence[str]) -> bool:
    """True when label values are codes (numbers) rather than words."""
    vals = [str(v) for v in values]
    return not vals or all(re.fullmatch(r"[\d\W_]+", v) for v in vals)


def build_diagnostic(
    incidents: str | Path,
    *,
    columns: str | Path | None = None,
    labels: list[str] | None = None,
    links: str | Path | None = None,
    text_fields: list[str] | None = None,
    config: DiagnosticConfig | None = None,
    encoding: str = "utf-8",
) -> DiagnosticData:
    """Load incidents (sidecar defaults as evaluate_v2) and build both adversarial sets.

    Raises:
        ItsmError: bad input, or too few qualifying pairs (the loud failure).
    """
    from itsm_core.data.incidents import check_links_known, load_links
    from itsm_core.data.splits import assign_splits
    from itsm_core.evaluation.benchmark import BenchmarkConfig, load_for_benchmark
    from itsm_core.pairs.training import link_components

    cfg = config or DiagnosticConfig()
    cfg.check()
    incidents = Path(incidents)
    if not incidents.exists():
        raise ItsmError("incidents file not found", where=str(incidents),
                        fix="check the path (bundled data: run `itsm data build` first)")
    df, texts, bcfg, dataset = load_for_benchmark(
        incidents, columns=columns, labels=labels, links=links, text_fields=text_fields,
        config=BenchmarkConfig(), encoding=encoding)
    notes: list[str] = []
    if "split" in df.columns and df["split"].notna().any():
        split_of = df["split"].astype("string").fillna("").to_numpy()
    else:
        split_of = assign_splits(list(texts.to_numpy()), SPLIT_FRACTIONS, cfg.seed)
        notes.append("no split column: incidents assigned to train/validation/test by a "
                     f"deterministic text hash (seed {cfg.seed})")
    df = df.assign(_split=split_of, _text=texts.to_numpy())
    df = df[df["_text"].astype(str).str.strip() != ""]

    if bcfg.links:
        mode, relevance = "links", f"links:{Path(bcfg.links).name}"
        link_df = load_links(bcfg.links)
        check_links_known(link_df, df)
    else:
        mode, relevance = "labels", f"labels:{','.join(bcfg.labels)}"
        df = df[df[bcfg.labels[0]].notna()]
    groups_all: dict[str, str] = {}
    sets: dict[str, AdversarialSet] = {}
    pools: dict[str, list[str]] = {}
    phrases = list(SHORTCUT_PHRASES)
    words = set(SHORTCUT_WORDS)
    if mode == "labels":
        values = [str(v) for c in bcfg.labels for v in df[c].dropna().unique()]
        if _is_code(values):
            phrases += list(GENERIC_ITSM_PHRASES)
        else:
            wordy = sorted({v.strip().lower() for v in values if not _is_code([v])})
            phrases += wordy
            words |= {w for v in wordy for w in re.findall(r"[a-z0-9]{2,}", v)}
    else:
        phrases += list(GENERIC_ITSM_PHRASES)
    for role, split in (("test", cfg.split), ("threshold", cfg.threshold_split)):
        sub = df[df["_split"] == split]
        seed = cfg.seed if role == "test" else cfg.seed + 1
        if len(sub) > cfg.max_pool:
            sub = sub.iloc[np.sort(np.random.default_rng(seed).choice(
                len(sub), cfg.max_pool, replace=False))]
            notes.append(f"{split}: a seeded sample of {cfg.max_pool} incidents paired")
        ids = sub["number"].astype(str).tolist()
        pools[split] = ids
        if mode == "labels":
            lab = sub[bcfg.labels].astype("string")
            fine = pd.factorize(lab.fillna("\x00").agg("\x1f".join, axis=1))[0]
            fine = np.where(lab.isna().any(axis=1).to_numpy(), -1, fine)
            coarse = pd.factorize(lab[bcfg.labels[0]])[0]
            rel = (fine[:, None] == fine[None, :]) & (fine[:, None] >= 0)
            non = (coarse[:, None] != coarse[None, :]) & (coarse[:, None] >= 0) & (
                coarse[None, :] >= 0)
            groups_all.update(zip(ids, lab[bcfg.labels[0]].astype(str)))
        else:
            idset = set(ids)
            comp = link_components(idset, link_df)
            grp = np.array([comp.get(i, i) for i in ids], dtype=object)
            non = grp[:, None] != grp[None, :]
            pos_of = {n: k for k, n in enumerate(ids)}
            rel = np.zeros((len(ids), len(ids)), dtype=bool)
            for x, y in zip(link_df["a"], link_df["b"]):
                if x in pos_of and y in pos_of:
                    rel[pos_of[x], pos_of[y]] = rel[pos_of[y], pos_of[x]] = True
            groups_all.update(zip(ids, grp))
        sets[role] = build_adversarial_set(ids, texts, rel, non, split=split, config=cfg,
                                           seed=seed, where=str(incidents))
    return DiagnosticData(
        dataset=dataset, incidents_path=str(incidents), incidents_sha256=sha256_file(incidents),
        mode=mode, relevance=relevance, config=cfg, texts=texts, pools=pools,
        groups=pd.Series(groups_all), test=sets["test"], threshold=sets["threshold"],
        shortcut_phrases=phrases, shortcut_words=sorted(words),
        text_fields=list(bcfg.text_fields), notes=notes)


# ============================================================================ probes


def _word_pattern(words: Sequence[str]) -> re.Pattern[str]:
    alt = "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z0-9])(?:{alt})(?![A-Za-z0-9])", re.IGNORECASE)


def shortcut_variants(pairs: pd.DataFrame, phrases: Sequence[str], words: Sequence[str],
                      n: int = 100, seed: int = SEED) -> pd.DataFrame:
    """Pairs whose side b gets category-ish words injected, or removed.

    Samples up to ``n`` pairs (half hard positives, half hard negatives). Each yields an
    ``inject`` variant (``text_b + " " + phrase``) and, when side b holds any of
    ``words``, a ``remove`` variant (those words deleted). Columns: ``a, b, kind, label,
    probe, phrase, text_a, text_b, text_b_new``.
    """
    rng = np.random.default_rng(seed)
    half = max(1, n // 2)
    parts = [g.iloc[rng.permutation(len(g))[:half]] for _, g in pairs.groupby("kind")]
    sample = pd.concat(parts).reset_index(drop=True) if parts else pairs.iloc[:0]
    pat = _word_pattern(words)
    rows = []
    for r in sample.itertuples(index=False):
        phrase = phrases[int(rng.integers(len(phrases)))]
        base = {"a": r.a, "b": r.b, "kind": r.kind, "label": r.label, "text_a": r.text_a,
                "text_b": r.text_b}
        rows.append({**base, "probe": "inject", "phrase": phrase,
                     "text_b_new": f"{r.text_b} {phrase}"})
        removed = re.sub(r"\s+", " ", pat.sub(" ", r.text_b)).strip()
        if removed != r.text_b.strip() and removed:
            found = sorted({m.lower() for m in pat.findall(r.text_b)})
            rows.append({**base, "probe": "remove", "phrase": " ".join(found),
                         "text_b_new": removed})
    return pd.DataFrame(rows, columns=["a", "b", "kind", "label", "probe", "phrase",
                                       "text_a", "text_b", "text_b_new"])


def boilerplate_queries(pool: Sequence[str], texts: pd.Series, groups: pd.Series,
                        n: int = 100, seed: int = SEED) -> pd.DataFrame:
    """Query incidents of ``pool`` with a signature, disclaimer and quoted email appended.

    The quoted ticket is another incident of the pool from another group (category or
    duplicate cluster). Columns: ``query, quoted, text, text_new``.
    """
    rng = np.random.default_rng(seed)
    pool = np.asarray(list(pool), dtype=object)
    q = pool[rng.permutation(len(pool))[: min(n, len(pool))]]
    grp = groups.reindex(pool).astype(str).to_numpy()
    rows = []
    for query in q:
        g = str(groups.get(query))
        others = pool[(grp != g) & (pool != query)]
        if len(others) == 0:
            others = pool[pool != query]
        quoted = others[int(rng.integers(len(others)))]
        text = str(texts.loc[query])
        rows.append({"query": query, "quoted": quoted, "text": text,
                     "text_new": text + BOILERPLATE_TEMPLATE.format(
                         quoted=str(texts.loc[quoted]))})
    return pd.DataFrame(rows, columns=["query", "quoted", "text", "text_new"])


def _scale(scores: np.ndarray) -> float:
    s = float(np.nanstd(scores[np.isfinite(scores)])) if np.isfinite(scores).any() else 0.0
    return s if s > 0 else math.nan


def shortcut_probe(scorer: Scorer, variants: pd.DataFrame, threshold: float,
                   scale: float) -> tuple[dict[str, float], pd.DataFrame]:
    """Mean |Δscore| and decision flips at ``threshold`` of the shortcut variants.

    Original and changed pairs are scored in one call (one IDF / index for lexical
    scorers). ``scale`` (the score spread on the adversarial set) makes the relative
    delta comparable across scorers with different score ranges.
    """
    if variants.empty:
        nan = math.nan
        return {"shortcut_mean_abs_delta": nan, "shortcut_rel_delta": nan,
                "shortcut_flip_rate": nan, "shortcut_inject_mean_delta": nan,
                "shortcut_remove_mean_abs_delta": nan, "n_shortcut_variants": 0}, variants
    a = variants["text_a"].tolist()
    s = np.asarray(scorer.score_pairs(a + a, variants["text_b"].tolist()
                                      + variants["text_b_new"].tolist()), dtype=np.float64)
    before, after = s[: len(a)], s[len(a):]
    table = variants.drop(columns=["text_a", "text_b", "text_b_new"]).assign(
        score_before=before, score_after=after, delta=after - before,
        flipped=(before >= threshold) != (after >= threshold))
    absd = np.abs(table["delta"].to_numpy())
    inj, rem = table["probe"] == "inject", table["probe"] == "remove"
    out = {
        "shortcut_mean_abs_delta": float(absd.mean()),
        "shortcut_rel_delta": float(absd.mean() / scale) if scale == scale else math.nan,
        "shortcut_flip_rate": float(table["flipped"].mean()),
        "shortcut_inject_mean_delta": float(table.loc[inj, "delta"].mean()),
        "shortcut_inject_flip_rate": float(table.loc[inj, "flipped"].mean()),
        "shortcut_remove_mean_abs_delta": float(absd[rem.to_numpy()].mean())
        if rem.any() else math.nan,
        "shortcut_remove_flip_rate": float(table.loc[rem, "flipped"].mean())
        if rem.any() else math.nan,
        "n_shortcut_variants": len(table),
    }
    return out, table


def boilerplate_probe(scorer: Scorer, queries: pd.DataFrame, pool: Sequence[str],
                      texts: pd.Series, k: int = 10) -> tuple[dict[str, float], pd.DataFrame]:
    """Top-k neighbours of each query in ``pool`` with and without the boilerplate.

    The query itself and the quoted ticket are excluded from both neighbour lists.
    Returns mean Jaccard overlap@k (1.0 = unchanged), the share of queries keeping their
    first neighbour, and mean |Δ| of the query's score with its original first neighbour
    (raw and relative to the score spread).
    """
    pool = list(pool)
    if queries.empty or len(pool) < 3:
        nan = math.nan
        return {f"boilerplate_overlap@{k}": nan, "boilerplate_top1_kept": nan,
                "boilerplate_mean_abs_delta_top1": nan, "boilerplate_rel_delta": nan,
                "n_boilerplate_queries": 0}, queries
    nq = len(queries)
    s = np.asarray(scorer.score_matrix(queries["text"].tolist() + queries["text_new"].tolist(),
                                       texts.loc[pool].astype(str).tolist()), dtype=np.float64)
    col = {n: j for j, n in enumerate(pool)}
    for i, (q, o) in enumerate(zip(queries["query"], queries["quoted"])):
        for x in (q, o):
            if x in col:
                s[i, col[x]] = s[nq + i, col[x]] = -np.inf
    before, after = s[:nq], s[nq:]
    kk = max(1, min(k, len(pool) - 2))
    top_b = np.argsort(-before, axis=1, kind="stable")[:, :kk]
    top_a = np.argsort(-after, axis=1, kind="stable")[:, :kk]
    overlap = np.array([len(set(x) & set(y)) / len(set(x) | set(y))
                        for x, y in zip(top_b, top_a)])
    first = top_b[:, 0]
    rows = np.arange(nq)
    d1 = np.abs(after[rows, first] - before[rows, first])
    scale = _scale(before)
    table = queries[["query", "quoted"]].assign(
        overlap=overlap, top1_before=[pool[j] for j in first],
        top1_after=[pool[j] for j in top_a[:, 0]], top1_kept=top_a[:, 0] == first,
        delta_top1=after[rows, first] - before[rows, first])
    return {f"boilerplate_overlap@{k}": float(overlap.mean()),
            "boilerplate_top1_kept": float(table["top1_kept"].mean()),
            "boilerplate_mean_abs_delta_top1": float(d1.mean()),
            "boilerplate_rel_delta": float(d1.mean() / scale) if scale == scale else math.nan,
            "n_boilerplate_queries": nq}, table


# ============================================================================ models


@dataclass
class ScorerResult:
    """The diagnostic of one scorer: metrics (shared schema) and its tables."""

    metrics: dict[str, Any]
    pairs: pd.DataFrame
    threshold_pairs: pd.DataFrame
    shortcut: pd.DataFrame
    boilerplate: pd.DataFrame


def verdict(roc_auc: float, f1: float) -> str:
    """The seed's criterion: ``pass`` iff ROC-AUC ≥ 0.70 and F1 ≥ 0.70."""
    return "pass" if (roc_auc >= PASS_ROC_AUC and f1 >= PASS_F1) else "fail"


def diagnose_scorer(scorer: Scorer, data: DiagnosticData) -> ScorerResult:
    """Threshold on the validation adversarial set, metrics on the test one, probes."""
    from itsm_core.evaluation.benchmark import _pair_block
    from itsm_core.metrics import stats as M

    cfg = data.config
    boot = dict(n_resamples=cfg.n_resamples, level=cfg.ci_level, seed=cfg.seed)
    tp = data.threshold.pairs
    t_scores = np.asarray(scorer.score_pairs(tp["text_a"].tolist(), tp["text_b"].tolist()),
                          dtype=np.float64)
    thr = float(M.best_f1_threshold(t_scores, tp["label"].to_numpy()))
    pairs = data.test.pairs
    scores = np.asarray(scorer.score_pairs(pairs["text_a"].tolist(), pairs["text_b"].tolist()),
                        dtype=np.float64)
    block = _pair_block(scores, pairs.assign(grade=pairs["label"]), thr, boot)
    block["threshold"] = thr
    block["verdict"] = verdict(block["roc_auc"], block["f1"])
    for kind in KINDS:
        sel = (pairs["kind"] == kind).to_numpy()
        block[f"mean_score_{kind}"] = float(scores[sel].mean())
    scale = _scale(scores)
    variants = shortcut_variants(pairs, data.shortcut_phrases, data.shortcut_words,
                                 n=cfg.n_shortcut, seed=cfg.seed)
    sc, sc_table = shortcut_probe(scorer, variants, thr, scale)
    pool = data.pools[cfg.split]
    queries = boilerplate_queries(pool, data.texts, data.groups, n=cfg.n_boilerplate,
                                  seed=cfg.seed)
    bp, bp_table = boilerplate_probe(scorer, queries, pool, data.texts, k=cfg.k)
    block.update(sc)
    block.update(bp)
    block["score_scale"] = scale
    block["n_hard_positive"] = int((pairs["kind"] == KINDS[0]).sum())
    block["n_hard_negative"] = int((pairs["kind"] == KINDS[1]).sum())
    table = pairs.assign(score=scores, predicted=(scores >= thr).astype(int))
    t_table = tp.drop(columns=["text_a", "text_b"]).assign(score=t_scores)
    return ScorerResult(metrics=block, pairs=table, threshold_pairs=t_table,
                        shortcut=sc_table, boilerplate=bp_table)


def worst_examples(pairs_with_scores: pd.DataFrame, n: int = 5,
                   max_chars: int = 300) -> pd.DataFrame:
    """The pairs a model gets most wrong, as text: the ``n`` highest-scored hard negatives
    and the ``n`` lowest-scored hard positives (texts cut to ``max_chars``)."""
    p = pairs_with_scores
    neg = p[p["kind"] == KINDS[1]].sort_values("score", ascending=False).head(n)
    pos = p[p["kind"] == KINDS[0]].sort_values("score", ascending=True).head(n)

    def cut(t: Any) -> str:
        t = str(t)
        return t if len(t) <= max_chars else t[: max_chars - 1].rstrip() + "…"

    cols = [c for c in ("kind", "score", "lexical", "a", "b", "text_a", "text_b") if c in p]
    out = pd.concat([neg, pos])[cols].reset_index(drop=True)
    for c in ("text_a", "text_b"):
        if c in out:
            out[c] = out[c].map(cut)
    return out


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(name)).name or str(name)).strip("-")


def summary_row(record: dict[str, Any], run_dir: str | Path | None) -> dict[str, Any]:
    """One row of the diagnostic summary from a diagnose run's record."""
    k = (record.get("benchmark", {}).get("config") or {}).get("k", 10)
    row = {"model": record["model"], "model_kind": record.get("model_kind"),
           "dataset": record.get("dataset")}
    for m in ("roc_auc", "pr_auc", "f1", "precision", "recall"):
        row[m] = record.get(m)
        if m in ("roc_auc", "f1"):
            row[f"{m}_ci"] = record.get(f"{m}_ci")
    row["threshold"] = record.get("threshold")
    row["verdict"] = record.get("verdict")
    for key in ("mean_score_hard_positive", "mean_score_hard_negative",
                "shortcut_mean_abs_delta", "shortcut_rel_delta", "shortcut_flip_rate",
                "shortcut_inject_mean_delta", "shortcut_remove_mean_abs_delta",
                f"boilerplate_overlap@{k}", "boilerplate_top1_kept",
                "boilerplate_mean_abs_delta_top1", "boilerplate_rel_delta",
                "n_hard_positive", "n_hard_negative"):
        row[key] = record.get(key)
    row["run_dir"] = str(run_dir) if run_dir is not None else None
    return row


def run_diagnostic(
    models: Sequence[str],
    incidents_path: str | Path | None = None,
    config: DiagnosticConfig | None = None,
    out_dir: str | Path | None = None,
    leaderboard: str | Path | None = LEADERBOARD_CSV,
    *,
    data: DiagnosticData | None = None,
    columns: str | Path | None = None,
    labels: list[str] | None = None,
    links: str | Path | None = None,
    text_fields: list[str] | None = None,
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """Run the adversarial diagnostic for each model; one run dir + leaderboard row each.

    The adversarial sets are built once (or passed as ``data``). Each model's run
    directory (``<out_dir or RUNS_DIR>/<timestamp>_diagnose_<dataset>_<model>``) holds
    ``metrics.json`` (task ``diagnose``), ``pairs.csv`` (scored test pairs),
    ``threshold_pairs.csv``, ``worst.csv``, ``shortcut.csv`` and ``boilerplate.csv``.

    Returns:
        One row per model: ``model, roc_auc, roc_auc_ci, f1, f1_ci, threshold, verdict``,
        the shortcut and boilerplate sensitivities and ``run_dir``. ``attrs["diagnostic"]``
        holds the description of the adversarial sets.

    Raises:
        ItsmError: bad input, unknown model, or too few qualifying pairs.
    """
    from itsm_core.encoders.factory import load_scorer
    from itsm_core.runs.schema import make_record, write_run

    names = list(dict.fromkeys(m.strip() for m in models if m and m.strip()))
    if not names:
        raise ItsmError("no model to diagnose", where="--models",
                        fix="pass e.g. --models tfidf,bm25,minilm")
    if data is None:
        if incidents_path is None:
            raise ItsmError("no incidents file given", fix="pass --dataset or --incidents")
        data = build_diagnostic(incidents_path, columns=columns, labels=labels, links=links,
                                text_fields=text_fields, config=config, encoding=encoding)
    parent = Path(out_dir) if out_dir is not None else RUNS_DIR
    bench = data.describe()
    rows = []
    for model in names:
        scorer = load_scorer(model)
        res = diagnose_scorer(scorer, data)
        spec = getattr(scorer, "spec", None)
        record = make_record(
            task="diagnose", model=scorer.name, model_kind=scorer.kind, benchmark=bench,
            metrics=res.metrics, model_spec=spec.to_dict() if spec else None,
            extra={"model_arg": str(model), "threshold": res.metrics["threshold"]})
        run_dir = unique_run_dir(parent, f"diagnose_{data.dataset}_{_safe_name(scorer.name)}")
        write_run(run_dir, record, {
            "pairs": res.pairs, "threshold_pairs": res.threshold_pairs,
            "worst": worst_examples(res.pairs), "shortcut": res.shortcut,
            "boilerplate": res.boilerplate}, leaderboard=leaderboard)
        rows.append(summary_row(record, run_dir))
        logger.info("diagnose %s: roc_auc=%.3f f1=%.3f -> %s", scorer.name,
                    record["roc_auc"], record["f1"], record["verdict"])
    summary = pd.DataFrame(rows)
    summary.attrs["diagnostic"] = json.loads(json.dumps(bench, default=str))
    return summary


# ============================================================================ reading back


def latest_diagnostic(dataset: str | None = None, models: Sequence[str] | None = None,
                      leaderboard: str | Path | None = None) -> pd.DataFrame:
    """Summary (as :func:`run_diagnostic` returns) of the newest diagnose run per model."""
    from itsm_core.runs.schema import load_run, read_leaderboard
    from itsm_core.runs.store import latest_per_model

    board = latest_per_model(read_leaderboard(leaderboard or LEADERBOARD_CSV), task="diagnose")
    if dataset:
        board = board[board["dataset"] == dataset]
    if models:
        board = board[board["model"].isin(list(models))]
    rows, bench = [], None
    for r in board.itertuples():
        if (Path(str(r.run_dir)) / "metrics.json").exists():
            rec = load_run(r.run_dir)
            bench = bench or rec.get("benchmark")
            rows.append(summary_row(rec, r.run_dir))
    if not rows:
        raise ItsmError("no diagnose runs to show", where=str(leaderboard or LEADERBOARD_CSV),
                        fix="run `itsm diagnose` first")
    summary = pd.DataFrame(rows)
    summary.attrs["diagnostic"] = bench or {}
    return summary


def scored_pairs(summary: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Scored adversarial test pairs (``pairs.csv``) of each summary row, keyed by model."""
    return {r.model: pd.read_csv(Path(r.run_dir) / "pairs.csv")
            for r in summary.itertuples() if (Path(str(r.run_dir)) / "pairs.csv").exists()}


def thresholds(summary: pd.DataFrame) -> dict[str, float]:
    """Validation threshold of each model."""
    return dict(zip(summary["model"], summary["threshold"].astype(float)))


def _fmt_ci(v: Any, ci: Any) -> str:
    from itsm_core.metrics.format import fmt_ci

    return fmt_ci(v, *(list(ci or [])[:2] or [None, None]))


def verdict_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per model: ROC-AUC and F1 with 95 % CIs, threshold (from validation), verdict."""
    return pd.DataFrame({
        "model": summary["model"], "kind": summary["model_kind"],
        "ROC-AUC [95% CI]": [_fmt_ci(v, c) for v, c in zip(summary["roc_auc"],
                                                            summary["roc_auc_ci"])],
        "F1 [95% CI]": [_fmt_ci(v, c) for v, c in zip(summary["f1"], summary["f1_ci"])],
        "precision": summary["precision"].round(3), "recall": summary["recall"].round(3),
        "threshold (validation)": summary["threshold"].round(4),
        "verdict": summary["verdict"].str.upper(),
    })


def sensitivity_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Shortcut and boilerplate sensitivities per model (lower Δ / flips = more robust;
    overlap 1.0 = neighbours unchanged). Relative Δ = mean |Δ| / score spread."""
    cols = [c for c in summary.columns if c.startswith(("shortcut_", "boilerplate_"))]
    return summary[["model", *cols]].set_index("model").astype(float).round(3)


def set_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per split: incidents, relevant / non-relevant pairs, bands and pairs selected."""
    bench = summary.attrs.get("diagnostic") or {}
    if not bench and len(summary):
        from itsm_core.runs.schema import load_run

        bench = load_run(summary["run_dir"].iloc[0]).get("benchmark", {})
    rows = {}
    for role in ("test_set", "threshold_set"):
        s = bench.get(role)
        if not s:
            continue
        b, c = s["bands"], s["counts"]
        rows[f"{s['split']} ({'diagnostic' if role == 'test_set' else 'threshold'})"] = {
            "incidents": c["incidents"], "relevant pairs": c["relevant_pairs"],
            "non-relevant pairs": c["non_relevant_pairs"],
            f"hard positive: {b['lexical']} <=": round(b["hard_positive"][1], 4),
            f"hard negative: {b['lexical']} >=": round(b["hard_negative"][0], 4),
            "hard positives in band": c["hard_positive_in_band"],
            "hard negatives in band": c["hard_negative_in_band"],
            "pairs per kind used": c["hard_positive"],
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def worst_examples_by_model(summary: pd.DataFrame, n: int = 5,
                            max_chars: int = 300) -> dict[str, pd.DataFrame]:
    """:func:`worst_examples` of each model's scored pairs, keyed by model."""
    return {m: worst_examples(p, n=n, max_chars=max_chars)
            for m, p in scored_pairs(summary).items()}


def run_from_params(models: str, dataset: str = "it_tickets", extra_models: str = "",
                    incidents: str = "", n_pairs: int = 300, min_pairs: int = 30,
                    seed: int = SEED, lexical: str = "tfidf", leaderboard: str = "",
                    out_dir: str = "") -> pd.DataFrame:
    """Notebook entry point: comma-separated strings in, :func:`run_diagnostic` out.

    ``incidents`` (a file) overrides ``dataset``; empty ``leaderboard`` / ``out_dir`` mean
    the project defaults. Errors (e.g. too few pairs) propagate, so the notebook fails.
    """
    from itsm_core.data.datasets import processed_path

    names = [m for m in f"{models},{extra_models}".split(",") if m.strip()]
    path = Path(incidents) if incidents else processed_path(dataset)
    cfg = DiagnosticConfig(n_pairs=int(n_pairs), min_pairs=int(min_pairs), seed=int(seed),
                           lexical=lexical)
    return run_diagnostic(names, path, cfg, out_dir=out_dir or None,
                          leaderboard=leaderboard or LEADERBOARD_CSV)


def models_to_diagnose(models: Sequence[str], dataset: str, with_trained: bool,
                       trained_name: str = "minilm-ft") -> list[str]:
    """``models`` plus, with ``with_trained``, the newest ``trained_name`` run's model folder
    evaluated on ``dataset`` (from the run store; absent when none was trained)."""
    from itsm_core.runs.store import latest_model_dir

    names = [m for m in models if m]
    if with_trained:
        trained = latest_model_dir(dataset, trained_name)
        if trained and trained not in names:
            names.append(trained)
    return names


def diagnose_dataset(models: Sequence[str], dataset: str = "it_tickets",
                     incidents: str | Path | None = None,
                     config: DiagnosticConfig | None = None, *, with_trained: bool = False,
                     leaderboard: bool = True) -> pd.DataFrame:
    """``itsm diagnose``: the adversarial diagnostic of ``models`` on a bundled data set (or
    an incidents file), one run and leaderboard row per model.

    Returns:
        The summary of :func:`run_diagnostic` (one row per model).
    """
    from itsm_core.data.datasets import processed_path

    path = Path(incidents) if incidents is not None else processed_path(dataset)
    ds = dataset if incidents is None else path.stem.split(".")[0]
    return run_diagnostic(models_to_diagnose(models, ds, with_trained), path,
                          config or DiagnosticConfig(),
                          leaderboard=LEADERBOARD_CSV if leaderboard else None)
