"""The CLI end to end on a small corpus slice, with a temporary MLflow store."""

from __future__ import annotations

import codecs
import json

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli import app

from ..conftest import REPO

runner = CliRunner()
CONFIG = str(REPO / "configs" / "default.yaml")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def env(workspace):
    uri = f"sqlite:///{workspace}/mlflow.db"
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.chdir(workspace)
    yield uri
    mp.undo()


@pytest.fixture(scope="module")
def first_run(env, workspace, small_messages_csv):
    result = runner.invoke(
        app,
        ["train", "--config", CONFIG, "--data", str(small_messages_csv), "--model-dir", str(workspace / "model"),
         "--eval-data", f"corpus-sample={small_messages_csv}"],
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_train_registers_a_champion_and_writes_the_report(first_run, env, workspace, small_messages_csv):
    assert "run id:" in first_run and "promoted to @champion" in first_run
    run_id = first_run.split("run id:")[1].split()[0]
    assert (workspace / "reports" / run_id / "report.html").exists()
    assert (workspace / "model" / "manifest.json").exists()
    client = mlflow.MlflowClient(env)
    champion = client.get_model_version_by_alias("buyer-intent", "champion")
    assert champion.run_id == run_id
    run = client.get_run(run_id)
    assert "test_intent_macro_f1" in run.data.metrics
    assert "eval_corpus-sample_intent_accuracy" in run.data.metrics
    assert run.data.params["split.test_fraction"] == "0.15"
    # --data replaces the default config's training files and its calibration set (the bundled written chats)
    assert (run.data.params["paths.extra_data"], run.data.params["paths.calibration_data"]) == ("[]", "None")
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"report", "data", "model_inputs"} <= artifacts
    # a readable run name, the code and library versions, the data sets as inputs, one metric family per split
    assert run.info.run_name.startswith(f"train-{small_messages_csv.stem}-")
    assert run.data.tags["git_commit"] and run.data.tags["version.scikit-learn"]
    inputs = {(d.dataset.name, tag.value) for d in run.inputs.dataset_inputs for tag in d.tags if tag.key == "mlflow.data.context"}
    assert inputs == {(small_messages_csv.stem, "training"), ("corpus-sample", "evaluation")}
    assert not [key for key in run.data.metrics if key.startswith("headline_")]
    version = client.get_model_version("buyer-intent", champion.version)
    assert run_id in version.description and "corpus-sample: intent accuracy" in version.description
    assert client.get_registered_model("buyer-intent").description
    # the evaluation set gets its own tables in the report, and its mistakes a file
    report = (workspace / "reports" / run_id / "report.md").read_text(encoding="utf-8")
    assert "## Evaluation set: corpus-sample" in report and "git commit" in report
    assert (workspace / "reports" / run_id / "errors" / "eval-corpus-sample.csv").exists()


def test_no_promote_keeps_the_champion(first_run, env, small_messages_csv):
    result = runner.invoke(app, ["train", "--config", CONFIG, "--data", str(small_messages_csv), "--no-promote"])
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient(env)
    assert str(client.get_model_version_by_alias("buyer-intent", "champion").version) == "1"
    assert len(client.search_model_versions("name='buyer-intent'")) == 2


def test_the_registered_pyfunc_refuses_an_edited_threshold(first_run, env, tmp_path):
    """main: `mlflow.pyfunc.load_model` loaded the bundle without its seal, so an edited threshold in the
    stored manifest was served. The seal now travels in the model's config and the load refuses it."""
    import json

    from pipeline.bundle import ModelIntegrityError

    local = Path(mlflow.artifacts.download_artifacts("models:/buyer-intent/1", dst_path=str(tmp_path)))
    before = mlflow.pyfunc.load_model(str(local)).predict(pd.DataFrame({"text": ["好的谢谢"]}))
    assert list(before["purchase_intent"]) == [0]
    manifest_path = next(local.rglob("manifest.json"))
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["thresholds"]["purchase"] = 0.0  # every message would count as wanting to buy
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ModelIntegrityError, match="seal"):
        mlflow.pyfunc.load_model(str(local))


@pytest.mark.parametrize("model", [None, "models:/buyer-intent@champion", "1", "model"])
def test_predict_keeps_columns_and_adds_predictions(first_run, workspace, model):
    source = workspace / "in.csv"
    pd.DataFrame({"text": ["在吗", "有货我就拍", ""], "intent": ["greeting", "stock", "other"], "shop": ["a", "b", "c"]}).to_csv(source, index=False)
    out = workspace / f"out-{model or 'default'}.parquet".replace("/", "_").replace(":", "_").replace("@", "_")
    args = ["predict", "--input", str(source), "--output", str(out)]
    if model:
        args += ["--model", str(workspace / model) if model == "model" else model]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    scored = pd.read_parquet(out)
    assert list(scored.columns) == ["text", "intent_input", "shop", "intent", "intent_confidence", "fallback", "purchase_intent", "purchase_score"]
    assert scored.loc[2, "intent"] == "other" and bool(scored.loc[2, "fallback"])


