"""Corpus v2: the writer tables, their double labels, and what reaches the message table."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from pipeline.synth.review import (
    COLUMNS, EXPORT_COLUMNS, SeedRecord, agreement, apply_labels, kept_rows, read_records, settle, write_export,
)

ROOT = Path(__file__).resolve().parents[2]
TABLES = sorted((ROOT / "data" / "seeds" / "v2").glob("*.tsv"))
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="module")
def records() -> list[SeedRecord]:
    return [r for path in TABLES for r in read_records(path)]


def test_many_writers_each_with_their_own_table(records) -> None:
    writers = Counter(r.writer for r in records)
    assert len(writers) >= 8 and min(writers.values()) >= 400  # a writer is a whole sheet (450-1,500 seeds), never a handful
    for path in TABLES:
        assert {r.writer for r in read_records(path)} == {path.stem}
        assert all(r.id.startswith(f"{path.stem}-") for r in read_records(path))


def test_every_v2_seed_was_labelled_twice_and_settled(records) -> None:
    assert len(records) >= 13_000
    assert all(r.second_intent and r.second_purchase_intent in ("0", "1") and r.labeller for r in records)
    assert all(r.labeller != r.writer for r in records)
    assert {r.status for r in records} <= {"agreed", "adjudicated", "dropped"}
    for r in records:
        if r.status == "agreed":
            assert (r.intent, r.purchase_intent) == (r.first_intent, str(r.first_purchase_intent)) == (r.second_intent, r.second_purchase_intent)
        elif r.status == "adjudicated":
            assert r.third_intent and r.adjudicator not in ("", r.writer, r.labeller)
            votes = Counter([r.first_intent, r.second_intent, r.third_intent])
            assert votes[r.intent] >= 2
        else:
            assert not r.intent


def test_kept_seeds_reach_the_targets_per_intent(records, seeds) -> None:
    kept = [r for r in records if r.status in ("agreed", "adjudicated")]
    assert len(kept) >= 12_000
    assert len(seeds) >= 15_000
    totals = Counter(s.intent for s in seeds)
    for intent, count in totals.items():
        assert count >= 450, f"{intent}: {count} seeds"


def test_a_text_written_by_several_writers_is_one_seed(seeds) -> None:
    texts = Counter(" ".join(s.text.split()) for s in seeds)
    assert [t for t, n in texts.items() if n > 1] == []


def test_messages_carry_their_writer(messages: pd.DataFrame, seeds) -> None:
    writer_of = {s.id: s.writer for s in seeds}
    assert (messages["writer"] == messages["group"].map(writer_of)).all()
    assert messages["writer"].nunique() >= 9


def test_settle_is_agreement_of_two_or_majority_of_three() -> None:
    def record(**labels) -> SeedRecord:
        return SeedRecord("w-0001", "w", "any", "", "好的", "affirm", 0, **labels)

    assert settle(record(second_intent="affirm", second_purchase_intent="0")).status == "agreed"
    pending = settle(record(second_intent="thanks", second_purchase_intent="0"))
    assert pending.status == "" and pending.intent == ""
    third = settle(record(second_intent="thanks", second_purchase_intent="0", third_intent="affirm", third_purchase_intent="0"))
    assert (third.status, third.intent, third.purchase_intent) == ("adjudicated", "affirm", "0")
    split = settle(record(second_intent="thanks", second_purchase_intent="0", third_intent="other", third_purchase_intent="0"))
    assert split.status == "dropped"


def test_agreement_reports_kappa_per_intent() -> None:
    rows = [SeedRecord(f"w-{i:04d}", "w", "any", "", f"t{i}", intent, 0) for i, intent in enumerate(["affirm"] * 5 + ["deny"] * 5)]
    apply_labels(rows, {r.id: ("affirm" if i < 5 else ("deny" if i < 9 else "affirm"), 0) for i, r in enumerate(rows)}, "b", "second")
    result = agreement(rows)
    assert result["intent_agreement"] == pytest.approx(0.9)
    assert result["per_intent"]["deny"]["agreement"] == pytest.approx(0.8)
    assert 0 < result["intent_kappa"] < 1 and result["purchase_kappa"] == 1.0
    overall = agreement(rows, per_intent=False)  # what `data build` records for each use: the same figures, no table
    assert "per_intent" not in overall and overall == {k: v for k, v in result.items() if k != "per_intent"}


def test_tables_have_the_documented_columns() -> None:
    for path in TABLES:
        header = path.read_text(encoding="utf-8").split("\n", 1)[0].split("\t")
        assert header == COLUMNS


@pytest.mark.skipif(not (SHARED / "tools" / "realism.py").is_file(), reason="needs ../shared (real chats stay outside the project)")
def test_the_corpus_copies_no_real_chat(messages: pd.DataFrame) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("realism", SHARED / "tools" / "realism.py")
    realism = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(realism)
    references = pd.read_csv(realism.POOL, dtype=str, keep_default_na=False)["text"].tolist()
    references += pd.read_csv(realism.DEV, dtype=str, keep_default_na=False)["text"].tolist()
    assert realism.copies(messages["text"], references) == []


def test_export_keeps_only_settled_seeds_with_their_final_labels(tmp_path) -> None:
    rows = [SeedRecord(f"y-{i:04d}", "y", "pre_sales", "", text, "affirm", 0) for i, text in enumerate(["好的", "行吧", "那算了", "在吗"])]
    apply_labels(rows, {"y-0000": ("affirm", 0), "y-0001": ("deny", 0), "y-0002": ("deny", 0), "y-0003": ("greeting", 0)}, "b", "second")
    apply_labels(rows, {"y-0001": ("deny", 0), "y-0002": ("other", 1)}, "c", "third")
    assert [r.status for r in rows] == ["agreed", "adjudicated", "dropped", ""]
    out = tmp_path / "messages.csv"
    write_export(kept_rows(rows), out)
    exported = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert exported[["id", "text", "intent", "purchase_intent"]].values.tolist() == [
        ["y-0000", "好的", "affirm", "0"], ["y-0001", "行吧", "deny", "0"],  # the majority's label, not the writer's
    ]
    assert list(exported.columns) == EXPORT_COLUMNS
