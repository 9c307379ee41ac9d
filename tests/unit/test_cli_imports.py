"""What the scoring commands load before they work: `predict`, `evaluate` and `flag` import neither MLflow
(about 3.5 s of a `predict` run's 6 s on this machine) nor the tracking code; only training logs to MLflow,
and a registry reference imports it when it is resolved. A fresh interpreter, so other tests' imports do not count."""

from __future__ import annotations

import subprocess
import sys

import pytest

# the modules the commands import at the start (pipeline/cli.py's imports inside `predict`, `evaluate`, `flag`)
SCORING_IMPORTS = "import pipeline.cli, pipeline.jobs.workflows, pipeline.jobs.flag, pipeline.jobs.flag.shards, pipeline.bundle, pipeline.inference"


@pytest.mark.parametrize("heavy", ["mlflow", "pipeline.tracking.runs"])
def test_the_scoring_commands_do_not_import(heavy):
    code = f"{SCORING_IMPORTS}\nimport sys\nprint({heavy!r} in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False", f"{heavy} is imported by the scoring commands"

