"""Text cleaning and the one place where incident fields become the text that is embedded.

Every model (BM25, bi-encoders, fine-tuned adapters) must see *exactly* the same text for
an incident, otherwise a comparison between them measures the preprocessing, not the
model. So there is one cleaner (:func:`clean_text`) and one builder (:class:`TextBuilder`),
and both are deliberately conservative: they remove markup and e-mail boilerplate that
carry no information about the incident, and never touch ordinary words.

:func:`check_label_leakage` guards the benchmark itself: embedding a ground-truth column
(e.g. ``category``) would let a model "find similar incidents" by copying the label.
"""

from __future__ import annotations

import html
import math
import numbers
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from typing import Any

import pandas as pd

from itsm_core.core.errors import ItsmError

__all__ = [
    "BOILERPLATE_PATTERNS",
    "NULL_LIKE",
    "LabelLeakageWarning",
    "TextBuilder",
    "check_label_leakage",
    "clean_series",
    "clean_text",
    "is_null_like",
    "truncate_words",
]

NULL_LIKE: set[str] = {"nan", "none", "null", "n/a", "na", "-", "<null>", ""}
"""Values that mean "no value" when they are the WHOLE (stripped, lower-cased) field.

Words that merely contain one of them ("maintenance", "finance", "Nancy") are untouched.
"""

_FLAGS = re.IGNORECASE | re.MULTILINE

# (keywords, pattern): a built-in pattern only runs when its lower-cased text contains one
# of its keywords -- substring tests are far cheaper than running every regex on every text.
_BUILTIN_BOILERPLATE: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = (
    # Quoted e-mail: the separator line and everything after it.
    (
        ("original message",),
        re.compile(r"^[ \t>]*-{2,}\s*Original Message\s*-{2,}.*\Z", _FLAGS | re.DOTALL),
    ),
    # Mobile signatures on a line of their own ...
    (
        ("sent from my", "get outlook"),
        re.compile(
            r"^[ \t]*(?:Sent from my (?:iPhone|iPad|iPod|Android|BlackBerry|Samsung|Galaxy"
            r"|Huawei|Pixel|mobile|smartphone|phone|Windows Phone|Surface)\b[^\n]{0,40}"
            r"|Get Outlook for (?:iOS|Android)\b[^\n]{0,20})[ \t]*$",
            _FLAGS,
        ),
    ),
    # ... or glued to the end of a sentence.
    (
        ("sent from my",),
        re.compile(r"\bSent from my (?:iPhone|iPad|Android|BlackBerry)\b\.?", _FLAGS),
    ),
    # Confidentiality disclaimers, from their first sentence to the end of the paragraph.
    (
        ("confidential", "privileged"),
        re.compile(
            r"(?:^|(?<=[.!?])[ \t]+)[ \t]*"
            r"(?:this|the information (?:contained )?in this) (?:e-?mail|message|communication)"
            r"(?: and any (?:attachments?|files?)(?: transmitted with it)?)?,?"
            r" (?:is|are|may be|may contain|contains?)(?: (?:strictly|legally|highly))?"
            r" (?:confidential|privileged)\b.*?(?=\n[ \t]*\n|\Z)",
            _FLAGS | re.DOTALL,
        ),
    ),
    (
        ("confidentiality notice", "disclaimer"),
        re.compile(
            r"^[ \t]*(?:confidentiality notice|disclaimer)\s*:.*?(?=\n[ \t]*\n|\Z)",
            _FLAGS | re.DOTALL,
        ),
    ),
    # Inline image references left by Outlook/Exchange.
    (("[cid:",), re.compile(r"\[cid:[^\]\n]*\]", re.IGNORECASE)),
)
_BUILTIN_HINTS: dict[int, tuple[str, ...]] = {id(p): h for h, p in _BUILTIN_BOILERPLATE}

BOILERPLATE_PATTERNS: list[re.Pattern[str]] = [p for _, p in _BUILTIN_BOILERPLATE]
"""Regexes whose matches are removed by :func:`clean_text`, in order.

It is a plain list so users can inspect or extend it (``BOILERPLATE_PATTERNS.append(...)``);
:func:`clean_text` reads it at call time. Keep additions conservative: a pattern that eats
real incident text silently makes every model look worse.
"""

# Only real HTML tag names are stripped, so texts like "List<String>" or "<ERROR>" survive.
_HTML_TAGS = (
    "a|abbr|b|blockquote|body|br|caption|center|code|col|colgroup|dd|del|div|dl|dt|em|font"
    "|h[1-6]|head|hr|html|i|img|ins|li|link|meta|o:p|ol|p|pre|s|small|span|strike|strong"
    "|sub|sup|table|tbody|td|tfoot|th|thead|title|tr|tt|u|ul|wbr"
)
_BLOCK_TAG_RE = re.compile(
    r"</?(?:br|p|div|li|tr|h[1-6]|hr|blockquote|pre|ul|ol|table)\b[^<>]*>", re.IGNORECASE
)
_TAG_RE = re.compile(rf"</?(?:{_HTML_TAGS})(?:\s[^<>]*)?/?>", re.IGNORECASE)
_DROP_BLOCK_RE = re.compile(
    r"<(script|style)\b[^>]*>.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL
)
_INVISIBLE_RE = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")
_END_PUNCT = ".!?;:…"


