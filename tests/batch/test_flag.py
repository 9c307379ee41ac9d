"""`buyer-intent flag` end to end on fixture files: lost rules, policy, encodings, quarantine, atomic
output and resume after a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import pipeline.jobs.flag.merge as merge_module
import pipeline.jobs.flag.shards as shards_module
from pipeline.drift import estimate, summary_record
from pipeline.jobs.flag import FlagError, run_flag

from .builders import chat_fixture, flat_rows, write_conversation_jsonl, write_csv, write_orders

HEADER = "conversation_id,buyer_id,shop_id,category,role,text,sent_at"


@pytest.fixture()
def inputs(tmp_path) -> tuple[Path, Path]:
    return write_csv(flat_rows(), tmp_path / "chats.csv"), write_orders(tmp_path / "orders.csv")


def _run(chats, out, orders, bundle, config, **kwargs):
    return run_flag(chats, out, orders, str(bundle), None, config, progress=False, **kwargs)


def _flagged(out: Path) -> dict[str, dict]:
    frame = pd.read_csv(out, dtype=str, keep_default_na=False)
    return {row["conversation_id"]: row for row in frame.to_dict(orient="records")}


def test_lost_rules_policy_and_nudges(tmp_path, inputs, flag_bundle_dir, flag_config):
    chats, orders = inputs
    out = tmp_path / "nudges.csv"
    summary = _run(chats, out, orders, flag_bundle_dir, flag_config())
    flagged = _flagged(out)
    # c2 paid exactly 72h after: not lost; c10 paid during the chat: not lost; c6 complained; c8 is the
    # same buyer and shop as c7 within the window; c11 never wanted to buy.
    assert set(flagged) == {"c1", "c3", "c4", "c5", "c7", "c9"}
    assert {cid: flagged[cid]["suggested_nudge"] for cid in ("c1", "c3", "c4", "c5")} == {
        "c1": "coupon", "c3": "restock_alert", "c4": "size_help", "c5": "shipping_promise",
    }
    assert flagged["c5"]["send_after"] == "2024-05-05T08:00:00+08:00"  # 22:31 + 72h is in the quiet hours
    assert flagged["c1"]["send_after"] == "2024-05-04T10:02:00+08:00"
    assert flagged["c1"]["category"] == "apparel" and flagged["c1"]["nudge_text"]
    assert list(pd.read_csv(out).columns) == [
        "conversation_id", "buyer_id", "shop_id", "category", "purchase_score", "evidence", "open_concern",
        "suggested_nudge", "nudge_text", "priority", "send_after",
    ]
    assert summary["conversations"] == 11
    assert summary["lost_shoppers"] == 9  # all but c2 and c10
    assert summary["skipped_complaint_or_refund"] == 1
    assert summary["suppressed_one_per_window"] == 1
    assert summary["flagged"] == 6 and summary["flagged_share_of_lost"] == round(6 / 9, 4)
    assert summary["per_shop"]["s3"] | {"estimated_accuracy": None} == {"conversations": 2, "lost_shoppers": 2, "flagged": 1, "flagged_share_of_lost": 0.5,
                                                                     "buyer_messages": 2, "estimated_accuracy": None}  # tests/batch/test_flag_drift.py
    assert summary["per_category"]["home"]["flagged"] == 0
    assert summary["rows"] == {**summary["rows"], "in": 28, "used": 28, "rejected": 0, "balanced": True}
    written = json.loads(out.with_name("nudges.csv.summary.json").read_text(encoding="utf-8"))
    assert written == json.loads(json.dumps(summary))
    assert not (tmp_path / ".nudges.csv.work").exists()  # checkpoints removed after success


def test_window_flag_moves_the_edge(tmp_path, inputs, flag_bundle_dir, flag_config):
    chats, orders = inputs
    out = tmp_path / "nudges.csv"
    run_flag(chats, out, orders, str(flag_bundle_dir), 73.0, flag_config(), progress=False)
    flagged = _flagged(out)
    assert "c3" not in flagged  # paid 72h + 1s after: inside a 73h window
    assert flagged["c1"]["send_after"] == "2024-05-04T11:02:00+08:00"


def test_output_is_sorted_and_independent_of_input_order_and_format(tmp_path, inputs, flag_bundle_dir, flag_config):
    chats, orders = inputs
    reference = tmp_path / "a.csv"
    _run(chats, reference, orders, flag_bundle_dir, flag_config())
    shuffled = write_csv(flat_rows().sample(frac=1.0, random_state=3), tmp_path / "shuffled.csv")
    jsonl = write_conversation_jsonl(tmp_path / "chats.jsonl")
    parquet = tmp_path / "chats.parquet"
    flat_rows().sample(frac=1.0, random_state=4).to_parquet(parquet, index=False)
    typed = flat_rows()  # Parquet with a timestamp column, as the scale generator writes it
    typed["sent_at"] = pd.to_datetime(typed["sent_at"], format="ISO8601").dt.as_unit("ms")
    typed_parquet = tmp_path / "typed.parquet"
    typed.to_parquet(typed_parquet, index=False)
    for source in (shuffled, jsonl, parquet, typed_parquet):
        out = tmp_path / f"{source.stem}-{source.suffix[1:]}.csv"
        _run(source, out, orders, flag_bundle_dir, flag_config())
        assert out.read_bytes() == reference.read_bytes(), source
    frame = pd.read_csv(reference)
    keys = list(zip(frame["priority"], -frame["purchase_score"], frame["send_after"], frame["shop_id"], frame["conversation_id"]))
    assert keys == sorted(keys)


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_output_formats(tmp_path, inputs, flag_bundle_dir, flag_config, suffix):
    chats, orders = inputs
    csv_out, other = tmp_path / "n.csv", tmp_path / f"n.{suffix}"
    _run(chats, csv_out, orders, flag_bundle_dir, flag_config())
    _run(chats, other, orders, flag_bundle_dir, flag_config())
    frame = pd.read_parquet(other) if suffix == "parquet" else pd.read_json(other, lines=True, dtype=False)
    assert frame["conversation_id"].tolist() == pd.read_csv(csv_out)["conversation_id"].tolist()


def test_gb18030_and_utf8_bom_give_the_same_output(tmp_path, flag_bundle_dir, flag_config):
    orders = write_orders(tmp_path / "orders.csv")
    outputs = []
    for encoding in ("utf-8", "utf-8-sig", "gb18030"):
        chats = write_csv(flat_rows(), tmp_path / f"chats-{encoding}.csv", encoding)
        out = tmp_path / f"out-{encoding}.csv"
        summary = _run(chats, out, orders, flag_bundle_dir, flag_config())
        assert summary["rows"]["rejected"] == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    assert "能便宜点吗".encode("utf-8") in outputs[0]


def test_ordered_column_instead_of_orders(tmp_path, flag_bundle_dir, flag_config):
    frame = flat_rows()
    frame["ordered"] = frame["conversation_id"].map(lambda cid: "1" if cid in {"c2", "c10", "c3"} else "0")
    chats = write_csv(frame, tmp_path / "chats.csv")
    out = tmp_path / "nudges.csv"
    summary = _run(chats, out, None, flag_bundle_dir, flag_config())
    assert set(_flagged(out)) == {"c1", "c4", "c5", "c7", "c9"}
    assert summary["lost_shoppers"] == 8 and summary["lost_rule"] == "ordered column"
    with pytest.raises(FlagError, match="no --orders"):
        _run(write_csv(flat_rows(), tmp_path / "plain.csv"), tmp_path / "x.csv", None, flag_bundle_dir, flag_config())


def test_malformed_rows_are_quarantined_and_counted(tmp_path, inputs, flag_bundle_dir, flag_config):
    _, orders = inputs
    good = flat_rows().to_csv(index=False, header=False).encode("utf-8")
    bad_lines = [
        "c20,,s1,food,buyer,我要了,2024-05-01T10:00:00+08:00\n",  # missing buyer_id
        "c21,b21,s1,food,buyer,我要了,yesterday\n",  # unparseable sent_at
        "c22,b22,s1,food,customer service,在吗,2024-05-01T10:00:00+08:00\n",  # unknown role
        "c23,b23,s1,food,buyer,我要了,2024-05-01T10:00:00+08:00,extra\n",  # wrong number of fields
        "c24,b24,s1,food,buyer,我要\ufffd了,2024-05-01T10:00:00+08:00\n",  # damaged text
        "c1,b99,s1,apparel,buyer,我要了 电话13812345678,2024-05-01T10:03:00+08:00\n",  # another buyer in c1
    ]
    data = (HEADER + "\n").encode() + good + "".join(bad_lines).encode("utf-8")
    data += "c25,b25,s1,food,buyer,".encode() + b"\xff\xfe\xfd" + ",2024-05-01T10:00:00+08:00\n".encode()  # bad bytes
    chats = tmp_path / "chats.csv"
    chats.write_bytes(data)
    out = tmp_path / "nudges.csv"
    summary = _run(chats, out, orders, flag_bundle_dir, flag_config())
    rows = summary["rows"]
    assert rows["in"] == 28 + 7 and rows["used"] == 28 and rows["rejected"] == 7 and rows["balanced"]
    rejected = pd.read_csv(out.with_name("nudges.csv.rejected.csv"), dtype=str, keep_default_na=False)
    assert len(rejected) == 7
    reasons = " | ".join(rejected["reason"])
    for expected in ("missing buyer_id", "unparseable sent_at", "unknown role", "expected 7 fields", "U+FFFD",
                     "buyer_id differs", "bad encoding"):
        assert expected in reasons
    assert "13812345678" not in " ".join(rejected["raw"])  # rejected rows are masked too
    assert set(_flagged(out)) == {"c1", "c3", "c4", "c5", "c7", "c9"}  # the good rows decide as before


def test_missing_columns_and_bad_paths_fail_clearly(tmp_path, inputs, flag_bundle_dir, flag_config):
    _, orders = inputs
    chats = tmp_path / "chats.csv"
    chats.write_text("conversation_id,text\nc1,在吗\n", encoding="utf-8")
    with pytest.raises(FlagError, match="missing column"):
        _run(chats, tmp_path / "o.csv", orders, flag_bundle_dir, flag_config())
    with pytest.raises(FlagError, match="not found"):
        _run(tmp_path / "nope.csv", tmp_path / "o.csv", orders, flag_bundle_dir, flag_config())
    with pytest.raises(FlagError, match="unsupported"):
        _run(chats, tmp_path / "o.xls", orders, flag_bundle_dir, flag_config())


def test_crash_leaves_no_output_and_rerun_resumes_to_identical_bytes(tmp_path, monkeypatch, flag_bundle_dir, flag_config):
    conversations = [(f"x{i}", f"b{i % 7}", f"s{i % 3}", "food", turns) for i, (_, _, _, _, turns) in
                     enumerate(chat_fixture() * 4)]
    chats = write_csv(flat_rows(conversations).sample(frac=1.0, random_state=1), tmp_path / "chats.csv")
    orders = write_orders(tmp_path / "orders.csv")
    config = flag_config(shard_rows=20)  # several shards
    clean = tmp_path / "clean" / "nudges.csv"
    _run(chats, clean, orders, flag_bundle_dir, config)

    out = tmp_path / "run" / "nudges.csv"
    real = shards_module.process_shard
    calls = []

    def crash_after_first(task):
        calls.append(task.index)
        if len(calls) > 1:
            raise RuntimeError("killed")
        return real(task)

    monkeypatch.setattr(shards_module, "process_shard", crash_after_first)
    with pytest.raises(RuntimeError, match="killed"):
        _run(chats, out, orders, flag_bundle_dir, config)
    assert not out.exists() and not list(out.parent.glob(".nudges.csv.*.tmp"))
    work = next((out.parent / ".nudges.csv.work").iterdir())
    n_shards = json.loads((work / "partition.json").read_text())["shards"]
    assert n_shards > 2 and len(list((work / "results").glob("shard-*.json"))) == 1

    resumed = []
    monkeypatch.setattr(shards_module, "process_shard", lambda task: resumed.append(task.index) or real(task))
    _run(chats, out, orders, flag_bundle_dir, config)
    assert len(resumed) == n_shards - 1 and calls[0] not in resumed
    assert out.read_bytes() == clean.read_bytes()
    assert out.with_name("nudges.csv.rejected.csv").read_bytes() == clean.with_name("nudges.csv.rejected.csv").read_bytes()


def test_only_shards_that_hold_rows_are_scored(tmp_path, monkeypatch, flag_bundle_dir, flag_config):
    """The shard count is estimated from the file's size: one 2 MB line among the fixture's rows makes it
    hundreds, nearly all empty. Only the shards holding rows become tasks, and the output is that of one shard."""
    chats, orders = write_csv(flat_rows(), tmp_path / "chats.csv"), write_orders(tmp_path / "orders.csv")
    with chats.open("ab") as handle:
        handle.write(b"c40,b40,s1,food,buyer," + b"," * 2_000_000 + b",2024-05-01T10:00:00+08:00\n")  # rejected: 2,000,007 fields
    one_shard = tmp_path / "one" / "nudges.csv"
    _run(chats, one_shard, orders, flag_bundle_dir, flag_config(shard_rows=1_000_000))
    tasks = []
    real = shards_module.process_shard
    monkeypatch.setattr(shards_module, "process_shard", lambda task: tasks.append(task.index) or real(task))
    out = tmp_path / "run" / "nudges.csv"
    summary = _run(chats, out, orders, flag_bundle_dir, flag_config(shard_rows=20, keep_work_dir=True))
    partition = json.loads(next((out.parent / ".nudges.csv.work").iterdir()).joinpath("partition.json").read_text())
    estimated = chats.stat().st_size // 90 // 20  # the size-based count: about 1,100 shards
    assert estimated > 1000 and 1 < partition["shards"] == len(tasks) <= 30
    assert sorted(tasks) == partition["shard_ids"]
    assert summary["rows"]["rejected"] == 1 and summary["rows"]["balanced"]
    assert out.read_bytes() == one_shard.read_bytes()
    assert out.with_name("nudges.csv.rejected.csv").read_bytes() == one_shard.with_name("nudges.csv.rejected.csv").read_bytes()


def test_changed_input_does_not_reuse_checkpoints(tmp_path, inputs, flag_bundle_dir, flag_config):
    chats, orders = inputs
    out = tmp_path / "nudges.csv"
    config = flag_config(keep_work_dir=True)
    _run(chats, out, orders, flag_bundle_dir, config)
    frame = flat_rows()
    write_csv(frame[frame["conversation_id"] != "c1"], chats)
    _run(chats, out, orders, flag_bundle_dir, config)
    assert "c1" not in _flagged(out)
    assert len(list((tmp_path / ".nudges.csv.work").iterdir())) == 1  # the stale checkpoint was dropped


def test_worker_processes_give_the_same_output(tmp_path, flag_bundle_dir, flag_config, flag_scorer):
    conversations = [(f"x{i}", f"b{i % 5}", f"s{i % 3}", "food", turns) for i, (_, _, _, _, turns) in
                     enumerate(chat_fixture() * 3)]
    chats = write_csv(flat_rows(conversations), tmp_path / "chats.csv")
    orders = write_orders(tmp_path / "orders.csv")
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    in_one = _run(chats, one, orders, flag_bundle_dir, flag_config(shard_rows=30), workers=1)
    in_two = _run(chats, two, orders, flag_bundle_dir, flag_config(shard_rows=30), workers=2)
    assert one.read_bytes() == two.read_bytes()
    # the label-free accuracy estimate (pipeline.drift) summed over shards and processes: the whole file's
    buyer_texts = flat_rows(conversations).query("role == 'buyer'")["text"].tolist()
    whole = estimate(flag_scorer.predictor.predict(buyer_texts)["intent_confidence"].to_numpy(), flag_scorer.predictor.bundle.manifest)
    assert in_one["accuracy_estimate"] == in_two["accuracy_estimate"] == summary_record(whole)


def test_cli_end_to_end(tmp_path, inputs, flag_bundle_dir):
    from typer.testing import CliRunner

    from pipeline.cli import app

    chats, orders = inputs
    out = tmp_path / "nudges.csv"
    result = CliRunner().invoke(
        app, ["flag", "--chats", str(chats), "--orders", str(orders), "--out", str(out), "--model", str(flag_bundle_dir), "--window", "72h"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(out.with_name("nudges.csv.summary.json").read_text(encoding="utf-8"))
    assert summary["conversations"] == 11 and summary["rows"]["balanced"]
    assert set(_flagged(out)) == {"c1", "c3", "c4", "c5", "c7", "c9"}
    # a person reads a short summary; the whole record is in the summary file, or printed with --json
    assert "flagged" in result.output and "6 = " in result.output and "lost shoppers" in result.output
    assert "nudges.csv.summary.json" in result.output and '"per_shop"' not in result.output
    as_json = CliRunner().invoke(
        app, ["flag", "--chats", str(chats), "--orders", str(orders), "--out", str(out), "--model", str(flag_bundle_dir), "--json"]
    )
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["flagged"] == 6


def test_send_delay_nudges_within_hours_outside_quiet_hours(tmp_path, inputs, flag_bundle_dir):
    """催拍 within hours: `--send-delay 2h` schedules a nudge two hours after the last message instead of when
    the 72 h window closes, still never inside the quiet hours (22:00-08:00)."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    chats, orders = inputs
    sent = {}
    for delay in (None, "2h"):
        out = tmp_path / f"nudges-{delay}.csv"
        args = ["flag", "--chats", str(chats), "--orders", str(orders), "--out", str(out), "--model", str(flag_bundle_dir)]
        result = CliRunner().invoke(app, args + (["--send-delay", delay] if delay else []))
        assert result.exit_code == 0, result.output
        sent[delay] = {cid: row["send_after"] for cid, row in _flagged(out).items()}
    assert sent[None]["c1"] == "2024-05-04T10:02:00+08:00"  # last message 10:02 + 72 h
    assert sent["2h"]["c1"] == "2024-05-01T12:02:00+08:00"  # + 2 h
    assert sent["2h"]["c5"] == "2024-05-02T08:00:00+08:00"  # 22:31 + 2 h is quiet: 08:00 the next morning
    assert set(sent["2h"]) == set(sent[None])  # when to send, not whom
    bad = CliRunner().invoke(app, ["flag", "--chats", str(chats), "--orders", str(orders), "--out", str(tmp_path / "x.csv"),
                                   "--model", str(flag_bundle_dir), "--send-delay", "soon"])
    assert bad.exit_code == 2 and "--send-delay" in bad.output


