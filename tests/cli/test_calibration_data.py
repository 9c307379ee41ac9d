"""`train --calibration-data SHOP.csv` (#10 item 2, #15): a shop's own labelled messages calibrate the intent
model's confidence and choose the fallback threshold, and are never trained on. The linear models and the
purchase model's calibration stay what they are without the flag; the purchase threshold moves to the shop's
messages only when they hold enough purchase positives (`purchase_model.threshold_min_positives`). Small corpora
only (tests/batch/builders.py): seconds each."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
from typer.testing import CliRunner

from pipeline.bundle import verify_bundle
from pipeline.cli import app
from pipeline.config import load_config
from pipeline.data.labelled import LabelledData, validate_labelled
from pipeline.estimators import _fit_temperature
from pipeline.inference import Predictor
from pipeline.training.evaluate import bagged_precision_threshold, choose_fallback_threshold, choose_precision_threshold
from pipeline.text import normalize
from pipeline.drift import atc_accuracy, atc_threshold, manifest_record
from pipeline.training.shift import fallback_for_expected_accuracy, mean_confidence
from pipeline.training.train import UnlabelledData, labelled_predictions, train
from tests.batch.builders import labelled_messages

runner = CliRunner()
CONFIG = {"paths.data": "unused.csv", "paths.conversations": None, "paths.orders": None}
# k01-k04 alone, the default before round 27 (ROUND27_RULES.md, BE): what the tests of that choice pin
K_ONLY = {**CONFIG, "purchase_model.threshold_on": "calibration_data"}


def _labelled(frame: pd.DataFrame, source: str) -> LabelledData:
    config = load_config(overrides=CONFIG)
    valid, rejected = validate_labelled(frame, source, config.split.min_examples_per_label)
    return LabelledData(valid, rejected, source)


def _shop_frame() -> pd.DataFrame:
    """Messages like a shop's: the corpus phrases written differently (a prefix the corpus never has), and a
    share of them labelled with another intent, so that the model is often wrong there, as on real chats."""
    corpus = labelled_messages()
    shop = corpus.groupby("group").head(2).copy()
    shop["text"] = "唉 那个 " + shop["text"]
    intents = sorted(shop["intent"].unique())
    flip = np.arange(len(shop)) % 3 == 0
    shop.loc[flip, "intent"] = [intents[(intents.index(i) + 1) % len(intents)] for i in shop.loc[flip, "intent"]]
    return shop[["text", "intent", "purchase_intent"]].reset_index(drop=True)


@pytest.fixture(scope="module")
def trained():
    config = load_config(overrides=CONFIG)
    data = _labelled(labelled_messages(), "fixture")
    shop = _labelled(_shop_frame(), "shop.csv")
    return data, shop, train(config, data), train(config, data, calibration=shop)


def test_the_temperature_and_the_fallback_threshold_come_from_the_shops_labels(trained):
    _, shop, plain, calibrated = trained
    features = calibrated.bundle.intent.named_steps["features"]
    classifier = calibrated.bundle.intent.named_steps["classifier"]
    scores = classifier.decision_function(features.transform(shop.frame["normalized"].tolist()))
    y_index = np.searchsorted(classifier.classes_, shop.frame["intent"].to_numpy())
    assert classifier.temperature_ == pytest.approx(_fit_temperature(scores, y_index), rel=1e-12)
    # a shop where the model is often wrong: less confident than on the validation writers
    assert classifier.temperature_ > plain.bundle.intent.named_steps["classifier"].temperature_
    scored = labelled_predictions(Predictor(calibrated.bundle), shop.frame)
    fallback = load_config(overrides=CONFIG).intent_model.fallback
    want = choose_fallback_threshold(scored["intent"], scored["pred_intent"], scored["confidence"], fallback.target, fallback.value)
    assert calibrated.bundle.thresholds["fallback"] == want > 0
    assert calibrated.bundle.manifest["calibrated_on"] == {"intent": "calibration_data", "fallback": "calibration_data", "purchase": "validation"}
    assert set(calibrated.metrics["calibration"]) >= {"intent", "purchase"}
    # the label-free estimate is anchored where the confidence was calibrated: on the shop's messages, not the validation writers
    want = manifest_record(scored["confidence"].to_numpy(), (scored["intent"] == scored["pred_intent"]).to_numpy())
    assert calibrated.bundle.manifest["accuracy_estimate"] == pytest.approx(want)
    assert want["validation_messages"] == len(shop.frame) != plain.bundle.manifest["accuracy_estimate"]["validation_messages"]


def test_the_linear_models_and_the_purchase_model_are_those_of_a_run_without_it(trained):
    _, _, plain, calibrated = trained
    for name in ("intent", "purchase"):
        a, b = (getattr(r.bundle, name).named_steps["classifier"].estimator_ for r in (plain, calibrated))
        assert np.array_equal(a.coef_, b.coef_) and np.array_equal(a.intercept_, b.intercept_)
    assert plain.bundle.purchase.named_steps["classifier"].platt_ == calibrated.bundle.purchase.named_steps["classifier"].platt_
    assert plain.bundle.thresholds["purchase"] == calibrated.bundle.thresholds["purchase"]
    assert plain.metrics["test"]["intent"]["accuracy"] == calibrated.metrics["test"]["intent"]["accuracy"]


def test_a_model_calibrated_on_held_out_messages_is_fitted_without_the_calibration_folds(trained):
    """The fold models only serve a calibration from the training split's out-of-fold scores: a model whose
    calibration comes from the validation writers or the calibration data is fitted once, to the same weights."""
    data, shop, plain, calibrated = trained

    def cross_fitted(result) -> tuple[bool, bool]:
        return tuple(getattr(result.bundle, name).named_steps["classifier"].cross_fit for name in ("intent", "purchase"))

    assert cross_fitted(plain) == cross_fitted(calibrated) == (False, False)  # the default: calibrate_on validation
    on_folds = load_config(overrides={**CONFIG, "intent_model.calibrate_on": "train_folds", "purchase_model.calibrate_on": "train_folds"})
    folded = train(on_folds, data)
    assert cross_fitted(folded) == (True, True)
    assert cross_fitted(train(on_folds, data, calibration=shop)) == (False, True)  # the shop's labels calibrate the intent model
    for name in ("intent", "purchase"):
        a, b = (getattr(r.bundle, name).named_steps["classifier"] for r in (plain, folded))
        assert np.array_equal(a.estimator_.coef_, b.estimator_.coef_) and np.array_equal(a.estimator_.intercept_, b.estimator_.intercept_)
    # the folds' calibration is the one kept when nothing replaces it
    assert folded.bundle.intent.named_steps["classifier"].temperature_ != plain.bundle.intent.named_steps["classifier"].temperature_


def test_the_purchase_threshold_is_chosen_on_calibration_data_only_with_enough_positives(trained):
    data, shop, plain, calibrated = trained
    positives = int(shop.frame["purchase_intent"].sum())
    assert positives < load_config(overrides=CONFIG).purchase_model.threshold_min_positives
    assert calibrated.bundle.manifest["purchase_threshold_on"]["set"] == "validation"
    result = train(load_config(overrides={**K_ONLY, "purchase_model.threshold_min_positives": positives}), data, calibration=shop)
    scored = labelled_predictions(Predictor(result.bundle), shop.frame)
    want, reached = choose_precision_threshold(scored["purchase_intent"].to_numpy(), scored["purchase_score"].to_numpy(), 0.9)
    assert result.bundle.thresholds["purchase"] == want != plain.bundle.thresholds["purchase"]
    assert result.bundle.manifest["purchase_threshold_on"] == {
        "set": "calibration_data", "messages": len(shop.frame), "positives": positives,
        "precision": round(reached["precision"], 4), "recall": round(reached["recall"], 4)}
    # only where the threshold is chosen changes: the purchase model and its Platt scaling are those of the plain run
    assert plain.bundle.purchase.named_steps["classifier"].platt_ == result.bundle.purchase.named_steps["classifier"].platt_
    validation = train(load_config(overrides={**CONFIG, "purchase_model.threshold_min_positives": positives,
                                              "purchase_model.threshold_on": "validation"}), data, calibration=shop)
    assert validation.bundle.thresholds["purchase"] == plain.bundle.thresholds["purchase"]


def test_an_intent_only_calibration_set_joins_the_intent_side_and_leaves_the_purchase_threshold(trained):
    """ROUND25_RULES.md, AM: more calibration text for the temperature and the hand-over, none for the purchase threshold."""
    data, shop, _, _ = trained
    positives = int(shop.frame["purchase_intent"].sum())
    config = load_config(overrides={**K_ONLY, "purchase_model.threshold_min_positives": positives})
    extra_frame = _shop_frame()
    extra_frame["text"] = "嗯 就是 " + extra_frame["text"]
    extra_frame["purchase_intent"] = 1 - extra_frame["purchase_intent"]  # would move a purchase threshold chosen on it
    extra = _labelled(extra_frame, "intent_calibration.csv")
    alone = train(config, data, calibration=shop)
    joined = train(config, data, calibration=shop, intent_calibration=extra)
    union = pd.concat([shop.frame, extra.frame], ignore_index=True)
    features = joined.bundle.intent.named_steps["features"]
    classifier = joined.bundle.intent.named_steps["classifier"]
    scores = classifier.decision_function(features.transform(union["normalized"].tolist()))
    assert classifier.temperature_ == pytest.approx(_fit_temperature(scores, np.searchsorted(classifier.classes_, union["intent"].to_numpy())), rel=1e-12)
    assert classifier.temperature_ != alone.bundle.intent.named_steps["classifier"].temperature_
    scored = labelled_predictions(Predictor(joined.bundle), union)
    fallback = config.intent_model.fallback
    assert joined.bundle.thresholds["fallback"] == choose_fallback_threshold(
        scored["intent"], scored["pred_intent"], scored["confidence"], fallback.target, fallback.value)
    # the purchase threshold: chosen on the calibration set alone, as without the intent-only set
    assert joined.bundle.manifest["purchase_threshold_on"] == alone.bundle.manifest["purchase_threshold_on"]
    assert joined.bundle.thresholds["purchase"] == alone.bundle.thresholds["purchase"]
    assert joined.bundle.manifest["calibrated_on"]["intent"] == "calibration_data+intent_calibration_data"
    assert joined.fingerprints["calibration"]["rows"] == len(union) and joined.fingerprints["calibration"]["intent_only_rows"] == len(extra.frame)
    # the label-free estimate is anchored on both
    assert joined.bundle.manifest["accuracy_estimate"]["validation_messages"] == len(union)
    # alone, it calibrates the intent side and the purchase threshold falls back to validation
    only = train(config, data, intent_calibration=extra)
    assert only.bundle.manifest["purchase_threshold_on"]["set"] == "validation"
    assert only.bundle.manifest["calibrated_on"]["intent"] == "intent_calibration_data"
    with pytest.raises(ValueError, match="not both"):
        train(config, data, intent_calibration=extra, calibration_chats=_chats())


def test_the_purchase_threshold_can_be_chosen_on_both_calibration_sets(trained):
    """ROUND25_RULES.md, AQ; the default since round 27 (ROUND27_RULES.md, BE): `threshold_on: all_calibration_data`."""
    data, shop, _, _ = trained
    extra_frame = _shop_frame()
    extra_frame["text"] = "嗯 就是 " + extra_frame["text"]
    extra = _labelled(extra_frame, "intent_calibration.csv")
    positives = int(shop.frame["purchase_intent"].sum()) + int(extra.frame["purchase_intent"].sum())
    config = load_config(overrides={**CONFIG, "purchase_model.threshold_min_positives": positives})
    assert config.purchase_model.threshold_on == "all_calibration_data"  # the shipped default
    result = train(config, data, calibration=shop, intent_calibration=extra)
    union = pd.concat([shop.frame, extra.frame], ignore_index=True)
    scored = labelled_predictions(Predictor(result.bundle), union)
    want, _ = choose_precision_threshold(scored["purchase_intent"].to_numpy(), scored["purchase_score"].to_numpy(), 0.9)
    assert result.bundle.thresholds["purchase"] == want
    assert result.bundle.manifest["purchase_threshold_on"]["set"] == "all_calibration_data"
    assert result.bundle.manifest["purchase_threshold_on"]["messages"] == len(union)
    # k01-k04's choice: the calibration set alone, which holds fewer positives than the minimum here
    alone = train(load_config(overrides={**K_ONLY, "purchase_model.threshold_min_positives": positives}), data,
                  calibration=shop, intent_calibration=extra)
    assert alone.bundle.manifest["purchase_threshold_on"]["set"] == "validation"


def test_the_purchase_threshold_can_be_the_median_over_resamples_of_its_set(trained):
    """ROUND26_RULES.md, AS: `threshold_bootstrap: N` bags the choice on the same set for the same target."""
    data, shop, _, _ = trained
    positives = int(shop.frame["purchase_intent"].sum())
    overrides = {**K_ONLY, "purchase_model.threshold_min_positives": positives}
    single = train(load_config(overrides=overrides), data, calibration=shop)
    config = load_config(overrides={**overrides, "purchase_model.threshold_bootstrap": 50})
    bagged = train(config, data, calibration=shop)
    scored = labelled_predictions(Predictor(bagged.bundle), shop.frame)
    want, reached = bagged_precision_threshold(scored["purchase_intent"].to_numpy(), scored["purchase_score"].to_numpy(),
                                               0.9, 50, config.seed)
    assert bagged.bundle.thresholds["purchase"] == want
    record = bagged.bundle.manifest["purchase_threshold_on"]
    assert record["set"] == "calibration_data" and record["bootstrap_sd"] == round(reached["bootstrap_sd"], 4) > 0
    # the classifiers are untouched: only the threshold moved
    assert single.bundle.purchase.named_steps["classifier"].platt_ == bagged.bundle.purchase.named_steps["classifier"].platt_


def test_a_calibration_message_is_never_trained_on():
    config = load_config(overrides=CONFIG)
    data = _labelled(labelled_messages(), "fixture")
    train_texts = data.frame["text"][data.frame.index.isin(range(0, len(data.frame), 7))]
    shop = _labelled(pd.DataFrame({"text": train_texts, "intent": data.frame.loc[train_texts.index, "intent"],
                                   "purchase_intent": data.frame.loc[train_texts.index, "purchase_intent"]}), "shop.csv")
    result = train(config, data, calibration=shop)
    left_out = result.fingerprints["calibration"]["training_rows_left_out"]
    assert left_out > 0
    trained_on = result.messages[result.messages["split"] == "train"]["normalized"]
    assert not trained_on.isin(set(shop.frame["normalized"])).any()


def test_an_intent_the_model_does_not_know_is_refused():
    config = load_config(overrides=CONFIG)
    data = _labelled(labelled_messages(), "fixture")
    shop = _shop_frame()
    shop.loc[0, "intent"] = "warranty_claim"
    shop = pd.concat([shop] + [shop.iloc[[0]]] * 6, ignore_index=True)  # enough rows not to be quarantined as rare
    with pytest.raises(ValueError, match="warranty_claim"):
        train(config, data, calibration=_labelled(shop, "shop.csv"))


def test_train_calibration_data_on_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    labelled_messages().to_csv(tmp_path / "labelled.csv", index=False)
    (tmp_path / "config.yaml").write_text("paths:\n  conversations: null\n  orders: null\n", encoding="utf-8")
    shop = _shop_frame()
    shop.loc[len(shop)] = ["", "other", 0]  # an empty message: quarantined with its reason
    shop.to_csv(tmp_path / "shop.csv", index=False, encoding="utf-8-sig")
    result = runner.invoke(app, ["train", "--config", str(tmp_path / "config.yaml"), "--data", str(tmp_path / "labelled.csv"),
                                 "--calibration-data", str(tmp_path / "shop.csv"), "--model-dir", str(tmp_path / "model"), "--no-promote"])
    assert result.exit_code == 0, result.output
    rows = len(shop) - 1
    assert f"fitted on {rows} labelled messages of {tmp_path / 'shop.csv'} (1 rows quarantined)" in result.output
    run = mlflow.MlflowClient().get_run(result.output.split("run id:")[1].split()[0])
    assert "calibration_intent_ece" in run.data.metrics and run.data.params["paths.calibration_data"] == str(tmp_path / "shop.csv")
    contexts = [tag.value for d in run.inputs.dataset_inputs for tag in d.tags if tag.key == "mlflow.data.context"]
    assert contexts.count("calibration") == 1 and contexts.count("training") == 1
    manifest = verify_bundle(tmp_path / "model")
    assert manifest["fingerprints"]["calibration"]["rows"] == rows and manifest["calibrated_on"]["intent"] == "calibration_data"


# --- without labels: --calibration-chats ----------------------------------------------------------------


def _chats() -> UnlabelledData:
    texts = [normalize(t) for t in _shop_frame()["text"]]
    return UnlabelledData(texts, [{"source": "chats.csv", "sha256": "0" * 64, "rows_in": len(texts), "messages_used": len(texts),
                                   "rows_not_buyer": 0, "rows_rejected": 0}])


def test_unlabelled_chats_set_the_temperature_from_atcs_estimate_and_keep_the_rest(trained):
    data, _, plain, _ = trained
    result = train(load_config(overrides=CONFIG), data, calibration_chats=_chats())
    summary = result.fingerprints["calibration_chats"]
    classifier = result.bundle.intent.named_steps["classifier"]
    plain_classifier = plain.bundle.intent.named_steps["classifier"]
    scores = classifier.decision_function(result.bundle.intent.named_steps["features"].transform(_chats().texts))
    # ATC: the validation threshold, applied to the chats at the validation temperature
    val = labelled_predictions(Predictor(plain.bundle), plain.messages[plain.messages["split"] == "val"])
    threshold = atc_threshold(val["confidence"].to_numpy(), (val["intent"] == val["pred_intent"]).to_numpy())
    estimate = atc_accuracy(softmax(scores / plain_classifier.temperature_, axis=1).max(axis=1), threshold)
    assert summary["estimated_accuracy"] == round(estimate, 4) and summary["temperature_validation"] == round(plain_classifier.temperature_, 6)
    assert mean_confidence(scores, classifier.temperature_) == pytest.approx(estimate, abs=1e-6)
    confidence = softmax(scores / classifier.temperature_, axis=1).max(axis=1)
    assert result.bundle.thresholds["fallback"] == fallback_for_expected_accuracy(confidence, 0.9)[0]
    assert result.bundle.manifest["calibrated_on"] == {"intent": "calibration_chats", "fallback": "calibration_chats", "purchase": "validation"}
    # the linear models and the purchase model are those of a run without it
    a, b = plain_classifier.estimator_, classifier.estimator_
    assert np.array_equal(a.coef_, b.coef_)
    assert plain.bundle.thresholds["purchase"] == result.bundle.thresholds["purchase"]
    with pytest.raises(ValueError, match="not both"):
        train(load_config(overrides=CONFIG), data, calibration=trained[1], calibration_chats=_chats())


def test_train_calibration_chats_on_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    labelled_messages().to_csv(tmp_path / "labelled.csv", index=False)
    # a config with a labelled calibration set, as the default has: the shop's chats on the command line replace it
    (tmp_path / "config.yaml").write_text(f"paths:\n  data: {tmp_path / 'labelled.csv'}\n  extra_data: []\n"
                                          f"  calibration_data: {tmp_path / 'labelled.csv'}\n  conversations: null\n  orders: null\n",
                                          encoding="utf-8")
    chats = tmp_path / "chats.csv"
    chats.write_text("角色,内容\n" + "".join(f"买家,{t}\n客服,好的亲\n" for t in _shop_frame()["text"]), encoding="gb18030")
    result = runner.invoke(app, ["train", "--config", str(tmp_path / "config.yaml"),
                                 "--calibration-chats", str(chats), "--model-dir", str(tmp_path / "model"), "--no-promote"])
    assert result.exit_code == 0, result.output
    assert f"calibrated on {len(_shop_frame())} unlabelled buyer messages: estimated accuracy there" in result.output
    run = mlflow.MlflowClient().get_run(result.output.split("run id:")[1].split()[0])
    assert run.data.params["calibration_chats_messages_used"] == str(len(_shop_frame()))
    manifest = verify_bundle(tmp_path / "model")
    assert manifest["fingerprints"]["calibration_chats"]["messages_used"] == len(_shop_frame())
    logged = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".json", ".md", ".html", ".txt", ".yaml") and "quarantine" not in p.parts]
    assert not any("唉 那个" in p.read_text(encoding="utf-8", errors="replace") for p in logged)  # no chat text kept
