"""The compiled inference path gives the scikit-learn pipeline's probabilities (issue #12).

Reference: the fitted scikit-learn pipelines themselves (`Pipeline.predict_proba` on the raw texts, which
normalises them, and `Predictor(bundle, compiled=False)`). The compiled path gets the normalised texts, as
`Predictor` passes them. Compared on every fourth text of the bundled corpus (18,000: the batch path is one
sparse product whatever the text, and every text took 20 s more of the suite's critical path) and on every text of the
real-chat dev set (when ../shared is there), in one batch and one message per call (the other code path of the dot
product).
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.svm import LinearSVC

import pipeline.compiled as compiled_module
from pipeline.bundle import ModelBundle, load_bundle
from pipeline.compiled import CompiledBundle, CompiledModel, UnsupportedModel, compile_bundle
from pipeline.estimators import CalibratedLinearClassifier, CompactTfidfVectorizer, JiebaTokenizer, TextNormalizer, packaged_user_words
from pipeline.inference import Predictor
from tests.conftest import MESSAGES, SHARED

TOLERANCE = 1e-9
DEV = SHARED / "realchat-dev" / "messages.csv"

# Edge cases: empty, whitespace, one character, characters no model has seen, a long message (its n-gram
# counts pass the tf look-up table), and text the normaliser never produces (control characters, tabs).
LONG = "这件外套有黑色M码吗 包邮吗 今天能发货吗 " * 300
EDGE_TEXTS = [
    "",
    " ",
    "吗",
    "ꙮ𓀀𝔘🜁ᚠᛇ",
    "Ωμέγα ꙮꙮ ߷",
    "\ue000",
    "在吗\t\t亲\n\n包邮吗",
    LONG,
    ("好" * 5000) + ("的" * 5000),
    LONG[:4000],
]


def _texts(path) -> list[str]:
    return pd.read_csv(path, dtype=str, keep_default_na=False)["text"].tolist()


def _reference(bundle: ModelBundle, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's probabilities: the fitted pipelines on the raw texts."""
    return bundle.intent.predict_proba(texts), bundle.purchase.predict_proba(texts)[:, 1]


def _assert_same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray], what: str) -> None:
    (intent, purchase), (intent_ref, purchase_ref) = got, want
    assert intent.shape == intent_ref.shape and purchase.shape == purchase_ref.shape
    intent_diff = float(np.abs(intent - intent_ref).max()) if intent.size else 0.0
    purchase_diff = float(np.abs(purchase - purchase_ref).max()) if purchase.size else 0.0
    print(f"{what}: {len(intent)} texts, max abs difference intent {intent_diff:.3g}, purchase {purchase_diff:.3g}")
    assert intent_diff <= TOLERANCE, what
    assert purchase_diff <= TOLERANCE, what
    assert np.array_equal(intent.argmax(axis=1), intent_ref.argmax(axis=1)), what


@pytest.fixture(scope="module")
def bundle(corpus_bundle_dir) -> ModelBundle:
    return load_bundle(corpus_bundle_dir)


@pytest.fixture(scope="module")
def compiled(bundle) -> CompiledBundle:
    result = compile_bundle(bundle)
    assert result is not None, "the default model's structure must be compiled"
    return result


@pytest.fixture(scope="module")
def corpus_texts() -> list[str]:
    return _texts(MESSAGES)


@pytest.fixture(scope="module")
def dev_texts() -> list[str]:
    if not DEV.exists():
        pytest.skip("../shared/realchat-dev is not there")
    return _texts(DEV)


@pytest.fixture(scope="module")
def references() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's probabilities of each text set, computed once for the tests that compare with them."""
    return {}


def _reference_of(request, bundle, references, name: str) -> tuple[list[str], tuple[np.ndarray, np.ndarray]]:
    texts = request.getfixturevalue(f"{name}_texts")
    if name == "corpus":
        texts = texts[::4]
    if name not in references:
        references[name] = _reference(bundle, texts)
    return texts, references[name]


def _normalized(bundle: ModelBundle, texts: list[str]) -> list[str]:
    return bundle.intent.named_steps["normalize"].transform(texts)


def _one_per_call(compiled: CompiledBundle, normalized: list[str]) -> tuple[np.ndarray, np.ndarray]:
    rows = [compiled.probabilities([text]) for text in normalized]
    return np.vstack([intent for intent, _ in rows]), np.concatenate([purchase for _, purchase in rows])


