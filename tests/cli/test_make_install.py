"""`make install` (which `make demo`, `make test` and `make serve` run first) must leave a synced .venv as it
is: uv once saw the pyenv shim as a new interpreter on every call and rebuilt the environment, under a
running server and under this very suite (issue #14)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ..conftest import REPO

VENV = REPO / ".venv"


@pytest.mark.skipif(shutil.which("make") is None or not (REPO / ".tools" / "bin" / "uv").exists() or not VENV.is_dir(),
                    reason="needs make and the environment `make install` built")
def test_make_install_on_a_synced_environment_keeps_the_venv_in_place():
    marker = VENV / "pyvenv.cfg"
    interpreter = (VENV / "bin" / "python").resolve()
    before = marker.stat()
    done = subprocess.run(["make", "--no-print-directory", "install"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    said = done.stdout + done.stderr
    assert "Removed virtual environment" not in said and "Creating virtual environment" not in said, said[-2000:]
    after = marker.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # the same environment, untouched
    assert (VENV / "bin" / "python").resolve() == interpreter
