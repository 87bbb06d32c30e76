"""A desk's own export as a first-class data set: ``itsm data add NAME --incidents FILE``.

The result is exactly what the bundled builds write, so every stage that takes
``--dataset`` takes NAME too: ``data_new/processed/NAME.parquet`` (canonical schema,
cleaned text, a deterministic leakage-free ``split``), ``NAME.meta.json`` (text fields,
the relevance definition, counts, hashes) and, for link relevance, ``NAME_links.csv``.

Relevance, in any combination the export supports (never derived from a model):

- ``labels``: a label hierarchy (``category,subcategory``: grade 2 when all match, 1 when
  the first does); the export's own headers are accepted ("Category");
- ``links``: a two-column CSV of duplicate incident numbers;
- ``groups``: a column whose shared values mark "the same issue" (ServiceNow's Problem,
  Parent incident, a knowledge article, a close code): it becomes a one-level label.

Splits keep every relevant pair inside one split: linked incidents (connected components)
and incidents of one group share a split; the rest split by hash of their text (identical
texts together), or with ``split_by="time"`` by ``opened_at`` (oldest train, newest
test). The source file is never modified.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from itsm_core.core.config import PROCESSED_DIR, SEED, SPLIT_FRACTIONS, SPLITS
from itsm_core.core.errors import ItsmError
from itsm_core.core.io import atomic_write_df, sha256_file
from itsm_core.data.datasets import BUILDERS, DatasetManifest, sidecar_path
from itsm_core.data.incidents import CANONICAL_COLUMNS, load_incidents, load_links
from itsm_core.data.splits import assign_splits

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MIN_VALIDATION_QUERIES = 30
"""Fewer validation queries than this cannot select a checkpoint or a threshold."""


@dataclass
class AddResult:
    """What ``itsm data add`` wrote."""

    path: Path
    manifest: DatasetManifest


def _check_name(name: str, replace: bool, out_dir: Path) -> None:
    if not NAME_RE.match(name or ""):
        raise ItsmError(f"invalid data set name {name!r}", where="NAME",
                        fix="use letters, digits, '_' and '-' (e.g. my_desk)")
    if name in BUILDERS:
        raise ItsmError(f"{name!r} is a bundled data set", where="NAME",
                        fix="choose another name for your export")
    if (out_dir / f"{name}.parquet").exists() and not replace:
        raise ItsmError(f"data set {name!r} exists already", where=str(out_dir),
                        fix="choose another name, or pass --replace to rebuild it")


def resolve_column(name: str, df: pd.DataFrame, what: str) -> str:
    """A column of the loaded incidents by canonical name or by the export's own header."""
    if name in df.columns:
        return name
    used = {str(h).strip().casefold(): c for c, h in df.attrs.get("columns_used", {}).items()}
    key = str(name).strip().casefold()
    if key in used:
        return used[key]
    by_norm = {str(c).strip().casefold(): c for c in df.columns}
    if key in by_norm:
        return by_norm[key]
    shown = [c for c in df.columns if c != "split"]
    raise ItsmError(f"{what} column {name!r} is not in the export", where=f"--{what}",
                    fix=f"choose from {shown}")


