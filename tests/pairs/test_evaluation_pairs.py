"""Tests for itsm_core.pairs.training: lexical difficulty and balanced evaluation pair sets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from itsm_core.core.errors import ItsmError
from itsm_core.pairs.training import (
    PairSetConfig,
    annotate,
    assign_bands,
    jaccard,
    label_pair_set,
    lexical_scores,
    link_pair_set,
    token_set,
)

LABELS = ["category", "subcategory"]


def _texts(df: pd.DataFrame) -> pd.Series:
    return pd.Series((df["short_description"] + " " + df["description"]).to_numpy(),
                     index=df["number"].to_numpy())


def _links(df: pd.DataFrame) -> pd.DataFrame:
    """Links within each fine label (first two incidents of every split)."""
    rows = []
    for _, grp in df.groupby(["category", "subcategory", "split"], sort=False):
        nums = list(grp["number"])
        rows.append((nums[0], nums[1], grp["split"].iat[0]))
    return pd.DataFrame(rows, columns=["a", "b", "split"])


def _unordered(pairs: pd.DataFrame) -> pd.Series:
    return pd.Series([tuple(sorted(p)) for p in zip(pairs["a"], pairs["b"])])


# ---------------------------------------------------------------------------- lexical


def test_token_set_and_jaccard_hand_cases() -> None:
    assert token_set("VPN drops, VPN again! a 1") == {"vpn", "drops", "again"}  # 1-char out
    a, b = token_set("printer jams on tray"), token_set("Printer jams in the tray")
    # {printer, jams, on, tray} vs {printer, jams, in, the, tray}: 3 shared, 6 in union
    assert jaccard(a, b) == pytest.approx(3 / 6)
    assert jaccard(a, a) == 1.0
    assert jaccard(a, token_set("outlook crashes")) == 0.0
    assert jaccard(frozenset(), frozenset()) == 0.0
    assert jaccard(frozenset(), a) == 0.0
    np.testing.assert_allclose(
        lexical_scores(["vpn down", "x", "wifi weak signal"], ["VPN down", "y", "weak wifi"]),
        [1.0, 0.0, 2 / 3], rtol=1e-6)


def test_assign_bands_semantics() -> None:
    lexical = np.array([0.9, 0.5, 0.1, 0.9, 0.5, 0.1, 0.3, 0.7])
    label = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    bands = assign_bands(lexical, label, (0.3, 0.7))
    assert bands.tolist() == [
        "easy", "medium", "hard",  # positives: high overlap easy, low overlap hard
        "hard", "medium", "easy",  # negatives: the reverse
        "medium",  # lo edge is inclusive for "medium" (low means < lo)
        "hard",  # hi edge belongs to "high"
    ]


def test_annotate_bands_on_common_scale() -> None:
    texts = pd.Series({"A": "vpn drops daily", "B": "vpn drops daily now", "C": "printer jam",
                       "D": "vpn printer"})
    cand = pd.DataFrame({"a": ["A", "A", "A", "C"], "b": ["B", "C", "D", "D"],
                         "label": [1.0, 0.0, np.nan, 0.0]})
    out = annotate(cand, texts)
    assert list(out.columns) == ["a", "b", "label", "text_a", "text_b", "lexical", "band"]
    assert out.loc[0, "text_b"] == "vpn drops daily now"
    assert out.loc[0, "lexical"] == pytest.approx(0.75)
    assert out.loc[2, "band"] == "partial"  # NaN label = partial pair
    lo, hi = out.attrs["band_edges"]
    assert lo <= hi


# ---------------------------------------------------------------------------- label pairs


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_label_pair_set_grades_match_source_labels(tiny_df: pd.DataFrame, split: str) -> None:
    sub = tiny_df[tiny_df["split"] == split]
    pairs = label_pair_set(sub, _texts(tiny_df), LABELS, PairSetConfig(n_per_band=50))
    assert set(pairs["label"].dropna().astype(int)) == {0, 1}
    lab = sub.set_index("number")[LABELS]
    for row in pairs.itertuples(index=False):
        la, lb = lab.loc[row.a], lab.loc[row.b]
        same_cat = la["category"] == lb["category"]
        same_sub = same_cat and la["subcategory"] == lb["subcategory"]
        expected = 2 if same_sub else 1 if same_cat else 0
        assert row.grade == expected, (row.a, row.b)
        if expected == 2:
            assert row.label == 1.0 and row.band in {"easy", "medium", "hard"}
        elif expected == 0:
            assert row.label == 0.0 and row.band in {"easy", "medium", "hard"}
        else:  # partial match: kept for Spearman only
            assert np.isnan(row.label) and row.band == "partial"
    # only incidents of this split, never a self-pair, never an unordered pair twice
    assert set(pairs["a"]) | set(pairs["b"]) <= set(sub["number"])
    assert (pairs["a"] != pairs["b"]).all()
    assert not _unordered(pairs).duplicated().any()
    # texts are the incidents' texts
    texts = _texts(tiny_df)
    assert (pairs["text_a"] == texts.loc[pairs["a"]].to_numpy()).all()
    assert (pairs["text_b"] == texts.loc[pairs["b"]].to_numpy()).all()


def test_label_pair_set_caps_cells_and_is_deterministic(tiny_df: pd.DataFrame) -> None:
    texts = _texts(tiny_df)
    cfg = PairSetConfig(n_per_band=5, partial_share=0.4)
    pairs = label_pair_set(tiny_df, texts, LABELS, cfg)
    cells = pairs[pairs["label"].notna()].groupby(["label", "band"]).size()
    assert (cells <= 5).all()
    assert (pairs["band"] == "partial").sum() <= int(5 * 3 * 0.4)
    again = label_pair_set(tiny_df, texts, LABELS, cfg)
    pd.testing.assert_frame_equal(pairs, again)
    other = label_pair_set(tiny_df, texts, LABELS, PairSetConfig(n_per_band=5, seed=1))
    assert not _unordered(other).equals(_unordered(pairs))


def test_label_pair_set_single_level_has_no_partials(tiny_df: pd.DataFrame) -> None:
    pairs = label_pair_set(tiny_df, _texts(tiny_df), ["category"], PairSetConfig(n_per_band=20))
    assert pairs["label"].notna().all()
    assert set(pairs["grade"]) == {0, 1}
    assert ((pairs["grade"] == 1) == (pairs["label"] == 1)).all()


def test_label_pair_set_too_few_incidents(tiny_df: pd.DataFrame) -> None:
    with pytest.raises(ItsmError, match="only 3 labelled incidents"):
        label_pair_set(tiny_df.head(3), _texts(tiny_df), LABELS)
    unlabelled = tiny_df.assign(category=pd.NA)
    with pytest.raises(ItsmError, match="only 0 labelled"):
        label_pair_set(unlabelled, _texts(tiny_df), LABELS)


def test_label_pair_set_needs_both_classes(tiny_df: pd.DataFrame) -> None:
    one_label = tiny_df[(tiny_df["category"] == "Network") & (tiny_df["subcategory"] == "VPN")]
    with pytest.raises(ItsmError, match="only class"):
        label_pair_set(one_label, _texts(tiny_df), LABELS)


# ---------------------------------------------------------------------------- link pairs


def test_link_pair_set_positives_and_negatives(tiny_df: pd.DataFrame) -> None:
    links = _links(tiny_df)
    test_links = links[links["split"] == "test"]
    pairs = link_pair_set(list(tiny_df["number"]), test_links, _texts(tiny_df),
                          all_links=links)
    pos, neg = pairs[pairs["label"] == 1], pairs[pairs["label"] == 0]
    # every link of the split is a positive, and nothing else is
    assert set(_unordered(pos)) == set(_unordered(test_links))
    assert len(pos) == len(test_links)
    assert (pos["grade"] == 1).all() and (neg["grade"] == 0).all()
    # negatives are never linked (in any split, either direction) and never self-pairs
    linked = set(_unordered(links))
    assert not set(_unordered(neg)) & linked
    assert (neg["a"] != neg["b"]).all()
    # negatives start at a link end, and are about as many as the positives
    assert set(neg["a"]) <= set(test_links["a"]) | set(test_links["b"])
    assert len(pos) <= len(neg) <= len(pos) + 3
    assert pairs["label"].notna().all()


def test_link_pair_set_negative_pool(tiny_df: pd.DataFrame) -> None:
    links = _links(tiny_df)
    pool = list(tiny_df.loc[tiny_df["split"] == "test", "number"])
    pairs = link_pair_set(list(tiny_df["number"]), links[links["split"] == "test"],
                          _texts(tiny_df), all_links=links, negative_pool=pool)
    assert set(pairs.loc[pairs["label"] == 0, "b"]) <= set(pool)


def test_link_pair_set_no_duplicate_unordered_pairs(tiny_df: pd.DataFrame) -> None:
    links = _links(tiny_df)
    texts = _texts(tiny_df)
    dupes = {}
    for seed in range(30):  # several seeds hit both orientations of one negative pair
        pairs = link_pair_set(list(tiny_df["number"]), links, texts, PairSetConfig(seed=seed))
        key = _unordered(pairs)
        if key.duplicated().any():
            dupes[seed] = key[key.duplicated()].tolist()
    assert not dupes


def test_link_pair_set_without_links_raises(tiny_df: pd.DataFrame) -> None:
    empty = pd.DataFrame({"a": pd.Series(dtype=str), "b": pd.Series(dtype=str)})
    with pytest.raises(ItsmError, match="no links"):
        link_pair_set(list(tiny_df["number"]), empty, _texts(tiny_df))
