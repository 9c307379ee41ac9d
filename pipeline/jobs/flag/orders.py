"""The orders export of `buyer-intent flag`: checked rows into the orders index (`orders.npz`, 16 bytes an
order), rejected rows with their reasons."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import FlagSettings
from pipeline.jobs.flag.files import FlagError, raw_line, readable_copy, rejected_table, write_json_atomic, write_parquet_atomic
from pipeline.nudge import NudgePolicy, OrdersIndex
from pipeline.nudge.rows import ORDER_COLUMNS, check_order_rows
from pipeline.data.tables import PLAIN_COLUMNS, ColumnNames, TableError, iter_table
from pipeline.text import mask_pii
from pipeline.times import format_times


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
            rejected += [{"row": str(rows[i]), "reason": str(reason[i]), "raw": raw_line(frame.iloc[i][columns].tolist())} for i in bad]
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
    write_parquet_atomic(rejected_table(rejected), work / "orders-rejected.parquet")
    if readable != orders:
        readable.unlink(missing_ok=True)
    info = {
        "rows_in": rows_in,
        "rows_used": used,
        "rows_rejected": len(rejected),
        "last_paid_at": format_times(np.array([index.paid_at_ms.max()]), policy.tz)[0] if len(index) else None,
    }
    write_json_atomic(info, work / "orders.json")
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
