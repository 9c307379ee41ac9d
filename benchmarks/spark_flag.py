"""`buyer-intent flag` on both engines, side by side: `--engine local` and `--engine spark` on `local[2]`.

    .venv/bin/python benchmarks/spark_flag.py --model models/latest                          # 100k, 300k conversations
    .venv/bin/python benchmarks/spark_flag.py --model models/latest --sizes 100000,300000,1000000 --results benchmarks/RESULTS.md

The generated day is `benchmarks/flag_throughput.py`'s (the scale generator when it is there, else its flat
table; data generated once per size and seed under --out-dir and reused, in a child process). For every size
each engine runs in its own child process (`--run-one`), so one engine's memory and JVM do not sit under the
other's figures; this process samples the child's process tree with psutil every 0.2 s:

- driver: the child Python process, plus the JVM for spark (in `local[...]` mode the JVM is both the Spark
  driver and the executor: its heap holds the shuffle and cached blocks);
- workers: every other process of the tree (the local engine's worker processes; Spark's Python daemon and
  the Python workers it forks, one per core, each with the model loaded).

Peak memory is the peak of the sum of RSS over those processes, sampled together. CPU seconds are summed over
every process of the tree (last sample of each), so messages per CPU-second (~ per core) does not depend on
how busy the shared machine was. Both engines must write the same nudge list: the table says whether the
SHA-256 of the two files match. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from flag_throughput import _existing  # noqa: E402  (the generated day, shared with the flag benchmark)
from inference_speed import update_results  # noqa: E402  (the marked-section writer of benchmarks/RESULTS.md)

SECTION_START = "<!-- spark-flag:start -->"
SECTION_END = "<!-- spark-flag:end -->"
DEFAULT_CONF = {"spark.ui.enabled": "false", "spark.driver.memory": "2g"}


class TreeSampler:
    """Peak RSS of a process tree split into driver (the root, and the JVM) and workers (the rest), plus the
    CPU seconds of every process seen, sampled every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_driver = self.peak_workers = self.peak_total = 0
        self.peak_jvm = 0
        self.max_workers = 0
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        driver = workers = jvm = 0
        n_workers = 0
        for process in processes:
            try:
                with process.oneshot():
                    rss = process.memory_info().rss
                    times = process.cpu_times()
                    name = process.name()
            except psutil.Error:
                continue
            self.cpu[process.pid] = times.user + times.system
            if process.pid == self.root.pid or name.startswith("java"):
                driver += rss
                if name.startswith("java"):
                    jvm += rss
            else:
                workers += rss
                n_workers += 1
        self.peak_driver = max(self.peak_driver, driver)
        self.peak_workers = max(self.peak_workers, workers)
        self.peak_total = max(self.peak_total, driver + workers)
        self.peak_jvm = max(self.peak_jvm, jvm)
        self.max_workers = max(self.max_workers, n_workers)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())


# --- one engine, one size, in a child process -------------------------------------------------------


def run_one(engine: str, chats: Path, orders: Path, out: Path, model: str | None, master: str, conf: dict[str, str]) -> dict:
    from pipeline.config import load_config

    config = load_config(None)
    result: dict = {"engine": engine}
    if engine == "local":
        from pipeline.jobs.flag import run_flag

        t = time.perf_counter()
        summary = run_flag(chats, out, orders, model, None, config, progress=False)
        result["job_s"] = time.perf_counter() - t
        result["startup_s"] = 0.0
        result["workers"] = config.flag.workers or os.cpu_count()
    else:
        from pipeline.jobs.spark import run_flag_spark, spark_session

        t = time.perf_counter()
        spark, _ = spark_session(master, conf)  # the JVM starts here, not inside the timed job
        spark.range(1).count()
        result["startup_s"] = time.perf_counter() - t
        t = time.perf_counter()
        summary = run_flag_spark(chats, out, orders, model, None, config, master=master, conf=conf)
        result["job_s"] = time.perf_counter() - t
        result["shuffle_partitions"] = spark.conf.get("spark.sql.shuffle.partitions")
        result["adaptive"] = spark.conf.get("spark.sql.adaptive.enabled")
        result["spark"] = spark.version
        spark.stop()
    result.update(
        rows_in=summary["rows"]["in"], rows_used=summary["rows"]["used"], conversations=summary["conversations"],
        buyer_messages=summary["messages"]["buyer"], flagged=summary["flagged"], nudges_sha256=summary["files_sha256"][out.name],
    )
    return result


