"""Double labelling of hand-written seeds: blind sheets, merging, adjudication and agreement.

Every seed of corpus v2 is written (with a first label) by one writer and labelled again by another
annotator who sees only the text. Where the two agree the seed is kept; where they disagree a third
annotator labels it, again blind, and the majority of the three decides each field (intent,
purchase_intent); a seed with no majority is dropped. Every label is kept in the seed table
(`data/seeds/v2/<writer>.tsv`), so agreement and Cohen's kappa can be recomputed from the data.

    python -m pipeline.synth.review blind  RAW.tsv WRITER OUT_DIR          # ids + a blind sheet
    python -m pipeline.synth.review merge  FIRST.tsv SECOND.tsv LABELLER OUT.tsv [--third T.tsv --adjudicator A]
    python -m pipeline.synth.review agreement data/seeds/v2
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from sklearn.metrics import cohen_kappa_score

from pipeline.data.tables import atomic_file

STATUSES = ("agreed", "adjudicated", "dropped")


class ReviewError(ValueError):
    """A sheet that cannot be merged (unknown ids, bad labels, wrong shape)."""


@dataclass
class SeedRecord:
    """One written seed with every label it received; `intent`/`purchase_intent` are the final ones."""

    id: str
    writer: str
    stage: str
    categories: str  # space-separated category names, empty: any category
    text: str
    first_intent: str
    first_purchase_intent: int
    labeller: str = ""
    second_intent: str = ""
    second_purchase_intent: str = ""  # "" until labelled
    adjudicator: str = ""
    third_intent: str = ""
    third_purchase_intent: str = ""
    status: str = ""
    intent: str = ""
    purchase_intent: str = ""


COLUMNS = [f.name for f in fields(SeedRecord)]


def read_tab_fields(path: Path, columns: int) -> list[list[str]]:
    """The non-blank lines of a headerless TAB sheet, each with exactly `columns` fields (ReviewError otherwise)."""
    rows = []
    with open(path, encoding="utf-8", newline="") as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != columns:
                raise ReviewError(f"{path}:{number}: expected {columns} tab-separated fields, got {len(parts)}")
            rows.append([p.strip() if i < columns - 1 else p for i, p in enumerate(parts)])
    return rows


def read_raw(path: Path, writer: str, categories: str = "") -> list[SeedRecord]:
    """A writer's sheet (intent, purchase_intent, stage, text) with stable ids `<writer>-<nnnn>`."""
    records = []
    for n, (intent, purchase, stage, text) in enumerate(read_tab_fields(path, 4), 1):
        if purchase not in ("0", "1"):
            raise ReviewError(f"{path}: line {n}: purchase_intent {purchase!r}")
        records.append(SeedRecord(f"{writer}-{n:04d}", writer, stage, categories, text.strip(), intent, int(purchase)))
    return records


def _order_key(seed_id: str) -> str:
    return hashlib.sha1(f"blind:{seed_id}".encode()).hexdigest()


def blind_sheet(records: Iterable[SeedRecord]) -> list[tuple[str, str]]:
    """(id, text) in an order unrelated to the writer's, so neighbouring lines do not hint a label."""
    return sorted(((r.id, r.text) for r in records), key=lambda pair: _order_key(pair[0]))


def read_labels(path: Path, intents: set[str]) -> dict[str, tuple[str, int]]:
    """A labeller's sheet: id, intent, purchase_intent."""
    labels = {}
    for seed_id, intent, purchase in read_tab_fields(path, 3):
        if intent not in intents:
            raise ReviewError(f"{path}: {seed_id}: unknown intent {intent!r}")
        if purchase.strip() not in ("0", "1"):
            raise ReviewError(f"{path}: {seed_id}: purchase_intent {purchase!r}")
        labels[seed_id] = (intent, int(purchase))
    return labels


def _majority(values: list[str]) -> str | None:
    value, count = Counter(values).most_common(1)[0]
    return value if count >= 2 else None


def settle(record: SeedRecord) -> SeedRecord:
    """Final labels and status from the labels present: agreement of two, else majority of three."""
    first = (record.first_intent, str(record.first_purchase_intent))
    second = (record.second_intent, str(record.second_purchase_intent))
    if first == second:
        record.status, (record.intent, record.purchase_intent) = "agreed", first
        return record
    if not record.third_intent:
        record.status, record.intent, record.purchase_intent = "", "", ""  # waits for a third label
        return record
    third = (record.third_intent, str(record.third_purchase_intent))
    intent = _majority([first[0], second[0], third[0]])
    purchase = _majority([first[1], second[1], third[1]])
    if intent is None or purchase is None:
        record.status, record.intent, record.purchase_intent = "dropped", "", ""
    else:
        record.status, record.intent, record.purchase_intent = "adjudicated", intent, purchase
    return record


def apply_labels(records: list[SeedRecord], labels: dict[str, tuple[str, int]], who: str, round_: str) -> None:
    by_id = {r.id: r for r in records}
    unknown = sorted(set(labels) - set(by_id))
    if unknown:
        raise ReviewError(f"labels for unknown ids: {unknown[:5]}")
    for seed_id, (intent, purchase) in labels.items():
        record = by_id[seed_id]
        if round_ == "second":
            record.labeller, record.second_intent, record.second_purchase_intent = who, intent, str(purchase)
        else:
            record.adjudicator, record.third_intent, record.third_purchase_intent = who, intent, str(purchase)
    for record in records:
        settle(record)


def write_records(records: list[SeedRecord], path: Path) -> None:
    lines = ["\t".join(COLUMNS)]
    for record in records:
        values = [str(v) for v in asdict(record).values()]
        if any("\t" in v or "\n" in v for v in values):
            raise ReviewError(f"{record.id}: tab or line break inside a field")
        lines.append("\t".join(values))
    with atomic_file(path) as handle:
        handle.write(("\n".join(lines) + "\n").encode("utf-8"))


