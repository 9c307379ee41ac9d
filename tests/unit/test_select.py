"""The labelling queue (`buyer-intent select`, pipeline/jobs/select.py): n distinct messages, every guessed
intent, the uncertain ones first, one per cluster of near-duplicates, buyer rows only, a BOM CSV with
empty label columns, and no buyer text in the logs."""

from __future__ import annotations

import codecs
import logging

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.jobs.select import (
    QUEUE_COLUMNS,
    SelectError,
    choose,
    dedup_key,
    select_file,
    select_messages,
    uncertainty,
    write_queue,
)
from pipeline.text import normalize

LABELS = ["greeting", "stock", "return_refund"]


class FakePredictor:
    """Probabilities looked up by text (unknown texts: a confident greeting); the interface of Predictor
    that select uses."""

    has_purchase = True

    def __init__(self, proba: dict[str, list[float]]):
        self.labels = LABELS
        self.proba = proba

    def predict_arrays(self, texts, top_k=0):
        proba = np.array([self.proba.get(t, [0.9, 0.05, 0.05]) for t in texts], dtype=float)
        best = proba.argmax(axis=1)
        order = np.argsort(-proba, axis=1)[:, :top_k]
        return {
            "intent": np.asarray(self.labels, dtype=object)[best],
            "intent_confidence": proba.max(axis=1),
            "fallback": np.zeros(len(texts), dtype=bool),
            "purchase_intent": np.zeros(len(texts), dtype=np.int8),
            "purchase_score": np.full(len(texts), 0.1),
            "top": [[(self.labels[j], float(proba[i, j])) for j in order[i]] for i in range(len(texts))],
        }


# Uncertainty by margin: 退货-messages 0.1, 有货 0.2 and 0.3, greetings confident.
PROBA = {
    "这个能退货吗还是只能换": [0.1, 0.45, 0.45],
    "这个能退货吗还是只能换呢": [0.1, 0.45, 0.45],  # a near-duplicate of the one above
    "这个能退货吗还是只能换!!": [0.1, 0.45, 0.45],  # the same message (punctuation only)
    "黑色的还有货吗": [0.1, 0.5, 0.4],
    "白色明天能到货吗还是要等": [0.05, 0.55, 0.4],
    "在吗": [0.95, 0.03, 0.02],
    "你好 亲": [0.9, 0.05, 0.05],
    "有人吗有人吗": [0.85, 0.1, 0.05],
}


def test_uncertainty_margin_and_entropy():
    proba = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    assert np.allclose(uncertainty(proba, "margin"), [1.0, 0.0, 1.0])
    assert np.allclose(uncertainty(proba, "entropy"), [np.log(2) / np.log(3), 0.0, 1.0])
    with pytest.raises(SelectError):
        uncertainty(proba, "random")


def test_dedup_key_ignores_spaces_punctuation_and_keeps_placeholders():
    assert dedup_key(normalize("有货吗?")) == dedup_key(normalize("有货吗 ？ ")) == "有货吗"
    assert dedup_key(normalize("[订单x]")) != dedup_key(normalize("[电话x]"))
    assert dedup_key(normalize("???")) == normalize("???")  # nothing left: the text itself


def test_returns_n_distinct_messages_most_uncertain_first():
    queue = select_messages(FakePredictor(PROBA), list(PROBA), 3, similarity=2.0)  # near-duplicate check off
    assert len(queue) == 3
    assert queue["text"].is_unique
    # Coverage takes the least sure of each guessed intent; no exact duplicate (punctuation) is queued twice.
    assert "在吗" not in set(queue["text"]) and "你好 亲" not in set(queue["text"])
    assert "有人吗有人吗" in set(queue["text"])  # the least sure greeting covers its intent
    assert not {"这个能退货吗还是只能换", "这个能退货吗还是只能换!!"} <= set(queue["text"])


