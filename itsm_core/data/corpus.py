"""The one corpus loader: incidents, their data set manifest and the text each one embeds.

Every stage that turns an incidents file into texts (evaluation, the diagnostic, training
pairs, pre-training, the search index) goes through here, so the text a model is trained
on is the text it is evaluated and searched on: same fields, same per-field cap, same
:class:`~itsm_core.data.text.TextBuilder`, with the manifest's (``<name>.meta.json``)
choices as defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from itsm_core.data.datasets import DatasetManifest, read_sidecar
from itsm_core.data.incidents import load_incidents
from itsm_core.data.text import TextBuilder

DEFAULT_TEXT_FIELDS: tuple[str, ...] = ("short_description", "description")


@dataclass
class Corpus:
    """Loaded incidents and what they embed.

    Attributes:
        path: the incidents file.
        incidents: canonical incidents (one row per incident).
        texts: the embedded text of each incident, indexed by incident number.
        manifest: the data set manifest next to the file (None for a plain export).
        text_fields: the fields that make up each text; max_chars_per_field: their cap.
    """

    path: Path
    incidents: pd.DataFrame
    texts: pd.Series
    manifest: DatasetManifest | None
    text_fields: list[str]
    max_chars_per_field: int | None

    @property
    def links_path(self) -> Path | None:
        """The manifest's duplicate-link file, if the data set has one."""
        if self.manifest is None or not self.manifest.links:
            return None
        return self.path.parent / self.manifest.links


def text_settings(path: str | Path, text_fields: Sequence[str] | None = None,
                  max_chars_per_field: int | None = None
                  ) -> tuple[list[str], int | None, DatasetManifest | None]:
    """(text fields, per-field cap, manifest): what is given, else the manifest's, else the
    defaults."""
    side = read_sidecar(path)
    if text_fields:
        return list(text_fields), max_chars_per_field, side
    if side is not None:
        return (list(side.text_fields), max_chars_per_field or side.max_chars_per_field, side)
    return list(DEFAULT_TEXT_FIELDS), max_chars_per_field, side


def embedded_texts(incidents: pd.DataFrame, text_fields: Sequence[str],
                   max_chars_per_field: int | None = None) -> pd.Series:
    """The text each incident embeds (the one text builder), indexed by incident number."""
    builder = TextBuilder(fields=tuple(text_fields), max_chars_per_field=max_chars_per_field)
    return pd.Series(builder.build_series(incidents).to_numpy(),
                     index=incidents["number"].to_numpy())


def load_corpus(path: str | Path, columns: str | Path | None = None, *,
                text_fields: Sequence[str] | None = None,
                max_chars_per_field: int | None = None, encoding: str = "utf-8") -> Corpus:
    """Incidents of ``path`` (a processed data set or any export) with their texts.

    Args:
        path: the incidents file (CSV, JSON, JSONL, Parquet).
        columns: column mapping (``servicenow`` or a mapping JSON file).
        text_fields: fields to embed (default: the manifest's, else short description +
            description); max_chars_per_field: per-field cap (default: the manifest's).
        encoding: text encoding of the file.

    Returns:
        The :class:`Corpus`.
    """
    path = Path(path)
    fields, cap, side = text_settings(path, text_fields, max_chars_per_field)
    df = load_incidents(path, columns, text_fields=fields, encoding=encoding)
    return Corpus(path, df, embedded_texts(df, fields, cap), side, fields, cap)
