"""`serving.max_concurrency` is one bound for the whole server, whatever worker a connection lands on.

With two workers and the bound split per worker, connections that landed unevenly got 429 well below the
bound (benchmarks/RESULTS.md, "serve-ramp": from 36 of 64). Here: a live server with two workers and no
connection recycling; as many keep-alive clients as the bound never get a 429, twice as many do."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.serving.conftest import serve_bundle

pytestmark = pytest.mark.server

BOUND = 16
BATCH = [f"在吗 这款{i}号有货吗 有货我就拍" for i in range(100)]  # each request holds its slot a while


@pytest.fixture(scope="module")
def two_workers(flag_bundle_dir, tmp_path_factory):
    server = serve_bundle(flag_bundle_dir, tmp_path_factory.mktemp("shared-slots"), workers=2, max_concurrency=BOUND,
                          keepalive_requests=0, timeout_s=20)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:  # both workers loaded: /readyz answers for one
            deadline, in_a_row = time.monotonic() + 120, 0
            while in_a_row < 20 and time.monotonic() < deadline:
                in_a_row = in_a_row + 1 if http.post("/classify", json={"messages": ["在吗"]}, headers={"Connection": "close"}).status_code == 200 else 0
        # On a busy machine a worker still loading may not accept at all, so the loop above can see only the other
        # one: wait until a burst of keep-alive clients, spread over both as the tests' are, gets nothing but 200
        # (a loading worker answers 503, `serving.service`).
        while time.monotonic() < deadline and {status for status, _ in _load(server.url, BOUND, 0.5)} != {200}:
            pass
        yield server
    finally:
        server.stop()


def _load(url: str, clients: int, seconds: float) -> list[tuple[int, str | None]]:
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()
    opened = threading.Barrier(clients)

    def client() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:  # one keep-alive connection, opened with the others
            opened.wait()
            while not stop.is_set():
                response = http.post("/classify", json={"messages": BATCH})
                answers.append((response.status_code, response.headers.get("retry-after")))

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client) for _ in range(clients)]
        time.sleep(seconds)
        stop.set()
        for future in futures:
            future.result()
    return answers


def test_as_many_clients_as_the_bound_get_no_429_on_two_workers(two_workers):
    answers = _load(two_workers.url, BOUND, 6.0)
    statuses = [status for status, _ in answers]
    assert statuses.count(429) == 0, f"{statuses.count(429)} of {len(statuses)} answers were 429 below the bound"
    assert statuses.count(200) >= BOUND and set(statuses) == {200}, sorted(set(statuses))


def test_past_the_bound_the_server_still_answers_429_with_retry_after(two_workers):
    answers = _load(two_workers.url, 3 * BOUND, 4.0)
    statuses = [status for status, _ in answers]
    assert statuses.count(429) >= 1 and statuses.count(200) >= BOUND, (statuses.count(200), statuses.count(429))
    assert set(statuses) <= {200, 429} and all(retry == "1" for status, retry in answers if status == 429)
    assert two_workers.process.poll() is None and "Traceback" not in two_workers.log()
