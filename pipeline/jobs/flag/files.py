"""What the phases of `buyer-intent flag` (and the Spark engine) share: the chat columns, the work
directory's file schemas, atomic writers, the masked form of a rejected row, and a readable copy of an
export whatever its encoding."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.nudge import NUDGE_COLUMNS
from pipeline.data.tables import (
    BINARY_FORMATS,
    TableError,
    atomic_file,
    detect_encoding,
    table_format,
    utf8_copy,
    whole_file_encoding,
    write_text_atomic,
)
from pipeline.text import mask_pii

log = logging.getLogger(__name__)

CHAT_COLUMNS = ("conversation_id", "buyer_id", "shop_id", "role", "text", "sent_at")
OUTPUT_COLUMNS = NUDGE_COLUMNS

SHARD_SCHEMA = pa.schema(
    [
        ("shop_id", pa.string()),
        ("conversation_id", pa.string()),
        ("buyer_id", pa.string()),
        ("role", pa.string()),
        ("text", pa.string()),
        ("sent_at", pa.int64()),
        ("seq", pa.int64()),
        ("source_row", pa.string()),
        ("category", pa.string()),
        ("ordered", pa.int8()),
    ]
)
REJECTED_SCHEMA = pa.schema(
    [("seq", pa.int64()), ("source", pa.string()), ("row", pa.string()), ("reason", pa.string()), ("raw", pa.string())]
)


class FlagError(ValueError):
    """The flag job cannot run on these inputs (the message names the file and the problem)."""


def write_json_atomic(data: dict, path: Path) -> None:
    write_text_atomic(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n", path)


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    with atomic_file(path) as handle:
        pq.write_table(table, handle)


def rejected_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=REJECTED_SCHEMA) if rows else REJECTED_SCHEMA.empty_table()


def raw_line(values: list[Any]) -> str:
    """A rejected row as one masked line: rejected files hold buyer text too."""
    return mask_pii(",".join("" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in values)).replace("\x00", "\\x00")


def as_text(series: pd.Series) -> pd.Series:
    """Any column as object strings with None for missing (Parquet may carry ints, JSON numbers)."""
    values = series.astype(object).where(series.notna(), None)
    if pd.api.types.is_string_dtype(series.dtype) and series.dtype != object:
        return values
    return values.map(lambda v: v if v is None or isinstance(v, str) else str(v))


def reason_kind(reason: str) -> str:
    """'unknown role 'x'' -> 'unknown role': rejected reasons counted by kind in the summary."""
    return re.split(r" '| \(|, got |: line ", reason)[0]


def readable_copy(path: Path, work: Path, source: str) -> tuple[Path, list[dict], int]:
    """The path iter_table can read, the lines rejected for bad encoding, and how many there were.

    tables.py reads a whole file in one encoding chosen from its first megabyte; a file with a few
    undecodable rows (or GB18030 only further down) is copied to UTF-8 line by line (each line in the
    encoding it decodes in), and lines that decode in neither are rejected instead of failing the run."""
    if table_format(path) in BINARY_FORMATS:
        return path, [], 0
    whole = whole_file_encoding(path)
    try:
        sniffed = detect_encoding(path)
    except TableError:
        sniffed = None
    if whole is not None and whole == sniffed:
        return path, [], 0
    copy = work / f"{path.stem}.utf8{path.suffix}"
    try:
        bad_lines = utf8_copy(path, copy)
    except TableError as exc:
        raise FlagError(str(exc)) from exc
    rejected = [
        {"source": source, "row": f"line {r.row}", "reason": r.reason, "raw": mask_pii(r.raw)} for r in bad_lines
    ]
    log.info("%s: %d line(s) with bad encoding rejected; reading a UTF-8 copy", path, len(rejected))
    return copy, rejected, len(rejected)


def jsonl_is_conversations(path: Path, look_at: int = 1000) -> bool:
    """Conversation records (with `messages`) or one message per line, from the first objects that parse:
    a malformed first line, or a first record without its `messages`, is quarantined later; neither
    decides the format of the file. A file is conversations when an object with `messages` comes before
    one with a message's `text`."""
    encoding = detect_encoding(path)
    with open(path, encoding="utf-8-sig" if encoding == "utf-8" else encoding, errors="replace") as handle:
        for _, line in zip(range(look_at), handle):
            if line.strip():
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, RecursionError):  # RecursionError: nested too deeply
                    continue
                if isinstance(record, dict) and ("messages" in record or "text" in record):
                    return "messages" in record
    return False