def measure(engine: str, chats: Path, orders: Path, out: Path, args, conf: dict[str, str]) -> dict:
    """Run one engine in a child process and sample its process tree."""
    result_file = out.with_name(out.name + ".bench.json")
    result_file.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--run-one", engine, "--chats", str(chats), "--orders", str(orders), "--out", str(out),
               "--master", args.master, "--result-file", str(result_file)]
    command += ["--model", args.model] if args.model else []
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    load_before = os.getloadavg()
    t = time.perf_counter()
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with TreeSampler(child.pid) as sampler:
        _, stderr = child.communicate()
    wall = time.perf_counter() - t
    if child.returncode != 0:
        raise SystemExit(f"{engine} failed (exit {child.returncode}):\n{stderr[-3000:]}")
    result = json.loads(result_file.read_text(encoding="utf-8"))
    result.update(
        process_s=round(wall, 1),
        messages_per_s=round(result["rows_used"] / result["job_s"]),
        cpu_s=round(sampler.cpu_seconds, 1),
        messages_per_cpu_s=round(result["rows_used"] / sampler.cpu_seconds) if sampler.cpu_seconds else None,
        peak_driver_mb=round(sampler.peak_driver / 2**20),
        peak_jvm_mb=round(sampler.peak_jvm / 2**20),
        peak_workers_mb=round(sampler.peak_workers / 2**20),
        peak_total_mb=round(sampler.peak_total / 2**20),
        worker_processes=sampler.max_workers,
        load_before=[round(x, 2) for x in load_before],
        load_after=[round(x, 2) for x in os.getloadavg()],
    )
    result["job_s"] = round(result["job_s"], 1)
    result["startup_s"] = round(result["startup_s"], 1)
    return result


def ensure_data(n: int, args) -> tuple[Path, Path]:
    directory = args.out_dir / f"data-{args.source}-{n}-{args.seed}"  # flag_throughput.py's name: the data is shared
    found = _existing(directory)
    if found is None:
        command = [sys.executable, str(REPO / "benchmarks" / "flag_throughput.py"), "--conversations", str(n), "--seed", str(args.seed),
                   "--out-dir", str(args.out_dir), "--source", args.source, "--generate-only"]
        t = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True)
        print(f"generated {n:,} conversations in {time.perf_counter() - t:.0f}s", file=sys.stderr)
        found = _existing(directory)
    if found is None:
        raise SystemExit(f"no generated data in {directory}")
    return found


# --- the report -------------------------------------------------------------------------------------


