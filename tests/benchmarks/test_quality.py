"""benchmarks/quality.py on a small slice of each public data set (the full benchmark is not run here)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(__file__).parents[2].parent / "shared"
BENCHMARKS = SHARED / "benchmarks"

pytestmark = pytest.mark.skipif(
    not (BENCHMARKS / "clinc150" / "data_full.json").is_file() or not (BENCHMARKS / "banking77" / "train.csv").is_file(),
    reason=f"public benchmarks not found at {BENCHMARKS} (CLINC150 data_full.json and BANKING77 csv): shared/ is not beside the repo",
)


def _quality():
    spec = importlib.util.spec_from_file_location("benchmarks_quality", REPO / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_slices_keep_the_protocols():
    quality = _quality()
    tasks = {task.name: task for task in quality.build_tasks(BENCHMARKS, max_labels=3, per_label=5)}
    assert set(tasks) == {"clinc150_oos_train", "clinc150_oos_threshold", "banking77"}
    oos_train, oos_threshold = tasks["clinc150_oos_train"], tasks["clinc150_oos_threshold"]
    assert "oos" in set(oos_train.train.labels) and "oos" not in set(oos_threshold.train.labels)
    assert "oos" in set(oos_threshold.val.labels) and "oos" in set(oos_threshold.test.labels)
    assert len(set(oos_threshold.train.labels)) == 3
    banking = tasks["banking77"]
    assert len(banking.train) == len(banking.tune_train) + len(banking.tune_val)
    assert len(banking.tune_val) > 0 and len(banking.test) > 0


def test_oos_threshold_is_chosen_on_validation():
    import numpy as np

    quality = _quality()
    y = np.array(["a", "b", "oos", "oos", "a"], dtype=object)
    predicted = np.array(["a", "b", "a", "b", "a"], dtype=object)
    confidence = np.array([0.9, 0.8, 0.3, 0.4, 0.95])
    choice = quality.choose_oos_threshold(y, predicted, confidence, "oos")
    assert 0.4 < choice["threshold"] <= 0.8  # both out-of-scope messages caught, no in-scope one lost
    assert quality.oos_scores(y, predicted, confidence, choice["threshold"], "oos") == (1.0, 1.0)


def test_benchmark_runs_end_to_end_on_a_slice(tmp_path, monkeypatch):
    import mlflow

    quality = _quality()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with_fasttext = importlib.util.find_spec("fasttext") is not None
    out = tmp_path / "RESULTS.md"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    results = quality.run_benchmark(
        benchmarks=BENCHMARKS, out=out, max_labels=4, per_label=10, zh_model=tmp_path / "no-model",
        fasttext_grid={"epoch": [5], "lr": [0.5], "wordNgrams": [1, 2], "char": [[0, 0]]},
        with_fasttext=with_fasttext, mlflow_uri=uri, throughput_rounds=1,
        config_overrides={"n_jobs": 1},  # no worker pool to start for a few dozen messages
    )
    systems = ["ours (best)", "ours (default)"] + (["fastText"] if with_fasttext else [])
    assert results["systems"] == systems
    for task in ("clinc150_oos_train", "clinc150_oos_threshold", "banking77"):
        for system in systems:
            run = results["results"][task][system]
            assert "error" not in run, run
            assert run["fit_s"] > 0 and run["msgs_per_s"] > 0 and run["size_bytes"] > 0
            for key, value in run["metrics"].items():
                if key in ("accuracy", "macro_f1", "in_scope_accuracy", "oos_recall", "ece"):
                    assert 0.0 <= value <= 1.0, (task, system, key, value)
    if with_fasttext:
        assert results["results"]["banking77"]["fastText"]["params"]["wordNgrams"] in (1, 2)

    report = out.read_text(encoding="utf-8")
    assert "Slice run" in report and "## BANKING77" in report and "oos-threshold" in report
    assert "*published: MLP-USE* (Larson et al. 2019) | 93.5 | 47.4" in report
    assert "*published: BERT* (Larson et al. 2019) | 96.2 | 52.3" in report
    assert re.search(r"\| ours \(best\) \| \d+\.\d \| \d+\.\d \|", report)
    assert "Skipped: no Chinese model" in report

    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name("buyer-intent-benchmarks")
    runs = mlflow.search_runs([experiment.experiment_id], output_format="list")
    parent = next(r for r in runs if r.info.run_id == results["mlflow_run_id"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert {r.info.run_name for r in children} == set(systems)
    assert any(key.endswith("banking77.accuracy") for key in parent.data.metrics)