def test_prefers_uncertain_over_confident():
    texts = ["黑色的还有货吗", "白色明天能到货吗", "这款下周补货吗", "大码还有没有", "现货还是预售啊"]
    margins = [0.8, 0.05, 0.6, 0.1, 0.3]  # stock guessed for all, by these margins over return_refund
    proba = {t: [0.0, 0.5 + m / 2, 0.5 - m / 2] for t, m in zip(texts, margins, strict=True)}
    queue = select_messages(FakePredictor(proba), texts, 2)
    assert queue["text"].tolist() == ["白色明天能到货吗", "大码还有没有"]
    assert np.allclose(queue["margin"], [0.05, 0.1])
    # With confident greetings in the input, a greeting is queued once (coverage), the rest stay uncertain ones.
    greetings = {f"在吗{c}": [0.97, 0.02, 0.01] for c in "甲乙丙丁"}
    queue = select_messages(FakePredictor(proba | greetings), [*greetings, *texts], 3)
    assert (queue["guess_intent"] == "greeting").sum() == 1
    assert set(queue["text"]) - set(greetings) == {"白色明天能到货吗", "大码还有没有"}


def test_every_guessed_intent_is_represented_when_n_allows():
    texts = [f"这个能退货吗第{i}次问" for i in range(10)] + ["黑色的还有货吗", "在吗"]
    proba = {t: [0.1, 0.45, 0.45 - 0.01 * i] for i, t in enumerate(texts[:10])}  # all very uncertain, guessed stock
    proba |= {"黑色的还有货吗": [0.05, 0.05, 0.9], "在吗": [0.96, 0.02, 0.02]}  # confident: return_refund, greeting
    queue = select_messages(FakePredictor(proba), texts, 4, similarity=2.0)
    assert set(queue["guess_intent"]) == set(LABELS)
    only_two = select_messages(FakePredictor(proba), texts, 2, similarity=2.0)
    assert len(only_two) == 2 and only_two["guess_intent"].nunique() == 2


def test_near_duplicates_are_skipped_while_other_messages_remain():
    queue = select_messages(FakePredictor(PROBA), list(PROBA), 4)
    chosen = set(queue["text"])
    assert len(chosen & {"这个能退货吗还是只能换", "这个能退货吗还是只能换呢", "这个能退货吗还是只能换!!"}) == 1
    assert {"黑色的还有货吗", "白色明天能到货吗还是要等"} <= chosen  # distinct messages, less uncertain, come next
    seen = dict(zip(queue["text"], queue["seen"], strict=True))
    assert seen.get("这个能退货吗还是只能换", 2) == 2  # the punctuation variant is the same message


def test_near_duplicates_fill_the_queue_when_nothing_else_is_left():
    texts = ["这个能退货吗还是只能换", "这个能退货吗还是只能换呢", "在吗"]
    queue = select_messages(FakePredictor(PROBA), texts, 3)
    assert len(queue) == 3 and queue["text"].is_unique


def test_choose_is_deterministic_and_bounded():
    keys = ["甲乙丙丁", "甲乙丙丁戊", "子丑寅卯", "辰巳午未"]
    guesses = ["a", "a", "b", "b"]
    scores = np.array([0.9, 0.8, 0.9, 0.1])
    assert choose(keys, guesses, scores, 0) == []
    assert choose(keys, guesses, scores, 10) == choose(keys, guesses, scores, 10)
    assert sorted(choose(keys, guesses, scores, 10)) == [0, 1, 2, 3]
    assert choose(keys, guesses, scores, 3) == [0, 2, 3]  # 1 is a near-duplicate of 0


def test_empty_messages_are_not_candidates():
    queue = select_messages(FakePredictor(PROBA), ["", "   ", "在吗"], 3)
    assert queue["text"].tolist() == ["在吗"]


def test_queue_is_a_bom_csv_with_empty_label_columns(tmp_path):
    queue = select_messages(FakePredictor(PROBA), list(PROBA), 4)
    path = write_queue(queue, tmp_path / "queue.csv")
    raw = path.read_bytes()
    assert raw.startswith(codecs.BOM_UTF8)
    back = pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    assert list(back.columns) == list(QUEUE_COLUMNS)
    assert (back["intent"] == "").all() and (back["purchase_intent"] == "").all()
    assert set(back["text"]) == set(queue["text"])  # the buyer's text as written


