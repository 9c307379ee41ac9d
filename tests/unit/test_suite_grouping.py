"""`make test` relies on xdist's --dist loadgroup to keep the tests that share an expensive session
fixture on one worker; pytest 9.2 made that grouping fail silently (pytest-dev/pytest-xdist#1386). This
runs a tiny suite with the project's own grouping hook and asserts each group stayed on one worker."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


@pytest.mark.slow  # a pytest run on two xdist workers in a subprocess (~9 s)
def test_each_xdist_group_runs_on_one_worker(tmp_path):
    tests = tmp_path / "tests"
    for folder in ("serving", "spark", "unit"):
        (tests / folder).mkdir(parents=True)
        (tests / folder / f"test_{folder}.py").write_text(
            "".join(f"def test_{i}():\n    pass\n" for i in range(6)), encoding="utf-8"
        )
    (tests / "conftest.py").write_text(CONFTEST.read_text(encoding="utf-8"), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    workers: dict[str, set[str]] = {}
    for worker, folder in re.findall(r"\[(gw\d)\].*PASSED tests/(\w+)/", result.stdout):
        workers.setdefault(folder, set()).add(worker)
    assert set(workers) == {"serving", "spark", "unit"}
    assert len(workers["serving"]) == 1 and len(workers["spark"]) == 1, workers
    assert "@serving" in result.stdout and "@spark" in result.stdout
