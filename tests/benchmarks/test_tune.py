"""`pipeline.training.tune.run_tune` on a tiny English set: a config `load_config` accepts, trials as nested MLflow runs."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.benchmarks.conftest import english_messages

TINY_SPACE = {
    "space": {"features.char_ngram_range": [[1, 3], [2, 4]], "features.word_ngram_range": [[1, 1], [1, 2]]},
    "classifiers": {"linear_svc": {"intent_model.C": {"log_uniform": [0.3, 3.0]}}, "complement_nb": {"intent_model.alpha": [0.1, 0.5]}},
    "experiment": "tune-test",
    "metric": "accuracy",
}


@pytest.fixture()
def tiny(tmp_path):
    from pipeline.config import load_config
    from pipeline.data.labelled import LabelledData, validate_labelled

    frame, _ = validate_labelled(english_messages(), "english")
    config = load_config(
        "configs/english.yaml",
        {"mlflow.tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "mlflow.artifact_root": str(tmp_path / "artifacts"), "tune": TINY_SPACE},
    )
    return config, LabelledData(frame, pd.DataFrame(), "english")


def test_run_tune_writes_a_loadable_config_and_nested_runs(tiny, tmp_path, monkeypatch):
    import mlflow

    from pipeline.config import load_config
    from pipeline.training.tune import run_tune

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config, data = tiny
    out = tmp_path / "best.yaml"
    result = run_tune(config, data, out, n_trials=3, folds=2, n_jobs=1)

    best = load_config(out)  # what `buyer-intent train --config` does with it
    assert best.text.language == "en"
    assert best.intent_model.classifier == result["best_params"]["intent_model.classifier"]
    assert list(best.features.char_ngram_range) == result["best_params"]["features.char_ngram_range"]
    assert len(result["trials"]) == 3 and result["trials"][0]["params"] == {}
    assert result["best_score"] == max(t["cv_accuracy"] for t in result["trials"])
    assert 0.0 <= result["best_score"] <= 1.0

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = mlflow.get_experiment_by_name("tune-test")
    runs = mlflow.search_runs([experiment.experiment_id], output_format="list")
    parent = [r for r in runs if r.info.run_id == result["parent_run_id"]]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result["parent_run_id"]]
    assert len(parent) == 1 and len(children) == 3
    assert {r.info.run_id for r in children} == {t["run_id"] for t in result["trials"]}
    assert all("cv_accuracy" in r.data.metrics and "intent_model.classifier" in r.data.params for r in children)
    assert parent[0].data.metrics["best_cv_accuracy"] == pytest.approx(result["best_score"])


def test_bad_search_space_is_refused_when_the_config_is_read():
    from pipeline.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="random_forest"):
        load_config("configs/english.yaml", {"tune.classifiers": {"random_forest": {}}})


def test_cli_reports_a_bad_search_space_in_one_line(tmp_path):
    """`buyer-intent tune` with an unknown classifier: exit 2 and a message naming it, no traceback."""
    import yaml
    from typer.testing import CliRunner

    from pipeline.cli import app

    data = tmp_path / "english.csv"
    english_messages().to_csv(data, index=False)
    raw = yaml.safe_load(open("configs/english.yaml", encoding="utf-8"))
    raw["tune"] = {"classifiers": {"random_forest": {}}}
    raw["mlflow"] = {**raw.get("mlflow", {}), "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_root": str(tmp_path / "a")}
    raw.setdefault("paths", {})["quarantine"] = str(tmp_path / "quarantine")
    config = tmp_path / "broken.yaml"
    config.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    result = CliRunner().invoke(app, ["tune", "--config", str(config), "--data", str(data), "--out", str(tmp_path / "x.yaml"), "--trials", "2"])
    assert result.exit_code == 2, result.output
    assert "random_forest" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.yaml").exists()