def test_the_default_model_is_compiled_with_shared_features(compiled, monkeypatch):
    assert compiled.shared_features
    assert [type(f.vectorizer) for f in compiled.intent.features.families] == [CompactTfidfVectorizer, CompactTfidfVectorizer]
    features = compiled.intent.features
    # the linear SVM's weights are stored in the features' float32 like the purchase logistic regression's
    # (pipeline/estimators.py): both models' weights and intercepts side by side, read in one product
    assert compiled.intent.classifier.coef.dtype == np.float32 and compiled.purchase.classifier.coef.dtype == np.float32
    width = compiled.intent.classifier.width + compiled.purchase.classifier.width
    assert compiled._weights.shape == (features.n_features, width) and compiled._weights.dtype == np.float32
    assert compiled._intercepts is not None and compiled._intercepts.shape == (width,)
    transforms, products = [], []
    original = features.transform
    monkeypatch.setattr(features, "transform", lambda texts: transforms.append(len(texts)) or original(texts))
    product = compiled_module._linear_product
    monkeypatch.setattr(compiled_module, "_linear_product", lambda *args: products.append(args[3].shape) or product(*args))
    compiled.probabilities(["在吗 有货吗", "好的"])
    compiled.probabilities(["好的"])
    assert transforms == [2, 1] and products == [(features.n_features, width)] * 2
    # what compiling adds: the weights laid out per column, one idf over all columns, the tf tables
    assert compiled.nbytes == compiled._weights.nbytes + features._idf.nbytes + features._tf_tables.nbytes
    intent, purchase = compiled.probabilities([])
    assert intent.shape == (0, compiled.intent.classifier.width) and purchase.shape == (0,)


@pytest.mark.parametrize("name", ["corpus", "dev"])
def test_same_probabilities_as_scikit_learn_in_one_batch(request, bundle, compiled, references, name):
    texts, want = _reference_of(request, bundle, references, name)
    _assert_same(compiled.probabilities(_normalized(bundle, texts)), want, f"{name}, one batch")


@pytest.mark.parametrize("name", ["corpus", "dev"])
def test_same_probabilities_as_scikit_learn_one_message_per_call(request, bundle, compiled, references, name):
    texts, want = _reference_of(request, bundle, references, name)
    _assert_same(_one_per_call(compiled, _normalized(bundle, texts)), want, f"{name}, one message per call")


def test_edge_texts_alone_and_in_a_batch(bundle, compiled, corpus_texts):
    mixed = [text for pair in zip(EDGE_TEXTS, corpus_texts[: len(EDGE_TEXTS)]) for text in pair]
    for texts, what in ((EDGE_TEXTS, "edge texts"), (mixed, "edge texts among corpus texts")):
        want = _reference(bundle, texts)
        normalized = _normalized(bundle, texts)
        _assert_same(compiled.probabilities(normalized), want, f"{what}, one batch")
        _assert_same(_one_per_call(compiled, normalized), want, f"{what}, one per call")


def test_unnormalised_edge_texts_as_the_feature_step_sees_them(bundle, compiled):
    """Texts handed to the compiled path as they are (a raw 10k-character message, tabs, unseen
    characters): the same as the fitted feature step and classifiers on the same strings."""
    features = bundle.intent.steps[1][1].transform(EDGE_TEXTS)
    want = bundle.intent.steps[-1][1].predict_proba(features), bundle.purchase.steps[-1][1].predict_proba(features)[:, 1]
    _assert_same(compiled.probabilities(EDGE_TEXTS), want, "raw edge texts, one batch")
    _assert_same(_one_per_call(compiled, EDGE_TEXTS), want, "raw edge texts, one per call")


def test_unseen_characters_score_as_one_unseen_character_and_nothing_as_the_intercepts(bundle, compiled):
    """No n-gram of these is in the vocabulary but char_wb's word padding: they score as one unseen
    character does; an empty text has no feature at all, so its scores are the intercepts alone."""
    texts = ["ꙮ𓀀🜁ᚠᛇ", "ꙮ", ""]  # none changed by NFKC (𝔘 would become u)
    unseen, one, empty = compiled.probabilities(_normalized(bundle, texts))[0]
    np.testing.assert_array_equal(unseen, one)
    scores = compiled.intent.classifier.scores(np.zeros((1, compiled.intent.classifier.width), dtype=np.float32))
    np.testing.assert_allclose(empty, compiled.intent.classifier.predict_proba(scores)[0], rtol=0, atol=TOLERANCE)
    _assert_same(compiled.probabilities(_normalized(bundle, texts)), _reference(bundle, texts), "unseen characters")