def test_other_output_types_are_refused(tmp_path):
    queue = select_messages(FakePredictor(PROBA), list(PROBA), 2)
    with pytest.raises(SelectError):
        write_queue(queue, tmp_path / "queue.parquet")
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        with pytest.raises(SelectError, match="openpyxl"):
            write_queue(queue, tmp_path / "queue.xlsx")


# ---------------------------------------------------------------------------------------- the whole command
TINY = {
    "greeting": ["在吗", "你好", "亲在吗", "有人吗", "在不在", "你好亲", "在吗亲", "哈喽在吗"],
    "stock": ["有货吗", "黑色有货吗", "还有货吗", "什么时候补货", "白色还有吗", "有现货吗", "缺货吗", "这款有货吗"],
    "return_refund": ["我要退货", "怎么退货", "能退款吗", "退货运费谁出", "七天无理由吗", "申请退款了", "退货地址", "退款到哪了"],
}


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A real model bundle trained in a few seconds on a tiny table (not the corpus)."""
    from pipeline.bundle import save_bundle
    from pipeline.config import load_config
    from pipeline.data.labelled import LabelledData, validate_labelled
    from pipeline.training.train import train

    rows = [(text + suffix, intent, "1" if intent == "stock" else "0", f"{intent}-{i}-{j}")
            for intent, texts in TINY.items() for i, text in enumerate(texts) for j, suffix in enumerate(("", "呢", "啊"))]
    frame = pd.DataFrame(rows, columns=["text", "intent", "purchase_intent", "group"])
    valid, _ = validate_labelled(frame, "tiny")
    config = load_config(overrides={"paths.conversations": None, "paths.orders": None, "n_jobs": 1,
                                    "intent_model.calibration_folds": 2, "purchase_model.calibration_folds": 2, "features.min_df": 1})
    result = train(config, LabelledData(valid, pd.DataFrame(), "tiny"))
    return save_bundle(result.bundle, tmp_path_factory.mktemp("tiny-model") / "bundle", result.user_dict_text)


def _chat_export(path):
    rows = [
        ("c1", "买家", "在吗"),
        ("c1", "客服", "亲在的，客服小美为您服务"),
        ("c1", "买家", "黑色那款还有货吗 我想买两件"),
        ("c2", "买家", "我要退货 怎么寄回去"),
        ("c2", "客服", "亲，请在订单页申请退货退款哦"),
        ("c2", "买家", "我要退货，怎么寄回去?"),
        ("c3", "买家", "衣服有点大能换小一码吗"),
        ("c3", "机器人", "您好，请问有什么可以帮您"),
    ]
    # The shop's own headers (会话ID, 发送方, 消息内容) are read through columns.aliases.
    pd.DataFrame(rows, columns=["会话ID", "发送方", "消息内容"]).to_csv(path, index=False, encoding="utf-8-sig")
    return rows


def test_select_file_queues_buyer_rows_only(tiny_model_dir, tmp_path, caplog):
    from pipeline.config import load_config

    chats = tmp_path / "chats.csv"
    rows = _chat_export(chats)
    out = tmp_path / "queue.csv"
    with caplog.at_level(logging.DEBUG):
        summary = select_file(chats, out, 10, str(tiny_model_dir), load_config())
    queue = pd.read_csv(out, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    buyer_texts = {text for _, role, text in rows if role == "买家"}
    assert set(queue["text"]) <= buyer_texts
    assert len(queue) == 4  # five buyer rows, two of them the same message
    assert summary["rows_not_buyer"] == 3 and summary["buyer_messages"] == 5 and summary["queued"] == 4
    assert (queue["intent"] == "").all() and (queue["purchase_intent"] == "").all()
    assert set(queue["guess_intent"]) <= set(TINY)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert not any(text in logged for _, _, text in rows)  # buyer (and agent) text is never logged


def test_the_queue_is_masked_unless_the_config_says_otherwise(tiny_model_dir, tmp_path):
    """Labellers may be outside the shop: by default (select.mask_pii) they see no phone, order number or
    address; `--config` with select.mask_pii false keeps the buyer's text as written."""
    from pipeline.config import load_config

    chats = tmp_path / "chats.csv"
    phone, order = "13812345678", "318204957263118"
    rows = [("c1", "买家", f"电话{phone} 发货了吗"), ("c2", "买家", f"订单{order}怎么还没到"), ("c3", "买家", "有货吗")]
    pd.DataFrame(rows, columns=["会话ID", "发送方", "消息内容"]).to_csv(chats, index=False, encoding="utf-8-sig")
    masked_out, raw_out = tmp_path / "masked.csv", tmp_path / "raw.csv"
    summary = select_file(chats, masked_out, 3, str(tiny_model_dir), load_config())
    masked = masked_out.read_text(encoding="utf-8-sig")
    assert summary["masked"] and phone not in masked and order not in masked
    assert "[电话x]" in masked and "[订单x]" in masked and "有货吗" in masked
    summary = select_file(chats, raw_out, 3, str(tiny_model_dir), load_config(overrides={"select.mask_pii": False}))
    raw = raw_out.read_text(encoding="utf-8-sig")
    assert not summary["masked"] and phone in raw and order in raw


