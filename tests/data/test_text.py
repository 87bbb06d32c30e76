"""Tests for itsm_core.data.text: cleaning, the one text builder, and the label-leakage guard."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from itsm_core.core.errors import ItsmError
from itsm_core.data import text as text_mod
from itsm_core.data.text import (
    BOILERPLATE_PATTERNS,
    LabelLeakageWarning,
    TextBuilder,
    check_label_leakage,
    clean_series,
    clean_text,
    truncate_words,
)

# -- null-likes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["nan", "NaN", " None ", "NULL", "n/a", "N/A", "NA", "na", "-", "<null>", "", "   "]
)
def test_null_like_values_become_empty(value: str) -> None:
    assert clean_text(value) == ""


@pytest.mark.parametrize("value", [None, float("nan"), np.nan, pd.NA, pd.NaT])
def test_missing_values_become_empty(value: object) -> None:
    assert clean_text(value) == ""


@pytest.mark.parametrize(
    "word",
    ["maintenance", "finance", "nano", "Nancy", "NaNo cluster", "banana", "Nan Goldin", "n/a-ish"],
)
def test_words_containing_null_markers_are_untouched(word: str) -> None:
    assert clean_text(word) == word


def test_null_markers_inside_a_sentence_are_kept() -> None:
    assert clean_text("Server says NaN in column B, value N/A") == (
        "Server says NaN in column B, value N/A"
    )


def test_numbers_are_stringified_and_integral_floats_lose_the_dot_zero() -> None:
    assert clean_text(12) == "12"
    assert clean_text(12.0) == "12"
    assert clean_text(np.int64(7)) == "7"
    assert clean_text(3.5) == "3.5"


# -- HTML, entities, whitespace ----------------------------------------------------------


def test_html_tags_become_spaces_and_entities_are_unescaped() -> None:
    raw = "Line one<br>Line two<p>Para &amp; more</p><b>bold</b>&nbsp;end &quot;q&quot;"
    assert clean_text(raw) == 'Line one Line two Para & more bold end "q"'


def test_non_html_angle_brackets_survive() -> None:
    assert clean_text("List<String> fails when a < b and c > d") == (
        "List<String> fails when a < b and c > d"
    )
    assert clean_text("Error &lt;TIMEOUT&gt; on job") == "Error <TIMEOUT> on job"


def test_script_style_and_comments_are_dropped() -> None:
    assert clean_text("<style>p {color: red}</style>Hello<!-- hidden --> world") == "Hello world"


def test_html_wrapped_null_like_becomes_empty() -> None:
    assert clean_text("<p>N/A</p>") == ""


def test_crlf_and_whitespace_are_collapsed() -> None:
    assert clean_text("  first line\r\nsecond\tline\r\n\r\n third\u00a0word \u200b ") == (
        "first line second line third word"
    )


# -- boilerplate -------------------------------------------------------------------------


def test_sent_from_my_iphone_line_is_removed() -> None:
    assert clean_text("Printer on floor 3 jams.\r\nSent from my iPhone") == (
        "Printer on floor 3 jams."
    )
    assert clean_text("VPN drops. Sent from my iPhone. Please help") == "VPN drops. Please help"


def test_original_message_and_everything_after_is_removed() -> None:
    raw = "Outlook crashes again.\n\n-----Original Message-----\nFrom: Bob\nSubject: crash"
    assert clean_text(raw) == "Outlook crashes again."


def test_confidentiality_disclaimer_paragraph_is_removed_but_next_paragraph_kept() -> None:
    raw = (
        "Disk full on srv01.\n\n"
        "This e-mail and any attachments are confidential and may be privileged. If you\n"
        "are not the intended recipient, delete it.\n\n"
        "Log attached."
    )
    assert clean_text(raw) == "Disk full on srv01. Log attached."


def test_cid_image_references_are_removed() -> None:
    assert clean_text("Screenshot: [cid:image001.png@01D9A1B2.3C4D5E60] shows error 5") == (
        "Screenshot: shows error 5"
    )


def test_boilerplate_removal_is_conservative() -> None:
    # ordinary incident text that mentions the trigger words must survive
    for keep in (
        "This message appears when I open confidential documents",
        "Emails sent from my account bounce",
        "Need the original message id for the mail trace",
    ):
        assert clean_text(keep) == keep


def test_boilerplate_patterns_are_user_extensible(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = re.compile(r"^Ticket created via portal\.?$", re.IGNORECASE | re.MULTILINE)
    monkeypatch.setattr(text_mod, "BOILERPLATE_PATTERNS", [*BOILERPLATE_PATTERNS, extra])
    assert clean_text("Monitor flickers\nTicket created via portal.") == "Monitor flickers"


def test_clean_series_matches_clean_text() -> None:
    values = ["a<br>b", None, "a<br>b", float("nan"), "N/A", 5]
    assert clean_series(values) == [clean_text(v) for v in values]


# -- TextBuilder -------------------------------------------------------------------------


def test_builder_joins_fields_in_order_and_skips_empties() -> None:
    row = {"short_description": "VPN drops", "description": "Every 10 minutes", "x": "ignored"}
    assert TextBuilder().build(row) == "VPN drops. Every 10 minutes"
    reordered = TextBuilder(fields=("description", "short_description"))
    assert reordered.build(row) == "Every 10 minutes. VPN drops"
    assert TextBuilder().build({"short_description": "N/A", "description": "Only this"}) == (
        "Only this"
    )
    assert TextBuilder().build({"short_description": "", "description": None}) == ""
    assert TextBuilder().build({"short_description": "No description key"}) == (
        "No description key"
    )


def test_builder_does_not_repeat_a_prefix_from_an_earlier_field() -> None:
    b = TextBuilder()
    row = {"short_description": "Printer broken", "description": "Printer broken. Error 5"}
    assert b.build(row) == "Printer broken. Error 5"
    assert b.build({"short_description": "Printer jam", "description": "printer jam"}) == (
        "Printer jam"
    )
    # only whole words count as a repeated prefix
    assert b.build({"short_description": "Print", "description": "Printer jam"}) == (
        "Print. Printer jam"
    )


def test_builder_avoids_doubled_punctuation() -> None:
    b = TextBuilder()
    assert b.build({"short_description": "Printer broken.", "description": "Paper jam"}) == (
        "Printer broken. Paper jam"
    )
    assert b.build({"short_description": "Why?", "description": "No idea"}) == "Why? No idea"
    assert TextBuilder(separator=" | ").build({"short_description": "a.", "description": "b"}) == (
        "a. | b"
    )


def test_builder_truncates_on_word_boundaries() -> None:
    row = {"short_description": "The quick brown fox", "description": "jumps over the dog"}
    assert TextBuilder(max_chars_per_field=12).build(row) == "The quick. jumps over"
    out = TextBuilder(max_chars=14).build(row)
    assert out == "The quick"
    assert len(out) <= 14
    assert truncate_words("Supercalifragilistic", 5) == "Super"  # one long word: hard cut
    assert truncate_words("short", 10) == "short"


def test_build_series_matches_build_and_keeps_index() -> None:
    df = pd.DataFrame(
        {
            "short_description": ["VPN drops", "N/A", "Disk <b>full</b>"],
            "description": ["VPN drops. Every hour", "Only description", None],
        },
        index=[10, 20, 30],
    )
    b = TextBuilder()
    s = b.build_series(df)
    assert list(s.index) == [10, 20, 30]
    assert list(s) == ["VPN drops. Every hour", "Only description", "Disk full"]
    assert list(s) == [b.build(r) for r in df.to_dict("records")]


def test_build_series_missing_field_names_it_and_lists_columns() -> None:
    df = pd.DataFrame({"title": ["x"], "body": ["y"]})
    df.attrs["source"] = "incidents.csv"
    with pytest.raises(ItsmError) as exc:
        TextBuilder().build_series(df)
    msg = str(exc.value)
    assert "short_description" in msg and "description" in msg
    assert "'title'" in msg and "'body'" in msg
    assert "incidents.csv" in msg
    assert "--text-fields" in msg


def test_builder_round_trips_through_dict_and_json() -> None:
    b = TextBuilder(fields=("description",), separator=" | ", max_chars_per_field=50, max_chars=90)
    d = json.loads(json.dumps(b.to_dict()))
    assert d["fields"] == ["description"]
    assert TextBuilder.from_dict(d) == b


def test_builder_rejects_bad_settings() -> None:
    with pytest.raises(ItsmError, match="unknown text-builder setting"):
        TextBuilder.from_dict({"fields": ["description"], "max_char": 10})
    with pytest.raises(ItsmError, match="positive integer"):
        TextBuilder(max_chars=0)
    with pytest.raises(ItsmError, match="non-empty"):
        TextBuilder(fields=())


def test_build_series_is_fast_enough_for_50k_rows() -> None:
    import time

    n = 50_000
    df = pd.DataFrame(
        {
            "short_description": [f"Printer {i % 500} jams" for i in range(n)],
            "description": [
                f"Printer {i % 500} jams. Tray {i} <br>Sent from my iPhone" for i in range(n)
            ],
        }
    )
    start = time.perf_counter()
    s = TextBuilder().build_series(df)
    assert time.perf_counter() - start < 10
    assert s.iloc[3] == "Printer 3 jams. Tray 3"


# -- leakage guard -----------------------------------------------------------------------


def test_leakage_guard_raises_naming_the_column_and_the_override() -> None:
    with pytest.raises(ItsmError) as exc:
        check_label_leakage(
            ["short_description", "category"], ["category", "subcategory"], allow=False
        )
    msg = str(exc.value)
    assert "'category'" in msg
    assert "copying the label" in msg
    assert "--allow-label-leakage" in msg
    assert "remove" in msg


def test_leakage_guard_matches_names_loosely() -> None:
    with pytest.raises(ItsmError, match="Sub Category"):
        check_label_leakage(["Sub Category"], ["sub_category"])


def test_leakage_guard_override_warns_instead() -> None:
    with pytest.warns(LabelLeakageWarning, match="category"):
        check_label_leakage(["description", "category"], ["category"], allow=True)


def test_leakage_guard_is_silent_without_overlap() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_label_leakage(["short_description", "description"], ["category"]) is None