def is_null_like(value: str) -> bool:
    """True when the whole stripped string is a null marker such as ``"N/A"`` or ``"nan"``."""
    return value.strip().lower() in NULL_LIKE


def _to_str(value: Any) -> str | None:
    """Turn a cell value into a string, or None when it is missing (None/NaN/NA/NaT)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        f = float(value)
        if math.isnan(f):
            return None
        # ids read from JSON/Parquet with gaps arrive as floats: 1234.0 -> "1234"
        return str(int(f)) if f.is_integer() and abs(f) < 1e16 else repr(f)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):  # arrays and other non-scalars
        pass
    return str(value)


def clean_text(value: Any) -> str:
    """Clean one field: HTML, entities, e-mail boilerplate and whitespace; "" for null-likes.

    Accepts strings, None, NaN/NA and numbers. Steps: unescape HTML entities, turn block
    tags (``<br>``, ``<p>``, …) into line breaks and strip other tags, normalise CRLF,
    remove :data:`BOILERPLATE_PATTERNS`, then collapse all whitespace to single spaces.
    A value that is null-like (see :data:`NULL_LIKE`) before or after cleaning gives "".
    """
    text = _to_str(value)
    if text is None or is_null_like(text):
        return ""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "&" in text:
        text = html.unescape(text)
    if "<" in text:
        text = _DROP_BLOCK_RE.sub(" ", text)
        text = _BLOCK_TAG_RE.sub("\n", text)
        text = _TAG_RE.sub(" ", text)
    if not text.isascii():
        text = _INVISIBLE_RE.sub("", text)
    lowered = text.lower()
    for pattern in BOILERPLATE_PATTERNS:
        hints = _BUILTIN_HINTS.get(id(pattern))  # user-added patterns have none: always run
        if hints is None or any(h in lowered for h in hints):
            text = pattern.sub("\n", text)
    text = " ".join(text.split())  # collapse all (Unicode) whitespace; faster than \s+
    return "" if is_null_like(text) else text


def clean_series(values: Iterable[Any]) -> list[str]:
    """Apply :func:`clean_text` to many values, cleaning each distinct value only once.

    Incident exports repeat a lot (templated descriptions, "N/A", categories), so caching
    by value makes cleaning 50k rows take well under a second.
    """
    cache: dict[Any, str] = {}
    out: list[str] = []
    for value in values:
        try:
            cleaned = cache.get(value)
        except TypeError:  # unhashable cell (list/dict from JSON)
            out.append(clean_text(value))
            continue
        if cleaned is None:
            cleaned = cache[value] = clean_text(value)
        out.append(cleaned)
    return out


def truncate_words(text: str, max_chars: int | None) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, on a word boundary when possible."""
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    if not text[max_chars].isspace():
        head, sep, _ = cut.rpartition(" ")
        if sep and head.strip():
            cut = head
    return cut.rstrip(" ,;:-")


def _strip_repeated_prefix(text: str, earlier: Sequence[str]) -> str:
    """Remove an earlier field's text from the start of ``text`` (ServiceNow descriptions
    usually begin with the short description), so the model does not see it twice."""
    folded = text.casefold()
    for prev in earlier:
        for candidate in {prev, prev.rstrip(_END_PUNCT + " ")}:
            if not candidate:
                continue
            c = candidate.casefold()
            if folded.startswith(c):
                rest = text[len(candidate) :]
                if rest and rest[0].isalnum() and candidate[-1].isalnum():
                    continue  # "Print" is not a prefix of "Printer" in the word sense
                rest = rest.lstrip(_END_PUNCT + " ,-–—")
                return _strip_repeated_prefix(rest, earlier) if rest else ""
    return text


