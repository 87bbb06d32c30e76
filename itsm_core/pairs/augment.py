"""Text augmentation of *training* pairs: random deletion, adjacent swap, duplication.

Augmentation adds noisy copies of training pairs so a fine-tuned model sees more surface
variation of the same incident. It must never touch validation or test pairs -- an
augmented evaluation set would measure robustness to our own noise, not retrieval quality
-- so :func:`augment_pairs` refuses any table that carries a non-``train`` split.

The three word-level methods are the seed's (EDA-style) operations with its default
rates: random deletion (each word dropped with p=0.1), adjacent word swap
(``max(1, round(0.1 * n_words))`` swaps) and word duplication (each word repeated in
place with p=0.1). Words that carry the meaning of an incident are *protected* and are
never deleted, moved or duplicated: error codes (``0x80070005``, ``ERR_CONNECTION_RESET``,
``HTTP 500``, ``E1234``, ``KB123456``, ``CVE-2024-1234``), negations (deleting "not" turns
"VPN does not connect" into its opposite), version numbers and product names, plus any
user-supplied terms.

Pair table contract (see :mod:`itsm_core.pairs.training`): columns ``anchor, positive`` (str),
optional ``negative`` (str or NaN), ``label`` (int class id of the anchor), ``phase``,
``source``, ``anchor_id``, ``positive_id``, ``negative_id``; ``attrs["meta"]`` may hold
a metadata dict. :func:`augment_pairs` returns the originals followed by the augmented
copies, with two new columns ``augmented`` (bool) and ``augment_method`` (str, missing
for originals).
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from itsm_core.core.config import SEED
from itsm_core.core.errors import ItsmError

__all__ = [
    "DEFAULT_PROTECTED_PATTERNS",
    "METHODS",
    "PRODUCT_NAMES",
    "SIDES",
    "AugmentConfig",
    "adjacent_swap",
    "augment_pairs",
    "augment_text",
    "balance_report",
    "class_balance",
    "protected_mask",
    "protected_regex",
    "random_deletion",
    "word_duplication",
]

METHODS: tuple[str, ...] = ("deletion", "swap", "duplication")
"""The augmentation methods, by the names used in ``AugmentConfig.methods``."""

SIDES: tuple[str, ...] = ("anchor", "positive", "both")
"""Which text of a pair is augmented (the negative is never touched)."""

PRODUCT_NAMES: tuple[str, ...] = (
    "outlook", "exchange", "vpn", "sap", "citrix", "windows", "office", "teams",
    "sharepoint", "onedrive", "jira", "confluence", "hadoop", "hdfs", "yarn", "hive",
    "hbase", "spark", "mapreduce", "zookeeper", "excel", "powerpoint", "chrome", "firefox",
    "okta", "azure", "aws", "gcp", "linux", "ubuntu", "macos", "ios", "android", "oracle",
    "mysql", "postgres", "postgresql", "sql", "servicenow", "salesforce", "vmware",
    "docker", "kubernetes", "k8s", "jenkins", "git", "github", "gitlab", "slack", "zoom",
    "webex", "skype", "adobe", "acrobat", "java", "ldap", "dns", "dhcp", "smtp", "ssl",
    "tls", "sso", "mfa",
)
"""Product and protocol names protected by default (case-insensitive whole words; a
trailing version number such as ``office365`` or ``windows10`` is included). Ordinary
English words that are also product names ("word", "edge") are left out on purpose."""

DEFAULT_PROTECTED_PATTERNS: tuple[str, ...] = (
    # error codes
    r"\b0x[0-9a-f]{4,16}\b",  # Windows HRESULTs: 0x80070005
    r"(?-i:\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b)",  # constants: ERR_CONNECTION_RESET
    r"\bHTTP(?:/\d(?:\.\d)?)?[ -]?[1-5]\d\d\b",  # HTTP 500, HTTP/1.1 404, http-503
    r"\bCVE-\d{4}-\d{4,}\b",  # CVE-2024-1234
    r"\b[a-z]{1,5}-?\d{3,}\b",  # E1234, KB123456, ORA-00942, INC0012345
    # negations (and failure words, whose removal inverts the meaning just as well)
    r"\b(?:not|no|never|cannot|unable|without|fail(?:s|ed|ing|ure)?)\b",
    r"\b\w+n['\u2019]t\b",  # can't, won't, doesn't, isn't, didn't, ...
    # version numbers: v2.3.1, 3.4.0, 10.2 (also IP addresses, which deserve it too)
    r"\bv?\d+(?:\.\d+){1,3}\b",
    # product names
    r"\b(?:" + "|".join(map(re.escape, PRODUCT_NAMES)) + r")\d*\b",
)
"""Regexes (matched case-insensitively on the text) whose matches are never augmented."""


@dataclass
class AugmentConfig:
    """How training pairs are augmented.

    Attributes:
        deletion_p: per-word probability of deletion (method ``deletion``).
        swap_rate: ``max(1, round(swap_rate * n_words))`` adjacent swaps (``swap``);
            0 disables swapping.
        duplication_p: per-word probability of being repeated in place (``duplication``).
        methods: the methods to draw from; each augmented text gets ONE of them, drawn
            uniformly (so one copy never compounds deletion, swap and duplication).
        expansion_factor: augmented copies added per original pair on average: 0.5 gives
            one copy to half of the pairs, 2.0 two copies to every pair. The pairs that
            get an extra copy are drawn at random.
        augment_side: ``"anchor"``, ``"positive"`` or ``"both"`` (each side gets its
            own method); the negative is never augmented.
        seed: seed of the single random generator, so the output is deterministic
            given the input table (and its row order) and this config.
        min_words: texts with fewer words are left intact.
        protected_patterns: regexes (case-insensitive) for terms never deleted, swapped
            or duplicated; default :data:`DEFAULT_PROTECTED_PATTERNS`.
        protected_terms: extra protected terms (case-insensitive whole words; may
            contain spaces or punctuation, e.g. ``"zebra-cluster"`` or ``"c++"``).
    """

    deletion_p: float = 0.1
    swap_rate: float = 0.1
    duplication_p: float = 0.1
    methods: tuple[str, ...] = METHODS
    expansion_factor: float = 1.0
    augment_side: str = "anchor"
    seed: int = SEED
    min_words: int = 3
    protected_patterns: tuple[str, ...] = DEFAULT_PROTECTED_PATTERNS
    protected_terms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = "augmentation settings"
        for name in ("deletion_p", "swap_rate", "duplication_p"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise ItsmError(f"{name} must be a number in [0, 1], got {value!r}",
                                where=where, fix=f"set {name} to e.g. 0.1")
        methods = (self.methods,) if isinstance(self.methods, str) else tuple(self.methods)
        methods = tuple(m.strip() for part in methods for m in part.split(",") if m.strip())
        unknown = [m for m in methods if m not in METHODS]
        if not methods or unknown:
            raise ItsmError(
                f"unknown or no augmentation method(s) {unknown or list(methods)}; "
                f"known: {list(METHODS)}",
                where=where, fix="choose methods among " + ", ".join(METHODS))
        self.methods = methods
        if self.augment_side not in SIDES:
            raise ItsmError(f"augment_side must be one of {list(SIDES)}, "
                            f"got {self.augment_side!r}",
                            where=where, fix="use anchor, positive or both")
        ef = self.expansion_factor
        if not isinstance(ef, (int, float)) or not np.isfinite(ef) or ef < 0:
            raise ItsmError(f"expansion_factor must be a number >= 0, got {ef!r}",
                            where=where, fix="use e.g. 0.5 (half the pairs get a copy) or 1.0")
        if not isinstance(self.min_words, int) or self.min_words < 1:
            raise ItsmError(f"min_words must be a positive integer, got {self.min_words!r}",
                            where=where, fix="use e.g. 3")
        self.protected_patterns = tuple(self.protected_patterns)
        terms = self.protected_terms
        terms = (terms,) if isinstance(terms, str) else tuple(terms)
        self.protected_terms = tuple(t.strip() for t in terms if t and t.strip())
        self.regex()  # fail early on a bad pattern

    def regex(self) -> re.Pattern[str] | None:
        """The compiled protection regex (cached), or None when nothing is protected."""
        return protected_regex(self.protected_patterns, self.protected_terms)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, stored in the pair file's metadata for reproducibility."""
        d = asdict(self)
        for key in ("methods", "protected_patterns", "protected_terms"):
            d[key] = list(d[key])
        return d


