"""`make bento`'s two steps on a fresh BentoML store: export the model, then `bentoml build` from the
repository root with the project's uv on PATH (main failed here: "Failed to install uv: No module named pip").
The Bento holds the service, the package and the config, and names the model; its pinned packages are the installed ones."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from tests.serving.conftest import REPO, base_env

BENTOFILE = yaml.safe_load((REPO / "bentofile.yaml").read_text(encoding="utf-8"))


def test_the_bentofile_pins_the_installed_versions():
    """The Bento is built with these pins (lock_packages false: no resolver runs): they must be uv.lock's."""
    pins = dict(line.split("==") for line in BENTOFILE["python"]["packages"])
    assert {name: version(name) for name in pins} == pins


@pytest.mark.server
def test_make_bento_builds_the_service_with_the_package_and_the_model(model_dir, tmp_path):
    env = base_env(tmp_path / "bentoml")
    env["PATH"] = os.pathsep.join([str(REPO / ".tools" / "path"), str(Path(sys.executable).parent), env.get("PATH", "")])
    export = subprocess.run(
        [sys.executable, "-c", "import sys; from pipeline.tracking.bento import export_bento; print(export_bento(sys.argv[1], None))", str(model_dir)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert export.returncode == 0, export.stderr[-2000:]
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    build = subprocess.run([bentoml, "build", "--output", "tag"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, (build.stdout + build.stderr)[-3000:]
    tag = build.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    assert tag.startswith("buyer_intent:"), build.stdout[-2000:]
    name, bento_version = tag.split(":")
    path = tmp_path / "bentoml" / "bentos" / name / bento_version  # the fresh store's Bento
    # the service references the exported model (BentoML 1.4 keeps models in the store, `bentoml export` adds them)
    info = yaml.safe_load((path / "bento.yaml").read_text(encoding="utf-8"))
    assert [m["tag"] for m in info["services"][0]["models"]] == [export.stdout.strip().splitlines()[-1]]
    source = path / "src"
    for path in ("serving/service.py", "pipeline/inference.py", "pipeline/resources", "configs/default.yaml"):
        assert (source / path).exists(), path
    assert not list(source.glob("tests")) and not list(source.rglob("*.pyc"))