def test_counts_beyond_the_tf_table_are_computed_the_same_way(bundle, corpus_texts, monkeypatch):
    monkeypatch.setattr(compiled_module, "TF_TABLE_SIZE", 2)  # every count >= 2 takes the computed path
    small = CompiledBundle(bundle)
    texts = corpus_texts[:2000] + EDGE_TEXTS
    normalized = _normalized(bundle, texts)
    want = _reference(bundle, texts)
    _assert_same(small.probabilities(normalized), want, "tf computed, one batch")
    _assert_same(_one_per_call(small, normalized[-300:]), (want[0][-300:], want[1][-300:]), "tf computed, one per call")


def test_predictor_outputs_are_those_of_the_scikit_learn_path(bundle, corpus_texts, dev_texts):
    texts = corpus_texts[::7] + dev_texts + EDGE_TEXTS
    fast, reference = Predictor(bundle), Predictor(bundle, compiled=False)
    assert fast._compiled is not None and reference._compiled is None
    got, want = fast.predict(texts, top_k=3), reference.predict(texts, top_k=3)
    pd.testing.assert_frame_equal(got, want)
    for text in texts[:200] + EDGE_TEXTS:
        pd.testing.assert_frame_equal(fast.predict([text], top_k=3), reference.predict([text], top_k=3))


@pytest.mark.parametrize("name", ["corpus", "dev"])
def test_one_message_outputs_are_the_batch_outputs(request, bundle, name):
    """`Predictor.predict_arrays` of one message (its own path, `_predict_one`) against the same message's
    row of the batch path and of the scikit-learn path: every column, value and dtype (the top-k too)."""
    texts = request.getfixturevalue(f"{name}_texts")
    texts = (texts[::60] if name == "corpus" else texts) + EDGE_TEXTS  # 1,200 corpus texts, four predictions each
    fast, reference = Predictor(bundle), Predictor(bundle, compiled=False)
    batch, sklearn_batch = fast.predict_arrays(texts, top_k=3), reference.predict_arrays(texts, top_k=3)
    for column in ("intent", "intent_confidence", "fallback", "purchase_intent", "purchase_score"):
        np.testing.assert_array_equal(batch[column], sklearn_batch[column])
    assert batch["top"] == sklearn_batch["top"]
    for row, text in enumerate(texts):
        for predictor in (fast, reference):
            one = predictor.predict_arrays([text], top_k=3)
            assert set(one) == set(batch)
            for column in ("intent", "intent_confidence", "fallback", "purchase_intent", "purchase_score"):
                assert one[column].dtype == batch[column].dtype and one[column].shape == (1,), column
                assert one[column][0] == batch[column][row], (column, text)
            assert one["top"] == [batch["top"][row]]
    assert fast.predict_arrays([texts[0]]).keys() == fast.predict_arrays(texts[:2]).keys()  # no `top` without top_k


def test_a_recalibration_after_compiling_is_honoured(bundle, corpus_texts):
    """train.py builds its Predictor before recalibrating on validation: the calibration is read live."""
    changed = copy.deepcopy(bundle)
    predictor = Predictor(changed)
    texts = corpus_texts[:500]
    before = predictor.predict_arrays(texts)["intent_confidence"]
    changed.intent.named_steps["classifier"].temperature_ *= 3.0
    slope, intercept = changed.purchase.named_steps["classifier"].platt_
    changed.purchase.named_steps["classifier"].platt_ = (slope * 0.5, intercept + 1.0)
    got = predictor._probabilities(_normalized(changed, texts))
    _assert_same(got, _reference(changed, texts), "after recalibration")
    assert not np.allclose(predictor.predict_arrays(texts)["intent_confidence"], before)


def test_a_refit_part_is_recompiled(bundle, corpus_texts):
    """A replaced estimator (here: float64 weights, so SciPy and the compiled path upcast the features)
    is noticed; the predictor recompiles and stays equal to scikit-learn."""
    changed = copy.deepcopy(bundle)
    predictor = Predictor(changed)
    first = predictor._compiled
    estimator = copy.deepcopy(changed.intent.named_steps["classifier"].estimator_)
    estimator.coef_ = estimator.coef_.astype(np.float64) * 1.5
    estimator.intercept_ = estimator.intercept_.astype(np.float64)
    changed.intent.named_steps["classifier"].estimator_ = estimator
    assert not first.is_current()
    texts = corpus_texts[:1000] + EDGE_TEXTS
    normalized = _normalized(changed, texts)
    got = predictor._probabilities(normalized)
    assert predictor._compiled is not first and predictor._compiled.is_current()
    assert predictor._compiled._weights is None  # float64 intent, float32 purchase weights: two products
    want = _reference(changed, texts)
    _assert_same(got, want, "float64 weights, one batch")
    _assert_same(_one_per_call(predictor._compiled, normalized[:200]), (want[0][:200], want[1][:200]), "float64 weights, one per call")
    # a new intercept object alone is noticed too
    second = predictor._compiled
    purchase_estimator = changed.purchase.named_steps["classifier"].estimator_
    purchase_estimator.intercept_ = purchase_estimator.intercept_ + np.float32(0.75)
    assert not second.is_current()
    want = _reference(changed, texts)
    _assert_same(predictor._probabilities(normalized), want, "new purchase intercept, one batch")
    assert predictor._compiled is not second


