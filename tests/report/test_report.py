"""The offline evaluation report: files, self-containment, sections, PII masking, champion deltas."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.training.evaluate import intent_metrics, purchase_metrics
from pipeline.report import EVAL_SET_NOTE, threshold_promises, write_report
from pipeline.text import normalize
from pipeline.training.evaluate import headline_metrics

PHONE = "13812345678"
ORDER = "123456789012345678"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

ALWAYS = [
    "Headline metrics",
    "Change against the champion",
    "Test split vs evaluation sets",
    "Per-intent quality",
    "Confusion matrix",
    "Most frequent confusions",
    "Confidence and fallback",
    "Calibration",
    "Slices",
]
PURCHASE = "Purchase intent"
CONVERSATION = "Conversation-level purchase intent"
DETAILS = "Run details"

# text, true intent, predicted intent, confidence, purchase label, purchase score
ROWS = [
    ("你好在吗", "greeting", "greeting", 0.97, 0, 0.05),
    ("亲在吗", "greeting", "greeting", 0.95, 0, 0.04),
    ("hello 客服", "greeting", "greeting", 0.91, 0, 0.06),
    ("在不在", "greeting", "other", 0.55, 0, 0.03),
    ("哈喽", "greeting", "greeting", 0.88, 0, 0.02),
    (f"订单{ORDER}到哪了", "logistics", "logistics", 0.93, 0, 0.10),
    (f"我的单号{ORDER}怎么还没发货", "logistics", "greeting", 0.62, 0, 0.20),
    (f"打我电话{PHONE}，快递到哪了", "logistics", "greeting", 0.71, 0, 0.15),
    ("快递到哪了", "logistics", "logistics", 0.96, 0, 0.08),
    ("物流三天没动了", "logistics", "logistics", 0.90, 0, 0.09),
    ("发的什么快递", "logistics", "logistics", 0.86, 0, 0.12),
    ("多少钱能便宜点吗", "price_promo", "price_promo", 0.92, 1, 0.85),
    ("有优惠券吗", "price_promo", "price_promo", 0.89, 1, 0.74),
    (f"便宜20块我就拍，联系{PHONE}", "price_promo", "logistics", 0.66, 1, 0.91),
    ("满减怎么算", "price_promo", "price_promo", 0.81, 1, 0.60),
    ("能包邮吗", "price_promo", "logistics", 0.58, 1, 0.55),
    ("现在下单送什么", "price_promo", "price_promo", 0.94, 1, 0.88),
    ("<script>alert(1)</script> 优惠吗", "price_promo", "other", 0.52, 0, 0.30),
    ("嗯嗯", "other", "other", 0.70, 0, 0.05),
    ("随便问问", "other", "greeting", 0.64, 0, 0.07),
    ("abc", "other", "other", 0.60, 0, 0.03),
    ("哦", "other", "other", 0.75, 0, 0.02),
    ("好的吧", "other", "other", 0.83, 0, 0.05),
    ("想买两件", "price_promo", "price_promo", 0.79, 1, 0.95),
]
THRESHOLDS = {"fallback": 0.6, "purchase": 0.7}


def make_scored(with_purchase: bool = True) -> pd.DataFrame:
    frame = pd.DataFrame(ROWS, columns=["text", "intent", "pred_intent", "confidence", "purchase_intent", "purchase_score"])
    frame["normalized"] = frame["text"].map(normalize)
    frame["fallback"] = frame["confidence"] < THRESHOLDS["fallback"]
    frame["pred_purchase"] = (frame["purchase_score"] >= THRESHOLDS["purchase"]).astype(int)
    if not with_purchase:
        frame = frame.drop(columns=["purchase_intent"])
        frame["purchase_score"] = 0.0
        frame["pred_purchase"] = 0
    return frame


def make_metrics(scored: pd.DataFrame, with_purchase: bool = True) -> dict:
    part = {"intent": intent_metrics(scored["intent"], scored["pred_intent"], scored["confidence"], scored["fallback"])}
    if with_purchase:
        part["purchase"] = purchase_metrics(scored["purchase_intent"], scored["purchase_score"], THRESHOLDS["purchase"])
    return {"test": part, "val": json.loads(json.dumps(part))}


def make_conversations() -> tuple[pd.DataFrame, dict]:
    rng = np.random.default_rng(7)
    n = 40
    frame = pd.DataFrame(
        {
            "conversation_id": [f"c{i}" for i in range(n)],
            "category": rng.choice(["apparel", "beauty"], n),
            "stage": rng.choice(["pre_sale", "after_sale"], n),
            "scenario": rng.choice(["browse", "ready_to_buy"], n),
            "expressed_purchase_intent": np.tile([0, 1], n // 2),
        }
    )
    frame["purchase_score"] = np.clip(frame["expressed_purchase_intent"] * 0.5 + rng.random(n) * 0.5, 0, 1)
    frame["flag"] = frame["purchase_score"] >= 0.5
    y = frame["expressed_purchase_intent"]
    metrics = {
        "test": purchase_metrics(y, frame["purchase_score"], 0.5),
        "threshold": 0.5,
        "sizes": {"train": 100, "val": 30, "test": n},
        "test_max_message_baseline": {
            "average_precision": 0.61,
            "precision": 0.55,
            "recall": 0.4321,
            "f1": 0.5,
            "threshold": 0.8,
            "positive_rate": 0.5,
            "flagged_rate": 0.3,
            "n": n,
        },
    }
    return frame, metrics


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    scored = make_scored()
    metrics = make_metrics(scored)
    metrics["eval:real_chats"] = make_metrics(scored.iloc[:12].reset_index(drop=True))["test"]
    conversations, metrics["conversation"] = make_conversations()
    headline = headline_metrics(metrics)
    champion = dict(headline)
    champion["intent_accuracy"] = headline["intent_accuracy"] - 0.05  # this run is 0.05 better
    champion["intent_ece"] = headline["intent_ece"] - 0.02  # this run's calibration error is 0.02 higher: worse
    result = write_report(
        out,
        title="buyer-intent run 3f2a test",
        metrics=metrics,
        scored=scored,
        thresholds={**THRESHOLDS, "conversation": 0.5},
        headline=headline,
        champion_headline=champion,
        conversation_test=conversations,
        extra_sections={"run": "- run id: `3f2a`\n- model version: 7", "data fingerprints": '{"rows": 24}'},
    )
    return {
        "out": out,
        "result": result,
        "metrics": metrics,
        "headline": headline,
        "html": (out / "report.html").read_text(encoding="utf-8"),
        "md": (out / "report.md").read_text(encoding="utf-8"),
    }


def md_table(md: str, header: str) -> dict[str, list[str]]:
    """The Markdown table whose header row starts with `header`, as {first cell: cells}."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


