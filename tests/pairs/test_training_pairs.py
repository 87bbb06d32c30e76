"""Training pairs: generation, curriculum phases, validation, pair files, dataset building.

Everything runs on the 42-incident tiny frame of ``conftest`` (18 train incidents, 3 per
fine label), no model weights.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_frame, tiny_links_frame

from itsm_core.core.errors import ItsmError
from itsm_core.data.incidents import load_links
from itsm_core.data.text import TextBuilder
from itsm_core.encoders.registry import load_sentence_transformer
from itsm_core.pairs.training import (
    PAIR_COLUMNS,
    PHASES,
    PairQualityReport,
    TrainPairConfig,
    assign_phases,
    generate_training_pairs,
    order_by_curriculum,
    read_pair_file,
    validate_pairs,
    write_pair_file,
)

LABELS = ["category", "subcategory"]
# one same-label positive + one hard positive per anchor (with 2 same-label partners per
# anchor, positives_per_anchor=2 would take both and every hard positive would be dropped
# as a duplicate); the band is wide enough for the tiny texts to have in-band negatives
CFG = TrainPairConfig(positives_per_anchor=1, tfidf_band=(0.05, 0.5))


# ----------------------------------------------------------------------------- helpers


def texts_of(df: pd.DataFrame) -> pd.Series:
    """Texts indexed by incident number (what generate_training_pairs expects)."""
    built = TextBuilder().build_series(df)
    return pd.Series(built.to_numpy(), index=df["number"].to_numpy())


def fine_key(df: pd.DataFrame) -> dict[str, tuple[str, str]]:
    return dict(zip(df["number"], zip(df["category"], df["subcategory"])))


def split_of(df: pd.DataFrame) -> dict[str, str]:
    return dict(zip(df["number"], df["split"]))


def links_of(df: pd.DataFrame, tmp_path: Path) -> pd.DataFrame:
    """The tiny links, written as CSV and read back through ``load_links`` (a, b, split)."""
    path = tmp_path / "links.csv"
    tiny_links_frame(df).to_csv(path, index=False)
    return load_links(path)


def components(links: pd.DataFrame) -> dict[str, str]:
    """Connected component (smallest member) of every incident in ``links``."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in zip(links["a"], links["b"]):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in list(parent)}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return tiny_frame()


@pytest.fixture(scope="module")
def pairs(frame: pd.DataFrame) -> pd.DataFrame:
    return generate_training_pairs(frame, texts_of(frame), CFG)


# ----------------------------------------------------------------- generate (labels)


def test_loads_links_as_a_b_split(frame, tmp_path):
    links = links_of(frame, tmp_path)
    assert list(links.columns) == ["a", "b", "split"]
    assert len(links) == 4 * 6
    assert Counter(links["split"]) == {"train": 12, "validation": 6, "test": 6}


def test_pairs_use_only_train_incidents(pairs, frame):
    assert list(pairs.columns) == list(PAIR_COLUMNS)
    split = split_of(frame)
    used = set(pairs["anchor_id"]) | set(pairs["positive_id"]) | set(pairs["negative_id"].dropna())
    assert used and {split[n] for n in used} == {"train"}
    # every train incident is an anchor (each has 2 same-label partners)
    assert set(pairs["anchor_id"]) == {n for n, s in split.items() if s == "train"}
    assert pairs["negative_id"].notna().all(), "every anchor has an allowed negative"


def test_positive_shares_fine_label_negative_does_not(pairs, frame):
    key = fine_key(frame)
    assert (pairs["anchor_id"].map(key) == pairs["positive_id"].map(key)).all()
    assert (pairs["anchor_id"].map(key) != pairs["negative_id"].map(key)).all()
    assert (pairs["anchor_id"] != pairs["positive_id"]).all()
    assert (pairs["anchor_id"] != pairs["negative_id"]).all()
    assert not pairs.duplicated(["anchor_id", "positive_id"]).any()
    # texts are those of the ids
    text = texts_of(frame)
    for col in ("anchor", "positive", "negative"):
        assert (pairs[col] == pairs[f"{col}_id"].map(text)).all()


