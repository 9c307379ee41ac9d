"""Overload against the live service (`bentoml serve`, one worker, a small concurrency limit): more clients
than slots, each sending full /classify batches, for a bounded time. Every answer is 200, or 429/503 with
`Retry-After`; /livez answers throughout, quickly; the worker serves normally afterwards."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.serving.conftest import serve_bundle

pytestmark = pytest.mark.server

CLIENTS = 12
SLOTS = 3            # serving.max_concurrency: a quarter of the clients fit
LOAD_SECONDS = 8.0
BATCH = [f"在吗 这款{i}号有货吗 有货我就拍" for i in range(400)]  # one request keeps the model thread busy a while
LIVEZ_MAX_SECONDS = 1.0  # probes never wait for the model or a slot


@pytest.fixture(scope="module")
def crowded(flag_bundle_dir, tmp_path_factory):
    server = serve_bundle(flag_bundle_dir, tmp_path_factory.mktemp("overload"), max_concurrency=SLOTS, timeout_s=10)
    try:
        yield server
    finally:
        server.stop()


def test_overload_gets_429_with_retry_after_and_the_probes_answer_throughout(crowded):
    stop = threading.Event()
    answers: list[tuple[int, str | None]] = []
    probes: list[tuple[int, float]] = []

    def client() -> None:
        with httpx.Client(base_url=crowded.url, timeout=30) as http:
            while not stop.is_set():
                response = http.post("/classify", json={"messages": BATCH})
                answers.append((response.status_code, response.headers.get("retry-after")))
                if response.status_code != 200:
                    time.sleep(0.05)

    def probe() -> None:
        with httpx.Client(base_url=crowded.url, timeout=10) as http:
            while not stop.is_set():
                started = time.monotonic()
                status = http.get("/livez").status_code
                probes.append((status, time.monotonic() - started))
                time.sleep(0.1)

    with ThreadPoolExecutor(CLIENTS + 1) as pool:
        futures = [pool.submit(client) for _ in range(CLIENTS)] + [pool.submit(probe)]
        time.sleep(LOAD_SECONDS)
        stop.set()
        for future in futures:
            future.result()

    statuses = [status for status, _ in answers]
    assert set(statuses) <= {200, 429, 503}, sorted(set(statuses))
    assert statuses.count(200) >= 2 and statuses.count(429) >= 1, (statuses.count(200), statuses.count(429))
    assert all(retry == "1" for status, retry in answers if status in (429, 503))
    assert len(probes) >= LOAD_SECONDS / 0.5 and all(status == 200 for status, _ in probes)
    assert max(seconds for _, seconds in probes) < LIVEZ_MAX_SECONDS, sorted(s for _, s in probes)[-5:]
    with httpx.Client(base_url=crowded.url, timeout=30) as http:  # and afterwards the worker serves as before
        assert http.post("/classify", json={"messages": ["在吗"]}).status_code == 200
    assert crowded.process.poll() is None
    assert "Traceback" not in crowded.log()
