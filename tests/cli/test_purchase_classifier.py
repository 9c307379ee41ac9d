"""`purchase_model.classifier` (round 17, L): the purchase detector can be another linear model than the logistic
regression, Platt-scaled as before; the default is unchanged, and a model without linear weights (complement naive
Bayes) still trains, scores and gets a report, without the report's "why" column. Small corpora: seconds each."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import ComplementNB
from sklearn.svm import LinearSVC

from pipeline.config import load_config
from pipeline.data.labelled import LabelledData, validate_labelled
from pipeline.inference import Predictor
from pipeline.jobs.workflows import _report_explainer
from pipeline.training.train import train
from tests.batch.builders import labelled_messages

BASE = {"paths.data": "unused.csv"}


@pytest.fixture(scope="module")
def labelled():
    config = load_config(overrides=BASE)
    valid, _ = validate_labelled(labelled_messages(), "fixture", config.split.min_examples_per_label)
    return LabelledData(valid, pd.DataFrame(columns=["source", "row", "reason", "raw"]), "fixture")


@pytest.fixture(scope="module")
def models(labelled):
    return {name: train(load_config(overrides={**BASE, "purchase_model.classifier": name}), labelled).bundle
            for name in ("logreg", "linear_svc", "complement_nb")}


def test_the_default_purchase_detector_is_the_logistic_regression():
    assert load_config(overrides=BASE).purchase_model.classifier == "logreg"


@pytest.mark.parametrize("name, kind", [("logreg", LogisticRegression), ("linear_svc", LinearSVC), ("complement_nb", ComplementNB)])
def test_the_configured_classifier_is_the_one_fitted_and_its_scores_are_probabilities(models, name, kind, labelled):
    bundle = models[name]
    assert isinstance(bundle.purchase.named_steps["classifier"].estimator_, kind)
    out = Predictor(bundle).predict(labelled.frame["text"].head(50).tolist())
    scores = out["purchase_score"].to_numpy()
    assert np.all((scores >= 0) & (scores <= 1)) and scores.std() > 0
    assert set(out["purchase_intent"].unique()) <= {0, 1}


def test_the_intent_model_does_not_depend_on_the_purchase_classifier(models, labelled):
    texts = labelled.frame["text"].head(200).tolist()
    reference = Predictor(models["logreg"]).predict(texts)
    for name in ("linear_svc", "complement_nb"):
        other = Predictor(models[name]).predict(texts)
        assert (other["intent"] == reference["intent"]).all()


def test_the_report_explains_mistakes_of_linear_models_and_skips_the_column_for_naive_bayes(models):
    assert callable(_report_explainer(Predictor(models["linear_svc"])))
    assert _report_explainer(Predictor(models["complement_nb"])) is None