@functools.lru_cache(maxsize=64)
def protected_regex(patterns: tuple[str, ...],
                    terms: tuple[str, ...] = ()) -> re.Pattern[str] | None:
    """One case-insensitive regex for ``patterns`` plus whole-word ``terms``.

    Terms are escaped and matched as whole words (not inside a longer word), so a term
    may contain punctuation or spaces. Raises :class:`ItsmError` for an invalid pattern.
    """
    parts = list(patterns) + [rf"(?<!\w){re.escape(t)}(?!\w)" for t in terms]
    if not parts:
        return None
    for p in patterns:
        try:
            re.compile(p, re.IGNORECASE)
        except re.error as exc:
            raise ItsmError(f"invalid protected pattern {p!r} ({exc})",
                            where="augmentation settings",
                            fix="fix the regular expression, or pass plain words as "
                            "protected terms (--protect)") from exc
    return re.compile("|".join(f"(?:{p})" for p in parts), re.IGNORECASE)


def protected_mask(words: Sequence[str], pattern: re.Pattern[str] | None) -> list[bool]:
    """Which words are protected: those overlapping a match of ``pattern``.

    The words are joined with single spaces and matched as one text, so multi-word terms
    ("HTTP 500") protect every word they touch, and punctuation around a word
    ("(0x80070005),") does not hide it.
    """
    mask = [False] * len(words)
    if pattern is None or not words:
        return mask
    text = " ".join(words)
    ends = np.cumsum([len(w) + 1 for w in words]) - 1  # end offset (exclusive) of word i
    starts = ends - np.array([len(w) for w in words])
    for m in pattern.finditer(text):
        if m.end() == m.start():
            continue
        lo = int(np.searchsorted(ends, m.start(), side="right"))
        hi = int(np.searchsorted(starts, m.end(), side="left"))
        for i in range(lo, hi):
            mask[i] = True
    return mask


