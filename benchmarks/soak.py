"""Soak benchmark of the live service: `python benchmarks/soak.py [--minutes 10] [--rate R] [--results benchmarks/RESULTS.md]`.

A release check, not a test (not in CI): it holds the real service under mixed traffic at a sustainable rate for
a while and fails when it breaks or grows.

1. `bentoml serve serving.service:BuyerIntent` on a free 127.0.0.1 port, started, awaited and stopped with
   benchmarks/serve_load.py's helpers (`configs/default.yaml`'s serving settings, `--workers` processes).
2. Warm-up and capacity: `--warmup-clients` connections send the mixed valid traffic back to back for
   `--warmup` seconds; the answers per second are the capacity. The soak runs at `--rate` requests/s, or
   by default at `--fraction` (0.6) of that capacity; the choice is printed.
3. The soak: for `--minutes`, requests arrive at random (Poisson) at that rate over keep-alive connections,
   whatever the answers do (an open loop: a slow server meets the same arrivals, not fewer). The mix, by
   request count: /classify with one message, /classify with 16-64 messages, /score_conversation, /flag
   with 2-16 conversations, and a trickle of invalid requests (malformed JSON, wrong types, unknown fields,
   an over-long message, an unknown role, a date out of range, a wrong content type, a /flag conversation
   without buyer, a conversation without turns) that must get 4xx. Bodies are built from data/messages.csv
   and data/conversations.jsonl (`ordered` from data/orders.csv), never from real chats.
4. Every `--sample` seconds the RSS of every process of the server (the supervisor and each worker) is read
   from /proc with psutil: at readiness, at the soak's start (after the warm-up), its maximum and at the end.
5. Per minute: requests, p50 / p99 latency of the valid requests, errors by kind (5xx, client timeouts,
   connection errors, 429, other 4xx to valid requests; 4xx to the invalid trickle counted apart, as
   expected) and the workers' RSS; per request kind over the run; per process the RSS. A table is printed,
   the JSON goes to benchmarks/out/soak.json (the server log beside it), and with `--results FILE` the
   section between the soak markers of that Markdown file is written or refreshed.

Exit status 1 (FAIL, with the reasons) when any answer was a 5xx, a valid request timed out, lost its
connection or got a 4xx other than 429, an invalid request was accepted, a worker process vanished, or a
process's RSS at the end exceeds `--max-rss-growth` (1.5) times its RSS at the soak's start. 429s and
arrivals the client could not send (more than `--max-in-flight` waiting) are reported as warnings: the rate
was not sustainable. All traffic goes to 127.0.0.1; the run is bounded in time and in requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shlex
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from importlib.metadata import version as package_version
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from inference_speed import update_results  # noqa: E402  (the marked-section writer of benchmarks/RESULTS.md)
from serve_load import (  # noqa: E402  (the live-service helpers, shared with the load benchmark)
    _read_response,
    default_model,
    free_port,
    load_messages,
    percentiles,
    start_server,
    stop_server,
    wait_ready,
)

SECTION_START = "<!-- soak:start -->"
SECTION_END = "<!-- soak:end -->"
OUT = REPO / "benchmarks" / "out" / "soak.json"
HOST = "127.0.0.1"
# share of the requests, by count
MIX = {"classify_1": 0.70, "classify_batch": 0.12, "score_conversation": 0.10, "flag": 0.05, "invalid": 0.03}
IDLE_MAX_S = 2.0  # a keep-alive connection idle longer is not reused (the server closes idle ones after 5 s)
POOL_SIZE = 512  # prebuilt request bodies per kind


# ------------------------------------------------------------------------------------------ bodies


def http_post(port: int, path: str, body: bytes, content_type: str = "application/json") -> bytes:
    return (b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
            % (path.encode(), HOST.encode(), port, content_type.encode(), len(body))) + body


def _json(value) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def load_conversations(path: Path, orders: Path, max_chars: int) -> list[dict]:
    """The corpus conversations as request bodies: only the fields the service takes; `ordered` is whether
    data/orders.csv has an order by that buyer at that shop."""
    paid = set()
    if orders.is_file():
        import pandas as pd

        frame = pd.read_csv(orders, dtype=str, keep_default_na=False, usecols=["buyer_id", "shop_id"])
        paid = set(zip(frame["buyer_id"], frame["shop_id"]))
    out = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            turns = [{"role": m["role"], "text": m["text"], "sent_at": m["sent_at"]} for m in record["messages"]]
            if not turns or any(len(t["text"]) > max_chars for t in turns):
                continue
            out.append({
                "conversation_id": record["conversation_id"], "buyer_id": record["buyer_id"], "shop_id": record["shop_id"],
                "category": record.get("category"), "messages": turns,
                "ordered": (record["buyer_id"], record["shop_id"]) in paid,
            })
    return out


def invalid_requests(port: int, conversation: dict, max_chars: int) -> dict[str, bytes]:
    """Requests the service must refuse with 4xx, by name."""
    def with_turn(**changes) -> dict:
        turn = {**conversation["messages"][0], **changes}
        return {**conversation, "messages": [turn]}

    without_buyer = {k: v for k, v in conversation.items() if k != "buyer_id"}
    return {
        "malformed_json": http_post(port, "/classify", '{"messages": ["在吗", "有货吗"'.encode()),
        "wrong_type": http_post(port, "/classify", _json({"messages": "在吗"})),
        "unknown_field": http_post(port, "/classify", _json({"messages": ["在吗"], "language": "zh"})),
        "message_too_long": http_post(port, "/classify", _json({"messages": ["有货吗" * (max_chars // 3 + 1)]})),
        "unknown_role": http_post(port, "/score_conversation", _json({"conversation": with_turn(role="路人甲")})),
        "date_out_of_range": http_post(port, "/score_conversation", _json({"conversation": with_turn(sent_at="9999-12-31T23:59:59+08:00")})),
        "wrong_content_type": http_post(port, "/classify", _json({"messages": ["在吗"]}), "text/plain"),
        "flag_without_buyer": http_post(port, "/flag", _json({"conversations": [without_buyer]})),
        "no_turns": http_post(port, "/score_conversation", _json({"conversation": {**conversation, "messages": []}})),
    }


def build_pools(port: int, messages: list[str], conversations: list[dict], max_chars: int, seed: int) -> dict[str, list[tuple[str, bytes]]]:
    """Prebuilt requests per kind (so the client spends little CPU), each as (name, bytes)."""
    rng = random.Random(seed)
    pools: dict[str, list[tuple[str, bytes]]] = {kind: [] for kind in MIX}
    for _ in range(POOL_SIZE):
        pools["classify_1"].append(("classify_1", http_post(port, "/classify", _json({"messages": [rng.choice(messages)]}))))
        size = rng.randint(16, 64)
        start = rng.randrange(len(messages))
        batch = [messages[(start + k) % len(messages)] for k in range(size)]
        pools["classify_batch"].append(("classify_batch", http_post(port, "/classify", _json({"messages": batch}))))
        pools["score_conversation"].append(
            ("score_conversation", http_post(port, "/score_conversation", _json({"conversation": rng.choice(conversations)})))
        )
        chosen = rng.sample(conversations, rng.randint(2, 16))
        pools["flag"].append(("flag", http_post(port, "/flag", _json({"conversations": chosen}))))
    pools["invalid"] = [(f"invalid:{name}", payload) for name, payload in invalid_requests(port, conversations[0], max_chars).items()]
    return pools


# ------------------------------------------------------------------------------------------ client


class Connections:
    """Idle keep-alive connections, most recently used first; stale ones are dropped, not reused."""

    def __init__(self, port: int):
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def get(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self.idle:
            reader, writer, since = self.idle.pop()
            if time.monotonic() - since < IDLE_MAX_S and not reader.at_eof():
                return reader, writer
            writer.close()
        return await asyncio.open_connection(HOST, self.port)

    def put(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.idle.append((reader, writer, time.monotonic()))

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


def outcome_of(kind: str, status: int) -> str:
    invalid = kind.startswith("invalid")
    if status >= 500:
        return "5xx"
    if status == 429:
        return "429"
    if 400 <= status < 500:
        return "invalid_4xx" if invalid else "other_4xx"
    if invalid:
        return "invalid_accepted"
    return "ok" if status == 200 else "other"


async def send(connections: Connections, kind: str, payload: bytes, timeout: float, origin: float) -> dict:
    """One request; the record of what happened (t: seconds since `origin` when it was sent)."""
    t0 = time.perf_counter()
    conn = None
    status = None
    try:
        async with asyncio.timeout(timeout):
            conn = await connections.get()
            conn[1].write(payload)
            await conn[1].drain()
            status, close = await _read_response(conn[0])
    except TimeoutError:
        outcome = "timeout"
    except (OSError, EOFError, asyncio.LimitOverrunError, ValueError, IndexError):
        outcome = "connection_error"
    else:
        outcome = outcome_of(kind, status)
        if not close:
            connections.put(*conn)
            conn = None
    if conn is not None:
        conn[1].close()
    return {"t": t0 - origin, "kind": kind, "status": status, "outcome": outcome, "latency": time.perf_counter() - t0}


def pick(rng: random.Random, pools: dict[str, list[tuple[str, bytes]]], kinds: list[str], weights: list[float]) -> tuple[str, bytes]:
    return rng.choice(pools[rng.choices(kinds, weights)[0]])


async def closed_loop(port: int, pools, clients: int, seconds: float, timeout: float, seed: int) -> tuple[list[dict], float]:
    """Warm-up: `clients` connections send valid requests back to back; the records and the elapsed time."""
    kinds = [k for k in MIX if k != "invalid"]
    weights = [MIX[k] for k in kinds]
    records: list[dict] = []
    origin = time.perf_counter()
    deadline = origin + seconds

    async def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        connections = Connections(port)
        try:
            while time.perf_counter() < deadline:
                kind, payload = pick(rng, pools, kinds, weights)
                records.append(await send(connections, kind, payload, timeout, origin))
        finally:
            connections.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return records, time.perf_counter() - origin


class RssSampler:
    """RSS of every process of the server's tree (psutil, from /proc), sampled on demand."""

    def __init__(self, root_pid: int):
        self.root = psutil.Process(root_pid)
        self.procs: dict[int, dict] = {}
        self.samples: list[tuple[float, dict[int, int]]] = []  # (seconds since the soak's start, pid -> RSS bytes)

    @staticmethod
    def role(proc: psutil.Process) -> str:
        try:
            return "worker" if any("_bentoml_impl.worker" in part for part in proc.cmdline()) else "other"
        except psutil.Error:
            return "other"

    def sample(self, t: float | None, mark: str | None = None) -> dict[int, int]:
        now: dict[int, int] = {}
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            processes = []
        for proc in processes:
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            now[proc.pid] = rss
            entry = self.procs.setdefault(proc.pid, {
                "pid": proc.pid, "role": "supervisor" if proc.pid == self.root.pid else self.role(proc), "max": rss,
            })
            entry["max"] = max(entry["max"], rss)
            if mark:
                entry[mark] = rss
        if t is not None:
            self.samples.append((t, now))
        return now