def _components(links: pd.DataFrame) -> dict[str, str]:
    """Incident → the smallest number of its connected component of links."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(links["a"].astype(str), links["b"].astype(str)):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}


def _time_splits(opened: pd.Series, keys: pd.Series, fractions: dict[str, float]
                 ) -> np.ndarray:
    """Split per incident by time: a key group's newest ``opened_at`` decides its place;
    the oldest ``train`` share trains, the newest ``test`` share tests."""
    when = pd.to_datetime(opened, errors="coerce", utc=True)
    if when.isna().all():
        raise ItsmError("--split-by time needs a parsable opened_at column", where="opened_at",
                        fix="map the opened / created column (--columns), or use "
                        "--split-by hash")
    latest = when.groupby(keys).transform("max").fillna(when.min())
    rank = latest.rank(method="first", pct=True).to_numpy()
    edges = np.cumsum([fractions["train"], fractions["validation"]])
    return np.where(rank <= edges[0], "train", np.where(rank <= edges[1], "validation",
                                                        "test")).astype(object)


def _check_labels(df: pd.DataFrame, labels: list[str]) -> dict[str, int]:
    """Enough classes with enough members to make positive pairs and queries."""
    has = df[labels].notna().all(axis=1) & (df[labels].astype("string").apply(
        lambda s: s.str.strip() != "").all(axis=1))
    fine = df.loc[has, labels].astype(str).agg(" / ".join, axis=1)
    train = fine[df.loc[has, "split"] == "train"]
    sizes = train.value_counts()
    usable = sizes[sizes >= 2]
    if len(usable) < 2:
        raise ItsmError(
            f"the labels {labels} give {len(usable)} class(es) with >= 2 training incidents "
            f"({int(has.sum())} labelled incidents of {len(df)})", where="--labels",
            fix="a fine-tune needs at least 2 classes with 2+ training incidents each: use "
            "a coarser label (fewer columns), more data, or --links / --groups")
    return {"labelled": int(has.sum()), "classes": int(fine.nunique()),
            "classes_usable_for_pairs": int(len(usable)),
            "labelled_train_incidents_in_usable_classes": int(usable.sum())}


def add_dataset(name: str, incidents: str | Path, *, columns: str | Path | None = None,
                labels: list[str] | None = None, links: str | Path | None = None,
                groups: str | None = None, text_fields: list[str] | None = None,
                split_by: str = "hash", encoding: str = "utf-8", replace: bool = False,
                fractions: dict[str, float] | None = None, seed: int = SEED,
                out_dir: Path = PROCESSED_DIR) -> AddResult:
    """Register an export as data set ``name`` (see the module docstring).

    Args:
        name: letters, digits, ``_`` and ``-``; a bundled name cannot be taken.
        incidents: the export (CSV / JSON / JSONL / Parquet); never modified.
        columns: ``servicenow`` or a mapping JSON file.
        labels: label hierarchy (canonical names or the export's headers).
        links: duplicate-link CSV (two columns of incident numbers).
        groups: a column whose shared values mark relevant incidents.
        text_fields: fields embedded as text (default short description + description).
        split_by: ``hash`` (default) or ``time`` (``opened_at``: train on the past).
        encoding: text encoding of the files; replace: rebuild an existing NAME.
        fractions: train / validation / test shares (default 0.7 / 0.1 / 0.2).
        seed: split salt; out_dir: where processed data sets live.

    Returns:
        :class:`AddResult` (the incidents file and its manifest).

    Raises:
        ItsmError: bad name, bad input, or too little data for the relevance chosen.
    """
    _check_name(name, replace, out_dir)
    if split_by not in ("hash", "time"):
        raise ItsmError(f"unknown split {split_by!r}", where="--split-by",
                        fix="use hash or time")
    fractions = dict(fractions or SPLIT_FRACTIONS)
    fields = list(text_fields or ("short_description", "description"))
    src = Path(incidents)
    if not src.exists():
        raise ItsmError("incidents file not found", where=str(src), fix="check the path")
    df = load_incidents(src, columns, text_fields=fields, encoding=encoding)
    if df["number"].duplicated().any():
        raise ItsmError(f"{int(df['number'].duplicated().sum())} duplicate incident numbers",
                        where=str(src), fix="export each incident once")
    df = df.drop(columns=["split"], errors="ignore")
    label_cols = [resolve_column(c, df, "labels") for c in labels or []]
    group_col = resolve_column(groups, df, "groups") if groups else None
    counts: dict[str, Any] = {"incidents": len(df),
                              "dropped_empty_text": int(df.attrs.get("dropped_empty", 0))}
    # relevance that must not straddle splits: link components and groups share a key
    key = df["description"].fillna("").astype(str) + " " + df["short_description"].fillna(
        "").astype(str)
    link_table = None
    if links is not None:
        link_table = load_links(links, encoding=encoding)
        known = set(df["number"])
        ok = link_table["a"].isin(known) & link_table["b"].isin(known)
        counts["links_given"] = len(link_table)
        counts["links_dropped_unknown_numbers"] = int((~ok).sum())
        link_table = link_table[ok].reset_index(drop=True)
        if link_table.empty:
            raise ItsmError("no link refers to two incidents of the export", where=str(links),
                            fix="check that the links use the export's incident numbers")
        comp = _components(link_table)
        key = pd.Series([f"link:{comp[n]}" if n in comp else k
                         for n, k in zip(df["number"], key)], index=df.index)
    if group_col is not None:
        g = df[group_col].astype("string").str.strip()
        sizes = g.value_counts()
        if not (sizes >= 2).any():
            raise ItsmError(f"no value of {groups!r} is shared by two incidents",
                            where="--groups", fix="choose a column that groups incidents "
                            "(Problem, Parent incident, knowledge article, close code)")
        grouped = g.notna() & (g != "") & g.map(sizes).ge(2).fillna(False)
        key = key.where(~grouped, "group:" + g.astype(str))
        df[group_col] = g.where(grouped)  # singletons relate to nothing
        counts["groups_with_2_or_more"] = int((sizes >= 2).sum())
        counts["grouped_incidents"] = int(grouped.sum())
    if split_by == "time":
        df["split"] = _time_splits(df["opened_at"], key, fractions)
    else:
        df["split"] = assign_splits(key.astype(str), fractions, seed)
    relevance_labels = label_cols or ([group_col] if group_col else [])
    if label_cols and group_col:
        raise ItsmError("give --labels or --groups, not both (both define label relevance)",
                        where="--groups", fix="use --groups with --links, or --labels alone")
    if relevance_labels:
        counts.update(_check_labels(df, relevance_labels))
        val = df[(df["split"] == "validation") & df[relevance_labels].notna().all(axis=1)]
        n_val = len(val)
    else:
        n_val = 0
    links_name = None
    if link_table is not None:
        split_of = df.set_index("number")["split"]
        link_table["split"] = [split_of[a] for a in link_table["a"]]
        val_links = link_table[link_table["split"] == "validation"]
        n_val = max(n_val, len(pd.unique(val_links[["a", "b"]].to_numpy().ravel())))
        links_name = f"{name}_links.csv"
        counts["links"] = len(link_table)
        counts["links_split"] = link_table["split"].value_counts().to_dict()
    relevance = ("labels" if label_cols else "groups" if group_col else "") + \
        ("+links" if link_table is not None else "")
    relevance = relevance.strip("+") or "none"
    if relevance != "none" and n_val < MIN_VALIDATION_QUERIES:
        raise ItsmError(
            f"only {n_val} validation queries with ground truth (need "
            f"{MIN_VALIDATION_QUERIES} to select a checkpoint and thresholds)",
            where="split", fix="add more labelled / linked incidents, or give validation "
            "a larger share (e.g. --split 0.6,0.2,0.2)")
    counts["split"] = df["split"].value_counts().reindex(SPLITS, fill_value=0).to_dict()
    counts["relevance"] = relevance
    order = [c for c in CANONICAL_COLUMNS if c in df.columns]
    df = df[[*order, *[c for c in df.columns if c not in order]]]
    out = atomic_write_df(out_dir / f"{name}.parquet", df)
    if link_table is not None:
        atomic_write_df(out_dir / links_name, link_table)
    manifest = DatasetManifest(
        name=name, text_fields=fields, labels=relevance_labels, links=links_name,
        eval_corpus="split" if relevance_labels or split_by == "time" else "all",
        counts=counts, raw_sha256={src.name: sha256_file(src), **(
            {Path(links).name: sha256_file(links)} if links else {})},
        seed=seed, provenance=f"added with `itsm data add` from {src.resolve()} "
        f"(columns: {columns or 'canonical'}; split by {split_by})")
    manifest.save(sidecar_path(out))
    return AddResult(out, manifest)


def list_datasets(out_dir: Path = PROCESSED_DIR) -> pd.DataFrame:
    """Every processed data set (bundled and added): counts, relevance, split sizes."""
    rows = []
    for meta_file in sorted(out_dir.glob("*.meta.json")):
        m = DatasetManifest.load(meta_file)
        split = m.counts.get("split", {})
        rel = m.counts.get("relevance") or ("labels" if m.labels else "") + (
            "+links" if m.links else "")
        rows.append({"name": m.name, "kind": "bundled" if m.name in BUILDERS else "added",
                     "incidents": m.counts.get("incidents"),
                     "relevance": rel.strip("+") or "none",
                     "labels": ",".join(m.labels) or "–",
                     **{s: split.get(s, 0) for s in SPLITS}})
    if not rows:
        raise ItsmError("no data sets yet", where=str(out_dir),
                        fix="run `itsm data build` (bundled) or `itsm data add NAME ...`")
    return pd.DataFrame(rows)
