"""The source of the thin notebooks in notebooks/ (``python tools/notebooks.py``).

Notebooks hold no logic: a parameters cell for papermill, then calls into itsm_core.
Keeping their source here makes their diffs reviewable; nbdime handles the .ipynb diffs.
"""

from __future__ import annotations

import nbformat as nbf

from itsm_core.core.config import NOTEBOOKS_DIR as NB_DIR


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
        c.id = f"cell-{len(out):02d}"  # stable ids: regenerating never changes a diff
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
             "from itsm_core.reports import views as reports\n"
             "from itsm_core.reports import plots\n\n"
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
    ("md", "## The seed's success tiers, honestly computed\n\n"
     "Spearman, ROC-AUC and F1 of the TEST pair set (labels from the data, threshold from "
     "validation) and the adversarial diagnostic of the same model. Spearman correlates a "
     "pair's score with its graded relevance; the grades take only a few values, so the "
     "`spearman ceiling` column is the best any model can reach."),
    ("code", "reports.seed_tiers(leaderboard or reports.LEADERBOARD_CSV)"),
    ("md", "## Benchmark definition of each run"),
    ("code", "reports.benchmark_table(board)"),
], params="# papermill parameters\n"
          "# models: comma-separated model names; empty = every evaluated model\n"
          'models = ""\n'
          'datasets = "it_tickets,gitbugs_hadoop"\n'
          "# leaderboard: CSV path; empty = models/results/leaderboard.csv\n"
          'leaderboard = ""')

TRAIN = notebook([
    ("md", "# Train one model (papermill: one run per model)\n\n"
           "LoRA or full fine-tuning with MatryoshkaLoss over label-aware "
           "MultipleNegativesRankingLoss, curriculum easy → medium → hard under one "
           "optimizer and cosine schedule, model selection on the validation split, then "
           "evaluate_v2 on the held-out test split. Run by `itsm report train --model <key>`."),
    ("params", ""),
    ("md", "## The data set"),
    ("code", "from itsm_core.reports import views\n\nviews.dataset_card(dataset)"),
    ("code", "%matplotlib inline\n"
             "from itsm_core.reports import views as reports\n"
             "from itsm_core.reports import plots\n"
             "from itsm_core.training import finetune as train\n\n"
             "cfg = train.config_for_profile(profile, model=model, dataset=dataset,\n"
             "                               pairs=pairs or None)\n"
             "result = train.run_training(cfg)"),
    ("md", "## Run summary (real hyper-parameters)"),
    ("code", "reports.train_summary(result.meta)"),
    ("md", "## Loss and validation curves"),
    ("code", "plots.training_curves(*train.history_frames(result.meta), title=model);"),
    ("md", "## WiSE-FT: how much of the fine-tune to keep (validation only)\n\n"
     "The saved model is base + α·(fine-tune − base). α is chosen on two VALIDATION "
     "signals: the target data set's validation NDCG@10, and retrieval on the other data "
     "set's train + validation queries, which may not fall more than the tolerance below "
     "the zero-shot base. No test split is looked at."),
    ("code", "wise = reports.wise_ft_table(result.meta)\nprint(wise.attrs.get('reason', ''))\n"
             "wise"),
    ("code", "plots.wise_ft_tradeoff(result.meta.get('wise_ft'), title=model);"),
    ("md", "## Held-out test: the fine-tune beside its baselines (value [95 % CI])"),
    ("code", "reports.versus_baselines(result.test_record)"),
    ("md", "### Paired difference to each baseline on the same test queries (95 % CI)"),
    ("code", "reports.paired_vs_baselines(result.test_record)"),
    ("md", "## What it forgets: the data set it was not trained on (test, paired, 95 % CI)\n\n"
     "The fine-tune against its zero-shot base model and TF-IDF on the other bundled data "
     "set's test queries. Reported only — no choice of this run looked at it."),
    ("code", "reports.forgetting(result)"),
    ("md", "## Quality by Matryoshka dimension (test)"),
    ("code", "plots.by_dimension({model: result.test_record['dims']}, title=dataset);"),
    ("md", "## Training throughput (measured side by side by `itsm bench train`)"),
    ("code", "reports.throughput_table(model)"),
    ("md", "## Ablation: which parts of the recipe help (`itsm ablation`)\n\n"
             "Decisions use the validation column; test is reported with its CI and the "
             "paired difference to the full recipe."),
    ("code", "reports.ablation_table(dataset)"),
], params="# papermill parameters\n"
          'model = "minilm"\n'
          'dataset = "it_tickets"\n'
          "# profile: default (CPU, minutes), full (longer), smoke (a few steps)\n"
          'profile = "default"\n'
          "# pairs: pair file from `itsm pairs`; empty = generate with defaults\n"
          'pairs = ""')