def test_label_is_a_fine_class_id(pairs, frame):
    key = fine_key(frame)
    anchor_key = pairs["anchor_id"].map(key)
    per_key = pairs.groupby(anchor_key)["label"].nunique()
    assert (per_key == 1).all(), "one class id per fine label"
    ids = pairs.groupby(anchor_key)["label"].first()
    assert ids.is_unique, "different fine labels get different class ids"
    assert sorted(ids) == list(range(6))
    assert pairs.attrs["meta"]["n_classes"] == 6


def test_phases_and_sources(pairs):
    assert set(pairs["phase"]) <= set(PHASES)
    assert set(pairs["phase"]) == set(PHASES)
    assert set(pairs["source"]) == {"same_label", "hard_positive"}
    # phase = assign_phases over the stored lexical scores
    expected = assign_phases(pairs["lexical_pos"].to_numpy(), pairs["lexical_neg"].to_numpy(),
                             CFG.phase_shares)
    assert list(pairs["phase"]) == list(expected)
    counts = Counter(pairs["phase"])
    assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_hard_positives_share_fewer_words(pairs):
    hard = pairs[pairs["source"] == "hard_positive"]
    other = pairs[pairs["source"].isin(["same_label", "cross_category"])]
    assert len(hard) >= 3
    assert hard["lexical_pos"].mean() <= other["lexical_pos"].mean()
    # per anchor: the hard partner is the lowest-overlap one of the pool (the pool holds
    # every same-label partner here), so never above that anchor's other positives
    other_mean = other.groupby("anchor_id")["lexical_pos"].mean()
    for a, lex in zip(hard["anchor_id"], hard["lexical_pos"]):
        assert lex <= other_mean[a] + 1e-6


def test_lexical_scores_recomputed(pairs):
    from itsm_core.pairs.training import lexical_scores

    np.testing.assert_allclose(pairs["lexical_pos"],
                               lexical_scores(pairs["anchor"], pairs["positive"]), atol=1e-6)
    np.testing.assert_allclose(pairs["lexical_neg"],
                               lexical_scores(pairs["anchor"], pairs["negative"]), atol=1e-6)


def test_deterministic_per_seed(frame, pairs):
    texts = texts_of(frame)
    again = generate_training_pairs(frame, texts, CFG)
    pd.testing.assert_frame_equal(again, pairs)
    other = generate_training_pairs(
        frame, texts, TrainPairConfig(positives_per_anchor=1, tfidf_band=(0.05, 0.5), seed=1))
    assert not other[["anchor_id", "positive_id", "negative_id"]].equals(
        pairs[["anchor_id", "positive_id", "negative_id"]])


def test_meta_holds_config(pairs):
    meta = pairs.attrs["meta"]
    assert meta["config"]["tfidf_band"] == (0.05, 0.5)
    assert meta["config"]["positives_per_anchor"] == 1
    assert meta["config"]["seed"] == CFG.seed
    assert meta["n_train_incidents"] == 18


def test_negatives_none_and_unknown_strategy(frame):
    texts = texts_of(frame)
    none = generate_training_pairs(frame, texts, TrainPairConfig(negatives="none"))
    assert none["negative_id"].isna().all() and none["negative"].isna().all()
    assert none["lexical_neg"].isna().all()
    assert set(none["phase"]) == set(PHASES)
    with pytest.raises(ItsmError, match="unknown negative strategy"):
        generate_training_pairs(frame, texts, TrainPairConfig(negatives="bm25"))


def test_max_anchors_limits_anchors(frame):
    p = generate_training_pairs(frame, texts_of(frame),
                                TrainPairConfig(positives_per_anchor=1, max_anchors=5))
    assert p["anchor_id"].nunique() == 5


# ----------------------------------------------------------------------- TF-IDF band


