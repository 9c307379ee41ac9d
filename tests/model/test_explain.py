"""Explanations read from the linear models' weights (pipeline/explain.py, issue #15).

The contributions of a message's n-grams plus the intercept are the logit the model computes; the compiled
path and the scikit-learn pipelines give the same explanation; obvious messages are explained by relevant
n-grams; n-grams shown never carry a phone or order number; `predict --explain` and the report's example
mistakes use them.
"""

from __future__ import annotations

import functools
import json
import re

import numpy as np
import pandas as pd
import pytest

from pipeline.bundle import ModelBundle, load_bundle
from pipeline.explain import DEFAULT_TOP_K, Explainer, display_ngram
from pipeline.inference import Predictor, transform_features
from pipeline.text import TOKEN_CHARS
from tests.conftest import MESSAGES

PHONE = "13812345678"
ORDER = "123456789012345678"
PII_TEXTS = [
    f"我电话{PHONE} 订单{ORDER}怎么还没发货",
    f"联系我 +86 138-1234-5678 或者 me@example.com 看看 https://item.taobao.com/item.htm?id=6612345678901",
    f"收货人张三 浙江省杭州市西湖区文三路100号 单号SF{ORDER}",
    "满200减30 我买3件 12月5日前能到吗 [订单x] [电话x]",
]
EDGE_TEXTS = ["", " ", "吗", "ꙮ𓀀𝔘🜁ᚠᛇ", "\ue000", "在吗\t\t亲\n\n包邮吗", "这件外套有黑色M码吗 包邮吗 " * 50]
# the model accumulates its float32 products in float32: about 7 significant digits, so the bound is relative for
# large logits (round 31's model: 4.708244 against 4.708233, 2.3e-6 apart relative) and absolute near zero
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def bundle(corpus_bundle_dir) -> ModelBundle:
    return load_bundle(corpus_bundle_dir)


@pytest.fixture(scope="module")
def predictor(bundle) -> Predictor:
    return Predictor(bundle)


@pytest.fixture(scope="module")
def explainer(predictor) -> Explainer:
    explainer = Explainer.for_predictor(predictor)
    assert explainer.compiled is not None, "the default model is explained on the compiled path"
    return explainer


@pytest.fixture(scope="module")
def texts() -> list[str]:
    frame = pd.read_csv(MESSAGES, dtype=str, keep_default_na=False)
    return frame["text"].sample(400, random_state=3).tolist() + PII_TEXTS + EDGE_TEXTS


