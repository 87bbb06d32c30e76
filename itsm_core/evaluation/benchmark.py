"""evaluate_v2: the honest benchmark every model and baseline is measured with.

Two views of "is this incident similar to that one?":

1. **Retrieval** — every query incident of the query split (``test``) searches a corpus;
   graded relevance comes from a label hierarchy (``--labels category,subcategory``:
   2 = both match, 1 = only the category matches, 0 = otherwise) or from explicit links
   (duplicates, relevance 1). NDCG@10 uses the grades; MRR@10, MAP@100, Recall@k and
   Hit@k count the top grade as relevant. Without a split column, every labelled
   incident is a query against all others (leave-one-out).
2. **Pair classification** — a balanced pair set drawn from held-out incidents, with
   lexical difficulty bands (see :mod:`itsm_core.pairs.training`): ROC-AUC, PR-AUC, and F1 /
   precision / recall at a threshold chosen on the *validation* pair set, never on the
   test pairs; Spearman of the scores against graded relevance.

Every headline metric carries a 95 % bootstrap CI (queries or pairs resampled); the
metrics are repeated at each Matryoshka dimension and broken down per category.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from itsm_core.core.config import BOOTSTRAP_RESAMPLES, CI_LEVEL, LEADERBOARD_CSV, SEED
from itsm_core.core.errors import ItsmError
from itsm_core.core.io import sha256_file
from itsm_core.data.corpus import embedded_texts
from itsm_core.data.datasets import read_sidecar
from itsm_core.data.incidents import check_links_known, load_incidents, load_links
from itsm_core.data.splits import assign_splits
from itsm_core.data.text import check_label_leakage
from itsm_core.encoders.scorers import Scorer
from itsm_core.metrics import stats as M
from itsm_core.pairs.training import PairSetConfig, label_pair_set, link_pair_set

logger = logging.getLogger(__name__)

RETRIEVAL_METRICS = ("ndcg@10", "mrr@10", "map@100", "recall@1", "recall@5", "recall@10",
                     "hit@1", "hit@5", "hit@10")
PAIR_METRICS = ("roc_auc", "pr_auc", "f1", "precision", "recall", "spearman")
HEADLINE = ("ndcg@10", "mrr@10", "map@100", "recall@1", "recall@5", "recall@10", "hit@10",
            "roc_auc", "pr_auc", "f1", "precision", "recall", "spearman")


@dataclass
class BenchmarkConfig:
    """Everything that defines a benchmark, independent of the model being judged.

    Attributes:
        labels: label hierarchy for graded relevance (coarse first).
        links: CSV of duplicate links (two incident-number columns, optional ``split``).
        text_fields / max_chars_per_field: the text builder (see :class:`TextBuilder`).
        query_split: split whose incidents are the queries (and the test pairs).
        threshold_split: split whose pairs choose the F1 threshold.
        corpus: ``split`` (search among the query split; leave-one-out) or ``all``
            (search every incident). Default: ``split`` for labels, ``all`` for links.
        allow_label_leakage: let a label column be part of the embedded text.
    """

    labels: list[str] = field(default_factory=list)
    links: str | None = None
    text_fields: list[str] = field(default_factory=lambda: ["short_description", "description"])
    max_chars_per_field: int | None = None
    query_split: str = "test"
    threshold_split: str = "validation"
    corpus: str | None = None
    pairs: PairSetConfig = field(default_factory=PairSetConfig)
    allow_label_leakage: bool = False
    n_resamples: int = BOOTSTRAP_RESAMPLES
    ci_level: float = CI_LEVEL
    seed: int = SEED


@dataclass
class Benchmark:
    """A built, model-independent benchmark: reuse it to evaluate many models."""

    dataset: str
    config: BenchmarkConfig
    incidents_path: str
    incidents_sha256: str
    mode: str  # "labels" or "links"
    split_scheme: str  # "split" or "leave-one-out"
    texts: pd.Series  # number -> text
    query_ids: list[str]
    corpus_ids: list[str]
    grades: np.ndarray  # (n_queries, n_corpus) int8
    query_groups: pd.Series | None  # first label per query, for the breakdown
    test_pairs: pd.DataFrame
    threshold_pairs: pd.DataFrame
    threshold_source: str
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """Plain-dict summary stored with every result."""
        return {
            "dataset": self.dataset, "incidents": self.incidents_path,
            "incidents_sha256": self.incidents_sha256, "mode": self.mode,
            "relevance": (f"labels:{','.join(self.config.labels)}" if self.mode == "labels"
                          else f"links:{self.config.links}"),
            "split": self.config.query_split if self.split_scheme == "split" else "all",
            "split_scheme": self.split_scheme, "corpus": self.config.corpus,
            "n_queries": len(self.query_ids), "n_corpus": len(self.corpus_ids),
            "n_test_pairs": int(self.test_pairs["label"].notna().sum()),
            "n_threshold_pairs": int(self.threshold_pairs["label"].notna().sum()),
            "test_pair_bands": {
                f"{'partial' if pd.isna(lab) else int(lab)}/{band}": int(n)
                for (lab, band), n in self.test_pairs.groupby(
                    ["label", "band"], dropna=False).size().items()},
            "threshold_source": self.threshold_source,
            "text_fields": self.config.text_fields,
            "max_chars_per_field": self.config.max_chars_per_field,
            "notes": self.notes,
        }


# ----------------------------------------------------------------------------- building


def _resolve_defaults(incidents: Path, labels: list[str] | None, links: str | Path | None,
                      text_fields: list[str] | None, cfg: BenchmarkConfig) -> BenchmarkConfig:
    side = read_sidecar(incidents)
    if labels is None and links is None and side is not None:
        labels = list(side.labels) or None
        links = (incidents.parent / side.links) if side.links else None
    cfg.labels = list(labels or [])
    cfg.links = str(links) if links else None
    if text_fields:
        cfg.text_fields = list(text_fields)
    elif side is not None:
        cfg.text_fields = list(side.text_fields)
        cfg.max_chars_per_field = cfg.max_chars_per_field or side.max_chars_per_field
    if cfg.corpus is None:
        cfg.corpus = (side.eval_corpus if side is not None and not (labels and links)
                      else ("all" if links else "split"))
    if cfg.corpus not in ("split", "all"):
        raise ItsmError(f"unknown corpus choice {cfg.corpus!r}", where="--corpus",
                        fix="use 'split' or 'all'")
    return cfg


def load_for_benchmark(
    incidents: Path,
    *,
    columns: str | Path | None,
    labels: list[str] | None,
    links: str | Path | None,
    text_fields: list[str] | None,
    config: BenchmarkConfig,
    encoding: str = "utf-8",
) -> tuple[pd.DataFrame, pd.Series, BenchmarkConfig, str]:
    """Incidents, their texts (by number), the resolved config and the data set name.

    Shared by evaluate_v2 and the adversarial diagnostic: sidecar defaults, the label /
    link relevance signal, label columns checked, the leakage guard, the text builder.
    """
    cfg = _resolve_defaults(incidents, labels, links, text_fields, config)
    df = load_incidents(incidents, columns, text_fields=cfg.text_fields, encoding=encoding)
    if not cfg.labels and not cfg.links:
        present = [c for c in ("category", "subcategory") if df[c].notna().any()]
        if not present:
            raise ItsmError(
                "no relevance signal: the file has no category values and no links were "
                "given", where=str(incidents),
                fix="pass --labels <col>[,<col>...] naming label columns, or --links <csv>")
        cfg.labels = present
    for col in cfg.labels:
        if col not in df.columns:
            raise ItsmError(f"label column {col!r} not found", where=str(incidents),
                            fix=f"choose --labels from {list(df.columns)}")
    check_label_leakage(cfg.text_fields, cfg.labels, allow=cfg.allow_label_leakage)
    texts = embedded_texts(df, cfg.text_fields, cfg.max_chars_per_field)
    side = read_sidecar(incidents)
    dataset = side.name if side is not None else incidents.stem.split(".")[0]
    return df, texts, cfg, dataset


def build_benchmark(
    incidents: str | Path,
    *,
    columns: str | Path | None = None,
    labels: list[str] | None = None,
    links: str | Path | None = None,
    text_fields: list[str] | None = None,
    config: BenchmarkConfig | None = None,
    encoding: str = "utf-8",
) -> Benchmark:
    """Load incidents and build queries, corpus, graded relevance and both pair sets.

    Defaults for labels / links / text fields come from the data set's sidecar manifest
    (``<file>.meta.json``) when the caller gives none.

    Args:
        incidents: the incidents file; columns: its column mapping.
        labels: label hierarchy for graded relevance; links: duplicate-link CSV.
        text_fields: fields embedded as text.
        config: query split, corpus, pair-set sizes, bootstrap resamples, leakage guard.
        encoding: text encoding of the file.

    Returns:
        The :class:`Benchmark` (never depends on a model).
    """
    incidents = Path(incidents)
    df, texts, cfg, dataset = load_for_benchmark(incidents, columns=columns, labels=labels,
                                                 links=links, text_fields=text_fields,
                                                 config=config or BenchmarkConfig(),
                                                 encoding=encoding)
    has_split = "split" in df.columns and df["split"].notna().any()
    common = dict(dataset=dataset, config=cfg, incidents_path=str(incidents),
                  incidents_sha256=sha256_file(incidents), texts=texts)
    if cfg.links:
        return _build_links(df, has_split, common)
    return _build_labels(df, has_split, common)


def graded_relevance(query_labels: pd.DataFrame, corpus_labels: pd.DataFrame) -> np.ndarray:
    """Grade = number of leading label levels shared (coarse first); a missing label
    matches nothing. E.g. [category, subcategory]: 2 both, 1 category only, 0 otherwise.
    """
    grades = np.zeros((len(query_labels), len(corpus_labels)), dtype=np.int8)
    still = np.ones(grades.shape, dtype=bool)
    for col in query_labels.columns:
        codes, _ = pd.factorize(pd.concat([query_labels[col], corpus_labels[col]])
                                .astype("string"), use_na_sentinel=True)
        a, b = codes[: len(query_labels)], codes[len(query_labels):]
        still &= (a[:, None] == b[None, :]) & (a[:, None] >= 0)
        grades += still
    return grades


def _halves(keys: list[str], seed: int) -> np.ndarray:
    """Deterministic 50/50 partition (calibration / evaluation) for files without a split."""
    return assign_splits(keys, {"validation": 0.5, "test": 0.5}, seed)


def _build_labels(df: pd.DataFrame, has_split: bool, common: dict) -> Benchmark:
    cfg: BenchmarkConfig = common["config"]
    first = cfg.labels[0]
    elig = df[df[first].notna()].copy()
    notes: list[str] = []
    if has_split and (elig["split"] == cfg.query_split).sum() >= 2:
        scheme = "split"
        q = elig[elig["split"] == cfg.query_split]
        corpus = q if cfg.corpus == "split" else elig
        thr_df = elig[elig["split"] == cfg.threshold_split]
        if thr_df[first].nunique() >= 2 and len(thr_df) >= 8:
            test_df, source = q, f"{cfg.threshold_split} split"
        else:
            halves = _halves(list(q["number"]), cfg.seed)
            thr_df, test_df = q[halves == "validation"], q[halves == "test"]
            source = f"calibration half of the {cfg.query_split} split (no usable " \
                     f"{cfg.threshold_split} split); pair metrics on the other half"
            notes.append(source)
    else:
        scheme = "leave-one-out"
        q = corpus = elig
        halves = _halves(list(elig["number"]), cfg.seed)
        thr_df, test_df = elig[halves == "validation"], elig[halves == "test"]
        source = "calibration half of the incidents (no split column); pair metrics on the " \
                 "other half"
        if has_split:
            notes.append(f"too few {cfg.query_split} incidents; evaluated leave-one-out")
    grades = graded_relevance(q[cfg.labels], corpus[cfg.labels])
    texts = common["texts"]
    test_pairs = label_pair_set(test_df, texts, cfg.labels, cfg.pairs)
    thr_pairs = label_pair_set(thr_df, texts, cfg.labels,
                               PairSetConfig(**{**asdict(cfg.pairs), "seed": cfg.seed + 1}))
    return Benchmark(mode="labels", split_scheme=scheme, query_ids=list(q["number"]),
                     corpus_ids=list(corpus["number"]), grades=grades,
                     query_groups=pd.Series(q[first].to_numpy(), index=q["number"].to_numpy()),
                     test_pairs=test_pairs, threshold_pairs=thr_pairs, threshold_source=source,
                     notes=notes, **common)


def _build_links(df: pd.DataFrame, has_split: bool, common: dict) -> Benchmark:
    cfg: BenchmarkConfig = common["config"]
    links = load_links(cfg.links)
    check_links_known(links, df)
    notes: list[str] = []
    split_of = df.set_index("number")["split"] if has_split else None
    if "split" not in links.columns and split_of is not None:
        rank = {"train": 0, "validation": 1, "test": 2}
        links["split"] = [max(split_of[a], split_of[b], key=lambda s: rank.get(s, 0))
                          for a, b in zip(links["a"], links["b"])]
    q_links = links[links["split"] == cfg.query_split] if "split" in links.columns else links
    if len(q_links) == 0:
        raise ItsmError(f"no {cfg.query_split} links", where=str(cfg.links),
                        fix="check the split column of the links file")
    scheme = "split" if "split" in links.columns else "leave-one-out"
    numbers = list(df["number"])
    if scheme == "split" and cfg.threshold_split in set(links["split"]):
        thr_links, test_links = links[links["split"] == cfg.threshold_split], q_links
        source = f"{cfg.threshold_split} links"
    else:
        halves = _halves([f"{a} {b}" for a, b in zip(q_links["a"], q_links["b"])], cfg.seed)
        thr_links, test_links = q_links[halves == "validation"], q_links[halves == "test"]
        source = "calibration half of the links; pair metrics on the other half"
        notes.append(source)
    query_ids = list(pd.unique(q_links[["a", "b"]].to_numpy().ravel()))
    if cfg.corpus == "all" or split_of is None:
        corpus_ids = numbers
    else:
        corpus_ids = [n for n in numbers if split_of[n] == cfg.query_split]
    c_pos = {n: j for j, n in enumerate(corpus_ids)}
    grades = np.zeros((len(query_ids), len(corpus_ids)), dtype=np.int8)
    q_pos = {n: i for i, n in enumerate(query_ids)}
    for a, b in zip(links["a"], links["b"]):
        for x, y in ((a, b), (b, a)):
            if x in q_pos and y in c_pos:
                grades[q_pos[x], c_pos[y]] = 1
    texts = common["texts"]
    pool = corpus_ids
    test_pairs = link_pair_set(numbers, test_links, texts, cfg.pairs, all_links=links,
                               negative_pool=pool)
    thr_pairs = link_pair_set(numbers, thr_links, texts,
                              PairSetConfig(**{**asdict(cfg.pairs), "seed": cfg.seed + 1}),
                              all_links=links, negative_pool=pool)
    return Benchmark(mode="links", split_scheme=scheme, query_ids=query_ids,
                     corpus_ids=corpus_ids, grades=grades, query_groups=None,
                     test_pairs=test_pairs, threshold_pairs=thr_pairs, threshold_source=source,
                     notes=notes, **common)


# ----------------------------------------------------------------------------- scoring


@dataclass
class EvalResult:
    """Metrics of one scorer on one benchmark (plain dicts + per-item frames)."""

    metrics: dict[str, Any]
    per_query: pd.DataFrame
    pair_scores: pd.DataFrame
    per_dim: dict[str, dict[str, Any]]
    per_category: list[dict[str, Any]]


def _masked_scores(scorer: Scorer, bench: Benchmark, dim: int | None) -> np.ndarray:
    t = bench.texts
    scores = scorer.score_matrix(t.loc[bench.query_ids].tolist(),
                                 t.loc[bench.corpus_ids].tolist(), dim=dim).astype(np.float32)
    c_pos = {n: j for j, n in enumerate(bench.corpus_ids)}
    for i, n in enumerate(bench.query_ids):
        if n in c_pos:
            scores[i, c_pos[n]] = -np.inf
    return scores


def _pair_scores(scorer: Scorer, pairs: pd.DataFrame, dim: int | None) -> np.ndarray:
    return scorer.score_pairs(pairs["text_a"].tolist(), pairs["text_b"].tolist(), dim=dim)


def _pair_block(scores: np.ndarray, pairs: pd.DataFrame, threshold: float,
                boot: dict) -> dict[str, Any]:
    cls = pairs["label"].notna().to_numpy()
    y, s = pairs["label"].to_numpy()[cls].astype(int), scores[cls]
    out: dict[str, Any] = dict(M.pair_classification_metrics(s, y, threshold))
    out["spearman"] = M.spearman(scores, pairs["grade"].to_numpy())

    predicted = s >= threshold
    for name, fn, arrays in (
        ("roc_auc", M.rows_roc_auc, (y, s)),
        ("pr_auc", M.rows_average_precision, (y, s)),
        ("f1", M.rows_f1, (y, predicted)),
        ("precision", M.rows_precision, (y, predicted)),
        ("recall", M.rows_recall, (y, predicted)),
        ("spearman", M.rows_spearman, (scores, pairs["grade"].to_numpy())),
    ):
        out[f"{name}_ci"] = list(M.bootstrap_rows_ci(fn, *arrays, **boot))
    return out


def evaluate_scorer(scorer: Scorer, bench: Benchmark, *, dims: list[int | None] | None = None,
                    per_dim_ci: bool = True) -> EvalResult:
    """Run retrieval + pair classification for one scorer; headline at the first dim.

    Args:
        scorer: any :class:`~itsm_core.encoders.scorers.Scorer`.
        bench: the benchmark (queries, corpus, grades, test and threshold pair sets).
        dims: Matryoshka dims to evaluate (default: the scorer's).
        per_dim_ci: bootstrap CIs at every dim, not only the headline one.

    Returns:
        :class:`EvalResult`: metrics with CIs, per-dim and per-category metrics, per-query
        table and scored test pairs.
    """
    cfg = bench.config
    boot = dict(n_resamples=cfg.n_resamples, level=cfg.ci_level, seed=cfg.seed)
    dims = list(dims if dims is not None else scorer.dims)
    headline: dict[str, Any] = {}
    per_dim: dict[str, dict[str, Any]] = {}
    per_query = pd.DataFrame()
    pair_table = bench.test_pairs[["a", "b", "label", "grade", "band", "lexical"]].copy()
    t0 = time.perf_counter()
    for k, dim in enumerate(dims):
        pq = retrieval_per_query(scorer, bench, dim)
        thr = float(M.best_f1_threshold(
            _pair_scores(scorer, bench.threshold_pairs.dropna(subset=["label"]), dim),
            bench.threshold_pairs["label"].dropna().to_numpy().astype(int)))
        ps = _pair_scores(scorer, bench.test_pairs, dim)
        block: dict[str, Any] = {}
        if k == 0 or per_dim_ci:
            block.update(M.summarize_with_ci(pq, list(RETRIEVAL_METRICS), **boot))
        else:
            block.update({m: float(pq[m].mean()) for m in RETRIEVAL_METRICS})
        if k == 0:
            block.update(_pair_block(ps, bench.test_pairs, thr, boot))
            per_query, headline = pq, block
            pair_table["score"] = ps
            pair_table["predicted"] = (ps >= thr).astype(int)
        else:
            cls = bench.test_pairs["label"].notna().to_numpy()
            block.update(M.pair_classification_metrics(
                ps[cls], bench.test_pairs["label"].to_numpy()[cls].astype(int), thr))
        block["threshold"] = thr
        per_dim[str(dim if dim is not None else "full")] = block
    per_category: list[dict[str, Any]] = []
    if bench.query_groups is not None:
        grp = bench.query_groups.loc[per_query["query"]].to_numpy()
        per_category = M.breakdown(per_query.dropna(subset=["ndcg@10"]),
                                   grp[per_query["ndcg@10"].notna().to_numpy()],
                                   "ndcg@10").reset_index().to_dict("records")
    headline["n_queries_evaluated"] = int(per_query["ndcg@10"].notna().sum())
    headline["eval_seconds"] = round(time.perf_counter() - t0, 2)
    return EvalResult(metrics=headline, per_query=per_query, pair_scores=pair_table,
                      per_dim=per_dim, per_category=per_category)


# ----------------------------------------------------------------------------- runs


def sample_benchmark(bench: Benchmark, n_queries: int, n_corpus: int,
                     seed: int | None = None) -> Benchmark:
    """A seeded sub-benchmark for side-by-side comparisons of one model's backends
    (``itsm bench encode``): ``n_corpus`` documents, then up to ``n_queries`` of the queries
    with at least one relevant document among them. Its NDCG is not the benchmark's (a
    smaller corpus is easier); differences between backends on it are what it is for."""
    rng = np.random.default_rng(bench.config.seed if seed is None else seed)
    cols = np.sort(rng.choice(len(bench.corpus_ids), min(n_corpus, len(bench.corpus_ids)),
                              replace=False))
    grades = bench.grades[:, cols]
    has = np.where(grades.max(axis=1) > 0)[0]
    rows = np.sort(rng.choice(has, min(n_queries, len(has)), replace=False))
    return replace(bench, query_ids=[bench.query_ids[i] for i in rows],
                   corpus_ids=[bench.corpus_ids[j] for j in cols], grades=grades[rows])


def retrieval_per_query(scorer: Scorer, bench: Benchmark, dim: int | None = None
                        ) -> pd.DataFrame:
    """Retrieval metrics per query (NDCG@10, MRR@10, MAP@100 …) of one scorer, without the
    pair classification of :func:`evaluate_scorer` (backend comparisons need only this)."""
    pq = M.retrieval_metrics_per_query(_masked_scores(scorer, bench, dim), bench.grades)
    pq.insert(0, "query", bench.query_ids)
    return pq


def validation_benchmark(bench: Benchmark) -> Benchmark:
    """The benchmark of the same incidents and config with the VALIDATION queries
    (what a scorer may calibrate on, e.g. the hybrid fusion weight)."""
    cfg = replace(bench.config, query_split=bench.config.threshold_split)
    try:
        return build_benchmark(bench.incidents_path, labels=cfg.labels or None,
                               links=cfg.links, text_fields=cfg.text_fields, config=cfg)
    except ItsmError as exc:
        raise ItsmError(f"cannot build the validation benchmark to choose the fusion "
                        f"weight: {exc.problem}", where=bench.incidents_path,
                        fix="give the weight explicitly: --model hybrid:<model>@0.6 (dense "
                        "share) or hybrid:<model>@rrf") from exc


def decision_benchmark(incidents: str | Path, splits: tuple[str, ...] = ("train", "validation"),
                       *, links: str | Path | None = None) -> Benchmark:
    """A retrieval benchmark for CHOICES about a model that was not trained on this data set
    (the unseen-duplicate signal of a recipe choice): the queries of every split in
    ``splits`` together, never the test split, no bootstrap.

    Links data sets (corpus ``all``) take the queries of all the given splits against every
    incident that is not in the test split; label data sets (corpus = the query split) take
    the validation split, the one non-test split small enough to search leave-one-out.

    Args:
        incidents: a processed incidents file with a ``split`` column.
        splits: the non-test splits whose queries are pooled.
        links: a duplicate-link CSV (default: the data set's sidecar decides).

    Returns:
        The :class:`Benchmark` (pair sets those of the first split; only its retrieval
        part is meant to be used).
    """
    if "test" in splits:
        raise ItsmError("a decision benchmark never uses the test split", where=str(splits),
                        fix="pool train and/or validation queries")
    parts = []
    for split in splits:
        try:
            parts.append(build_benchmark(incidents, links=links, config=BenchmarkConfig(
                query_split=split, threshold_split="validation", n_resamples=0)))
        except ItsmError:  # a split without links (or incidents) adds no queries
            continue
    if not parts:
        raise ItsmError(f"no queries in the splits {list(splits)}", where=str(incidents),
                        fix="the data set needs train or validation links / incidents")
    first = parts[0]
    if first.mode == "labels" or any(p.corpus_ids != first.corpus_ids for p in parts):
        return next((p for p in parts if p.config.query_split == "validation"), first)
    seen: set[str] = set()
    rows, ids = [], []
    for part in parts:
        for i, q in enumerate(part.query_ids):
            if q not in seen:  # a query linked in two splits has one row (all links grade)
                seen.add(q)
                ids.append(q)
                rows.append(part.grades[i])
    # test incidents leave the corpus too: a train query linked to one (a test link) would
    # otherwise carry a test label into the decision
    split_of = load_incidents(incidents)[["number", "split"]].set_index("number")["split"]
    keep = np.array([split_of.get(n) != "test" for n in first.corpus_ids])
    grades = np.vstack(rows)[:, keep]
    return replace(first, query_ids=ids, grades=grades,
                   corpus_ids=[n for n, k in zip(first.corpus_ids, keep) if k],
                   notes=[*first.notes, f"queries of the {'+'.join(splits)} splits; test "
                          "incidents left out of the corpus"])


def evaluate_model(model: str, bench: Benchmark, out: str | Path, *,
                   leaderboard: str | Path | None = LEADERBOARD_CSV,
                   scorer: Scorer | None = None, task: str = "evaluate",
                   name: str | None = None) -> dict[str, Any]:
    """Evaluate one model spec on a built benchmark and write the run.

    Writes ``out/metrics.json`` (shared results schema), ``out/per_query.csv`` and
    ``out/pairs.csv`` (for paired comparisons and plots), and appends a row to
    ``leaderboard`` (None: no row).

    Args:
        model: the model spec (see :func:`itsm_core.encoders.factory.load_scorer`).
        bench: the benchmark; a scorer that calibrates (hybrid fusion) does so on its
            VALIDATION counterpart, never on the test queries.
        out: a new or empty run directory.
        leaderboard: the leaderboard CSV (None: no row).
        scorer: an already built scorer for ``model`` (skips loading it again).
        task: the record's task (``unseen``: a fine-tune judged on a data set it was not
            trained on — kept apart from the ``evaluate`` rows of that data set).
        name: the model name in the record (default the scorer's).

    Returns:
        The run's record (what ``metrics.json`` holds).
    """
    from itsm_core.encoders.factory import load_scorer
    from itsm_core.runs.schema import make_record, write_run

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ItsmError("output directory already exists and is not empty; refusing to "
                        "overwrite an earlier run", where=str(out),
                        fix="pass a new --out directory (every run gets its own)")
    scorer = scorer or load_scorer(model)
    extra: dict[str, Any] = {"model_arg": str(model)}
    prec = getattr(getattr(scorer, "model", None), "precision", None)
    if prec:  # torch arithmetic of the encoder (ITSM_PRECISION); "precision" is a metric
        extra["encoder_precision"] = prec
    if hasattr(scorer, "calibrate"):  # e.g. hybrid fusion weight: chosen on VALIDATION only
        cal = scorer.calibrate(lambda: validation_benchmark(bench))
        extra["calibration"] = cal.describe() if hasattr(cal, "describe") else str(cal)
        # every candidate's validation score: the evidence the choice was made on
        extra["calibration_table"] = list(getattr(cal, "table", None) or [])
    res = evaluate_scorer(scorer, bench)
    spec = getattr(scorer, "spec", None)
    record = make_record(
        task=task, model=name or scorer.name, model_kind=scorer.kind,
        benchmark=bench.describe(), metrics=res.metrics, per_dim=res.per_dim,
        per_category=res.per_category, model_spec=spec.to_dict() if spec else None,
        extra={**extra, "threshold": res.metrics.get("threshold")},
    )
    write_run(out, record, {"per_query": res.per_query, "pairs": res.pair_scores},
              leaderboard=leaderboard)
    return record


def _run_label(spec: str) -> str:
    """A folder-name-safe label of a model spec (``hybrid:models/x/model`` → ``hybrid-x``)."""
    head, sep, rest = str(spec).strip().rpartition(":")
    p = Path(rest)
    name = p.parent.name if p.name == "model" and p.parent.name else p.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{head}-{name}" if sep else name)[:60] or "model"


def evaluate_file(model: str, incidents: str | Path | None, out: str | Path | None, *,
                  dataset: str | None = None,
                  columns: str | Path | None = None, labels: list[str] | None = None,
                  links: str | Path | None = None, text_fields: list[str] | None = None,
                  config: BenchmarkConfig | None = None, encoding: str = "utf-8",
                  leaderboard: bool = True) -> dict[str, Any]:
    """``itsm evaluate``: build the benchmark of an incidents file and evaluate one model.

    Args:
        model: any model spec (see :func:`itsm_core.encoders.factory.load_scorer`).
        incidents: CSV / JSON / JSONL / Parquet export (or None with ``dataset``).
        out: a NEW run directory (refused when it already holds a run); None: a new
            ``<timestamp>_evaluate_<data set>_<model>`` folder under ``models/results/runs``.
        dataset: a bundled or added data set (``itsm data add``) instead of ``incidents``.
        columns: column mapping (``servicenow`` or a mapping JSON file).
        labels: label hierarchy for graded relevance; links: duplicate-link CSV.
        text_fields: the fields embedded as text.
        config: query split, corpus, bootstrap resamples, leakage guard.
        encoding: text encoding of the incidents file.
        leaderboard: append the run's row to the leaderboard.

    Returns:
        The run's metrics.json record, with ``run_dir`` (where it was written).
    """
    from itsm_core.core.io import new_run_dir
    from itsm_core.data.datasets import processed_path

    if (incidents is None) == (dataset is None):
        raise ItsmError("give the incidents file or a data set name, not both / neither",
                        where="--incidents / --dataset",
                        fix="e.g. --dataset it_tickets, or --incidents export.csv")
    label = _run_label(model)
    if dataset:  # a trained model's NAME (minilm-ft, hybrid:minilm-ft) -> its newest folder
        from itsm_core.encoders.factory import resolve_trained

        model = resolve_trained(model, dataset)
    incidents = processed_path(dataset) if dataset else incidents
    if not Path(incidents).exists():
        raise ItsmError("incidents file not found", where=str(incidents),
                        fix="check the path (bundled data: run `itsm data build` first)")
    if links is not None and not Path(links).exists():
        raise ItsmError("links file not found", where=str(links), fix="check the path")
    if out is None:  # a new run folder of its own under the run store
        from itsm_core.core.config import RUNS_DIR
        from itsm_core.core.io import unique_run_dir

        out = unique_run_dir(RUNS_DIR, f"evaluate_{dataset or Path(incidents).stem}_{label}")
    new_run_dir(out)  # fail fast, before any heavy work
    bench = build_benchmark(incidents, columns=columns, labels=labels, links=links,
                            text_fields=text_fields, config=config, encoding=encoding)
    rec = evaluate_model(model, bench, out, leaderboard=LEADERBOARD_CSV if leaderboard
                         else None)
    return {**rec, "run_dir": str(out)}


def run_benchmark(models: list[str], datasets: list[str], *, bootstrap: int = 1000,
                  on_benchmark: Any = None, on_record: Any = None) -> list[dict[str, Any]]:
    """``itsm benchmark``: every model on every bundled data set (benchmark built once per
    data set; each model gets a new run directory and a leaderboard row).

    Args:
        models: model specs; datasets: bundled data set names.
        bootstrap: bootstrap resamples for the CIs.
        on_benchmark: called with ``(dataset, benchmark)`` once each is built (progress).
        on_record: called with each run's record as it finishes (progress).

    Returns:
        The records, in order.
    """
    from itsm_core.core.config import RUNS_DIR
    from itsm_core.core.io import unique_run_dir
    from itsm_core.data.datasets import processed_path

    records = []
    for ds in datasets:
        bench = build_benchmark(processed_path(ds), config=BenchmarkConfig(n_resamples=bootstrap))
        if on_benchmark is not None:
            on_benchmark(ds, bench)
        for model in models:
            rec = evaluate_model(model, bench,
                                 unique_run_dir(RUNS_DIR, f"evaluate_{ds}_{Path(model).name}"))
            records.append(rec)
            if on_record is not None:
                on_record(rec)
    return records