async def open_loop(port: int, pools, rate: float, seconds: float, timeout: float, max_in_flight: int, max_requests: int,
                    sampler: RssSampler, sample_every: float, seed: int) -> tuple[list[dict], int]:
    """The soak: Poisson arrivals at `rate` for `seconds`; the records and the number of arrivals not sent."""
    rng = random.Random(seed)
    kinds, weights = list(MIX), list(MIX.values())
    connections = Connections(port)
    records: list[dict] = []
    in_flight: set[asyncio.Task] = set()
    skipped = 0
    origin = time.perf_counter()
    end = origin + seconds
    stop = asyncio.Event()

    async def sample_rss() -> None:
        while not stop.is_set():
            sampler.sample(time.perf_counter() - origin)
            try:
                await asyncio.wait_for(stop.wait(), sample_every)
            except TimeoutError:
                pass

    sampling = asyncio.create_task(sample_rss())
    due, sent = origin, 0
    while sent + skipped < max_requests:
        due += rng.expovariate(rate)
        if due >= end:
            break
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        if len(in_flight) >= max_in_flight:
            skipped += 1
            continue
        kind, payload = pick(rng, pools, kinds, weights)
        task = asyncio.create_task(send(connections, kind, payload, timeout, origin))
        task.add_done_callback(lambda done: (in_flight.discard(done), records.append(done.result())))
        in_flight.add(task)
        sent += 1
    if in_flight:
        await asyncio.wait(set(in_flight))
    stop.set()
    await sampling
    connections.close()
    return records, skipped


