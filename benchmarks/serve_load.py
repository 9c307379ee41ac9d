"""Load benchmark of the live service: `python benchmarks/serve_load.py [--model DIR] [--workers N]`.

(The `serving:` config of configs/default.yaml, with `workers` from --workers and any
`--serving KEY=VALUE`, e.g. `--serving keepalive_requests=0` to measure without connection recycling.)

1. The ceiling: the same model called in-process (Predictor.predict, top 3) on the same messages,
   one message per call and 64 per call.
2. `bentoml serve serving.service:BuyerIntent` on a free 127.0.0.1 port (BUYER_INTENT_MODEL=--model),
   waited for with /readyz.
3. A separate client process (asyncio, raw keep-alive HTTP/1.1 so the client costs little CPU) drives
   it with N concurrent connections, each sending its next request as soon as the previous answer is
   in, for a bounded time and request count: single-message requests at 32 connections, then
   64-message requests.
4. Throughput and p50/p95/p99 latency per scenario, next to the in-process figures, the ratio (the
   serving overhead), and the targets: p99 <= 50 ms for single messages at 32 clients, >= 5,000
   messages/s with 64-message requests. The server is always stopped.

Results also go to benchmarks/out/serve_load.json. The client and server share the machine: on a
2-core box the client's CPU is taken from the server, which the figures include.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "serve_load.json"
FALLBACK_MESSAGES = [
    "在吗", "亲 这款有货吗", "M码还有没有", "有货我就拍", "能便宜点吗", "包邮吗 包邮我就拍了", "什么时候发货",
    "几天能到北京", "发什么快递", "能发顺丰吗", "165斤穿多大", "偏大还是偏小", "好的谢谢", "不用了", "嗯嗯",
    "我要退货", "收到是坏的", "给你差评", "订单123456789012345678 怎么还没发", "我电话13812345678 地址浙江省杭州市余杭区文一西路969号",
    "这个和那个有什么区别", "是正品吗", "保质期多久", "可以用花呗吗", "能开发票吗", "拍了你改下价", "我要两件", "哈哈",
]


# ----------------------------------------------------------------------------------------- messages


def load_messages(path: Path | None, n: int = 4096, seed: int = 7) -> list[str]:
    """Buyer messages to send: a sample of a labelled file's `text` column, else a built-in list."""
    texts: list[str] = []
    if path is not None and path.is_file():
        import pandas as pd

        frame = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=["text"])
        texts = [t for t in frame["text"].tolist() if t.strip()]
    if not texts:
        texts = FALLBACK_MESSAGES
    rng = random.Random(seed)
    return [rng.choice(texts) for _ in range(n)]


def default_model() -> Path | None:
    for candidate in (REPO / "models" / "latest", Path("/tmp/smoke/model")):
        if (candidate / "manifest.json").is_file():
            return candidate
    return None


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan")}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] * 1000

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "mean_ms": statistics.fmean(ordered) * 1000}


# ------------------------------------------------------------------------------------- in-process


def in_process(model: Path, messages: list[str], seconds: float) -> dict[str, dict]:
    """The model alone, one thread, same messages: the ceiling the service is compared with."""
    from pipeline.bundle import load_bundle
    from pipeline.inference import Predictor

    predictor = Predictor(load_bundle(model))
    predictor.warm_up()
    results = {}
    for name, size in (("single", 1), ("batch64", 64)):
        latencies, sent, i = [], 0, 0
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            batch = [messages[(i + k) % len(messages)] for k in range(size)]
            i += size
            t0 = time.perf_counter()
            predictor.predict(batch, top_k=3)
            latencies.append(time.perf_counter() - t0)
            sent += size
        elapsed = time.perf_counter() - started
        results[name] = {
            "requests": len(latencies), "messages": sent, "seconds": round(elapsed, 2),
            "requests_per_s": len(latencies) / elapsed, "messages_per_s": sent / elapsed, **percentiles(latencies),
        }
    return results


# ------------------------------------------------------------------------------------------ client


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip().lower()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, headers.get("connection") == "close"


def _requests(host: str, port: int, messages: list[str], size: int, n: int = 512) -> list[bytes]:
    out = []
    for r in range(n):
        body = json.dumps({"messages": [messages[(r * size + k) % len(messages)] for k in range(size)]}, ensure_ascii=False).encode()
        out.append(
            b"POST /classify HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (host.encode(), port, len(body), body)
        )
    return out


async def _drive(host: str, port: int, payloads: list[bytes], clients: int, seconds: float, max_requests: int, warmup: float):
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = {"sent": 0}
    start = time.perf_counter()
    measure_from = start + warmup
    deadline = measure_from + seconds

    async def client(index: int) -> None:
        reader = writer = None
        k = index
        try:
            while time.perf_counter() < deadline and counter["sent"] < max_requests:
                counter["sent"] += 1
                payload = payloads[k % len(payloads)]
                k += clients
                t0 = time.perf_counter()
                if writer is None:  # first request, or the server closed the connection: reconnecting is part of the latency
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(payload)
                await writer.drain()
                status, close = await _read_response(reader)
                t1 = time.perf_counter()
                if t0 >= measure_from:
                    latencies.append(t1 - t0)
                    statuses[status] = statuses.get(status, 0) + 1
                if close:
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = min(time.perf_counter(), deadline) - measure_from
    return latencies, statuses, max(elapsed, 1e-9)


