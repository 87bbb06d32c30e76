"""Build the bundled data sets from ``data_new/raw`` (one command: ``itsm data build``).

Each build writes, atomically, into ``data_new/processed/``:

- ``<name>.parquet`` — incidents in the canonical schema (see :mod:`itsm_core.data.incidents`)
  with a deterministic ``split`` column;
- ``<name>.meta.json`` — the sidecar manifest: default text fields and labels for
  evaluation, links file, counts per split, hashes of the raw inputs, provenance;
- ``<name>_links.csv`` (link data sets only) — ``a, b, split`` duplicate links.

``itsm evaluate`` reads the sidecar for its defaults, so the bundled files evaluate with
no extra flags while any user file works with explicit flags.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from itsm_core.core.config import PROCESSED_DIR, RAW_DIR, SEED, SPLIT_FRACTIONS
from itsm_core.core.errors import ItsmError
from itsm_core.core.io import atomic_write_df, atomic_write_json, sha256_file
from itsm_core.data.incidents import load_links
from itsm_core.data.splits import assign_splits, incident_splits_from_links, split_links


@dataclass
class DatasetManifest:
    """Sidecar metadata of a processed incidents file (``<name>.meta.json``)."""

    name: str
    text_fields: list[str]
    max_chars_per_field: int | None = None
    labels: list[str] = field(default_factory=list)
    links: str | None = None
    eval_corpus: str = "split"  # "split": corpus = the query split; "all": every incident
    counts: dict[str, Any] = field(default_factory=dict)
    raw_sha256: dict[str, str] = field(default_factory=dict)
    seed: int = SEED
    provenance: str = ""

    def save(self, path: Path) -> Path:
        return atomic_write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> DatasetManifest:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ItsmError(
                f"malformed data set manifest ({exc})",
                where=str(path),
                fix="rebuild it with `itsm data build` or delete the sidecar file",
            ) from exc


def sidecar_path(incidents_path: str | Path) -> Path:
    """Where the manifest of an incidents file lives: ``x.parquet`` → ``x.meta.json``."""
    p = Path(incidents_path)
    return p.with_name(p.name.split(".")[0] + ".meta.json")


def read_sidecar(incidents_path: str | Path) -> DatasetManifest | None:
    """The manifest next to an incidents file, or None when there is none."""
    p = sidecar_path(incidents_path)
    return DatasetManifest.load(p) if p.exists() else None


def _need(path: Path) -> Path:
    if not path.exists():
        raise ItsmError(
            "raw input file is missing",
            where=str(path),
            fix="restore data_new/raw from git (`git checkout -- data_new/raw`)",
        )
    return path


def build_it_tickets(raw_dir: Path = RAW_DIR, out_dir: Path = PROCESSED_DIR,
                     seed: int = SEED) -> Path:
    """47k IT helpdesk tickets, joined with the 4.6k labelled subset for fine labels.

    A v3 ticket's ``Document`` equals ``(title + " " + body).strip()`` of a labelled row
    for ~98 % of labelled rows; matching is on whitespace-normalised text. The ticket
    text is ``Document`` for every ticket (so labelled and unlabelled tickets look
    alike); the labelled ``title`` is kept as an extra column. Labels are integer codes
    kept as strings. Splits are by hash of the text (identical texts share a split).
    """
    src = raw_dir / "it_tickets"
    v3_path = _need(src / "all_tickets_processed_improved_v3.csv")
    lab_path = _need(src / "all_tickets_labelled_subset.csv")
    v3 = pd.read_csv(v3_path, dtype=str, keep_default_na=False)
    lab = pd.read_csv(lab_path, dtype=str, keep_default_na=False)

    def norm(s: pd.Series) -> pd.Series:
        return s.str.replace(r"\s+", " ", regex=True).str.strip()

    lab["_key"] = norm(lab["title"] + " " + lab["body"])
    lab = lab.drop_duplicates("_key", keep=False)  # ambiguous duplicates carry no label
    v3["_key"] = norm(v3["Document"])
    merged = v3.merge(lab, on="_key", how="left", validate="many_to_one")
    n_joined = int(merged["category"].notna().sum())

    df = pd.DataFrame({
        "number": [f"IT{i:05d}" for i in range(len(merged))],
        "short_description": pd.NA,
        "description": merged["Document"],
        "category": merged["category"],
        "subcategory": merged["sub_category1"],
        "service": merged["business_service"],
        "assignment_group": pd.NA,
        "resolution_notes": pd.NA,
        "opened_at": pd.NA,
        "topic_group": merged["Topic_group"],
        "sub_category2": merged["sub_category2"],
        "ticket_type": merged["ticket_type"],
        "urgency": merged["urgency"],
        "impact": merged["impact"],
        "title": merged["title"],
    })
    df["split"] = assign_splits(merged["_key"], SPLIT_FRACTIONS, seed)
    labelled = df["category"].notna()
    counts = {
        "incidents": len(df),
        "labelled": int(labelled.sum()),
        "labelled_rows_in_raw": len(pd.read_csv(lab_path, usecols=[0])),
        "labelled_rows_joined": n_joined,
        "fine_classes": len(df.loc[labelled, ["category", "subcategory"]].drop_duplicates()),
        "split": df["split"].value_counts().to_dict(),
        "split_labelled": df.loc[labelled, "split"].value_counts().to_dict(),
    }
    out = atomic_write_df(out_dir / "it_tickets.parquet", df)
    DatasetManifest(
        name="it_tickets",
        text_fields=["short_description", "description"],
        labels=["category", "subcategory"],
        eval_corpus="split",
        counts=counts,
        raw_sha256={p.name: sha256_file(p) for p in (v3_path, lab_path)},
        seed=seed,
        provenance="Endava IT service tickets via Kaggle 'IT Service Ticket Classification' "
        "(Adison Goh; anonymised data by Karol Żak), CC0. See data_new/raw/README.md.",
    ).save(sidecar_path(out))
    return out


def build_gitbugs_hadoop(raw_dir: Path = RAW_DIR, out_dir: Path = PROCESSED_DIR,
                         seed: int = SEED, validation_share: float = 0.2) -> Path:
    """2.5k Hadoop bug reports with 66 unique duplicate links (GitBugs, CC BY 4.0).

    Links keep the authors' train/test split; ``validation_share`` of the train links
    become validation links (by hash of the pair). Incidents that end a test link are
    test incidents (then validation, then train); all others are train incidents and
    stay in the retrieval corpus as distractors.
    """
    src = raw_dir / "gitbugs_hadoop"
    bugs_path = _need(src / "hadoop_bugs.csv")
    comb_path = _need(src / "hadoop_bugs-combined.csv")
    train_path = _need(src / "hadoop_bugs-train.csv")
    test_path = _need(src / "hadoop_bugs-test.csv")
    bugs = pd.read_csv(bugs_path, dtype=str, keep_default_na=False)
    df = pd.DataFrame({
        "number": bugs["Issue id"].str.strip(),
        "short_description": bugs["Summary"],
        "description": bugs["Description"],
        "category": pd.NA,
        "subcategory": pd.NA,
        "service": pd.NA,
        "assignment_group": pd.NA,
        "resolution_notes": pd.NA,
        "opened_at": bugs["Created"],
        "status": bugs["Status"],
        "priority": bugs["Priority"],
        "resolution": bugs["Resolution"],
        "affects_versions": bugs["Affects Version/s"],
    })

    def pairs(path: Path) -> set[frozenset[str]]:
        return {frozenset((a, b)) for a, b in zip(*load_links(path)[["a", "b"]].T.values)}

    links = load_links(comb_path)
    test_pairs, train_pairs = pairs(test_path), pairs(train_path)
    key = [frozenset((a, b)) for a, b in zip(links["a"], links["b"])]
    authors = ["test" if k in test_pairs else "train" if k in train_pairs else "" for k in key]
    links["split"] = authors
    # carve validation links from the authors' train links, by hash of the pair
    val = split_links(links[["a", "b"]],
                      {"train": 1 - validation_share, "validation": validation_share}, seed)
    unassigned = links["split"] == ""
    links.loc[unassigned, "split"] = split_links(links.loc[unassigned, ["a", "b"]],
                                                 SPLIT_FRACTIONS, seed)
    links.loc[links["split"] == "train", "split"] = val[links["split"] == "train"]
    df["split"] = incident_splits_from_links(df["number"], links).values
    known = set(df["number"])
    missing = sorted({*links["a"], *links["b"]} - known)
    if missing:
        raise ItsmError(f"{len(missing)} linked issue ids are not in hadoop_bugs.csv: "
                        f"{missing[:5]}", where=str(comb_path))
    links_out = atomic_write_df(out_dir / "gitbugs_hadoop_links.csv", links)
    counts = {
        "incidents": len(df),
        "links": len(links),
        "authors_train_links": len(train_pairs),
        "authors_test_links": len(test_pairs),
        # the authors' files list some links in both (once per direction): kept in test
        "authors_train_test_overlap": len(train_pairs & test_pairs),
        "links_split": links["split"].value_counts().to_dict(),
        "split": df["split"].value_counts().to_dict(),
    }
    out = atomic_write_df(out_dir / "gitbugs_hadoop.parquet", df)
    DatasetManifest(
        name="gitbugs_hadoop",
        text_fields=["short_description", "description"],
        max_chars_per_field=1500,
        labels=[],
        links=links_out.name,
        eval_corpus="all",
        counts=counts,
        raw_sha256={p.name: sha256_file(p) for p in (bugs_path, comb_path, train_path, test_path)},
        seed=seed,
        provenance="GitBugs (Avinash Patil, 2025, arXiv:2504.09651), CC BY 4.0. "
        "See data_new/raw/README.md.",
    ).save(sidecar_path(out))
    return out


BUILDERS = {"it_tickets": build_it_tickets, "gitbugs_hadoop": build_gitbugs_hadoop}


def build_all(names: list[str] | None = None, raw_dir: Path = RAW_DIR,
              out_dir: Path = PROCESSED_DIR, seed: int = SEED) -> dict[str, Path]:
    """Build the named bundled data sets from ``data_new/raw``.

    Args:
        names: data set names (default: every bundled one).
        raw_dir: where the raw files are; out_dir: where the processed files go.
        seed: the split salt.

    Returns:
        ``{name: processed incidents file}`` (each with its ``.meta.json`` manifest).
    """
    names = names or list(BUILDERS)
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        raise ItsmError(f"unknown data set(s) {unknown}", fix=f"choose from {list(BUILDERS)}")
    return {n: BUILDERS[n](raw_dir=raw_dir, out_dir=out_dir, seed=seed) for n in names}


def registered_names(out_dir: Path = PROCESSED_DIR) -> list[str]:
    """Data sets added with ``itsm data add`` (a processed file with its manifest)."""
    return sorted(p.name[: -len(".meta.json")] for p in Path(out_dir).glob("*.meta.json")
                  if p.name[: -len(".meta.json")] not in BUILDERS
                  and (p.parent / (p.name[: -len(".meta.json")] + ".parquet")).exists())


def processed_path(name: str, out_dir: Path = PROCESSED_DIR) -> Path:
    """Path of a processed data set — bundled or added with ``itsm data add`` — with a
    clear error when it is unknown or not built yet."""
    p = out_dir / f"{name}.parquet"
    if name not in BUILDERS and not (p.exists() and sidecar_path(p).exists()):
        known = [*BUILDERS, *registered_names(out_dir)]
        raise ItsmError(f"unknown data set {name!r}", where="--dataset",
                        fix=f"choose from {known}, or register yours: itsm data add {name} "
                        "--incidents FILE")
    if not p.exists():
        raise ItsmError("data set not built yet", where=str(p), fix="run `itsm data build`")
    return p
