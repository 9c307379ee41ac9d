"""`--engine spark` gives the local engine's answers: the same nudge rows, the same predictions, the same
quarantine; output appears whole or not at all."""

from __future__ import annotations

import json
import shutil
import threading

import pandas as pd
import pytest

from pipeline.jobs.flag import run_flag
from pipeline.jobs.spark import run_flag_spark, run_predict
from pipeline.jobs.workflows import predict_file
from tests.batch.builders import flat_rows, write_csv, write_orders

HEADER = "conversation_id,buyer_id,shop_id,category,role,text,sent_at"
RUN_SPECIFIC = {"output", "files_sha256", "rows", "engine"}


def _local(chats, out, orders, bundle, config):
    return run_flag(chats, out, orders, str(bundle), None, config, progress=False)


def _spark(chats, out, orders, bundle, config):
    return run_flag_spark(chats, out, orders, str(bundle), None, config)


@pytest.fixture(scope="module")
def flagged_day(tmp_path_factory, spark, spark_bundle_dir, generated_day) -> dict:
    """The generated day flagged once by each engine, for every test that needs a whole run's output.
    The local engine publishes its set first; a copy is kept aside, then the spark engine publishes over it
    (the same names), so its run also replaces an existing output set."""
    from pipeline.config import load_config

    settings = load_config(overrides={"paths.data": "unused.csv", "flag.workers": 1})
    chats, orders = generated_day
    directory = tmp_path_factory.mktemp("flagged-day")
    out, aside = directory / "run" / "nudges.csv", directory / "local"
    out.parent.mkdir()
    local = _local(chats, out, orders, spark_bundle_dir, settings)
    shutil.copytree(out.parent, aside)
    on_spark = _spark(chats, out, orders, spark_bundle_dir, settings)
    return {"local": local, "spark": on_spark, "local_dir": aside, "spark_dir": out.parent}


def test_both_engines_give_identical_nudge_rows_and_summary(flagged_day, generated_day):
    chats, _ = generated_day
    local, on_spark = flagged_day["local"], flagged_day["spark"]
    assert 100 < local["flagged"] < local["lost_shoppers"]  # the comparison is about real decisions
    assert local["suppressed_one_per_window"] > 0  # ... including the one-per-window rule
    assert (flagged_day["spark_dir"] / "nudges.csv").read_bytes() == (flagged_day["local_dir"] / "nudges.csv").read_bytes()
    assert {k: v for k, v in on_spark.items() if k not in RUN_SPECIFIC} == {k: v for k, v in local.items() if k not in RUN_SPECIFIC}
    assert on_spark["rows"]["balanced"] and on_spark["rows"]["in"] == local["rows"]["in"] == pd.read_parquet(chats).shape[0]
    # the label-free accuracy estimate is in that equality: Spark's sum over the conversations is the shards' sum
    assert local["accuracy_estimate"]["buyer_messages"] == local["messages"]["buyer"] > 0
    written = json.loads((flagged_day["spark_dir"] / "nudges.csv.summary.json").read_text(encoding="utf-8"))
    assert written["engine"]["name"] == "spark"  # the local set it replaced is gone
    assert written["files_sha256"]["nudges.csv"] == local["files_sha256"]["nudges.csv"]
    assert written["files_sha256"]["nudges.csv.rejected.csv"] == local["files_sha256"]["nudges.csv.rejected.csv"]


