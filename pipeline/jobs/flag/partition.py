"""Phase 1 of `buyer-intent flag`: read the chats in chunks, reject malformed rows with a reason, and
append valid rows to Parquet shards by hash(shop_id, conversation_id), so every conversation lands whole
in one shard."""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.config import FlagSettings
from pipeline.jobs.flag.files import (
    CHAT_COLUMNS,
    REJECTED_SCHEMA,
    SHARD_SCHEMA,
    FlagError,
    as_text,
    jsonl_is_conversations,
    raw_line,
    readable_copy,
    reason_kind,
    rejected_table,
    write_json_atomic,
)
from pipeline.nudge import NudgePolicy
from pipeline.nudge.policy import ORDERED_UNKNOWN
from pipeline.nudge.rows import check_turns, is_blank
from pipeline.data.tables import PLAIN_COLUMNS, ColumnNames, TableError, iter_table, named_os_error, parse_yes_no_column, table_format
from pipeline.text import mask_pii

# only to choose the number of shards (xlsx is compressed; .txt is mostly UTF-16, two bytes a character)
_BYTES_PER_ROW = {"csv": 90, "tsv": 90, "txt": 180, "jsonl": 140, "xlsx": 40}


def _explode_conversations(frame: pd.DataFrame, seen: dict[tuple[str, str], Any]) -> tuple[pd.DataFrame, list[dict]]:
    """Conversation JSONL records -> one row per message; a record without a usable message list is one
    rejected row, and so is a second record of a conversation already read (`seen`: shop and
    conversation id -> its first line, across chunks): merging two records would double its turns."""
    columns = {name: [] for name in (*CHAT_COLUMNS, "category", "ordered", "source_row")}
    rejected: list[dict] = []
    for record in frame.to_dict(orient="records"):
        line = record.get("_line")
        messages = record.get("messages")
        raw = raw_line([record.get("conversation_id"), record.get("buyer_id"), record.get("shop_id")])
        if not isinstance(messages, list) or not messages:
            rejected.append({"row": str(line), "reason": "messages must be a non-empty list", "raw": raw})
            continue
        key = (str(record.get("shop_id") or "").strip(), str(record.get("conversation_id") or "").strip())
        if key[1] and key in seen:
            rejected.append({"row": str(line), "reason": f"duplicate conversation {key[1]!r} (first record at line {seen[key]})", "raw": raw})
            continue
        seen.setdefault(key, line)
        for position, message in enumerate(messages, start=1):
            if not isinstance(message, dict):
                rejected.append({"row": f"{line}:{position}", "reason": "a message must be a JSON object", "raw": raw_line([message])})
                continue
            columns["conversation_id"].append(record.get("conversation_id"))
            columns["buyer_id"].append(record.get("buyer_id"))
            columns["shop_id"].append(record.get("shop_id"))
            columns["category"].append(record.get("category"))
            columns["ordered"].append(record.get("ordered"))
            columns["role"].append(message.get("role"))
            columns["text"].append(message.get("text"))
            columns["sent_at"].append(message.get("sent_at"))
            columns["source_row"].append(f"{line}:{position}")
    return pd.DataFrame(columns, dtype=object), rejected


def validate_chat_rows(frame: pd.DataFrame, policy: NudgePolicy) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """Valid rows in shard layout, and (position, reason) for each rejected row: missing fields, a NUL byte,
    unknown role, unparseable sent_at, text damaged by a bad encoding (U+FFFD), an `ordered` value that is not 0/1."""
    n = len(frame)
    reasons = np.full(n, None, dtype=object)

    def reject(mask: np.ndarray, reason) -> None:
        todo = np.flatnonzero(mask & (reasons == None))  # noqa: E711 (element-wise)
        for i in todo:
            reasons[i] = reason(i) if callable(reason) else reason

    sent_is_datetime = pd.api.types.is_datetime64_any_dtype(frame["sent_at"].dtype)  # Parquet timestamps
    text = {name: as_text(frame[name]) for name in CHAT_COLUMNS if name != "sent_at"}
    for name in ("conversation_id", "buyer_id", "shop_id"):
        reject(is_blank(text[name]), f"missing {name}")
    for name in ("conversation_id", "buyer_id", "shop_id", "text"):  # a NUL would reach the nudge list (CRMs, databases refuse it)
        reject(text[name].str.contains("\x00", regex=False).fillna(False).to_numpy(bool), f"NUL byte in {name}")
    sent_source = frame["sent_at"] if sent_is_datetime else as_text(frame["sent_at"])
    turns = check_turns(text["role"], text["text"], sent_source, policy, time_required=True)
    reject(turns.reasons != None, lambda i: turns.reasons[i])  # noqa: E711
    roles, sent_at = turns.roles, turns.times
    if "ordered" in frame.columns:
        parsed, blank = parse_yes_no_column(frame["ordered"])
        ordered = np.where(parsed < 0, ORDERED_UNKNOWN, parsed).astype(np.int8)
        flag_values = frame["ordered"].to_numpy(object)
        reject((parsed < 0) & ~blank, lambda i: f"ordered must be yes or no (1/0, true/false, 是/否), got {flag_values[i]!r}")
    else:
        ordered = np.full(n, ORDERED_UNKNOWN, dtype=np.int8)
    category = as_text(frame["category"]).fillna("").str.strip() if "category" in frame.columns else pd.Series([""] * n, dtype=object)
    keep = reasons == None  # noqa: E711
    valid = pd.DataFrame(
        {
            "shop_id": text["shop_id"][keep].str.strip().to_numpy(object),
            "conversation_id": text["conversation_id"][keep].str.strip().to_numpy(object),
            "buyer_id": text["buyer_id"][keep].str.strip().to_numpy(object),
            "role": roles[keep],
            "text": text["text"][keep].to_numpy(object),
            "sent_at": sent_at[keep],
            "category": category[keep].to_numpy(object),
            "ordered": ordered[keep],
        }
    )
    return valid, [(int(i), str(reasons[i])) for i in np.flatnonzero(~keep)]


