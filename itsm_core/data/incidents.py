"""Loading incidents (and incident links) into one canonical schema.

Real exports differ: ServiceNow writes "Short description", a home-grown tool writes
"Title", a data scientist saved Parquet. Everything downstream (splits, text building,
evaluation) only knows :data:`CANONICAL_COLUMNS`, so the translation happens once, here,
through a :class:`ColumnMapping` (identity, a preset such as ``servicenow``, or a user's
JSON file). Every problem the user can fix (wrong encoding, missing header, duplicate
incident numbers, …) is raised as :class:`~itsm_core.core.errors.ItsmError` naming the file,
the problem and the fix.
"""

from __future__ import annotations

import codecs
import io
import json
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from itsm_core.core.config import SPLITS
from itsm_core.core.errors import ItsmError
from itsm_core.data.text import TextBuilder, clean_series, clean_text, is_null_like

__all__ = [
    "CANONICAL_COLUMNS",
    "LABEL_COLUMNS",
    "PRESETS_DIR",
    "SUPPORTED_SUFFIXES",
    "TEXT_COLUMNS",
    "ColumnMapping",
    "EmptyTextWarning",
    "available_presets",
    "check_links_known",
    "load_incidents",
    "load_links",
    "normalise_split",
    "read_table",
]

CANONICAL_COLUMNS: tuple[str, ...] = (
    "number",
    "short_description",
    "description",
    "category",
    "subcategory",
    "service",
    "assignment_group",
    "resolution_notes",
    "opened_at",
)
"""The schema every loader produces, in this order (extra source columns follow)."""

TEXT_COLUMNS: tuple[str, ...] = ("short_description", "description")
"""Default fields embedded for an incident."""

LABEL_COLUMNS: tuple[str, ...] = ("category", "subcategory", "service", "assignment_group")
"""Label-ish columns: cleaned, and empty values stored as ``pd.NA``."""

_FREE_TEXT_COLUMNS: tuple[str, ...] = ("short_description", "description", "resolution_notes")

PRESETS_DIR: Path = Path(__file__).resolve().parent / "presets"

SUPPORTED_SUFFIXES: tuple[str, ...] = (
    ".csv",
    ".tsv",
    ".txt",
    ".json",
    ".jsonl",
    ".ndjson",
    ".parquet",
)

_SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "dev": "validation",
    "test": "test",
}

_JSON_RECORD_KEYS: tuple[str, ...] = ("records", "incidents", "data")
_MAPPING_FIX = (
    "pass a column mapping JSON that maps canonical names to your headers "
    '(--columns mapping.json, e.g. {"number": "Ticket ID", "short_description": "Title"}), '
    "or rename the columns in the file"
)


class EmptyTextWarning(UserWarning):
    """Incidents were dropped because their text was empty after cleaning."""


def _norm_header(name: Any) -> str:
    """Header key for lenient matching: case-insensitive, spaces and underscores equal."""
    return re.sub(r"[\s_]+", "_", str(name).strip().casefold())


def _preview(items: Sequence[Any], limit: int = 5) -> str:
    shown = ", ".join(repr(str(i)) for i in items[:limit])
    return shown + (f", … ({len(items)} in total)" if len(items) > limit else "")


