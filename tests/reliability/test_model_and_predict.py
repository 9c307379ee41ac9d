"""A tampered model is refused by the real jobs before they read any input; predict killed before it
publishes leaves the previous output; a rerun never keeps another run's rejected rows."""

from __future__ import annotations

import shutil
import signal

import pytest

from pipeline.bundle import MODELS_FILE, USER_DICT_FILE

from .conftest import KILL_AT, error_lines, flag_args, run, visible


def _flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("sealed", [MODELS_FILE, USER_DICT_FILE])
def test_a_changed_byte_in_the_model_is_refused_before_any_work(tmp_path, job_files, flag_bundle_dir, sealed):
    """main's flag read and partitioned the whole chat export first and met the bad model in its workers."""
    bundle = shutil.copytree(flag_bundle_dir, tmp_path / "bundle")
    _flip_a_byte(bundle / sealed)
    out = tmp_path / "out" / "nudges.csv"
    flagged = run(flag_args(job_files, out, bundle))
    scored = run(["predict", "--input", job_files["chats"], "--output", tmp_path / "scored.csv", "--model", bundle])
    for result in (flagged, scored):
        assert result.returncode == 2, result.stderr[-2000:]
        lines = error_lines(result.stderr)
        assert len(lines) == 1 and sealed in lines[0] and "refusing to load" in lines[0], lines
        assert "partition:" not in result.stderr and "Traceback" not in result.stderr
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no output, no work directory
    assert not (tmp_path / "scored.csv").exists()


def test_predict_killed_before_publishing_keeps_the_previous_output_and_reruns_identically(tmp_path, job_files, flag_bundle_dir):
    source = tmp_path / "messages.csv"
    source.write_bytes(job_files["chats"].read_bytes() + "x1,b1,s1,food,buyer,多一列,2024-05-01T10:00:00+08:00,extra\n".encode())
    clean = tmp_path / "clean" / "scored.csv"
    first = run(["predict", "--input", source, "--output", clean, "--model", flag_bundle_dir])
    assert first.returncode == 0 and "1 rejected" in first.stdout, first.stderr[-2000:]
    out = tmp_path / "out" / "scored.csv"
    out.parent.mkdir()
    out.write_bytes(b"text\nthe previous run's output\n")
    killed = run(["predict", "--input", source, "--output", out, "--model", flag_bundle_dir], prefix=[*KILL_AT, "scored.csv", "1", "--"])
    assert killed.returncode == -signal.SIGKILL
    assert visible(out.parent) == {"scored.csv": b"text\nthe previous run's output\n"}
    rerun = run(["predict", "--input", source, "--output", out, "--model", flag_bundle_dir])
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert visible(out.parent) == visible(clean.parent)  # scored.csv and scored.csv.rejected.csv, byte for byte
    # the same output name for a file without bad rows: the previous run's rejected rows must not stay beside it
    good = tmp_path / "good.csv"
    good.write_text("text\n在吗\n我要了\n", encoding="utf-8")
    again = run(["predict", "--input", good, "--output", out, "--model", flag_bundle_dir])
    assert again.returncode == 0 and "rejected" not in again.stdout
    assert set(visible(out.parent)) == {"scored.csv"}  # main kept scored.csv.rejected.csv of the other input
