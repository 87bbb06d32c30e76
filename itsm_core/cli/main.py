"""The ``itsm`` command line: the one entry point shared by users, notebooks and make.

Every command lives in the module of its group (``data``, ``evaluation``, ``training``,
``experiments``, ``serving``, ``reports``); each parses its options, calls ONE library
function and renders the result. :class:`~itsm_core.core.errors.ItsmError` becomes a
one-paragraph message on stderr and exit code 2 (no traceback); other exceptions are real
bugs and propagate.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Annotated

import typer

from itsm_core.cli import evaluation, experiments, serving, training
from itsm_core.cli.common import friendly
from itsm_core.cli.data import data_app
from itsm_core.cli.reports import pipeline_cmd, readme_cmd, report_app
from itsm_core.core import compat

_STARTED = time.perf_counter()  # a timed step includes the CLI's own imports

# no model hub at run time unless the user explicitly allows it
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(help="Fine-tune and honestly evaluate embedding models for ITSM incidents.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.callback()
@friendly
def main(ctx: typer.Context,
         verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from itsm_core.experiments.timing import STAGE_ENV

    if os.environ.get(STAGE_ENV):  # inside `make pipeline`: this command is one step
        ctx.call_on_close(_record_step)
    compat.check()  # a known-broken library combination stops here, in one line


def _record_step() -> None:
    from itsm_core.experiments.timing import record_step

    record_step(" ".join(["itsm", *sys.argv[1:]]), time.perf_counter() - _STARTED)


COMMANDS = {
    "models": evaluation.models_cmd, "cache": evaluation.cache_cmd,
    "evaluate": evaluation.evaluate_cmd,
    "benchmark": evaluation.benchmark_cmd, "leaderboard": evaluation.leaderboard_cmd,
    "diagnose": evaluation.diagnose_cmd,
    "pairs": training.pairs_cmd, "augment": training.augment_cmd, "train": training.train_cmd,
    "pretrain": training.pretrain_cmd, "stages": training.stages_cmd,
    "ensemble": training.ensemble_cmd, "distill": training.distill_cmd,
    "rerank": training.rerank_cmd,
    "ablation": experiments.ablation_cmd, "sweep": experiments.sweep_cmd,
    "bench": experiments.bench_cmd,
    "export": serving.export_cmd, "search": serving.search_cmd, "serve": serving.serve_cmd,
    "readme": readme_cmd, "pipeline": pipeline_cmd,
}
"""Top-level commands; groups (data, index, report, timing) are sub-applications."""

for _name, _command in COMMANDS.items():
    app.command(_name)(_command)
app.add_typer(data_app, name="data")
app.add_typer(serving.index_app, name="index")
app.add_typer(report_app, name="report")
app.add_typer(experiments.timing_app, name="timing")

if __name__ == "__main__":  # pragma: no cover
    app()