# ----------------------------------------------------------------------------------------
# Column mappings
# ----------------------------------------------------------------------------------------
def available_presets() -> list[str]:
    """Names of the bundled mapping presets (``itsm_core/presets/*.json``)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.json"))


@dataclass
class ColumnMapping:
    """How source headers map onto :data:`CANONICAL_COLUMNS`.

    Attributes:
        columns: canonical name -> source header, or a list of alternative headers (the
            first one present in the file wins), or None for "this file has no such column".
            Headers match exactly first, then case-insensitively with spaces/underscores
            equivalent. Canonical columns not listed fall back to a same-named header.
        strict: when True every listed column must be found (user JSON mappings); when
            False only ``number`` and one text field are required (identity and presets).
        origin: where the mapping came from, for error messages.
    """

    columns: dict[str, str | list[str] | None]
    strict: bool = True
    origin: str = "column mapping"

    def __post_init__(self) -> None:
        self.columns = _validate_mapping(self.columns, where=self.origin)

    # -- constructors -----------------------------------------------------------------
    @classmethod
    def identity(cls) -> ColumnMapping:
        """Canonical names map to themselves (``Short Description`` matches too)."""
        return cls({c: c for c in CANONICAL_COLUMNS}, strict=False, origin="identity mapping")

    @classmethod
    def preset(cls, name: str) -> ColumnMapping:
        """A bundled preset, e.g. ``ColumnMapping.preset("servicenow")``."""
        presets = available_presets()
        key = str(name).strip().lower()
        if key not in presets:
            raise ItsmError(
                f"unknown column-mapping preset {name!r}; available presets: {presets}",
                where="--columns",
                fix="use one of the available presets, or pass a path to a mapping .json file",
            )
        path = PRESETS_DIR / f"{key}.json"
        data = _read_mapping_json(path)
        return cls(data, strict=False, origin=f"preset {key!r} ({path})")

    @classmethod
    def from_json(cls, path: str | Path) -> ColumnMapping:
        """A user's mapping file: ``{"number": "Ticket", "short_description": "Title"}``.

        Every listed column must exist in the incident file (strict); keys starting with
        ``_`` are comments.
        """
        path = Path(path)
        return cls(_read_mapping_json(path), strict=True, origin=str(path))

    @classmethod
    def resolve(cls, spec: str | Path | ColumnMapping | Mapping[str, Any] | None) -> ColumnMapping:
        """None -> identity; a preset name -> preset; a ``.json`` path -> that file."""
        if spec is None:
            return cls.identity()
        if isinstance(spec, ColumnMapping):
            return spec
        if isinstance(spec, Mapping):
            return cls(dict(spec), strict=True, origin="column mapping")
        if isinstance(spec, Path) or str(spec).lower().endswith(".json"):
            return cls.from_json(spec)
        if isinstance(spec, str):
            key = spec.strip().lower()
            if key == "identity":
                return cls.identity()
            if key in available_presets():
                return cls.preset(key)
        raise ItsmError(
            f"cannot use {spec!r} as a column mapping; it is neither a preset "
            f"({available_presets()}) nor a path to a .json file",
            where="--columns",
            fix="pass a preset name (e.g. --columns servicenow) or a mapping file "
            "(--columns mapping.json); leave it out when the headers are already canonical",
        )

    # -- use --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, str | list[str] | None]:
        """The mapping as plain JSON (for run manifests)."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.columns.items()}

    def match(self, headers: Sequence[str]) -> dict[str, str | None]:
        """Canonical name -> the source header used for it (None when not found)."""
        headers = [str(h) for h in headers]
        by_norm: dict[str, str] = {}
        for h in headers:
            by_norm.setdefault(_norm_header(h), h)
        used: set[str] = set()

        def find(candidates: Iterable[str]) -> str | None:
            for cand in candidates:
                if cand in headers and cand not in used:
                    return cand
                h = by_norm.get(_norm_header(cand))
                if h is not None and h not in used:
                    return h
            return None

        matched: dict[str, str | None] = {}
        for canon in CANONICAL_COLUMNS:  # explicit entries first ...
            if canon in self.columns:
                src = self.columns[canon]
                cands = [] if src is None else [src] if isinstance(src, str) else src
                matched[canon] = find(cands)
                if matched[canon] is not None:
                    used.add(matched[canon])
        for canon in CANONICAL_COLUMNS:  # ... then same-named headers for the rest
            if canon not in self.columns:
                matched[canon] = find([canon])
                if matched[canon] is not None:
                    used.add(matched[canon])
        return {c: matched[c] for c in CANONICAL_COLUMNS}

    def missing(self, matched: Mapping[str, str | None]) -> dict[str, list[str]]:
        """Listed (non-None) canonical columns whose headers were not found."""
        out: dict[str, list[str]] = {}
        for canon, src in self.columns.items():
            if src is not None and matched.get(canon) is None:
                out[canon] = [src] if isinstance(src, str) else list(src)
        return out