def test_a_second_model_with_three_classes_on_the_shared_features(bundle, corpus_texts):
    """Predictor reads column 1 of the second model's probabilities whatever its classes: so does the
    compiled path when that model is not binary."""
    frame = pd.read_csv(MESSAGES, dtype=str, keep_default_na=False).iloc[:800]  # enough rows for three classes
    groups = np.where(frame["intent"].isin(["greeting", "thanks"]), "a", np.where(frame["intent"] == "complaint", "b", "c"))
    features = bundle.intent.steps[1][1]
    # newton-cg: the same kind of fitted model as lbfgs' in a tenth of the time on these ~200,000 features
    second = CalibratedLinearClassifier(LogisticRegression(solver="newton-cg", max_iter=500), n_folds=3, random_state=0, n_jobs=1)
    second.fit(features.transform(_normalized(bundle, frame["text"].tolist())), groups)
    odd = copy.copy(bundle)
    odd.purchase = Pipeline([("normalize", bundle.intent.steps[0][1]), ("features", features), ("classifier", second)])
    compiled = CompiledBundle(odd)
    assert compiled.purchase.classifier.width == 3
    texts = corpus_texts[3000:4000] + EDGE_TEXTS
    normalized = _normalized(odd, texts)
    want = odd.intent.predict_proba(texts), odd.purchase.predict_proba(texts)[:, 1]
    _assert_same(compiled.probabilities(normalized), want, "three-class second model, one batch")
    _assert_same(_one_per_call(compiled, normalized[:200]), (want[0][:200], want[1][:200]), "three-class second model, one per call")


# --- structures that are not compiled: one warning, and the scikit-learn path's numbers ---------------


def _uncalibrated(bundle: ModelBundle, corpus_texts: list[str]) -> ModelBundle:
    """The intent classifier replaced by a plain LogisticRegression on the same fitted features."""
    texts = corpus_texts[:800]  # the structure is what is tested, not the fit: 800 rows cover the 20 intents
    labels = pd.read_csv(MESSAGES, dtype=str, keep_default_na=False)["intent"].tolist()[:800]
    features = bundle.intent.steps[1][1]
    classifier = LogisticRegression(solver="newton-cg", max_iter=300).fit(features.transform(_normalized(bundle, texts)), labels)
    intent = Pipeline([("normalize", bundle.intent.steps[0][1]), ("features", features), ("classifier", classifier)])
    return ModelBundle(intent, bundle.purchase, None, dict(bundle.manifest))


def _weighted_union(bundle: ModelBundle, corpus_texts: list[str]) -> ModelBundle:
    """The shared FeatureUnion with transformer_weights: the compiled path does not weight blocks."""
    changed = copy.deepcopy(bundle)
    changed.intent.steps[1][1].transformer_weights = {"words": 2.0}
    return changed


@pytest.mark.parametrize(("make", "reason"), [(_uncalibrated, "LogisticRegression"), (_weighted_union, "transformer_weights")])
def test_an_unrecognised_structure_warns_once_and_keeps_the_scikit_learn_path(bundle, corpus_texts, caplog, make, reason):
    odd = make(bundle, corpus_texts)
    with pytest.raises(UnsupportedModel, match=reason):
        CompiledBundle(odd)
    with caplog.at_level(logging.WARNING, logger="pipeline.compiled"):
        predictor = Predictor(odd)
        texts = corpus_texts[3000:3400] + EDGE_TEXTS
        got = predictor.predict(texts, top_k=3)
        for text in texts[:20]:
            predictor.predict([text])
    warnings = [record for record in caplog.records if record.name == "pipeline.compiled"]
    assert len(warnings) == 1 and reason in warnings[0].getMessage() and "scikit-learn" in warnings[0].getMessage()
    assert predictor._compiled is None
    pd.testing.assert_frame_equal(got, Predictor(odd, compiled=False).predict(texts, top_k=3))
    raw = [text for text, normalized in zip(texts, _normalized(odd, texts)) if normalized]
    intent, purchase = predictor._probabilities([text for text in _normalized(odd, texts) if text])
    np.testing.assert_allclose(intent, odd.intent.predict_proba(raw), rtol=0, atol=1e-12)
    np.testing.assert_allclose(purchase, odd.purchase.predict_proba(raw)[:, 1], rtol=0, atol=1e-12)