def test_predict_scores_only_buyer_rows_when_there_is_a_role_column(first_run, workspace):
    """main scored 客服 rows too (47 agent messages came out with purchase_intent=1)."""
    source = workspace / "roles.csv"
    pd.DataFrame({"text": ["在吗", "亲 在的 我要了吗", "有货我就拍", "好的"], "role": ["买家", "客服", "buyer", "机器人"]}).to_csv(source, index=False)
    out = workspace / "roles-out.csv"
    result = runner.invoke(app, ["predict", "--input", str(source), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(codecs.BOM_UTF8)  # the default CSV output: UTF-8 with its BOM, for Excel
    scored = pd.read_csv(out, encoding="utf-8-sig")
    assert len(scored) == 4 and scored["scored"].tolist() == [True, False, True, False]
    assert scored.loc[[1, 3], "intent"].isna().all() and scored.loc[[1, 3], "purchase_intent"].isna().all()
    assert scored.loc[[0, 2], "intent"].notna().all()


@pytest.mark.parametrize(("name", "bom", "codec"), [("unicode-text.txt", codecs.BOM_UTF16_LE, "utf-16-le"), ("export.tsv", b"", "utf-8")])
def test_predict_reads_a_tab_separated_export_and_writes_gb18030_on_request(first_run, workspace, name, bom, codec):
    """A TAB-separated export (Excel's "Unicode Text" .txt, a UTF-8 .tsv) with the shop's headers and a row
    of too many fields: the row goes to the rejected file with its record number; with --encoding gb18030
    the predictions decode as GB18030, not UTF-8, and read back as the UTF-8 run's."""
    from pipeline.data.tables import read_table

    lines = ["会话ID\t买家昵称\t店铺\t角色\t内容\t时间", "c1\tb1\ts1\t买家\t在吗\t2024-05-01 10:00", "c1\tb1\ts1\t买家\t有货\t我就拍\t2024-05-01 10:01",
             "c1\tb1\ts1\t客服\t亲 在的\t2024-05-01 10:02", "c2\tb2\ts2\t买家\t能便宜点吗 𠮷\t2024-05-01 11:00"]
    source = workspace / name
    source.write_bytes(bom + ("\r\n".join(lines) + "\r\n").encode(codec))
    outputs = {}
    for encoding in ("utf-8-sig", "gb18030"):
        outputs[encoding] = out = workspace / f"{name}-{encoding}.csv"
        result = runner.invoke(app, ["predict", "--input", str(source), "--output", str(out), "--encoding", encoding])
        assert result.exit_code == 0, result.output
        assert f"scored 2 rows -> {out}; 1 rejected" in result.output
    data = outputs["gb18030"].read_bytes()
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    assert data.decode("gb18030") == outputs["utf-8-sig"].read_bytes().decode("utf-8-sig")
    scored, _ = read_table(outputs["gb18030"])
    assert scored.equals(read_table(outputs["utf-8-sig"])[0])
    assert scored["text"].tolist() == ["在吗", "亲 在的", "能便宜点吗 𠮷"] and scored["scored"].tolist() == ["True", "False", "True"]
    rejected, _ = read_table(f"{outputs['gb18030']}.rejected.csv")
    assert rejected[["row", "reason", "raw"]].values.tolist() == [["2", "expected 6 fields, found 7", lines[2]]]


def test_an_unknown_output_encoding_is_one_clear_line(workspace):
    source = workspace / "enc.csv"
    source.write_text("text\n在吗\n", encoding="utf-8")
    result = runner.invoke(app, ["predict", "--input", str(source), "--output", str(workspace / "enc-out.csv"), "--encoding", "latin-1",
                                 "--model", str(workspace / "no-model")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "--encoding" in lines[0] and "'latin-1'" in lines[0] and "utf-8-sig, gb18030, utf-8" in lines[0]
    assert not (workspace / "enc-out.csv").exists()


def test_evaluate_writes_metrics_and_report(first_run, workspace, small_messages_csv):
    out = workspace / "eval"
    result = runner.invoke(app, ["evaluate", "--data", str(small_messages_csv), "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    for key in ("accuracy", "macro_f1", "per_intent", "fallback_rate", "purchase"):
        assert key in metrics
    assert {"average_precision", "precision", "recall", "f1"} <= set(metrics["purchase"])
    assert (out / "report.html").exists()
    # main called any evaluated file "held-out test messages", warned that no real-chat set was scored
    # and said "No champion yet" while a champion existed
    report = (out / "report.md").read_text(encoding="utf-8")
    assert metrics["eval_set"] == small_messages_csv.parent.name
    assert f"messages of {small_messages_csv.parent.name}" in report
    assert "held-out test messages" not in report and "No evaluation set of real chats" not in report
    assert "No champion yet" not in report
    assert '"why"' in report  # the example mistakes say which n-grams pushed the wrong intent
    assert (out / "errors" / f"messages-of-{small_messages_csv.parent.name}.csv").exists()


def test_unknown_model_is_a_clear_error(first_run, workspace):
    source = workspace / "x.csv"
    source.write_text("text\n在吗\n", encoding="utf-8")
    result = runner.invoke(app, ["predict", "--input", str(source), "--output", "y.csv", "--model", "models:/nope@champion"])
    assert result.exit_code == 2
    assert "cannot resolve" in result.output


def test_input_headers_are_checked_before_the_model_is_resolved(first_run, workspace):
    source = workspace / "headers.csv"
    source.write_bytes("留言,店铺\n在吗,a\n".encode("gb18030"))
    result = runner.invoke(app, ["predict", "--input", str(source), "--output", "y.csv", "--model", "models:/nope@champion"])
    assert result.exit_code == 2 and "missing column(s) ['text']" in result.output and "--columns" in result.output
    out = workspace / "mapped.csv"
    result = runner.invoke(app, ["predict", "--input", str(source), "--output", str(out), "--columns", "留言=text"])
    assert result.exit_code == 0, result.output
    scored = pd.read_csv(out, encoding="utf-8-sig")
    assert list(scored.columns[:2]) == ["text", "店铺"] and scored.loc[0, "intent"] == "greeting"


def test_bad_data_is_a_clear_error(env, workspace):
    bad = workspace / "bad.csv"
    bad.write_text("msg,tag\n在吗,greeting\n", encoding="utf-8")
    result = runner.invoke(app, ["train", "--config", CONFIG, "--data", str(bad)])
    assert result.exit_code == 2
    assert "missing required column" in result.output


def test_a_full_disk_is_one_clear_line_not_a_traceback(first_run, workspace, monkeypatch):
    import errno

    import pipeline.jobs.workflows as workflows

    source = workspace / "full.csv"
    source.write_text("text\n在吗\n", encoding="utf-8")
    out = workspace / "full-out.csv"

    def no_space(frame, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(workflows, "write_table_atomic", no_space)
    result = runner.invoke(app, ["predict", "--input", str(source), "--output", str(out)])
    assert result.exit_code == 2 and "No space left on device" in result.output and "full-out.csv" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_train_merges_a_labelled_queue_with_its_own_figures(first_run, env, workspace, small_messages_csv):
    corpus = pd.read_csv(REPO / "data" / "messages.csv", dtype=str, keep_default_na=False)
    small = pd.read_csv(small_messages_csv, dtype=str, keep_default_na=False)
    unseen = corpus[~corpus["group"].isin(set(small["group"]))].drop_duplicates("group")
    labelled = unseen.groupby("intent").head(8)
    queue = pd.DataFrame({"text": labelled["text"], "guess_intent": "greeting", "intent": labelled["intent"],
                          "purchase_intent": labelled["purchase_intent"]})
    unlabelled = pd.DataFrame({"text": ["还没标的一条", "标错的一条"], "guess_intent": "greeting", "intent": ["", "not_a_label"],
                               "purchase_intent": ["", "0"]})
    path = workspace / "queue.csv"
    pd.concat([queue, unlabelled]).to_csv(path, index=False, encoding="utf-8-sig")
    # the config's own extra file stays and the queue is added to it (--add-data), as the bundled written chats stay
    chats = workspace / "chats.csv"
    unseen.groupby("intent").nth(9)[["text", "intent", "purchase_intent"]].to_csv(chats, index=False)
    config = workspace / "with-extra.yaml"
    config.write_text(f"paths:\n  data: {small_messages_csv}\n  extra_data: [{chats}]\n  calibration_data: null\n"
                      "  conversations: null\n  orders: null\n", encoding="utf-8")
    result = runner.invoke(app, ["train", "--config", str(config), "--add-data", str(path), "--no-promote"])
    assert result.exit_code == 0, result.output
    run = mlflow.MlflowClient(env).get_run(result.output.split("run id:")[1].split()[0])
    assert {"test/queue_intent_accuracy", "test/messages_intent_accuracy"} <= set(run.data.metrics)
    assert run.data.params["extra_data_weight"] == "5.0"
    assert run.data.params["paths.extra_data"] == str([str(chats), str(path)])
    rejected = pd.read_csv(workspace / "data" / "quarantine" / "queue.rejected.csv")
    assert len(rejected) == 2 and rejected["reason"].str.contains("no intent label|not a label").all()


@pytest.mark.slow  # a training run in a subprocess (~20 s)
def test_a_training_run_prints_each_line_once_and_no_library_warnings(tmp_path, small_messages_csv):
    """What a person reads in the terminal: jieba's dictionary lines used to appear twice (its own
    handler and the root logger's), MLflow warned about missing type hints and integer columns on every
    run, and its download bars cut through the log lines."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "PYTHONWARNINGS": "default"}
    env.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "train", "--config", CONFIG, "--data", str(small_messages_csv),
         "--model-dir", str(tmp_path / "model"), "--no-promote"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "prefix dict" not in result.stderr and "Loading model cost" not in result.stderr
    assert "Add type hints" not in result.stderr
    assert "Inferred schema contains integer" not in result.stderr
    assert "Downloading artifacts" not in result.stderr
    assert "registered: buyer-intent version" in result.stdout
