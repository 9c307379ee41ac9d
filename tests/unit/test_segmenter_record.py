"""The segmenter a model was fitted with travels in the bundle (issue #12): recorded as state of the
tokenizer and in the manifest; a bundle written before the record existed loads and cuts with jieba, as it
was fitted; a bundle whose segmenter is not installed is refused when it is loaded."""

from __future__ import annotations

import json
from importlib.metadata import version

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from pipeline.bundle import MANIFEST, ModelBundle, load_bundle, save_bundle
from pipeline.estimators import (CalibratedLinearClassifier, CompactTfidfVectorizer, JiebaTokenizer, SegmenterUnavailable,
                                 TextNormalizer, installed_segmenter, packaged_user_words)
from tests.conftest import MESSAGES
from tests.unit.test_tokenize import hide_rjieba


def _fitted(tokenizer: JiebaTokenizer, rows: int = 800) -> tuple[Pipeline, list[str]]:
    frame = pd.read_csv(MESSAGES, dtype=str, keep_default_na=False).iloc[:rows]
    features = FeatureUnion([
        ("words", CompactTfidfVectorizer(tokenizer=tokenizer, token_pattern=None, lowercase=False, ngram_range=(1, 2), dtype=np.float32)),
        ("chars", CompactTfidfVectorizer(analyzer="char", lowercase=False, ngram_range=(1, 2), dtype=np.float32)),
    ])
    classifier = CalibratedLinearClassifier(LogisticRegression(solver="newton-cg", max_iter=100), n_folds=3, random_state=0, n_jobs=1)
    model = Pipeline([("normalize", TextNormalizer()), ("features", features), ("classifier", classifier)])
    model.fit(frame["text"].tolist(), frame["intent"].to_numpy())
    texts = pd.read_csv(MESSAGES, dtype=str, keep_default_na=False)["text"].iloc[rows : rows + 1000].tolist()
    return model, texts


def _tokenizer(model: Pipeline) -> JiebaTokenizer:
    return model.named_steps["features"].transformer_list[0][1].tokenizer


def test_a_new_bundle_records_its_segmenter(tmp_path):
    model, texts = _fitted(JiebaTokenizer(packaged_user_words()))
    directory = save_bundle(ModelBundle(model, None, None, {"name": "t"}), tmp_path / "bundle")
    recorded = f"rjieba=={version('rjieba')}"
    assert json.loads((directory / MANIFEST).read_text(encoding="utf-8"))["segmenter"] == recorded
    loaded = load_bundle(directory)
    assert _tokenizer(loaded.intent).segmenter == recorded
    np.testing.assert_array_equal(loaded.intent.predict_proba(texts), model.predict_proba(texts))


def test_a_bundle_written_before_the_record_loads_and_cuts_with_jieba(tmp_path):
    """Its tokenizer's state is the user words only: it means jieba, and the loaded model gives the
    probabilities of the model as it was fitted (with jieba), not those of a model cut by rjieba."""
    model, texts = _fitted(JiebaTokenizer(packaged_user_words(), segmenter=installed_segmenter("jieba")))
    want = model.predict_proba(texts)
    del _tokenizer(model).__dict__["segmenter"]  # the state of a tokenizer saved before the change
    directory = save_bundle(ModelBundle(model, None, None, {"name": "t"}), tmp_path / "bundle")
    assert json.loads((directory / MANIFEST).read_text(encoding="utf-8"))["segmenter"] == "jieba"
    loaded = load_bundle(directory)
    assert _tokenizer(loaded.intent).segmenter == "jieba"
    np.testing.assert_array_equal(loaded.intent.predict_proba(texts), want)


def test_a_bundle_whose_segmenter_is_not_installed_is_refused_at_load(tmp_path, monkeypatch):
    model, _ = _fitted(JiebaTokenizer(packaged_user_words()))
    directory = save_bundle(ModelBundle(model, None, None, {"name": "t"}), tmp_path / "bundle")
    hide_rjieba(monkeypatch)
    with pytest.raises(SegmenterUnavailable, match="rjieba, which is not installed"):
        load_bundle(directory)
