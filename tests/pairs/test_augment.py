"""Tests for itsm_core.pairs.augment: word-level methods, protection, pair expansion, CLI."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from itsm_core.cli.main import app
from itsm_core.core.errors import ItsmError
from itsm_core.pairs import training as pairs_mod
from itsm_core.pairs.augment import (
    AugmentConfig,
    adjacent_swap,
    augment_pairs,
    augment_text,
    balance_report,
    class_balance,
    protected_mask,
    random_deletion,
    word_duplication,
)

_SYLLABLES = ("ka", "lo", "mi", "pu", "re", "sa", "te", "vu", "zo", "bi")
# 1000 distinct, unprotected filler words ("kakaka", "kakalo", ...)
FILLER = ["".join(t) for t in itertools.product(_SYLLABLES, repeat=3)]

_TERMS = [
    "Outlook", "fails", "0x80070005", "ERR_CONNECTION_RESET", "HTTP 500", "E1234",
    "KB123456", "CVE-2024-1234", "not", "never", "cannot", "can't", "won't", "doesn't",
    "isn't", "unable", "without", "failed", "v2.3.1", "3.4.0", "vpn", "sap", "citrix",
    "windows", "teams", "hadoop", "zebra-cluster", "jira",
]
# every term between two unprotected filler words, so swaps have room next to them
PROTECTED_TEXT = " ".join(
    f"{FILLER[2 * i]} {FILLER[2 * i + 1]} {t}" for i, t in enumerate(_TERMS)
) + " kalo mipu"
PROTECTED_WORDS = [w for t in _TERMS for w in t.split()]


def _cfg(**kw) -> AugmentConfig:
    return AugmentConfig(protected_terms=("zebra-cluster",), **kw)


def _pairs(n: int = 20, n_words: int = 15, labels: int = 2) -> pd.DataFrame:
    rows = []
    for i in range(n):
        words = FILLER[i * n_words:(i + 1) * n_words]
        rows.append({
            "anchor": " ".join(words),
            "positive": " ".join(reversed(words)),
            "negative": np.nan if i % 2 else "kaka lolo mimi pupu",
            "label": i % labels,
            "phase": ("easy", "medium", "hard")[i % 3],
            "source": "unit",
            "anchor_id": f"INC{i:04d}",
            "positive_id": f"INC{i + 100:04d}",
            "negative_id": None if i % 2 else f"INC{i + 200:04d}",
        })
    df = pd.DataFrame(rows)
    df.attrs["meta"] = {"dataset": "unit"}
    return df


# -- protection ----------------------------------------------------------------------------


def test_protected_mask_covers_codes_negations_versions_products_and_user_terms() -> None:
    words = PROTECTED_TEXT.split()
    mask = protected_mask(words, _cfg().regex())
    protected = [w for w, m in zip(words, mask) if m]
    assert protected == PROTECTED_WORDS
    # the user term is protected only because it was supplied
    default_mask = protected_mask(words, AugmentConfig().regex())
    assert not default_mask[words.index("zebra-cluster")]
    # ordinary words and words merely containing a negation/product are not protected
    ordinary = ["nothing", "note", "notify", "exchanged", "user_name", "server", "printer"]
    assert not any(protected_mask(ordinary, _cfg().regex()))


def test_protected_mask_handles_punctuation_and_case() -> None:
    words = ["(0x80070005),", "OUTLOOK.", "NOT"]
    assert protected_mask(words, _cfg().regex()) == [True, True, True]


@pytest.mark.parametrize("seed", range(20))
def test_deletion_never_removes_protected_words(seed: int) -> None:
    words = PROTECTED_TEXT.split()
    mask = protected_mask(words, _cfg().regex())
    out = random_deletion(words, 0.9, np.random.default_rng(seed), mask)
    assert [w for w in out if w in PROTECTED_WORDS] == PROTECTED_WORDS  # all, in order
    assert len(out) < len(words)  # but unprotected words did go


@pytest.mark.parametrize("seed", range(20))
def test_swap_never_moves_protected_words(seed: int) -> None:
    words = PROTECTED_TEXT.split()
    mask = protected_mask(words, _cfg().regex())
    out = adjacent_swap(words, 50, np.random.default_rng(seed), mask)
    assert sorted(out) == sorted(words)
    for i, (w, prot) in enumerate(zip(words, mask)):
        if prot:
            assert out[i] == w
    assert out != words


@pytest.mark.parametrize("seed", range(10))
def test_duplication_leaves_protected_words_alone(seed: int) -> None:
    words = PROTECTED_TEXT.split()
    mask = protected_mask(words, _cfg().regex())
    out = word_duplication(words, 0.9, np.random.default_rng(seed), mask)
    for w in PROTECTED_WORDS:
        assert out.count(w) == words.count(w)
    assert len(out) > len(words)


@pytest.mark.parametrize("method", ["deletion", "swap", "duplication"])
def test_augment_text_keeps_protected_terms_for_every_method(method: str) -> None:
    cfg = _cfg(methods=(method,), deletion_p=0.8, swap_rate=0.5, duplication_p=0.8)
    rng = np.random.default_rng(3)
    for _ in range(10):
        out = augment_text(PROTECTED_TEXT, cfg, rng).split()
        assert [w for w in out if w in PROTECTED_WORDS] == PROTECTED_WORDS


# -- rates and edge cases -----------------------------------------------------------------


def test_deletion_rate_is_about_p_on_long_texts() -> None:
    rng = np.random.default_rng(0)
    removed = [1000 - len(random_deletion(FILLER, 0.1, rng)) for _ in range(5)]
    assert 70 <= np.mean(removed) <= 130


def test_duplication_rate_is_about_p_on_long_texts() -> None:
    rng = np.random.default_rng(0)
    added = [len(word_duplication(FILLER, 0.1, rng)) - 1000 for _ in range(5)]
    assert 70 <= np.mean(added) <= 130


def test_swap_count_follows_swap_rate() -> None:
    cfg = _cfg(methods=("swap",))
    out = augment_text(" ".join(FILLER), cfg, np.random.default_rng(0)).split()
    assert sorted(out) == sorted(FILLER)  # a permutation: nothing lost or added
    moved = sum(a != b for a, b in zip(out, FILLER))
    # 100 swaps (0.1 * 1000) move at most 200 words; overlapping swaps may undo some
    assert 100 <= moved <= 200


def test_deletion_never_returns_empty() -> None:
    rng = np.random.default_rng(1)
    for n in (1, 2, 5):
        out = random_deletion(FILLER[:n], 1.0, rng)
        assert len(out) == 1 and out[0] in FILLER[:n]
    assert random_deletion([], 0.5, rng) == []


def test_augment_text_with_everything_deleted_keeps_a_word() -> None:
    cfg = _cfg(methods=("deletion",), deletion_p=1.0)
    out = augment_text("kaka lolo mimi pupu", cfg, np.random.default_rng(0))
    assert len(out.split()) == 1


def test_short_texts_are_left_intact() -> None:
    cfg = _cfg(min_words=3, deletion_p=1.0, duplication_p=1.0)
    assert augment_text("kaka lolo", cfg, np.random.default_rng(0)) == "kaka lolo"


def test_augment_text_is_deterministic_with_a_seed() -> None:
    text = " ".join(FILLER[:40])
    a = [augment_text(text, _cfg(), np.random.default_rng(7)) for _ in range(3)]
    assert len(set(a)) == 1 and a[0] != text
    others = {augment_text(text, _cfg(), np.random.default_rng(s)) for s in range(10)}
    assert len(others) > 1


def test_bad_config_is_a_user_error() -> None:
    with pytest.raises(ItsmError, match="unknown or no augmentation method"):
        AugmentConfig(methods=("deletion", "shuffle"))
    with pytest.raises(ItsmError, match="augment_side"):
        AugmentConfig(augment_side="negative")
    with pytest.raises(ItsmError, match="deletion_p"):
        AugmentConfig(deletion_p=1.5)
    with pytest.raises(ItsmError, match="invalid protected pattern"):
        AugmentConfig(protected_patterns=("(unclosed",))
    assert AugmentConfig(methods="swap,deletion").methods == ("swap", "deletion")


# -- pair tables ---------------------------------------------------------------------------


def test_augment_pairs_is_deterministic_given_seed() -> None:
    df = _pairs()
    a, b = augment_pairs(df, _cfg(seed=5)), augment_pairs(df, _cfg(seed=5))
    pd.testing.assert_frame_equal(a, b)
    c = augment_pairs(df, _cfg(seed=6))
    assert not a["anchor"].equals(c["anchor"])


@pytest.mark.parametrize("factor,expected", [(0.5, 10), (1.0, 20), (2.0, 40)])
def test_expansion_factor_sets_number_of_added_rows(factor: float, expected: int) -> None:
    df = _pairs(n=20)
    out = augment_pairs(df, _cfg(expansion_factor=factor))
    added = int(out["augmented"].sum())
    assert abs(added - expected) <= 1
    assert len(out) == len(df) + added
    assert out.attrs["meta"]["augmentation"]["n_added"] == added
    assert out.attrs["meta"]["dataset"] == "unit"  # input metadata kept
    if factor == 0.5:  # half the pairs get one copy, none gets two
        per_pair = out[out["augmented"]].groupby("anchor_id").size()
        assert per_pair.max() == 1


def test_augmented_rows_keep_ids_label_phase_source_and_change_only_the_anchor() -> None:
    df = _pairs()
    out = augment_pairs(df, _cfg())
    orig, aug = out[~out["augmented"]], out[out["augmented"]]
    pd.testing.assert_frame_equal(orig[df.columns].reset_index(drop=True), df)
    assert orig["augment_method"].isna().all()
    assert set(aug["augment_method"]) <= {"deletion", "swap", "duplication"}
    by_id = df.set_index("anchor_id")
    for _, row in aug.iterrows():
        src = by_id.loc[row["anchor_id"]]
        for col in ("label", "phase", "source", "positive_id", "negative_id", "positive"):
            assert row[col] == src[col] or (pd.isna(row[col]) and pd.isna(src[col]))
        assert row["anchor"] != src["anchor"]
    assert out["label"].dtype == df["label"].dtype


def test_side_positive_and_both() -> None:
    df = _pairs()
    pos = augment_pairs(df, _cfg(augment_side="positive"))
    aug = pos[pos["augmented"]]
    assert aug["anchor"].isin(df["anchor"]).all()
    assert not aug["positive"].isin(df["positive"]).any()
    both = augment_pairs(df, _cfg(augment_side="both"))
    aug = both[both["augmented"]]
    assert aug["augment_method"].str.contains(r"\+").all()
    assert (~aug["anchor"].isin(df["anchor"])).sum() > 0
    assert (~aug["positive"].isin(df["positive"])).sum() > 0


def test_copies_identical_to_their_original_are_dropped() -> None:
    df = _pairs(n=6, n_words=2)  # shorter than min_words: nothing can change
    out = augment_pairs(df, _cfg(expansion_factor=2.0))
    assert not out["augmented"].any()
    assert len(out) == len(df)
    assert out.attrs["meta"]["augmentation"]["n_dropped_identical"] == 12


@pytest.mark.parametrize("value", ["validation", "test", None])
def test_non_train_split_is_refused(value: str | None) -> None:
    df = _pairs().assign(split="train")
    df.loc[3, "split"] = value
    with pytest.raises(ItsmError, match="training pairs only"):
        augment_pairs(df, _cfg())


def test_split_col_and_meta_split_are_checked() -> None:
    df = _pairs().assign(part="test")
    with pytest.raises(ItsmError, match="training pairs only"):
        augment_pairs(df, _cfg(), split_col="part")
    with pytest.raises(ItsmError, match="not a column"):
        augment_pairs(_pairs(), _cfg(), split_col="part")
    meta_test = _pairs()
    meta_test.attrs["meta"] = {"split": "validation"}
    with pytest.raises(ItsmError, match="training pairs only"):
        augment_pairs(meta_test, _cfg())
    ok = augment_pairs(_pairs().assign(split="train"), _cfg())
    assert ok["augmented"].any() and (ok["split"] == "train").all()


def test_already_augmented_table_is_refused() -> None:
    out = augment_pairs(_pairs(), _cfg())
    with pytest.raises(ItsmError, match="already holds augmented rows"):
        augment_pairs(out, _cfg())


# -- class balance -------------------------------------------------------------------------


def test_class_balance_and_report() -> None:
    df = _pairs(n=21, labels=3)
    bal = class_balance(df)
    assert list(bal.columns) == ["label", "n", "share"]
    assert bal["n"].sum() == len(df) and bal["share"].sum() == pytest.approx(1.0)
    out = augment_pairs(df, _cfg(expansion_factor=1.0))
    rep = balance_report(df, out)
    assert list(rep.columns) == ["label", "n_before", "share_before", "n_after", "share_after"]
    assert rep["n_before"].sum() == len(df) and rep["n_after"].sum() == len(out)
    assert rep["share_before"].sum() == pytest.approx(1.0)
    assert rep["share_after"].sum() == pytest.approx(1.0)
    assert (rep["n_after"] >= rep["n_before"]).all()
    # class_balance results are accepted too, and a class absent on one side counts 0
    rep2 = balance_report(bal, class_balance(df[df["label"] != 2]))
    assert rep2.loc[rep2["label"] == 2, "n_after"].item() == 0


def test_class_balance_needs_the_label_column() -> None:
    with pytest.raises(ItsmError, match="no 'cls' column"):
        class_balance(_pairs(), label_col="cls")


# -- CLI -----------------------------------------------------------------------------------


@pytest.fixture
def pair_io(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Parquet stand-ins for itsm_core.pairs.training.read_pair_file / write_pair_file."""
    written: dict = {}

    def read_pair_file(path):
        return pd.read_parquet(path)

    def write_pair_file(df, path, meta):
        from itsm_core.core.io import atomic_write_df

        written["meta"] = meta
        return atomic_write_df(path, df)

    monkeypatch.setattr(pairs_mod, "read_pair_file", read_pair_file, raising=False)
    monkeypatch.setattr(pairs_mod, "write_pair_file", write_pair_file, raising=False)
    return written


