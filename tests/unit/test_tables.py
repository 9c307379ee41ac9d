"""Exports arrive in GB18030, UTF-8 with or without BOM, UTF-16, as CSV, tab-separated text, JSONL or Parquet; CSV
outputs are written in UTF-8 with a BOM or the encoding asked for."""

import codecs
import json

import pandas as pd
import pytest

from pipeline.data.tables import TableError, detect_encoding, iter_table, read_table, write_table_atomic

ROWS = [("在吗 亲", "greeting"), ("七天无理由退货吗", "return_refund"), ("318204957263", "provide_info")]


def _csv_text() -> str:
    return "text,intent\n" + "".join(f"{t},{i}\n" for t, i in ROWS)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030", "gbk"])
def test_csv_encodings_read_identically(tmp_path, encoding):
    path = tmp_path / "m.csv"
    path.write_bytes(_csv_text().encode(encoding))
    frame, rejected = read_table(path)
    assert list(frame.columns) == ["text", "intent", "_line"]
    assert list(zip(frame["text"], frame["intent"])) == ROWS
    assert list(frame["_line"]) == list(range(1, len(ROWS) + 1))  # record numbers, as rejected rows are numbered
    assert rejected == []


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_utf16_with_its_bom_is_read_like_utf8(tmp_path, suffix):
    """Excel's "Unicode text" and many Windows exports: UTF-16 with a byte-order mark (little or big endian)."""
    rows = [("你好 在吗", "greeting"), ("多行\n文本", "other"), ("退款 [订单x]", "return_refund")]
    if suffix == ".csv":
        text = "text,intent\n" + "".join(f'"{t}",{i}\n' for t, i in rows) + "bad,x,extra\n"
    else:
        text = "".join(json.dumps({"text": t, "intent": i}, ensure_ascii=False) + "\n" for t, i in rows) + "{not json\n"
    for codec in ("utf-16", "utf-16-be"):
        path = tmp_path / f"m-{codec}{suffix}"
        path.write_bytes((b"\xfe\xff" if codec == "utf-16-be" else b"") + text.encode(codec))
        assert detect_encoding(path) == "utf-16"
        frame, rejected = read_table(path)
        assert list(zip(frame["text"], frame["intent"])) == rows and list(frame["_line"]) == [1, 2, 3]
        assert [r.row for r in rejected] == [4]


@pytest.mark.parametrize("chunk_rows", [1, 2, 100])
def test_rows_after_a_skipped_csv_line_keep_their_record_numbers(tmp_path, chunk_rows):
    """A line with the wrong field count is skipped by the parser: the rows after it were numbered by their
    position in the frame (one too low), so their quarantine rows named the wrong record."""
    path = tmp_path / "m.csv"
    path.write_text("text,intent\na,x\nb,x,extra\nc,x\nd,x,extra\ne,x\nf,x\n", encoding="utf-8")
    chunks = list(iter_table(path, chunk_rows))
    frame = pd.concat([chunk.frame for chunk in chunks], ignore_index=True)
    assert dict(zip(frame["text"], frame["_line"])) == {"a": 1, "c": 3, "e": 5, "f": 6}  # header excluded
    assert sorted(r.row for chunk in chunks for r in chunk.rejected) == [2, 4]


