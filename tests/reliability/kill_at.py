"""Run `buyer-intent ARGS` and SIGKILL it (no cleanup: no `finally`, no atexit) at an exact point: just
before the Nth rename onto a file or directory named NAME, the moment a job commits a checkpoint or an
output.

    python -m tests.reliability.kill_at NAME N -- flag --chats ...

Renames are where the jobs publish (pipeline.data.tables.atomic_file, the shard and bundle renames), so
"before rename k" walks every commit point without any hook in the production code. `N` counts renames
onto NAME from 1. Another process polling for files could not hit these points reliably: the merge of a
small job takes milliseconds.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

_real_replace = os.replace
_real_rename = os.rename


def _arm(name: str, nth: int) -> None:
    seen = 0

    def check(dst) -> None:
        nonlocal seen
        if Path(os.fsdecode(dst)).name == name:
            seen += 1
            if seen == nth:
                sys.stderr.flush()
                os.kill(os.getpid(), signal.SIGKILL)

    def replace(src, dst, *args, **kwargs):
        check(dst)
        return _real_replace(src, dst, *args, **kwargs)

    def rename(src, dst, *args, **kwargs):
        check(dst)
        return _real_rename(src, dst, *args, **kwargs)

    os.replace, os.rename = replace, rename


if __name__ == "__main__":
    name, nth, separator, *args = sys.argv[1:]
    assert separator == "--", "usage: kill_at NAME N -- buyer-intent arguments"
    _arm(name, int(nth))
    from pipeline.cli import app

    sys.argv = ["buyer-intent", *args]
    app()
