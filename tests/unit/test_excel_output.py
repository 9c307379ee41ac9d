"""An Excel output (the labelling queue, the nudge list, predictions) holds buyer text as text."""

import pandas as pd
from openpyxl import load_workbook

from pipeline.tables import read_table, write_table_atomic


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
