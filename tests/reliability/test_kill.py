"""kill -9 of the real flag job at each phase: nothing partial where the output belongs, the previous
output set intact or marked unfinished (never a summary of other files), no worker outlives the job,
and the rerun resumes to the bytes of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.jobs.flag import output_set_problems

from .conftest import CLI, KILL_AT, env, flag_args, run, visible

SET = ("nudges.csv", "nudges.csv.rejected.csv", "nudges.csv.summary.json")


def _comparable(files: dict[str, bytes]) -> dict[str, object]:
    """The set's files, the summary without the paths that name its own directory."""
    summary = json.loads(files["nudges.csv.summary.json"])
    summary.pop("output"), summary["rows"].pop("rejected_file")
    return {"nudges.csv": files["nudges.csv"], "nudges.csv.rejected.csv": files["nudges.csv.rejected.csv"], "summary": summary}


def _with_previous_set(out_dir: Path, previous: dict[str, bytes]) -> None:
    out_dir.mkdir(parents=True)
    for name, data in previous.items():
        (out_dir / name).write_bytes(data)


def _rerun_gives_the_uninterrupted_set(files, out: Path, bundle, expected: dict[str, bytes]) -> subprocess.CompletedProcess:
    result = run(flag_args(files, out, bundle))
    assert result.returncode == 0, result.stderr[-3000:]
    assert output_set_problems(out) == []
    assert _comparable(visible(out.parent)) == _comparable(expected)
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(SET)  # no work directory, temporary or staged file left
    return result


@pytest.mark.parametrize(
    ("name", "phase"),
    [
        ("partition.json", "partition done, not recorded"),
        ("shard-00003.json", "shards: three of nine done"),
        (".nudges.csv.staged.csv", "merge: the new nudge list being written beside the old set"),
        ("nudges.csv", "publish: the old summary removed, the new files about to replace the old"),
        ("nudges.csv.summary.json", "publish: new files in place, the new summary about to be written"),
    ],
)
def test_a_kill_at_each_commit_point_leaves_a_whole_set_or_an_unfinished_one_and_resumes(
    tmp_path, job_files, flag_bundle_dir, reference_run, name, phase
):
    previous, expected = reference_run["older_chats"], reference_run["chats"]
    out = tmp_path / "out" / "nudges.csv"
    _with_previous_set(out.parent, previous)
    killed = run(flag_args(job_files, out, flag_bundle_dir), prefix=[*KILL_AT, name, "1", "--"])
    assert killed.returncode == -signal.SIGKILL, (phase, killed.stderr[-3000:])
    seen = visible(out.parent)
    for file, data in seen.items():  # every visible file is a whole one: the previous run's or this run's
        assert data in (previous.get(file), expected.get(file)), (phase, file)
    problems = output_set_problems(out)
    if "nudges.csv.summary.json" in seen:  # a summary present describes exactly the files beside it
        assert problems == [] and seen == previous, phase
    else:
        assert problems and "did not finish" in problems[0], phase
    if name.startswith(("partition", "shard", ".")):  # before publishing: the previous set untouched
        assert seen == previous, phase
    rerun = _rerun_gives_the_uninterrupted_set(job_files, out, flag_bundle_dir, expected)
    if name == "shard-00003.json":
        assert "shards: 3 of" in rerun.stderr and "already done, resuming" in rerun.stderr
    if name == "partition.json":  # the partition was not recorded: it is redone, from scratch
        assert "partition: resumed" not in rerun.stderr


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            pytest.fail(f"the job ended (exit {process.returncode}) before {what}: {process.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_kill_9_while_partitioning_then_resume(tmp_path, job_files, flag_bundle_dir, reference_run):
    """Watched from outside: killed while shard files are still being appended to. Chunks of 10 rows make
    the partition phase last seconds (at 200 rows it took 0.1 s, which a loaded machine's poller missed)."""
    config = tmp_path / "small-chunks.yaml"
    config.write_text(job_files["config"].read_text(encoding="utf-8").replace("chunk_rows: 200", "chunk_rows: 10"), encoding="utf-8")
    out = tmp_path / "out" / "nudges.csv"
    job = subprocess.Popen([*CLI, *map(str, flag_args({**job_files, "config": config}, out, flag_bundle_dir))], env=env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    work = out.parent / ".nudges.csv.work"
    _wait_for(lambda: any(work.glob("*/partition/.shard-*.parquet.tmp")), job, what="the partition phase")
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=30)
    assert not list(work.glob("*/partition.json"))  # killed mid-partition
    assert visible(out.parent) == {}
    _rerun_gives_the_uninterrupted_set(job_files, out, flag_bundle_dir, reference_run["chats"])


def test_kill_9_of_the_parent_while_workers_score_shards_then_resume(tmp_path, job_files, flag_bundle_dir, reference_run):
    """Two spawned shard workers (~400 MB each on real data): they must die with the killed job (main left
    them running), and the rerun does only the shards not finished."""
    config = tmp_path / "two-workers.yaml"
    config.write_text(job_files["config"].read_text(encoding="utf-8").replace("workers: 1", "workers: 2"), encoding="utf-8")
    out = tmp_path / "out" / "nudges.csv"
    args = flag_args({**job_files, "config": config}, out, flag_bundle_dir)
    job = subprocess.Popen([*CLI, *map(str, args)], env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    work = out.parent / ".nudges.csv.work"
    _wait_for(lambda: any(work.glob("*/results/shard-*.json")), job, what="the first finished shard")
    workers = _children(job.pid)
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=30)
    assert len([w for w in workers if w]) >= 2  # the pool's processes (and its resource tracker)
    deadline = time.monotonic() + 15
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = [w for w in workers if _alive(w)]
    for w in orphans:
        os.kill(w, signal.SIGKILL)
    assert not orphans, "shard workers outlived their killed parent"
    done = len(list(work.glob("*/results/shard-*.json")))
    n_shards = json.loads(next(work.glob("*/partition.json")).read_text(encoding="utf-8"))["shards"]
    assert visible(out.parent) == {} and 0 < done
    rerun = _rerun_gives_the_uninterrupted_set(job_files, out, flag_bundle_dir, reference_run["chats"])  # one worker
    if done < n_shards:
        assert f"shards: {done} of {n_shards} already done, resuming" in rerun.stderr