def test_service_decide_matches_the_batch_job(tmp_path, inputs, flag_bundle_dir, flag_config, flag_scorer):
    """The service imports pipeline.nudge.decide: it must flag exactly what the batch job flags."""
    from pipeline.conversation import Turn
    from pipeline.nudge import ConversationInput, NudgePolicy, OrdersIndex, decide
    from pipeline.times import parse_times

    from .builders import orders_fixture

    chats, orders = inputs
    out = tmp_path / "nudges.csv"
    config = flag_config()
    _run(chats, out, orders, flag_bundle_dir, config)
    batch = _flagged(out)
    policy = NudgePolicy.from_config(config.flag)
    index = OrdersIndex.from_arrays([o[1] for o in orders_fixture()], [o[2] for o in orders_fixture()],
                                    parse_times([o[3] for o in orders_fixture()], policy.tz, policy.time_range))
    conversations = [
        ConversationInput(cid, buyer, shop, [Turn(r, t, s) for r, t, s in reversed(turns)], category)  # order by time
        for cid, buyer, shop, category, turns in chat_fixture()
    ]
    decisions = {d.conversation_id: d for d in decide(conversations, flag_scorer, policy, orders_index=index)}
    assert {cid for cid, d in decisions.items() if d.nudge} == set(batch)
    for cid, row in batch.items():
        d = decisions[cid]
        assert (d.evidence, d.open_concern, d.suggested_nudge, d.nudge_text, str(d.priority), d.send_after) == (
            row["evidence"], row["open_concern"], row["suggested_nudge"], row["nudge_text"], row["priority"], row["send_after"]
        )
        assert d.purchase_score == float(row["purchase_score"])
    assert decisions["c6"].reason == "complaint_or_refund" and decisions["c8"].reason == "duplicate_in_window"
    assert decisions["c2"].reason == "not_lost" and decisions["c2"].lost is False


