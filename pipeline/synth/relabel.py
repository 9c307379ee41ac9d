"""Blind relabelling of seeds already in the corpus, one field (purchase_intent) at a time.

When the corpus and the written chats were measured to draw a label's line in different places on some
phenomenon (`data/seeds/chats/ROUND37_RULES.md`, CX), the seeds that show it are labelled again, blind, by two
annotators who see only the text; the majority of the seed's settled label and the two new ones is its label
from then on. The seed files are not edited: every label is kept in `data/seeds/relabel/<name>.tsv`, which
`pipeline.synth.seeds.load_seeds` applies, so the original labels and the agreement stay recomputable.

    python -m pipeline.synth.relabel sheets SELECTION.yaml OUT_DIR           # key + blind sheets
    python -m pipeline.synth.relabel merge  SELECTION.yaml OUT_DIR SHEET:LABELLER:FILE ...
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.data.tables import atomic_file
from pipeline.synth.rng import make_rng

FIELDS = ("purchase_intent",)
MAX_SEED_CHARS = 2000  # seeds are our own short texts; a longer one is a broken table, not a seed
RELABEL_COLUMNS = ["id", "text", "phenomena", "original", "labeller_a", "label_a", "labeller_b", "label_b", "label"]


class RelabelError(ValueError):
    """A selection, sheet or relabel table that cannot be used."""


@dataclass(frozen=True)
class Pattern:
    name: str
    all: tuple[re.Pattern[str], ...]
    none: tuple[re.Pattern[str], ...]

    def matches(self, text: str) -> bool:
        return all(p.search(text) for p in self.all) and not any(p.search(text) for p in self.none)


@dataclass(frozen=True)
class Selection:
    name: str
    field: str
    patterns: tuple[Pattern, ...]
    controls: int
    sheets: int
    seed: int

    def phenomena(self, text: str) -> list[str]:
        text = text[:MAX_SEED_CHARS]
        return [p.name for p in self.patterns if p.matches(text)]


def load_selection(path: str | Path) -> Selection:
    document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    try:
        if document["field"] not in FIELDS:
            raise RelabelError(f"{path}: field must be one of {FIELDS}, got {document['field']!r}")
        patterns = tuple(
            Pattern(name, tuple(map(re.compile, spec.get("all", []))), tuple(map(re.compile, spec.get("none", []))))
            for name, spec in document["patterns"].items()
        )
        selection = Selection(
            str(document["name"]), document["field"], patterns, int(document["controls"]), int(document["sheets"]), int(document["seed"])
        )
    except (KeyError, TypeError, AttributeError, re.error) as exc:
        raise RelabelError(f"{path}: {exc!r}") from exc
    if not all(p.all for p in patterns) or selection.sheets < 1:
        raise RelabelError(f"{path}: every pattern needs an `all` list, and sheets must be >= 1")
    return selection


def sheet_rows(seeds: list, selection: Selection) -> list[dict[str, str]]:
    """The key: every selected seed plus `controls` others, each with an anonymous id and a sheet.

    Anonymous ids because v1 ids name the intent (stock-001); the order is a seeded shuffle, so
    neighbouring lines hint nothing."""
    rng = make_rng(selection.seed, "relabel", selection.name)
    selected = [(s, selection.phenomena(s.text)) for s in seeds]
    chosen = [(s, " ".join(p)) for s, p in selected if p]
    others = [s for s, p in selected if not p]
    chosen += [(s, "control") for s in rng.sample(others, min(selection.controls, len(others)))]
    rng.shuffle(chosen)
    return [
        {
            "blind_id": f"{selection.name}-{n:05d}",
            "sheet": chr(ord("a") + n % selection.sheets),
            "id": seed.id,
            "text": seed.text,
            "phenomena": phenomena,
            "original": str(getattr(seed, selection.field)),
        }
        for n, (seed, phenomena) in enumerate(chosen)
    ]


def _write_tsv(rows: list[dict[str, str]], columns: list[str], path: Path, header: bool = True) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, delimiter="\t", lineterminator="\n", extrasaction="ignore", quoting=csv.QUOTE_NONE, escapechar="\\")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    with atomic_file(path) as handle:
        handle.write(buffer.getvalue().encode("utf-8"))


def _read_tsv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """A table written by `_write_tsv`: its columns and rows."""
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        return list(reader.fieldnames or []), list(reader)


def read_sheet_labels(path: Path, expected: set[str]) -> dict[str, int]:
    """An annotator's sheet: `blind_id<TAB>0|1` for every line of their blind sheet, nothing else."""
    from pipeline.synth.review import ReviewError, read_tab_fields

    try:
        rows = read_tab_fields(path, 2)
    except ReviewError as exc:
        raise RelabelError(f"expected `id<TAB>0|1`: {exc}") from exc
    labels: dict[str, int] = {}
    for blind_id, label in rows:
        if label.strip() not in ("0", "1"):
            raise RelabelError(f"{path}: {blind_id}: expected `id<TAB>0|1`, got label {label.strip()[:20]!r}")
        if blind_id in labels:
            raise RelabelError(f"{path}: {blind_id} labelled twice")
        labels[blind_id] = int(label)
    if set(labels) != expected:
        missing, extra = sorted(expected - set(labels)), sorted(set(labels) - expected)
        raise RelabelError(f"{path}: ids differ from the sheet (missing {missing[:3]}, unknown {extra[:3]})")
    return labels


