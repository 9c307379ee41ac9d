"""The server-wide bound on requests in flight (serving/inflight.py): counted over all workers."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

import pytest

from serving.inflight import SharedInFlight


def test_the_bound_is_shared_by_the_workers_of_one_server(tmp_path):
    first, second = (SharedInFlight(3, 2, worker, server_id=os.getpid(), directory=tmp_path) for worker in (0, 1))
    assert first.try_acquire() and first.try_acquire()  # two on one worker: the split bound (1 each) would refuse
    assert second.try_acquire()
    assert not first.try_acquire() and not second.try_acquire()  # three in flight on the server: full
    first.release()
    assert second.try_acquire() and second.total() == 3 and first.total() == 3


def test_another_server_counts_apart_and_a_restarted_worker_starts_at_zero(tmp_path):
    worker = SharedInFlight(1, 2, 0, server_id=os.getpid(), directory=tmp_path)
    other_server = SharedInFlight(1, 2, 0, server_id=os.getppid(), directory=tmp_path)
    assert worker.try_acquire() and other_server.try_acquire()
    assert not worker.try_acquire()
    restarted = SharedInFlight(1, 2, 0, server_id=os.getpid(), directory=tmp_path)  # its predecessor's requests died with it
    assert restarted.total() == 0 and restarted.try_acquire()


def test_counter_files_of_servers_that_are_gone_are_removed(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    folder = tmp_path / f"buyer-intent-inflight-{os.getuid()}"
    folder.mkdir()
    (folder / f"server-{gone}.bin").write_bytes(b"\0" * 16)
    SharedInFlight(2, 2, 1, server_id=os.getpid(), directory=tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [f"server-{os.getpid()}.bin"]


def test_a_worker_index_outside_the_workers_is_refused(tmp_path):
    with pytest.raises(ValueError, match="worker index 2"):
        SharedInFlight(4, 2, 2, server_id=os.getpid(), directory=tmp_path)


def _hammer(directory: str, worker: int, limit: int, rounds: int, server: int, seen: multiprocessing.Queue) -> None:
    slots = SharedInFlight(limit, 4, worker, server_id=server, directory=directory)
    most = 0
    for _ in range(rounds):
        if slots.try_acquire():
            # Read under the admission lock: every increment happens under it, so the counters can only fall while
            # they are read and the sum is at most what was in flight. Read without it, the sum mixes moments (one
            # counter before another worker's release, the next after a third worker's admission) and can
            # exceed the bound that was never exceeded.
            with slots._locked():
                most = max(most, slots.total())
            slots.release()
    seen.put(most)


def test_workers_in_separate_processes_never_pass_the_bound_together(tmp_path):
    context = multiprocessing.get_context("spawn")
    seen = context.Queue()
    workers = [context.Process(target=_hammer, args=(str(tmp_path), w, 2, 3000, os.getpid(), seen)) for w in range(4)]
    for process in workers:
        process.start()
    most = [seen.get(timeout=60) for _ in workers]
    for process in workers:
        process.join(timeout=60)
    assert all(process.exitcode == 0 for process in workers)
    assert max(most) <= 2 and max(most) >= 1