def _mask(words: Sequence[str], protected: Sequence[bool] | None) -> list[bool]:
    if protected is None:
        return [False] * len(words)
    if len(protected) != len(words):
        raise ValueError(f"protected mask has {len(protected)} entries for {len(words)} words")
    return [bool(x) for x in protected]


def random_deletion(words: Sequence[str], p: float, rng: np.random.Generator,
                    protected: Sequence[bool] | None = None) -> list[str]:
    """Drop each unprotected word with probability ``p``; protected words always stay.

    Never returns an empty list for a non-empty input: when every word would be deleted
    one randomly chosen word is kept.
    """
    words = list(words)
    if not words:
        return []
    mask = _mask(words, protected)
    draws = rng.random(len(words))
    kept = [w for w, prot, r in zip(words, mask, draws) if prot or r >= p]
    if not kept:
        kept = [words[int(rng.integers(len(words)))]]
    return kept


def adjacent_swap(words: Sequence[str], n: int, rng: np.random.Generator,
                  protected: Sequence[bool] | None = None) -> list[str]:
    """Swap ``n`` random pairs of neighbouring words, neither of which is protected.

    Protected words therefore never move. With fewer than two adjacent unprotected
    words the text is returned unchanged.
    """
    words = list(words)
    mask = _mask(words, protected)
    # swapping two unprotected words leaves the mask unchanged, so positions stay valid
    slots = [i for i in range(len(words) - 1) if not (mask[i] or mask[i + 1])]
    if not slots:
        return words
    for _ in range(max(0, int(n))):
        i = slots[int(rng.integers(len(slots)))]
        words[i], words[i + 1] = words[i + 1], words[i]
    return words


def word_duplication(words: Sequence[str], p: float, rng: np.random.Generator,
                     protected: Sequence[bool] | None = None) -> list[str]:
    """Repeat each unprotected word in place with probability ``p`` ("vpn drops drops").

    Protected words are left untouched (a repeated "not" or error code reads as a
    different statement to a tokenizer as often as it reads as a typo).
    """
    words = list(words)
    mask = _mask(words, protected)
    draws = rng.random(len(words))
    out: list[str] = []
    for w, prot, r in zip(words, mask, draws):
        out.append(w)
        if not prot and r < p:
            out.append(w)
    return out