def test_decide_leaves_out_turns_the_batch_would_reject(flag_scorer):
    from pipeline.conversation import Turn
    from pipeline.nudge import ConversationInput, NudgePolicy, decide
    from pipeline.nudge.rows import usable_turns

    policy = NudgePolicy.from_config({"min_score": 0.0})
    turns = [Turn("买家", "我要了", "2024-05-01T10:05:00+08:00"), Turn("buyer", "  ", "2024-05-01T10:06:00+08:00"),
             Turn("customer service", "在的", "2024-05-01T10:07:00+08:00"), Turn("buyer", "在吗", "2024-05-01T10:00:00+08:00"),
             Turn("buyer", "有货吗", "yesterday")]
    roles, texts, _ = usable_turns(turns, policy)
    assert (roles, texts) == (["buyer", "buyer"], ["在吗", "我要了"])
    clean = [Turn("buyer", "在吗", "2024-05-01T10:00:00+08:00"), Turn("buyer", "我要了", "2024-05-01T10:05:00+08:00")]
    noisy, plain = decide([ConversationInput("a", "b", "s", turns, ordered=False),
                           ConversationInput("a", "b", "s", clean, ordered=False)], flag_scorer, policy)
    assert noisy.purchase_score == plain.purchase_score and noisy.last_message_at == plain.last_message_at


