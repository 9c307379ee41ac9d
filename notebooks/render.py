"""Execute the notebooks and save them with their outputs, so they show their tables and plots when opened
(`make render-notebooks`).

error_analysis.ipynb is rendered on the test split of the bundled corpus (BUYER_INTENT_EVAL_DATA=data/messages.csv),
never on the real-chat dev set: those messages belong to their publishers and stay out of the repository.
The model is BUYER_INTENT_MODEL, default models/latest (`make demo`); it must have been trained on the
current corpus, else its test split is not held out and nothing is saved.

For small diffs between renders: no execution timings are recorded, and stderr output (library log lines,
load times) is dropped.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ENV = {
    "corpus_exploration.ipynb": {"BUYER_INTENT_DATA": str(REPO / "data" / "messages.csv")},
    "error_analysis.ipynb": {"BUYER_INTENT_EVAL_DATA": str(REPO / "data" / "messages.csv")},
}
STALE = "is not held out"  # error_analysis.ipynb's warning when the model was trained on another corpus


def render(name: str) -> nbformat.NotebookNode:
    notebook = nbformat.read(HERE / name, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(HERE)}})
    client.execute(env={**os.environ, **ENV[name]})
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
            cell.metadata.pop("execution", None)
    return notebook


def main() -> int:
    for name in ENV:
        notebook = render(name)
        printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
        if STALE in printed:
            print(f"{name}: not saved, the model was trained on another version of data/messages.csv "
                  "(run make demo, or set BUYER_INTENT_MODEL)", file=sys.stderr)
            return 1
        nbformat.write(notebook, HERE / name)
        print(f"{name}: saved with outputs ({(HERE / name).stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