def settle(original: int, a: int, b: int) -> int:
    """The majority of three: a seed's label changes only when both new annotators read it the other way."""
    return a if a == b else original


def merge(key: list[dict[str, str]], labels: dict[str, list[tuple[str, dict[str, int]]]]) -> tuple[list[dict[str, str]], dict[str, object]]:
    """Relabel rows for the selected seeds (controls are measured, never relabelled) and the agreement."""
    from pipeline.synth.review import kappa  # the merge step only: loading seeds stays free of sklearn

    rows, stats = [], {}
    pairs: dict[str, list[tuple[int, int, int]]] = {"selected": [], "control": []}
    for row in key:
        given = labels.get(row["sheet"], [])
        if len(given) != 2:
            raise RelabelError(f"sheet {row['sheet']}: needs two annotators, has {len(given)}")
        (who_a, sheet_a), (who_b, sheet_b) = given
        a, b, original = sheet_a[row["blind_id"]], sheet_b[row["blind_id"]], int(row["original"])
        pairs["control" if row["phenomena"] == "control" else "selected"].append((original, a, b))
        if row["phenomena"] != "control":
            rows.append({**row, "labeller_a": who_a, "label_a": str(a), "labeller_b": who_b, "label_b": str(b), "label": str(settle(original, a, b))})
    for part, triples in pairs.items():
        if not triples:
            continue
        original, a, b = (list(column) for column in zip(*triples, strict=True))
        stats[part] = {
            "n": len(triples),
            "kappa_new_pair": round(kappa(a, b), 3),
            "agreement_new_pair": round(sum(x == y for x, y in zip(a, b, strict=True)) / len(a), 3),
            "kappa_original_vs_a": round(kappa(original, a), 3),
            "kappa_original_vs_b": round(kappa(original, b), 3),
            "changed": sum(settle(o, x, y) != o for o, x, y in triples),
            "share_1_before": round(sum(original) / len(original), 3),
            "share_1_after": round(sum(settle(o, x, y) for o, x, y in triples) / len(triples), 3),
        }
    per_phenomenon = Counter()
    for row in rows:
        for name in row["phenomena"].split():
            per_phenomenon[(name, row["original"], row["label"])] += 1
    stats["per_phenomenon"] = {f"{n} {o}->{l}": c for (n, o, l), c in sorted(per_phenomenon.items())}
    return rows, stats


@dataclass(frozen=True)
class Relabel:
    text: str
    field: str
    label: int