def md_row(md: str, first_cell: str) -> list[str]:
    """The first Markdown table row whose first cell is `first_cell`."""
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row starting with {first_cell!r}")


def test_files_are_written_and_returned(full):
    out, result = full["out"], full["result"]
    assert result["html"] == out / "report.html" and result["html"].is_file()
    assert result["markdown"] == out / "report.md" and result["markdown"].is_file()
    assert result["metrics"] == out / "metrics.json" and result["metrics"].is_file()
    names = sorted(p.name for p in result["plots"])
    assert names == ["confidence_histogram.png", "confusion_matrix.png", "purchase_pr_curve.png", "reliability.png"]
    for path in result["plots"]:
        assert path.parent == out / "plots"
        assert path.read_bytes().startswith(PNG_MAGIC)
    assert not list(out.rglob("*.tmp")), "temporary files left behind"


def test_html_is_self_contained(full):
    html = full["html"]
    assert 'src="http' not in html and "src='http" not in html
    assert "<link" not in html and "<script" not in html and "@import" not in html and "url(" not in html
    assert html.count('src="data:image/png;base64,') == len(full["result"]["plots"])


def test_markdown_references_the_plot_files(full):
    referenced = re.findall(r"!\[[^\]]*\]\((plots/[^)]+)\)", full["md"])
    assert sorted(referenced) == sorted(f"plots/{p.name}" for p in full["result"]["plots"])
    assert all((full["out"] / ref).is_file() for ref in referenced)