def _reference_logits(bundle: ModelBundle, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The logits scikit-learn computes: decision_function of both calibrated classifiers."""
    normalized = bundle.intent.named_steps["normalize"].transform(texts)
    features = transform_features(bundle.intent.steps[1][1], normalized)
    return bundle.intent.steps[-1][1].decision_function(features), bundle.purchase.steps[-1][1].decision_function(features)


def test_contributions_plus_intercept_are_the_models_logits(bundle, explainer, texts):
    intent_logits, purchase_logits = _reference_logits(bundle, texts)
    labels = list(bundle.intent.steps[-1][1].classes_)
    checked = 0
    for row, c in enumerate(explainer.contributions(texts)):
        if c is None:
            assert not bundle.intent.named_steps["normalize"].transform([texts[row]])[0]
            continue
        assert c.intent.logit == pytest.approx(intent_logits[row, labels.index(c.label)], rel=TOLERANCE, abs=TOLERANCE)
        assert c.purchase.logit == pytest.approx(purchase_logits[row], rel=TOLERANCE, abs=TOLERANCE)
        # every n-gram's contribution is its feature value times its weight, nothing else
        assert np.array_equal(c.intent.contributions, c.intent.values * bundle.intent.steps[-1][1].estimator_.coef_[labels.index(c.label), c.intent.columns].astype(np.float64))
        checked += 1
    assert checked > 400


def test_every_intent_can_be_explained_and_the_logits_match(bundle, explainer, texts):
    intent_logits, _ = _reference_logits(bundle, texts[:20])
    labels = [str(label) for label in bundle.intent.steps[-1][1].classes_]
    for j, label in enumerate(labels):
        for row, c in enumerate(explainer.contributions(texts[:20], [label] * 20)):
            assert c.label == label
            assert c.intent.logit == pytest.approx(intent_logits[row, j], rel=TOLERANCE, abs=TOLERANCE)


def test_the_explained_intent_is_the_predicted_one(predictor, explainer, texts):
    predicted = predictor.predict(texts)
    explained = explainer.explain(texts)
    for (_, row), explanation, text in zip(predicted.iterrows(), explained, texts, strict=True):
        if explanation is None:
            assert row["fallback"] and row["intent"] == predictor.empty_label, text
        else:
            assert explanation["intent"]["label"] == row["intent"], text


def test_the_summary_adds_up_and_is_ranked(explainer, texts):
    for k in (1, 3, DEFAULT_TOP_K, 50):
        for explanation in explainer.explain(texts, top_k=k):
            if explanation is None:
                continue
            intent, purchase = explanation["intent"], explanation["purchase"]
            for part in (intent, purchase):
                assert len(part["ngrams"]) <= k
                listed = sum(item["contribution"] for item in part["ngrams"])
                assert part["intercept"] + listed + part["rest"] == pytest.approx(part["logit"], abs=1e-5 * (k + 2))
                assert {item["kind"] for item in part["ngrams"]} <= {"word", "char"}
            intent_values = [item["contribution"] for item in intent["ngrams"]]
            # positive contributions only (a tiny one may round to 0.0 at 6 decimals)
            assert all(value >= 0 for value in intent_values) and intent_values == sorted(intent_values, reverse=True)
            purchase_sizes = [abs(item["contribution"]) for item in purchase["ngrams"]]
            assert purchase_sizes == sorted(purchase_sizes, reverse=True)


def test_the_compiled_and_scikit_learn_paths_give_the_same_explanation(bundle, explainer, texts):
    reference = Explainer(bundle, None)
    assert reference.compiled is None
    assert reference.explain(texts, top_k=8) == explainer.explain(texts, top_k=8)
    for one in texts[:40] + EDGE_TEXTS:  # one message per call: the compiled path's other branch
        assert reference.explain([one]) == explainer.explain([one])
    ours, theirs = explainer.contributions(texts[:50]), reference.contributions(texts[:50])
    for a, b in zip(ours, theirs, strict=True):
        assert a.label == b.label and np.array_equal(a.intent.contributions, b.intent.contributions)
        assert np.array_equal(a.purchase.contributions, b.purchase.contributions) and a.intent.ngrams == b.intent.ngrams


@pytest.mark.parametrize(
    ("text", "intent", "relevant"),
    [
        ("开发票", "invoice", "票"),
        ("能开发票吗 要电子发票", "invoice", "票"),
        ("我要退货退款", "return_refund", "退"),
        ("在吗", "greeting", "在"),
        ("什么时候发货", "shipping_time", "发货"),
    ],
)
def test_an_obvious_message_is_explained_by_a_relevant_ngram(explainer, text, intent, relevant):
    (explanation,) = explainer.explain([text])
    assert explanation["intent"]["label"] == intent
    top = explanation["intent"]["ngrams"][0]
    # the relevant word or a character of it ('发' and the word '发货' weigh within 2 % of each other for shipping_time)
    assert (relevant in top["ngram"] or top["ngram"] in relevant) and top["contribution"] > 0, explanation


def test_purchase_is_explained_by_the_buying_words(explainer):
    (buying,) = explainer.explain(["有货的话我马上拍"])
    top = buying["purchase"]["ngrams"][0]
    assert top["contribution"] > 0 and re.search("拍|马上|下单|买", top["ngram"]), buying
    (asking,) = explainer.explain(["开发票"])
    assert asking["purchase"]["logit"] < 0


def test_ngrams_shown_never_carry_pii(explainer):
    for text, explanation in zip(PII_TEXTS, explainer.explain(PII_TEXTS, top_k=10_000), strict=True):
        shown = [item["ngram"] for part in ("intent", "purchase") for item in explanation[part]["ngrams"]]
        assert shown, text
        for ngram in shown:
            assert not re.search(r"\d", ngram), (text, ngram)
            assert not TOKEN_CHARS & set(ngram), (text, ngram)
            assert "example" not in ngram and "taobao" not in ngram and "张三" not in ngram
        assert any(placeholder in " ".join(shown) for placeholder in ("[电话x]", "[订单x]", "[链接x]", "[地址x]", "[姓名x]", "[数字x]"))


def test_display_of_canonical_tokens_and_blanks():
    assert display_ngram("\ue001 打", "word") == "[电话x] 打"
    assert display_ngram("吗 \ue000", "char") == "吗␣[订单x]"
    assert display_ngram(f"电话{PHONE}", "word") == "电话[电话x]"


def test_empty_messages_have_no_explanation(explainer):
    assert explainer.explain(["", "   ", "\n"]) == [None, None, None]
    assert explainer.explain([]) == []
    with pytest.raises(ValueError):
        explainer.explain(["在吗"], top_k=0)


def test_a_refit_model_is_explained_with_its_new_weights(bundle, explainer, texts):
    import copy

    refit = copy.deepcopy(bundle)
    refit_explainer = Explainer.for_predictor(Predictor(refit))
    before = refit_explainer.contributions(texts[:5])
    estimator = refit.intent.steps[-1][1].estimator_
    # new weight objects, as a refit makes; the intercepts doubled too, so every score doubles and each
    # text keeps its predicted intent (with the old intercepts a text near a boundary could change class)
    estimator.coef_ = estimator.coef_ * 2
    estimator.intercept_ = estimator.intercept_ * 2
    after = refit_explainer.contributions(texts[:5])
    for a, b in zip(before, after, strict=True):
        assert b.label == a.label
        assert b.intent.contributions == pytest.approx(2 * a.intent.contributions)


# ----------------------------------------------------------------------------------- predict --explain


def test_predict_file_writes_the_explanation_column(corpus_bundle_dir, bundle, tmp_path):
    from pipeline.config import load_config
    from pipeline.jobs.workflows import predict_file

    texts = ["开发票", "", f"有货我就拍 电话{PHONE}", "亲 有货的"]
    frame = pd.DataFrame({"text": texts, "role": ["买家", "buyer", "buyer", "客服"], "explanation": ["x", "y", "z", "w"]})
    source = tmp_path / "chats.csv"
    frame.to_csv(source, index=False)
    config = load_config()
    plain = predict_file(source, tmp_path / "plain.csv", str(corpus_bundle_dir), config)
    explained = predict_file(source, tmp_path / "explained.csv", str(corpus_bundle_dir), config, explain=True, explain_top_k=3)
    assert plain == explained
    without = pd.read_csv(tmp_path / "plain.csv", dtype=str, keep_default_na=False)
    output = pd.read_csv(tmp_path / "explained.csv", dtype=str, keep_default_na=False)
    assert "explanation_input" not in without.columns and without["explanation"].tolist() == ["x", "y", "z", "w"]
    assert output["explanation_input"].tolist() == ["x", "y", "z", "w"]
    assert output.drop(columns=["explanation", "explanation_input"]).equals(without.drop(columns=["explanation"]))
    assert output["explanation"].tolist()[1] == "" and output["explanation"].tolist()[3] == ""  # empty; not a buyer
    expected = Explainer(bundle, None).explain(texts[:3], output["intent"].tolist()[:3], top_k=3)
    for cell, want in zip(output["explanation"].tolist()[:3], expected, strict=True):
        assert (json.loads(cell) if cell else None) == want
    assert all(PHONE not in cell for cell in output["explanation"])


def test_predict_cli_explain_option(corpus_bundle_dir, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    source = tmp_path / "in.csv"
    pd.DataFrame({"text": ["开发票", "在吗"]}).to_csv(source, index=False)
    result = CliRunner().invoke(app, ["predict", "--input", str(source), "--output", str(tmp_path / "out.jsonl"), "--model", str(corpus_bundle_dir), "--explain", "--explain-top-k", "2"])
    assert result.exit_code == 0, result.output
    rows = pd.read_json(tmp_path / "out.jsonl", lines=True)
    first = json.loads(rows["explanation"][0])
    assert first["intent"]["label"] == "invoice" and len(first["intent"]["ngrams"]) == 2
    bad = CliRunner().invoke(app, ["predict", "--input", str(source), "--output", str(tmp_path / "o.csv"), "--model", str(corpus_bundle_dir), "--explain", "--explain-top-k", "0"])
    assert bad.exit_code != 0


# ------------------------------------------------------------------------------------------- report


def test_the_report_explains_its_example_mistakes(bundle, tmp_path):
    from pipeline.report import write_report
    from pipeline.training.train import headline_metrics
    from tests.report.test_report import PHONE as REPORT_PHONE
    from tests.report.test_report import THRESHOLDS, make_metrics, make_scored

    scored = make_scored()
    metrics = make_metrics(scored)
    explain = functools.partial(Explainer(bundle, None).explain, top_k=3)
    write_report(tmp_path / "with", title="t", metrics=metrics, scored=scored, thresholds=THRESHOLDS, headline=headline_metrics(metrics), explain=explain)
    write_report(tmp_path / "without", title="t", metrics=metrics, scored=scored, thresholds=THRESHOLDS, headline=headline_metrics(metrics))
    md = (tmp_path / "with" / "report.md").read_text(encoding="utf-8")
    html = (tmp_path / "with" / "report.html").read_text(encoding="utf-8")
    assert "why: top n-grams for the predicted intent" in md and "why: top n-grams for the predicted intent" in html
    assert "why: top n-grams" not in (tmp_path / "without" / "report.md").read_text(encoding="utf-8")
    table = md.split("why: top n-grams for the predicted intent", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    assert rows and all(re.search(r"[+-]\d+\.\d\d", row.rsplit("|", 2)[-2]) or row.rsplit("|", 2)[-2].strip() == "—" for row in rows)
    assert REPORT_PHONE not in md and REPORT_PHONE not in html
