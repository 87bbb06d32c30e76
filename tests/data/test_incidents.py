"""Tests for itsm_core.data.incidents: reading tables, column mappings, incidents and links."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest
from conftest import FIXTURES  # noqa: E402

from itsm_core.core.errors import ItsmError
from itsm_core.data.incidents import (
    CANONICAL_COLUMNS,
    ColumnMapping,
    EmptyTextWarning,
    available_presets,
    check_links_known,
    load_incidents,
    load_links,
    read_table,
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _load_quietly(*args: object, **kwargs: object) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyTextWarning)
        return load_incidents(*args, **kwargs)


# -- ServiceNow preset -------------------------------------------------------------------


def test_servicenow_export_loads_to_canonical_schema_with_extras_kept() -> None:
    path = FIXTURES / "servicenow_export.csv"
    with pytest.warns(EmptyTextWarning, match=r"dropped 1 of 5") as rec:
        df = load_incidents(path, "servicenow")
    assert "servicenow_export.csv" in str(rec[0].message)
    assert list(df.columns) == [*CANONICAL_COLUMNS, "Urgency", "split"]
    assert list(df["number"]) == ["INC0010001", "INC0010002", "INC0010003", "INC0010004"]
    first = df.iloc[0]
    assert first["short_description"] == "Outlook crashes on start"
    # HTML and the mobile signature are cleaned away
    assert first["description"] == (
        "Outlook crashes on start. It closes right after the splash screen."
    )
    assert first["service"] == "Email"  # from the "Business service" alternative
    assert first["resolution_notes"] == "Repaired the Office install"  # from "Close notes"
    assert first["opened_at"] == "2024-01-03 09:12:00"
    assert first["Urgency"] == "2 - Medium"  # extra column kept unchanged
    assert df.loc[1, "description"] == "Users in the finance team lose VPN & have to re-login."
    # label columns: "N/A" / blank become NA; words containing "nan" survive
    assert pd.isna(df.loc[3, "category"]) and pd.isna(df.loc[3, "subcategory"])
    assert pd.isna(df.loc[2, "service"])
    assert "maintenance" in df.loc[3, "short_description"]
    assert df.loc[3, "description"].startswith("Nancy asked")
    assert list(df["split"]) == ["train", "train", "validation", "test"]
    assert df.attrs["source"] == str(path)
    assert df.attrs["dropped_empty"] == 1
    assert df.attrs["columns_used"]["service"] == "Business service"
    assert all(isinstance(v, str) for v in df["number"])


def test_preset_optional_columns_may_be_absent(tmp_path: Path) -> None:
    path = _write(tmp_path / "min.csv", "Number,Short description\nINC1,Mail down\nINC2,VPN\n")
    df = load_incidents(path, "servicenow")
    assert list(df["short_description"]) == ["Mail down", "VPN"]
    for col in ("description", "category", "service", "opened_at"):
        assert df[col].isna().all()


def test_preset_falls_back_to_sys_names(tmp_path: Path) -> None:
    path = _write(tmp_path / "sys.csv", "number,short_description,close_notes\nINC9,Disk,Freed\n")
    df = load_incidents(path, "servicenow")
    assert df.loc[0, "number"] == "INC9" and df.loc[0, "resolution_notes"] == "Freed"


def test_unknown_preset_lists_available() -> None:
    assert "servicenow" in available_presets()
    with pytest.raises(ItsmError) as exc:
        ColumnMapping.preset("jira")
    assert "'jira'" in str(exc.value) and "servicenow" in str(exc.value)


# -- mapping resolution and custom JSON mappings -----------------------------------------


def test_resolve_mapping_specs() -> None:
    assert ColumnMapping.resolve(None).origin == "identity mapping"
    assert not ColumnMapping.resolve(None).strict
    preset = ColumnMapping.resolve("servicenow")
    assert preset.columns["service"][:2] == ["Service", "Business service"]
    assert not preset.strict
    custom = ColumnMapping.resolve(FIXTURES / "custom_mapping.json")
    assert custom.strict and custom.columns["number"] == "Ticket ID"
    assert ColumnMapping.resolve(custom) is custom
    with pytest.raises(ItsmError, match="neither a preset"):
        ColumnMapping.resolve("nonsense")


def test_identity_mapping_matches_headers_loosely(tmp_path: Path) -> None:
    path = _write(tmp_path / "loose.csv", "Number,Short Description,SubCategory\nINC1,Mail,Exch\n")
    df = load_incidents(path)
    assert df.loc[0, "short_description"] == "Mail"
    assert df.loc[0, "subcategory"] == "Exch"
    assert pd.isna(df.loc[0, "category"])
    assert list(df.columns) == list(CANONICAL_COLUMNS)


def test_json_mapping_for_custom_headers() -> None:
    df = load_incidents(FIXTURES / "custom_headers.csv", FIXTURES / "custom_mapping.json")
    assert list(df["number"]) == ["T-1", "T-2", "T-3"]
    assert df.loc[1, "short_description"] == "Laptop will not boot"
    assert df.loc[1, "description"] == "Black screen after BIOS update"
    assert df.loc[1, "category"] == "Hardware"
    assert df.loc[1, "assignment_group"] == "Field Services"  # second alternative "Team"
    assert list(df.columns) == [*CANONICAL_COLUMNS, "Priority"]


def test_malformed_mapping_json_names_file_line_and_fix() -> None:
    with pytest.raises(ItsmError) as exc:
        load_incidents(FIXTURES / "custom_headers.csv", FIXTURES / "malformed_mapping.json")
    msg = str(exc.value)
    assert "malformed_mapping.json" in msg
    assert "line 4" in msg
    assert "fix the JSON syntax" in msg


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('["Ticket ID"]', "must be a JSON object"),
        ('{"number": "Ticket ID", "ticket_title": "Title"}', "unknown canonical column"),
        ('{"number": 5}', "must be a header name"),
        ("{}", "maps no columns"),
    ],
)
def test_invalid_mapping_files(tmp_path: Path, content: str, expected: str) -> None:
    path = _write(tmp_path / "bad_mapping.json", content)
    with pytest.raises(ItsmError) as exc:
        ColumnMapping.from_json(path)
    assert expected in str(exc.value)
    assert "bad_mapping.json" in str(exc.value)
    assert "->" in str(exc.value)  # a fix is given


def test_missing_mapping_file() -> None:
    with pytest.raises(ItsmError, match="not found"):
        ColumnMapping.from_json(FIXTURES / "no_such_mapping.json")


def test_missing_mapped_column_lists_what_exists(tmp_path: Path) -> None:
    mapping = _write(
        tmp_path / "m.json",
        json.dumps({"number": "Ticket ID", "short_description": "Title", "category": "Kind"}),
    )
    with pytest.raises(ItsmError) as exc:
        load_incidents(FIXTURES / "custom_headers.csv", mapping)
    msg = str(exc.value)
    assert "custom_headers.csv" in msg
    assert "category <- 'Kind'" in msg
    for header in ("Ticket ID", "Title", "Details", "Type", "Team", "Priority"):
        assert f"'{header}'" in msg
    assert "--columns mapping.json" in msg


def test_missing_number_column_with_identity_mapping() -> None:
    with pytest.raises(ItsmError) as exc:
        load_incidents(FIXTURES / "custom_headers.csv")
    msg = str(exc.value)
    assert "incident-number column" in msg and "'Ticket ID'" in msg and "--columns" in msg


# -- incident checks ---------------------------------------------------------------------


def test_duplicate_numbers_are_listed_with_counts() -> None:
    with pytest.raises(ItsmError) as exc:
        load_incidents(FIXTURES / "duplicate_numbers.csv")
    msg = str(exc.value)
    assert "duplicate_numbers.csv" in msg
    assert "'INC1' (3x)" in msg and "'INC2' (2x)" in msg
    assert "INC3" not in msg
    assert "de-duplicate" in msg


def test_blank_numbers_are_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "blank_num.csv", "number,short_description\nINC1,a\n,b\nN/A,c\n")
    with pytest.raises(ItsmError) as exc:
        load_incidents(path)
    assert "2 incident(s) have no number" in str(exc.value)
    assert "blank_num.csv" in str(exc.value)


def test_all_blank_text_is_an_error() -> None:
    with pytest.raises(ItsmError) as exc:
        load_incidents(FIXTURES / "blank_text.csv")
    msg = str(exc.value)
    assert "blank_text.csv" in msg and "all 3 incident(s) have empty text" in msg
    assert "--text-fields" in msg


def test_some_blank_text_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "some_blank.csv",
        "number,short_description,description\nINC1,Mail down,\nINC2,N/A,nan\nINC3,,Disk full\n",
    )
    with pytest.warns(EmptyTextWarning, match=r"some_blank\.csv: dropped 1 of 3"):
        df = load_incidents(path)
    assert list(df["number"]) == ["INC1", "INC3"]
    assert list(df.index) == [0, 1]
    assert df.attrs["dropped_empty"] == 1
    assert df.loc[0, "description"] == ""  # present text columns hold "" rather than NA


def test_require_text_false_keeps_every_row() -> None:
    df = load_incidents(FIXTURES / "blank_text.csv", require_text=False)
    assert len(df) == 3 and df.attrs["dropped_empty"] == 0


def test_text_fields_decide_what_is_empty(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "notes.csv",
        "number,short_description,resolution_notes\nINC1,Mail down,\nINC2,,Rebooted\n",
    )
    with pytest.warns(EmptyTextWarning, match=r"\(resolution_notes\)"):
        df = load_incidents(path, text_fields=["resolution_notes"], require_text=True)
    assert list(df["number"]) == ["INC2"]
    with pytest.raises(ItsmError, match="neither canonical columns nor columns of the file"):
        load_incidents(path, text_fields=["work_notes"])


def test_text_na_is_not_turned_into_nan_in_extra_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "na.csv", "number,short_description,region\nINC1,Mail,NA\n")
    df = load_incidents(path)
    assert df.loc[0, "region"] == "NA"  # North America, not a missing value


def test_split_values_are_normalised_and_validated(tmp_path: Path) -> None:
    ok = _write(
        tmp_path / "ok.csv", "number,short_description,Split\n1,a,TRAIN\n2,b,dev\n3,c,Test\n"
    )
    assert list(load_incidents(ok)["split"]) == ["train", "validation", "test"]
    bad = _write(tmp_path / "bad.csv", "number,short_description,split\n1,a,train\n2,b,holdout\n")
    with pytest.raises(ItsmError) as exc:
        load_incidents(bad)
    assert "'holdout'" in str(exc.value) and "bad.csv" in str(exc.value)
    assert "validation" in str(exc.value)


# -- file formats and read errors --------------------------------------------------------


def test_cp1252_file_gives_encoding_fix_and_loads_with_encoding() -> None:
    path = FIXTURES / "cp1252.csv"
    with pytest.raises(ItsmError) as exc:
        load_incidents(path)
    msg = str(exc.value)
    assert "cp1252.csv" in msg
    assert "byte offset 45" in msg and "line 2" in msg
    assert 'encoding="cp1252"' in msg and "--encoding" in msg
    df = load_incidents(path, encoding="cp1252")
    assert df.loc[0, "short_description"] == "Café printer offline"
    assert df.loc[0, "description"] == "User reports \u201cpaper jam\u201d again"


def test_unknown_encoding_name(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.csv", "number,short_description\n1,a\n")
    with pytest.raises(ItsmError, match="unknown text encoding"):
        read_table(path, encoding="klingon")


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffnumber,short_description\nINC1,Café\n".encode())
    df = load_incidents(path)
    assert df.loc[0, "number"] == "INC1" and df.loc[0, "short_description"] == "Café"


def test_malformed_json_reports_line_and_column() -> None:
    with pytest.raises(ItsmError) as exc:
        load_incidents(FIXTURES / "malformed.json")
    msg = str(exc.value)
    assert "malformed.json" in msg and "line 3" in msg and "column" in msg
    assert "fix the JSON syntax" in msg


def test_broken_csv_reports_parser_message() -> None:
    with pytest.raises(ItsmError) as exc:
        load_incidents(FIXTURES / "broken_quote.csv")
    msg = str(exc.value)
    assert "broken_quote.csv" in msg and "malformed CSV" in msg
    assert "EOF inside string" in msg
    assert "unterminated quote" in msg


def test_json_records_wrapper() -> None:
    df = load_incidents(FIXTURES / "incidents_records.json")
    assert list(df["number"]) == ["INC1", "INC2"]
    assert df.loc[1, "description"] == ""


def test_jsonl_loads_with_numeric_ids_and_nulls() -> None:
    df = load_incidents(FIXTURES / "incidents.jsonl")
    assert list(df["number"]) == ["INC1", "INC2", "3"]
    assert df.loc[1, "description"] == ""
    assert pd.isna(df.loc[2, "category"])


def test_jsonl_malformed_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.jsonl", '{"number": "1", "short_description": "a"}\n{oops}\n')
    with pytest.raises(ItsmError, match=r"bad\.jsonl: malformed JSON on line 2"):
        load_incidents(path)


def test_parquet_round_trip(tmp_path: Path) -> None:
    from_csv = _load_quietly(FIXTURES / "servicenow_export.csv", "servicenow")
    path = tmp_path / "incidents.parquet"
    from_csv.to_parquet(path, index=False)
    back = load_incidents(path)
    assert back.attrs["source"] == str(path)
    pd.testing.assert_frame_equal(
        back[list(CANONICAL_COLUMNS) + ["split"]],
        from_csv[list(CANONICAL_COLUMNS) + ["split"]],
        check_dtype=False,
    )


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("data.xlsx", "x", "unsupported file type '.xlsx'"),
        ("empty.csv", "", "the file is empty"),
        ("header_only.csv", "number,short_description\n", "no data rows"),
        ("object.json", '{"rows": []}', "none of the keys"),
        ("bad.parquet", "not parquet", "cannot read the Parquet file"),
    ],
)
def test_read_errors_name_the_file(tmp_path: Path, name: str, content: str, expected: str) -> None:
    path = _write(tmp_path / name, content)
    with pytest.raises(ItsmError) as exc:
        read_table(path)
    assert expected in str(exc.value)
    assert name in str(exc.value)
    assert "->" in str(exc.value)


def test_missing_file() -> None:
    with pytest.raises(ItsmError, match=r"nope\.csv: file not found"):
        load_incidents(FIXTURES / "nope.csv")


def test_tsv_is_read(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.tsv", "number\tshort_description\nINC1\tMail, calendar down\n")
    assert load_incidents(path).loc[0, "short_description"] == "Mail, calendar down"


# -- links -------------------------------------------------------------------------------


def test_load_links_explodes_multi_id_cells_and_dedups_symmetric_pairs() -> None:
    links = load_links(FIXTURES / "links.csv")
    assert list(links.columns) == ["a", "b", "split"]
    pairs = list(zip(links["a"], links["b"], links["split"]))
    assert pairs == [
        ("INC1", "INC2", "train"),  # (INC2, INC1) dropped as its mirror
        ("INC3", "INC4", "test"),
        ("INC3", "INC5", "test"),
        ("INC3", "INC6", "test"),
    ]  # INC7-INC7 self-link and the blank INC8 row are dropped
    assert links.attrs["source"].endswith("links.csv")


def test_load_links_without_split_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "l.csv", "x,y\nA,B\nB,C;A\n")
    links = load_links(path)
    assert list(links.columns) == ["a", "b"]
    assert list(zip(links["a"], links["b"])) == [("A", "B"), ("B", "C")]


def test_load_links_needs_two_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "one.csv", "incident\nINC1\n")
    with pytest.raises(ItsmError) as exc:
        load_links(path)
    assert "one.csv" in str(exc.value) and "two columns" in str(exc.value)


def test_load_links_with_only_self_links(tmp_path: Path) -> None:
    path = _write(tmp_path / "self.csv", "a,b\nINC1,INC1\n")
    with pytest.raises(ItsmError, match="no pair of distinct incident numbers"):
        load_links(path)


def test_unknown_link_ids_are_listed() -> None:
    incidents = load_incidents(FIXTURES / "incidents.jsonl")  # INC1, INC2, 3
    links = load_links(FIXTURES / "links.csv")
    with pytest.raises(ItsmError) as exc:
        check_links_known(links, incidents)
    msg = str(exc.value)
    assert "links.csv" in msg
    assert "4 incident id(s)" in msg  # INC3, INC4, INC5, INC6
    assert "'INC3'" in msg and "'INC6'" in msg and "'INC1'" not in msg
    assert "`number` column" in msg


def test_known_link_ids_pass(tmp_path: Path) -> None:
    incidents = load_incidents(FIXTURES / "incidents.jsonl")
    links = load_links(_write(tmp_path / "ok.csv", "a,b\nINC1,INC2;3\n"))
    assert check_links_known(links, incidents) is None