def test_both_engines_give_identical_predictions(tmp_path, spark, spark_bundle_dir, generated_day, flag_settings):
    chats, _ = generated_day
    table = pd.read_parquet(chats).head(6000)
    source = tmp_path / "messages.csv"
    table.to_csv(source, index=False)
    local_counts = predict_file(source, tmp_path / "local.csv", str(spark_bundle_dir), flag_settings)
    counts = run_predict(source, tmp_path / "spark.csv", str(spark_bundle_dir), flag_settings)
    assert (tmp_path / "spark.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    scored = pd.read_csv(tmp_path / "spark.csv")
    estimate = counts.pop("accuracy_estimate")
    assert estimate == local_counts.pop("accuracy_estimate")  # the label-free estimate: Spark's sum is the local mean
    assert estimate.messages == int(scored["scored"].sum())
    assert counts == local_counts == {"rows_in": 6000, "rows_scored": int((table["role"] == "buyer").sum()),
                                      "rows_not_buyer": int((table["role"] != "buyer").sum()), "rows_rejected": 0}
    assert scored.loc[scored["scored"], "intent"].nunique() > 3  # real predictions, not a constant


def test_malformed_rows_are_quarantined_with_the_local_reasons(tmp_path, spark, spark_bundle_dir, flag_settings):
    orders = write_orders(tmp_path / "orders.csv")
    good = flat_rows().to_csv(index=False, header=False)
    bad_lines = [
        "c20,,s1,food,buyer,我要了,2024-05-01T10:00:00+08:00\n",  # missing buyer_id
        "c21,b21,s1,food,buyer,我要了,yesterday\n",  # unparseable sent_at
        "c22,b22,s1,food,customer service,在吗,2024-05-01T10:00:00+08:00\n",  # unknown role
        "c23,b23,s1,food,buyer,我要了,2024-05-01T10:00:00+08:00,extra\n",  # wrong number of fields
        "c24,b24,s1,food,buyer,我要\ufffd了,2024-05-01T10:00:00+08:00\n",  # damaged text
        "c1,b99,s1,apparel,buyer,我要了 电话13812345678,2024-05-01T10:03:00+08:00\n",  # another buyer in c1
    ]
    chats = tmp_path / "chats.csv"
    chats.write_text(HEADER + "\n" + good + "".join(bad_lines), encoding="utf-8")
    local = _local(chats, tmp_path / "local.csv", orders, spark_bundle_dir, flag_settings)
    summary = _spark(chats, tmp_path / "spark.csv", orders, spark_bundle_dir, flag_settings)
    assert summary["rows"]["in"] == 34 and summary["rows"]["used"] == 28 and summary["rows"]["rejected"] == 6
    assert summary["rows"]["balanced"]
    rejected = pd.read_csv(tmp_path / "spark.csv.rejected.csv", dtype=str, keep_default_na=False)
    local_rejected = pd.read_csv(tmp_path / "local.csv.rejected.csv", dtype=str, keep_default_na=False)
    assert (tmp_path / "spark.csv.rejected.csv").read_bytes() == (tmp_path / "local.csv.rejected.csv").read_bytes()
    assert list(local_rejected["row"]) == ["29", "30", "31", "32", "33", "34"]  # the unreadable line 32 among the invalid rows
    by_reason = dict(zip(rejected["reason"], rejected["row"], strict=True))
    assert by_reason["missing buyer_id"] == "29" and by_reason["unknown role 'customer service'"] == "31"  # record numbers
    assert by_reason["expected 7 fields, found 8"] == "32"
    assert "13812345678" not in " ".join(rejected["raw"])  # masked, as the local engine's
    assert summary["rows"]["rejected_reasons"] == local["rows"]["rejected_reasons"]
    assert (tmp_path / "spark.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()


def test_a_gb18030_export_is_read_through_sparks_encoding(tmp_path, spark, spark_bundle_dir, flag_settings):
    orders = write_orders(tmp_path / "orders.csv")
    utf8 = write_csv(flat_rows(), tmp_path / "utf8.csv")
    gbk = write_csv(flat_rows(), tmp_path / "gbk.csv", encoding="gb18030")
    assert gbk.read_bytes() != utf8.read_bytes()
    _local(utf8, tmp_path / "local.csv", orders, spark_bundle_dir, flag_settings)
    summary = _spark(gbk, tmp_path / "spark.csv", orders, spark_bundle_dir, flag_settings)
    assert summary["rows"]["rejected"] == 0 and summary["flagged"] > 0
    assert (tmp_path / "spark.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert "能便宜点吗" in (tmp_path / "spark.csv").read_text(encoding="utf-8-sig")


def test_a_tab_separated_export_is_read_and_a_gb18030_list_written_as_the_local_engine_does(tmp_path, spark, spark_bundle_dir):
    """A UTF-8 .tsv with a row of too many fields: the local engine's rows, quarantine and GB18030 bytes
    (output.csv_encoding, what --encoding sets); a UTF-16 .txt is refused with the conversion named."""
    from pipeline.config import load_config
    from pipeline.jobs.spark import SparkEngineError

    settings = load_config(overrides={"paths.data": "unused.csv", "flag.workers": 1, "output.csv_encoding": "gb18030"})
    orders = write_orders(tmp_path / "orders.csv")
    lines = flat_rows().to_csv(sep="\t", index=False).splitlines(keepends=True)
    tsv = tmp_path / "chats.tsv"
    tsv.write_text("".join([*lines[:4], "c20\tb20\ts1\tfood\tbuyer\t我要了\t多一格\t2024-05-01T10:00:00+08:00\n", *lines[4:]]), encoding="utf-8")
    local = _local(tsv, tmp_path / "local.csv", orders, spark_bundle_dir, settings)
    summary = _spark(tsv, tmp_path / "spark.csv", orders, spark_bundle_dir, settings)
    assert summary["rows"]["rejected"] == local["rows"]["rejected"] == 1 and summary["flagged"] == local["flagged"] > 0
    for name in ("spark.csv", "spark.csv.rejected.csv"):
        assert (tmp_path / name).read_bytes() == (tmp_path / name.replace("spark", "local")).read_bytes()
    assert "能便宜点吗" in (tmp_path / "spark.csv").read_bytes().decode("gb18030")
    unicode_text = tmp_path / "chats.txt"
    unicode_text.write_bytes(b"\xff\xfe" + "".join(lines).encode("utf-16-le"))
    with pytest.raises(SparkEngineError, match=r"chats\.txt: UTF-16 text for Spark must be converted first: iconv -f UTF-16 -t UTF-8 .* > converted\.txt"):
        _spark(unicode_text, tmp_path / "utf16.csv", orders, spark_bundle_dir, settings)


def test_a_killed_job_leaves_no_output_and_a_rerun_gives_the_same_bytes(tmp_path, spark, spark_bundle_dir, generated_day, flag_settings,
                                                                        flagged_day):
    chats, orders = generated_day
    out = tmp_path / "nudges.csv"
    tracker = spark.sparkContext.statusTracker()
    cancelled = threading.Event()
    finished = threading.Event()

    def kill_every_job() -> None:
        # Until the run gives up: a cancel that lands just after a job ended cancels nothing (the next job runs).
        while not finished.is_set():
            if tracker.getActiveJobsIds():
                spark.sparkContext.cancelAllJobs()
                cancelled.set()
            finished.wait(0.02)

    killer = threading.Thread(target=kill_every_job, daemon=True)
    killer.start()
    with pytest.raises(Exception, match="(?i)cancel"):
        try:
            _spark(chats, out, orders, spark_bundle_dir, flag_settings)
        finally:
            finished.set()
            killer.join()
    assert cancelled.is_set()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output, no rejected file, no summary, no staging
    _spark(chats, out, orders, spark_bundle_dir, flag_settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nudges.csv", "nudges.csv.rejected.csv", "nudges.csv.summary.json"]
    first = (flagged_day["spark_dir"] / "nudges.csv").read_bytes()  # an earlier, uninterrupted run of the same job
    assert out.read_bytes() == first and len(first.splitlines()) > 100
    assert (tmp_path / "nudges.csv.rejected.csv").read_bytes() == (flagged_day["spark_dir"] / "nudges.csv.rejected.csv").read_bytes()


def test_a_driver_interrupted_while_publishing_keeps_the_old_output(tmp_path, monkeypatch, spark, spark_bundle_dir, flag_settings):
    import pipeline.jobs.spark as engine

    orders = write_orders(tmp_path / "orders.csv")
    chats = write_csv(flat_rows(), tmp_path / "chats.csv")
    out = tmp_path / "nudges.csv"
    _local(chats, out, orders, spark_bundle_dir, flag_settings)  # the old output set (the engines write the same files)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {"nudges.csv", "nudges.csv.rejected.csv", "nudges.csv.summary.json"} <= set(before)
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:  # the nudge list is assembled, the rejected file is not
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = engine.assemble
    monkeypatch.setattr(engine, "assemble", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _spark(chats, out, orders, spark_bundle_dir, flag_settings)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # the old set, whole; no staging left


def test_spark_errors_name_the_file_and_the_problem(tmp_path, spark, spark_bundle_dir, flag_settings):
    from pipeline.jobs.flag import FlagError
    from pipeline.jobs.spark import SparkEngineError, parse_conf

    orders = write_orders(tmp_path / "orders.csv")
    chats = tmp_path / "chats.csv"
    chats.write_text("conversation_id,buyer_id,shop_id,role,text\nc1,b1,s1,buyer,在吗\n", encoding="utf-8")
    with pytest.raises(FlagError, match=r"chats\.csv.*sent_at"):
        _spark(chats, tmp_path / "out.csv", orders, spark_bundle_dir, flag_settings)
    with pytest.raises(FlagError, match="missing.csv: chats file not found"):
        _spark(tmp_path / "missing.csv", tmp_path / "out.csv", orders, spark_bundle_dir, flag_settings)
    with pytest.raises(SparkEngineError, match="key=value"):
        parse_conf(["spark.executor.memory"])
    assert parse_conf(["spark.executor.memory=2g", "a.b = c"]) == {"spark.executor.memory": "2g", "a.b": "c"}
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("kind", ["instant", "wall_clock"])
def test_parquet_timestamps_mean_the_same_times_on_both_engines(tmp_path, spark, spark_bundle_dir, flag_settings, kind):
    """A Parquet export with real timestamp columns: an instant (+08:00 stored as UTC) or a wall-clock time
    without a zone (read in the shop's time zone). Spark hands timestamps to Python in its session zone; the
    engine must not shift them, or send times and the lost rule move by hours."""
    orders = write_orders(tmp_path / "orders.csv")
    frame = flat_rows()
    times = pd.to_datetime(frame["sent_at"], format="ISO8601")
    frame["sent_at"] = times if kind == "instant" else times.dt.tz_localize(None)  # the builders' times are +08:00
    chats = tmp_path / "chats.parquet"
    frame.to_parquet(chats, index=False)
    local = _local(chats, tmp_path / "local.csv", orders, spark_bundle_dir, flag_settings)
    remote = _spark(chats, tmp_path / "spark.csv", orders, spark_bundle_dir, flag_settings)
    assert local["flagged"] > 0 and remote["rows"]["rejected"] == local["rows"]["rejected"] == 0
    assert (tmp_path / "spark.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()


# --- JSONL inputs ------------------------------------------------------------------------------------

# Lines no reader can use, at fixed places of the flat JSONL: each is quarantined with the local reader's reason.
FLAT_BAD_LINES = {
    3: '{"conversation_id": "conv-bad", "buyer_id": "buyer-1", "shop_id": "shop-1", "role": "buyer", "text": "我要了\n',  # cut short
    8: '["conv-bad", "buyer-1", "shop-1", "buyer", "我要了"]\n',  # not an object
    13: "\n",  # blank: skipped, not a row
    21: '{"conversation_id": "conv-bad", "buyer_id": "buyer-1", "shop_id": "shop-1", "role": "buyer"}\n',  # no text, no sent_at
    34: '{"conversation_id": "conv-bad", "buyer_id": "buyer-2", "shop_id": "shop-1", "role": "buyer", '
        '"text": "电话13812345678 我要了", "sent_at": "yesterday"}\n',  # bad time (and a phone number to mask)
    55: '{"conversation_id": "conv-deep", "text": ' + "[" * 100_000 + "]" * 100_000 + "}\n",  # nested too deeply for json
}


@pytest.fixture(scope="module")
def jsonl_day(tmp_path_factory, generated_day) -> dict:
    """300 conversations of the generated day (~3,000 messages) as flat JSONL (one message per line, with the
    lines of FLAT_BAD_LINES) and as conversation-record JSONL (data/conversations.jsonl's layout: one
    conversation per line with a `messages` list, plus a record without messages and a cut-short line)."""
    chats, orders = generated_day
    frame = pd.read_parquet(chats)
    frame = frame[frame["conversation_id"].str.removeprefix("conv-").astype(int) < 300].reset_index(drop=True)
    directory = tmp_path_factory.mktemp("jsonl-day")
    lines = [json.dumps(record, ensure_ascii=False) + "\n" for record in frame.to_dict(orient="records")]
    for number in sorted(FLAT_BAD_LINES):
        lines.insert(number - 1, FLAT_BAD_LINES[number])
    flat = directory / "messages.jsonl"
    flat.write_text("".join(lines), encoding="utf-8")
    records = []
    for (cid, buyer, shop, category), turns in frame.groupby(["conversation_id", "buyer_id", "shop_id", "category"], sort=False):
        records.append({"conversation_id": cid, "buyer_id": buyer, "shop_id": shop, "category": category,
                        "messages": turns[["role", "text", "sent_at"]].to_dict(orient="records")})
    lines = [json.dumps(record, ensure_ascii=False) + "\n" for record in records]
    lines.insert(5, json.dumps({"conversation_id": "conv-empty", "buyer_id": "buyer-1", "shop_id": "shop-1"}) + "\n")  # no messages
    lines.insert(9, '{"conversation_id": "conv-cut", "messages": [{"role": "buyer", "text": "在吗"\n')  # cut short
    conversations = directory / "conversations.jsonl"
    conversations.write_text("".join(lines), encoding="utf-8")
    return {"flat": flat, "conversations": conversations, "orders": orders, "messages": len(frame), "n_conversations": len(records)}


def _balanced(summary: dict) -> bool:
    rows = summary["rows"]
    return rows["balanced"] and rows["in"] == rows["used"] + rows["rejected"]


def test_flat_jsonl_gives_the_local_nudge_rows_quarantine_and_counts(tmp_path, spark, spark_bundle_dir, jsonl_day, flag_settings):
    chats, orders = jsonl_day["flat"], jsonl_day["orders"]
    local = _local(chats, tmp_path / "local.csv", orders, spark_bundle_dir, flag_settings)
    on_spark = _spark(chats, tmp_path / "spark.csv", orders, spark_bundle_dir, flag_settings)
    assert local["flagged"] > 10  # real decisions to compare
    assert (tmp_path / "spark.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    # five bad lines (the blank one is no row), with the local reasons and line numbers; the phone number masked
    rejected = pd.read_csv(tmp_path / "spark.csv.rejected.csv", dtype=str, keep_default_na=False)
    # both in line order (the local engine listed a chunk's unreadable lines after its invalid rows)
    assert (tmp_path / "spark.csv.rejected.csv").read_bytes() == (tmp_path / "local.csv.rejected.csv").read_bytes()
    assert list(rejected["row"]) == ["3", "8", "21", "34", "55"]
    assert list(rejected["reason"]) == ["not valid JSON: Unterminated string starting at", "a line must be a JSON object", "missing text",
                                        "unparseable sent_at 'yesterday'", "not valid JSON: nested too deeply"]
    assert "13812345678" not in (tmp_path / "spark.csv.rejected.csv").read_text(encoding="utf-8-sig")
    for summary in (local, on_spark):
        assert _balanced(summary)
        assert summary["rows"]["in"] == jsonl_day["messages"] + 5 and summary["rows"]["rejected"] == 5
    assert {k: v for k, v in on_spark["rows"].items() if k != "rejected_file"} == {k: v for k, v in local["rows"].items() if k != "rejected_file"}
    assert {k: v for k, v in on_spark.items() if k not in RUN_SPECIFIC} == {k: v for k, v in local.items() if k not in RUN_SPECIFIC}


def test_a_jsonl_key_that_first_appears_late_is_read_on_both_engines(tmp_path, spark, spark_bundle_dir, jsonl_day, flag_settings):
    """Spark took the JSONL keys from the first 1,000 lines: a `category` filled in only further down was
    dropped there (per-category summary and the nudge list's category column), kept by the local engine."""
    lines = jsonl_day["flat"].read_text(encoding="utf-8").splitlines(keepends=True)
    late = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):  # the bad lines stay as they are
            late.append(line)
            continue
        if number <= 1200 and isinstance(record, dict):
            record.pop("category", None)
            line = json.dumps(record, ensure_ascii=False) + "\n"
        late.append(line)
    chats = tmp_path / "late.jsonl"
    chats.write_text("".join(late), encoding="utf-8")
    local = _local(chats, tmp_path / "local.csv", jsonl_day["orders"], spark_bundle_dir, flag_settings)
    on_spark = _spark(chats, tmp_path / "spark.csv", jsonl_day["orders"], spark_bundle_dir, flag_settings)
    assert local["per_category"] and on_spark["per_category"] == local["per_category"]
    assert "category" in pd.read_csv(tmp_path / "spark.csv", dtype=str).columns
    assert (tmp_path / "spark.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()


def test_conversation_jsonl_is_local_only_and_its_flat_export_gives_the_same_nudges(tmp_path, spark, spark_bundle_dir, jsonl_day,
                                                                                     flag_settings):
    """Conversation records (`messages` lists) are read by the local engine only (README, On Spark): Spark stops
    with one error naming the file and what to do, before writing anything; the same conversations exported
    one message per line give the local engine's nudge list on Spark."""
    from pipeline.jobs.spark import SparkEngineError

    conversations, orders = jsonl_day["conversations"], jsonl_day["orders"]
    local = _local(conversations, tmp_path / "local" / "nudges.csv", orders, spark_bundle_dir, flag_settings)
    assert local["input"]["format"] == "conversations" and _balanced(local)
    assert local["rows"]["in"] == jsonl_day["messages"] + 2 and local["rows"]["rejected"] == 2
    local_rejected = pd.read_csv(tmp_path / "local" / "nudges.csv.rejected.csv", dtype=str, keep_default_na=False)
    assert dict(zip(local_rejected["row"], local_rejected["reason"].str.split(":").str[0], strict=True)) == {
        "6": "messages must be a non-empty list", "10": "not valid JSON"}
    spark_dir = tmp_path / "spark"
    spark_dir.mkdir()
    with pytest.raises(SparkEngineError, match=r"conversations\.jsonl: conversation records .* --engine local only"):
        _spark(conversations, spark_dir / "nudges.csv", orders, spark_bundle_dir, flag_settings)
    assert list(spark_dir.iterdir()) == []  # no output, no staging directory
    flat = _spark(jsonl_day["flat"], spark_dir / "nudges.csv", orders, spark_bundle_dir, flag_settings)
    assert flat["flagged"] == local["flagged"] > 10
    assert (spark_dir / "nudges.csv").read_bytes() == (tmp_path / "local" / "nudges.csv").read_bytes()


def test_predict_reads_jsonl_as_the_local_engine_does(tmp_path, spark, spark_bundle_dir, jsonl_day, flag_settings):
    source = tmp_path / "messages.jsonl"
    head = jsonl_day["flat"].read_text(encoding="utf-8").splitlines(keepends=True)[:400]
    source.write_text("".join(head), encoding="utf-8")
    local_counts = predict_file(source, tmp_path / "local.csv", str(spark_bundle_dir), flag_settings)
    counts = run_predict(source, tmp_path / "spark.csv", str(spark_bundle_dir), flag_settings)
    assert counts == local_counts and counts["rows_rejected"] == 3 and counts["rows_in"] == 399  # the blank line is no row
    assert counts["accuracy_estimate"].messages == counts["rows_scored"]  # the same label-free estimate, summed by Spark
    assert (tmp_path / "spark.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    rejected = pd.read_csv(tmp_path / "spark.csv.rejected.csv", dtype=str, keep_default_na=False)
    local_rejected = pd.read_csv(tmp_path / "local.csv.rejected.csv", dtype=str, keep_default_na=False)
    assert rejected.to_dict(orient="records") == local_rejected.to_dict(orient="records")
    assert list(rejected["row"]) == ["3", "8", "55"]
    scored = pd.read_csv(tmp_path / "spark.csv")
    assert scored["scored"].sum() == counts["rows_scored"] > 100 and scored.loc[scored["scored"], "intent"].nunique() > 3
    # a clean rerun to the same output leaves no rejected file of the previous run (it described other rows)
    clean = tmp_path / "clean.jsonl"
    clean.write_text("".join(line for number, line in enumerate(head, start=1) if number not in (3, 8, 13, 55)), encoding="utf-8")
    assert run_predict(clean, tmp_path / "spark.csv", str(spark_bundle_dir), flag_settings)["rows_rejected"] == 0
    assert not (tmp_path / "spark.csv.rejected.csv").exists()


# --- the command line ---------------------------------------------------------------------------------


def test_the_command_line_runs_flag_and_predict_on_spark(tmp_path, monkeypatch, spark, spark_bundle_dir):
    """`buyer-intent flag/predict --engine spark --master local[2] --conf ...` write the local engine's files.
    The test session is active, so the commands run on it (`spark_session` reuses an active session and
    leaves it running: a second JVM is not started, and the session is still usable afterwards)."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")  # nothing of the repository's
    config = tmp_path / "config.yaml"
    config.write_text("paths:\n  data: unused.csv\nflag:\n  workers: 1\n", encoding="utf-8")
    orders = write_orders(tmp_path / "orders.csv")
    chats = write_csv(flat_rows(), tmp_path / "chats.csv")
    runner = CliRunner()
    common = ["--model", str(spark_bundle_dir), "--config", str(config)]
    on_spark = ["--engine", "spark", "--master", "local[2]", "--conf", "spark.sql.shuffle.partitions=2"]

    def invoke(*args: str):
        return runner.invoke(app, [*args, *common])

    local = invoke("flag", "--chats", str(chats), "--orders", str(orders), "--out", str(tmp_path / "local" / "nudges.csv"))
    assert local.exit_code == 0, local.output
    result = invoke("flag", "--chats", str(chats), "--orders", str(orders), "--out", str(tmp_path / "spark" / "nudges.csv"), *on_spark, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["engine"]["name"] == "spark" and summary["flagged"] > 0 and summary["rows"]["balanced"]
    for name in ("nudges.csv", "nudges.csv.rejected.csv"):
        assert (tmp_path / "spark" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()

    local = invoke("predict", "--input", str(chats), "--output", str(tmp_path / "local.csv"))
    assert local.exit_code == 0, local.output
    result = invoke("predict", "--input", str(chats), "--output", str(tmp_path / "spark.csv"), *on_spark)
    assert result.exit_code == 0, result.output
    buyers = int((flat_rows()["role"] == "buyer").sum())
    local_first, *local_rest = local.stdout.strip().splitlines()
    spark_first, *spark_rest = result.stdout.strip().splitlines()
    assert local_first == f"scored {buyers} rows -> {tmp_path / 'local.csv'}"
    assert spark_first == f"scored {buyers} rows -> {tmp_path / 'spark.csv'}"
    assert spark_rest == local_rest and local_rest[0].startswith(f"estimated intent accuracy on these {buyers:,} messages")
    assert (tmp_path / "spark.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()

    from pyspark.sql import SparkSession

    assert SparkSession.getActiveSession() is spark and spark.range(3).count() == 3  # the shared session was not stopped

    for command in (["flag", "--chats", str(chats), "--orders", str(orders), "--out", str(tmp_path / "bad" / "nudges.csv")],
                    ["predict", "--input", str(chats), "--output", str(tmp_path / "bad" / "scored.csv")]):
        bad = invoke(*command, "--engine", "spark", "--conf", "spark.sql.shuffle.partitions=2", "--conf", "nokeyvalue")
        assert bad.exit_code == 2, bad.output
        assert bad.stderr.strip() == "error: --conf must look like key=value, got 'nokeyvalue'"
        assert bad.stdout == ""
    assert not (tmp_path / "bad").exists()


def test_an_active_session_is_reused_and_the_settings_it_ignores_are_said(spark, caplog):
    """A notebook's or a test's session runs the job; --master and --conf cannot change it, and a log line
    says so instead of dropping them without a word."""
    import logging

    from pipeline.jobs.spark import spark_session

    with caplog.at_level(logging.WARNING, logger="pipeline.jobs.spark"):
        session, created = spark_session("local[3]", {"spark.sql.shuffle.partitions": "3"})
    assert session is spark and not created
    assert any("are not applied" in r.getMessage() and "local[3]" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.jobs.spark"):
        spark_session(spark.sparkContext.master, None)
    assert not caplog.records
