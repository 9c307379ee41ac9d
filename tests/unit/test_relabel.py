"""Blind relabelling of corpus seeds: selection, settling by majority, and what the seed loader applies."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipeline.synth.relabel import (
    RELABEL_COLUMNS, RelabelError, load_relabels, load_selection, merge, read_sheet_labels, settle, sheet_rows,
)
from pipeline.synth.seeds import Seed, SeedError, load_seeds

SELECTION = textwrap.dedent(
    """\
    name: r1
    field: purchase_intent
    patterns:
      ordered:
        all: ["拍了"]
        none: ["付"]
      restock:
        all: ["到货", "通知"]
    controls: 1
    sheets: 2
    seed: 5
    """
)

SEED_FILE = textwrap.dedent(
    """\
    intent: place_order
    seeds:
      - {id: po-1, text: "我拍了 你改下价", purchase_intent: 0, stage: pre_sales}
      - {id: po-2, text: "拍了 什么时候发货", purchase_intent: 0, stage: after_sales}
      - {id: po-3, text: "就要这个了", purchase_intent: 1, stage: pre_sales}
    """
)


def write_corpus(tmp_path: Path, relabel_rows: list[list[str]] | None = None) -> Path:
    seeds_dir = tmp_path / "seeds"
    (seeds_dir / "relabel").mkdir(parents=True)
    (seeds_dir / "place_order.yaml").write_text(SEED_FILE, encoding="utf-8")
    (seeds_dir / "relabel" / "r1.yaml").write_text(SELECTION, encoding="utf-8")
    if relabel_rows is not None:
        lines = ["\t".join(RELABEL_COLUMNS)] + ["\t".join(row) for row in relabel_rows]
        (seeds_dir / "relabel" / "r1.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return seeds_dir


def test_the_label_changes_only_when_both_new_annotators_disagree_with_it() -> None:
    assert settle(0, 1, 1) == 1
    assert settle(0, 1, 0) == 0
    assert settle(1, 0, 1) == 1
    assert settle(1, 0, 0) == 0


def test_selection_matches_every_all_pattern_and_no_none_pattern(tmp_path: Path) -> None:
    path = tmp_path / "r1.yaml"
    path.write_text(SELECTION, encoding="utf-8")
    selection = load_selection(path)
    assert selection.phenomena("我拍了 你改下价") == ["ordered"]
    assert selection.phenomena("拍了 付过了") == []
    assert selection.phenomena("到货了通知我") == ["restock"]
    assert selection.phenomena("到货了吗") == []


def test_sheets_hide_the_seed_id_and_the_label_and_keep_controls_apart(tmp_path: Path) -> None:
    selection = load_selection(write_corpus(tmp_path) / "relabel" / "r1.yaml")
    seeds = [Seed("stock-001", "place_order", "我拍了 你改下价", 0, "pre_sales", None),
             Seed("stock-002", "place_order", "有货吗", 0, "pre_sales", None),
             Seed("stock-003", "place_order", "发货了吗", 0, "after_sales", None)]
    key = sheet_rows(seeds, selection)
    assert sorted(row["id"] for row in key if row["phenomena"] != "control") == ["stock-001"]
    assert sum(row["phenomena"] == "control" for row in key) == 1
    assert all(row["blind_id"].startswith("r1-") and "stock" not in row["blind_id"] for row in key)
    assert key == sheet_rows(seeds, selection)  # the same seeds and selection give the same sheets


def test_merge_relabels_selected_seeds_only_and_needs_two_annotators_per_sheet() -> None:
    key = [
        {"blind_id": "r1-00000", "sheet": "a", "id": "po-1", "text": "我拍了 你改下价", "phenomena": "ordered", "original": "0"},
        {"blind_id": "r1-00001", "sheet": "a", "id": "x-9", "text": "有货吗", "phenomena": "control", "original": "0"},
    ]
    labels = {"a": [("L1", {"r1-00000": 1, "r1-00001": 1}), ("L2", {"r1-00000": 1, "r1-00001": 1})]}
    rows, stats = merge(key, labels)
    assert [(row["id"], row["label"]) for row in rows] == [("po-1", "1")]
    assert stats["selected"]["changed"] == 1 and stats["control"]["n"] == 1
    with pytest.raises(RelabelError, match="two annotators"):
        merge(key, {"a": labels["a"][:1]})


def test_an_annotator_sheet_must_cover_exactly_its_ids(tmp_path: Path) -> None:
    path = tmp_path / "a.tsv"
    path.write_text("r1-00000\t1\n", encoding="utf-8")
    assert read_sheet_labels(path, {"r1-00000"}) == {"r1-00000": 1}
    with pytest.raises(RelabelError, match="missing"):
        read_sheet_labels(path, {"r1-00000", "r1-00001"})
    path.write_text("r1-00000\tyes\n", encoding="utf-8")
    with pytest.raises(RelabelError, match="expected"):
        read_sheet_labels(path, {"r1-00000"})


def test_the_loader_applies_settled_relabels_and_moves_a_purchase_to_pre_sales(tmp_path: Path) -> None:
    seeds_dir = write_corpus(tmp_path, [
        ["po-1", "我拍了 你改下价", "ordered", "0", "L1", "1", "L2", "1", "1"],
        ["po-2", "拍了 什么时候发货", "ordered", "0", "L1", "1", "L2", "1", "1"],
    ])
    by_id = {s.id: s for s in load_seeds(seeds_dir)}
    assert by_id["po-1"].purchase_intent == 1
    assert (by_id["po-2"].purchase_intent, by_id["po-2"].stage) == (1, "pre_sales")
    assert by_id["po-3"].purchase_intent == 1
    as_authored = {s.id: s for s in load_seeds(seeds_dir, relabel_dir=None)}
    assert (as_authored["po-2"].purchase_intent, as_authored["po-2"].stage) == (0, "after_sales")


def test_the_loader_rejects_a_relabel_that_is_not_the_majority_or_names_another_text(tmp_path: Path) -> None:
    seeds_dir = write_corpus(tmp_path, [["po-1", "我拍了 你改下价", "ordered", "0", "L1", "1", "L2", "0", "1"]])
    with pytest.raises(RelabelError, match="majority"):
        load_seeds(seeds_dir)
    seeds_dir = write_corpus(tmp_path / "b", [["po-1", "别的话", "ordered", "0", "L1", "1", "L2", "1", "1"]])
    with pytest.raises(SeedError, match="another text"):
        load_seeds(seeds_dir)
    seeds_dir = write_corpus(tmp_path / "c", [["po-404", "我拍了", "ordered", "0", "L1", "1", "L2", "1", "1"]])
    with pytest.raises(SeedError, match="not in the corpus"):
        load_seeds(seeds_dir)


def test_the_bundled_relabels_load_and_every_row_is_settled_by_majority() -> None:
    directory = Path(__file__).resolve().parents[2] / "data" / "seeds" / "relabel"
    relabels = load_relabels(directory)  # raises on any row whose label is not the majority of three
    for path in directory.glob("*.tsv"):
        assert path.with_suffix(".yaml").exists()
    assert all(r.label in (0, 1) and r.field == "purchase_intent" for r in relabels.values())
