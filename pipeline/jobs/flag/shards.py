"""Phase 2 of `buyer-intent flag`: worker processes sort, score and decide one shard at a time (with
`pipeline.nudge`, the code the service decides with); each finished shard is checkpointed."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.config import FlagSettings
from pipeline.jobs.flag.files import SHARD_SCHEMA, raw_line, rejected_table, write_json_atomic, write_parquet_atomic
from pipeline.nudge import NudgePolicy, OrdersIndex
from pipeline.nudge.features import score_flat
from pipeline.nudge.policy import REASON_FLAGGED, REASON_ORDER_UNKNOWN, REASON_SKIPPED
from pipeline.nudge.rules import decide_table

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


def conversation_starts(frame: pd.DataFrame) -> np.ndarray:
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
    starts = conversation_starts(frame)
    first_buyer = np.repeat(frame["buyer_id"].to_numpy(object)[starts[:-1]], np.diff(starts))
    mismatch = frame["buyer_id"].to_numpy(object) != first_buyer
    rejected = [
        {"seq": int(row.seq), "source": "", "row": row.source_row,
         "reason": "buyer_id differs from the conversation's first message",
         "raw": raw_line([row.conversation_id, row.buyer_id, row.shop_id, row.role, row.text])}
        for row in frame[mismatch].itertuples(index=False)
    ]
    if mismatch.any():
        frame = frame[~mismatch].reset_index(drop=True)
        starts = conversation_starts(frame)
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
            buyer_messages=decided["n_buyer_turns"],
            confident_buyer_messages=decided["n_confident_buyer_turns"],
        )
        .groupby(["shop_id", "category"], sort=True)[
            ["conversations", "lost_shoppers", "lost_with_intent", "skipped_complaint_or_refund", "order_unknown", "candidates", "window_open",
             "buyer_messages", "confident_buyer_messages"]
        ]
        .sum()
        .astype(np.int64)
        .reset_index()
    )
    write_parquet_atomic(pa.Table.from_pandas(candidates, preserve_index=False), results / f"{name}.candidates.parquet")
    write_parquet_atomic(pa.Table.from_pandas(counts, preserve_index=False), results / f"{name}.counts.parquet")
    write_parquet_atomic(rejected_table(rejected), results / f"{name}.rejected.parquet")
    done = {
        "shard": task.index,
        "rows_used": int(len(frame)),
        "rows_rejected": len(rejected),
        "conversations": n_conv,
        **stats,
        "seconds": round(time.perf_counter() - started, 3),
        "cpu_seconds": round(time.process_time() - cpu_started, 3),
    }
    write_json_atomic(done, results / f"{name}.json")
    return done


def run_shards(
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