def test_gb18030_is_detected(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(_csv_text().encode("gb18030"))
    assert detect_encoding(path) == "gb18030"


def test_numeric_looking_text_stays_text(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(_csv_text(), encoding="utf-8")
    frame, _ = read_table(path)
    assert frame.loc[2, "text"] == "318204957263"


def test_bad_csv_rows_are_rejected_with_reason(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("text,intent\n好的,affirm\n坏,行,多\n在吗,greeting\n", encoding="utf-8")
    frame, rejected = read_table(path)
    assert len(frame) == 2 and len(rejected) == 1
    assert "expected 2 fields, found 3" in rejected[0].reason and rejected[0].raw == "坏,行,多"


def test_jsonl_bad_lines_are_rejected_with_line_numbers(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"text": "在吗", "intent": "greeting"}, ensure_ascii=False) + "\n{broken\n[1]\n", encoding="utf-8")
    frame, rejected = read_table(path)
    assert len(frame) == 1
    assert [r.row for r in rejected] == [2, 3]


def test_parquet_round_trip(tmp_path):
    path = tmp_path / "m.parquet"
    write_table_atomic(pd.DataFrame(ROWS, columns=["text", "intent"]), path)
    frame, _ = read_table(path)
    assert frame["text"].tolist() == [t for t, _ in ROWS]


def test_unsupported_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(TableError, match="unsupported"):
        read_table(tmp_path / "m.xlsx")
    with pytest.raises(TableError, match="not found"):
        read_table(tmp_path / "m.csv")


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "out.csv"
    write_table_atomic(pd.DataFrame({"a": [1]}), target)

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", explode)
    with pytest.raises(RuntimeError):
        write_table_atomic(pd.DataFrame({"a": [2]}), target)
    assert target.read_text(encoding="utf-8-sig") == "a\n1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_a_line_in_neither_encoding_is_rejected_not_the_whole_file(tmp_path):
    path = tmp_path / "m.csv"
    good = "text,intent\n在吗,greeting\n".encode("utf-8")
    gbk_line = "七天无理由退货吗,return_refund\n".encode("gb18030")
    path.write_bytes(good + gbk_line + b"\xff\xfe\xfa,other\n" + "好的,affirm\n".encode("utf-8"))
    frame, rejected = read_table(path)
    assert frame["text"].tolist() == ["在吗", "七天无理由退货吗", "好的"]
    assert [(r.row, r.reason) for r in rejected] == [(4, "bad encoding: neither UTF-8 nor GB18030")]


def test_gb18030_only_after_the_first_megabyte_is_read(tmp_path):
    path = tmp_path / "m.csv"
    head = "text,intent\n" + "在吗,greeting\n" * 120_000
    path.write_bytes(head.encode("utf-8") + "七天无理由退货吗,return_refund\n".encode("gb18030"))
    frame, rejected = read_table(path)
    assert frame["text"].iloc[-1] == "七天无理由退货吗" and rejected == []


def test_yes_no_cells_parse_the_same_one_at_a_time_and_as_a_column():
    import pandas as pd

    from pipeline.data.tables import parse_yes_no, parse_yes_no_column

    cells = ["1", "0", "是", "否", " TRUE ", "n", "", None, "maybe", "2", True, 1.0]
    parsed, blank = parse_yes_no_column(pd.Series(cells, dtype=object))
    one_at_a_time = [parse_yes_no(c) for c in cells]
    assert parsed.tolist() == [-1 if v is None else v for v in one_at_a_time]
    assert one_at_a_time == [1, 0, 1, 0, 1, 0, None, None, None, None, 1, 1]
    assert blank.tolist() == [False] * 6 + [True, True] + [False] * 4


def test_headers_map_through_aliases_and_explicit_pairs_and_ambiguity_is_an_error():
    import pytest

    from pipeline.config import load_config
    from pipeline.data.tables import ColumnNames, TableError

    names = load_config().columns.names()
    assert names.mapping(["会话 ID", "买家昵称", "Text", "备注"]) == {"会话 ID": "conversation_id", "买家昵称": "buyer_id", "Text": "text", "备注": "备注"}
    assert ColumnNames.from_settings(names.aliases, "备注=text").mapping(["备注", "x"]) == {"备注": "text", "x": "x"}
    with pytest.raises(TableError, match="both mean column 'text'"):
        names.mapping(["内容", "消息内容"])
    with pytest.raises(ValueError, match="HEADER=column"):
        load_config(overrides={"columns.map": "内容"})


def test_require_columns_reads_only_the_header(tmp_path):
    import pytest

    from pipeline.config import load_config
    from pipeline.data.tables import TableError, require_columns

    path = tmp_path / "export.csv"
    path.write_bytes("内容,时间\n在吗,2024/9/2 5:00\n".encode("gb18030"))
    names = load_config().columns.names()
    require_columns(path, ["text", "sent_at"], names)
    with pytest.raises(TableError, match=r"missing column\(s\) \['intent'\]"):
        require_columns(path, ["text", "intent"], names)


def test_excel_exports_read_like_csv_and_outputs_round_trip(tmp_path):
    """An .xlsx export (Chinese headers, an order number typed as a number, a date cell, an empty row)
    reads as the CSV would; an .xlsx output reads back; CSV outputs carry a BOM for Excel."""
    import datetime as dt

    from openpyxl import Workbook

    from pipeline.config import load_config
    from pipeline.data.tables import read_table

    book = Workbook()
    sheet = book.active
    sheet.append(["消息内容", "订单编号", "发送时间"])
    sheet.append(["在吗", 3848305783356712, dt.datetime(2024, 9, 2, 5, 0)])
    sheet.append([None, None, None])
    sheet.append(["包邮吗", "A-1", "2024/9/2 5:01", "stray"])
    path = tmp_path / "export.xlsx"
    book.save(path)
    frame, rejected = read_table(path, load_config().columns.names())
    assert frame["text"].tolist() == ["在吗"] and frame["订单编号"].tolist() == ["3848305783356712"]
    assert frame["sent_at"].tolist() == ["2024-09-02 05:00:00"] and frame["_line"].tolist() == [2]
    assert [r.row for r in rejected] == [4] and "4 cells for 3 columns" in rejected[0].reason
    out = tmp_path / "out.xlsx"
    write_table_atomic(pd.DataFrame({"text": ["在吗"], "intent": ["greeting"]}), out)
    assert read_table(out)[0][["text", "intent"]].values.tolist() == [["在吗", "greeting"]]
    csv_out = tmp_path / "out.csv"
    write_table_atomic(pd.DataFrame({"text": ["在吗"]}), csv_out)
    assert csv_out.read_bytes().startswith(b"\xef\xbb\xbf") and read_table(csv_out)[0]["text"].tolist() == ["在吗"]


def test_a_file_that_is_not_excel_is_a_clear_error(tmp_path):
    from pipeline.data.tables import TableError, read_table

    path = tmp_path / "fake.xlsx"
    path.write_text("text\n在吗\n", encoding="utf-8")
    with pytest.raises(TableError, match=r"fake\.xlsx: not a readable Excel"):
        read_table(path)


# --- CSV output encodings (--encoding) and tab-separated text exports (.tsv, .txt) -----------------------

# Chinese, a character beyond the BMP (GB18030's four-byte range) and a euro sign: GB18030 covers all of Unicode.
OUTPUT_ROWS = pd.DataFrame({"text": ["在吗 亲", "𠮷野家 €5 包邮吗", "=1+1"], "intent": ["greeting", "price_promo", "other"]})


def test_a_gb18030_csv_output_is_gb18030_not_utf8_and_reads_back_equal(tmp_path):
    """Old Excel and ERP imports expect the ANSI code page: the file decodes as GB18030, has no BOM, and
    our readers (which detect GB18030) give back the frame that was written."""
    path = tmp_path / "out.csv"
    write_table_atomic(OUTPUT_ROWS, path, csv_encoding="gb18030")
    data = path.read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    assert data.decode("gb18030").splitlines()[2] == "𠮷野家 €5 包邮吗,price_promo"
    assert detect_encoding(path) == "gb18030"
    frame, rejected = read_table(path)
    assert rejected == []
    assert frame["text"].tolist() == ["在吗 亲", "𠮷野家 €5 包邮吗", "'=1+1"]  # a formula stays defused
    assert frame["intent"].tolist() == OUTPUT_ROWS["intent"].tolist()
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # written through a temporary file and renamed


@pytest.mark.parametrize(("encoding", "start"), [(None, b"\xef\xbb\xbftext,intent"), ("utf-8-sig", b"\xef\xbb\xbftext,intent"),
                                                 ("utf-8", b"text,intent")])
def test_csv_output_is_utf8_with_its_bom_by_default(tmp_path, encoding, start):
    path = tmp_path / "out.csv"
    write_table_atomic(OUTPUT_ROWS, path, **({"csv_encoding": encoding} if encoding else {}))
    assert path.read_bytes().startswith(start)
    assert read_table(path)[0]["intent"].tolist() == OUTPUT_ROWS["intent"].tolist()


def test_csv_chunks_after_the_first_carry_no_second_bom():
    """The Spark engine streams a CSV chunk by chunk: only the first chunk may start with a BOM."""
    from pipeline.data.tables import csv_bytes

    assert csv_bytes(OUTPUT_ROWS, header=False, encoding="utf-8-sig").startswith("在吗".encode())
    assert csv_bytes(OUTPUT_ROWS, header=False, encoding="gb18030") == OUTPUT_ROWS.to_csv(index=False, header=False).replace(
        "=1+1", "'=1+1").encode("gb18030")


def test_an_unknown_output_encoding_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(TableError, match=r"unknown CSV encoding 'latin-1'; use one of utf-8-sig, gb18030, utf-8"):
        write_table_atomic(OUTPUT_ROWS, tmp_path / "out.csv", csv_encoding="latin-1")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".tsv", ".txt"])