AUGMENT = notebook([
    ("md", "# Augmentation of training pairs\n\n"
           "Random deletion, adjacent swap and word duplication (the seed's methods and "
           "rates) on the TRAINING pairs only, with protected terms (error codes, "
           "negations, product names, versions). Its effect on the benchmark is measured "
           "in the ablation (`itsm ablation`), not assumed."),
    ("params", ""),
    ("md", "## The data set"),
    ("code", "from itsm_core.reports import views\n\nviews.dataset_card(dataset)"),
    ("code", "%matplotlib inline\n"
             "from itsm_core.pairs import augment\n"
             "from itsm_core.reports import plots\n"
             "from itsm_core.training import finetune as train\n\n"
             "pairs, quality = train.make_pairs(dataset)\n"
             "cfg = augment.AugmentConfig(expansion_factor=expansion_factor,\n"
             "                            methods=methods, seed=seed)\n"
             "augmented = augment.augment_pairs(pairs, cfg)"),
    ("md", "## Class balance before and after\n\n"
           "Share of training pairs per fine label (augmentation copies pairs at random, "
           "so the balance should barely move)."),
    ("code", "plots.class_balance(augment.balance_report(pairs, augmented));"),
    ("md", "## Examples (original → augmented)"),
    ("code", "augment.examples(augmented, n=12)"),
], params="# papermill parameters\n"
          'dataset = "it_tickets"\n'
          "expansion_factor = 1.0\n"
          'methods = "deletion,swap,duplication"\n'
          "seed = 42")

DIAGNOSE = notebook([
    ("md", "# Adversarial diagnostic — does the model understand, or match words?\n\n"
           "Pairs drawn from **held-out** incidents only, so that word overlap points the "
           "wrong way: *hard positives* are relevant pairs (same fine label, or linked "
           "duplicates) that share few words (TF-IDF cosine at most the 25th percentile of "
           "relevant pairs); *hard negatives* are pairs of different categories that share "
           "many words (at least the 75th percentile of non-relevant pairs). The bands are "
           "disjoint, so TF-IDF fails by construction. Each model's threshold comes from the "
           "**validation** adversarial set, never from the diagnostic set. Verdict (the "
           "seed's criteria): **pass** iff ROC-AUC ≥ 0.70 and F1 ≥ 0.70. When too few pairs "
           "qualify, this notebook fails with the counts instead of passing. Built by "
           "`itsm report diagnose`; all logic lives in `itsm_core.evaluation.diagnostic`."),
    ("params", ""),
    ("md", "## The data set"),
    ("code", "from itsm_core.reports import views\n\n"
             "views.dataset_card(dataset, incidents or None)"),
    ("code", "%matplotlib inline\n"
             "from itsm_core.evaluation import diagnostic as diagnose\n"
             "from itsm_core.reports import plots\n\n"
             "summary = diagnose.run_from_params(\n"
             "    models, dataset=dataset, extra_models=extra_models, incidents=incidents,\n"
             "    n_pairs=n_pairs, min_pairs=min_pairs, seed=seed, lexical=lexical,\n"
             "    leaderboard=leaderboard, out_dir=out_dir,\n)"),
    ("md", "## The adversarial sets (bands and counts actually used)"),
    ("code", "diagnose.set_table(summary)"),
    ("md", "## Verdict per model (threshold from the validation split; value [95 % CI])"),
    ("code", "diagnose.verdict_table(summary)"),
    ("md", "## Shortcut and boilerplate sensitivity\n\n"
           "*Shortcut*: category-ish words (e.g. \"hardware issue\", \"access request\") "
           "appended to, or removed from, one side of a pair: mean |Δscore|, Δ relative to "
           "the model's score spread, and the share of decisions that flip at the validation "
           "threshold. *Boilerplate*: a signature, disclaimer and quoted email (with an "
           "unrelated ticket) appended to a query: Jaccard overlap of its top-k neighbours "
           "before / after (1.0 = unchanged), share keeping its first neighbour, and |Δ| of "
           "its score with that neighbour."),
    ("code", "diagnose.sensitivity_table(summary)"),
    ("md", "## Score distributions: hard positives vs hard negatives"),
    ("code", "plots.adversarial_distributions(diagnose.scored_pairs(summary),\n"
             "                                diagnose.thresholds(summary));"),
    ("md", "## Worst examples per model\n\n"
           "The highest-scored hard negatives and the lowest-scored hard positives: the "
           "pairs each model gets most wrong."),
    ("code", "worst = diagnose.worst_examples_by_model(summary, n=5)\n"
             "for name, table in worst.items():\n"
             "    print(name)\n"
             "    display(table)"),
], params="# papermill parameters\n"
          "# models: comma-separated model specs (baselines, zero-shot models)\n"
          'models = "tfidf,bm25,minilm,mpnet"\n'
          'dataset = "it_tickets"\n'
          "# extra_models: e.g. trained model folders (comma-separated)\n"
          'extra_models = ""\n'
          "# incidents: an incidents file instead of the bundled data set (empty = dataset)\n"
          'incidents = ""\n'
          "n_pairs = 300\n"
          "min_pairs = 30\n"
          "seed = 42\n"
          'lexical = "tfidf"\n'
          "# leaderboard / out_dir: empty = models/results/leaderboard.csv and runs/\n"
          'leaderboard = ""\n'
          'out_dir = ""')

