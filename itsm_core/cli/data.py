"""``itsm data …``: the data sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from itsm_core.cli.common import csv_list, friendly, out

data_app = typer.Typer(help="The data sets: build the bundled ones, add your own, list them.",
                       no_args_is_help=True)


@data_app.command("build")
@friendly
def data_build(
    only: Annotated[str | None, typer.Option(help="comma-separated data set names")] = None,
) -> None:
    """Build data_new/processed/* (incidents, splits, links, manifests) from data_new/raw."""
    from itsm_core.data.datasets import build_all

    for name, path in build_all(csv_list(only)).items():
        out.print(f"built [bold]{name}[/] -> {path}")


@data_app.command("add")
@friendly
def data_add(
    name: Annotated[str, typer.Argument(help="data set name (letters, digits, _ and -)")],
    incidents: Annotated[Path, typer.Option(help="the export (CSV, JSON, JSONL, Parquet)")],
    columns: Annotated[str | None, typer.Option(
        help="column mapping: 'servicenow' or a mapping JSON file")] = None,
    labels: Annotated[str | None, typer.Option(
        help="label hierarchy, canonical names or the export's headers (Category,Subcategory)")]
    = None,
    links: Annotated[Path | None, typer.Option(
        help="CSV of duplicate links (two columns of incident numbers)")] = None,
    groups: Annotated[str | None, typer.Option(
        help="column whose shared values mark the same issue (Problem, Parent incident, …)")]
    = None,
    text_fields: Annotated[str | None, typer.Option(
        help="fields embedded as text (default short_description,description)")] = None,
    split_by: Annotated[str, typer.Option(help="hash (default) or time (on opened_at)")] =
    "hash",
    split: Annotated[str | None, typer.Option(
        help="train,validation,test shares (default 0.7,0.1,0.2)")] = None,
    encoding: Annotated[str, typer.Option(help="text encoding of the files")] = "utf-8",
    replace: Annotated[bool, typer.Option(help="rebuild an existing data set NAME")] = False,
) -> None:
    """Register your own export as a data set every stage takes (--dataset NAME)."""
    from itsm_core.cli.common import floats
    from itsm_core.data.register import add_dataset

    shares = floats(split, "--split", "0.7,0.1,0.2")
    fractions = dict(zip(("train", "validation", "test"), shares)) if shares else None
    res = add_dataset(name, incidents, columns=columns, labels=csv_list(labels), links=links,
                      groups=groups, text_fields=csv_list(text_fields), split_by=split_by,
                      encoding=encoding, replace=replace, fractions=fractions)
    c = res.manifest.counts
    out.print(f"added [bold]{name}[/] -> {res.path}: {c['incidents']} incidents, relevance "
              f"{c['relevance']}, split {c['split']}")
    if c["relevance"] == "none":
        out.print("no labels, links or groups: usable for domain adaptation (itsm pretrain) "
                  "and search; evaluation and fine-tuning need ground truth")


@data_app.command("list")
@friendly
def data_list() -> None:
    """Every data set, bundled and added: counts, relevance kind, split sizes."""
    from itsm_core.cli.common import print_frame
    from itsm_core.data.register import list_datasets

    print_frame(list_datasets())