def test_tab_separated_text_is_read_not_written(tmp_path, suffix):
    with pytest.raises(TableError, match=rf"unsupported output file type '\{suffix}' \(.tsv and .txt are read, not written\); use one of .csv"):
        write_table_atomic(OUTPUT_ROWS, tmp_path / f"out{suffix}")
    assert list(tmp_path.iterdir()) == []


# An export with the shop's own headers (columns.aliases) and, as line 3, a row with one field too many.
EXPORT_HEADERS = ["会话ID", "买家昵称", "店铺", "角色", "内容", "时间"]
EXPORT_LINES = [
    ["c1", "b1", "s1", "买家", "在吗 有货吗", "2024-05-01 10:00:00"],
    ["c1", "b1", "s1", "买家", "多", "一格", "2024-05-01 10:01:00"],
    ["c1", "b1", "s1", "客服", '"亲, 在的\t有货"', "2024-05-01 10:02:00"],  # quoted: a comma and a TAB inside
    ["c2", "b2", "s1", "买家", "𠮷 这个能便宜点吗", "2024-05-01 11:00:00"],
]


def _tab_separated(lines=EXPORT_LINES) -> str:
    return "\r\n".join("\t".join(fields) for fields in [EXPORT_HEADERS, *lines]) + "\r\n"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("unicode-text.txt", codecs.BOM_UTF16_LE + _tab_separated().encode("utf-16-le")),  # Excel: Save as Unicode Text
        ("export.tsv", _tab_separated().encode("utf-8")),
        ("export-bom.tsv", _tab_separated().encode("utf-8-sig")),
        ("export-gbk.txt", _tab_separated().encode("gb18030")),
        ("tabs-named.csv", _tab_separated().encode("utf-8")),  # the delimiter comes from the header, not the name
    ],
)
def test_tab_separated_exports_are_read_like_csv(tmp_path, name, data):
    """TAB-separated text in any encoding the CSV reader detects: the headers map through columns.aliases,
    and the malformed row is quarantined with its record number and reason, as in a CSV."""
    from pipeline.config import load_config
    from pipeline.data.tables import read_header, require_columns

    path = tmp_path / name
    path.write_bytes(data)
    names = load_config().columns.names()
    assert read_header(path) == EXPORT_HEADERS
    require_columns(path, ["conversation_id", "buyer_id", "shop_id", "role", "text", "sent_at"], names)
    frame, rejected = read_table(path, names)
    assert list(frame.columns) == ["conversation_id", "buyer_id", "shop_id", "role", "text", "sent_at", "_line"]
    assert frame["text"].tolist() == ["在吗 有货吗", "亲, 在的\t有货", "𠮷 这个能便宜点吗"]
    assert frame["_line"].tolist() == [1, 3, 4]
    assert [(r.row, r.reason) for r in rejected] == [(2, "expected 6 fields, found 7")]
    assert rejected[0].raw == "\t".join(EXPORT_LINES[1])


def test_a_comma_csv_with_a_tab_in_one_header_stays_comma_separated(tmp_path):
    from pipeline.data.tables import sniff_delimiter

    assert sniff_delimiter("会话ID\t内容\t时间\r\n") == "\t" and sniff_delimiter("text,intent\n") == ","
    path = tmp_path / "m.tsv"
    path.write_text("text\tnote,intent,group\n在吗,greeting,g1\n", encoding="utf-8")
    frame, rejected = read_table(path)
    assert list(frame.columns) == ["text\tnote", "intent", "group", "_line"] and rejected == []