def render(rows: list[dict], meta: dict) -> str:
    def mb(x):
        return f"{x:,}"

    lines = [
        SECTION_START,
        "# `flag` on Spark (`local[2]`) next to the local engine (issue #11)",
        "",
        f"Generated by `{meta['command']}` on {meta['when']} ({meta['machine']}, {meta['cpus']} cores, {meta['memory_gb']} GB; "
        f"Python {meta['python']}, Spark {meta['spark']}). Model: `{meta['model']}` ({meta['model_mb']} MB bundle). "
        f"Data: {meta['source']}. Spark settings: {meta['conf']} (shuffle partitions {meta['shuffle_partitions']}, adaptive "
        f"execution {meta['adaptive']}); local engine: {meta['local_workers']} worker processes.",
        "",
        "**The machine is shared**: other jobs ran during the runs; the load average (1/5/15 min) is recorded at the start of "
        "each run. Messages per CPU-second (summed over the whole process tree) depends least on that load.",
        "",
        "| conversations | messages | engine | job s | messages/s | CPU s | messages/CPU-s | peak driver MB | peak workers MB | peak total MB | same nudge list | load avg at start |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        driver = f"{mb(r['peak_driver_mb'])}" + (f" (JVM {mb(r['peak_jvm_mb'])})" if r["engine"] == "spark" else "")
        lines.append(
            f"| {r['conversations']:,} | {r['rows_in']:,} | {r['engine']} | {r['job_s']:.0f} | {r['messages_per_s']:,} | {r['cpu_s']:.0f} | "
            f"{r['messages_per_cpu_s']:,} | {driver} | {mb(r['peak_workers_mb'])} ({r['worker_processes']} processes) | "
            f"{mb(r['peak_total_mb'])} | {r['same']} | {' / '.join(f'{x:.1f}' for x in r['load_before'])} |"
        )
    growth = []
    for engine in ("local", "spark"):
        mine = [r for r in rows if r["engine"] == engine]
        if len(mine) > 1:
            first, last = mine[0], mine[-1]
            growth.append(
                f"{engine}: {last['rows_in'] / first['rows_in']:.1f}x the messages took {last['job_s'] / first['job_s']:.1f}x the time "
                f"({last['cpu_s'] / first['cpu_s']:.1f}x the CPU)"
            )
    startup = [r["startup_s"] for r in rows if r["engine"] == "spark"]
    lines += [
        "",
        "job s: the `run_flag` / `run_flag_spark` call (reading, checking, scoring, the lost rule, the policy, the summary and the "
        f"published files); Spark's session start (JVM) is outside it: {', '.join(f'{s:.0f}' for s in startup)} s. "
        "Driver: the Python process (and for spark the JVM, which in `local[...]` mode is driver and executor). Workers: the local "
        "engine's worker processes; Spark's Python daemon and its Python workers (one per task slot, each loads the model once).",
    ]
    if growth:
        lines += ["", "Growth: " + "; ".join(growth) + "."]
    if any(r.get("same") == "no" for r in rows):
        lines += ["", "**Same nudge list: no** means the engines disagreed on this data (the speed figures stand, the "
                  "output does not): compare the two `nudges.csv` under the output directory."]
    lines += ["", f"Reproduce: `{meta['command']}`.", SECTION_END]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model bundle directory or models:/ URI (default: the champion)")
    parser.add_argument("--sizes", default="100000,300000", help="conversations per run, comma-separated (1000000 for the full day)")
    parser.add_argument("--engines", default="local,spark")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--source", choices=["auto", "synth", "builtin"], default="auto")
    parser.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "out")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--conf", action="append", default=[], help="extra Spark setting k=v (repeatable)")
    parser.add_argument("--results", type=Path, default=None, help="write the section into this Markdown file (e.g. benchmarks/RESULTS.md)")
    parser.add_argument("--run-one", choices=["local", "spark"], help=argparse.SUPPRESS)
    parser.add_argument("--chats", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--orders", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    from pipeline.jobs.spark import parse_conf

    conf = {**DEFAULT_CONF, **parse_conf(args.conf)}
    if args.run_one:
        result = run_one(args.run_one, args.chats, args.orders, args.out, args.model, args.master, conf)
        args.result_file.write_text(json.dumps(result), encoding="utf-8")
        return

    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    rows = []
    for n in sizes:
        chats, orders = ensure_data(n, args)
        hashes = {}
        for engine in engines:
            out = args.out_dir / f"spark-bench-{engine}-{n}" / "nudges.csv"
            out.parent.mkdir(parents=True, exist_ok=True)
            print(f"{n:,} conversations, {engine} ...", file=sys.stderr, flush=True)
            result = measure(engine, chats, orders, out, args, conf)
            hashes[engine] = result["nudges_sha256"]
            rows.append(result)
            print(json.dumps(result), flush=True)
        for r in rows[-len(engines):]:
            r["same"] = "yes" if len(set(hashes.values())) == 1 and len(hashes) > 1 else ("no" if len(hashes) > 1 else "-")

    from pipeline.inference import resolve_model
    from pipeline.config import Registry, load_config

    resolved = resolve_model(args.model, Registry.from_config(load_config(None)))
    spark_rows = [r for r in rows if r["engine"] == "spark"]
    local_rows = [r for r in rows if r["engine"] == "local"]
    meta = {
        "command": "benchmarks/spark_flag.py " + " ".join(sys.argv[1:]),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30),
        "python": platform.python_version(),
        "spark": spark_rows[0]["spark"] if spark_rows else "-",
        "model": args.model or resolved.name,
        "model_mb": round(sum(p.stat().st_size for p in Path(resolved.directory).rglob("*") if p.is_file()) / 2**20),
        "source": f"the `benchmarks/flag_throughput.py` generated day (source {args.source}, seed {args.seed})",
        "conf": ", ".join(f"`{k}={v}`" for k, v in conf.items()) + f", master `{args.master}`",
        "shuffle_partitions": spark_rows[0]["shuffle_partitions"] if spark_rows else "-",
        "adaptive": spark_rows[0]["adaptive"] if spark_rows else "-",
        "local_workers": local_rows[0]["workers"] if local_rows else "-",
    }
    section = render(rows, meta)
    print(section)
    if args.results:
        update_results(args.results, section, SECTION_START, SECTION_END)


if __name__ == "__main__":
    main()