PRETRAIN = notebook([
    ("md", "# Domain adaptation before fine-tuning (SimCSE / TSDAE)\n\n"
           "Unsupervised SimCSE (each text is its own positive through dropout, "
           "MultipleNegativesRankingLoss over in-batch negatives) or TSDAE "
           "(DenoisingAutoEncoderLoss) on **training-split texts only** — unlabelled "
           "tickets / bug reports included; validation and test incidents, and training "
           "texts that duplicate them, are excluded. The checkpoint is chosen on "
           "validation NDCG@10. Then the supervised fine-tune (the training recipe, "
           "unchanged) starts from the adapted model. The stage table compares "
           "base → +adaptation → +fine-tune with the fine-tune alone (same training "
           "config) on the held-out test split, with paired bootstrap CIs. Run by "
           "`itsm report pretrain`; all logic lives in `itsm_core.training.pretrain`."),
    ("params", ""),
    ("md", "## The data set"),
    ("code", "from itsm_core.reports import views\n\nviews.dataset_card(dataset)"),
    ("code", "%matplotlib inline\n"
             "from itsm_core.reports import plots\n"
             "from itsm_core.training import pretrain\n\n"
             "result = pretrain.run_from_params(\n"
             "    model=model, dataset=dataset, method=method, profile=profile,\n"
             "    train_profile=train_profile, max_texts=max_texts, finetune=finetune)\n"
             "meta = result.pretrain.meta"),
    ("md", "## Pre-training run (real settings, measured time)"),
    ("code", "pretrain.pretrain_summary(meta)"),
    ("md", "## Which texts were used (training split only)"),
    ("code", "meta['texts']"),
    ("md", "## Loss and validation curves of the adaptation"),
    ("code", "plots.training_curves(*pretrain.history_frames(meta), title=meta['name']);"),
    ("md", "## Stages on the held-out test split (value [95 % CI]; Δ = paired difference)"),
    ("code", "pretrain.format_stage_table(result.table)"),
    ("code", "plots.stage_plot(result.table, 'ndcg@10');"),
    ("code", "plots.stage_plot(result.table, 'mrr@10');"),
    ("md", "## Did each stage help? (a CI that contains 0 = no significant difference)"),
    ("code", "pretrain.verdicts(result.table, 'ndcg@10')"),
    ("code", "pretrain.verdicts(result.table, 'mrr@10')"),
], params="# papermill parameters\n"
          'model = "minilm"\n'
          'dataset = "it_tickets"\n'
          "# method: simcse or tsdae\n"
          'method = "simcse"\n'
          "# profile: default (CPU, ~4k texts), full (all training texts), smoke\n"
          'profile = "default"\n'
          "# train_profile: profile of the supervised fine-tune that follows\n"
          'train_profile = "default"\n'
          "# max_texts: -1 = the profile's, 0 = all training-split texts\n"
          "max_texts = -1\n"
          "finetune = True")

DISTILL = notebook([
    ("md", "# Ensemble → one small student (knowledge distillation)\n\n"
           "The teacher (e.g. an ensemble of fine-tuned models, `itsm ensemble`) embeds "
           "**training-split texts only**; the student learns them with "
           "sentence-transformers' MSELoss through a projection into the teacher's space "
           "(or MarginMSELoss on teacher-mined triplets). Checkpoint chosen on "
           "validation NDCG@10. Student, teacher, the student trained alone (the plain "
           "fine-tune) and the zero-shot student are compared on the held-out test split: "
           "quality with CIs and paired differences, size, encode speed. Run by "
           "`itsm report distill`; all logic lives in `itsm_core.training.distill`."),
    ("params", ""),
    ("md", "## The data set"),
    ("code", "from itsm_core.reports import views\n\nviews.dataset_card(dataset)"),
    ("code", "%matplotlib inline\n"
             "from itsm_core.reports import plots\n"
             "from itsm_core.training import distill, pretrain\n\n"
             "result, table = distill.run_from_params(\n"
             "    teacher=teacher, student=student, dataset=dataset, loss=loss,\n"
             "    profile=profile, max_texts=max_texts)\n"
             "meta = result.meta"),
    ("md", "## Distillation run (real settings, measured time)"),
    ("code", "distill.distill_summary(meta)"),
    ("md", "## Loss and validation curves"),
    ("code", "plots.training_curves(*pretrain.history_frames(meta), title=meta['name']);"),
    ("md", "## Student vs teacher vs student alone (test; value [95 % CI]; "
           "Δ = paired difference student − row)\n\n"
           "Size and encode speed are measured in this run, one model after the other, on "
           "the same validation texts."),
    ("code", "distill.format_comparison(table)"),
    ("code", "plots.comparison_plot(table, 'ndcg@10');"),
], params="# papermill parameters\n"
          "# teacher: a model spec, e.g. an ensemble folder from `itsm ensemble`\n"
          'teacher = ""\n'
          'student = "minilm"\n'
          'dataset = "it_tickets"\n'
          "# loss: mse (projection) or margin-mse\n"
          'loss = "mse"\n'
          "# profile: default (CPU, ~3k texts), full, smoke\n"
          'profile = "default"\n'
          "# max_texts: -1 = the profile's, 0 = all training-split texts\n"
          "max_texts = -1")

