"""Streaming output: conversations (JSONL or a flat Parquet message table) and orders, chunk by chunk.

Only one chunk of conversations is in memory at a time, so the size of a run is bounded by disk, not
RAM. Output bytes depend only on the seeds, the settings and the run seed (never on timing or
chunk order), so the same command gives identical files.
"""

from __future__ import annotations

import csv
import json
import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.synth.config import CorpusConfig
from pipeline.synth.dialogue import ConversationFactory, iso, ordered
from pipeline.synth.seeds import Seed

ORDER_COLUMNS = ["order_id", "buyer_id", "shop_id", "paid_at"]
MESSAGE_SCHEMA = pa.schema(
    [
        ("conversation_id", pa.string()),
        ("buyer_id", pa.string()),
        ("shop_id", pa.string()),
        ("category", pa.string()),
        ("role", pa.string()),
        ("text", pa.string()),
        ("sent_at", pa.timestamp("ms", tz="+08:00")),  # Parquet has no second unit
        ("intent", pa.string()),  # buyer messages only
        ("purchase_intent", pa.int8()),  # buyer messages only
        ("expressed_purchase_intent", pa.int8()),
    ]
)


@dataclass
class StreamSummary:
    conversations: int = 0
    messages: int = 0
    orders: int = 0
    chunks: int = 0


class JsonlSink:
    def __init__(self, path: Path):
        self.handle = open(path, "w", encoding="utf-8", newline="\n")

    def write(self, conversations: list[dict]) -> None:
        self.handle.write("".join(json.dumps(ordered(c), ensure_ascii=False) + "\n" for c in conversations))

    def close(self) -> None:
        self.handle.close()


class ParquetSink:
    """One row group per chunk; `sent_at` is a real timestamp (+08:00), labels are null for non-buyers."""

    def __init__(self, path: Path):
        self.writer = pq.ParquetWriter(path, MESSAGE_SCHEMA, compression="zstd")

    def write(self, conversations: list[dict]) -> None:
        columns: dict[str, list] = {name: [] for name in MESSAGE_SCHEMA.names}
        for conversation in conversations:
            for message in conversation["messages"]:
                columns["conversation_id"].append(conversation["conversation_id"])
                columns["buyer_id"].append(conversation["buyer_id"])
                columns["shop_id"].append(conversation["shop_id"])
                columns["category"].append(conversation["category"])
                columns["role"].append(message["role"])
                columns["text"].append(message["text"])
                columns["sent_at"].append(message["sent_at"] * 1000)
                columns["intent"].append(message.get("intent"))
                columns["purchase_intent"].append(message.get("purchase_intent"))
                columns["expressed_purchase_intent"].append(conversation["expressed_purchase_intent"])
        arrays = {name: pa.array(values, type=MESSAGE_SCHEMA.field(name).type) for name, values in columns.items() if name != "sent_at"}
        arrays["sent_at"] = pa.array(columns["sent_at"], type=pa.int64()).cast(MESSAGE_SCHEMA.field("sent_at").type)
        self.writer.write_table(pa.Table.from_pydict({n: arrays[n] for n in MESSAGE_SCHEMA.names}, schema=MESSAGE_SCHEMA))

    def close(self) -> None:
        self.writer.close()


def stream(
    config: CorpusConfig,
    seeds: list[Seed],
    *,
    count: int,
    seed: int,
    chunk_size: int,
    conversations_path: Path,
    orders_path: Path,
    fmt: str = "jsonl",
    progress: Callable[[StreamSummary], None] | None = None,
) -> StreamSummary:
    """Generate `count` conversations in chunks and write them and their orders as they come."""
    factory = ConversationFactory(config, seeds, seed)
    summary = StreamSummary()
    conversations_path.parent.mkdir(parents=True, exist_ok=True)
    orders_path.parent.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        sink = JsonlSink(conversations_path) if fmt == "jsonl" else ParquetSink(conversations_path)
        stack.callback(sink.close)
        orders_handle = stack.enter_context(open(orders_path, "w", encoding="utf-8", newline=""))
        orders_writer = csv.writer(orders_handle, lineterminator="\n")
        orders_writer.writerow(ORDER_COLUMNS)
        for index, start in enumerate(range(0, count, chunk_size)):
            size = min(chunk_size, count - start)
            conversations, orders = factory.chunk(index, size, start + 1)
            sink.write(conversations)
            orders_writer.writerows((order_id, buyer, shop, iso(paid)) for order_id, buyer, shop, paid in orders)
            summary.conversations += len(conversations)
            summary.messages += sum(len(c["messages"]) for c in conversations)
            summary.orders += len(orders)
            summary.chunks += 1
            if progress is not None:
                progress(summary)
    return summary


def replace_atomically(temporary: Path, final: Path) -> None:
    """Move a finished file into place so a reader never sees half a file."""
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temporary, final)