@dataclass(frozen=True)
class TextBuilder:
    """Builds the single string embedded for an incident from its (cleaned) fields.

    Attributes:
        fields: columns joined in this order; empty ones are skipped.
        separator: put between non-empty fields (``". "`` by default; when a field already
            ends with punctuation the separator's leading punctuation is dropped).
        max_chars_per_field: truncate each cleaned field to this many characters.
        max_chars: truncate the joined text to this many characters.
    """

    fields: tuple[str, ...] = ("short_description", "description")
    separator: str = ". "
    max_chars_per_field: int | None = None
    max_chars: int | None = None

    def __post_init__(self) -> None:
        flds = self.fields
        if isinstance(flds, str):
            flds = (flds,)
        flds = tuple(flds)
        if not flds or not all(isinstance(f, str) and f for f in flds):
            raise ItsmError(
                f"text fields must be a non-empty list of column names, got {self.fields!r}",
                where="text builder",
                fix='pass e.g. fields=("short_description", "description")',
            )
        if len(set(flds)) != len(flds):
            raise ItsmError(
                f"text fields list a column twice: {list(flds)}",
                where="text builder",
                fix="list each column once",
            )
        object.__setattr__(self, "fields", flds)
        for name in ("max_chars_per_field", "max_chars"):
            limit = getattr(self, name)
            if limit is not None and (not isinstance(limit, int) or limit <= 0):
                raise ItsmError(
                    f"{name} must be a positive integer or None, got {limit!r}",
                    where="text builder",
                    fix=f"set {name} to e.g. 512, or leave it unset for no limit",
                )

    # -- building ---------------------------------------------------------------------
    def _join(self, parts: Sequence[str]) -> str:
        """Join already-cleaned field values, dropping empties and repeated prefixes."""
        kept: list[str] = []
        originals: list[str] = []
        for part in parts:
            if not part:
                continue
            rest = _strip_repeated_prefix(part, originals) if originals else part
            originals.append(part)
            rest = truncate_words(rest, self.max_chars_per_field)
            if rest:
                kept.append(rest)
        if not kept:
            return ""
        sep = self.separator
        bare_sep = (sep[1:] or " ") if sep[:1] in _END_PUNCT else sep
        out = kept[0]
        for part in kept[1:]:
            out += (bare_sep if out[-1] in _END_PUNCT else sep) + part
        return truncate_words(out, self.max_chars)

    def build(self, row: Mapping[str, Any]) -> str:
        """Text for one incident (a dict, or a DataFrame row). Missing keys count as empty."""
        return self._join([clean_text(row.get(f)) for f in self.fields])

    def build_series(self, df: pd.DataFrame) -> pd.Series:
        """Text for every row of ``df`` (same index), cleaning each distinct value once."""
        missing = [f for f in self.fields if f not in df.columns]
        if missing:
            raise ItsmError(
                f"text field(s) {missing} are not columns of the incident table; "
                f"available columns: {[str(c) for c in df.columns]}",
                where=str(df.attrs.get("source", "incident table")),
                fix="choose text fields among the available columns (--text-fields), "
                "or map the source headers onto them with --columns mapping.json",
            )
        cleaned = [clean_series(df[f].tolist()) for f in self.fields]
        texts = [self._join(parts) for parts in zip(*cleaned)] if cleaned else []
        return pd.Series(texts, index=df.index, dtype=object, name="text")

    # -- (de)serialisation ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, stored in run manifests so a run's exact text is reproducible."""
        d = asdict(self)
        d["fields"] = list(self.fields)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextBuilder:
        """Inverse of :meth:`to_dict`; unknown keys are an error (likely a typo)."""
        known = {f.name for f in dataclass_fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ItsmError(
                f"unknown text-builder setting(s) {unknown}; known: {sorted(known)}",
                where="text builder settings",
                fix="remove or rename the unknown keys",
            )
        kwargs = dict(data)
        if "fields" in kwargs and not isinstance(kwargs["fields"], str):
            kwargs["fields"] = tuple(kwargs["fields"])
        return cls(**kwargs)


class LabelLeakageWarning(UserWarning):
    """Emitted when a ground-truth column is embedded on purpose (``allow=True``)."""


def _norm_name(name: str) -> str:
    return re.sub(r"[\s_\-]+", "_", str(name).strip().lower())


def check_label_leakage(
    text_fields: Sequence[str], label_columns: Sequence[str], *, allow: bool = False
) -> None:
    """Refuse to embed a ground-truth column: the benchmark would reward copying the label.

    Raises :class:`ItsmError` when a label column (category, subcategory, link columns …)
    is also a text field; with ``allow=True`` it warns (:class:`LabelLeakageWarning`) instead.
    Names are compared case-insensitively, with spaces and underscores equivalent.
    """
    labels = {_norm_name(c): c for c in label_columns}
    leaked = [f for f in text_fields if _norm_name(f) in labels]
    if not leaked:
        return
    problem = (
        f"the ground-truth column(s) {leaked} are also embedded text fields; the benchmark "
        "would then reward a model for copying the label into the text instead of "
        "understanding the incident, and its scores would be meaningless"
    )
    if allow:
        warnings.warn(
            f"label leakage allowed explicitly: {problem}", LabelLeakageWarning, stacklevel=2
        )
        return
    raise ItsmError(
        problem,
        where="text fields",
        fix=f"remove {leaked} from the text fields (--text-fields), or pass "
        "--allow-label-leakage (allow=True) to override explicitly",
    )
