"""The fault suite's tools: the jobs run as real `buyer-intent` processes on real files, with the small
bundle of tests/conftest.py (`flag_bundle_dir`) and settings that give several chunks and shards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.batch.builders import chat_fixture, flat_rows, write_csv, write_orders

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "pipeline.cli"]
KILL_AT = [sys.executable, "-m", "tests.reliability.kill_at"]
# many small chunks and shards, one worker (in process): each phase lasts long enough to be caught
JOB_CONFIG = "flag:\n  chunk_rows: 200\n  shard_rows: 400\n  workers: 1\n"


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "MLFLOW_TRACKING_URI": "sqlite:///unused-mlflow.db"}


def run(args: list[str], cwd: Path | None = None, timeout: float = 120, prefix: list[str] = CLI) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *map(str, args)], cwd=cwd or REPO, env=env(), capture_output=True, text=True, timeout=timeout)


def visible(directory: Path) -> dict[str, bytes]:
    """What a person or a downstream import sees in a directory: its files that are not hidden."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file() and not p.name.startswith(".")}


def error_lines(stderr: str) -> list[str]:
    """stderr without the log lines and progress bars: what the job says is wrong."""
    return [line for line in stderr.splitlines() if line.strip() and " INFO " not in line and " DEBUG " not in line
            and "jieba" not in line.lower() and not line.startswith(("Loading model", "Prefix dict", "Building prefix", "partition:", "shards:"))]


@pytest.fixture(scope="session")
def job_files(tmp_path_factory) -> dict[str, Path]:
    """Chats of 1,650 conversations (4,200 rows, shuffled: conversations spread over chunks), orders and
    the job settings; and a second chats file (the last 150 conversations left out) for an 'older' run."""
    root = tmp_path_factory.mktemp("jobs")
    conversations = [(f"x{k}-{cid}", f"{buyer}-{k % 40}", shop, category, turns)
                     for k in range(150) for cid, buyer, shop, category, turns in chat_fixture()]
    rows = flat_rows(conversations).sample(frac=1.0, random_state=7)
    config = root / "job.yaml"
    config.write_text(JOB_CONFIG, encoding="utf-8")
    return {
        "chats": write_csv(rows, root / "chats.csv"),
        "older_chats": write_csv(rows[~rows["conversation_id"].str.startswith("x149-")], root / "older.csv"),
        "orders": write_orders(root / "orders.csv"),
        "config": config,
        "root": root,
    }


def flag_args(files: dict[str, Path], out: Path, bundle: Path, chats: str = "chats") -> list[str]:
    return ["flag", "--chats", files[chats], "--orders", files["orders"], "--out", out, "--model", bundle, "--config", files["config"]]


@pytest.fixture(scope="session")
def reference_run(job_files, flag_bundle_dir) -> dict[str, dict[str, bytes]]:
    """Uninterrupted runs: the nudge list set of `chats` and of `older_chats` (the files a person sees)."""
    sets = {}
    for name in ("chats", "older_chats"):
        out_dir = job_files["root"] / f"reference-{name}"
        result = run(flag_args(job_files, out_dir / "nudges.csv", flag_bundle_dir, name))
        assert result.returncode == 0, result.stderr[-3000:]
        sets[name] = visible(out_dir)
        assert set(sets[name]) == {"nudges.csv", "nudges.csv.rejected.csv", "nudges.csv.summary.json"}
    return sets
