"""A full disk and a read-only output directory, for real: a small tmpfs mounted in a private mount
namespace (`unshare -m`, root in this container). The job ends with one line naming the file or
directory (exit 2), nothing partial is visible, and the previous output set stays whole and valid."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from pipeline.jobs.flag import output_set_problems
from tests.batch.builders import flat_rows, write_csv, write_orders

from .conftest import REPO, env, error_lines, visible

SCRIPT = r"""
set -u
mount -t tmpfs -o size=1m tmpfs "$MNT"
flag() { "$PY" -m pipeline.cli flag --chats "$1" --orders "$ORDERS" --out "$MNT/nudges.csv" --model "$MODEL" --config "$2"; }
flag "$SMALL" "$CONFIG" > /dev/null 2> "$RESULT/first.err"; echo $? > "$RESULT/first.rc"
cp -a "$MNT/." "$RESULT/before/"
avail=$(df --output=avail -B1 "$MNT" | tail -1)
head -c $((avail - 16384)) /dev/zero > "$MNT/.filler" 2>/dev/null
flag "$CHATS" "$CONFIG" > /dev/null 2> "$RESULT/full.err"; echo $? > "$RESULT/full.rc"
flag "$CHATS" "$WORK_ELSEWHERE" > /dev/null 2> "$RESULT/full-publish.err"; echo $? > "$RESULT/full-publish.rc"
rm -f "$MNT/.filler"
mount -o remount,ro "$MNT"
flag "$CHATS" "$CONFIG" > /dev/null 2> "$RESULT/readonly.err"; echo $? > "$RESULT/readonly.rc"
cp -a "$MNT/." "$RESULT/after/"
"""


@pytest.fixture()
def namespace_ok():
    if not shutil.which("unshare") or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("no private mount namespace here (needs root or user namespaces)")


def _on_a_small_disk(tmp_path, script: str, variables: dict, timeout: float) -> tuple:
    """Run `script` in a private mount namespace with $MNT (the disk) and $RESULT (what the script copies
    out: `before/`, `after/`, `<case>.rc`, `<case>.err`); the first, uninterrupted run must have published a
    whole set. Returns the result directory and that previous set."""
    mnt, result = tmp_path / "mnt", tmp_path / "result"
    for directory in (mnt, result / "before", result / "after"):
        directory.mkdir(parents=True)
    variables = {"MNT": mnt, "RESULT": result, "PY": sys.executable, **variables}
    done = subprocess.run(["unshare", "-m", "bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**env(), **{k: str(v) for k, v in variables.items()}})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (result / "first.rc").read_text().strip() == "0", (result / "first.err").read_text()[-2000:]
    previous = visible(result / "before")
    assert set(previous) == {"nudges.csv", "nudges.csv.rejected.csv", "nudges.csv.summary.json"}
    return result, previous


def test_a_full_disk_and_a_read_only_directory_are_one_line_and_keep_the_previous_set(
    tmp_path, namespace_ok, job_files, flag_bundle_dir
):
    elsewhere = tmp_path / "work-elsewhere.yaml"  # checkpoints on a disk with room: the output disk fills while publishing
    elsewhere.write_text(job_files["config"].read_text(encoding="utf-8") + f"  work_dir: {tmp_path / 'work'}\n", encoding="utf-8")
    variables = {"ORDERS": job_files["orders"], "MODEL": flag_bundle_dir, "CONFIG": job_files["config"],
                 "SMALL": write_csv(flat_rows(), tmp_path / "small.csv"), "CHATS": job_files["chats"], "WORK_ELSEWHERE": elsewhere}
    result, previous = _on_a_small_disk(tmp_path, SCRIPT, variables, timeout=600)
    expected = {"full": ("No space left on device", ".nudges.csv.work"),  # checkpoints beside --out: the work directory is named
                "full-publish": ("No space left on device", "nudges.csv"),  # main: the old summary was already deleted here
                "readonly": ("Read-only file system", str(tmp_path / "mnt"))}
    for case, (message, where) in expected.items():
        rc, err = (result / f"{case}.rc").read_text().strip(), (result / f"{case}.err").read_text()
        assert rc == "2", (case, err[-3000:])
        lines = error_lines(err)
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0] and where in lines[0], (case, lines)
        assert "Traceback" not in err
    after = result / "after"
    assert visible(after) == previous  # the previous set, byte for byte, still whole and valid
    assert output_set_problems(after / "nudges.csv") == []
    assert not [p.name for p in after.iterdir() if p.name.endswith((".tmp", ".staged.csv"))]


ORDERS_SCRIPT = r"""
set -u
mount -t tmpfs -o size=1m tmpfs "$MNT"
flag() { "$PY" -m pipeline.cli flag --chats "$SMALL" --orders "$1" --out "$MNT/nudges.csv" --model "$MODEL" --config "$CONFIG"; }
flag "$ORDERS" > /dev/null 2> "$RESULT/first.err"; echo $? > "$RESULT/first.rc"
cp -a "$MNT/." "$RESULT/before/"
flag "$MANY_ORDERS" > /dev/null 2> "$RESULT/full.err"; echo $? > "$RESULT/full.rc"
cp -a "$MNT/." "$RESULT/after/"
"""


def test_a_full_disk_while_the_orders_index_is_written_is_one_line_and_keeps_the_previous_set(
    tmp_path, namespace_ok, job_files, flag_bundle_dir
):
    """The chats' partition fits on the 1 MiB disk, the index of 100,000 orders (1.6 MB) does not."""
    many_orders = write_orders(tmp_path / "many-orders.csv", [(f"o{i}", f"b{i}", "s1", "2024-05-02T10:00:00+08:00") for i in range(100_000)])
    variables = {"ORDERS": job_files["orders"], "MANY_ORDERS": many_orders, "MODEL": flag_bundle_dir, "CONFIG": job_files["config"],
                 "SMALL": write_csv(flat_rows(), tmp_path / "small.csv")}
    result, previous = _on_a_small_disk(tmp_path, ORDERS_SCRIPT, variables, timeout=300)
    rc, err = (result / "full.rc").read_text().strip(), (result / "full.err").read_text()
    assert rc == "2", err[-3000:]
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "No space left on device" in lines[0] and ".nudges.csv.work" in lines[0] and "flag.work_dir" in lines[0], lines
    assert "Traceback" not in err
    after = result / "after"
    assert visible(after) == previous
    assert output_set_problems(after / "nudges.csv") == []
    left = [p.relative_to(after) for p in after.rglob("*") if p.name.endswith((".tmp", ".staged.csv"))]
    assert not left, left
