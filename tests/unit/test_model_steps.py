"""The compiled path and the explanations read a model's steps by name (normalize, features, classifier),
and refuse a pipeline of another shape with the reason instead of taking a step for another or skipping one."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import MaxAbsScaler

from pipeline.bundle import ModelBundle
from pipeline.compiled import CompiledBundle, UnsupportedModel, model_steps
from pipeline.estimators import CalibratedLinearClassifier, CompactTfidfVectorizer, TextNormalizer
from pipeline.explain import Explainer, UnsupportedExplanation
from pipeline.inference import Predictor

TEXTS = ["在吗 亲", "有货吗 有货我就拍", "能便宜点吗", "什么时候发货", "我要退货 退款", "包邮吗", "好的谢谢", "偏大还是偏小"] * 4
LABELS = ["greeting", "stock", "price", "shipping", "refund", "shipping", "thanks", "size"] * 4


def _fitted(names=("normalize", "features", "classifier"), extra=None) -> Pipeline:
    normalize = TextNormalizer().fit(TEXTS)
    normalized = normalize.transform(TEXTS)
    features = FeatureUnion([("chars", CompactTfidfVectorizer(analyzer="char", ngram_range=(1, 2), dtype=np.float32))]).fit(normalized)
    matrix = features.transform(normalized)
    steps = [normalize, features]
    if extra is not None:
        extra.fit(matrix)
        matrix = extra.transform(matrix)
        steps.append(extra)
    classifier = CalibratedLinearClassifier(LogisticRegression(solver="newton-cholesky"), n_folds=2, n_jobs=1).fit(matrix, np.array(LABELS))
    return Pipeline(list(zip(names, [*steps, classifier], strict=True)))


def _bundle(pipeline: Pipeline) -> ModelBundle:
    return ModelBundle(pipeline, None, None, {"name": "test"})


def test_the_steps_are_read_by_name():
    pipeline = _fitted()
    assert model_steps(pipeline) == tuple(pipeline.named_steps[name] for name in ("normalize", "features", "classifier"))
    compiled = CompiledBundle(_bundle(pipeline))
    normalized = pipeline.named_steps["normalize"].transform(TEXTS)
    assert np.array_equal(compiled.intent.predict_proba(normalized), pipeline.predict_proba(TEXTS))
    explainer = Explainer(_bundle(pipeline))
    assert explainer.contributions(TEXTS[:2])[0].label == pipeline.predict(TEXTS[:1])[0]


def test_an_extra_step_is_refused_not_skipped():
    """A scaler between the features and the classifier: reading steps[1] and steps[-1] would explain the
    unscaled features with weights fitted on scaled ones."""
    pipeline = _fitted(names=("normalize", "features", "scale", "classifier"), extra=MaxAbsScaler())
    with pytest.raises(UnsupportedModel, match="scale"):
        CompiledBundle(_bundle(pipeline))
    with pytest.raises(UnsupportedExplanation, match=r"normalize -> features -> classifier"):
        Explainer(_bundle(pipeline))
    with pytest.raises(UnsupportedModel, match="scale"):  # the scikit-learn path of Predictor as well
        Predictor(_bundle(pipeline), compiled=False)


def test_the_scikit_learn_path_of_the_predictor_reads_the_steps_by_name():
    pipeline = _fitted()
    predicted = Predictor(_bundle(pipeline), compiled=False).predict(TEXTS)
    assert predicted["intent"].tolist() == pipeline.predict(TEXTS).tolist()


@pytest.mark.parametrize("names", [("normalize", "tfidf", "classifier"), ("normalize", "features", "clf")])
def test_a_renamed_step_is_refused(names):
    pipeline = _fitted(names=names)
    with pytest.raises(UnsupportedModel, match=r"are not normalize -> features -> classifier"):
        CompiledBundle(_bundle(pipeline))
    with pytest.raises(UnsupportedExplanation):
        Explainer(_bundle(pipeline))


def test_a_skipped_step_is_refused():
    pipeline = _fitted()
    pipeline.steps[0] = ("normalize", "passthrough")
    with pytest.raises(UnsupportedModel, match="normalize is 'passthrough'"):
        model_steps(pipeline)
    with pytest.raises(UnsupportedExplanation):
        Explainer(_bundle(pipeline))