def test_tfidf_negatives_respect_band(pairs, frame):
    from sklearn.feature_extraction.text import TfidfVectorizer

    lo, hi = CFG.tfidf_band
    tr = frame[frame["split"] == "train"]
    text = texts_of(frame)
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    X = vec.fit_transform(text.loc[tr["number"]])
    pos = {n: i for i, n in enumerate(tr["number"])}
    cos = np.array([(X[pos[a]] @ X[pos[n]].T).toarray()[0, 0]
                    for a, n in zip(pairs["anchor_id"], pairs["negative_id"])])
    band = (pairs["negative_source"] == "tfidf_band").to_numpy()
    below = (pairs["negative_source"] == "tfidf_below_band").to_numpy()
    assert band.sum() >= 5 and (band | below).all()
    assert ((cos[band] >= lo - 1e-5) & (cos[band] < hi + 1e-5)).all(), cos[band]
    # fallback: nothing allowed was in the band, so the chosen one lies below it
    assert (cos[below] < hi + 1e-5).all()
    assert (cos[below] < lo + 1e-5).all(), cos[below]


def test_default_band_falls_back_below(frame):
    """The seed band (0.3, 0.5) is above every tiny cross-label TF-IDF cosine."""
    p = generate_training_pairs(frame, texts_of(frame), TrainPairConfig(positives_per_anchor=1))
    assert set(p["negative_source"]) == {"tfidf_below_band"}
    assert p["negative_id"].notna().all()


# ---------------------------------------------------------------------- assign_phases


def test_assign_phases_without_negatives():
    lex = np.array([0.8, 0.1, 0.5, 0.3, 0.9, 0.0, 0.6, 0.2])
    ph = assign_phases(lex, np.full(8, np.nan), (0.5, 0.25, 0.25))
    assert Counter(ph) == {"easy": 4, "medium": 2, "hard": 2}
    assert set(ph[np.argsort(lex)[:2]]) == {"hard"}  # fewest shared words
    assert set(ph[np.argsort(lex)[-4:]]) == {"easy"}
    assert set(ph[np.argsort(lex)[2:4]]) == {"medium"}
    assert len(assign_phases(np.array([]), np.array([]), (1 / 3, 1 / 3, 1 / 3))) == 0


def test_assign_phases_even_thirds():
    lex = np.linspace(0, 1, 9)
    ph = assign_phases(lex, np.full(9, np.nan), (1 / 3, 1 / 3, 1 / 3))
    assert list(ph) == ["hard"] * 3 + ["medium"] * 3 + ["easy"] * 3


def test_assign_phases_high_overlap_negative_is_harder():
    pos = np.full(4, 0.5)
    neg = np.array([0.0, 0.9, 0.2, 0.4])
    ph = assign_phases(pos, neg, (0.25, 0.5, 0.25))
    assert list(ph) == ["easy", "hard", "medium", "medium"]
    # same negatives, but the positive term can outweigh them
    ph2 = assign_phases(np.array([0.9, 0.1]), np.array([0.9, 0.1]), (0.5, 0.0, 0.5))
    assert Counter(ph2) == {"easy": 1, "hard": 1}


# --------------------------------------------------------------- order_by_curriculum


def test_order_by_curriculum(pairs):
    shuffled = pairs.sample(frac=1.0, random_state=3)
    out = order_by_curriculum(shuffled, seed=5)
    rank = out["phase"].map({p: i for i, p in enumerate(PHASES)}).to_numpy()
    assert (np.diff(rank) >= 0).all(), "easy, then medium, then hard"
    key = ["anchor_id", "positive_id", "negative_id", "phase"]
    assert Counter(map(tuple, out[key].to_numpy())) == Counter(map(tuple, pairs[key].to_numpy()))
    pd.testing.assert_frame_equal(order_by_curriculum(shuffled, seed=5), out)


# --------------------------------------------------------------------- validate_pairs


