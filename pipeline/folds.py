"""Stratified group folds, the same folds as scikit-learn's `StratifiedGroupKFold`, found in seconds.

scikit-learn places each group with a Python loop that calls `np.std` and `np.isclose` once per group and fold: on the
default corpus (about 22,000 seed groups) one split took 5 s, and a training run makes eight of them (about a third of
its time). This class keeps scikit-learn's algorithm, its shuffle and its tie-breaking, and scores the candidate folds of
a group in one array operation, so the folds are identical (`tests/unit/test_folds.py` compares them with scikit-learn's).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils.multiclass import type_of_target

# np.isclose's defaults, applied to two finite floats in the same order of operations
_RTOL, _ATOL = 1e-05, 1e-08


class FastStratifiedGroupKFold(StratifiedGroupKFold):
    """`StratifiedGroupKFold` with the group placement vectorised over the candidate folds."""

    def _iter_test_indices(self, X, y, groups):
        rng = check_random_state(self.random_state)
        y = np.asarray(y)
        target_type = type_of_target(y)
        if target_type not in ("binary", "multiclass"):
            raise ValueError(f"Supported target types are: ('binary', 'multiclass'). Got {target_type!r} instead.")
        y = column_or_1d(y)
        _, y_inv, y_cnt = np.unique(y, return_inverse=True, return_counts=True)
        if np.all(self.n_splits > y_cnt):
            raise ValueError(f"n_splits={self.n_splits} cannot be greater than the number of members in each class.")
        if self.n_splits > np.min(y_cnt):
            warnings.warn(
                f"The least populated class in y has only {np.min(y_cnt)} members, which is less than"
                f" n_splits={self.n_splits}.",
                UserWarning,
                stacklevel=3,
            )
        n_classes = len(y_cnt)
        _, groups_inv, groups_cnt = np.unique(groups, return_inverse=True, return_counts=True)
        n_groups = len(groups_cnt)
        if self.n_splits > n_groups:
            raise ValueError(f"Cannot have number of splits n_splits={self.n_splits} greater than the number of groups: {n_groups}.")

        counts_per_group = np.zeros((n_groups, n_classes))
        np.add.at(counts_per_group, (groups_inv, y_inv), 1)
        if self.shuffle:
            perm = np.arange(n_groups)
            rng.shuffle(perm)
            counts_per_group = counts_per_group[perm]
            inv_perm = np.empty_like(perm)
            inv_perm[perm] = np.arange(perm.size)
            groups_inv = inv_perm[groups_inv]
        order = np.argsort(-np.std(counts_per_group, axis=1), kind="stable")

        k = self.n_splits
        counts_per_fold = np.zeros((k, n_classes))
        fold_of_group = np.empty(n_groups, dtype=np.int64)
        diagonal = np.arange(k)
        class_sizes = y_cnt.reshape(1, -1)
        for group in order:
            group_counts = counts_per_group[group]
            # candidate c: the fold counts with this group added to fold c; the same arithmetic as scikit-learn's
            candidates = np.repeat(counts_per_fold[np.newaxis], k, axis=0)
            candidates[diagonal, diagonal] += group_counts
            evals = np.mean(np.std(candidates / class_sizes, axis=1), axis=1).tolist()
            samples = counts_per_fold.sum(axis=1).tolist()
            best, min_eval, min_samples = 0, evals[0], samples[0]
            for fold in range(1, k):
                value = evals[fold]
                if value < min_eval or (abs(value - min_eval) <= _ATOL + _RTOL * abs(min_eval) and samples[fold] < min_samples):
                    best, min_eval, min_samples = fold, value, samples[fold]
            counts_per_fold[best] += group_counts
            fold_of_group[group] = best

        fold_of_row = fold_of_group[groups_inv]
        for fold in range(k):
            yield np.flatnonzero(fold_of_row == fold)