EXPORT_SEARCH = notebook([
    ("md", "# Deployment: INT8 ONNX export, Matryoshka truncation, similar-incident search\n\n"
           "The fine-tuned model exported to ONNX (fp32 and dynamic per-channel INT8) and "
           "measured side by side with torch in one run: throughput on the same texts "
           "and threads, file size, cosine agreement, NDCG@10 per backend (validation for "
           "decisions, test reported, paired CIs). Then the search index: size and top-10 "
           "latency per Matryoshka dim, hybrid BM25 + dense (fusion chosen on the "
           "validation split) against each alone on the test split, and example queries. "
           "Built by `itsm report export`; all logic lives in `itsm_core`."),
    ("params", ""),
    ("md", "## The data set"),
    ("code", "from itsm_core.reports import views\n\nviews.dataset_card(dataset)"),
    ("code", "from itsm_core.reports import deploy\n\n"
             "exported = deploy.export_tables(export_dir or None)"),
    ("md", "## Export: encode throughput, size and agreement with torch (same texts, "
           "same threads)"),
    ("code", "exported['speed']"),
    ("md", "## Export: NDCG@10 per backend (paired difference to torch, 95 % CI)"),
    ("code", "exported['quality']"),
    ("md", "### What was exported, and whether the targets are met\n\n"
           "Targets: INT8 at least 3x torch fp32 sentences/s, NDCG@10 loss at most 0.005 "
           "on test."),
    ("code", "exported['info']"),
    ("md", "## The search index"),
    ("code", "deploy.index_summary(index_dir or None)"),
    ("md", "## Hybrid vs BM25 vs dense (test split, value [95 % CI])\n\n"
           "The fusion method and weight were chosen on the validation split only."),
    ("code", "hybrid = deploy.hybrid_comparison(export_dir or None, dataset=dataset,\n"
             "                                  bootstrap=bootstrap)\n"
             "hybrid['table']"),
    ("code", "hybrid['paired']"),
    ("code", "hybrid['fusion']"),
    ("md", "### The fusion candidates of the index (validation NDCG@10)"),
    ("code", "deploy.fusion_grid(index_dir or None)"),
    ("md", "## Size and top-10 latency per Matryoshka dim (one query at a time)\n\n"
           "`synthetic` rows: 50,000 random unit vectors; the index rows: the real "
           "incidents (query encoding excluded; quality per dim from evaluate_v2 on test)."),
    ("code", "latency = deploy.latency_table(index_dir or None)\n"
             "latency"),
    ("code", "latency.attrs['encode_query']"),
    ("md", "## Example queries and their nearest incidents"),
    ("code", "for query, hits in deploy.example_queries(queries, index_dir or None, k=k).items():\n"
             "    print(query)\n"
             "    display(hits)"),
], params="# papermill parameters\n"
          "# export_dir / index_dir: empty = the newest under models/ and models/indexes/\n"
          'export_dir = ""\n'
          'index_dir = ""\n'
          'dataset = "it_tickets"\n'
          "bootstrap = 1000\n"
          "# queries: separated by |\n"
          'queries = "vpn drops every hour|cannot print to the network printer|'
          'password expired and account locked|new laptop for a new starter"\n'
          "k = 5")

NOTEBOOKS = {"02_augment.ipynb": AUGMENT, "03_train.ipynb": TRAIN,
             "04_evaluate_v2.ipynb": EVALUATE, "05_adversarial_diagnostic.ipynb": DIAGNOSE,
             "06_pretrain.ipynb": PRETRAIN, "07_distill.ipynb": DISTILL,
             "08_export_search.ipynb": EXPORT_SEARCH}

if __name__ == "__main__":
    NB_DIR.mkdir(exist_ok=True)
    for name, nb in NOTEBOOKS.items():
        nbf.write(nb, NB_DIR / name)
        print("wrote", NB_DIR / name)