def test_select_command(tiny_model_dir, tmp_path):
    from pipeline.cli import app

    chats = tmp_path / "chats.csv"
    _chat_export(chats)
    out = tmp_path / "queue.csv"
    result = CliRunner().invoke(app, ["select", "--input", str(chats), "--n", "2", "--out", str(out), "--model", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(codecs.BOM_UTF8)
    assert len(pd.read_csv(out, encoding="utf-8-sig")) == 2
    bad = CliRunner().invoke(app, ["select", "--input", str(chats), "--out", str(tmp_path / "q.csv"), "--strategy", "coin",
                                   "--model", str(tiny_model_dir)])
    assert bad.exit_code == 2 and "strategy" in bad.output
    missing = tmp_path / "no_text.csv"
    pd.DataFrame({"foo": ["x"]}).to_csv(missing, index=False)
    bad = CliRunner().invoke(app, ["select", "--input", str(missing), "--out", str(tmp_path / "q.csv"), "--model", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "missing column" in bad.output  # headers checked before the model is resolved


def test_select_reads_a_unicode_text_export_and_writes_a_gb18030_queue_on_request(tiny_model_dir, tmp_path):
    """Excel's "Unicode Text" (UTF-16 with its BOM, TAB-separated, .txt) in; with --encoding gb18030 the
    queue and its rejected rows are GB18030 for an old Excel, and read back as they were written."""
    from pipeline.cli import app
    from pipeline.data.tables import read_table

    rows = [("c1", "买家", "在吗"), ("c1", "客服", "亲在的"), ("c2", "买家", "有货吗 𠮷"), ("c3", "买家", "能便宜点吗")]
    lines = ["会话ID\t发送方\t消息内容", *("\t".join(row) for row in rows[:2]), "c9\t买家\t多\t一格", *("\t".join(row) for row in rows[2:])]
    export = tmp_path / "聊天记录.txt"
    export.write_bytes(codecs.BOM_UTF16_LE + ("\r\n".join(lines) + "\r\n").encode("utf-16-le"))
    out = tmp_path / "queue.csv"
    args = ["select", "--input", str(export), "--n", "3", "--out", str(out), "--model", str(tiny_model_dir)]
    result = CliRunner().invoke(app, [*args, "--encoding", "gb18030"])
    assert result.exit_code == 0, result.output
    for written in (out, tmp_path / "queue.csv.rejected.csv"):
        data = written.read_bytes()
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")
        data.decode("gb18030")
    queue, _ = read_table(out)
    assert sorted(queue["text"]) == sorted(["在吗", "有货吗 𠮷", "能便宜点吗"])
    rejected, _ = read_table(tmp_path / "queue.csv.rejected.csv")
    assert rejected[["row", "reason", "raw"]].values.tolist() == [["3", "expected 3 fields, found 4", "c9\t买家\t多\t一格"]]

    bad = CliRunner().invoke(app, [*args, "--encoding", "latin-1"])
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert bad.exit_code == 2 and len(lines) == 1 and "--encoding" in lines[0] and "gb18030" in lines[0], bad.output
