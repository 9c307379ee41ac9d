"""Which set decides promotion: `mlflow.promotion_set` names an evaluation set (the default config: the written-chat
yardstick) or the test split. The test split follows the training data, so a champion trained on less of the harder
text looked better on it than a model trained on more; a fixed evaluation set is the same for both."""

from __future__ import annotations

import re

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli import app

from ..conftest import REPO

runner = CliRunner()
CONFIG = str(REPO / "configs" / "default.yaml")
YARDSTICK = REPO / "data" / "chats" / "yardstick.csv"
REASON = re.compile(r"intent_macro_f1 (\d\.\d{4}) (?:>=|<) champion (\d\.\d{4}) on ([^)]+)\)")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("promotion")


@pytest.fixture(scope="module")
def env(workspace):
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workspace}/mlflow.db")
    mp.chdir(workspace)
    yield f"sqlite:///{workspace}/mlflow.db"
    mp.undo()


@pytest.fixture(scope="module")
def yardstick_sample(workspace):
    if not YARDSTICK.exists():
        pytest.skip("data/chats/yardstick.csv is not built")
    frame = pd.read_csv(YARDSTICK, dtype=str, keep_default_na=False)
    path = workspace / "yardstick-sample.csv"
    frame.groupby("writer").head(15).to_csv(path, index=False)
    return path


def _train(*extra: str, config: str = CONFIG) -> tuple[str, str]:
    result = runner.invoke(app, ["train", "--config", config, *extra])
    assert result.exit_code == 0, result.output
    return result.output.split("run id:")[1].split()[0], result.output


def _champion(env) -> str:
    return str(mlflow.MlflowClient(env).get_model_version_by_alias("buyer-intent", "champion").version)


@pytest.fixture(scope="module")
def first(env, small_messages_csv, yardstick_sample):
    run_id, output = _train("--data", str(small_messages_csv), "--eval-data", f"yardstick={yardstick_sample}")
    assert "promoted to @champion: no champion yet" in output
    return run_id


def test_a_run_without_the_promotion_set_keeps_the_champion_and_says_why(env, first, small_messages_csv, workspace):
    before = _champion(env)
    run_id, output = _train("--data", str(small_messages_csv))
    assert "not promoted: the promotion set 'yardstick' was not evaluated in this run" in output
    assert _champion(env) == before
    report = (workspace / "reports" / run_id / "report.md").read_text(encoding="utf-8")
    assert "Not compared" in report and "No champion yet" not in report


def test_the_champion_is_scored_on_the_promotion_set_not_the_test_split(env, first, small_messages_csv, yardstick_sample):
    client = mlflow.MlflowClient(env)
    champion_run = client.get_model_version("buyer-intent", _champion(env)).run_id
    run_id, output = _train("--data", str(small_messages_csv), "--eval-data", f"yardstick={yardstick_sample}")
    ours, theirs, on = REASON.search(output).groups()
    new, champion = client.get_run(run_id).data.metrics, client.get_run(champion_run).data.metrics
    assert on == "yardstick"
    # both numbers are macro-F1 on the yardstick sample: this run's, and the champion's (scored again on the same rows)
    assert float(ours) == pytest.approx(new["eval_yardstick_intent_macro_f1"], abs=6e-5)
    assert float(theirs) == pytest.approx(champion["eval_yardstick_intent_macro_f1"], abs=6e-5)
    assert abs(new["test_intent_macro_f1"] - new["eval_yardstick_intent_macro_f1"]) > 1e-3  # the sets do tell apart


def test_promotion_set_test_compares_on_the_test_split(tmp_path, monkeypatch, small_messages_csv):
    # a store of its own: this run may replace the champion, which the tests above must not see
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    overlay = tmp_path / "on-test.yaml"
    overlay.write_text("mlflow:\n  promotion_set: test\n", encoding="utf-8")
    _train("--data", str(small_messages_csv), config=str(overlay))
    run_id, output = _train("--data", str(small_messages_csv), config=str(overlay))
    ours, _, on = REASON.search(output).groups()
    assert on == "the test split"
    assert float(ours) == pytest.approx(mlflow.MlflowClient().get_run(run_id).data.metrics["test_intent_macro_f1"], abs=6e-5)


def test_a_first_run_without_the_promotion_set_is_promoted_and_its_report_says_no_champion_yet(tmp_path, monkeypatch, small_messages_csv):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    run_id, output = _train("--data", str(small_messages_csv))
    assert "promoted to @champion: no champion yet" in output
    report = (tmp_path / "reports" / run_id / "report.md").read_text(encoding="utf-8")
    assert "No champion yet" in report and "Not compared" not in report
