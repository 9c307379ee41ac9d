"""The notebooks call the package; they are executed here so they cannot rot, and they are committed with
their outputs (`make render-notebooks`) so they show their tables and plots when opened."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from ..conftest import MESSAGES, REPO, SHARED

NOTEBOOKS = ("corpus_exploration.ipynb", "error_analysis.ipynb")
REALCHAT = SHARED / "realchat-dev" / "messages.csv"


def _run(name: str, monkeypatch, **env: str | None) -> nbformat.NotebookNode:
    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    notebook = nbformat.read(REPO / "notebooks" / name, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    return notebook


def _outputs(notebook) -> str:
    return "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for c in notebook.cells for o in c.get("outputs", []))


def test_corpus_exploration_runs(monkeypatch):
    if not MESSAGES.exists():
        pytest.skip("data/messages.csv is not built")
    notebook = _run("corpus_exploration.ipynb", monkeypatch, BUYER_INTENT_DATA=str(MESSAGES))
    assert "messages," in _outputs(notebook)


def test_error_analysis_runs_and_defaults_to_the_realchat_dev_set(monkeypatch, corpus_bundle_dir):
    """Without BUYER_INTENT_EVAL_DATA: the real-chat dev set when it is there, else the bundled corpus's
    test split for the model (a model of the current corpus: no warning that the split is not held out).
    Executed in memory only: the dev set's texts are never written into the repository. (One execution:
    the notebook takes a while, and the suite's time is bounded.)"""
    notebook = _run("error_analysis.ipynb", monkeypatch, BUYER_INTENT_MODEL=str(corpus_bundle_dir), BUYER_INTENT_EVAL_DATA=None)
    text = _outputs(notebook)
    if REALCHAT.exists():
        assert "scoring realchat-dev/messages.csv" in text, "the dev set was not the default"
    else:
        assert "is not there: scoring the test split of the bundled corpus instead" in text
        assert "scoring the test split of the bundled corpus" in text and "is not held out" not in text
    assert "accuracy" in text and "->" in text


# The committed notebooks (what GitHub and JupyterLab show before anything is run).


def _committed(name: str) -> nbformat.NotebookNode:
    return nbformat.read(REPO / "notebooks" / name, as_version=4)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebooks_carry_their_outputs(name):
    notebook = _committed(name)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    outputs = [o for c in code for o in c.outputs]
    assert all(c.execution_count is not None for c in code), f"{name}: not every cell was executed (make render-notebooks)"
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name}: no plot saved (make render-notebooks)"
    assert any("text/html" in o.get("data", {}) for o in outputs), f"{name}: no table saved (make render-notebooks)"
    assert not any(o.output_type == "error" for o in outputs)
    assert (REPO / "notebooks" / name).stat().st_size < 1_500_000


def test_committed_error_analysis_was_rendered_on_the_bundled_test_split():
    text = _outputs(_committed("error_analysis.ipynb"))
    assert "scoring the test split of the bundled corpus" in text
    assert "is not held out" not in text


def _strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return []


def _hanzi(text: str) -> int:
    return len(re.findall(r"[\u4e00-\u9fff]", re.sub(r"\[[^\]]*\]", "", text)))


def test_committed_notebooks_hold_no_realchat_text():
    """No message of ../shared/realchat-dev (third-party text, for evaluation only) in a committed notebook,
    raw or masked. Messages that are also bundled corpus texts (greetings, "好的") are not evidence of a leak.
    Messages with six Chinese characters or more outside placeholders ("[订单x]") are searched anywhere in the
    notebook; shorter ones as a whole printed piece (a table cell, an example between " / ", a line), where a
    common phrase inside a longer corpus text cannot match."""
    if not REALCHAT.exists():
        pytest.skip("../shared/realchat-dev is not there")
    from pipeline.text import mask_pii

    real = pd.read_csv(REALCHAT, dtype=str, keep_default_na=False)["text"].str.strip()
    corpus = set(pd.read_csv(MESSAGES, dtype=str, keep_default_na=False)["text"].str.strip()) if MESSAGES.exists() else set()
    candidates = {variant.strip() for text in real if text not in corpus for variant in (text, mask_pii(text))}
    candidates = {t for t in candidates if t not in corpus and re.search(r"[\u4e00-\u9fff]", t)}
    assert len(candidates) > 100  # the file was read
    for name in NOTEBOOKS:
        raw = (REPO / "notebooks" / name).read_text(encoding="utf-8")
        blob = "\n".join(_strings(json.loads(raw)))
        pieces = {p.strip() for p in re.split(r"\n|\s/\s|\s\|\s|<[^>]+>|:\s|\s{2,}", blob)}
        leaked = [t for t in candidates if (_hanzi(t) >= 6 and (t in blob or t in raw)) or t in pieces]
        assert not leaked, f"{name} holds {len(leaked)} real-chat message(s): make render-notebooks"


# `make notebook` opens JupyterLab (dev group).


def test_jupyterlab_is_installed():
    import jupyterlab  # noqa: F401

    assert version("jupyterlab").startswith("4.")
    assert (REPO / ".venv" / "bin" / "jupyter-lab").exists() or shutil.which("jupyter-lab")


def test_make_notebook_opens_jupyterlab_on_the_notebooks():
    if shutil.which("make") is None:
        pytest.skip("no make")
    # run from `make test` too: a clean environment for the inner make, and no "Entering directory" lines
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")} | {"NOTEBOOK_ARGS": "--no-browser"}
    dry = subprocess.run(["make", "--no-print-directory", "-n", "notebook"], cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout
    command = dry.strip().splitlines()[-1].split()
    assert Path(command[0]).name == "jupyter" and command[1:3] == ["lab", "notebooks/"], dry
    assert command[-1] == "--no-browser"
    render = subprocess.run(["make", "--no-print-directory", "-n", "render-notebooks"], cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout
    assert "notebooks/render.py" in render
