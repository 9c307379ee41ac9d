"""`run_flag`: the three phases with their checkpoints, in a work directory keyed by the inputs, the
model and the settings (an interrupted run rerun with the same arguments resumes)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa

from pipeline.config import Config, FlagSettings, Registry, load_flag_settings
from pipeline.jobs.flag.files import CHAT_COLUMNS, FlagError, jsonl_is_conversations
from pipeline.jobs.flag.merge import merge_results
from pipeline.jobs.flag.orders import build_orders_index
from pipeline.jobs.flag.partition import partition_chats
from pipeline.jobs.flag.shards import ShardTask, run_shards
from pipeline.nudge import NudgePolicy
from pipeline.nudge.rows import ORDER_COLUMNS
from pipeline.data.tables import ColumnNames, TableError, output_format, require_columns, table_format

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 4  # bump when what the work directory holds changes


def _file_identity(path: Path | None) -> dict | None:
    if path is None:
        return None
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


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
        output_format(out)
    except TableError as exc:
        raise FlagError(f"--out {exc}") from exc
    chat_names = config.columns.names().only((*CHAT_COLUMNS, "category", "ordered"))
    order_names = config.columns.names().only(ORDER_COLUMNS)
    try:
        if not (table_format(chats) == "jsonl" and jsonl_is_conversations(chats)):
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
        for i in partition["shard_ids"]
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
    finished = run_shards(tasks, init_args, min(n_workers, max(1, len(tasks))), progress)
    log.info(
        "shards: %d processed in %.1fs (%.1f CPU-s in shard work)",
        len(tasks), time.perf_counter() - t0, sum(d["cpu_seconds"] for d in finished),
    )

    threshold_info = {
        "threshold": settings.min_score if settings.min_score is not None else model_threshold,
        "model": {"name": resolved.name, "version": resolved.version, "sha256": model_identity["sha256"]},
    }
    summary = merge_results(work, out, chats, orders, partition, orders_info, policy, threshold_info, settings.share_alert,
                            config.output.csv_encoding, manifest=manifest, warn_drop=config.drift.warn_drop)
    if not settings.keep_work_dir:
        shutil.rmtree(work, ignore_errors=True)
        if base.is_dir() and not any(base.iterdir()):
            base.rmdir()
    log.info("flag: %d conversations, %d flagged in %.1fs", summary["conversations"], summary["flagged"], time.perf_counter() - started)
    return summary