def _n_swaps(cfg: AugmentConfig, n_words: int) -> int:
    return 0 if cfg.swap_rate == 0 else max(1, round(cfg.swap_rate * n_words))


def _apply(method: str, words: list[str], mask: list[bool], cfg: AugmentConfig,
           rng: np.random.Generator) -> list[str]:
    if method == "deletion":
        return random_deletion(words, cfg.deletion_p, rng, mask)
    if method == "swap":
        return adjacent_swap(words, _n_swaps(cfg, len(words)), rng, mask)
    return word_duplication(words, cfg.duplication_p, rng, mask)


def _augment_words(words: list[str], mask: list[bool], text: str, cfg: AugmentConfig,
                   rng: np.random.Generator) -> tuple[str, str]:
    """(augmented text, method) for pre-split words; the original text if unchanged."""
    if len(words) < cfg.min_words:
        return text, "none"
    method = cfg.methods[int(rng.integers(len(cfg.methods)))]
    new = _apply(method, words, mask, cfg, rng)
    return (text if new == words else " ".join(new)), method


def augment_text(text: str, cfg: AugmentConfig | None = None,
                 rng: np.random.Generator | None = None) -> str:
    """Augment one text with ONE method drawn uniformly from ``cfg.methods``.

    Applying a single method per text keeps each copy a plausible variant (deletion,
    swap and duplication compounded would drift far from the original). Words are split
    on whitespace and re-joined with single spaces; a text with fewer than
    ``cfg.min_words`` words, or one the drawn method leaves unchanged, is returned
    as is. Protected terms (see :class:`AugmentConfig`) are never changed.
    """
    cfg = cfg or AugmentConfig()
    rng = rng if rng is not None else np.random.default_rng(cfg.seed)
    if not isinstance(text, str):
        return text
    words = text.split()
    return _augment_words(words, protected_mask(words, cfg.regex()), text, cfg, rng)[0]


def _check_train_only(pairs: pd.DataFrame, split_col: str | None, where: str) -> None:
    """Refuse a table that holds anything but training pairs."""
    meta = pairs.attrs.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("split"), str) \
            and meta["split"].strip().lower() != "train":
        raise ItsmError(
            f"the pair file's metadata says split={meta['split']!r}; augmentation is for "
            "training pairs only (augmented validation/test pairs would score our own "
            "noise, not the model)",
            where=where, fix="augment the training pair file only")
    if split_col is not None and split_col not in pairs.columns:
        raise ItsmError(f"split column {split_col!r} is not a column of the pair table; "
                        f"columns: {[str(c) for c in pairs.columns]}",
                        where=where, fix="name an existing split column, or none")
    col = split_col or ("split" if "split" in pairs.columns else None)
    if col is None:
        return
    values = pairs[col].astype("string").str.strip().str.lower().fillna("<missing>")
    bad = values[values != "train"]
    if len(bad):
        counts = bad.value_counts().to_dict()
        raise ItsmError(
            f"{len(bad)} pair(s) are not in the train split (column {col!r}: {counts}); "
            "augmentation is for training pairs only (augmented validation/test pairs "
            "would score our own noise, not the model)",
            where=where,
            fix=f"keep only rows with {col} == 'train' before augmenting")