def test_a_gbk_line_in_a_utf8_export_is_read_not_lost(tmp_path, inputs, flag_bundle_dir, flag_config):
    """Exports stitched together from two Excel versions mix encodings: each line is decoded on its own."""
    _, orders = inputs
    extra = "c30,b30,s5,food,buyer,便宜点我就买了 能便宜点吗,2024-05-01T10:00:00+08:00\n"
    chats = tmp_path / "chats.csv"
    chats.write_bytes(flat_rows().to_csv(index=False).encode("utf-8") + extra.encode("gbk"))
    out = tmp_path / "nudges.csv"
    summary = _run(chats, out, orders, flag_bundle_dir, flag_config())
    assert summary["rows"]["rejected"] == 0 and summary["rows"]["used"] == 29
    assert _flagged(out)["c30"]["evidence"] == "便宜点我就买了 能便宜点吗"


def test_implausible_flagged_share_is_a_warning_in_the_summary(tmp_path, inputs, flag_bundle_dir, flag_config):
    """flag.share_alert: 6 of 9 lost shoppers flagged is far above the field's ~20%: the summary says so
    (and only when there are enough lost shoppers to judge)."""
    chats, orders = inputs
    quiet = _run(chats, tmp_path / "a.csv", orders, flag_bundle_dir, flag_config())
    assert quiet["warnings"] == []  # 9 lost shoppers: below the default min_lost of 200
    alert = {"expected": 0.2, "factor": 2.0, "min_lost": 5}
    loud = _run(chats, tmp_path / "b.csv", orders, flag_bundle_dir, flag_config(share_alert=alert))
    assert len(loud["warnings"]) == 1 and "66.7% of 9 lost shoppers, above the expected range 10%-40%" in loud["warnings"][0]
    assert loud["flagged"] == quiet["flagged"]  # a warning, not a different decision
    off = _run(chats, tmp_path / "c.csv", orders, flag_bundle_dir, flag_config(share_alert={**alert, "expected": None}))
    assert off["warnings"] == []