@pytest.mark.parametrize("heading", [*ALWAYS, PURCHASE, CONVERSATION, DETAILS])
def test_every_section_heading_is_present(full, heading):
    assert re.search(rf"<h2>{re.escape(heading)}</h2>", full["html"]), heading
    assert re.search(rf"^## {re.escape(heading)}$", full["md"], re.MULTILINE), heading


def test_buyer_messages_are_masked_and_escaped(full):
    for text in (full["html"], full["md"]):
        assert PHONE not in text
        assert ORDER not in text
        assert "[电话x]" in text
        assert "[订单x]" in text
    assert "<script>alert" not in full["html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in full["html"]
    assert "<script>" not in full["md"]


def test_champion_delta_has_the_right_sign(full):
    headline = full["headline"]
    table = md_table(full["md"], "| metric | this run | champion | delta | verdict |")
    row = table["Intent accuracy"]
    assert row[1] == f"{headline['intent_accuracy']:.4f}"
    assert row[2] == f"{headline['intent_accuracy'] - 0.05:.4f}"
    assert row[3] == "**▲ +0.0500**" and row[4] == "**better**"
    ece = table["Calibration error (ECE)"]
    assert ece[3] == "**▲ +0.0200**" and ece[4] == "**worse**"  # a higher calibration error is worse
    assert table["Intent macro F1"][3:] == ["= 0.0000", "same"]
    assert len(table) == len(headline)
    assert "▲ +0.0500" in full["html"]


def test_metrics_json_round_trips(full):
    loaded = json.loads(full["result"]["metrics"].read_text(encoding="utf-8"))
    assert loaded == full["metrics"]


def test_eval_sets_and_conversations_are_reported(full):
    md = full["md"]
    assert EVAL_SET_NOTE in md and EVAL_SET_NOTE in full["html"]
    eval_table = md_table(md, "| metric | test | real_chats |")
    test_intent = full["metrics"]["test"]["intent"]
    eval_intent = full["metrics"]["eval:real_chats"]["intent"]
    assert eval_table["messages"][1:] == [str(test_intent["n"]), str(eval_intent["n"])]
    assert eval_table["Intent accuracy"][1:] == [f"{test_intent['accuracy']:.3f}", f"{eval_intent['accuracy']:.3f}"]
    conversation = md_table(md, "| metric | conversation model | max-message baseline |")
    test_conv = full["metrics"]["conversation"]["test"]
    assert conversation["recall"][1:3] == [f"{test_conv['recall']:.3f}", "0.432"]
    assert conversation["recall"][3] == f"**{test_conv['recall'] - 0.4321:+.3f}**"
    for column in ("scenario", "category", "stage"):
        assert f"### By {column}" in md
    assert "ready_to_buy" in md


def test_slices_use_evaluate_slices(full):
    md = full["md"]
    row = md_row(md, "has placeholder/number")
    scored = make_scored()
    mask = scored["text"].str.contains(r"\d")
    assert row[1] == str(int(mask.sum()))


def test_no_purchase_no_champion_and_nan_metrics(full, tmp_path):
    # Written over a copy of the full report: its purchase plot must not survive into this one.
    shutil.copytree(full["out"], tmp_path, dirs_exist_ok=True)
    assert (tmp_path / "plots" / "purchase_pr_curve.png").is_file()

    scored = make_scored(with_purchase=False)
    metrics = make_metrics(scored, with_purchase=False)
    metrics["val"]["intent"]["accepted_accuracy"] = float("nan")  # everything handed over on validation
    metrics["val"]["intent"]["n"] = np.int64(24)
    headline = headline_metrics(metrics)
    assert not any(key.startswith("purchase_") for key in headline)
    headline["intent_accepted_accuracy"] = float("nan")
    result = write_report(
        tmp_path,
        title="evaluation of models:/buyer-intent@champion on chats.csv",
        metrics=metrics,
        scored=scored,
        thresholds={"fallback": THRESHOLDS["fallback"]},
        headline=headline,
        top_confusions=2,
        examples_per_confusion=0,
    )
    html = result["html"].read_text(encoding="utf-8")
    md = result["markdown"].read_text(encoding="utf-8")
    assert "<title>evaluation of models:/buyer-intent@champion on chats.csv</title>" in html
    for heading in ALWAYS:
        assert f"<h2>{heading}</h2>" in html and f"## {heading}\n" in md
    for heading in (PURCHASE, CONVERSATION, DETAILS):
        assert f"<h2>{heading}</h2>" not in html and f"## {heading}\n" not in md
    assert "Purchase AP" not in md and "purchase score" not in html.lower()
    assert "No champion yet" in html and "No champion yet" in md
    assert sorted(p.name for p in result["plots"]) == ["confidence_histogram.png", "confusion_matrix.png", "reliability.png"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(p.name for p in result["plots"])
    assert PHONE not in html and ORDER not in md
    # NaN: shown as a dash, written to metrics.json as null; numpy numbers become plain JSON numbers.
    assert md_table(md, "| metric | value | meaning |")["Accepted accuracy"][1] == "—"
    loaded = json.loads(result["metrics"].read_text(encoding="utf-8"))
    assert loaded["val"]["intent"]["accepted_accuracy"] is None and loaded["val"]["intent"]["n"] == 24
    assert loaded["test"] == metrics["test"]
    # No example column when no examples are asked for; only the two most frequent pairs.
    confusions = md_table(md, "| # | true → predicted |")
    assert list(confusions) == ["1", "2"] and "example message" not in md


def test_matplotlib_is_not_imported_at_module_level():
    """No plotting side effects at import time: matplotlib is only imported inside the functions."""
    import pipeline.report

    tree = ast.parse(Path(pipeline.report.__file__).read_text(encoding="utf-8"))
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = [alias.name for node in top_level for alias in node.names] + [
        node.module or "" for node in top_level if isinstance(node, ast.ImportFrom)
    ]
    assert names and not any(name.split(".")[0] in ("matplotlib", "pylab") for name in names)


def test_per_intent_table_shows_the_metrics_passed_in(full):
    table = md_table(full["md"], "| intent | precision | recall | F1 |")
    per_intent = full["metrics"]["test"]["intent"]["per_intent"]
    assert set(table) == set(per_intent)
    for label, values in per_intent.items():
        assert table[label][1:5] == [f"{values['precision']:.3f}", f"{values['recall']:.3f}", f"{values['f1']:.3f}", str(values["support"])]


def test_group_precision_and_recall_match_sklearn(full):
    from sklearn.metrics import precision_score, recall_score

    conversations, _ = make_conversations()
    table = md_table(full["md"], "| category | conversations | true share | flagged share | precision | recall |")
    for category, part in conversations.groupby("category"):
        truth, flagged = part["expressed_purchase_intent"], part["flag"]
        assert table[category][4] == f"{precision_score(truth, flagged):.3f}"
        assert table[category][5] == f"{recall_score(truth, flagged):.3f}"


def test_hostile_text_outside_messages_is_escaped_and_tables_hold(tmp_path):
    """Title, extra sections and a message with Markdown table syntax: escaped in HTML, inert in Markdown."""
    scored = make_scored()
    scored.loc[3, "text"] = "在不在 | 不在 | **急** <img src=x onerror=alert(1)>"
    metrics = make_metrics(scored)
    result = write_report(
        tmp_path,
        title="<script>alert('title')</script>",
        metrics=metrics,
        scored=scored,
        thresholds=THRESHOLDS,
        headline=headline_metrics(metrics),
        extra_sections={"<b>run</b>": "```\n{\"a\": \"<i>x</i>\"}\n```", "Note": "run `abc` <script>x</script>"},
    )
    html = result["html"].read_text(encoding="utf-8")
    md = result["markdown"].read_text(encoding="utf-8")
    assert "<script" not in html and "<img src=x" not in html and "<b>run" not in html and "<i>x" not in html
    assert "&lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt;" in html
    assert "<pre>{&#34;a&#34;: &#34;&lt;i&gt;x&lt;/i&gt;&#34;}</pre>" in html  # the fenced block is code, without its fences
    assert "<code>abc</code>" in html
    assert "<script" not in md and "<img" not in md and "<b>run" not in md
    row = next(line for line in md.splitlines() if "在不在" in line)
    cells = re.split(r"(?<!\\)\|", row.strip().strip("|"))
    assert len(cells) == len(md_table(md, "| # | true → predicted |")["1"])  # the pipes in the message do not add columns
    assert r"在不在 \| 不在 \| \*\*急\*\*" in row


def test_no_figure_is_left_open_and_the_backend_is_untouched(full, tmp_path):
    import matplotlib

    backend = matplotlib.rcParams._get("backend")
    scored = make_scored()
    metrics = make_metrics(scored)
    write_report(tmp_path, title="t", metrics=metrics, scored=scored, thresholds=THRESHOLDS, headline=headline_metrics(metrics))
    assert matplotlib.rcParams._get("backend") == backend
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []


def test_a_report_without_labels_draws_no_purchase_curve_and_says_why(tmp_path):
    scored = make_scored()
    scored["purchase_intent"] = 0  # no purchase-intent message in the split
    metrics = make_metrics(scored)
    result = write_report(tmp_path, title="t", metrics=metrics, scored=scored, thresholds=THRESHOLDS, headline=headline_metrics(metrics))
    md = result["markdown"].read_text(encoding="utf-8")
    assert "No purchase-intent messages in the held-out test messages: no curve to draw." in md
    assert "purchase_pr_curve.png" not in [p.name for p in result["plots"]]


def test_the_test_split_per_source_sits_beside_the_evaluation_sets(tmp_path):
    # train --data corpus --data queue: the shop's labelled queue gets its own test column
    scored = make_scored()
    metrics = make_metrics(scored)
    metrics["test/queue"] = make_metrics(scored.iloc[:10].reset_index(drop=True))["test"]
    metrics["eval:real_chats"] = make_metrics(scored.iloc[:12].reset_index(drop=True))["test"]
    result = write_report(tmp_path, title="t", metrics=metrics, scored=scored, thresholds=THRESHOLDS, headline=headline_metrics(metrics))
    table = md_table(result["markdown"].read_text(encoding="utf-8"), "| metric | test | test/queue | real_chats |")
    assert table["messages"][1:] == [str(metrics["test"]["intent"]["n"]), "10", "12"]
    assert table["Intent accuracy"][2] == f"{metrics['test/queue']['intent']['accuracy']:.3f}"


def _section(md: str, title: str) -> str:
    """The Markdown of one `## title` section."""
    start = md.index(f"\n## {title}\n")
    end = md.find("\n## ", start + 1)
    return md[start : end if end != -1 else len(md)]


def test_an_evaluation_set_gets_the_test_splits_tables_under_its_own_name_and_an_error_file(tmp_path):
    scored = make_scored()
    real = scored.iloc[4:16].reset_index(drop=True)  # 12 messages with a phone and an order number among the mistakes
    metrics = make_metrics(scored)
    metrics["eval:real_chats"] = make_metrics(real)["test"]
    result = write_report(tmp_path, title="t", metrics=metrics, scored=scored, thresholds=THRESHOLDS,
                          headline=headline_metrics(metrics), eval_scored={"eval:real_chats": real})
    md = result["markdown"].read_text(encoding="utf-8")
    section = _section(md, "Evaluation set: real_chats")
    assert "[Evaluation set: real_chats](#evaluation-set-real_chats)" in md  # in the contents
    per_intent = md_table(section, "| intent | precision |")
    for label in ("logistics", "price_promo"):  # the set's own counts, not the test split's
        assert per_intent[label][4] == str(int((real["intent"] == label).sum()))
    assert f"{metrics['eval:real_chats']['intent']['macro_f1']:.3f}" in section
    assert "![Row-normalised confusion matrix](plots/eval-real_chats-confusion_matrix.png)" in section
    assert "![Reliability diagram](plots/eval-real_chats-reliability.png)" in section
    assert md_table(section, "| threshold | precision |")  # purchase intent at the chosen threshold
    names = {p.name for p in result["plots"]}
    assert {"confusion_matrix.png", "eval-real_chats-confusion_matrix.png", "eval-real_chats-reliability.png",
            "eval-real_chats-purchase_pr_curve.png"} <= names
    confusions = md_table(section, "| # | true → predicted |")
    assert confusions["1"][1] == "logistics → greeting"
    # the error files: every mistake of each set, masked, readable by Excel (BOM)
    files = {p.name: p for p in result["errors"]}
    assert set(files) == {"test.csv", "eval-real_chats.csv"}
    raw = files["eval-real_chats.csv"].read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and PHONE.encode() not in raw and ORDER.encode() not in raw
    errors = pd.read_csv(files["eval-real_chats.csv"], encoding="utf-8-sig")
    wrong = real[real["intent"] != real["pred_intent"]]
    assert len(errors) == len(wrong) and errors["confidence"].is_monotonic_decreasing
    assert sorted(errors["true_intent"]) == sorted(wrong["intent"])
    assert len(pd.read_csv(files["test.csv"], encoding="utf-8-sig")) == int((scored["intent"] != scored["pred_intent"]).sum())
    assert "eval-real_chats.csv" in section


def test_a_second_report_in_the_same_directory_removes_the_first_ones_set_files(tmp_path):
    scored = make_scored()
    metrics = make_metrics(scored)
    metrics["eval:real_chats"] = make_metrics(scored)["test"]
    write_report(tmp_path, title="t", metrics=metrics, scored=scored, thresholds=THRESHOLDS,
                 headline=headline_metrics(metrics), eval_scored={"eval:real_chats": scored})
    del metrics["eval:real_chats"]
    result = write_report(tmp_path, title="t", metrics=metrics, scored=scored, thresholds=THRESHOLDS, headline=headline_metrics(metrics))
    assert sorted(p.name for p in (tmp_path / "errors").iterdir()) == ["test.csv"]
    assert not list((tmp_path / "plots").glob("eval-*")) and len(result["plots"]) == len(list((tmp_path / "plots").iterdir()))


def test_variants_of_one_message_are_shown_once_among_the_examples(tmp_path):
    variants = ["刚才那个就是我", "是 刚才那个就是我", "宝 刚才那个就是我。", "刚才那个就是我哈"]
    rows = [(text, "affirm", "other", 0.99 - 0.01 * i, 0, 0.1) for i, text in enumerate(variants)]
    rows += [("对的没错就这个", "affirm", "other", 0.80, 0, 0.1), ("好的", "affirm", "affirm", 0.9, 0, 0.1)]
    scored = pd.DataFrame(rows, columns=["text", "intent", "pred_intent", "confidence", "purchase_intent", "purchase_score"])
    scored["fallback"] = False
    scored["pred_purchase"] = 0
    metrics = make_metrics(scored)
    result = write_report(tmp_path, title="t", metrics=metrics, scored=scored, thresholds=THRESHOLDS,
                          headline=headline_metrics(metrics), examples_per_confusion=3)
    md = result["markdown"].read_text(encoding="utf-8")
    lines = md[md.index("| # | true → predicted |"):].split("\n\n")[0].splitlines()[2:]
    shown = [cells[6].strip() for cells in (line.split("|") for line in lines)]
    assert shown == ["刚才那个就是我", "对的没错就这个"]  # the most confident variant, then a different mistake
    assert lines[0].split("|")[3].strip() == "5"  # every variant still counts as a mistake


def test_each_threshold_promise_sits_next_to_its_target_and_a_broken_one_is_named(tmp_path):
    # the thresholds were chosen on validation to reach these targets; a real-chat set can break them
    scored = make_scored()
    metrics = make_metrics(scored)
    metrics["eval:real_chats"] = make_metrics(scored.iloc[4:16].reset_index(drop=True))["test"]
    metrics["eval:real_chats"]["intent"]["accepted_accuracy"] = 0.61
    metrics["test"]["intent"]["accepted_accuracy"] = 0.93
    promises = threshold_promises({"intent_model": {"fallback": {"target": "accepted_accuracy", "value": 0.9}},
                                   "purchase_model": {"target_precision": 0.8}})
    assert promises == {"intent_accepted_accuracy": 0.9, "purchase_precision": 0.8}
    result = write_report(tmp_path, title="t", metrics=metrics, scored=scored, thresholds=THRESHOLDS,
                          headline=headline_metrics(metrics), promises=promises)
    md = result["markdown"].read_text(encoding="utf-8")
    table = md_table(md, "| promise | target | test | real_chats | broken on |")
    assert table["Accepted accuracy"][1:] == ["0.900", "0.930", "**0.610**", "real_chats"]  # broken: bold
    precision = [f"{metrics[s]['purchase']['precision']:.3f}" for s in ("test", "eval:real_chats")]
    assert [cell.strip("*") for cell in table["Purchase precision"][1:4]] == ["0.800", *precision]
    broken = [s for s in ("test", "real_chats") if metrics["eval:" + s if s != "test" else s]["purchase"]["precision"] < 0.8]
    assert table["Purchase precision"][4] == (", ".join(broken) or "none")
    html = result["html"].read_text(encoding="utf-8")
    assert "Do the thresholds keep their promises?" in html and 'class="num bad"' in html


def test_no_promise_table_without_targets(tmp_path):
    scored = make_scored()
    metrics = make_metrics(scored)
    assert threshold_promises({"intent_model": {"fallback": {"target": "oos_recall", "value": 0.9}}}) == {}
    result = write_report(tmp_path, title="t", metrics=metrics, scored=scored, thresholds=THRESHOLDS, headline=headline_metrics(metrics))
    assert "| promise | target |" not in result["markdown"].read_text(encoding="utf-8")


def test_a_refit_model_says_whose_figures_the_test_split_shows(full, tmp_path):
    """split.final_fit train_and_test: the test split was scored by the fit before the refit, with its own thresholds;
    the evaluation sets by the shipped model. Each view names the fallback threshold it was scored with."""
    scored = make_scored()
    metrics = make_metrics(scored)
    real = scored.iloc[:12].reset_index(drop=True)
    metrics["eval:real_chats"] = make_metrics(real)["test"]
    write_report(tmp_path, title="refit", metrics=metrics, scored=scored, thresholds=THRESHOLDS, headline=headline_metrics(metrics),
                 eval_scored={"eval:real_chats": real}, test_thresholds={"fallback": 0.55, "purchase": 0.7})
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    note = "fitted again on train + test after the test split was measured"
    assert note in " ".join(md.split()) and note not in " ".join(full["md"].split())
    assert re.findall(r"Fallback threshold:\s*(0\.\d{3})", md) == ["0.550", "0.600"]  # the test split, then real_chats