def _copies_per_pair(n: int, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Copies wanted for each of ``n`` pairs: ``round(factor * n)`` in total, spread as
    evenly as possible (every pair gets ``floor``, a random subset one more)."""
    total = int(round(factor * n))
    base, extra = divmod(total, n) if n else (0, 0)
    counts = np.full(n, base, dtype=int)
    if extra:
        counts[rng.choice(n, size=extra, replace=False)] += 1
    return counts


_MAX_TRIES = 5
"""Attempts per augmented copy before a copy identical to its original is given up."""


def augment_pairs(pairs: pd.DataFrame, cfg: AugmentConfig | None = None, *,
                  split_col: str | None = None) -> pd.DataFrame:
    """Originals followed by augmented copies of a training pair table.

    Every copy keeps its original's ids, label, phase, source and negative; only the
    augmented side(s) (``cfg.augment_side``) change. ``round(expansion_factor * n)``
    copies are made in total; each is re-drawn up to a few times when it comes out
    identical to its original (or to an earlier copy of the same pair), and dropped if
    it still does -- e.g. texts shorter than ``cfg.min_words``. The result is
    deterministic given the table, its row order and ``cfg.seed``.

    New columns: ``augmented`` (bool) and ``augment_method`` (the method; for
    ``augment_side="both"`` ``"<anchor method>+<positive method>"``, ``"none"`` for an
    unchanged side; missing for originals). ``attrs["meta"]`` is copied and gains an
    ``augmentation`` entry (settings and counts).

    Note for training: a copy shares its positive with its original, so batches
    holding both give in-batch false negatives; use a sampler that keeps one pair per
    ``anchor_id``/``positive_id`` in a batch.

    Raises:
        ItsmError: the table lacks ``anchor``/``positive``, is already augmented, or
            holds any non-train pair (a ``split`` column, ``split_col``, or
            ``attrs["meta"]["split"]``).
    """
    cfg = cfg or AugmentConfig()
    where = str(pairs.attrs.get("source", "pair table"))
    missing = [c for c in ("anchor", "positive") if c not in pairs.columns]
    if missing:
        raise ItsmError(f"pair table lacks column(s) {missing}; columns: "
                        f"{[str(c) for c in pairs.columns]}",
                        where=where, fix="pass a training pair file (anchor, positive, ...)")
    if "augmented" in pairs.columns and pairs["augmented"].fillna(False).astype(bool).any():
        raise ItsmError("the pair table already holds augmented rows; augmenting them again "
                        "would compound the noise", where=where,
                        fix="augment the original (un-augmented) training pair file")
    _check_train_only(pairs, split_col, where)

    rng = np.random.default_rng(cfg.seed)
    pattern = cfg.regex()
    sides = ("anchor", "positive") if cfg.augment_side == "both" else (cfg.augment_side,)
    originals = pairs.reset_index(drop=True)
    counts = _copies_per_pair(len(originals), cfg.expansion_factor, rng)

    cache: dict[str, tuple[list[str], list[bool]]] = {}

    def prepared(text: str) -> tuple[list[str], list[bool]]:
        if text not in cache:
            words = text.split()
            cache[text] = (words, protected_mask(words, pattern))
        return cache[text]

    rows: list[int] = []
    new_texts: dict[str, list[Any]] = {s: [] for s in sides}
    methods: list[str] = []
    side_values = {s: originals[s].tolist() for s in sides}
    for i in np.flatnonzero(counts):
        orig = tuple(side_values[s][i] for s in sides)
        seen = {orig}
        for _ in range(int(counts[i])):
            for _try in range(_MAX_TRIES):
                texts, used = [], []
                for value in orig:
                    if isinstance(value, str):
                        words, mask = prepared(value)
                        new, method = _augment_words(words, mask, value, cfg, rng)
                        method = method if new != value else "none"
                    else:  # missing text: nothing to augment
                        new, method = value, "none"
                    texts.append(new)
                    used.append(method)
                cand = tuple(texts)
                if cand not in seen:
                    seen.add(cand)
                    rows.append(int(i))
                    for s, t in zip(sides, cand):
                        new_texts[s].append(t)
                    methods.append("+".join(used))
                    break

    extra = originals.iloc[rows].copy()
    for s in sides:
        extra[s] = new_texts[s]
    orig_out = originals.copy()
    orig_out["augmented"] = False
    orig_out["augment_method"] = None
    extra["augmented"] = True
    extra["augment_method"] = methods
    out = pd.concat([orig_out, extra], ignore_index=True)
    out["augmented"] = out["augmented"].astype(bool)

    meta = copy.deepcopy(pairs.attrs.get("meta")) if isinstance(
        pairs.attrs.get("meta"), dict) else {}
    meta["augmentation"] = {
        "config": cfg.to_dict(),
        "n_original": int(len(originals)),
        "n_requested": int(counts.sum()),
        "n_added": int(len(extra)),
        "n_dropped_identical": int(counts.sum() - len(extra)),
    }
    out.attrs = {k: v for k, v in pairs.attrs.items() if k != "meta"}
    out.attrs["meta"] = meta
    return out


def class_balance(pairs: pd.DataFrame, label_col: str = "label") -> pd.DataFrame:
    """Pairs per class: columns ``label`` (the class id), ``n`` and ``share`` (of all)."""
    if label_col not in pairs.columns:
        raise ItsmError(f"pair table has no {label_col!r} column; columns: "
                        f"{[str(c) for c in pairs.columns]}",
                        where=str(pairs.attrs.get("source", "pair table")),
                        fix="pass the name of the class-id column")
    counts = pairs[label_col].value_counts(dropna=False).sort_index()
    total = int(counts.sum())
    return pd.DataFrame({
        "label": counts.index.to_numpy(),
        "n": counts.to_numpy(dtype=int),
        "share": counts.to_numpy(dtype=float) / total if total else 0.0,
    })


def _as_balance(table: pd.DataFrame, label_col: str) -> pd.DataFrame:
    if list(table.columns) == ["label", "n", "share"]:
        return table
    return class_balance(table, label_col)


def balance_report(before: pd.DataFrame, after: pd.DataFrame,
                   label_col: str = "label") -> pd.DataFrame:
    """Class balance before and after augmentation, one row per label.

    ``before``/``after`` are pair tables or :func:`class_balance` results. Columns:
    ``label, n_before, share_before, n_after, share_after`` (0 for a class absent on
    one side). Uniform augmentation keeps shares roughly equal; a shift shows which
    classes the kept copies favoured (short texts in a class yield fewer copies).
    """
    b = _as_balance(before, label_col).rename(columns={"n": "n_before",
                                                       "share": "share_before"})
    a = _as_balance(after, label_col).rename(columns={"n": "n_after", "share": "share_after"})
    rep = b.merge(a, on="label", how="outer").sort_values("label", ignore_index=True)
    for col in ("n_before", "n_after"):
        rep[col] = rep[col].fillna(0).astype(int)
    for col in ("share_before", "share_after"):
        rep[col] = rep[col].fillna(0.0).astype(float)
    return rep[["label", "n_before", "share_before", "n_after", "share_after"]]


def examples(augmented: pd.DataFrame, n: int = 10, seed: int = 42) -> pd.DataFrame:
    """Side-by-side original and augmented anchors (for the notebook/report)."""
    aug = augmented[augmented["augmented"]]
    if aug.empty:
        return pd.DataFrame(columns=["method", "original", "augmented"])
    orig = augmented[~augmented["augmented"]].drop_duplicates(["anchor_id", "positive_id"])
    orig = orig.set_index(["anchor_id", "positive_id"])["anchor"]
    sample = aug.sample(min(n, len(aug)), random_state=seed)
    return pd.DataFrame({
        "method": sample["augment_method"].to_numpy(),
        "original": [orig.get((a, p), "") for a, p in zip(sample["anchor_id"],
                                                           sample["positive_id"])],
        "augmented": sample["anchor"].to_numpy(),
    })


def augment_pair_file(pairs: str | Path, out: str | Path, cfg: AugmentConfig
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``itsm augment``: augmented copies of a TRAINING pair file, written to a NEW file.

    Returns:
        ``(augmented pairs, class-balance report before / after)``.

    Raises:
        ItsmError: ``out`` exists (never overwritten) or ``pairs`` is missing.
    """
    from itsm_core.pairs.training import read_pair_file, write_pair_file

    out, pairs = Path(out), Path(pairs)
    if out.exists():
        raise ItsmError("output file already exists; refusing to overwrite it",
                        where=str(out), fix="pass a new --out path")
    if not pairs.exists():
        raise ItsmError("pair file not found", where=str(pairs), fix="check the --pairs path")
    before = read_pair_file(pairs)
    after = augment_pairs(before, cfg)
    report = balance_report(before, after)
    write_pair_file(after, out, after.attrs.get("meta", {}))
    return after, report