def test_a_bad_first_jsonl_line_does_not_decide_the_format(tmp_path, inputs, flag_bundle_dir, flag_config):
    """main guessed the JSONL layout from line 1: one broken first line failed the whole run."""
    _, orders = inputs
    good = write_conversation_jsonl(tmp_path / "good.jsonl")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"conversation_id": "c0", "messages": [\n' + good.read_text(encoding="utf-8"), encoding="utf-8")
    expected = _run(good, tmp_path / "a.csv", orders, flag_bundle_dir, flag_config())
    summary = _run(broken, tmp_path / "b.csv", orders, flag_bundle_dir, flag_config())
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert summary["rows"]["rejected"] == expected["rows"]["rejected"] + 1 and summary["rows"]["balanced"]
    # nor does a first conversation record without its messages (the file was then read as flat messages
    # and the run failed on missing columns)
    headless = tmp_path / "headless.jsonl"
    headless.write_text('{"conversation_id": "c0", "buyer_id": "b0", "shop_id": "s1"}\n' + good.read_text(encoding="utf-8"), encoding="utf-8")
    summary = _run(headless, tmp_path / "c.csv", orders, flag_bundle_dir, flag_config())
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "c.csv").read_bytes()
    rejected = pd.read_csv(tmp_path / "c.csv.rejected.csv", dtype=str, encoding="utf-8-sig")
    assert "messages must be a non-empty list" in set(rejected["reason"]) and summary["rows"]["balanced"]


def test_a_header_only_orders_file_is_a_warning(tmp_path, inputs, flag_bundle_dir, flag_config):
    """main flagged every shopper as lost without a word when the orders export was empty."""
    chats, _ = inputs
    empty = tmp_path / "orders.csv"
    empty.write_text("order_id,buyer_id,shop_id,paid_at\n", encoding="utf-8")
    summary = _run(chats, tmp_path / "out.csv", empty, flag_bundle_dir, flag_config())
    assert any("no usable order" in warning and "every shopper counts as lost" in warning for warning in summary["warnings"])


