"""`split.final_fit: train_and_test` (ROUND31_RULES.md, BT): once the test split is measured, the shipped message
models are fitted again on train + test and calibrated and thresholded on the same held-out messages, so the seed's
draw of the test split no longer changes them. The test figures stay those of the fit that had not seen the test
split. Small corpora only (tests/batch/builders.py): seconds each."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.data.labelled import LabelledData, split_by_settings, validate_labelled
from pipeline.inference import Predictor
from pipeline.training.evaluate import choose_fallback_threshold
from pipeline.training.train import _fit_message_models, labelled_predictions, score_labelled, train
from tests.batch.builders import labelled_messages

CONFIG = {"paths.data": "unused.csv", "paths.conversations": None, "paths.orders": None}


def _config(final_fit: str):
    return load_config(overrides={**CONFIG, "split.final_fit": final_fit})


def _labelled(frame: pd.DataFrame, source: str) -> LabelledData:
    valid, rejected = validate_labelled(frame, source, _config("train").split.min_examples_per_label)
    return LabelledData(valid, rejected, source)


@pytest.fixture(scope="module")
def runs():
    data = _labelled(labelled_messages(), "fixture")
    config = _config("train")
    split = split_by_settings(data.frame, config.split, config.seed)
    test_texts = data.frame.loc[split == "test", "text"]
    # a shop's labelled messages, two of which are also test-split texts: the refit must leave those rows out
    shop = data.frame.groupby("group").head(1)[["text", "intent", "purchase_intent"]].copy()
    shop["text"] = "唉 那个 " + shop["text"]
    shared = data.frame.loc[data.frame["text"].isin(test_texts.iloc[:2]), ["text", "intent", "purchase_intent"]]
    shop = _labelled(pd.concat([shop, shared], ignore_index=True), "shop.csv")
    plain = train(_config("train"), data, calibration=shop)
    refit = train(_config("train_and_test"), data, calibration=shop)
    return data, shop, split, plain, refit


def test_the_test_figures_are_those_of_the_fit_that_had_not_seen_the_test_split(runs):
    _, _, _, plain, refit = runs
    assert refit.metrics["test"] == plain.metrics["test"]
    pd.testing.assert_frame_equal(refit.test_predictions, plain.test_predictions)
    assert refit.test_thresholds == {k: plain.bundle.thresholds[k] for k in ("fallback", "purchase")}
    assert refit.bundle.manifest["final_fit"]["evaluation_fit_thresholds"] == refit.test_thresholds
    assert "final_fit" not in plain.bundle.manifest


def test_the_shipped_models_are_fitted_on_train_and_test_less_the_calibration_texts(runs):
    data, shop, split, plain, refit = runs
    frame = refit.messages
    test = frame[frame["split"] == "test"]
    left_out = test["normalized"].isin(set(shop.frame["normalized"]))
    assert left_out.sum() == 2 == refit.bundle.manifest["final_fit"]["test_rows_left_out"]
    rows = pd.concat([frame[frame["split"] == "train"], test[~left_out]])
    assert refit.bundle.manifest["final_fit"]["messages"] == len(rows)
    intent, purchase = _fit_message_models(_config("train_and_test"), rows, True, None, (True, True))
    for name, direct in (("intent", intent), ("purchase", purchase)):
        shipped = getattr(refit.bundle, name).named_steps["classifier"].estimator_
        assert np.array_equal(shipped.coef_, direct.named_steps["classifier"].estimator_.coef_)
    # the refit read text the first fit never saw: its vocabulary holds every n-gram of the first and more
    vocabularies = [set(r.bundle.intent.named_steps["features"].get_feature_names_out()) for r in (plain, refit)]
    assert vocabularies[0] < vocabularies[1]


def test_the_shipped_thresholds_and_validation_figures_are_the_refits_own(runs):
    _, shop, _, plain, refit = runs
    scored = labelled_predictions(Predictor(refit.bundle), shop.frame)
    fallback = _config("train_and_test").intent_model.fallback
    want = choose_fallback_threshold(scored["intent"], scored["pred_intent"], scored["confidence"], fallback.target, fallback.value)
    assert refit.bundle.thresholds["fallback"] == want
    val = refit.messages[refit.messages["split"] == "val"]
    measured = score_labelled(Predictor(refit.bundle), val)[0]
    measured["intent"].pop("estimated_accuracy")  # the label-free estimate is anchored after validation is scored
    assert measured == refit.metrics["val"]
    assert refit.metrics["val"] != plain.metrics["val"]


def test_the_two_fits_side_by_side_are_the_two_fits_one_after_the_other(runs):
    """With n_jobs > 1 (the default) the first fit and the refit run in two worker processes: the same models."""
    data, shop, _, _, refit = runs
    assert _config("train_and_test").n_jobs > 1
    serial = train(load_config(overrides={**CONFIG, "split.final_fit": "train_and_test", "n_jobs": 1}), data, calibration=shop)
    assert serial.metrics["test"] == refit.metrics["test"] and serial.bundle.thresholds == refit.bundle.thresholds
    for name in ("intent", "purchase"):
        a, b = (getattr(r.bundle, name).named_steps["classifier"] for r in (serial, refit))
        assert np.array_equal(a.estimator_.coef_, b.estimator_.coef_)
    assert Predictor(serial.bundle).predict(shop.frame["text"].tolist()).equals(Predictor(refit.bundle).predict(shop.frame["text"].tolist()))
