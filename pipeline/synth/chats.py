"""Whole chats written without choosing intents (corpus rounds 13 and after), one folder of writer tables per use.

A writer imagined a buyer in a situation and typed everything that buyer sends, message by message, and
labelled the messages only afterwards; every message was labelled again blind (`pipeline.synth.review`).
Such text is less prototypical than seeds written for an intent, closer to what the model meets in real
chats, so it is kept as written (the generator adds nothing) and used three ways:

- `train/`: trained on (`paths.extra_data` of configs/default.yaml);
- `calibration/`: the intent model's temperature and hand-over threshold, and the purchase threshold (`paths.calibration_data`);
- `intent_calibration/`: more of the first two, and of the purchase threshold under `purchase_model.threshold_on:
  all_calibration_data` (the default since round 27) (`paths.intent_calibration_data`);
- `yardstick/`: evaluated on only (`make demo` reports it next to the test split).

`<out>/<use>.csv` holds each use's settled seeds. A use leaves out every text (normalised) that the corpus's
messages or an earlier use already hold, in the order train, calibration, intent_calibration, yardstick: nothing is calibrated
or measured on a text the model was fitted on."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pipeline.synth.review import agreement, kept_rows, read_records, write_export
from pipeline.text import normalize

USES = ("train", "calibration", "intent_calibration", "yardstick")


class ChatSheetError(ValueError):
    """A chat-sheet folder that is not one of the known uses, or a writer in two uses."""


def export_chat_sheets(sheet_dir: str | Path, out_dir: str | Path, corpus_texts: Iterable[str]) -> dict[str, dict]:
    """Write `<out_dir>/<use>.csv` for every use folder under `sheet_dir`; returns per-use figures."""
    sheet_dir, out_dir = Path(sheet_dir), Path(out_dir)
    folders = {p.name: p for p in sorted(sheet_dir.iterdir()) if p.is_dir() and not p.name.startswith((".", "_"))} if sheet_dir.is_dir() else {}
    unknown = sorted(set(folders) - set(USES))
    if unknown:
        raise ChatSheetError(f"{sheet_dir}: unknown chat-sheet folders {unknown}; the uses are {list(USES)}")
    for use in USES:  # an export whose folder is gone would be stale: a config pointing at it fails instead
        if use not in folders:
            (out_dir / f"{use}.csv").unlink(missing_ok=True)
    seen = {normalize(text) for text in corpus_texts}
    writers_of: dict[str, str] = {}
    figures: dict[str, dict] = {}
    for use in (u for u in USES if u in folders):
        records = [r for path in sorted(folders[use].glob("*.tsv")) for r in read_records(path)]
        for writer in sorted({r.writer for r in records}):
            if writers_of.setdefault(writer, use) != use:
                raise ChatSheetError(f"writer {writer} is in both {writers_of[writer]}/ and {use}/: a use's writers must be its own")
        settled = kept_rows(records)
        if not settled:
            raise ChatSheetError(f"{folders[use]}: no settled message (a table with every label agreed or adjudicated) to export")
        texts = [normalize(row["text"]) for row in settled]
        rows = [row for row, text in zip(settled, texts, strict=True) if text not in seen]
        seen.update(texts)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_export(rows, out_dir / f"{use}.csv")
        figures[use] = {
            "writers": sorted({r.writer for r in records}),
            "written": len(records),
            "settled": len(settled),
            "kept": len(rows),
            "left_out_seen": len(settled) - len(rows),
            "agreement": agreement(records, per_intent=False),
        }
    return figures