def test_cli_augment_writes_pairs_and_prints_balance(tmp_path: Path, pair_io: dict) -> None:
    src, dst = tmp_path / "pairs.parquet", tmp_path / "aug.parquet"
    _pairs(n=6).to_parquet(src, index=False)
    res = CliRunner().invoke(app, ["augment", "--pairs", str(src), "--out", str(dst),
                                   "--expansion-factor", "2", "--methods", "swap",
                                   "--protect", "kakaka", "--seed", "1"])
    assert res.exit_code == 0, res.output
    out = pd.read_parquet(dst)
    assert int(out["augmented"].sum()) == 12
    assert set(out.loc[out["augmented"], "augment_method"]) == {"swap"}
    assert "class balance" in res.output and "added 12 augmented rows" in res.output
    assert pair_io["meta"]["augmentation"]["config"]["protected_terms"] == ["kakaka"]


def test_cli_augment_refuses_to_overwrite(tmp_path: Path, pair_io: dict) -> None:
    src, dst = tmp_path / "pairs.parquet", tmp_path / "aug.parquet"
    _pairs(n=4).to_parquet(src, index=False)
    dst.write_text("earlier result")
    res = CliRunner().invoke(app, ["augment", "--pairs", str(src), "--out", str(dst)])
    assert res.exit_code == 2
    assert "refusing to overwrite" in res.output and "--out" in res.output
    assert dst.read_text() == "earlier result"


