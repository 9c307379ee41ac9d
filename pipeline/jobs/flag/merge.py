"""Phase 3 of `buyer-intent flag`: candidates of all shards, one nudge per buyer/shop/window, a
deterministic order, and the output set (the list, `<out>.rejected.csv`, `<out>.summary.json`) published
as a whole."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline.bundle import sha256_file
from pipeline.config import ShareAlertSettings
from pipeline.drift import estimate_from_counts, shift_warnings, summary_record
from pipeline.jobs.flag.files import OUTPUT_COLUMNS, REJECTED_SCHEMA, reason_kind, write_json_atomic
from pipeline.nudge import NudgePolicy
from pipeline.nudge.policy import share_warnings
from pipeline.nudge.rules import apply_one_per_window
from pipeline.data.tables import DEFAULT_CSV_ENCODING, write_table_atomic
from pipeline.times import format_times

log = logging.getLogger(__name__)


def open_window_warnings(n_open: int, orders_info: dict | None, policy: NudgePolicy) -> list[str]:
    """Candidates whose attribution window runs past the last payment in the orders file have not paid
    *so far*; right for a quick 催拍 (a short --window), premature for a lost-shopper list."""
    if not n_open:
        return []
    return [
        f"{n_open} nudge candidate(s) (before one per buyer and shop) end less than {policy.window_hours:g} h before the last payment in the orders file "
        f"({(orders_info or {}).get('last_paid_at')}): those buyers have not paid so far but still may; for a nudge within "
        "hours keep them (use a short --window), for a final list export orders that cover every window"
    ]


def orders_warnings(orders: Path | None, orders_info: dict | None) -> list[str]:
    """An orders file without a usable order makes every shopper "lost": say so instead of flagging them all."""
    if orders is None or not orders_info or orders_info.get("rows_used", 0) > 0:
        return []
    return [f"{orders}: no usable order ({orders_info.get('rows_in', 0)} rows, {orders_info.get('rows_rejected', 0)} rejected): "
            "every shopper counts as lost; check that this is the orders export of these shops and this period"]


def share_of_lost(flagged: int, lost: int) -> float | None:
    return round(flagged / lost, 4) if lost else None


def group_entry(conversations: int, lost: int, flagged: int, buyer_messages: int, confident: int,
                manifest: Mapping[str, Any]) -> dict[str, Any]:
    """One shop's (or category's) line of the summary, on both engines. The estimated intent accuracy of its
    buyer messages (`pipeline.drift`; None without the model's record) tells which shop's chats read unlike the
    validation data: the one to calibrate a model for (`train --calibration-chats`). Read it with its count."""
    estimate = estimate_from_counts(confident, buyer_messages, manifest)
    return {
        "conversations": conversations,
        "lost_shoppers": lost,
        "flagged": flagged,
        "flagged_share_of_lost": share_of_lost(flagged, lost),
        "buyer_messages": buyer_messages,
        "estimated_accuracy": None if estimate is None else estimate.estimated,
    }


def _group_summary(counts: pd.DataFrame, flagged: pd.DataFrame, key: str, manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    grouped = counts.groupby(key, sort=True)[["conversations", "lost_shoppers", "candidates", "buyer_messages", "confident_buyer_messages"]].sum()
    flagged_counts = flagged.groupby(key).size() if len(flagged) else pd.Series(dtype=np.int64)
    return {
        str(name) or "unknown": group_entry(int(row["conversations"]), int(row["lost_shoppers"]), int(flagged_counts.get(name, 0)),
                                            int(row["buyer_messages"]), int(row["confident_buyer_messages"]), manifest)
        for name, row in grouped.iterrows()
    }


def merge_results(
    work: Path, out: Path, chats: Path, orders: Path | None, partition: dict, orders_info: dict | None,
    policy: NudgePolicy, threshold_info: dict[str, Any], share_alert: ShareAlertSettings | None = None,
    csv_encoding: str = DEFAULT_CSV_ENCODING, manifest: Mapping[str, Any] | None = None, warn_drop: float = 1.0,
) -> dict[str, Any]:
    """Phase 3: one nudge per buyer/shop/window, deterministic order, atomic output, rejected rows, summary.
    CSV files (the list, the rejected rows) are written in `csv_encoding`. With the model's `manifest`, the
    summary estimates the intent accuracy on the buyer messages and warns `warn_drop` below validation."""
    results = work / "results"
    shard_names = [f"shard-{i:05d}" for i in partition["shard_ids"]]
    done = [json.loads((results / f"{name}.json").read_text(encoding="utf-8")) for name in shard_names]
    manifest = manifest or {}
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
        write_table_atomic(output, staged[out], csv_encoding)
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
        write_table_atomic(rejected[["source", "row", "reason", "raw"]], staged[rejected_path], csv_encoding)
    except BaseException:
        for path in staged.values():
            path.unlink(missing_ok=True)
        raise

    rows_used = sum(d["rows_used"] for d in done)
    rows_rejected = partition["rows_rejected"] + sum(d["rows_rejected"] for d in done)
    reasons = Counter(partition["rejected_reasons"])
    reasons.update(Counter(reason_kind(r) for r in shard_rejects["reason"].tolist()))
    totals = counts[["conversations", "lost_shoppers", "lost_with_intent", "skipped_complaint_or_refund", "order_unknown", "candidates", "window_open",
                     "buyer_messages", "confident_buyer_messages"]].sum()
    estimate = estimate_from_counts(int(totals["confident_buyer_messages"]), int(totals["buyer_messages"]), manifest)
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
        "flagged_share_of_lost": share_of_lost(len(flagged), lost),
        "candidates_before_window_end": int(totals["window_open"]),
        "warnings": share_warnings(len(flagged), lost, share_alert or ShareAlertSettings())
        + orders_warnings(orders, orders_info)
        + open_window_warnings(int(totals["window_open"]), orders_info, policy)
        + shift_warnings(estimate, warn_drop),
        "accuracy_estimate": summary_record(estimate),
        "messages": {
            "buyer": sum(d["buyer_messages"] for d in done),
            "distinct_buyer_texts": sum(d["unique_buyer_texts"] for d in done),
        },
        "per_shop": _group_summary(counts, flagged, "shop_id", manifest),
        "per_category": _group_summary(counts, flagged, "category", manifest) if partition["has_category"] else {},
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
    write_json_atomic(summary, summary_path)
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