def read_records(path: Path) -> list[SeedRecord]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        if reader.fieldnames != COLUMNS:
            raise ReviewError(f"{path}: columns must be {COLUMNS}, got {reader.fieldnames}")
        return [
            SeedRecord(**{**row, "first_purchase_intent": int(row["first_purchase_intent"])})  # type: ignore[arg-type]
            for row in reader
        ]


def kappa(a: list, b: list) -> float:
    """Cohen's kappa; 1.0 when both annotators used one and the same label (sklearn: undefined)."""
    if len(set(a) | set(b)) < 2:
        return 1.0
    return float(cohen_kappa_score(a, b))


def agreement(records: list[SeedRecord], per_intent: bool = True) -> dict[str, object]:
    """Agreement of the writer's and the blind second label: share and Cohen's kappa, overall and, unless
    `per_intent` is false, per intent (one intent against the rest, on every double-labelled seed; a
    kappa per intent over every sheet is most of the cost, and `data build`'s export figures leave it out)."""
    labelled = [r for r in records if r.second_intent]
    first_i = [r.first_intent for r in labelled]
    second_i = [r.second_intent for r in labelled]
    first_p = [str(r.first_purchase_intent) for r in labelled]
    second_p = [r.second_purchase_intent for r in labelled]
    n = len(labelled)
    figures: dict[str, object] = {
        "double_labelled": n,
        "intent_agreement": sum(a == b for a, b in zip(first_i, second_i, strict=True)) / n if n else float("nan"),
        "intent_kappa": kappa(first_i, second_i) if n else float("nan"),
        "purchase_agreement": sum(a == b for a, b in zip(first_p, second_p, strict=True)) / n if n else float("nan"),
        "purchase_kappa": kappa(first_p, second_p) if n else float("nan"),
        "status": dict(Counter(r.status or "pending" for r in records)),
    }
    if per_intent:
        figures["per_intent"] = _agreement_per_intent(records, labelled)
    return figures


def _agreement_per_intent(records: list[SeedRecord], labelled: list[SeedRecord]) -> dict[str, dict[str, float]]:
    first_i = [r.first_intent for r in labelled]
    second_i = [r.second_intent for r in labelled]
    table = {}
    for intent in sorted(set(first_i) | set(second_i)):
        a = [i == intent for i in first_i]
        b = [i == intent for i in second_i]
        written = [r for r in labelled if r.first_intent == intent]
        table[intent] = {
            "written": len(written),
            "agreement": sum(r.second_intent == intent for r in written) / len(written) if written else float("nan"),
            "kappa": kappa(a, b),
            "purchase_kappa": kappa([str(r.first_purchase_intent) for r in written], [r.second_purchase_intent for r in written]) if written else float("nan"),
            "kept": sum(r.intent == intent and r.status in ("agreed", "adjudicated") for r in records),
        }
    return table


EXPORT_COLUMNS = ["text", "intent", "purchase_intent", "writer", "stage", "id"]


def kept_rows(records: Iterable[SeedRecord]) -> list[dict[str, str]]:
    """The seeds whose labels were settled (agreed or adjudicated), as labelled messages: an evaluation set
    needs its labels final, so a seed waiting for a third label or dropped for having no majority is left out."""
    return [
        {"text": r.text, "intent": r.intent, "purchase_intent": str(r.purchase_intent), "writer": r.writer, "stage": r.stage, "id": r.id}
        for r in records
        if r.status in ("agreed", "adjudicated")
    ]


def write_export(rows: list[dict[str, str]], path: Path) -> None:
    """`kept_rows` as a labelled CSV (`data build` writes the written chats' uses with it, `pipeline.synth.chats`)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_file(path) as handle:
        handle.write(buffer.getvalue().encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    from pipeline.synth.config import load_corpus_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    blind = sub.add_parser("blind", help="give a writer's raw sheet ids and write the blind sheet")
    blind.add_argument("raw", type=Path)
    blind.add_argument("writer")
    blind.add_argument("out_dir", type=Path)
    blind.add_argument("--categories", default="")
    merge = sub.add_parser("merge", help="add a second (and third) label sheet to a seed table")
    merge.add_argument("table", type=Path)
    merge.add_argument("labels", type=Path)
    merge.add_argument("who")
    merge.add_argument("--round", choices=("second", "third"), default="second")
    sub.add_parser("agreement").add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    intents = set(load_corpus_config(Path(__file__).resolve().parents[2] / "configs" / "corpus.yaml").intents)
    if args.command == "blind":
        records = read_raw(args.raw, args.writer, args.categories)
        bad = [r.id for r in records if r.first_intent not in intents]
        if bad:
            raise ReviewError(f"unknown intents at {bad[:5]}")
        write_records(records, args.out_dir / f"{args.writer}.tsv")
        with open(args.out_dir / f"{args.writer}.blind.tsv", "w", encoding="utf-8") as handle:
            handle.writelines(f"{seed_id}\t{text}\n" for seed_id, text in blind_sheet(records))
        print(f"{args.writer}: {len(records)} seeds")
    elif args.command == "merge":
        records = read_records(args.table)
        apply_labels(records, read_labels(args.labels, intents), args.who, args.round)
        write_records(records, args.table)
        print(Counter(r.status or "pending" for r in records))
    else:
        records = [r for path in sorted(args.directory.glob("*.tsv")) for r in read_records(path)]
        result = agreement(records)
        for key, value in result.items():
            if key != "per_intent":
                print(f"{key}: {value}")
        for intent, row in result["per_intent"].items():
            print(f"  {intent:14s} {row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
