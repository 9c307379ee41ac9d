"""The notebooks call the package; they are executed here so they cannot rot."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from ..conftest import MESSAGES, REPO


def _run(name: str, monkeypatch, **env: str) -> nbformat.NotebookNode:
    for key, value in env.items():
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


def test_error_analysis_runs(monkeypatch, corpus_bundle_dir, small_messages_csv):
    notebook = _run("error_analysis.ipynb", monkeypatch, BUYER_INTENT_MODEL=str(corpus_bundle_dir), BUYER_INTENT_EVAL_DATA=str(small_messages_csv))
    text = _outputs(notebook)
    assert "accuracy" in text and "->" in text