def _shard_of(shop_ids: np.ndarray, conversation_ids: np.ndarray, n_shards: int) -> np.ndarray:
    joined = (pd.Series(shop_ids, dtype=object) + "\x1f" + pd.Series(conversation_ids, dtype=object)).to_numpy(object)
    return (pd.util.hash_array(joined) % np.uint64(n_shards)).astype(np.int64)


def _shard_count(path: Path, settings: FlagSettings, workers: int) -> int:
    """Shards of at most `shard_rows` messages (a worker's memory bound), and a few per worker so the
    last shard does not run alone, but none smaller than a tenth of `shard_rows` (model loading per worker)."""
    fmt = table_format(path)
    if fmt == "parquet":
        rows = pq.ParquetFile(path).metadata.num_rows
    else:
        rows = path.stat().st_size // _BYTES_PER_ROW[fmt]
    by_size = math.ceil(rows / settings.shard_rows)
    for_balance = min(4 * workers, rows // max(1, settings.shard_rows // 10)) if workers > 1 else 1
    return int(min(4096, max(1, by_size, for_balance)))


def _input_order(source_rows: np.ndarray, rejects: list[dict]) -> np.ndarray | None:
    """The rank of each of a chunk's rows, then of each of its unreadable lines, in record-number order;
    None when the chunk has no unreadable line or a record number is unknown."""
    if not rejects or any(row["row"] is None or not row["row"].isdigit() for row in rejects):
        return None
    numbers = np.array([int(r) for r in source_rows] + [int(row["row"]) for row in rejects], dtype=np.int64)
    order = np.empty(len(numbers), dtype=np.int64)
    order[np.argsort(numbers, kind="stable")] = np.arange(len(numbers))
    return order


def partition_chats(
    chats: Path, work: Path, settings: FlagSettings, policy: NudgePolicy, progress: bool, workers: int = 1, names: ColumnNames = PLAIN_COLUMNS
) -> dict[str, Any]:
    """Phase 1: validated rows into shards (whole conversations per shard), rejected rows with reasons."""
    part_dir = work / "partition"
    if part_dir.exists():  # an unrecorded partition of a killed run; not ignore_errors: on a read-only disk
        try:  # that made the error a misleading "File exists"
            shutil.rmtree(part_dir)
        except OSError as exc:  # rmtree names the entry only
            raise OSError(exc.errno, os.strerror(exc.errno or 0), str(part_dir)) from exc
    part_dir.mkdir(parents=True)
    source = str(chats)
    readable, rejected_rows, encoding_rejects = readable_copy(chats, part_dir, source)
    fmt = table_format(chats)
    conversations = fmt == "jsonl" and jsonl_is_conversations(readable)
    n_shards = _shard_count(readable, settings, workers)
    chunk_rows = max(1, settings.chunk_rows // 10) if conversations else settings.chunk_rows
    writers: dict[int, pq.ParquetWriter] = {}
    rejected_writer = pq.ParquetWriter(part_dir / "rejected.parquet", REJECTED_SCHEMA)
    seq = 0
    rows_in = rows_written = 0
    reasons: Counter[str] = Counter()
    has = {"category": False, "ordered": False}
    position = 0  # 1-based record number in the file for CSV/Parquet rows

    def write_rejected(rows: list[dict]) -> None:
        """Rows carry their input position as `seq` when known; otherwise they are numbered on."""
        nonlocal seq
        for row in rows:
            if "seq" not in row:
                row["seq"] = seq
                seq += 1
            row["source"] = source
            reasons[reason_kind(row["reason"])] += 1
        if rows:
            rejected_writer.write_table(rejected_table(rows))

    write_rejected(rejected_rows)
    rows_in += encoding_rejects
    bar = tqdm(desc="partition", unit="rows", disable=not progress, file=sys.stderr, mininterval=1.0)
    seen_conversations: dict[tuple[str, str], Any] = {}
    try:
        for chunk in iter_table(readable, chunk_rows, names):
            frame = chunk.frame
            frame.columns = [str(c).strip().lower() for c in frame.columns]
            if conversations:
                frame, exploded_rejects = _explode_conversations(frame, seen_conversations)
                source_rows = frame.pop("source_row").to_numpy(object)
            else:
                exploded_rejects = []
                missing = [c for c in CHAT_COLUMNS if c not in frame.columns]
                if missing and len(frame):
                    raise FlagError(f"{chats}: missing column(s) {missing}; found {[c for c in frame.columns if c != '_line']}")
                if "_line" in frame.columns:
                    source_rows = frame["_line"].astype(str).to_numpy(object)
                else:
                    source_rows = np.arange(position + 1, position + len(frame) + 1).astype(str).astype(object)
                position += len(frame)
            for name in has:
                has[name] = has[name] or (name in frame.columns and not is_blank(frame[name]).all())
            base = seq
            valid_mask = np.ones(len(frame), dtype=bool)
            # input order within the chunk: rows and unreadable lines interleaved by their record number,
            # as Spark lists them (unnumbered rejects, e.g. a conversation record's, follow the chunk's rows)
            table_rejects = [{"row": None if r.row is None else str(r.row), "reason": r.reason, "raw": mask_pii(r.raw)} for r in chunk.rejected]
            order = _input_order(source_rows, table_rejects) if not conversations else None
            if order is not None:
                for row, rank in zip(table_rejects, order[len(frame):], strict=True):
                    row["seq"] = base + int(rank)
            if len(frame):
                valid, bad = validate_chat_rows(frame, policy)
                columns = [c for c in (*CHAT_COLUMNS, "category", "ordered") if c in frame.columns]
                bad_rows = []
                row_seq = base + (np.arange(len(frame)) if order is None else order[: len(frame)])
                for i, reason in bad:
                    valid_mask[i] = False
                    bad_rows.append(
                        {"seq": int(row_seq[i]), "row": str(source_rows[i]), "reason": reason, "raw": raw_line(frame.iloc[i][columns].tolist())}
                    )
                valid["seq"] = row_seq[valid_mask]
                valid["source_row"] = source_rows[valid_mask]
                write_rejected(bad_rows)
                _write_shards(valid, n_shards, part_dir, writers)
                rows_written += len(valid)
            seq = base + len(frame) + (len(table_rejects) if order is not None else 0)
            write_rejected(exploded_rejects + table_rejects)
            rows_in += len(frame) + len(exploded_rejects) + len(chunk.rejected)
            bar.update(len(frame) + len(exploded_rejects) + len(chunk.rejected))
    except TableError as exc:
        raise FlagError(str(exc)) from exc
    except OSError as exc:  # a full disk: name the work directory (flag.work_dir moves it)
        raise named_os_error(exc, part_dir) from exc
    finally:
        bar.close()
        try:  # closing writes each file's footer: the disk may fill here too
            for writer in writers.values():
                writer.close()
            rejected_writer.close()
        except OSError as exc:
            raise named_os_error(exc, part_dir) from exc
    for shard in writers:
        os.replace(part_dir / f".shard-{shard:05d}.parquet.tmp", part_dir / f"shard-{shard:05d}.parquet")
    if readable != chats:
        readable.unlink(missing_ok=True)
    # The shard count is estimated from the file's size before reading it: a few huge or rejected lines
    # leave most shards empty. Only shards that hold rows are tasks (one, empty, when none does: the merge
    # still has a result to read).
    filled = sorted(writers) or [0]
    info = {
        "format": "conversations" if conversations else "flat",
        "shards": len(filled),
        "shard_ids": filled,
        "rows_in": rows_in,
        "rows_written": rows_written,
        "rows_rejected": rows_in - rows_written,
        "rejected_reasons": dict(reasons),
        "has_category": has["category"],
        "has_ordered": has["ordered"],
    }
    write_json_atomic(info, work / "partition.json")
    return info


def _write_shards(valid: pd.DataFrame, n_shards: int, part_dir: Path, writers: dict[int, pq.ParquetWriter]) -> None:
    if valid.empty:
        return
    shard = _shard_of(valid["shop_id"].to_numpy(object), valid["conversation_id"].to_numpy(object), n_shards)
    # Checkpoints outlive a crash: they keep buyer text masked (phones, order numbers, addresses ...). The
    # model reads a masked text exactly as the raw one (`normalize` maps both to the same tokens).
    codes, distinct = pd.factorize(valid["text"].to_numpy(object))
    valid = valid.assign(text=np.asarray([mask_pii(text) for text in distinct], dtype=object)[codes])
    order = np.argsort(shard, kind="stable")
    table = pa.Table.from_pandas(valid.iloc[order][SHARD_SCHEMA.names], schema=SHARD_SCHEMA, preserve_index=False)
    shard_sorted = shard[order]
    bounds = np.flatnonzero(np.diff(shard_sorted)) + 1
    for start, end in zip(np.r_[0, bounds], np.r_[bounds, len(shard_sorted)], strict=True):
        key = int(shard_sorted[start])
        writer = writers.get(key)
        if writer is None:
            writer = writers[key] = pq.ParquetWriter(part_dir / f".shard-{key:05d}.parquet.tmp", SHARD_SCHEMA)
        writer.write_table(table.slice(start, end - start))
