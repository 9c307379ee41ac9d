"""`benchmarks/adaptation.py`'s two speed-ups are the configured model itself (no shared data needed): the
cached n-gram counts give the fitted vectorizers' TF-IDF features exactly, and `fit_calibrated` (no
calibration folds, then `recalibrate` on validation) gives what `CalibratedLinearClassifier.fit` +
`recalibrate` give, as `pipeline.training.train` fits with `calibrate_on: validation`."""

from __future__ import annotations

import numpy as np
import pytest

from tests.benchmarks.conftest import english_messages


@pytest.fixture()
def texts_and_labels():
    frame = english_messages(per_template=6)
    texts = frame["text"].tolist()
    intent = frame["intent"].to_numpy()
    purchase = (intent == "transfer").astype(int)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(texts))
    return [texts[i] for i in order], intent[order], purchase[order], frame["group"].to_numpy()[order]


def _config(overrides=None):
    from pipeline.config import load_config

    return load_config("configs/english.yaml", overrides or {})


@pytest.mark.parametrize("analyzer", ["char_wb", "char"])
def test_count_cache_gives_the_vectorizers_features_exactly(texts_and_labels, analyzer):
    from benchmarks.adaptation import CountCache
    from pipeline.training.model import make_features, make_tokenizer

    texts = texts_and_labels[0]
    config = _config({"features.char_analyzer": analyzer})
    fit_rows, other_rows = np.arange(0, 60), np.arange(60, len(texts))
    features = make_features(config.features, make_tokenizer(config))
    features.fit([texts[i] for i in fit_rows])
    cache = CountCache(features, texts)
    space = cache.space("fit", fit_rows)
    assert cache.check(space, features, texts, np.arange(len(texts))) == 0.0

    # IDF of more texts, vocabulary of the fit rows: what `train --unlabelled` fits (idf_documents).
    idf_only = make_features(config.features, make_tokenizer(config))
    idf_only.fit_transform([texts[i] for i in fit_rows], idf_documents=[texts[i] for i in other_rows])
    space_idf = cache.space("idf", np.arange(len(texts)), vocabulary_rows=fit_rows)
    reference = idf_only.transform(texts).tocsr()
    assert float(abs(cache.transform(space_idf, np.arange(len(texts))) - reference).max()) < 1e-6


def test_fit_calibrated_is_fit_then_recalibrate(texts_and_labels):
    from sklearn.feature_extraction.text import TfidfVectorizer

    from benchmarks.adaptation import fit_calibrated
    from pipeline.training.model import build_intent_pipeline, make_purchase_classifier

    texts, intent, purchase, groups = texts_and_labels
    config = _config({"intent_model.classifier": "linear_svc", "intent_model.calibration_folds": 2, "purchase_model.calibration_folds": 2})
    x = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3)).fit_transform(texts).tocsr()
    train, val = np.arange(0, 70), np.arange(70, len(texts))
    weights = np.where(np.arange(len(train)) < 10, 5.0, 1.0)
    for make, y in ((lambda: build_intent_pipeline(config).named_steps["classifier"], intent), (lambda: make_purchase_classifier(config), purchase)):
        reference = make().fit(x[train], y[train], groups=groups[train], sample_weight=weights).recalibrate(x[val], y[val])
        fast = fit_calibrated(make(), x[train], y[train], weights, x[val], y[val])
        np.testing.assert_allclose(fast.predict_proba(x), reference.predict_proba(x), rtol=0, atol=1e-12)
