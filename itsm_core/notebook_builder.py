"""The source of the thin notebooks in notebooks/ (``python -m itsm_core.notebook_builder``).

Notebooks hold no logic: a parameters cell for papermill, then calls into itsm_core.
Keeping their source here makes their diffs reviewable; nbdime handles the .ipynb diffs.
"""

from __future__ import annotations

import nbformat as nbf

from itsm_core.config import NOTEBOOKS_DIR as NB_DIR


def notebook(cells: list[tuple[str, str]], params: str) -> nbf.NotebookNode:
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    out = []
    for kind, src in cells:
        if kind == "params":
            c = nbf.v4.new_code_cell(params)
            c.metadata["tags"] = ["parameters"]
        elif kind == "md":
            c = nbf.v4.new_markdown_cell(src)
        else:
            c = nbf.v4.new_code_cell(src)
        out.append(c)
    nb.cells = out
    return nb


EVALUATE = notebook([
    ("md", "# evaluate_v2 — honest benchmark of embedding models for ITSM incidents\n\n"
           "Retrieval (NDCG@10, MRR@10, MAP@100, Recall@k) on held-out query incidents and "
           "pair classification (ROC-AUC, PR-AUC, F1 at a threshold chosen on the "
           "validation split) on a balanced pair set with lexical difficulty bands. Every "
           "number has a 95 % bootstrap CI; TF-IDF and BM25 baselines sit beside the "
           "models. Built by `itsm report evaluate`; all logic lives in `itsm_core`."),
    ("params", ""),
    ("code", "%matplotlib inline\n"
             "from itsm_core import plots, reports\n\n"
             "board = reports.latest_runs(\n"
             "    datasets=[d for d in datasets.split(',') if d] or None,\n"
             "    models=[m for m in models.split(',') if m] or None,\n"
             "    leaderboard=leaderboard or None,\n)\n"
             "shown = board['dataset'].unique().tolist()"),
    ("md", "## Leaderboard (latest run per model; value [95 % CI])"),
    ("code", "reports.leaderboard_table(board)"),
    ("md", "### Difference to the best lexical baseline (NDCG@10)"),
    ("code", "reports.baseline_comparison(board)"),
    ("code", "plots.metric_with_ci(board, 'ndcg@10');"),
    ("code", "plots.metric_with_ci(board, 'roc_auc');"),
    ("md", "## Pair classification: ROC / PR curves and score distributions"),
    ("code", "for ds in shown:\n"
             "    pairs = reports.run_pairs(board, ds)\n"
             "    plots.roc_pr_curves(pairs, title=ds)\n"
             "    plots.score_distributions(pairs, title=ds)"),
    ("md", "## Quality by Matryoshka dimension"),
    ("code", "for ds in shown:\n"
             "    plots.by_dimension(reports.run_json(board, ds, 'dims'), title=ds)"),
    ("md", "## NDCG@10 by query category"),
    ("code", "for ds in shown:\n"
             "    cats = reports.run_json(board, ds, 'per_category')\n"
             "    if cats:\n"
             "        plots.by_category(cats, title=ds)"),
    ("md", "## Benchmark definition of each run"),
    ("code", "reports.benchmark_table(board)"),
], params="# papermill parameters\n"
          "# models: comma-separated model names; empty = every evaluated model\n"
          'models = ""\n'
          'datasets = "it_tickets,gitbugs_hadoop"\n'
          "# leaderboard: CSV path; empty = models/results/leaderboard.csv\n"
          'leaderboard = ""')

NOTEBOOKS = {"04_evaluate_v2.ipynb": EVALUATE}

if __name__ == "__main__":
    NB_DIR.mkdir(exist_ok=True)
    for name, nb in NOTEBOOKS.items():
        nbf.write(nb, NB_DIR / name)
        print("wrote", NB_DIR / name)