# ----------------------------------------------------------------------------------------- figures


ERROR_KINDS = ("5xx", "timeout", "connection_error", "429", "other_4xx", "invalid_accepted", "other")


def summarise(records: list[dict], seconds: float) -> dict:
    valid = [r for r in records if not r["kind"].startswith("invalid")]
    outcomes = Counter(r["outcome"] for r in records)
    answered = [r["latency"] for r in valid if r["status"] is not None]
    return {
        "requests": len(records), "requests_per_s": len(records) / max(seconds, 1e-9),
        "ok": outcomes.get("ok", 0), "invalid_4xx": outcomes.get("invalid_4xx", 0),
        **{kind: outcomes.get(kind, 0) for kind in ERROR_KINDS},
        **percentiles(answered),
        "statuses": dict(sorted(Counter(str(r["status"]) for r in records).items())),
    }


def per_minute(records: list[dict], sampler: RssSampler, seconds: float) -> list[dict]:
    rows = []
    minutes = max(1, int(-(-seconds // 60)))
    for m in range(minutes):
        lo, hi = 60.0 * m, min(60.0 * (m + 1), seconds)
        row = {"minute": m + 1, "from_s": lo, "to_s": hi, **summarise([r for r in records if lo <= r["t"] < hi], hi - lo)}
        inside = [s for s in sampler.samples if s[0] <= hi]
        last = inside[-1][1] if inside else {}
        row["worker_rss_mb"] = {str(pid): round(rss / 2**20) for pid, rss in last.items() if sampler.procs[pid]["role"] == "worker"}
        rows.append(row)
    return rows


def per_kind(records: list[dict]) -> dict[str, dict]:
    out = {}
    for kind in [*[k for k in MIX if k != "invalid"], "invalid"]:
        chosen = [r for r in records if (r["kind"].startswith("invalid") if kind == "invalid" else r["kind"] == kind)]
        answered = [r["latency"] for r in chosen if r["status"] is not None]
        out[kind] = {"requests": len(chosen), **percentiles(answered), "max_ms": 1000 * max(answered, default=float("nan")),
                     "statuses": dict(sorted(Counter(str(r["status"]) for r in chosen).items()))}
    return out


def memory_table(sampler: RssSampler) -> list[dict]:
    rows = []
    for entry in sorted(sampler.procs.values(), key=lambda e: (e["role"] != "supervisor", e["pid"])):
        start, end = entry.get("start"), entry.get("end")
        rows.append({
            "pid": entry["pid"], "role": entry["role"], "ready_mb": _mb(entry.get("ready")), "start_mb": _mb(start),
            "max_mb": _mb(entry["max"]), "end_mb": _mb(end), "growth": (end / start) if start and end else None,
            "alive_at_end": end is not None,
        })
    return rows


def _mb(value: int | None) -> float | None:
    return None if value is None else value / 2**20


def verdict(soak: dict, memory: list[dict], skipped: int, max_growth: float) -> tuple[list[str], list[str]]:
    failures, warnings = [], []
    for key, what in (("5xx", "5xx answers"), ("timeout", "client timeouts"), ("connection_error", "connection errors"),
                      ("other_4xx", "valid requests answered 4xx (not 429)"), ("invalid_accepted", "invalid requests accepted"),
                      ("other", "other non-200 answers to valid requests")):
        if soak[key]:
            failures.append(f"{soak[key]} {what}")
    for row in memory:
        if row["start_mb"] is not None and not row["alive_at_end"]:
            failures.append(f"{row['role']} {row['pid']} vanished during the soak")
        elif row["start_mb"] is None and row["role"] == "worker":
            when = "vanished during the warm-up" if row["ready_mb"] is not None else "appeared during the soak (a restart)"
            failures.append(f"worker {row['pid']} {when}")
        elif row["growth"] is not None and row["growth"] > max_growth:
            failures.append(f"{row['role']} {row['pid']} RSS grew {row['growth']:.3f}x ({row['start_mb']:.0f} -> {row['end_mb']:.0f} MB; "
                            f"limit {max_growth:g}x)")
    if soak["429"]:
        warnings.append(f"{soak['429']} requests got 429 (back-pressure): the rate was not sustainable throughout")
    if skipped:
        warnings.append(f"{skipped} arrivals not sent (more than --max-in-flight waiting): the rate was not sustainable")
    return failures, warnings


# ------------------------------------------------------------------------------------------ report


def _f(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:,.{digits}f}"


def minute_table(rows: list[dict]) -> list[str]:
    lines = ["| minute | requests | req/s | p50 ms | p99 ms | 5xx | timeouts | connection errors | 429 | other 4xx | invalid → 4xx (expected) | workers' RSS MB at the end |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        label = f"{r['minute']}" + ("" if r["to_s"] - r["from_s"] >= 59.5 else f" ({r['to_s'] - r['from_s']:.0f} s)")
        lines.append(
            f"| {label} | {r['requests']:,} | {r['requests_per_s']:.1f} | {_f(r['p50_ms'], 1)} | {_f(r['p99_ms'], 1)} | {r['5xx']} | {r['timeout']} "
            f"| {r['connection_error']} | {r['429']} | {r['other_4xx'] + r['other']} | {r['invalid_4xx']} | {' / '.join(map(str, r['worker_rss_mb'].values())) or '-'} |"
        )
    return lines


def render(results: dict) -> str:
    meta, soak, choice = results["meta"], results["soak"], results["rate_choice"]
    lines = [
        SECTION_START,
        f"# Soak: {meta['minutes']:g} minutes of mixed traffic on the live service (issue #16)",
        "",
        f"Generated by `{meta['command']}` on {meta['when']} ({meta['machine']}, {meta['cpus']} cores, {meta['memory_gb']} GB; "
        f"Python {meta['python']}, BentoML {meta['bentoml']}; load average 1/5/15 min "
        f"{' / '.join(f'{v:.1f}' for v in meta['load_before'])} at the start, {' / '.join(f'{v:.1f}' for v in meta['load_after'])} "
        f"at the end). **A {meta['minutes']:g}-minute run**{' ' + meta['note'] if meta['note'] else ''}.",
        "",
        f"Server: `bentoml serve serving.service:BuyerIntent`, {meta['workers']} workers, the serving settings of "
        f"`configs/default.yaml` (max_concurrency {meta['max_concurrency']}, timeout {meta['timeout_s']:g} s, keep-alive "
        f"{meta['keepalive_requests']} requests); model `{meta['model']}` (trained {meta['model_trained']}). Ready in "
        f"{meta['ready_s']:.0f} s.",
        "",
        f"Rate: {choice['text']}. Arrivals at random (Poisson), whatever the answers do, over keep-alive connections; "
        f"client timeout {meta['client_timeout_s']:g} s. Mix by request count: "
        + ", ".join(f"{100 * share:.0f}% {name}" for name, share in MIX.items())
        + " (classify_batch: 16-64 messages; flag: 2-16 conversations; invalid: "
        + ", ".join(name for name in meta["invalid_kinds"]) + ", 4xx expected). Bodies from `data/messages.csv` and "
        "`data/conversations.jsonl` (`ordered` from `data/orders.csv`). Latency: valid requests, from sending to the "
        "whole answer (a new connection's set-up included).",
        "",
        *minute_table(results["minutes"]),
        f"| **all** | {soak['requests']:,} | {soak['requests_per_s']:.1f} | {_f(soak['p50_ms'], 1)} | {_f(soak['p99_ms'], 1)} | {soak['5xx']} "
        f"| {soak['timeout']} | {soak['connection_error']} | {soak['429']} | {soak['other_4xx'] + soak['other']} | {soak['invalid_4xx']} | |",
        "",
        "| request | count | p50 ms | p99 ms | max ms | statuses |",
        "|---|---|---|---|---|---|",
    ]
    for kind, r in results["kinds"].items():
        statuses = ", ".join(f"{k}: {v:,}" for k, v in r["statuses"].items())
        lines.append(f"| {kind} | {r['requests']:,} | {_f(r['p50_ms'], 1)} | {_f(r['p99_ms'], 1)} | {_f(r['max_ms'], 1)} | {statuses} |")
    lines += [
        "",
        f"Memory: RSS of every server process from /proc (psutil), sampled every {meta['sample_s']:g} s; start is after the "
        f"warm-up, growth is end / start (limit {meta['max_rss_growth']:g}x).",
        "",
        "| process | pid | at ready MB | at soak start MB | max MB | at end MB | growth |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["memory"]:
        growth = "-" if r["growth"] is None else f"{r['growth']:.3f}x"
        lines.append(f"| {r['role']} | {r['pid']} | {_f(r['ready_mb'])} | {_f(r['start_mb'])} | {_f(r['max_mb'])} | {_f(r['end_mb'])} | {growth} |")
    lines += ["", f"Server log: {results['server_log']['tracebacks']} tracebacks, {results['server_log']['error_lines']} ERROR lines.", ""]
    failures, warnings = results["failures"], results["warnings"]
    lines.append(f"**Verdict: {'FAIL' if failures else 'PASS'}**" + (": " + "; ".join(failures) if failures else "")
                 + (". Warnings: " + "; ".join(warnings) if warnings else "") + ".")
    lines += ["", f"Reproduce: `make demo` (or any model bundle), then `.venv/bin/python benchmarks/soak.py --results benchmarks/RESULTS.md` "
              "(10 minutes; exit status 1 on failure).", SECTION_END, ""]
    return "\n".join(lines)


def print_report(results: dict) -> None:
    print()
    for line in minute_table(results["minutes"]):
        print(line)
    soak = results["soak"]
    print(f"all: {soak['requests']:,} requests, {soak['requests_per_s']:.1f}/s, p50 {soak['p50_ms']:.1f} ms, p99 {soak['p99_ms']:.1f} ms, "
          f"statuses {soak['statuses']}")
    print()
    for kind, r in results["kinds"].items():
        print(f"{kind:<20}{r['requests']:>8,} requests  p50 {r['p50_ms']:8.1f} ms  p99 {r['p99_ms']:8.1f} ms  max {r['max_ms']:8.1f} ms  {r['statuses']}")
    print()
    print(f"{'process':<12}{'pid':>8}{'ready MB':>10}{'start MB':>10}{'max MB':>10}{'end MB':>10}{'growth':>9}")
    for r in results["memory"]:
        growth = "-" if r["growth"] is None else f"{r['growth']:.3f}x"
        print(f"{r['role']:<12}{r['pid']:>8}{_f(r['ready_mb']):>10}{_f(r['start_mb']):>10}{_f(r['max_mb']):>10}{_f(r['end_mb']):>10}{growth:>9}")
    print()
    for line in results["warnings"]:
        print(f"warning: {line}")
    print("FAIL: " + "; ".join(results["failures"]) if results["failures"] else "PASS")


# -------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model bundle directory (default: models/latest, else /tmp/smoke/model)")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak (default 10)")
    parser.add_argument("--rate", type=float, help="requests/s (default: --fraction of the capacity measured in the warm-up)")
    parser.add_argument("--fraction", type=float, default=0.6, help="share of the measured capacity to run at (default 0.6)")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds of back-to-back traffic before the soak (capacity)")
    parser.add_argument("--warmup-clients", type=int, default=16, help="connections in the warm-up")
    parser.add_argument("--workers", type=int, default=2, help="server processes (serving.workers; default config: 2)")
    parser.add_argument("--timeout", type=float, default=30.0, help="client timeout per request, s (the server answers 504 after its own)")
    parser.add_argument("--max-in-flight", type=int, default=128, help="requests waiting at most; further arrivals are not sent (counted)")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="requests in the soak at most")
    parser.add_argument("--max-rss-growth", type=float, default=1.5, help="fail when a process's RSS at the end exceeds this times its RSS at the start")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--note", default="", help="said of the run in the results section, e.g. 'on a machine shared with other jobs'")
    parser.add_argument("--out", type=Path, default=OUT, help="JSON results")
    parser.add_argument("--results", type=Path, help="write the section into this Markdown file (e.g. benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)

    model = Path(args.model) if args.model else default_model()
    if model is None or not (model / "manifest.json").is_file():
        raise SystemExit("no model: pass --model DIR (a bundle directory, e.g. models/latest after `make demo`)")
    from pipeline.config import load_config

    serving = load_config(None).serving
    manifest = json.loads((model / "manifest.json").read_text(encoding="utf-8"))
    messages = load_messages(REPO / "data" / "messages.csv", n=8192, seed=args.seed)
    conversations = load_conversations(REPO / "data" / "conversations.jsonl", REPO / "data" / "orders.csv", serving.max_chars)
    load_before = os.getloadavg()
    print(f"model: {model}; {len(conversations):,} conversations, {len(set(messages)):,} distinct messages; "
          f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f}", flush=True)

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        pools = build_pools(port, messages, conversations, serving.max_chars, args.seed)
        process = start_server(model, port, args.workers, workdir)
        try:
            ready_s = wait_ready(process, port, 300, workdir / "server.log")
            sampler = RssSampler(process.pid)
            sampler.sample(None, "ready")
            print(f"server ready in {ready_s:.1f} s; warm-up: {args.warmup_clients} connections back to back for {args.warmup:g} s ...", flush=True)
            warm, warm_s = asyncio.run(closed_loop(port, pools, args.warmup_clients, args.warmup, args.timeout, args.seed))
            warm_summary = summarise(warm, warm_s)
            capacity = warm_summary["ok"] / warm_s
            if args.rate:
                rate = args.rate
                text = f"{rate:g} requests/s, given (`--rate`); the warm-up measured {capacity:.1f} requests/s back to back"
            else:
                rate = args.fraction * capacity
                text = (f"{rate:.1f} requests/s = {args.fraction:g} x the {capacity:.1f} requests/s answered back to back by "
                        f"{args.warmup_clients} connections in a {args.warmup:g} s warm-up (p50 {warm_summary['p50_ms']:.1f} ms, "
                        f"p99 {warm_summary['p99_ms']:.1f} ms)")
            if rate <= 0:
                raise SystemExit(f"no rate to run at (warm-up: {warm_summary})")
            print(f"soak rate: {text}", flush=True)
            print(f"soak: {args.minutes:g} minutes ...", flush=True)
            sampler.sample(0.0, "start")
            seconds = 60.0 * args.minutes
            records, skipped = asyncio.run(open_loop(port, pools, rate, seconds, args.timeout, args.max_in_flight, args.max_requests,
                                                     sampler, args.sample, args.seed))
            sampler.sample(seconds, "end")
        finally:
            stop_server(process)
        log = (workdir / "server.log").read_text(encoding="utf-8", errors="replace")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        (args.out.parent / "soak-server.log").write_text(log, encoding="utf-8")

    soak = summarise(records, seconds)
    memory = memory_table(sampler)
    failures, warnings = verdict(soak, memory, skipped, args.max_rss_growth)
    if soak["requests"] == 0:
        failures.append("no request was sent")
    results = {
        "meta": {
            "command": shlex.join(["benchmarks/soak.py", *(sys.argv[1:] if argv is None else argv)]),
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.machine(), "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30), "python": platform.python_version(),
            "bentoml": package_version("bentoml"), "load_before": load_before, "load_after": os.getloadavg(), "minutes": args.minutes,
            "note": args.note, "workers": args.workers, "max_concurrency": serving.max_concurrency, "timeout_s": serving.timeout_s,
            "keepalive_requests": serving.keepalive_requests, "model": str(model.relative_to(REPO) if model.is_relative_to(REPO) else model),
            "model_trained": manifest.get("created_at"), "ready_s": ready_s, "client_timeout_s": args.timeout, "sample_s": args.sample,
            "max_rss_growth": args.max_rss_growth, "invalid_kinds": [name.split(":", 1)[1] for name, _ in pools["invalid"]],
        },
        "rate_choice": {"rate": rate, "capacity": capacity, "given": bool(args.rate), "text": text, "warmup": warm_summary},
        "soak": {**soak, "arrivals_not_sent": skipped},
        "minutes": per_minute(records, sampler, seconds),
        "kinds": per_kind(records),
        "memory": memory,
        "server_log": {"tracebacks": log.count("Traceback"), "error_lines": sum(" ERROR " in line or "[ERROR]" in line for line in log.splitlines())},
        "failures": failures, "warnings": warnings,
    }
    print_report(results)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"results: {args.out}")
    if args.results:
        update_results(args.results, render(results), SECTION_START, SECTION_END)
        print(f"section written: {args.results}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