def test_cli_augment_refuses_non_train_split(tmp_path: Path, pair_io: dict) -> None:
    src, dst = tmp_path / "pairs.parquet", tmp_path / "aug.parquet"
    _pairs(n=4).assign(split="test").to_parquet(src, index=False)
    res = CliRunner().invoke(app, ["augment", "--pairs", str(src), "--out", str(dst)])
    assert res.exit_code == 2
    assert "training pairs only" in res.output
    assert not dst.exists()


def test_cli_augment_with_the_real_pair_file_functions(tmp_path: Path) -> None:
    if not (hasattr(pairs_mod, "read_pair_file") and hasattr(pairs_mod, "write_pair_file")):
        pytest.skip("itsm_core.pairs.training has no read_pair_file/write_pair_file yet")
    src, dst = tmp_path / "pairs.parquet", tmp_path / "aug.parquet"
    df = _pairs(n=6)
    pairs_mod.write_pair_file(df, src, df.attrs["meta"])
    res = CliRunner().invoke(app, ["augment", "--pairs", str(src), "--out", str(dst),
                                   "--expansion-factor", "0.5"])
    assert res.exit_code == 0, res.output
    back = pairs_mod.read_pair_file(dst)
    assert int(back["augmented"].sum()) == 3 and len(back) == 9
    assert back.attrs["meta"]["augmentation"]["n_added"] == 3