def test_a_worker_exits_when_its_parent_is_killed(tmp_path):
    """After kill -9 of the job, its shard workers must not live on (main left 2 x 410 MB behind)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import os, sys, time, multiprocessing as mp\n"
        "from pipeline.jobs.flag.shards import _die_with_parent\n"
        "def child(path):\n"
        "    _die_with_parent(os.getppid(), interval_s=0.1)\n"
        "    open(path, 'w').write(str(os.getpid()))\n"
        "    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    p = mp.get_context('spawn').Process(target=child, args=(sys.argv[1],)); p.start(); time.sleep(60)\n"
    )
    pid_file = tmp_path / "child.pid"
    (tmp_path / "job.py").write_text(script, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    parent = subprocess.Popen([sys.executable, str(tmp_path / "job.py"), str(pid_file)], env=env)
    try:
        deadline = time.monotonic() + 180  # the spawned child imports pipeline.jobs.flag first: 30 s was too short on a loaded 2-core machine
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pid_file.exists() and pid_file.read_text(), "the spawned worker never started"
        child = int(pid_file.read_text())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            with open(f"/proc/{child}/stat") as stat:  # a zombie (reaped by init later) counts as gone
                if stat.read().split()[2] == "Z":
                    break
            time.sleep(0.1)
        else:
            os.kill(child, signal.SIGKILL)
            pytest.fail("the worker outlived its killed parent")
    finally:
        parent.kill()


def test_checkpoints_keep_no_raw_phone_or_order_number(tmp_path, flag_bundle_dir, flag_config):
    """A crashed run leaves its checkpoints for the resume: main kept raw buyer text (phones) in them."""
    import pyarrow.parquet as pq

    frame = flat_rows()
    frame.loc[0, "text"] = "我要了 电话13812345678 订单号123456789012345678"
    chats = write_csv(frame, tmp_path / "chats.csv")
    orders = write_orders(tmp_path / "orders.csv")
    work = tmp_path / "work"
    expected = _run(chats, tmp_path / "a.csv", orders, flag_bundle_dir, flag_config())
    _run(chats, tmp_path / "b.csv", orders, flag_bundle_dir, flag_config(keep_work_dir=True), work_dir=work)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    shards = list(work.rglob("partition/shard-*.parquet"))
    assert shards and expected["flagged"] >= 1
    for path in shards:
        texts = " ".join(pq.read_table(path).column("text").to_pylist())
        assert "13812345678" not in texts and "123456789012345678" not in texts


CHINESE_CHAT_HEADERS = {"conversation_id": "会话ID", "buyer_id": "买家昵称", "shop_id": "店铺", "category": "类目",
                        "role": "发送方", "text": "消息内容", "sent_at": "发送时间"}


def test_a_gbk_export_with_chinese_headers_gives_the_same_nudge_list(tmp_path, inputs, flag_bundle_dir, flag_config):
    """A back-office export (GBK, Chinese headers, Chinese dates, orders with 订单编号/付款时间) is read
    through the config's header aliases and flags exactly what the canonical file flags."""
    chats, orders = inputs
    reference = tmp_path / "reference.csv"
    _run(chats, reference, orders, flag_bundle_dir, flag_config())
    frame = flat_rows()
    frame["sent_at"] = pd.to_datetime(frame["sent_at"]).map(lambda t: f"{t.year}年{t.month}月{t.day}日 {t:%H:%M:%S}")
    shop_chats = write_csv(frame.rename(columns=CHINESE_CHAT_HEADERS), tmp_path / "聊天记录.csv", "gbk")
    shop_orders = tmp_path / "订单.csv"
    pd.read_csv(orders, dtype=str).rename(columns={"order_id": "订单编号", "buyer_id": "买家昵称", "shop_id": "店铺", "paid_at": "付款时间"}).to_csv(
        shop_orders, index=False, encoding="gbk")
    out = tmp_path / "nudges.csv"
    summary = _run(shop_chats, out, shop_orders, flag_bundle_dir, flag_config())
    assert summary["rows"]["rejected"] == 0
    assert out.read_bytes() == reference.read_bytes()


def test_unknown_headers_fail_before_the_model_is_loaded_and_columns_maps_them(tmp_path, inputs, flag_bundle_dir, flag_config):
    _, orders = inputs
    chats = write_csv(flat_rows().rename(columns={"text": "留言"}), tmp_path / "chats.csv")
    # no such model: the header check must come first, naming the header and the fix
    with pytest.raises(FlagError, match=r"missing column\(s\) \['text'\].*--columns"):
        run_flag(chats, tmp_path / "o.csv", orders, str(tmp_path / "no-model"), None, flag_config(), progress=False)
    from pipeline.config import load_config

    mapped = load_config(overrides={"paths.data": "unused.csv", "flag.workers": 1, "columns.map": "留言=text"})
    summary = _run(chats, tmp_path / "o.csv", orders, flag_bundle_dir, mapped)
    assert summary["rows"]["rejected"] == 0 and summary["flagged"] >= 1


