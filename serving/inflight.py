"""One bound on requests in flight for all the workers of a server (`serving.max_concurrency`).

The workers share one listening socket, and the kernel hands new connections to whichever worker is
waiting: a burst mostly lands on one of them. With the bound split per worker (64 -> 32 + 32), a client
got 429 from 36 connections on (benchmarks/RESULTS.md, "serve-ramp") although 64 were allowed. So the
workers count together: a small file of one counter per worker, memory-mapped by each of them, and an
admission (sum of the counters below the bound, then one more on this worker's own) made under an
exclusive `flock`, so two workers cannot both take the last slot. Each worker only ever changes its own
counter; a restarted worker (same index) starts its counter at 0, since the requests it counted died
with its predecessor. The kernel drops a dead process's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct
import tempfile
from pathlib import Path

COUNTER = struct.Struct("<q")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class SharedInFlight:
    """Requests in flight across the `workers` processes of one server, at most `limit` together.

    `server_id` names the server the workers belong to (their parent's pid: a second server on the
    same machine counts apart); `worker` is this process's index, 0 <= worker < workers."""

    def __init__(self, limit: int, workers: int, worker: int, server_id: int, directory: str | Path | None = None):
        if not 0 <= worker < workers:
            raise ValueError(f"worker index {worker} outside 0..{workers - 1}")
        self.limit = limit
        self.workers = workers
        self.worker = worker
        folder = Path(directory or tempfile.gettempdir()) / f"buyer-intent-inflight-{os.getuid()}"
        folder.mkdir(mode=0o700, exist_ok=True)
        _remove_dead_servers(folder, keep=server_id)
        self.path = folder / f"server-{server_id}.bin"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        size = COUNTER.size * workers
        with self._locked():
            if os.fstat(self._fd).st_size < size:
                os.ftruncate(self._fd, size)
            self._map = mmap.mmap(self._fd, size)
            COUNTER.pack_into(self._map, COUNTER.size * worker, 0)

    @contextlib.contextmanager
    def _locked(self):
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _count(self, worker: int) -> int:
        return COUNTER.unpack_from(self._map, COUNTER.size * worker)[0]

    def total(self) -> int:
        return sum(self._count(w) for w in range(self.workers))

    def try_acquire(self) -> bool:
        """Take a slot if the server has one free; False: answer 429."""
        with self._locked():
            if self.total() >= self.limit:
                return False
            COUNTER.pack_into(self._map, COUNTER.size * self.worker, self._count(self.worker) + 1)
        return True

    def release(self) -> None:
        # this worker's own counter, changed by this worker only: no lock needed for the write
        COUNTER.pack_into(self._map, COUNTER.size * self.worker, max(0, self._count(self.worker) - 1))

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


def _remove_dead_servers(folder: Path, keep: int) -> None:
    """Counter files of servers that are gone (their pid no longer runs)."""
    for stale in folder.glob("server-*.bin"):
        try:
            pid = int(stale.stem.removeprefix("server-"))
        except ValueError:
            continue
        if pid != keep and not _alive(pid):
            stale.unlink(missing_ok=True)