def _validate_mapping(data: Any, *, where: str) -> dict[str, str | list[str] | None]:
    if not isinstance(data, Mapping):
        raise ItsmError(
            f"a column mapping must be a JSON object, got {type(data).__name__}",
            where=where,
            fix='write an object such as {"number": "Ticket ID", "short_description": "Title"}',
        )
    entries = {str(k): v for k, v in data.items() if not str(k).startswith("_")}
    unknown = sorted(k for k in entries if k not in CANONICAL_COLUMNS)
    if unknown:
        raise ItsmError(
            f"unknown canonical column(s) {unknown} in the column mapping; "
            f"the keys must be among {list(CANONICAL_COLUMNS)}",
            where=where,
            fix="use canonical names as keys and your file's headers as values "
            '(e.g. "short_description": "Title"); extra columns are kept without mapping',
        )
    if not entries:
        raise ItsmError(
            "the column mapping maps no columns",
            where=where,
            fix='map at least "number" and a text field, e.g. '
            '{"number": "Ticket ID", "short_description": "Title"}',
        )
    out: dict[str, str | list[str] | None] = {}
    for key, value in entries.items():
        ok_list = isinstance(value, list) and value and all(isinstance(v, str) and v for v in value)
        if not (value is None or (isinstance(value, str) and value) or ok_list):
            raise ItsmError(
                f"the mapping for {key!r} must be a header name, a non-empty list of "
                f"alternative header names, or null; got {value!r}",
                where=where,
                fix=f'write e.g. "{key}": "My header" or "{key}": ["Header A", "Header B"]',
            )
        out[key] = list(value) if isinstance(value, list) else value
    return out


def _read_mapping_json(path: Path) -> Any:
    if not path.is_file():
        raise ItsmError(
            "column mapping file not found",
            where=str(path),
            fix="check the path given to --columns (or use a preset such as 'servicenow')",
        )
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ItsmError(
            f"the column mapping is not UTF-8 (invalid byte at offset {exc.start})",
            where=str(path),
            fix="re-save the mapping file as UTF-8",
        ) from exc
    except json.JSONDecodeError as exc:
        raise ItsmError(
            f"malformed JSON in the column mapping at line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}",
            where=str(path),
            fix='fix the JSON syntax; the file must be one object like {"number": "Ticket ID"}',
        ) from exc


# ----------------------------------------------------------------------------------------
# Reading tables
# ----------------------------------------------------------------------------------------
def _decode(data: bytes, encoding: str, where: str) -> str:
    """Decode file bytes, accepting a UTF-8 BOM, with an actionable error on bad bytes."""
    try:
        codec = codecs.lookup(encoding).name
    except LookupError as exc:
        raise ItsmError(
            f"unknown text encoding {encoding!r}",
            where=where,
            fix='pass a Python codec name such as "utf-8", "cp1252" or "latin-1" (--encoding)',
        ) from exc
    offset = 0
    if codec in ("utf-8", "utf-8-sig"):
        codec = "utf-8"
        if data.startswith(codecs.BOM_UTF8):
            offset = len(codecs.BOM_UTF8)
    try:
        return data[offset:].decode(codec)
    except UnicodeDecodeError as exc:
        pos = exc.start + offset
        line = data.count(b"\n", 0, pos) + 1
        bad = data[pos : pos + 1].hex()
        suggestion = (
            're-save the file as UTF-8, or pass its encoding, e.g. encoding="cp1252" '
            "(CLI: --encoding cp1252) for Excel/Windows exports"
            if codec == "utf-8"
            else 're-save the file as UTF-8 and pass encoding="utf-8", or pass the '
            "encoding it was really written in (--encoding)"
        )
        raise ItsmError(
            f"cannot decode the file as {encoding}: byte 0x{bad} at byte offset {pos} "
            f"(line {line}) is not valid {encoding}",
            where=where,
            fix=suggestion,
        ) from exc


