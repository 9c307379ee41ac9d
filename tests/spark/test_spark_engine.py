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
    written = json.loads((flagged_day["spark_dir"] / "nudges.csv.summary.json").read_text(encoding="utf-8"))
    assert written["engine"]["name"] == "spark"  # the local set it replaced is gone
    assert written["files_sha256"]["nudges.csv"] == local["files_sha256"]["nudges.csv"]
    assert written["files_sha256"]["nudges.csv.rejected.csv"] == local["files_sha256"]["nudges.csv.rejected.csv"]


def test_both_engines_give_identical_predictions(tmp_path, spark, spark_bundle_dir, generated_day, flag_settings):
    chats, _ = generated_day
    table = pd.read_parquet(chats).head(6000)
    source = tmp_path / "messages.csv"
    table.to_csv(source, index=False)
    predict_file(source, tmp_path / "local.csv", str(spark_bundle_dir), flag_settings)
    counts = run_predict(source, tmp_path / "spark.csv", str(spark_bundle_dir), flag_settings)
    assert (tmp_path / "spark.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    scored = pd.read_csv(tmp_path / "spark.csv")
    assert counts == {"rows_in": 6000, "rows_scored": int((table["role"] == "buyer").sum()),
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
    assert sorted(rejected["reason"]) == sorted(local_rejected["reason"])
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
