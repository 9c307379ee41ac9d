"""The purchase model is fitted to convergence: where the solver stops must not decide the ranking.

With the library's default tolerance lbfgs stopped after 17-28 of the ~200 iterations the bundled data needs, and a
relabelling of 30 seeds moved the yardstick's purchase AP by -0.006 through the stopping point alone
(`data/seeds/chats/ROUND37_RULES.md`, CZ)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from pipeline.config import load_config
from pipeline.training.model import make_purchase_classifier


def weighted_sparse_problem() -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """TF-IDF-like sparse rows, a noisy linear label and the chats' weight of 5 on a third of the rows."""
    rng = np.random.default_rng(0)
    X = sp.random(4000, 3000, density=0.01, random_state=1, format="csr")
    X.data = np.log1p(rng.random(X.data.size) * 3)
    y = (X @ rng.normal(0, 3, 3000) + rng.normal(0, 0.5, 4000) > 1.0).astype(int)
    return X, y, np.where(rng.random(4000) < 0.3, 5.0, 1.0)


def test_the_configured_purchase_fit_reaches_the_optimum() -> None:
    linear = make_purchase_classifier(load_config()).estimator
    X, y, weight = weighted_sparse_problem()
    fitted = clone(linear).fit(X, y, sample_weight=weight)
    optimum = clone(linear).set_params(tol=1e-12, max_iter=50_000).fit(X, y, sample_weight=weight)
    assert fitted.n_iter_.max() < linear.max_iter
    gap = np.abs(fitted.coef_ - optimum.coef_).max() / np.abs(optimum.coef_).max()
    assert gap < 1e-3, f"the fit stops {gap:.3f} (relative) from the optimum"


def test_the_library_default_would_stop_early_on_this_problem() -> None:
    """The check above can fail: at the library's default tolerance the same fit stops far from the optimum."""
    default_tol = LogisticRegression().tol
    linear = clone(make_purchase_classifier(load_config()).estimator).set_params(tol=default_tol)
    X, y, weight = weighted_sparse_problem()
    fitted = clone(linear).fit(X, y, sample_weight=weight)
    optimum = clone(linear).set_params(tol=1e-12, max_iter=50_000).fit(X, y, sample_weight=weight)
    assert np.abs(fitted.coef_ - optimum.coef_).max() / np.abs(optimum.coef_).max() > 1e-2