def _read_delimited(text: str, sep: str, where: str) -> pd.DataFrame:
    try:
        return pd.read_csv(
            io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, skip_blank_lines=True
        )
    except pd.errors.EmptyDataError as exc:
        raise ItsmError(
            "the file has no header row and no data",
            where=where,
            fix="export the table again with a header row",
        ) from exc
    except (pd.errors.ParserError, ValueError) as exc:
        msg = str(exc).strip().replace("\n", " ")
        raise ItsmError(
            f"malformed {'tab-separated' if sep == chr(9) else 'CSV'} file: {msg}",
            where=where,
            fix="check the reported row for an unterminated quote or a wrong number of "
            "fields (text containing the separator must be quoted); re-export the file",
        ) from exc


def _records_frame(records: Any, where: str, what: str) -> pd.DataFrame:
    if not isinstance(records, list):
        raise ItsmError(
            f"{what} must be an array of incident objects, or an object with one of the keys "
            f"{list(_JSON_RECORD_KEYS)} holding such an array; got {type(records).__name__}",
            where=where,
            fix='write e.g. [{"number": "INC1", "short_description": "…"}, …]',
        )
    bad = [i for i, r in enumerate(records) if not isinstance(r, dict)]
    if bad:
        raise ItsmError(
            f"{len(bad)} record(s) are not JSON objects (first at position {bad[0]})",
            where=where,
            fix="make every record an object mapping column names to values",
        )
    return pd.DataFrame.from_records(records) if records else pd.DataFrame()


def _read_json(text: str, where: str) -> pd.DataFrame:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ItsmError(
            f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
            where=where,
            fix="fix the JSON syntax (or, for one object per line, name the file .jsonl)",
        ) from exc
    if isinstance(data, dict):
        key = next((k for k in _JSON_RECORD_KEYS if k in data), None)
        if key is None:
            raise ItsmError(
                f"the JSON object has none of the keys {list(_JSON_RECORD_KEYS)} "
                f"(it has {_preview(list(data))})",
                where=where,
                fix='store the incidents as a top-level array or under "records"',
            )
        return _records_frame(data[key], where, f'"{key}"')
    return _records_frame(data, where, "the JSON document")


def _read_jsonl(text: str, where: str) -> pd.DataFrame:
    records: list[Any] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ItsmError(
                f"malformed JSON on line {lineno}, column {exc.colno}: {exc.msg}",
                where=where,
                fix="each line of a .jsonl file must be one complete JSON object",
            ) from exc
        if not isinstance(rec, dict):
            raise ItsmError(
                f"line {lineno} is a JSON {type(rec).__name__}, not an object",
                where=where,
                fix="each line of a .jsonl file must be one JSON object",
            )
        records.append(rec)
    return _records_frame(records, where, "the JSON lines")


