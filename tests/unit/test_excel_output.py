"""An output opened in Excel (the labelling queue, the nudge list, predictions) holds buyer text as text."""

import codecs
import csv
import io

import pandas as pd
from openpyxl import load_workbook

from pipeline.jobs.select import QUEUE_COLUMNS, write_queue
from pipeline.data.tables import csv_bytes, read_table, write_table_atomic

LOOKS_LIKE_A_FORMULA = ['=HYPERLINK("http://x","点我领券")', "=1+1", "+86 138", "-_-", "@店长", "\t=1"]


def test_text_that_looks_like_a_formula_is_written_as_text(tmp_path):
    texts = ['=HYPERLINK("http://x","点我领券")', "=1+1", "+86 138", "@店长", "在吗"]
    path = tmp_path / "queue.xlsx"
    write_table_atomic(pd.DataFrame({"text": texts, "n": range(5)}), path)
    cells = [cell for (cell,) in load_workbook(path).active.iter_rows(min_row=2, max_col=1)]
    assert [c.data_type for c in cells] == ["s"] * 5
    frame, rejected = read_table(path)
    assert frame["text"].tolist() == texts and not rejected


def test_control_characters_do_not_lose_the_file(tmp_path):
    path = tmp_path / "out.xlsx"
    write_table_atomic(pd.DataFrame({"text": ["a\x07b", "正常"]}), path)
    frame, _ = read_table(path)
    assert frame["text"].tolist() == ["a\ufffdb", "正常"]


def test_a_csv_cell_excel_would_run_starts_with_an_apostrophe(tmp_path):
    texts = [*LOOKS_LIKE_A_FORMULA, "在吗", "1+1=2"]
    path = write_table_atomic(pd.DataFrame({"text": texts, "delta": [-1] * len(texts)}), tmp_path / "nudge.csv")
    raw = path.read_bytes()
    assert raw.startswith(codecs.BOM_UTF8)
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))[1:]
    assert [row[0] for row in rows] == ["'" + t for t in LOOKS_LIKE_A_FORMULA] + ["在吗", "1+1=2"]
    assert {row[1] for row in rows} == {"-1"}  # numbers are not text: left alone


def test_chunks_after_the_first_carry_no_header_and_no_bom():
    frame = pd.DataFrame({"text": ["=1+1"]})
    assert csv_bytes(frame, header=False) == "'=1+1\n".encode("utf-8")


def test_the_labelling_queue_goes_through_the_same_writer(tmp_path):
    queue = pd.DataFrame({column: [""] * 2 for column in QUEUE_COLUMNS})
    queue["text"] = ["=1+1", "在吗"]
    queue["guess_confidence"] = [0.4, 0.5]
    book = load_workbook(write_queue(queue, tmp_path / "queue.xlsx")).active
    header = [cell.value for cell in next(book.iter_rows(max_row=1))]
    cells = [row[header.index("text")] for row in book.iter_rows(min_row=2)]
    assert [c.value for c in cells] == ["=1+1", "在吗"] and {c.data_type for c in cells} == {"s"}
    rows = list(csv.DictReader(io.StringIO(write_queue(queue, tmp_path / "queue.csv").read_text("utf-8-sig"))))
    assert [r["text"] for r in rows] == ["'=1+1", "在吗"]
