"""``itsm data …``: the data sets."""

from __future__ import annotations

from typing import Annotated

import typer

from itsm_core.cli.common import csv_list, friendly, out

data_app = typer.Typer(help="Build the bundled data sets.", no_args_is_help=True)


@data_app.command("build")
@friendly
def data_build(
    only: Annotated[str | None, typer.Option(help="comma-separated data set names")] = None,
) -> None:
    """Build data_new/processed/* (incidents, splits, links, manifests) from data_new/raw."""
    from itsm_core.data.datasets import build_all

    for name, path in build_all(csv_list(only)).items():
        out.print(f"built [bold]{name}[/] -> {path}")
