"""`buyer-intent flag`: find lost shoppers who had wanted to buy and write the nudge list (催拍).

Shop back-ends export chats as flat message tables that need not be sorted by conversation, and large
ones do not fit in memory, so the job runs in three phases, each checkpointed in a work directory keyed
by a hash of the inputs' paths, sizes and mtimes, the model and the settings (a killed run rerun with the
same arguments resumes; anything changed starts afresh):

1. partition: read the chats in chunks, reject malformed rows with a reason, and append valid rows to N
   Parquet shards by hash(shop_id, conversation_id): every conversation lands whole in one shard.
2. shards: worker processes sort, score and decide one shard at a time (`pipeline.nudge`, the same code
   the service decides with); each finished shard is checkpointed.
3. merge: candidates of all shards, one nudge per buyer/shop/window, a deterministic order, and the
   output, `<out>.rejected.csv` and `<out>.summary.json`, each written atomically.

Rows in = rows used + rows rejected, and the summary says so.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.bundle import sha256_file
from pipeline.config import Config, Registry
from pipeline.config import FlagSettings, ShareAlertSettings, load_flag_settings
from pipeline.nudge import NUDGE_COLUMNS, NudgePolicy, OrdersIndex
from pipeline.nudge.features import score_flat
from pipeline.nudge.policy import ORDERED_UNKNOWN, REASON_FLAGGED, REASON_ORDER_UNKNOWN, REASON_SKIPPED, share_warnings
from pipeline.nudge.rows import ORDER_COLUMNS, check_order_rows, check_turns, is_blank
from pipeline.nudge.rules import apply_one_per_window, decide_table
from pipeline.times import format_times
from pipeline.tables import (
    BINARY_FORMATS,
    PLAIN_COLUMNS,
    ColumnNames,
    TableError,
    atomic_file,
    detect_encoding,
    iter_table,
    named_os_error,
    parse_yes_no_column,
    require_columns,
    table_format,
    utf8_copy,
    whole_file_encoding,
    write_table_atomic,
    write_text_atomic,
)
from pipeline.text import mask_pii

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 2  # bump when what the work directory holds changes
CHAT_COLUMNS = ("conversation_id", "buyer_id", "shop_id", "role", "text", "sent_at")
OUTPUT_COLUMNS = NUDGE_COLUMNS
_BYTES_PER_ROW = {"csv": 90, "jsonl": 140, "xlsx": 40}  # only to choose the number of shards (xlsx is compressed)

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


# --- small helpers ----------------------------------------------------------------------------------


def _write_json_atomic(data: dict, path: Path) -> None:
    write_text_atomic(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n", path)


def _write_parquet_atomic(table: pa.Table, path: Path) -> None:
    with atomic_file(path) as handle:
        pq.write_table(table, handle)


def _file_identity(path: Path | None) -> dict | None:
    if path is None:
        return None
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _rejected_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=REJECTED_SCHEMA) if rows else REJECTED_SCHEMA.empty_table()


def _raw(values: list[Any]) -> str:
    """A rejected row as one masked line: rejected files hold buyer text too."""
    return mask_pii(",".join("" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in values)).replace("\x00", "\\x00")


def _as_text(series: pd.Series) -> pd.Series:
    """Any column as object strings with None for missing (Parquet may carry ints, JSON numbers)."""
    values = series.astype(object).where(series.notna(), None)
    if pd.api.types.is_string_dtype(series.dtype) and series.dtype != object:
        return values
    return values.map(lambda v: v if v is None or isinstance(v, str) else str(v))


def reason_kind(reason: str) -> str:
    """'unknown role 'x'' -> 'unknown role': rejected reasons counted by kind in the summary."""
    return re.split(r" '| \(|, got |: line ", reason)[0]


# --- encodings --------------------------------------------------------------------------------------


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


# --- phase 1: partition -----------------------------------------------------------------------------


def _jsonl_is_conversations(path: Path, look_at: int = 1000) -> bool:
    """Conversation records (with `messages`) or one message per line, from the first lines that parse:
    a malformed first line is quarantined later, it does not decide the format of the file."""
    encoding = detect_encoding(path)
    with open(path, encoding="utf-8-sig" if encoding == "utf-8" else encoding, errors="replace") as handle:
        for _, line in zip(range(look_at), handle):
            if line.strip():
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, RecursionError):  # RecursionError: nested too deeply
                    continue
                if isinstance(record, dict):
                    return "messages" in record
    return False


def _explode_conversations(frame: pd.DataFrame, seen: dict[tuple[str, str], Any]) -> tuple[pd.DataFrame, list[dict]]:
    """Conversation JSONL records -> one row per message; a record without a usable message list is one
    rejected row, and so is a second record of a conversation already read (`seen`: shop and
    conversation id -> its first line, across chunks): merging two records would double its turns."""
    columns = {name: [] for name in (*CHAT_COLUMNS, "category", "ordered", "source_row")}
    rejected: list[dict] = []
    for record in frame.to_dict(orient="records"):
        line = record.get("_line")
        messages = record.get("messages")
        raw = _raw([record.get("conversation_id"), record.get("buyer_id"), record.get("shop_id")])
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
                rejected.append({"row": f"{line}:{position}", "reason": "a message must be a JSON object", "raw": _raw([message])})
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
    text = {name: _as_text(frame[name]) for name in CHAT_COLUMNS if name != "sent_at"}
    for name in ("conversation_id", "buyer_id", "shop_id"):
        reject(is_blank(text[name]), f"missing {name}")
    for name in ("conversation_id", "buyer_id", "shop_id", "text"):  # a NUL would reach the nudge list (CRMs, databases refuse it)
        reject(text[name].str.contains("\x00", regex=False).fillna(False).to_numpy(bool), f"NUL byte in {name}")
    sent_source = frame["sent_at"] if sent_is_datetime else _as_text(frame["sent_at"])
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
    category = _as_text(frame["category"]).fillna("").str.strip() if "category" in frame.columns else pd.Series([""] * n, dtype=object)
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
    conversations = fmt == "jsonl" and _jsonl_is_conversations(readable)
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
            rejected_writer.write_table(_rejected_table(rows))

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
            if len(frame):
                valid, bad = validate_chat_rows(frame, policy)
                columns = [c for c in (*CHAT_COLUMNS, "category", "ordered") if c in frame.columns]
                bad_rows = []
                for i, reason in bad:
                    valid_mask[i] = False
                    bad_rows.append(
                        {"seq": base + i, "row": str(source_rows[i]), "reason": reason, "raw": _raw(frame.iloc[i][columns].tolist())}
                    )
                valid["seq"] = base + np.flatnonzero(valid_mask)
                valid["source_row"] = source_rows[valid_mask]
                seq = base + len(frame)
                write_rejected(bad_rows)
                _write_shards(valid, n_shards, part_dir, writers)
                rows_written += len(valid)
            table_rejects = [{"row": None if r.row is None else str(r.row), "reason": r.reason, "raw": mask_pii(r.raw)} for r in chunk.rejected]
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
    info = {
        "format": "conversations" if conversations else "flat",
        "shards": n_shards,
        "rows_in": rows_in,
        "rows_written": rows_written,
        "rows_rejected": rows_in - rows_written,
        "rejected_reasons": dict(reasons),
        "has_category": has["category"],
        "has_ordered": has["ordered"],
    }
    _write_json_atomic(info, work / "partition.json")
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


# --- orders -----------------------------------------------------------------------------------------


def build_orders_index(orders: Path, work: Path, settings: FlagSettings, policy: NudgePolicy, names: ColumnNames = PLAIN_COLUMNS) -> dict[str, Any]:
    """Orders -> `orders.npz` (buyer+shop key, paid_at; 16 bytes an order) and their rejected rows."""
    source = str(orders)
    readable, rejected, encoding_rejects = readable_copy(orders, work, source)
    keys: list[np.ndarray] = []
    times: list[np.ndarray] = []
    rows_in, used = encoding_rejects, 0
    position = 0
    try:
        for chunk in iter_table(readable, settings.chunk_rows, names):
            frame = chunk.frame
            frame.columns = [str(c).strip().lower() for c in frame.columns]
            missing = [c for c in ORDER_COLUMNS if c not in frame.columns]
            if missing and len(frame):
                raise FlagError(f"{orders}: missing column(s) {missing}; found {[c for c in frame.columns if c != '_line']}")
            rows_in += len(frame) + len(chunk.rejected)
            rejected += [{"row": None if r.row is None else str(r.row), "reason": r.reason, "raw": mask_pii(r.raw)} for r in chunk.rejected]
            if frame.empty:
                continue
            checked = check_order_rows(frame, policy)
            reason = checked.reasons
            bad = np.flatnonzero(reason != None)  # noqa: E711
            rows = frame["_line"].astype(str).to_numpy(object) if "_line" in frame.columns else np.arange(position + 1, position + len(frame) + 1).astype(str)
            position += len(frame)
            columns = [c for c in frame.columns if c != "_line"]
            rejected += [{"row": str(rows[i]), "reason": str(reason[i]), "raw": _raw(frame.iloc[i][columns].tolist())} for i in bad]
            good = reason == None  # noqa: E711
            keys.append(checked.keys)
            times.append(checked.paid_at)
            used += int(good.sum())
    except TableError as exc:
        raise FlagError(str(exc)) from exc
    index = OrdersIndex(np.concatenate(keys) if keys else np.zeros(0, np.uint64), np.concatenate(times) if times else np.zeros(0, np.int64))
    _save_orders_index(index, work)
    for i, row in enumerate(rejected):
        row["seq"], row["source"] = i, source
    _write_parquet_atomic(_rejected_table(rejected), work / "orders-rejected.parquet")
    if readable != orders:
        readable.unlink(missing_ok=True)
    info = {
        "rows_in": rows_in,
        "rows_used": used,
        "rows_rejected": len(rejected),
        "last_paid_at": format_times(np.array([index.paid_at_ms.max()]), policy.tz)[0] if len(index) else None,
    }
    _write_json_atomic(info, work / "orders.json")
    return info


def _save_orders_index(index: OrdersIndex, work: Path) -> None:
    """`orders.npz` through a temporary file beside it. A failed write (a full disk: 16 bytes an order)
    leaves no temporary file holding the space, and says which directory and what to do in one line."""
    tmp, target = work / ".orders.npz.tmp", work / "orders.npz"
    try:
        index.save(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        reason = exc.strerror or str(exc)
        raise FlagError(
            f"{reason}: cannot write the orders index {target} ({len(index)} orders); "
            f"free space on that disk or set flag.work_dir to a directory with room"
        ) from exc


# --- phase 2: shards --------------------------------------------------------------------------------

_STATE: dict[str, Any] = {}


def _die_with_parent(parent: int, interval_s: float = 0.5) -> None:
    """A worker whose parent was killed (kill -9 leaves no chance to stop the pool) exits by itself
    instead of holding ~400 MB and a half-written shard."""

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _init_worker(model_dir: str, expected_seal: str | None, settings_json: str, orders_path: str | None, parent: int | None = None) -> None:
    """Load the model and the orders index once per worker process (`parent`: the job's pid, to exit with it)."""
    from pipeline.bundle import load_bundle
    from pipeline.conversation import ConversationScorer
    from pipeline.inference import Predictor

    if parent is not None:
        _die_with_parent(parent)
    settings = FlagSettings.model_validate_json(settings_json)
    predictor = Predictor(load_bundle(model_dir, expected_seal))
    predictor.warm_up()
    _STATE.update(
        settings=settings,
        policy=NudgePolicy.from_settings(settings),
        scorer=ConversationScorer(predictor),
        orders=OrdersIndex.load(orders_path) if orders_path else None,
    )


@dataclass(frozen=True)
class ShardTask:
    index: int
    path: str  # the shard's Parquet file (may not exist: an empty shard)
    results: str  # directory for the shard's results


def conversation_categories(category_values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Each conversation's category: the first non-empty one among its rows (rows grouped by `starts`)."""
    n_conv = len(starts) - 1
    conv_of_row = np.repeat(np.arange(n_conv), np.diff(starts))
    category = np.full(n_conv, "", dtype=object)
    known = np.flatnonzero(category_values != "")
    if len(known):
        convs, first = np.unique(conv_of_row[known], return_index=True)
        category[convs] = category_values[known[first]]
    return category


def _conversation_starts(frame: pd.DataFrame) -> np.ndarray:
    shop, cid = frame["shop_id"].to_numpy(object), frame["conversation_id"].to_numpy(object)
    change = np.ones(len(frame), dtype=bool)
    if len(frame) > 1:
        change[1:] = (shop[1:] != shop[:-1]) | (cid[1:] != cid[:-1])
    return np.append(np.flatnonzero(change), len(frame)).astype(np.int64)


def process_shard(task: ShardTask) -> dict[str, Any]:
    """Phase 2 for one shard: sort, score, decide; writes candidates, counts and rejected rows, then the
    done marker (`shard-NNNNN.json`) last, so a shard either counts as finished or is redone."""
    started, cpu_started = time.perf_counter(), time.process_time()
    settings: FlagSettings = _STATE["settings"]
    policy: NudgePolicy = _STATE["policy"]
    scorer = _STATE["scorer"]
    results = Path(task.results)
    name = f"shard-{task.index:05d}"
    path = Path(task.path)
    frame = pq.read_table(path).to_pandas() if path.exists() else SHARD_SCHEMA.empty_table().to_pandas()
    for column in ("shop_id", "conversation_id", "buyer_id", "role", "text", "source_row", "category"):
        frame[column] = frame[column].astype(object)
    frame = frame.sort_values(["shop_id", "conversation_id", "sent_at", "seq"], kind="mergesort").reset_index(drop=True)
    # One conversation, one buyer: rows naming another buyer than the first message are rejected.
    starts = _conversation_starts(frame)
    first_buyer = np.repeat(frame["buyer_id"].to_numpy(object)[starts[:-1]], np.diff(starts))
    mismatch = frame["buyer_id"].to_numpy(object) != first_buyer
    rejected = [
        {"seq": int(row.seq), "source": "", "row": row.source_row,
         "reason": "buyer_id differs from the conversation's first message",
         "raw": _raw([row.conversation_id, row.buyer_id, row.shop_id, row.role, row.text])}
        for row in frame[mismatch].itertuples(index=False)
    ]
    if mismatch.any():
        frame = frame[~mismatch].reset_index(drop=True)
        starts = _conversation_starts(frame)
    heads = starts[:-1]
    n_conv = len(heads)
    sent_at = frame["sent_at"].to_numpy(np.int64)
    category = conversation_categories(frame["category"].to_numpy(object), starts)
    ordered = np.maximum.reduceat(frame["ordered"].to_numpy(np.int8), heads) if n_conv else np.zeros(0, np.int8)
    scored, stats = score_flat(
        frame["role"].to_numpy(object), frame["text"].to_numpy(object), starts, scorer, policy, settings.predict_batch
    )
    table = pd.concat(
        [
            pd.DataFrame(
                {
                    "conversation_id": frame["conversation_id"].to_numpy(object)[heads],
                    "buyer_id": frame["buyer_id"].to_numpy(object)[heads],
                    "shop_id": frame["shop_id"].to_numpy(object)[heads],
                    "category": category,
                    "first_ms": sent_at[heads],
                    "last_ms": sent_at[starts[1:] - 1] if n_conv else np.zeros(0, np.int64),
                    "ordered": ordered.astype(np.int8),
                }
            ),
            scored,
        ],
        axis=1,
    )
    orders_index = _STATE["orders"]
    decided = decide_table(table, policy, policy.threshold(scorer), orders_index)
    # flagged before their window is over in the orders file: not paid *so far* (as of its last payment)
    horizon = int(orders_index.paid_at_ms.max()) if orders_index is not None and len(orders_index) else None
    window_open = (
        (decided["reason"] == REASON_FLAGGED) & (decided["last_ms"].to_numpy(np.int64) + policy.window_ms > horizon)
        if horizon is not None
        else np.zeros(len(decided), dtype=bool)
    )
    candidates = decided[decided["candidate"]][
        ["conversation_id", "buyer_id", "shop_id", "category", "purchase_score", "evidence", "open_concern",
         "suggested_nudge", "nudge_text", "priority", "send_after_ms"]
    ]
    counts = (
        decided.assign(
            conversations=1,
            lost_shoppers=decided["lost"] == 1,
            lost_with_intent=(decided["lost"] == 1) & decided["expressed_purchase_intent"],
            skipped_complaint_or_refund=decided["reason"] == REASON_SKIPPED,
            order_unknown=decided["reason"] == REASON_ORDER_UNKNOWN,
            candidates=decided["reason"] == REASON_FLAGGED,
            window_open=window_open,
        )
        .groupby(["shop_id", "category"], sort=True)[
            ["conversations", "lost_shoppers", "lost_with_intent", "skipped_complaint_or_refund", "order_unknown", "candidates", "window_open"]
        ]
        .sum()
        .astype(np.int64)
        .reset_index()
    )
    _write_parquet_atomic(pa.Table.from_pandas(candidates, preserve_index=False), results / f"{name}.candidates.parquet")
    _write_parquet_atomic(pa.Table.from_pandas(counts, preserve_index=False), results / f"{name}.counts.parquet")
    _write_parquet_atomic(_rejected_table(rejected), results / f"{name}.rejected.parquet")
    done = {
        "shard": task.index,
        "rows_used": int(len(frame)),
        "rows_rejected": len(rejected),
        "conversations": n_conv,
        **stats,
        "seconds": round(time.perf_counter() - started, 3),
        "cpu_seconds": round(time.process_time() - cpu_started, 3),
    }
    _write_json_atomic(done, results / f"{name}.json")
    return done


def _run_shards(
    tasks: list[ShardTask], init_args: tuple, workers: int, progress: bool
) -> list[dict[str, Any]]:
    """Pending shards in worker processes (in this process when one worker is enough)."""
    if not tasks:
        return []
    done: list[dict[str, Any]] = []
    bar = tqdm(total=len(tasks), desc="shards", unit="shard", disable=not progress, file=sys.stderr)
    try:
        if workers <= 1 or len(tasks) == 1:
            _init_worker(*init_args)
            for task in tasks:
                done.append(process_shard(task))
                bar.update(1)
            return done
        context = multiprocessing.get_context("spawn")  # no fork: pyarrow and BLAS thread pools do not survive it
        # the job's pid, not the worker's getppid(): a worker still starting when the job is killed would
        # read the pid of the process it was reparented to, and live on
        pool_args = (*init_args, os.getpid())
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=pool_args) as pool:
            futures = [pool.submit(process_shard, task) for task in tasks]
            try:
                for future in concurrent.futures.as_completed(futures):
                    done.append(future.result())
                    bar.update(1)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return done
    finally:
        bar.close()


# --- phase 3: merge ---------------------------------------------------------------------------------


def _open_window_warnings(n_open: int, orders_info: dict | None, policy: NudgePolicy) -> list[str]:
    """Candidates whose attribution window runs past the last payment in the orders file have not paid
    *so far*; right for a quick 催拍 (a short --window), premature for a lost-shopper list."""
    if not n_open:
        return []
    return [
        f"{n_open} nudge candidate(s) (before one per buyer and shop) end less than {policy.window_hours:g} h before the last payment in the orders file "
        f"({(orders_info or {}).get('last_paid_at')}): those buyers have not paid so far but still may; for a nudge within "
        "hours keep them (use a short --window), for a final list export orders that cover every window"
    ]


def _orders_warnings(orders: Path | None, orders_info: dict | None) -> list[str]:
    """An orders file without a usable order makes every shopper "lost": say so instead of flagging them all."""
    if orders is None or not orders_info or orders_info.get("rows_used", 0) > 0:
        return []
    return [f"{orders}: no usable order ({orders_info.get('rows_in', 0)} rows, {orders_info.get('rows_rejected', 0)} rejected): "
            "every shopper counts as lost; check that this is the orders export of these shops and this period"]


def _share(flagged: int, lost: int) -> float | None:
    return round(flagged / lost, 4) if lost else None


def _group_summary(counts: pd.DataFrame, flagged: pd.DataFrame, key: str) -> dict[str, dict[str, Any]]:
    grouped = counts.groupby(key, sort=True)[["conversations", "lost_shoppers", "candidates"]].sum()
    flagged_counts = flagged.groupby(key).size() if len(flagged) else pd.Series(dtype=np.int64)
    summary = {}
    for name, row in grouped.iterrows():
        n_flagged = int(flagged_counts.get(name, 0))
        summary[str(name) or "unknown"] = {
            "conversations": int(row["conversations"]),
            "lost_shoppers": int(row["lost_shoppers"]),
            "flagged": n_flagged,
            "flagged_share_of_lost": _share(n_flagged, int(row["lost_shoppers"])),
        }
    return summary


def merge_results(
    work: Path, out: Path, chats: Path, orders: Path | None, partition: dict, orders_info: dict | None,
    policy: NudgePolicy, threshold_info: dict[str, Any], share_alert: ShareAlertSettings | None = None,
) -> dict[str, Any]:
    """Phase 3: one nudge per buyer/shop/window, deterministic order, atomic output, rejected rows, summary."""
    results = work / "results"
    shard_names = [f"shard-{i:05d}" for i in range(partition["shards"])]
    done = [json.loads((results / f"{name}.json").read_text(encoding="utf-8")) for name in shard_names]
    candidates = pd.concat([pd.read_parquet(results / f"{name}.candidates.parquet") for name in shard_names], ignore_index=True)
    counts = pd.concat([pd.read_parquet(results / f"{name}.counts.parquet") for name in shard_names], ignore_index=True)
    candidates = candidates.sort_values(["shop_id", "conversation_id"], kind="mergesort").reset_index(drop=True)
    keep = apply_one_per_window(candidates, policy)
    flagged = candidates[keep].copy()
    flagged = flagged.sort_values(
        ["priority", "purchase_score", "send_after_ms", "shop_id", "conversation_id"],
        ascending=[True, False, True, True, True],
        kind="mergesort",
    ).reset_index(drop=True)
    flagged["send_after"] = format_times(flagged["send_after_ms"].to_numpy(np.int64), policy.tz)
    columns = [c for c in OUTPUT_COLUMNS if c != "category" or partition["has_category"]]
    output = flagged[columns].copy()
    output["priority"] = output["priority"].astype(np.int64)
    summary_path = out.with_name(f"{out.name}.summary.json")
    rejected_path = out.with_name(f"{out.name}.rejected.csv")
    # The new files are written whole beside the old set first (a full disk or a kill there leaves the
    # previous set as it was). The summary is the set's commit record: removed before the new files
    # replace the old ones and written last with their digests, so a kill in between leaves no summary
    # (an unfinished run) rather than a summary that describes other files.
    staged = {path: path.with_name(f".{path.name}.staged{path.suffix}") for path in (out, rejected_path)}
    for leftover in out.parent.iterdir():  # temporary and staged files of a killed run
        if leftover.name.startswith((f".{out.name}.", f"..{out.name}.")) and leftover.is_file() and (
            leftover.name.endswith((".tmp", *(f".staged{p.suffix}" for p in staged)))
        ):
            leftover.unlink(missing_ok=True)
    try:
        write_table_atomic(output, staged[out])
    except BaseException:
        staged[out].unlink(missing_ok=True)
        raise

    rejected_parts = [pq.read_table(work / "partition" / "rejected.parquet").to_pandas()]
    shard_rejects = pd.concat([pd.read_parquet(results / f"{name}.rejected.parquet") for name in shard_names], ignore_index=True)
    shard_rejects["source"] = str(chats)
    rejected_parts.append(shard_rejects)
    chat_rejected = pd.concat(rejected_parts, ignore_index=True).sort_values("seq", kind="mergesort")
    order_rejected = pd.read_parquet(work / "orders-rejected.parquet") if orders is not None else REJECTED_SCHEMA.empty_table().to_pandas()
    rejected = pd.concat([chat_rejected, order_rejected.sort_values("seq", kind="mergesort")], ignore_index=True)
    try:
        write_table_atomic(rejected[["source", "row", "reason", "raw"]], staged[rejected_path])
    except BaseException:
        for path in staged.values():
            path.unlink(missing_ok=True)
        raise

    rows_used = sum(d["rows_used"] for d in done)
    rows_rejected = partition["rows_rejected"] + sum(d["rows_rejected"] for d in done)
    reasons = Counter(partition["rejected_reasons"])
    reasons.update(Counter(reason_kind(r) for r in shard_rejects["reason"].tolist()))
    totals = counts[["conversations", "lost_shoppers", "lost_with_intent", "skipped_complaint_or_refund", "order_unknown", "candidates", "window_open"]].sum()
    lost = int(totals["lost_shoppers"])
    summary = {
        "input": {"chats": str(chats), "orders": None if orders is None else str(orders), "format": partition["format"]},
        "rows": {
            "in": partition["rows_in"],
            "used": rows_used,
            "rejected": rows_rejected,
            "balanced": partition["rows_in"] == rows_used + rows_rejected,
            "rejected_reasons": dict(sorted(reasons.items())),
            "rejected_file": str(rejected_path),
        },
        "orders": orders_info,
        "lost_rule": "ordered column" if orders is None else f"no paid order at the shop from the {policy.attribution_start.replace('_', ' ')} to the last message + window",
        "window_hours": policy.window_hours,
        **threshold_info,
        "conversations": int(totals["conversations"]),
        "lost_shoppers": lost,
        "lost_with_purchase_intent": int(totals["lost_with_intent"]),
        "skipped_complaint_or_refund": int(totals["skipped_complaint_or_refund"]),
        "suppressed_one_per_window": int(len(candidates) - len(flagged)),
        "order_status_unknown": int(totals["order_unknown"]),
        "flagged": int(len(flagged)),
        "flagged_share_of_lost": _share(len(flagged), lost),
        "candidates_before_window_end": int(totals["window_open"]),
        "warnings": share_warnings(len(flagged), lost, share_alert or ShareAlertSettings())
        + _orders_warnings(orders, orders_info)
        + _open_window_warnings(int(totals["window_open"]), orders_info, policy),
        "messages": {
            "buyer": sum(d["buyer_messages"] for d in done),
            "distinct_buyer_texts": sum(d["unique_buyer_texts"] for d in done),
        },
        "per_shop": _group_summary(counts, flagged, "shop_id"),
        "per_category": _group_summary(counts, flagged, "category") if partition["has_category"] else {},
        "output": str(out),
        "files_sha256": {path.name: sha256_file(staged[path]) for path in (out, rejected_path)},
    }
    for warning in summary["warnings"]:
        log.warning("%s", warning)
    if not summary["rows"]["balanced"]:
        log.error("rows in (%d) != used (%d) + rejected (%d)", partition["rows_in"], rows_used, rows_rejected)
    summary_path.unlink(missing_ok=True)
    for path, new in staged.items():
        os.replace(new, path)
    _write_json_atomic(summary, summary_path)
    return summary


def output_set_problems(out: str | Path) -> list[str]:
    """What is wrong with a finished run's output set (empty: the nudge list, its rejected rows and its
    summary belong together): no summary means the run did not finish publishing."""
    out = Path(out)
    summary_path = out.with_name(f"{out.name}.summary.json")
    if not summary_path.is_file():
        return [f"{summary_path.name} is missing: the run that wrote {out.name} did not finish; run it again"]
    recorded = json.loads(summary_path.read_text(encoding="utf-8")).get("files_sha256", {})
    problems = []
    for name, digest in recorded.items():
        path = out.with_name(name)
        if not path.is_file() or sha256_file(path) != digest:
            problems.append(f"{name} is not the file {summary_path.name} describes")
    return problems


# --- the job ----------------------------------------------------------------------------------------


def _release_memory() -> None:
    """Hand freed heap back to the OS (glibc keeps it otherwise), so the process tree's peak stays low."""
    import ctypes
    import gc

    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _run_key(chats: Path, orders: Path | None, model_identity: dict, settings: FlagSettings, names: list[ColumnNames] | None = None) -> str:
    material = {
        "columns": [{"aliases": n.aliases, "explicit": n.explicit} for n in names or []],
        "format": CHECKPOINT_FORMAT,
        "chats": _file_identity(chats),
        "orders": _file_identity(orders),
        "model": model_identity,
        "settings": settings.model_dump(mode="json", exclude={"workers", "work_dir", "keep_work_dir"}),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:20]


class FlagJob(NamedTuple):
    chats: Path
    out: Path
    orders: Path | None
    settings: FlagSettings
    policy: NudgePolicy
    chat_names: ColumnNames
    order_names: ColumnNames


def checked_job(chats: Path, out: Path, orders: Path | None, config: Config, window_hours: float | None) -> FlagJob:
    """A flag job's paths, settings and column names, with the files, formats and headers checked before a
    model is resolved or loaded: one set of checks and messages for both engines."""
    chats, out = Path(chats), Path(out)
    orders = Path(orders) if orders is not None else None
    settings = load_flag_settings(config.flag, window_hours)
    for path, what in ((chats, "chats"), (orders, "orders")):
        if path is not None:
            if not path.is_file():
                raise FlagError(f"{path}: {what} file not found")
            try:
                table_format(path)
            except TableError as exc:
                raise FlagError(str(exc)) from exc
    try:
        table_format(out)
    except TableError as exc:
        raise FlagError(f"--out {exc}") from exc
    chat_names = config.columns.names().only((*CHAT_COLUMNS, "category", "ordered"))
    order_names = config.columns.names().only(ORDER_COLUMNS)
    try:
        if not (table_format(chats) == "jsonl" and _jsonl_is_conversations(chats)):
            require_columns(chats, CHAT_COLUMNS, chat_names)
        if orders is not None:
            require_columns(orders, ORDER_COLUMNS, order_names)
    except TableError as exc:
        raise FlagError(str(exc)) from exc
    return FlagJob(chats, out, orders, settings, NudgePolicy.from_settings(settings), chat_names, order_names)


def run_flag(
    chats: Path,
    out: Path,
    orders: Path | None,
    model: str | None,
    window_hours: float | None,
    config: Config,
    *,
    work_dir: Path | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> dict:
    """Write the nudge list for `chats` to `out` (format by extension) with `<out>.rejected.csv` and
    `<out>.summary.json`; returns the summary. Resumes from the checkpoints of an interrupted identical run.

    Shards run in `workers` spawned processes (config `flag.workers`; 0 = one per CPU): a script calling
    this must do so under `if __name__ == "__main__":`, as multiprocessing requires."""
    from pipeline.bundle import verify_bundle
    from pipeline.inference import resolve_model

    started = time.perf_counter()
    chats, out, orders, settings, policy, chat_names, order_names = checked_job(chats, out, orders, config, window_hours)

    resolved = resolve_model(model, Registry.from_config(config))
    manifest = verify_bundle(resolved.directory, resolved.expected_seal)  # a tampered model is refused before any work
    thresholds = manifest.get("thresholds", {})
    model_threshold = float(thresholds.get("conversation", thresholds.get("purchase", 0.5)))
    model_identity = {"sha256": (manifest.get("sha256") or {}).get("models.skops"), "version": resolved.version, "name": resolved.name}
    key = _run_key(chats, orders, model_identity, settings, [chat_names, order_names])
    base = Path(work_dir or settings.work_dir or out.parent / f".{out.name}.work")
    work = base / key
    if base.is_dir():
        for stale in base.iterdir():
            if stale.is_dir() and stale.name != key:
                shutil.rmtree(stale, ignore_errors=True)
    (work / "results").mkdir(parents=True, exist_ok=True)

    n_workers = workers if workers is not None else settings.workers
    n_workers = n_workers or os.cpu_count() or 1
    if (work / "partition.json").is_file():
        partition = json.loads((work / "partition.json").read_text(encoding="utf-8"))
        log.info("partition: resumed from %s", work)
    else:
        t0 = time.perf_counter()
        partition = partition_chats(chats, work, settings, policy, progress, n_workers, chat_names)
        log.info("partition: %d rows into %d shards in %.1fs", partition["rows_in"], partition["shards"], time.perf_counter() - t0)
    _release_memory()  # the partition's buffers: the parent idles while workers run
    if orders is None and not partition["has_ordered"]:
        raise FlagError(f"{chats}: no --orders and no `ordered` column: cannot tell which shoppers were lost")
    orders_info = None
    if orders is not None:
        if (work / "orders.json").is_file() and (work / "orders.npz").is_file():
            orders_info = json.loads((work / "orders.json").read_text(encoding="utf-8"))
        else:
            orders_info = build_orders_index(orders, work, settings, policy, order_names)
            _release_memory()

    tasks = [
        ShardTask(i, str(work / "partition" / f"shard-{i:05d}.parquet"), str(work / "results"))
        for i in range(partition["shards"])
        if not (work / "results" / f"shard-{i:05d}.json").is_file()
    ]
    if len(tasks) < partition["shards"]:
        log.info("shards: %d of %d already done, resuming", partition["shards"] - len(tasks), partition["shards"])
    init_args = (
        str(resolved.directory),
        resolved.expected_seal,
        settings.model_dump_json(),
        str(work / "orders.npz") if orders is not None else None,
    )
    t0 = time.perf_counter()
    finished = _run_shards(tasks, init_args, min(n_workers, max(1, len(tasks))), progress)
    log.info(
        "shards: %d processed in %.1fs (%.1f CPU-s in shard work)",
        len(tasks), time.perf_counter() - t0, sum(d["cpu_seconds"] for d in finished),
    )

    threshold_info = {
        "threshold": settings.min_score if settings.min_score is not None else model_threshold,
        "model": {"name": resolved.name, "version": resolved.version, "sha256": model_identity["sha256"]},
    }
    summary = merge_results(work, out, chats, orders, partition, orders_info, policy, threshold_info, settings.share_alert)
    if not settings.keep_work_dir:
        shutil.rmtree(work, ignore_errors=True)
        if base.is_dir() and not any(base.iterdir()):
            base.rmdir()
    log.info("flag: %d conversations, %d flagged in %.1fs", summary["conversations"], summary["flagged"], time.perf_counter() - started)
    return summary