def test_validate_clean_pairs_ok(pairs, frame):
    rep = validate_pairs(pairs, frame)
    assert isinstance(rep, PairQualityReport)
    assert rep.ok and rep.errors == [], rep.errors
    c = rep.counts
    assert c["pairs"] == len(pairs) and c["with_negative"] == len(pairs)
    assert c["heldout_incidents_in_pairs"] == 0 and c["exact_duplicate_pairs"] == 0
    assert c["positive_label_conflicts"] == 0 and c["negative_label_conflicts"] == 0
    assert sum(c[f"phase:{p}"] for p in PHASES) == len(pairs)
    assert rep.to_dict()["counts"] == c


def test_validate_flags_leakage(pairs, frame):
    bad = pairs.copy()
    # INC0006 is a test incident with INC0001's fine label: only leakage is wrong
    row = bad.index[bad["anchor_id"] == "INC0001"][0]
    bad.loc[row, "positive_id"] = "INC0006"
    rep = validate_pairs(bad, frame)
    assert not rep.ok
    assert rep.counts["heldout_incidents_in_pairs"] == 1
    assert len(rep.errors) == 1 and "leakage" in rep.errors[0] and "INC0006" in rep.errors[0]


def test_validate_flags_unknown_incident(pairs, frame):
    bad = pairs.copy()
    bad.loc[0, "negative_id"] = "INC9999"
    rep = validate_pairs(bad, frame)
    assert any("not in the incidents file" in e for e in rep.errors)


def test_validate_flags_false_negative_and_wrong_positive(pairs, frame):
    key = fine_key(frame)
    bad = pairs.copy()
    row = bad.index[0]
    a = bad.loc[row, "anchor_id"]
    same = next(n for n in frame.loc[frame["split"] == "train", "number"]
                if n != a and key[n] == key[a])
    bad.loc[row, "negative_id"] = same
    rep = validate_pairs(bad, frame)
    assert rep.counts["negative_label_conflicts"] == 1
    assert any("negatives share the anchor's label" in e for e in rep.errors)
    other = next(n for n in frame.loc[frame["split"] == "train", "number"] if key[n] != key[a])
    bad2 = pairs.copy()
    bad2.loc[row, "positive_id"] = other
    rep2 = validate_pairs(bad2, frame)
    assert rep2.counts["positive_label_conflicts"] == 1 and not rep2.ok
    assert validate_pairs(bad2, frame, labels=None).ok  # no labels: nothing to compare


def test_validate_counts_duplicates_and_short_texts(pairs, frame):
    dup = pd.concat([pairs, pairs.iloc[[0, 1]]], ignore_index=True)
    rep = validate_pairs(dup, frame)
    assert rep.ok, "duplicates are a warning, not an error"
    assert rep.counts["exact_duplicate_pairs"] == 2
    assert any("2 exact duplicate pairs" in w for w in rep.warnings)
    short = pairs.copy()
    short.loc[0, "anchor"] = "vpn down"
    rep = validate_pairs(short, frame)
    assert rep.counts["too_short_texts"] == 1
    assert any("too short texts" in w for w in rep.warnings)
    same = pairs.copy()
    same.loc[0, "positive"] = same.loc[0, "anchor"].upper()
    assert validate_pairs(same, frame).counts["identical_texts"] == 1


def test_validate_needs_split_column(pairs, frame):
    rep = validate_pairs(pairs, frame.drop(columns="split"))
    assert not rep.ok
    assert any("no split column" in e for e in rep.errors)


# -------------------------------------------------------------------------- pair files


def test_pair_file_round_trip(pairs, tmp_path):
    path = write_pair_file(pairs, tmp_path / "pairs.parquet", meta={"dataset": "tiny"})
    assert path == tmp_path / "pairs.parquet" and path.exists()
    assert (tmp_path / "pairs.meta.json").exists()
    back = read_pair_file(path)
    assert list(back.columns) == list(pairs.columns)
    pd.testing.assert_frame_equal(back, pairs, check_dtype=False)
    meta = back.attrs["meta"]
    assert meta["dataset"] == "tiny"
    assert meta["config"]["tfidf_band"] == [0.05, 0.5]
    assert meta["counts"]["pairs"] == len(pairs)
    assert meta["counts"]["phase"] == dict(Counter(pairs["phase"]))
    assert meta["counts"]["source"] == dict(Counter(pairs["source"]))
    assert meta["counts"]["with_negative"] == len(pairs)


