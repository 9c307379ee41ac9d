"""Throughput and memory of `buyer-intent flag`, next to the plain message classifier on the same buyer messages.

    .venv/bin/python benchmarks/flag_throughput.py --model models/latest                 # 100k conversations
    .venv/bin/python benchmarks/flag_throughput.py --model models/latest --large         # 1M (~10M messages)
    .venv/bin/python benchmarks/flag_throughput.py --model DIR --profile 20000           # where Predictor time goes

Data: the scale generator (`buyer-intent data synth ... --format parquet`) when it is available, else a
flat table generated here (conversations interleaved by time, as back-ends export them; buyer texts
composed from phrases, products, sizes and numbers, so about half of them are distinct).
Prints conversations/s, messages/s and peak RSS (the job's whole process tree, sampled), and the
Predictor's messages/s on the same buyer messages in this one process, so the ratio shows what the
conversation logic, I/O and policy cost.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# --- a flat export, generated here when pipeline.synth is not available -----------------------------

_PHRASES = [
    "在吗", "你好", "亲在不在", "有人吗", "好的", "嗯嗯", "谢谢", "好的谢谢", "辛苦了", "不用了", "算了", "对", "可以",
    "是纯棉的吗", "这款和那款有什么区别", "保质期多久", "是正品吗", "怎么用", "什么材质的", "会起球吗", "掉色吗", "有味道吗",
    "多大码合适", "偏大还是偏小", "宝宝两岁穿什么码", "腰围70穿什么码", "平时穿L这个要拍什么码",
    "有货吗", "黑色还有吗", "什么时候补货", "预售几号发", "有货我就要", "白色的还有吗 有的话我现在拍",
    "能便宜点吗", "有优惠券吗", "买两件有折扣吗", "降价了能退差价吗", "送什么赠品", "便宜点我就买了", "包邮我就拍",
    "怎么下单", "拍哪个链接", "我拍了你改下价", "我要两件", "就要这个了", "想买两箱", "现在拍今天能发吗",
    "什么时候发货", "今天能发吗", "几天能到", "怎么还没出库", "发什么快递", "物流怎么不动了", "能发顺丰吗", "到哪了",
    "改一下地址", "拍错颜色了能改吗", "取消订单", "可以用花呗吗", "付款失败", "怎么还要运费", "能开发票吗",
    "我要退货", "七天无理由吗", "退款什么时候到", "能换个码吗", "保修多久", "收到是坏的", "少发了一件", "态度太差了",
    "转人工", "你是机器人吗", "哈哈", "?", "今天天气不错",
]
_PRODUCTS = ["这件外套", "这个面霜", "这款奶粉", "这个充电宝", "这双鞋", "这条裙子", "这个锅", "这款耳机", "这个枕头", "这件T恤"]
_TAILS = ["", "", "", "呢", "呀", "哈", "？", "亲", "谢谢", "在线等", "急", "~"]
_AGENT = ["亲 在的", "有的亲", "亲 已经是最低价了哦", "今天下单明天发", "亲 可以领券下单", "建议拍M码", "好的亲",
          "亲 支持七天无理由", "已经为您备注了", "亲 这边帮您查一下", "默认中通快递", "您好 请问有什么可以帮您"]
_CATEGORIES = ["apparel", "beauty", "food", "baby", "electronics", "home"]


def _buyer_texts(rng: np.random.Generator, n: int) -> np.ndarray:
    """Repetitive like real chats: short stock phrases often, composed questions with numbers often distinct."""
    weights = 1.0 / np.arange(1, len(_PHRASES) + 1) ** 0.6
    phrases = np.asarray(_PHRASES, dtype=object)[rng.choice(len(_PHRASES), n, p=weights / weights.sum())]
    product = np.where(rng.random(n) < 0.35, np.asarray(_PRODUCTS, dtype=object)[rng.integers(0, len(_PRODUCTS), n)], "")
    numbers = np.where(rng.random(n) < 0.3, (rng.integers(1, 2000, n)).astype(str).astype(object) + "元", "")
    tails = np.asarray(_TAILS, dtype=object)[rng.integers(0, len(_TAILS), n)]
    return product + phrases + np.where(numbers != "", " " + numbers, "") + tails


def generate_flat(n_conversations: int, seed: int, directory: Path) -> tuple[Path, Path]:
    """chats.parquet (conversation_id, buyer_id, shop_id, category, role, text, sent_at) and orders.csv."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    lengths = rng.integers(4, 17, n_conversations)  # 4..16 messages, ~10 on average
    n = int(lengths.sum())
    conv = np.repeat(np.arange(n_conversations), lengths)
    position = np.arange(n) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    buyer_of_conv = rng.integers(0, max(1, n_conversations // 2), n_conversations)
    shops = rng.integers(0, 300, n_conversations)
    category = np.asarray(_CATEGORIES, dtype=object)[shops % len(_CATEGORIES)]
    start = pd.Timestamp("2024-05-01T00:00:00+08:00").value // 10**6 + rng.integers(0, 30 * 86_400_000, n_conversations)
    sent = np.repeat(start, lengths) + position * 45_000 + rng.integers(0, 30_000, n)
    role = np.where(position % 2 == 0, "buyer", np.where(rng.random(n) < 0.15, "bot", "agent")).astype(object)
    text = np.asarray(_AGENT, dtype=object)[rng.integers(0, len(_AGENT), n)]
    is_buyer = role == "buyer"
    text[is_buyer] = _buyer_texts(rng, int(is_buyer.sum()))
    cid = np.char.add("conv-", np.arange(n_conversations).astype(str)).astype(object)
    frame = pd.DataFrame(
        {
            "conversation_id": cid[conv],
            "buyer_id": np.char.add("buyer-", buyer_of_conv.astype(str)).astype(object)[conv],
            "shop_id": np.char.add("shop-", shops.astype(str)).astype(object)[conv],
            "category": category[conv],
            "role": role,
            "text": text,
            "sent_at": pd.to_datetime(sent, unit="ms", utc=True).tz_convert("+08:00").strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
    order = np.argsort(sent, kind="stable")  # exports come in time order: conversations interleave
    chats = directory / "chats.parquet"
    frame.iloc[order].to_parquet(chats, index=False, row_group_size=200_000)
    last = start + (lengths - 1) * 45_000 + 30_000
    outcome = rng.random(n_conversations)
    bought = outcome < 0.55
    late = (outcome >= 0.55) & (outcome < 0.62)
    paid = np.where(bought, last + rng.integers(0, 72 * 3_600_000, n_conversations), last + 100 * 3_600_000)
    keep = bought | late
    orders = pd.DataFrame(
        {
            "order_id": np.arange(int(keep.sum())),
            "buyer_id": np.char.add("buyer-", buyer_of_conv[keep].astype(str)),
            "shop_id": np.char.add("shop-", shops[keep].astype(str)),
            "paid_at": pd.to_datetime(paid[keep], unit="ms", utc=True).tz_convert("+08:00").strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
    orders_path = directory / "orders.csv"
    orders.to_csv(orders_path, index=False)
    return chats, orders_path


def generate_with_synth(n_conversations: int, seed: int, directory: Path) -> tuple[Path, Path | None] | None:
    """The corpus engineer's scale generator, when it is there; None otherwise."""
    if not (REPO / "pipeline" / "synth" / "cli.py").exists():
        return None
    command = [sys.executable, "-c", "from pipeline.cli import app; app()", "data", "synth", "--conversations", str(n_conversations),
               "--seed", str(seed), "--out", str(directory), "--format", "parquet"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"pipeline.synth failed ({result.stderr.strip()[-300:]}); using the built-in generator", file=sys.stderr)
        return None
    chats = orders = None
    for path in sorted(directory.rglob("*")):
        if path.suffix == ".parquet" and chats is None and {"role", "text"} <= set(pq.read_schema(path).names):
            chats = path
        elif path.suffix in (".csv", ".parquet") and "order" in path.name and orders is None:
            orders = path
    return (chats, orders) if chats else None


def _existing(directory: Path) -> tuple[Path, Path] | None:
    """Data generated by an earlier run with the same size and seed (generation takes minutes at 1M)."""
    if not directory.is_dir():
        return None
    chats = next((p for p in sorted(directory.glob("*.parquet")) if {"role", "text"} <= set(pq.read_schema(p).names)), None)
    orders = next((p for p in sorted(directory.glob("*order*")) if p.suffix in (".csv", ".parquet")), None)
    return (chats, orders) if chats and orders else None


# --- measuring --------------------------------------------------------------------------------------


class PeakRss:
    """Peak resident memory of this process plus all its children, sampled every 0.2 s."""

    def __init__(self):
        self.peak = 0
        self.peak_parent = 0
        self.peak_child = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    rss = process.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                if process.pid == me.pid:
                    self.peak_parent = max(self.peak_parent, rss)
                else:
                    self.peak_child = max(self.peak_child, rss)
            self.peak = max(self.peak, total)
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def profile_predictor(predictor, texts: list[str]) -> dict[str, float]:
    """Messages/s of each Predictor stage on its own: normalisation, jieba, the two TF-IDF transforms, classifiers."""
    from pipeline.text import normalize

    features = predictor.bundle.intent.steps[1][1]
    words, chars = features.transformer_list[0][1], features.transformer_list[1][1]
    stages: dict[str, float] = {}
    t = time.perf_counter()
    normalized = [normalize(x) for x in texts]
    stages["normalize"] = time.perf_counter() - t
    tokenizer = words.tokenizer
    t = time.perf_counter()
    for x in normalized:
        tokenizer(x)
    stages["jieba"] = time.perf_counter() - t
    t = time.perf_counter()
    words.transform(normalized)
    stages["tfidf_words_incl_jieba"] = time.perf_counter() - t
    t = time.perf_counter()
    chars.transform(normalized)
    stages["tfidf_chars"] = time.perf_counter() - t
    matrix = features.transform(normalized)
    t = time.perf_counter()
    predictor.bundle.intent.steps[-1][1].predict_proba(matrix)
    if predictor.bundle.purchase is not None:
        predictor.bundle.purchase.steps[-1][1].predict_proba(matrix)
    stages["classifiers"] = time.perf_counter() - t
    t = time.perf_counter()
    predictor.predict(texts)
    stages["predict_total"] = time.perf_counter() - t
    return {name: round(len(texts) / seconds) for name, seconds in stages.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model bundle directory or models:/ URI (default: the champion)")
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--large", action="store_true", help="1,000,000 conversations (about 10M messages)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "out")
    parser.add_argument("--source", choices=["auto", "synth", "builtin"], default="auto")
    parser.add_argument("--workers", type=int, default=None, help="override flag.workers")
    parser.add_argument("--baseline-messages", type=int, default=300_000, help="buyer messages for the Predictor baseline (0: all)")
    parser.add_argument("--profile", type=int, default=0, help="also time each Predictor stage on this many buyer messages")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    n_conversations = 1_000_000 if args.large else args.conversations

    from pipeline.config import load_config
    from pipeline.jobs.flag import run_flag
    from pipeline.inference import Predictor, load_model

    config = load_config(args.config, {"flag.keep_work_dir": True})  # to read the shards' CPU times
    data_dir = args.out_dir / f"data-{args.source}-{n_conversations}-{args.seed}"  # --source builtin must not reuse synth data
    t = time.perf_counter()
    generated = _existing(data_dir)
    if generated is None and not args.generate_only:
        # Generate in a child process: its memory must not count in the job's peak RSS measured here.
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--generate-only"], check=True)
        generated = _existing(data_dir)
    chats, orders = generated or (None, None)
    if generated is None:
        if args.source in ("auto", "synth"):
            generated = generate_with_synth(n_conversations, args.seed, data_dir)
            if generated is None and args.source == "synth":
                sys.exit("pipeline.synth is not available")
        if generated is None:
            chats, orders = generate_flat(n_conversations, args.seed, data_dir)
        else:
            chats, orders = generated
    print(f"data: {chats} ({time.perf_counter() - t:.1f}s)", file=sys.stderr)
    if args.generate_only:
        return
    out = args.out_dir / f"nudges-{n_conversations}.csv"
    load_avg = os.getloadavg()
    work_dir = args.out_dir / "work"
    shutil.rmtree(work_dir, ignore_errors=True)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with PeakRss() as rss:
        t, cpu = time.perf_counter(), time.process_time()
        summary = run_flag(chats, out, orders, args.model, None, config, workers=args.workers, work_dir=work_dir)
        flag_seconds, parent_cpu = time.perf_counter() - t, time.process_time() - cpu
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers_cpu = (children.ru_utime + children.ru_stime) - (children_before.ru_utime + children_before.ru_stime)
    shard_cpu = sum(json.loads(p.read_text())["cpu_seconds"] for p in work_dir.glob("*/results/shard-*.json"))
    shutil.rmtree(work_dir, ignore_errors=True)
    if workers_cpu < 1:  # one worker: the shards ran in this process
        workers_cpu = 0.0
    rows_used = summary["rows"]["used"]

    # Read only now: the job's peak RSS must not include the benchmark's own copy of the texts.
    messages = pd.read_parquet(chats, columns=["role", "text"])
    n_messages = len(messages)
    buyer_texts = messages.loc[messages["role"] == "buyer", "text"].tolist()
    del messages
    predictor = Predictor(load_model(args.model))
    predictor.warm_up()
    sample = buyer_texts if not args.baseline_messages else buyer_texts[: args.baseline_messages]
    t, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(sample), 20_000):
        predictor.predict(sample[i : i + 20_000])
    predict_seconds, predict_cpu = time.perf_counter() - t, time.process_time() - cpu
    workers = args.workers if args.workers is not None else (config.flag.workers or os.cpu_count())
    result = {
        "conversations": summary["conversations"],
        "messages": n_messages,
        "buyer_messages": summary["messages"]["buyer"],
        "distinct_buyer_texts_per_shard_sum": summary["messages"]["distinct_buyer_texts"],
        "flagged": summary["flagged"],
        "flag_seconds": round(flag_seconds, 1),
        "flag_conversations_per_s": round(summary["conversations"] / flag_seconds),
        "flag_messages_per_s": round(rows_used / flag_seconds),
        "flag_buyer_messages_per_s": round(summary["messages"]["buyer"] / flag_seconds),
        "flag_workers": workers,
        "flag_cpu_seconds": {"parent": round(parent_cpu, 1), "workers": round(workers_cpu, 1), "shard_work": round(shard_cpu, 1)},
        "flag_messages_per_cpu_s": round(rows_used / (parent_cpu + workers_cpu)),
        "flag_buyer_messages_per_cpu_s": round(summary["messages"]["buyer"] / (parent_cpu + workers_cpu)),
        "flag_projected_idle_wall_s": round(parent_cpu + workers_cpu / max(1, min(workers, os.cpu_count() or 1)), 1),
        "peak_rss_mb_process_tree": round(rss.peak / 2**20),
        "peak_rss_mb_parent": round(rss.peak_parent / 2**20),
        "peak_rss_mb_largest_worker": round(rss.peak_child / 2**20),
        "predictor_buyer_messages_per_s_one_process": round(len(sample) / predict_seconds),
        "predictor_buyer_messages_per_cpu_s": round(len(sample) / predict_cpu),
        "predictor_sample": len(sample),
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_avg],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    # What the conversation logic, I/O and policy cost: buyer messages per CPU-second, job vs bare classifier.
    result["ratio_flag_to_predictor_per_cpu_s"] = round(
        result["flag_buyer_messages_per_cpu_s"] / result["predictor_buyer_messages_per_cpu_s"], 3
    )
    result["flag_messages_per_s_projected_idle"] = round(rows_used / result["flag_projected_idle_wall_s"])
    if args.profile:
        result["predictor_stage_messages_per_s"] = profile_predictor(predictor, buyer_texts[: args.profile])
    print(json.dumps(result, indent=2))
    (args.out_dir / f"result-{n_conversations}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