@pytest.mark.parametrize(
    "which, content, reason",
    [
        ("orders", "gzip", "gzip-compressed data"),
        ("chats", "gzip", "gzip-compressed data"),
        ("chats", "noise", "binary data"),
    ],
)
def test_a_file_that_is_not_a_text_table_is_one_clear_line(tmp_path, inputs, which, content, reason):
    """main: a gzipped orders export named .csv ended in a `_csv.Error` traceback (exit 1), random bytes
    in a "missing columns" message that echoed them. Now one line, exit 2, before any model is resolved."""
    import gzip
    import random

    from typer.testing import CliRunner

    from pipeline.cli import app

    paths = dict(zip(("chats", "orders"), inputs, strict=True))
    plain = paths[which].read_bytes()
    data = {
        "gzip": gzip.compress(plain),
        "noise": random.Random(3).randbytes(3000),
    }[content]
    paths[which] = tmp_path / f"{which}.csv"
    paths[which].write_bytes(data)
    result = CliRunner().invoke(
        app, ["flag", "--chats", str(paths["chats"]), "--orders", str(paths["orders"]), "--out", str(tmp_path / "o.csv"),
              "--model", str(tmp_path / "no-model")]
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{which}.csv" in lines[0] and reason in lines[0], result.output
    assert "Traceback" not in result.output and "no-model" not in result.output


@pytest.mark.parametrize("which", ["chats", "orders"])
def test_a_utf16_export_gives_the_nudge_list_of_its_utf8_copy(tmp_path, inputs, flag_bundle_dir, flag_config, which):
    """Excel's and Windows tools' "Unicode text" is UTF-16 with a byte-order mark: main refused it."""
    paths = dict(zip(("chats", "orders"), inputs, strict=True))
    expected = _run(paths["chats"], tmp_path / "utf8.csv", paths["orders"], flag_bundle_dir, flag_config())
    converted = tmp_path / f"{which}-utf16.csv"
    converted.write_bytes(paths[which].read_bytes().decode("utf-8-sig").encode("utf-16"))
    paths[which] = converted
    summary = _run(paths["chats"], tmp_path / "utf16.csv", paths["orders"], flag_bundle_dir, flag_config())
    assert (tmp_path / "utf16.csv").read_bytes() == (tmp_path / "utf8.csv").read_bytes()
    assert summary["rows"] == {**expected["rows"], "rejected_file": summary["rows"]["rejected_file"]} and summary["flagged"] >= 1


def test_a_duplicated_conversation_record_is_quarantined_not_merged(tmp_path, inputs, flag_bundle_dir, flag_config):
    """main merged repeated conversation records silently (their turns doubled); the repeat is now a
    rejected row naming the first record, and the nudge list is the one of the file without repeats."""
    _, orders = inputs
    good = write_conversation_jsonl(tmp_path / "good.jsonl")
    lines = good.read_text(encoding="utf-8").splitlines(keepends=True)
    doubled = tmp_path / "doubled.jsonl"
    doubled.write_text("".join(lines + lines[:3]), encoding="utf-8")
    expected = _run(good, tmp_path / "a.csv", orders, flag_bundle_dir, flag_config())
    summary = _run(doubled, tmp_path / "b.csv", orders, flag_bundle_dir, flag_config())
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert summary["rows"]["rejected"] == expected["rows"]["rejected"] + 3 and summary["rows"]["balanced"]
    rejected = pd.read_csv(tmp_path / "b.csv.rejected.csv", dtype=str, encoding="utf-8-sig")
    first_id = json.loads(lines[0])["conversation_id"]
    assert rejected["reason"].str.contains(f"duplicate conversation '{first_id}' (first record at line 1)", regex=False).any()


def test_an_excel_export_in_and_an_excel_nudge_list_out(tmp_path, inputs, flag_bundle_dir, flag_config):
    """The nudge list from an .xlsx chat export with Chinese headers, written as .xlsx, holds the rows of
    the CSV run (a CRM or 千牛 imports either)."""
    chats, orders = inputs
    reference = tmp_path / "reference.csv"
    _run(chats, reference, orders, flag_bundle_dir, flag_config())
    export = tmp_path / "聊天记录.xlsx"
    flat_rows().rename(columns=CHINESE_CHAT_HEADERS).to_excel(export, index=False)
    out = tmp_path / "nudges.xlsx"
    summary = _run(export, out, orders, flag_bundle_dir, flag_config())
    assert summary["rows"]["rejected"] == 0
    expected = pd.read_csv(reference, dtype=str, keep_default_na=False)
    got = pd.read_excel(out, dtype=str).fillna("")
    assert got["conversation_id"].tolist() == expected["conversation_id"].tolist()
    assert got["nudge_text"].tolist() == expected["nudge_text"].tolist()


def test_a_kill_while_publishing_never_leaves_a_summary_of_other_files(tmp_path, inputs, monkeypatch, flag_bundle_dir, flag_config):
    """main could leave a new nudge list beside the previous run's summary. The new files are written
    whole beside the old set, the summary is removed before they replace the old and written last with
    their digests: an interruption while writing leaves the previous set as it was."""
    chats, orders = inputs
    out = tmp_path / "nudges.csv"
    _run(chats, out, orders, flag_bundle_dir, flag_config())
    assert merge_module.output_set_problems(out) == []
    previous = {p.name: p.read_bytes() for p in tmp_path.glob("nudges.csv*")}
    old_summary = json.loads(out.with_name("nudges.csv.summary.json").read_text(encoding="utf-8"))
    assert set(old_summary["files_sha256"]) == {"nudges.csv", "nudges.csv.rejected.csv"}

    changed = write_csv(flat_rows().iloc[:-3], tmp_path / "chats2.csv")
    real_write = merge_module.write_table_atomic

    def killed_at_the_rejected_file(frame, path, *args, **kwargs):
        if ".rejected.csv" in str(path):
            raise KeyboardInterrupt("killed while publishing")
        return real_write(frame, path, *args, **kwargs)

    monkeypatch.setattr(merge_module, "write_table_atomic", killed_at_the_rejected_file)
    with pytest.raises(KeyboardInterrupt):
        _run(changed, out, orders, flag_bundle_dir, flag_config())
    assert merge_module.output_set_problems(out) == []  # main: the summary was gone, the set torn
    assert {p.name: p.read_bytes() for p in tmp_path.glob("nudges.csv*")} == previous
    assert not [p.name for p in tmp_path.glob(".nudges.csv.*") if p.is_file()]  # no staged file left
    monkeypatch.setattr(merge_module, "write_table_atomic", real_write)
    _run(changed, out, orders, flag_bundle_dir, flag_config())
    assert merge_module.output_set_problems(out) == []
    out.write_text(out.read_text(encoding="utf-8-sig") + "x\n", encoding="utf-8")
    assert merge_module.output_set_problems(out) == ["nudges.csv is not the file nudges.csv.summary.json describes"]


def test_candidates_whose_window_outlasts_the_orders_file_are_counted_and_warned(tmp_path, inputs, flag_bundle_dir, flag_config):
    """A buyer whose window is not over in the orders file has not paid *so far*: right for a quick
    催拍, premature for a final lost-shopper list; the summary says how many and why."""
    chats, orders = inputs
    normal = _run(chats, tmp_path / "a.csv", orders, flag_bundle_dir, flag_config())
    assert normal["candidates_before_window_end"] == 0 and not any("not paid so far" in w for w in normal["warnings"])
    long = _run(chats, tmp_path / "b.csv", orders, flag_bundle_dir, flag_config(window_hours=24 * 365))
    assert long["candidates_before_window_end"] >= long["flagged"] >= 1
    assert any("have not paid so far" in w for w in long["warnings"])


# The headers of an Excel "Unicode Text" export of a shop's chats (columns.aliases reads each of them).
UNICODE_TEXT_HEADERS = {"conversation_id": "会话ID", "buyer_id": "买家昵称", "shop_id": "店铺", "category": "类目",
                        "role": "角色", "text": "内容", "sent_at": "时间"}


def test_a_unicode_text_export_gives_the_nudge_list_written_in_gb18030_on_request(tmp_path, inputs, flag_bundle_dir, flag_config):
    """Excel's "Save as Unicode Text" (UTF-16 LE with its BOM, TAB-separated, .txt) with a row of too many
    fields: the row is quarantined with its record number, the others flag what the CSV flags; with
    --encoding gb18030 the nudge list and the rejected rows are GB18030 (not UTF-8) and read back equal."""
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.data.tables import read_table

    chats, orders = inputs
    reference = tmp_path / "reference.csv"
    _run(chats, reference, orders, flag_bundle_dir, flag_config())
    lines = flat_rows().rename(columns=UNICODE_TEXT_HEADERS).to_csv(sep="\t", index=False, lineterminator="\r\n").splitlines(keepends=True)
    bad = "c20\tb20\ts1\tfood\tbuyer\t我要了\t多一格\t2024-05-01T10:00:00+08:00\r\n"
    export = tmp_path / "聊天记录.txt"
    export.write_bytes(b"\xff\xfe" + "".join([*lines[:4], bad, *lines[4:]]).encode("utf-16-le"))
    config = tmp_path / "one-worker.yaml"
    config.write_text("flag: {workers: 1}\n", encoding="utf-8")
    out = tmp_path / "nudges.csv"
    result = CliRunner().invoke(app, ["flag", "--chats", str(export), "--orders", str(orders), "--out", str(out), "--model", str(flag_bundle_dir),
                                      "--config", str(config), "--encoding", "gb18030", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(out.with_name("nudges.csv.summary.json").read_text(encoding="utf-8"))
    assert summary["rows"] == {**summary["rows"], "in": 29, "used": 28, "rejected": 1, "balanced": True}
    data = out.read_bytes()
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    assert data.decode("gb18030") == reference.read_bytes().decode("utf-8-sig")
    assert read_table(out)[0].equals(read_table(reference)[0])
    rejected_bytes = out.with_name("nudges.csv.rejected.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        rejected_bytes.decode("utf-8")
    rejected, _ = read_table(out.with_name("nudges.csv.rejected.csv"))
    assert rejected[["row", "reason"]].values.tolist() == [["4", "expected 7 fields, found 8"]]
    assert rejected["raw"].tolist() == [bad.rstrip("\r\n")]