def client_main(args: argparse.Namespace) -> None:
    """The load generator process: prints one JSON line with the scenario's figures."""
    messages = load_messages(Path(args.messages) if args.messages else None)
    payloads = _requests("127.0.0.1", args.port, messages, args.size)
    cpu_before = time.process_time()
    latencies, statuses, elapsed = asyncio.run(
        _drive("127.0.0.1", args.port, payloads, args.clients, args.duration, args.max_requests, args.warmup)
    )
    ok = statuses.get(200, 0)
    print(json.dumps({
        "clients": args.clients, "messages_per_request": args.size, "requests": len(latencies), "ok": ok,
        "statuses": {str(k): v for k, v in sorted(statuses.items())}, "seconds": round(elapsed, 2),
        "requests_per_s": ok / elapsed, "messages_per_s": ok * args.size / elapsed, **percentiles(latencies),
        "client_cpu_s": time.process_time() - cpu_before,
    }))


# ------------------------------------------------------------------------------------------ server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    model: Path, port: int, workers: int, workdir: Path, extra_path: str | None = None, overrides: dict | None = None
) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("BUYER_INTENT_BENTO_MODEL", None)
    env.update({
        "BUYER_INTENT_MODEL": str(model), "BENTOML_HOME": str(workdir / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
        "PYTHONPATH": os.pathsep.join(filter(None, [extra_path, str(REPO)])),
    })
    import yaml

    raw = yaml.safe_load((REPO / "configs" / "default.yaml").read_text(encoding="utf-8"))
    raw.setdefault("serving", {})["workers"] = workers  # everything else: the default config
    raw["serving"].update(overrides or {})
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    env["BUYER_INTENT_CONFIG"] = str(config)
    log = open(workdir / "server.log", "wb")
    command = [str(Path(sys.executable).with_name("bentoml")), "serve", "serving.service:BuyerIntent",
               "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(process: subprocess.Popen, port: int, deadline_s: float, log: Path) -> float:
    import httpx

    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"server not ready within {deadline_s} s")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def server_cpu_seconds(process: subprocess.Popen) -> float:
    """CPU time (user + system) used so far by the server's processes (supervisor and workers)."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(process.pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
    except psutil.NoSuchProcess:
        pass
    return total


def server_side_share_under(metrics_before: str, metrics_after: str, bound: str = "0.05") -> float | None:
    """Share of /classify answers that took at most `bound` seconds inside the server (BentoML's
    request-duration histogram, 200s only), between two /metrics snapshots."""

    def read(text: str) -> tuple[float, float]:
        under = total = 0.0
        for line in text.splitlines():
            if line.startswith("bentoml_service_request_duration_seconds_bucket") and 'endpoint="/classify"' in line \
                    and 'http_response_code="200"' in line:
                value = float(line.rsplit(" ", 1)[1])
                if f'le="{bound}"' in line:
                    under += value
                elif 'le="+Inf"' in line:
                    total += value
        return under, total

    under_0, total_0 = read(metrics_before)
    under_1, total_1 = read(metrics_after)
    return (under_1 - under_0) / (total_1 - total_0) if total_1 > total_0 else None


def run_client(port: int, clients: int, size: int, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, __file__, "--client", "--port", str(port), "--clients", str(clients), "--size", str(size),
        "--duration", str(args.duration), "--warmup", str(args.warmup), "--max-requests", str(args.max_requests),
    ]
    if args.messages:
        command += ["--messages", args.messages]
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.duration + args.warmup + 120)
    if done.returncode != 0:
        raise SystemExit(f"client failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model bundle directory (default: models/latest, else /tmp/smoke/model)")
    parser.add_argument("--messages", default=str(REPO / "data" / "messages.csv"), help="CSV with a text column to sample messages from")
    parser.add_argument("--workers", type=int, default=2, help="server processes (serving.workers; default config: 2)")
    parser.add_argument(
        "--serving", action="append", default=[], metavar="KEY=VALUE",
        help="override a key of the serving config (YAML value), e.g. keepalive_requests=0; repeatable",
    )
    parser.add_argument("--clients", type=int, default=32, help="concurrent connections for single-message requests")
    parser.add_argument("--batch-clients", type=int, default=8, help="concurrent connections for 64-message requests")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each scenario")
    parser.add_argument("--max-requests", type=int, default=200_000, help="requests per scenario at most")
    parser.add_argument("--out", default=str(OUT), help="JSON results")
    parser.add_argument(
        "--pythonpath",
        help="prepended to the server's PYTHONPATH: e.g. a `pip install --target DIR uvloop httptools` directory, "
        "to measure uvicorn with them before they are added to the project",
    )
    # client mode (internal)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return

    model = Path(args.model) if args.model else default_model()
    if model is None or not (model / "manifest.json").is_file():
        raise SystemExit("no model: pass --model DIR (a bundle directory, e.g. models/latest after `make demo`)")
    messages_path = Path(args.messages) if args.messages and Path(args.messages).is_file() else None
    args.messages = str(messages_path) if messages_path else None
    manifest = json.loads((model / "manifest.json").read_text(encoding="utf-8"))
    print(f"model: {model} (trained {manifest.get('created_at')}, {len(manifest.get('labels', []))} intents, "
          f"models.skops {(model / 'models.skops').stat().st_size / 1e6:.1f} MB)")
    print(f"messages: {messages_path or 'built-in list'}; machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")

    import yaml

    overrides = {}
    for item in args.serving:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--serving {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value)
    messages = load_messages(messages_path)
    print("in-process ceiling (Predictor.predict, top_k=3, one thread) ...", flush=True)
    ceiling = in_process(model, messages, seconds=min(args.duration, 8.0))

    results: dict = {"model": str(model), "workers": args.workers, "serving_overrides": overrides, "server_pythonpath": args.pythonpath, "cpus": os.cpu_count(), "python": platform.python_version(),
                     "load_average_before": os.getloadavg(), "in_process": ceiling, "http": {}}
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        process = start_server(model, port, args.workers, workdir, args.pythonpath, overrides)
        try:
            results["ready_seconds"] = round(wait_ready(process, port, 300, workdir / "server.log"), 1)
            print(f"server ready in {results['ready_seconds']} s (workers={args.workers}"
                  f"{''.join(f', {k}={v}' for k, v in overrides.items())}"
                  f"{', extra PYTHONPATH ' + args.pythonpath if args.pythonpath else ''})", flush=True)
            import httpx

            for name, clients, size in (("single", args.clients, 1), ("batch64", args.batch_clients, 64)):
                print(f"driving {name}: {clients} clients x {size} message(s) for {args.duration:g} s ...", flush=True)
                metrics_before = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
                cpu_before = server_cpu_seconds(process)
                result = run_client(port, clients, size, args)
                cpu = server_cpu_seconds(process) - cpu_before  # includes the warm-up seconds
                metrics_after = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
                total_seconds = args.duration + args.warmup
                all_messages = result["messages_per_s"] * total_seconds  # approximately, warm-up included
                result["server_cpu_ms_per_message"] = 1000 * cpu / max(all_messages, 1)
                result["client_cpu_ms_per_message"] = 1000 * result["client_cpu_s"] / max(all_messages, 1)
                result["server_share_within_50ms"] = server_side_share_under(metrics_before, metrics_after)
                results["http"][name] = result
        finally:
            stop_server(process)
    results["load_average_after"] = os.getloadavg()

    single, batch = results["http"]["single"], results["http"]["batch64"]
    rows = [
        ("single, HTTP", single), ("single, in-process", ceiling["single"]),
        ("64-message, HTTP", batch), ("64-message, in-process", ceiling["batch64"]),
    ]
    print()
    print(f"{'scenario':<24}{'clients':>8}{'req/s':>10}{'msg/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}  non-200")
    for label, r in rows:
        clients = r.get("clients", 1)
        other = {k: v for k, v in r.get("statuses", {}).items() if k != "200"}
        print(f"{label:<24}{clients:>8}{r['requests_per_s']:>10.0f}{r['messages_per_s']:>10.0f}"
              f"{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}{r['p99_ms']:>9.1f}  {other or '-'}")
    print()
    for label, r in (("single", single), ("64-message", batch)):
        share = r.get("server_share_within_50ms")
        print(f"{label}: server CPU {r['server_cpu_ms_per_message']:.2f} ms/message, load client CPU "
              f"{r['client_cpu_ms_per_message']:.2f} ms/message; answered within 50 ms inside the server: "
              f"{'n/a' if share is None else f'{100 * share:.1f}%'}")
    single_ratio = single["messages_per_s"] / ceiling["single"]["messages_per_s"]
    batch_ratio = batch["messages_per_s"] / ceiling["batch64"]["messages_per_s"]
    results["ratios"] = {"single_http_vs_in_process_single": single_ratio, "batch64_http_vs_in_process_batch64": batch_ratio,
                         "single_http_vs_in_process_batch64": single["messages_per_s"] / ceiling["batch64"]["messages_per_s"]}
    results["targets"] = {
        "single_p99_ms<=50": single["p99_ms"] <= 50.0,
        "batch64_messages_per_s>=5000": batch["messages_per_s"] >= 5000.0,
    }
    print()
    print(f"HTTP / in-process throughput: single {single_ratio:.2f}x (in-process one message per call; the service "
          f"batches across clients), 64-message {batch_ratio:.2f}x")
    print(f"target p99 <= 50 ms (single, {single['clients']} clients): {single['p99_ms']:.1f} ms -> "
          f"{'met' if results['targets']['single_p99_ms<=50'] else 'NOT met'}")
    print(f"target >= 5000 msg/s (64-message requests): {batch['messages_per_s']:.0f} msg/s -> "
          f"{'met' if results['targets']['batch64_messages_per_s>=5000'] else 'NOT met'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