def read_table(path: str | Path, *, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a table by suffix: .csv/.tsv/.txt, .json, .jsonl/.ndjson or .parquet.

    Delimited files are read as strings with ``keep_default_na=False`` (so the text "NA"
    survives; :func:`~itsm_core.data.text.clean_text` decides what is null). A UTF-8 BOM is
    accepted. Headers are stripped of surrounding whitespace. Every failure is an
    :class:`ItsmError` naming the file.
    """
    path = Path(path)
    where = str(path)
    if not path.exists():
        raise ItsmError("file not found", where=where, fix="check the path and the file name")
    if not path.is_file():
        raise ItsmError("not a file", where=where, fix="pass the path of a data file")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ItsmError(
            f"unsupported file type {suffix or '(no suffix)'!r}; supported: "
            f"{', '.join(SUPPORTED_SUFFIXES)}",
            where=where,
            fix="export the data as CSV, JSON, JSON lines or Parquet and use that suffix",
        )
    if suffix == ".parquet":
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several unrelated types
            raise ItsmError(
                f"cannot read the Parquet file: {exc}",
                where=where,
                fix="re-export the file as Parquet, or as CSV",
            ) from exc
    else:
        data = path.read_bytes()
        if not data.strip():
            raise ItsmError("the file is empty", where=where, fix="export the data again")
        text = _decode(data, encoding, where)
        if suffix == ".json":
            df = _read_json(text, where)
        elif suffix in (".jsonl", ".ndjson"):
            df = _read_jsonl(text, where)
        else:
            first_line = text.split("\n", 1)[0]
            sep = "\t" if suffix == ".tsv" or (suffix == ".txt" and "\t" in first_line) else ","
            df = _read_delimited(text, sep, where)
    df.columns = [str(c).strip() for c in df.columns]
    dupes = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
    if dupes:
        raise ItsmError(
            f"duplicate column header(s) {dupes}",
            where=where,
            fix="give every column a distinct header",
        )
    if df.empty:
        cols = f" (columns: {list(df.columns)})" if len(df.columns) else ""
        raise ItsmError(
            f"the file has no data rows{cols}",
            where=where,
            fix="check that the export contains incidents, not just a header",
        )
    df.attrs["source"] = where
    return df


# ----------------------------------------------------------------------------------------
# Incidents
# ----------------------------------------------------------------------------------------
def normalise_split(values: pd.Series, *, where: str) -> pd.Series:
    """Map split names to train/validation/test (case-insensitive; val/valid/dev allowed)."""
    keys = pd.Series(clean_series(values.tolist()), index=values.index).str.lower()
    mapped = keys.map(_SPLIT_ALIASES)
    bad = keys[mapped.isna()]
    if len(bad):
        counts = bad.replace("", "<blank>").value_counts()
        shown = ", ".join(f"{v!r} ({n}x)" for v, n in counts.head(5).items())
        raise ItsmError(
            f"invalid value(s) in the 'split' column: {shown}; allowed: {list(SPLITS)} "
            "(case-insensitive; 'val', 'valid' and 'dev' mean validation)",
            where=where,
            fix="fix or fill those split values, or drop the 'split' column to let the "
            "workbench split the incidents itself",
        )
    return mapped.astype("string")


def _check_numbers(numbers: pd.Series, where: str) -> None:
    blank = [i + 1 for i, v in enumerate(numbers.tolist()) if not v]
    if blank:
        raise ItsmError(
            f"{len(blank)} incident(s) have no number (data rows {_preview(blank)}, "
            "counting from 1 after the header)",
            where=where,
            fix="fill in the incident numbers, or map a column that always holds a unique "
            "id onto 'number' (--columns mapping.json)",
        )
    counts = numbers.value_counts()
    dup = counts[counts > 1]
    if len(dup):
        shown = ", ".join(f"{k!r} ({n}x)" for k, n in dup.head(5).items())
        more = f" and {len(dup) - 5} more" if len(dup) > 5 else ""
        raise ItsmError(
            f"incident numbers must be unique, but {len(dup)} are repeated: {shown}{more}",
            where=where,
            fix="de-duplicate the export (keep one row per incident), or map a unique id "
            "column onto 'number' (--columns mapping.json)",
        )


def load_incidents(
    path: str | Path,
    columns: str | Path | ColumnMapping | Mapping[str, Any] | None = None,
    *,
    text_fields: Sequence[str] = TEXT_COLUMNS,
    encoding: str = "utf-8",
    require_text: bool = True,
) -> pd.DataFrame:
    """Load an incident export into :data:`CANONICAL_COLUMNS` (+ its extra columns).

    Args:
        path: .csv/.tsv/.txt/.json/.jsonl/.ndjson/.parquet file.
        columns: mapping spec for :meth:`ColumnMapping.resolve` (None = canonical headers).
        text_fields: fields whose cleaned, joined text defines an incident; rows where it is
            empty are dropped (with an :class:`EmptyTextWarning`).
        encoding: text encoding of delimited/JSON files.
        require_text: when False, no text field is required and no row is dropped.

    Returns:
        A DataFrame with a fresh RangeIndex; canonical columns have dtype ``string``
        (label columns and absent columns hold ``pd.NA``; present text columns hold cleaned
        strings, "" when empty). ``attrs``: ``source``, ``dropped_empty``, ``columns_used``.
    """
    where = str(path)
    text_fields = (text_fields,) if isinstance(text_fields, str) else tuple(text_fields)
    mapping = ColumnMapping.resolve(columns)
    raw = read_table(path, encoding=encoding)
    headers = list(raw.columns)
    matched = mapping.match(headers)

    if mapping.strict:
        missing = mapping.missing(matched)
        if missing:
            wanted = "; ".join(f"{c} <- {_preview(h)}" for c, h in missing.items())
            raise ItsmError(
                f"the column mapping ({mapping.origin}) names header(s) the file does not "
                f"have: {wanted}. The file's headers are: {headers}",
                where=where,
                fix=_MAPPING_FIX,
            )
    if matched["number"] is None:
        raise ItsmError(
            "no incident-number column found (looked for "
            f"{_preview(_candidates(mapping, 'number'))}); the file's headers are: {headers}",
            where=where,
            fix=_MAPPING_FIX,
        )

    used = {s for s in matched.values() if s is not None}
    extras = [h for h in headers if h not in used]
    canon_norm = {_norm_header(c) for c in CANONICAL_COLUMNS}
    extra_names: dict[str, str] = {}
    for h in extras:
        name = h
        if _norm_header(h) in canon_norm:  # e.g. an unmapped "Number" beside a mapped id
            name = f"source_{h}"
        elif _norm_header(h) == "split" and "split" not in extras:
            name = "split"
        extra_names[h] = name

    unknown_fields = [
        f for f in text_fields if f not in CANONICAL_COLUMNS and f not in extra_names.values()
    ]
    if unknown_fields:
        raise ItsmError(
            f"text field(s) {unknown_fields} are neither canonical columns nor columns of the "
            f"file; canonical: {list(CANONICAL_COLUMNS)}, file headers: {headers}",
            where=where,
            fix="choose existing columns as text fields (--text-fields)",
        )
    present_text = [f for f in text_fields if f not in matched or matched[f] is not None]
    if require_text and not present_text:
        looked = {f: _candidates(mapping, f) for f in text_fields}
        raise ItsmError(
            f"none of the text fields {list(text_fields)} was found (looked for {looked}); "
            f"the file's headers are: {headers}",
            where=where,
            fix=_MAPPING_FIX,
        )

    n = len(raw)
    na = pd.Series(pd.NA, index=raw.index, dtype="string")
    out: dict[str, pd.Series] = {}
    for canon in CANONICAL_COLUMNS:
        src = matched[canon]
        if src is None:
            out[canon] = na.copy()
            continue
        cleaned = pd.Series(clean_series(raw[src].tolist()), index=raw.index, dtype="string")
        if canon in LABEL_COLUMNS or canon == "opened_at":
            cleaned = cleaned.mask(cleaned == "")
        out[canon] = cleaned
    _check_numbers(out["number"], where)
    for h in extras:
        out[extra_names[h]] = raw[h]
    df = pd.DataFrame(out, index=raw.index)

    if "split" in df.columns:
        df["split"] = normalise_split(df["split"], where=where)

    dropped = 0
    if require_text:
        text = TextBuilder(fields=text_fields).build_series(df)
        empty = text == ""
        dropped = int(empty.sum())
        if dropped == n:
            raise ItsmError(
                f"all {n} incident(s) have empty text in {list(text_fields)} after cleaning "
                "(blank or null-like values such as 'N/A')",
                where=where,
                fix="check that the text columns are mapped correctly (--columns) or choose "
                "other --text-fields",
            )
        if dropped:
            warnings.warn(
                f"{where}: dropped {dropped} of {n} incident(s) whose text "
                f"({', '.join(text_fields)}) is empty after cleaning",
                EmptyTextWarning,
                stacklevel=2,
            )
            df = df.loc[~empty]
    df = df.reset_index(drop=True)
    df.attrs = {
        "source": where,
        "dropped_empty": dropped,
        "columns_used": {c: s for c, s in matched.items() if s is not None},
    }
    return df


def _candidates(mapping: ColumnMapping, canon: str) -> list[str]:
    src = mapping.columns.get(canon, canon)
    return [] if src is None else [src] if isinstance(src, str) else list(src)


# ----------------------------------------------------------------------------------------
# Links
# ----------------------------------------------------------------------------------------
_ID_SPLIT_RE = re.compile(r"[,;\s]+")


def _split_ids(value: Any) -> list[str]:
    text = clean_text(value)
    return [t for t in _ID_SPLIT_RE.split(text) if t and not is_null_like(t)] if text else []


def load_links(path: str | Path, *, encoding: str = "utf-8") -> pd.DataFrame:
    """Load pairs of linked (similar/duplicate) incidents.

    The first two columns hold incident numbers, whatever their headers; a cell may hold
    several ids separated by commas, semicolons or whitespace (one row per pair results).
    A column named ``split`` (case-insensitive) is kept. Self-links and repeated pairs,
    in either direction, are dropped (the first occurrence is kept). A header row is
    required. Returns columns ``a``, ``b`` (and ``split``) of dtype ``string``.
    """
    where = str(path)
    raw = read_table(path, encoding=encoding)
    if raw.shape[1] < 2:
        raise ItsmError(
            f"a links file needs two columns of incident numbers, found {raw.shape[1]} "
            f"({list(raw.columns)})",
            where=where,
            fix="write one pair per row, e.g. a header 'incident,related' then "
            "'INC001,INC002' (several ids per cell may be separated by ';')",
        )
    col_a, col_b = raw.columns[0], raw.columns[1]
    split_col = next((c for c in raw.columns[2:] if _norm_header(c) == "split"), None)
    splits = (
        normalise_split(raw[split_col], where=where).tolist()
        if split_col is not None
        else [None] * len(raw)
    )
    seen: set[tuple[str, str]] = set()
    rows_a: list[str] = []
    rows_b: list[str] = []
    rows_s: list[Any] = []
    for va, vb, sp in zip(raw[col_a].tolist(), raw[col_b].tolist(), splits):
        for a in _split_ids(va):
            for b in _split_ids(vb):
                key = (a, b) if a <= b else (b, a)
                if a == b or key in seen:
                    continue
                seen.add(key)
                rows_a.append(a)
                rows_b.append(b)
                rows_s.append(sp)
    if not rows_a:
        raise ItsmError(
            "the links file holds no pair of distinct incident numbers",
            where=where,
            fix=f"fill the first two columns ({col_a!r}, {col_b!r}) with incident numbers",
        )
    data: dict[str, Any] = {"a": rows_a, "b": rows_b}
    if split_col is not None:
        data["split"] = rows_s
    links = pd.DataFrame(data).astype("string")
    links.attrs = {"source": where}
    return links


def check_links_known(links: pd.DataFrame, incidents: pd.DataFrame) -> None:
    """Raise when a link refers to an incident number not present in ``incidents``."""
    where = str(links.attrs.get("source", "links"))
    if "number" not in incidents.columns:
        raise ItsmError(
            "the incident table has no 'number' column",
            where=str(incidents.attrs.get("source", "incidents")),
            fix="load the incidents with load_incidents() so they use the canonical schema",
        )
    known = set(incidents["number"].astype(str))
    ids = pd.unique(pd.concat([links["a"], links["b"]], ignore_index=True).astype(str))
    unknown = [i for i in ids if i not in known]
    if unknown:
        source = incidents.attrs.get("source", "the incident table")
        raise ItsmError(
            f"{len(unknown)} incident id(s) in the links are not incident numbers in "
            f"{source}: {_preview(unknown)}",
            where=where,
            fix="make sure the links refer to the incidents' `number` column (same export, "
            "same id format), or remove links to incidents that are not in the file",
        )
