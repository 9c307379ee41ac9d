"""The project's custom estimators keep scikit-learn's estimator contract (`check_estimator`).

`CalibratedLinearClassifier` is run with a `LogisticRegression` inside, as the models use it (the
newton-cholesky solver: on these small dense problems lbfgs takes a second a fit, newton-cholesky
milliseconds, which keeps the check in the quick tier). The text
steps (`TextNormalizer`, `CompactTfidfVectorizer`) take strings, for which scikit-learn has only the
checks that apply to string input; they run too.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.utils.estimator_checks import parametrize_with_checks

from pipeline.estimators import CalibratedLinearClassifier, CompactTfidfVectorizer, TextNormalizer


def _logreg() -> LogisticRegression:
    return LogisticRegression(solver="newton-cholesky")

# Checks that cannot pass by design, with the reason (keep this list short).
CALIBRATED_EXPECTED_FAILURES = {
    name: "the calibration is fitted on out-of-fold scores: repeating a row changes the folds, and the "
    "calibration treats every out-of-fold message alike (sample_weight weights only the linear fits)"
    for name in ("check_sample_weight_equivalence_on_dense_data", "check_sample_weight_equivalence_on_sparse_data")
}


def _expected_failures(estimator) -> dict[str, str]:
    return CALIBRATED_EXPECTED_FAILURES if isinstance(estimator, CalibratedLinearClassifier) else {}


@parametrize_with_checks(
    [CalibratedLinearClassifier(_logreg()), TextNormalizer(), CompactTfidfVectorizer()],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_estimator_contract(estimator, check):
    check(estimator)


def _data(n: int = 60, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    X = rng.normal(size=(n, 5)) + y[:, None]
    return X, y


def test_calibrated_classifier_fits_with_groups_and_sample_weight():
    X, y = _data()
    groups = np.arange(len(y)) // 2
    weights = np.linspace(0.5, 2.0, len(y))
    model = CalibratedLinearClassifier(_logreg()).fit(sparse.csr_array(X), y, groups=groups, sample_weight=weights)
    assert model.n_features_in_ == X.shape[1]
    proba = model.predict_proba(sparse.csr_array(X))
    assert proba.shape == (len(y), 3) and np.allclose(proba.sum(axis=1), 1.0)
    # sample_weight reaches the linear fits
    unweighted = CalibratedLinearClassifier(_logreg()).fit(sparse.csr_array(X), y, groups=groups)
    assert not np.array_equal(model.estimator_.coef_, unweighted.estimator_.coef_)
    with pytest.raises(ValueError, match="sample_weight"):
        CalibratedLinearClassifier(_logreg()).fit(X, y, sample_weight=weights[:-1])


def test_calibrated_classifier_refuses_wrong_width_and_unfitted_use():
    X, y = _data()
    with pytest.raises(NotFittedError):
        CalibratedLinearClassifier(_logreg()).predict(X)
    model = CalibratedLinearClassifier(_logreg()).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        model.predict_proba(X[:, :4])


def test_calibrated_classifier_scores_float32_tfidf_rows_as_they_are():
    """No dtype conversion on the way in: the compiled path computes the same float32 products."""
    X, y = _data(classes=2)
    X32 = sparse.csr_array(np.abs(X).astype(np.float32))
    model = CalibratedLinearClassifier(_logreg()).fit(X32, y)
    want = np.asarray(X32 @ model.estimator_.coef_.T + model.estimator_.intercept_, dtype=np.float64).ravel()
    assert np.array_equal(model.decision_function(X32), want)


@pytest.mark.parametrize("classes", [2, 3])
def test_liblinear_weights_are_kept_in_the_features_dtype(classes):
    """LinearSVC returns float64 weights whatever its input: on float32 TF-IDF rows they are stored in
    float32 like the logistic regression's, so both message models score in one precision (and the
    compiled path reads their weights in one product); float64 rows keep float64 weights."""
    from sklearn.svm import LinearSVC

    X, y = _data(classes=classes)
    X32 = sparse.csr_array(np.abs(X).astype(np.float32))
    model = CalibratedLinearClassifier(LinearSVC(C=0.5, random_state=0), n_jobs=1).fit(X32, y)
    assert model.estimator_.coef_.dtype == np.float32 and model.estimator_.intercept_.dtype == np.float32
    want = np.asarray(X32 @ model.estimator_.coef_.T + model.estimator_.intercept_, dtype=np.float64)
    assert np.array_equal(model.decision_function(X32), want.ravel() if classes == 2 else want)
    # the weights are those of the float64 fit, rounded once
    reference = LinearSVC(C=0.5, random_state=0).fit(X32, y)
    assert np.array_equal(model.estimator_.coef_, reference.coef_.astype(np.float32))
    float64_model = CalibratedLinearClassifier(LinearSVC(C=0.5, random_state=0), n_jobs=1).fit(sparse.csr_array(np.abs(X)), y)
    assert float64_model.estimator_.coef_.dtype == np.float64


@pytest.mark.parametrize("classes", [2, 3])
def test_without_cross_fit_the_linear_model_is_the_cross_fitted_ones_and_recalibration_gives_the_same_model(classes):
    """`cross_fit=False` (training that recalibrates on held-out messages) skips the fold models only: the
    final linear model is the one fitted on every row either way, so after `recalibrate` on the same held-out
    rows both give the same probabilities."""
    from sklearn.svm import LinearSVC

    X, y = _data(n=90, classes=classes)
    rows = sparse.csr_array(np.abs(X).astype(np.float32))
    held_out, held_y = _data(n=30, classes=classes, seed=1)
    held_out = sparse.csr_array(np.abs(held_out).astype(np.float32))
    groups, weights = np.arange(len(y)) // 3, np.linspace(0.5, 2.0, len(y))
    for base in (LinearSVC(C=0.5, random_state=0), _logreg()):
        crossed = CalibratedLinearClassifier(base, n_jobs=1).fit(rows, y, groups=groups, sample_weight=weights)
        alone = CalibratedLinearClassifier(base, n_jobs=1, cross_fit=False).fit(rows, y, groups=groups, sample_weight=weights)
        assert np.array_equal(alone.estimator_.coef_, crossed.estimator_.coef_)
        assert np.array_equal(alone.decision_function(held_out), crossed.decision_function(held_out))
        # the cross-fitted calibration is there before recalibration; the other has none to give
        assert crossed.predict_proba(held_out).shape == (len(held_y), classes)
        with pytest.raises(NotFittedError, match="recalibrate"):
            alone.predict_proba(held_out)
        crossed.recalibrate(held_out, held_y)
        alone.recalibrate(held_out, held_y)
        assert np.array_equal(alone.predict_proba(held_out), crossed.predict_proba(held_out))
        assert np.array_equal(alone.predict(held_out), crossed.predict(held_out))


def test_a_refit_forgets_the_previous_calibration():
    X, y = _data(classes=3)
    model = CalibratedLinearClassifier(_logreg(), n_jobs=1).fit(X, y)
    assert hasattr(model, "temperature_")
    model.set_params(cross_fit=False).fit(X, y % 2)
    assert not hasattr(model, "temperature_") and not hasattr(model, "platt_")
    with pytest.raises(NotFittedError):
        model.predict_proba(X)


def test_a_model_saved_before_cross_fit_existed_loads_as_cross_fitted():
    X, y = _data(classes=3)
    model = CalibratedLinearClassifier(_logreg(), n_jobs=1).fit(X, y)
    state = model.__getstate__()
    del state["cross_fit"]
    restored = CalibratedLinearClassifier.__new__(CalibratedLinearClassifier)
    restored.__setstate__(state)
    assert restored.get_params()["cross_fit"] is True
    assert np.array_equal(restored.predict_proba(X), model.predict_proba(X))
