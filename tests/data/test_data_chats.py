"""The written chats (rounds 13 and after): whole conversations labelled afterwards, in three uses of their own."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.synth.chats import USES, ChatSheetError, export_chat_sheets
from pipeline.synth.review import COLUMNS, EXPORT_COLUMNS, SeedRecord, read_records, write_records
from pipeline.text import normalize

ROOT = Path(__file__).resolve().parents[2]
SHEETS = ROOT / "data" / "seeds" / "chats"
OUT = ROOT / "data" / "chats"


def _table(directory: Path, writer: str, rows: list[tuple[str, str, str]]) -> None:
    """rows: (text, first intent, second intent); settled as the review would settle them."""
    from pipeline.synth.review import settle

    records = []
    for n, (text, first, second) in enumerate(rows, 1):
        record = SeedRecord(f"{writer}-{n:04d}", writer, "pre_sales", "", text, first, 0, labeller="b", second_intent=second,
                            second_purchase_intent="0")
        records.append(settle(record))
    directory.mkdir(parents=True, exist_ok=True)
    write_records(records, directory / f"{writer}.tsv")


def test_each_use_leaves_out_texts_the_corpus_or_an_earlier_use_holds(tmp_path) -> None:
    _table(tmp_path / "train", "w1", [("好的", "affirm", "affirm"), ("那算了吧", "deny", "deny"), ("这个漏了", "complaint", "other")])
    _table(tmp_path / "calibration", "k1", [("那算了吧", "deny", "deny"), ("拍了能今天发吗", "shipping_time", "shipping_time")])
    _table(tmp_path / "intent_calibration", "k2", [("在吗 在吗", "greeting", "greeting"), ("好的", "affirm", "affirm"),
                                                   ("还没发货", "logistics", "logistics")])
    _table(tmp_path / "yardstick", "y1", [("拍了能今天发吗", "shipping_time", "shipping_time"), ("在吗 在吗", "greeting", "greeting"),
                                          ("有人吗", "greeting", "greeting"), ("怎么还没到", "logistics", "logistics")])
    figures = export_chat_sheets(tmp_path, tmp_path / "out", corpus_texts=["好的", "有人吗"])
    read = {use: pd.read_csv(tmp_path / "out" / f"{use}.csv", dtype=str, keep_default_na=False) for use in USES}
    assert read["train"]["text"].tolist() == ["那算了吧"]  # 好的: in the corpus; the complaint waits for a third label
    assert read["calibration"]["text"].tolist() == ["拍了能今天发吗"]  # 那算了吧 is trained on
    assert read["intent_calibration"]["text"].tolist() == ["在吗 在吗", "还没发货"]  # 好的: in the corpus
    assert read["yardstick"]["text"].tolist() == ["怎么还没到"]  # calibrated on (twice) or in the corpus
    assert list(read["yardstick"].columns) == EXPORT_COLUMNS
    assert figures["train"]["settled"] == 2 and figures["train"]["left_out_seen"] == 1
    assert figures["yardstick"]["left_out_seen"] == 3 and figures["yardstick"]["writers"] == ["y1"]


def test_a_writer_in_two_uses_an_unknown_use_or_an_empty_one_is_refused(tmp_path) -> None:
    sheets, out = tmp_path / "sheets", tmp_path / "out"
    _table(sheets / "train", "w1", [("好的", "affirm", "affirm")])
    _table(sheets / "yardstick", "w1", [("在吗", "greeting", "greeting")])
    with pytest.raises(ChatSheetError, match="w1"):
        export_chat_sheets(sheets, out, [])
    (sheets / "yardstick" / "w1.tsv").unlink()
    with pytest.raises(ChatSheetError, match="no settled message"):
        export_chat_sheets(sheets, out, [])
    (sheets / "yardstick").rmdir()
    (sheets / ".ipynb_checkpoints").mkdir()  # hidden folders are not uses
    assert set(export_chat_sheets(sheets, out, [])) == {"train"}
    _table(sheets / "test", "z1", [("在吗", "greeting", "greeting")])
    with pytest.raises(ChatSheetError, match="unknown"):
        export_chat_sheets(sheets, out, [])


def test_an_export_whose_folder_is_gone_is_removed_not_left_stale(tmp_path) -> None:
    sheets, out = tmp_path / "sheets", tmp_path / "out"
    _table(sheets / "train", "w1", [("好的", "affirm", "affirm")])
    _table(sheets / "yardstick", "y1", [("在吗", "greeting", "greeting")])
    export_chat_sheets(sheets, out, [])
    assert (out / "yardstick.csv").is_file()
    (sheets / "yardstick" / "y1.tsv").unlink()
    (sheets / "yardstick").rmdir()
    assert set(export_chat_sheets(sheets, out, [])) == {"train"}
    assert sorted(p.name for p in out.iterdir()) == ["train.csv"]


@pytest.fixture(scope="module")
def tables() -> dict[str, list[SeedRecord]]:
    return {use: [r for path in sorted((SHEETS / use).glob("*.tsv")) for r in read_records(path)] for use in USES}


def test_every_written_chat_was_labelled_blind_and_settled(tables) -> None:
    for use, records in tables.items():
        assert len(records) >= 900, use
        assert all(r.labeller and r.labeller != r.writer for r in records)
        assert {r.status for r in records} <= {"agreed", "adjudicated", "dropped"}, use
        assert all(r.adjudicator not in ("", r.writer, r.labeller) for r in records if r.status == "adjudicated")
    writers = Counter(r.writer for records in tables.values() for r in records)
    assert min(writers.values()) >= 400  # a writer is a whole sheet
    per_use = {use: {r.writer for r in records} for use, records in tables.items()}
    for k, use in enumerate(USES):
        for other in USES[k + 1:]:
            assert not (per_use[use] & per_use[other]), (use, other)


def test_tables_have_the_documented_columns() -> None:
    for path in SHEETS.glob("*/*.tsv"):
        assert path.read_text(encoding="utf-8").split("\n", 1)[0].split("\t") == COLUMNS


def test_the_committed_exports_are_what_the_build_writes(tmp_path) -> None:
    messages = pd.read_csv(ROOT / "data" / "messages.csv", dtype=str, keep_default_na=False)
    export_chat_sheets(SHEETS, tmp_path, messages["text"])
    for use in USES:
        assert (tmp_path / f"{use}.csv").read_bytes() == (OUT / f"{use}.csv").read_bytes(), f"rebuild: {use}.csv is stale"


def test_nothing_is_calibrated_or_measured_on_a_trained_text() -> None:
    trained = set(pd.read_csv(ROOT / "data" / "messages.csv", dtype=str, keep_default_na=False)["text"].map(normalize))
    trained |= set(pd.read_csv(OUT / "train.csv", dtype=str, keep_default_na=False)["text"].map(normalize))
    first, more = (pd.read_csv(OUT / f"{use}.csv", dtype=str, keep_default_na=False)["text"].map(normalize)
                   for use in ("calibration", "intent_calibration"))
    calibration = pd.concat([first, more])
    yardstick = pd.read_csv(OUT / "yardstick.csv", dtype=str, keep_default_na=False)["text"].map(normalize)
    assert not calibration.isin(trained).any() and not yardstick.isin(trained).any()
    assert not yardstick.isin(set(calibration)).any() and not more.isin(set(first)).any()


def test_the_default_config_trains_on_and_calibrates_with_them() -> None:
    paths = load_config().paths
    assert paths.extra_data == ["data/chats/train.csv"] and paths.calibration_data == "data/chats/calibration.csv"
    assert paths.intent_calibration_data == "data/chats/intent_calibration.csv"
    labels = set(pd.read_csv(ROOT / "data" / "messages.csv", dtype=str, keep_default_na=False, usecols=["intent"])["intent"])
    for use in USES:
        exported = pd.read_csv(OUT / f"{use}.csv", dtype=str, keep_default_na=False)
        assert set(exported["intent"]) <= labels and set(exported["purchase_intent"]) <= {"0", "1"}
        assert exported["intent"].nunique() >= 18, use


@pytest.mark.skipif(not (ROOT.parent / "shared" / "tools" / "realism.py").is_file(), reason="needs ../shared (real chats stay outside the project)")
def test_no_written_chat_copies_a_real_one(tables) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("realism", ROOT.parent / "shared" / "tools" / "realism.py")
    realism = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(realism)
    references = pd.read_csv(realism.POOL, dtype=str, keep_default_na=False)["text"].tolist()
    references += pd.read_csv(realism.DEV, dtype=str, keep_default_na=False)["text"].tolist()
    assert realism.copies([r.text for records in tables.values() for r in records], references) == []