# --- other fitted settings than the default's -----------------------------------------------------------


def _vectorizers(words: dict, chars: dict):
    tokenizer = JiebaTokenizer(packaged_user_words())
    return (
        CompactTfidfVectorizer(tokenizer=tokenizer, token_pattern=None, lowercase=False, ngram_range=(1, 2), **words),
        CompactTfidfVectorizer(analyzer="char", lowercase=False, ngram_range=(1, 3), **chars),
    )


VARIANTS = {
    "float64, linear tf, LinearSVC": (
        {"dtype": np.float64, "sublinear_tf": False, "min_df": 2},
        {"dtype": np.float64, "sublinear_tf": False, "min_df": 2},
        LinearSVC(C=0.5, max_iter=3000, random_state=0),
        "intent",
        True,
    ),
    "binary words without idf, chars without norm, SGD": (
        {"dtype": np.float32, "binary": True, "use_idf": False, "sublinear_tf": True},
        {"dtype": np.float32, "norm": None, "sublinear_tf": True, "min_df": 2},
        SGDClassifier(loss="modified_huber", random_state=0),
        "intent",
        True,
    ),
    "one char_wb vectorizer, binary purchase model": (
        None,
        {"dtype": np.float32, "sublinear_tf": True, "analyzer": "char_wb", "ngram_range": (2, 4)},
        LogisticRegression(C=4.0, max_iter=2000),
        "purchase_intent",
        False,
    ),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_other_fitted_settings_match_scikit_learn(variant):
    words, chars, estimator, target, union = VARIANTS[variant]
    frame = pd.read_csv(MESSAGES, dtype=str, keep_default_na=False)
    train, test = frame.iloc[:4000:2], frame.iloc[1:4000:2]
    if union:
        features = FeatureUnion(list(zip(("words", "chars"), _vectorizers(words, chars))))
    else:
        features = CompactTfidfVectorizer(lowercase=False, **chars)
    model = Pipeline(
        [
            ("normalize", TextNormalizer()),
            ("features", features),
            ("classifier", CalibratedLinearClassifier(estimator, n_folds=3, random_state=0, n_jobs=1)),
        ]
    )
    model.fit(train["text"].tolist(), train[target].to_numpy())
    texts = test["text"].tolist() + EDGE_TEXTS
    want = model.predict_proba(texts)
    fast = CompiledModel.from_pipeline(model)
    normalized = model.named_steps["normalize"].transform(texts)
    batch = fast.predict_proba(normalized)
    single = np.vstack([fast.predict_proba([text]) for text in normalized])
    for got, what in ((batch, "one batch"), (single, "one per call")):
        diff = float(np.abs(got - want).max())
        print(f"{variant}, {what}: max abs difference {diff:.3g}")
        assert diff <= TOLERANCE
        assert np.array_equal(got.argmax(axis=1), want.argmax(axis=1))
    np.testing.assert_array_equal(fast.predict(normalized), model.predict(texts))


def test_one_message_softmax_and_platt_match_numpy_and_never_overflow():
    """`_one_message_probabilities` (one message per call, plain Python) against scipy's softmax and expit."""
    from scipy.special import expit, softmax

    rng = np.random.default_rng(3)
    for _ in range(200):
        scores = (rng.normal(size=21) * 5).tolist()
        temperature, platt = float(rng.uniform(0.1, 2)), (float(rng.normal()), float(rng.normal()))
        intent, positive = compiled_module._one_message_probabilities(scores, 20, temperature, platt)
        assert intent.shape == (1, 20) and positive.shape == (1,)
        assert np.abs(intent - softmax(np.array([scores[:20]]) / temperature, axis=1)).max() <= 1e-15
        assert positive[0] == expit(platt[0] * scores[20] + platt[1])  # expit's operations: bit for bit
    # a purchase score far on either side: 0 and 1 as expit gives them, no OverflowError from math.exp
    for score, want in ((-1e4, 0.0), (1e4, 1.0)):
        _, positive = compiled_module._one_message_probabilities([0.0] * 20 + [score], 20, 1.0, (1.0, 0.0))
        assert positive[0] == want == expit(score)
