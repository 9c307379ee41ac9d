"""`FastStratifiedGroupKFold` gives scikit-learn's `StratifiedGroupKFold` folds exactly: the training runs that switched
to it calibrate on the same out-of-fold scores, so no shipped figure moves."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import StratifiedGroupKFold

from pipeline.folds import FastStratifiedGroupKFold


def _corpus_like(seed: int, n_groups: int, n_classes: int):
    """Groups of one to six messages, mostly of one class, with skewed class sizes: many groups tie on their spread,
    which is where the placement's tie-breaking decides."""
    rng = np.random.default_rng(seed)
    sizes = rng.choice([1, 1, 1, 2, 2, 3, 6], size=n_groups)
    groups = np.repeat(np.arange(n_groups), sizes)
    main_class = rng.choice(n_classes, size=n_groups, p=np.linspace(2, 1, n_classes) / np.linspace(2, 1, n_classes).sum())
    y = main_class[groups].copy()
    stray = rng.random(len(y)) < 0.15
    y[stray] = rng.integers(0, n_classes, stray.sum())
    return y, rng.permutation(groups) if seed % 2 else groups


def _folds(splitter, y, groups):
    return [(train.tolist(), test.tolist()) for train, test in splitter.split(np.zeros((len(y), 1)), y, groups)]


@pytest.mark.parametrize("n_classes", [2, 5, 20])
@pytest.mark.parametrize("n_splits", [3, 5])
@pytest.mark.parametrize("seed", [0, 1, 13])
def test_the_folds_are_scikit_learns(n_classes, n_splits, seed):
    y, groups = _corpus_like(seed, n_groups=400, n_classes=n_classes)
    for shuffle, random_state in ((True, seed), (False, None)):
        ours = _folds(FastStratifiedGroupKFold(n_splits, shuffle=shuffle, random_state=random_state), y, groups)
        theirs = _folds(StratifiedGroupKFold(n_splits, shuffle=shuffle, random_state=random_state), y, groups)
        assert ours == theirs


def test_string_groups_and_labels_and_a_generator_seed():
    y, groups = _corpus_like(7, n_groups=150, n_classes=4)
    labels = np.array(["affirm", "deny", "other", "stock"])[y]
    names = np.array([f"seed-{g:04d}" for g in groups])
    ours = _folds(FastStratifiedGroupKFold(4, shuffle=True, random_state=np.random.RandomState(3)), labels, names)
    theirs = _folds(StratifiedGroupKFold(4, shuffle=True, random_state=np.random.RandomState(3)), labels, names)
    assert ours == theirs
    # every group lands in exactly one test fold
    tested = np.concatenate([test for _, test in ours])
    assert sorted(tested.tolist()) == list(range(len(labels)))
    for _, test in ours:
        assert not set(names[test]) & set(names[np.setdiff1d(np.arange(len(names)), test)])


def test_it_refuses_what_scikit_learn_refuses():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="number of groups"):
        _folds(FastStratifiedGroupKFold(4), y, np.array([1, 1, 1, 1, 2, 2, 3, 3]))
    with pytest.raises(ValueError, match="target types"):
        _folds(FastStratifiedGroupKFold(2), np.array([0.5, 1.5, 2.5, 0.1, 0.2, 0.3]), np.arange(6))
    with pytest.warns(UserWarning, match="least populated class"):
        _folds(FastStratifiedGroupKFold(3), np.array([0, 0, 0, 0, 0, 1, 1]), np.arange(7))