def test_pair_file_refusals(pairs, tmp_path):
    path = write_pair_file(pairs, tmp_path / "p.parquet")
    before = path.read_bytes()
    with pytest.raises(ItsmError, match="refusing to overwrite"):
        write_pair_file(pairs.iloc[:3], path)
    assert path.read_bytes() == before
    with pytest.raises(ItsmError, match="Parquet"):
        write_pair_file(pairs, tmp_path / "p.csv")
    assert not (tmp_path / "p.csv").exists()
    with pytest.raises(ItsmError, match="phase"):
        write_pair_file(pairs.drop(columns="phase"), tmp_path / "q.parquet")
    assert not (tmp_path / "q.parquet").exists()


def test_read_pair_file_errors(tmp_path):
    with pytest.raises(ItsmError, match="not found"):
        read_pair_file(tmp_path / "missing.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_text("anchor,positive\na,b\n")
    with pytest.raises(ItsmError, match="Parquet"):
        read_pair_file(junk)


def test_read_pair_file_without_meta(pairs, tmp_path):
    path = tmp_path / "plain.parquet"
    pairs.to_parquet(path, index=False)
    assert read_pair_file(path).attrs["meta"] == {}


# ------------------------------------------------------------------------- links mode


def test_links_mode_uses_train_links_both_ways(frame, tmp_path):
    links = links_of(frame, tmp_path)
    p = generate_training_pairs(frame, texts_of(frame), TrainPairConfig(), links=links)
    train = links[links["split"] == "train"]
    expected = set(zip(train["a"], train["b"])) | set(zip(train["b"], train["a"]))
    assert set(zip(p["anchor_id"], p["positive_id"])) == expected
    assert len(p) == len(expected) == 24
    assert set(p["source"]) == {"link"}
    split = split_of(frame)
    used = set(p["anchor_id"]) | set(p["positive_id"]) | set(p["negative_id"].dropna())
    assert {split[n] for n in used} == {"train"}
    # a direct link partner is never a negative
    linked = set(zip(links["a"], links["b"])) | set(zip(links["b"], links["a"]))
    assert not any((a, n) in linked for a, n in zip(p["anchor_id"], p["negative_id"]))
    # both directions of one link share a class
    lab = dict(zip(zip(p["anchor_id"], p["positive_id"]), p["label"]))
    assert all(lab[(a, b)] == lab[(b, a)] for a, b in expected)
    assert validate_pairs(p, frame, labels=None).ok


def test_links_mode_label_is_link_component(frame, tmp_path):
    links = links_of(frame, tmp_path)
    p = generate_training_pairs(frame, texts_of(frame), TrainPairConfig(), links=links)
    comp = components(links[links["split"] == "train"])
    per_comp = p.groupby(p["anchor_id"].map(comp))["label"].nunique()
    assert (per_comp == 1).all(), per_comp.to_dict()
    assert p.attrs["meta"]["n_classes"] == 6


def test_links_mode_negative_outside_link_component(frame, tmp_path):
    links = links_of(frame, tmp_path)
    p = generate_training_pairs(frame, texts_of(frame), TrainPairConfig(), links=links)
    comp = components(links)
    same = p["anchor_id"].map(comp) == p["negative_id"].map(comp)
    assert not same.any(), p.loc[same, ["anchor_id", "positive_id", "negative_id"]]


# ---------------------------------------------------------------------------- errors


def test_no_split_column_is_an_error(frame):
    with pytest.raises(ItsmError, match="no split column") as exc:
        generate_training_pairs(frame.drop(columns="split"), texts_of(frame), CFG)
    assert exc.value.fix and "split" in exc.value.fix


def test_no_label_with_two_train_incidents_is_an_error(frame):
    df = frame.copy()
    train = df["split"] == "train"
    first = train & ~df[train].duplicated(LABELS).reindex(df.index, fill_value=False)
    df.loc[train & ~first, "split"] = "validation"  # one train incident per fine label
    assert (df["split"] == "train").sum() == 6
    with pytest.raises(ItsmError, match="no positive training pairs") as exc:
        generate_training_pairs(df, texts_of(df), CFG)
    assert exc.value.fix


def test_short_texts_are_dropped(frame):
    df = frame.copy()
    df.loc[df["number"] == "INC0001", ["short_description", "description"]] = ["VPN", ""]
    p = generate_training_pairs(df, texts_of(df), CFG)
    used = set(p["anchor_id"]) | set(p["positive_id"]) | set(p["negative_id"].dropna())
    assert "INC0001" not in used
    assert p.attrs["meta"]["n_train_incidents"] == 17


# ------------------------------------------------------------- train.build_train_dataset


def _with_neg_labels(pairs, frame):
    from itsm_core.training.finetune import negative_labels

    return pairs.assign(negative_label=negative_labels(pairs, frame, LABELS))


def test_negative_labels_match_anchor_classes(pairs, frame):
    from itsm_core.training.finetune import negative_labels

    neg = negative_labels(pairs, frame, LABELS)
    cls = dict(zip(pairs["anchor_id"].map(fine_key(frame)), pairs["label"]))
    assert (neg == pairs["negative_id"].map(fine_key(frame)).map(cls)).all()
    assert (neg != pairs["label"]).all()


def test_build_train_dataset_curriculum_and_labels(pairs, frame):
    from itsm_core.training.finetune import TrainConfig, build_train_dataset

    p = _with_neg_labels(pairs, frame)
    ds, phases = build_train_dataset(p, TrainConfig(curriculum=True, use_negatives=True))
    assert len(ds) == len(phases) == len(p)
    assert set(ds.column_names) == {"anchor", "positive", "negative", "label"}
    rank = np.array([PHASES.index(x) for x in phases])
    assert (np.diff(rank) >= 0).all()
    by_text = {(a, b): (lab, nl) for a, b, lab, nl in
               zip(p["anchor"], p["positive"], p["label"], p["negative_label"])}
    for row, ph in zip(ds, phases):
        lab, nl = by_text[(row["anchor"], row["positive"])]
        assert row["label"] == [lab, nl]
        assert p.loc[(p["anchor"] == row["anchor"]) & (p["positive"] == row["positive"]),
                     "phase"].item() == ph
    # without negative_label every negative class is unknown
    ds2, _ = build_train_dataset(pairs, TrainConfig())
    assert all(lab[1] == -1 for lab in ds2["label"])


def test_build_train_dataset_without_negatives_or_curriculum(pairs):
    from itsm_core.training.finetune import TrainConfig, build_train_dataset

    ds, phases = build_train_dataset(pairs, TrainConfig(use_negatives=False, curriculum=False))
    assert "negative" not in ds.column_names
    assert len(ds) == len(pairs)
    assert Counter(phases) == Counter(pairs["phase"])
    # pairs without any negative: no negative column either
    none = pairs.assign(negative=None, negative_id=None)
    ds2, _ = build_train_dataset(none, TrainConfig(use_negatives=True))
    assert "negative" not in ds2.column_names and len(ds2) == len(pairs)


@pytest.mark.parametrize("max_pairs", [7, 13, 20])
def test_build_train_dataset_max_pairs_keeps_phase_shares(pairs, max_pairs):
    from itsm_core.training.finetune import TrainConfig, build_train_dataset

    ds, phases = build_train_dataset(pairs, TrainConfig(max_pairs=max_pairs))
    assert abs(len(ds) - max_pairs) <= 1
    full = Counter(pairs["phase"])
    got = Counter(phases)
    for ph in PHASES:
        assert abs(got[ph] - full[ph] * max_pairs / len(pairs)) <= 1, (ph, got, full)


# -------------------------------------------------------------------- train.make_pairs


def _bundle(tmp_path: Path, links: bool = False) -> Path:
    from itsm_core.data.datasets import DatasetManifest, sidecar_path

    path = tmp_path / "tiny.csv"
    df = tiny_frame()
    df.to_csv(path, index=False)
    if links:
        tiny_links_frame(df).to_csv(tmp_path / "tiny_links.csv", index=False)
    DatasetManifest(name="tiny", text_fields=["short_description", "description"],
                    labels=LABELS, links="tiny_links.csv" if links else None
                    ).save(sidecar_path(path))
    return path


def test_make_pairs_on_bundle(tmp_path):
    from itsm_core.training.finetune import make_pairs

    path = _bundle(tmp_path)
    p, rep = make_pairs("tiny", TrainPairConfig(positives_per_anchor=1), incidents_path=path)
    assert rep.ok, rep.errors
    assert rep.counts["pairs"] == len(p) > 0
    assert rep.counts["heldout_incidents_in_pairs"] == 0
    assert p["anchor_id"].nunique() == 18
    assert p.attrs["meta"]["config"]["labels"] == LABELS
    df = tiny_frame()
    assert (p["anchor_id"].map(fine_key(df)) == p["positive_id"].map(fine_key(df))).all()


def test_make_pairs_with_links_bundle_validates(tmp_path):
    from itsm_core.training.finetune import make_pairs

    path = _bundle(tmp_path, links=True)
    p, rep = make_pairs("tiny", incidents_path=path)
    assert set(p["source"]) == {"link"}
    assert rep.ok, rep.errors


def test_regression_unlabelled_train_incidents_and_string_dtype_ids():
    """Real data has unlabelled training tickets (label pd.NA) and string-dtype ids.

    Label mode must not fail on them and must never draw a negative whose label is
    unknown; links mode must not fail on string-dtype numbers.
    """
    from conftest import tiny_frame, tiny_links_frame

    from itsm_core.data.text import TextBuilder
    from itsm_core.pairs.training import TrainPairConfig, generate_training_pairs

    df = tiny_frame()
    extra = df[df["split"] == "train"].head(6).copy()
    extra["number"] = [f"UNL{i}" for i in range(len(extra))]
    extra[["category", "subcategory"]] = pd.NA
    df = pd.concat([df, extra], ignore_index=True).astype({"number": "string",
                                                           "category": "string",
                                                           "subcategory": "string"})
    texts = pd.Series(TextBuilder().build_series(df).to_numpy(), index=df["number"].to_numpy())
    cfg = TrainPairConfig(positives_per_anchor=1, tfidf_band=(0.0, 1.01))
    pairs = generate_training_pairs(df, texts, cfg)
    used = set(pairs["anchor_id"]) | set(pairs["positive_id"]) | set(pairs["negative_id"].dropna())
    assert not any(str(n).startswith("UNL") for n in used)
    links = tiny_links_frame(df.iloc[:42]).rename(
        columns={"incident": "a", "duplicate_of": "b"}).astype("string")
    linked = generate_training_pairs(df, texts, cfg, links=links)
    assert len(linked) > 0 and linked["negative_id"].notna().any()


@pytest.mark.weights
def test_embedding_negatives_cover_most_pairs_and_never_share_the_label(frame):
    """mine_hard_negatives with MiniLM: (nearly) every pair gets a mined negative, and the
    false-negative guard holds. A regression guard: an earlier version kept ~2 % of rows."""
    with pytest.raises(ItsmError, match="mining model"):
        generate_training_pairs(frame, texts_of(frame), TrainPairConfig(negatives="embedding"))
    miner, _ = load_sentence_transformer("minilm")
    p = generate_training_pairs(frame, texts_of(frame), TrainPairConfig(negatives="embedding"),
                                mining_model=miner)
    mined = p["negative_source"] == "embedding"
    assert mined.mean() >= 0.8, p["negative_source"].value_counts(dropna=False)
    key = fine_key(frame)
    assert (p.loc[mined, "anchor_id"].map(key) != p.loc[mined, "negative_id"].map(key)).all()
    assert {split_of(frame)[n] for n in p.loc[mined, "negative_id"]} == {"train"}
