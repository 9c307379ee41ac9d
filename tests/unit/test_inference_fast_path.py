"""The inference shortcuts give exactly what the sklearn calls they replace give."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import FeatureUnion
from sklearn.svm import LinearSVC

from pipeline.estimators import _scores
from pipeline.inference import transform_features

TEXTS = ["在吗 亲", "有货我就拍", "能便宜点吗", "什么时候发货", "我要退货", "包邮吗 包邮我就拍了", "好的谢谢", "偏大还是偏小"] * 3


def _union(**kwargs) -> FeatureUnion:
    return FeatureUnion(
        [("a", TfidfVectorizer(analyzer="char", ngram_range=(1, 2), dtype=np.float32)),
         ("b", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 3), dtype=np.float32))],
        **kwargs,
    ).fit(TEXTS)


@pytest.mark.parametrize("kwargs", [{}, {"transformer_weights": {"a": 0.5}}, {"n_jobs": 2}])
def test_feature_union_shortcut_matches_transform(kwargs):
    union = _union(**kwargs)
    probe = ["有货吗", "", "退货 退款", "在吗 亲"]
    expected = union.transform(probe)
    got = transform_features(union, probe)
    assert sparse.issparse(got) and got.shape == expected.shape
    assert abs(got - expected).max() == 0


@pytest.mark.parametrize("estimator", [LogisticRegression(max_iter=500), LinearSVC(), SGDClassifier(random_state=0)])
@pytest.mark.parametrize("n_classes", [2, 4])
def test_linear_scores_match_decision_function(estimator, n_classes):
    X = _union().transform(TEXTS)
    y = np.arange(len(TEXTS)) % n_classes
    fitted = estimator.fit(X, y)
    expected = np.asarray(fitted.decision_function(X), dtype=np.float64)
    got = _scores(fitted, X)
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)


def test_scores_with_the_wrong_width_still_fail_loudly():
    X = _union().transform(TEXTS)
    fitted = LogisticRegression(max_iter=500).fit(X, np.arange(len(TEXTS)) % 2)
    with pytest.raises(ValueError):
        _scores(fitted, X[:, :-1])