def load_relabels(directory: str | Path) -> dict[str, Relabel]:
    """Every settled relabel under `directory` (`<name>.tsv` beside its `<name>.yaml`), by seed id."""
    relabels: dict[str, Relabel] = {}
    for path in sorted(Path(directory).glob("*.tsv")):
        selection = load_selection(path.with_suffix(".yaml"))
        columns, rows = _read_tsv(path)
        if columns != RELABEL_COLUMNS:
            raise RelabelError(f"{path}: columns {columns}, expected {RELABEL_COLUMNS}")
        for number, row in enumerate(rows, 2):
            values = [row[c] for c in ("original", "label_a", "label_b", "label")]
            if any(v not in ("0", "1") for v in values):
                raise RelabelError(f"{path}:{number}: labels must be 0 or 1")
            original, a, b, label = map(int, values)
            if settle(original, a, b) != label:
                raise RelabelError(f"{path}:{number}: {row['id']} label {label} is not the majority of {original}, {a}, {b}")
            if row["id"] in relabels:
                raise RelabelError(f"{path}:{number}: {row['id']} relabelled twice")
            relabels[row["id"]] = Relabel(row["text"], selection.field, label)
    return relabels


def relabel_figures(directory: str | Path) -> dict[str, dict[str, object]]:
    """Per relabelling (data card): seeds relabelled, labels changed each way, agreement of the two new annotators."""
    from pipeline.synth.review import kappa

    figures = {}
    for path in sorted(Path(directory).glob("*.tsv")):
        _, rows = _read_tsv(path)
        a, b = [row["label_a"] for row in rows], [row["label_b"] for row in rows]
        phenomena = sorted({name for row in rows for name in row["phenomena"].split()})
        figures[path.stem] = {
            "field": load_selection(path.with_suffix(".yaml")).field,
            "seeds": len(rows),
            "to_1": sum(row["original"] == "0" and row["label"] == "1" for row in rows),
            "to_0": sum(row["original"] == "1" and row["label"] == "0" for row in rows),
            "agreement": sum(x == y for x, y in zip(a, b, strict=True)) / len(rows) if rows else float("nan"),
            "kappa": kappa(a, b) if rows else float("nan"),
            "annotators": sorted({row["labeller_a"] for row in rows} | {row["labeller_b"] for row in rows}),
            "per_phenomenon": {
                name: {
                    "seeds": sum(name in row["phenomena"].split() for row in rows),
                    "share_1_before": _share(rows, name, "original"),
                    "share_1_after": _share(rows, name, "label"),
                }
                for name in phenomena
            },
        }
    return figures


def _share(rows: list[dict[str, str]], phenomenon: str, column: str) -> float:
    values = [row[column] == "1" for row in rows if phenomenon in row["phenomena"].split()]
    return sum(values) / len(values)


def main(argv: list[str] | None = None) -> int:
    from pipeline.synth.seeds import load_seeds

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("sheets", "merge"):
        command = sub.add_parser(name)
        command.add_argument("selection", type=Path)
        command.add_argument("work_dir", type=Path)
        if name == "merge":
            command.add_argument("labels", nargs="+", help="SHEET:LABELLER:FILE, two per sheet")
    args = parser.parse_args(argv)
    selection = load_selection(args.selection)
    key_path = args.work_dir / f"{selection.name}.key.tsv"
    if args.command == "sheets":
        # the labels as they stand before this relabelling: its own table is not applied
        seeds = load_seeds(args.selection.parent.parent, relabel_dir=None)
        key = sheet_rows(seeds, selection)
        _write_tsv(key, ["blind_id", "sheet", "id", "text", "phenomena", "original"], key_path)
        for sheet in sorted({row["sheet"] for row in key}):
            blind = [{"id": row["blind_id"], "text": row["text"]} for row in key if row["sheet"] == sheet]
            _write_tsv(blind, ["id", "text"], args.work_dir / f"{selection.name}-{sheet}.blind.tsv", header=False)
        print(Counter(row["phenomena"] for row in key).most_common(), f"{len(key)} lines in {selection.sheets} sheets")
        return 0
    _, key = _read_tsv(key_path)
    labels: dict[str, list[tuple[str, dict[str, int]]]] = {}
    for spec in args.labels:
        sheet, who, file = spec.split(":", 2)
        expected = {row["blind_id"] for row in key if row["sheet"] == sheet}
        labels.setdefault(sheet, []).append((who, read_sheet_labels(Path(file), expected)))
    rows, stats = merge(key, labels)
    _write_tsv(rows, RELABEL_COLUMNS, args.selection.with_suffix(".tsv"))
    for part, value in stats.items():
        print(f"{part}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
