"""`buyer-intent predict` says how far the scored messages sit from the validation data (`pipeline.drift`):
an estimate of the intent accuracy without labels, and a warning when it falls well below validation's.
A small real model (tests/batch/builders.py) scores messages like its training phrases, then messages unlike
anything it saw."""

from __future__ import annotations

import re

import pandas as pd
from typer.testing import CliRunner

from pipeline.bundle import load_bundle
from pipeline.cli import app
from pipeline.drift import MANIFEST_KEY
from tests.batch.builders import labelled_messages

runner = CliRunner()
# Characters the model has no n-gram of: nothing to go on, so it is rarely confident.
UNSEEN = [chr(0x4E00 + (37 * i) % 20000) * 3 for i in range(300)]
ESTIMATE = re.compile(r"estimated intent accuracy on these ([\d,]+) messages (\d\.\d\d)")


def _predict(tmp_path, bundle_dir, texts, *extra):
    source = tmp_path / "in.csv"
    pd.DataFrame({"text": texts}).to_csv(source, index=False)
    return runner.invoke(app, ["predict", "--input", str(source), "--output", str(tmp_path / "out.csv"), "--model", str(bundle_dir), *extra])


def test_training_records_what_the_estimate_needs(flag_bundle_dir):
    record = load_bundle(flag_bundle_dir).manifest[MANIFEST_KEY]  # sealed with the manifest
    assert record["method"] == "ATC"
    assert 0 < record["threshold"] < 1 and 0 < record["validation_accuracy"] <= 1 and record["validation_messages"] > 0


def test_messages_like_the_training_data_are_estimated_near_validation_and_raise_no_warning(tmp_path, flag_bundle_dir):
    texts = labelled_messages()["text"].tolist()
    result = _predict(tmp_path, flag_bundle_dir, texts)
    assert result.exit_code == 0, result.output
    count, estimated = ESTIMATE.search(result.output).groups()
    assert int(count.replace(",", "")) == len(texts)
    validated = load_bundle(flag_bundle_dir).manifest[MANIFEST_KEY]["validation_accuracy"]
    assert float(estimated) >= validated - 0.05
    assert "warning:" not in result.output


def test_messages_unlike_anything_it_saw_get_a_warning_with_what_to_do(tmp_path, flag_bundle_dir):
    result = _predict(tmp_path, flag_bundle_dir, UNSEEN)
    assert result.exit_code == 0, result.output
    _, estimated = ESTIMATE.search(result.output).groups()
    validated = load_bundle(flag_bundle_dir).manifest[MANIFEST_KEY]["validation_accuracy"]
    assert float(estimated) < validated - 0.05
    assert "warning: these messages read unlike the data the model was validated on" in result.output
    assert "--calibration-chats" in result.output


def test_the_warning_threshold_is_a_setting(tmp_path, flag_bundle_dir):
    config = tmp_path / "quiet.yaml"
    config.write_text("drift:\n  warn_drop: 1.0\n", encoding="utf-8")
    result = _predict(tmp_path, flag_bundle_dir, UNSEEN, "--config", str(config))
    assert result.exit_code == 0, result.output
    assert ESTIMATE.search(result.output) and "warning:" not in result.output


def test_only_buyer_rows_are_estimated(tmp_path, flag_bundle_dir):
    texts = labelled_messages()["text"].tolist()[:40]
    source = tmp_path / "chats.csv"
    pd.DataFrame({"text": texts, "role": ["buyer", "agent"] * 20}).to_csv(source, index=False)
    result = runner.invoke(app, ["predict", "--input", str(source), "--output", str(tmp_path / "o.csv"), "--model", str(flag_bundle_dir)])
    assert result.exit_code == 0, result.output
    assert ESTIMATE.search(result.output).group(1) == "20"
