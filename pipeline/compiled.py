"""The compiled inference path: the fitted TF-IDF + calibrated linear models scored without scikit-learn.

Each scikit-learn call (`FeatureUnion.transform`, `TfidfVectorizer.transform`, `predict_proba`) costs a
fixed overhead whatever the batch size (parameter validation, sparse-matrix construction, and in
`X @ coef_.T` a copy of the whole weight matrix), which is what limits one-message-per-call serving. What
prediction needs is taken from the fitted pipelines once, when the model is loaded:

- per n-gram family (each fitted `TfidfVectorizer` of the feature step): the vectorizer's own analyzer
  (`build_analyzer()`, so the same preprocessing, tokenizer and n-grams: features cannot drift), its
  vocabulary dict (n-gram -> column), its column offset in the stacked feature matrix, its idf, sublinear
  tf and norm;
- per model: the linear weights transposed (one contiguous row per feature column; the intent and purchase
  weights, and intercepts, side by side when the two models share their feature step), and the calibration
  (the softmax temperature, or Platt's slope and intercept), read from the fitted classifier at every call
  so that a `recalibrate` after loading is honoured. A refit part (another vectorizer, estimator, weight or
  intercept object) makes `is_current()` false, and `Predictor` compiles again.

A message is then scored with dict look-ups, a few numpy operations on arrays as long as its n-grams, and a
dot product over the weight rows of its columns. Every floating-point operation is the one scikit-learn and
SciPy perform, in their precision (the default model computes features and scores in float32) and order:
term counts in the vectorizer's dtype, `log(tf) + 1`, times idf, the l2 norm summed in double in column
order, values divided in double and stored in the dtype, then each score accumulated column by column in
the common dtype of features and weights (as SciPy's `csr_matvecs`), plus the intercept, then the
calibration in float64. The probabilities are those of the scikit-learn pipeline, bit for bit on the
corpus and the real-chat dev set for a batch; one message per call takes the softmax and Platt scaling in
plain Python (`_one_message_probabilities`), within a few units in the last place of them
(`tests/model/test_compiled.py` holds both within 1e-9 with identical labels).

A model of another structure (another classifier or feature step) is not compiled: `compile_bundle` logs
one warning with the reason and returns None, and `Predictor` keeps the scikit-learn path.
"""

from __future__ import annotations

import functools
import logging
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np
from scipy import sparse
from scipy.special import expit
from sklearn.feature_extraction.text import TfidfTransformer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.svm import LinearSVC

from pipeline.estimators import CalibratedLinearClassifier, CompactTfidfVectorizer

log = logging.getLogger(__name__)

# Exact types only: a subclass may override transform or decision_function, and the compiled path would
# then silently compute something else.
VECTORIZER_TYPES = (TfidfVectorizer, CompactTfidfVectorizer)
LINEAR_TYPES = (LogisticRegression, LinearSVC, SGDClassifier)
FLOAT_TYPES = (np.dtype(np.float32), np.dtype(np.float64))
TF_TABLE_SIZE = 4096  # tf values of counts below this are looked up; larger counts are computed the same way

_sequential_sum = functools.partial(functools.reduce, operator.add)  # left to right like a C loop (sum() may compensate)


class UnsupportedModel(ValueError):
    """The fitted model is not of a structure the compiled path reproduces exactly."""


MODEL_STEPS = ("normalize", "features", "classifier")  # the steps of a message-level model (pipeline/training/model.py)


def model_steps(pipeline) -> tuple:
    """The fitted (normalize, features, classifier) steps of a message-level model, read by name.

    Raises `UnsupportedModel` when the pipeline's steps are not exactly these, in this order: a renamed,
    missing, skipped ("passthrough") or extra step (a scaler, a selector) would otherwise be skipped or
    taken for another one by whoever reads the steps."""
    if not isinstance(pipeline, Pipeline):
        raise UnsupportedModel(f"{type(pipeline).__name__} is not a scikit-learn Pipeline")
    names = tuple(name for name, _ in pipeline.steps)
    if names != MODEL_STEPS:
        raise UnsupportedModel(f"pipeline steps {list(names)} are not {' -> '.join(MODEL_STEPS)}")
    steps = tuple(pipeline.named_steps[name] for name in MODEL_STEPS)
    skipped = [name for name, step in zip(MODEL_STEPS, steps, strict=True) if step is None or isinstance(step, str)]
    if skipped:
        raise UnsupportedModel(f"pipeline step {skipped[0]} is {pipeline.named_steps[skipped[0]]!r}, not a fitted step")
    return steps


def _tf_values(counts: np.ndarray, dtype: np.dtype, sublinear: bool) -> np.ndarray:
    """What `CountVectorizer._count_vocab` and `TfidfTransformer.transform` make of term counts: the
    counts in the vectorizer's dtype, then `np.log(data, data); data += 1.0` when sublinear."""
    data = counts.astype(dtype)
    if sublinear:
        np.log(data, data)
        data += 1.0
    return data


@dataclass(eq=False)
class _Family:
    """One fitted TF-IDF vectorizer: a block of columns of the feature matrix."""

    vectorizer: TfidfVectorizer
    analyzer: Callable[[str], list[str]]
    lookup: Callable  # vocabulary_.get
    offset: int
    width: int
    sublinear: bool
    binary: bool
    l2: bool

    @classmethod
    def from_vectorizer(cls, vectorizer, offset: int) -> _Family:
        name = type(vectorizer).__name__
        if type(vectorizer) not in VECTORIZER_TYPES:
            raise UnsupportedModel(f"feature transformer {name} is not a TfidfVectorizer")
        vocabulary = getattr(vectorizer, "vocabulary_", None)
        tfidf = getattr(vectorizer, "_tfidf", None)  # what TfidfVectorizer.transform applies after counting
        if not isinstance(vocabulary, dict) or not vocabulary or type(tfidf) is not TfidfTransformer:
            raise UnsupportedModel(f"{name} is not fitted")
        if vectorizer.input != "content":
            raise UnsupportedModel(f"{name} reads input={vectorizer.input!r}, not the text itself")
        if tfidf.norm not in ("l2", None):
            raise UnsupportedModel(f"{name} norm={tfidf.norm!r} (only 'l2' and None are compiled)")
        dtype = np.dtype(vectorizer.dtype)
        if dtype not in FLOAT_TYPES:
            raise UnsupportedModel(f"{name} dtype={dtype} (only float32 and float64 are compiled)")
        idf = getattr(tfidf, "idf_", None)
        if idf is not None and (idf.shape != (len(vocabulary),) or idf.dtype != dtype):
            raise UnsupportedModel(f"{name} idf_ does not match its vocabulary and dtype")
        return cls(
            vectorizer=vectorizer,
            analyzer=vectorizer.build_analyzer(),
            lookup=vocabulary.get,
            offset=offset,
            width=len(vocabulary),
            sublinear=bool(tfidf.sublinear_tf),
            binary=bool(vectorizer.binary),
            l2=tfidf.norm == "l2",
        )

    @property
    def idf(self) -> np.ndarray | None:
        return getattr(self.vectorizer._tfidf, "idf_", None)


class CompiledFeatures:
    """The feature step of a pipeline: a FeatureUnion of TF-IDF vectorizers, or one vectorizer.

    `transform(texts)` gives the CSR arrays (data, indices, indptr) of `step.transform(texts)` as
    `sparse.hstack` lays out the blocks: per row, family by family, columns ascending, value for value."""

    def __init__(self, step):
        self.step = step
        if type(step) is FeatureUnion:
            if step.transformer_weights:
                raise UnsupportedModel("the FeatureUnion has transformer_weights")
            transformers = [t for _, t in step.transformer_list if not (isinstance(t, str) and t == "drop")]
            if not transformers or any(isinstance(t, str) for t in transformers):
                raise UnsupportedModel("the FeatureUnion passes its input through or has no transformer")
        elif isinstance(step, FeatureUnion):
            raise UnsupportedModel(f"feature step {type(step).__name__} is not a FeatureUnion")
        else:
            transformers = [step]
        self.families: list[_Family] = []
        offset = 0
        for transformer in transformers:
            family = _Family.from_vectorizer(transformer, offset)
            self.families.append(family)
            offset += family.width
        self.n_features = offset
        dtypes = {np.dtype(family.vectorizer.dtype) for family in self.families}
        if len(dtypes) != 1:  # sparse.hstack would upcast the blocks
            raise UnsupportedModel(f"the feature blocks have different dtypes {sorted(map(str, dtypes))}")
        self.dtype = dtypes.pop()
        n_families = len(self.families)
        # tf of a count per family (row) and count (column); a count is never 0, larger counts are computed
        self._tf_tables = np.zeros((n_families, TF_TABLE_SIZE), dtype=self.dtype)
        for row, family in enumerate(self.families):
            self._tf_tables[row, 1:] = _tf_values(np.arange(1, TF_TABLE_SIZE), self.dtype, family.sublinear)
        # one idf over all columns; a family without idf is multiplied by 1, which changes no value
        self._idf = np.concatenate([f.idf if f.idf is not None else np.ones(f.width, self.dtype) for f in self.families])
        self._families = [(f.analyzer, f.lookup, f.offset, f.binary) for f in self.families]
        self._family_ids = np.arange(n_families)
        self._l2 = [f.l2 for f in self.families]
        self._any_l2 = any(self._l2)
        self._any_binary = any(f.binary for f in self.families)
        self._offsets = np.array([f.offset for f in self.families], dtype=np.int64)

    def transform(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(data, indices, indptr) of the feature matrix of `texts` (indices int64)."""
        if len(texts) == 1:
            indices, counts, lengths = self._count_one(texts[0])
        else:
            indices, counts, lengths = self._count_many(texts)
        data = self._values(indices, counts, lengths)
        if len(texts) == 1:
            return data, indices, np.array((0, len(indices)), dtype=np.int64)
        indptr = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(lengths.reshape(len(texts), len(self.families)).sum(axis=1), out=indptr[1:])
        return data, indices, indptr

    def _count_one(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`_count_vocab` + `sort_indices` for one text: (columns, counts, entries per family)."""
        columns: list[int] = []
        counts: list[int] = []
        lengths: list[int] = []
        for analyzer, lookup, offset, binary in self._families:
            found: dict[int, int] = {}
            for column in map(lookup, analyzer(text), repeat(-1)):
                found[column] = found.get(column, 0) + 1
            found.pop(-1, None)  # n-grams outside the vocabulary
            ordered = sorted(found)
            columns.extend([offset + j for j in ordered] if offset else ordered)
            counts.extend([1] * len(ordered) if binary else [found[j] for j in ordered])
            lengths.append(len(ordered))
        return np.array(columns, dtype=np.int64), np.array(counts, dtype=np.int64), np.array(lengths, dtype=np.int64)

    def _count_many(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The same for many texts: n-grams looked up in Python, counted and sorted by numpy."""
        n_families = len(self.families)
        n_segments = len(texts) * n_families  # a segment is (text, family), in row-major order
        found: list[int] = []  # the vocabulary column of every n-gram, -1 outside the vocabulary
        sizes: list[int] = []  # n-grams per segment
        lookups = [(analyzer, lookup) for analyzer, lookup, _, _ in self._families]
        for text in texts:
            for analyzer, lookup in lookups:
                grams = analyzer(text)
                found.extend(map(lookup, grams, repeat(-1)))
                sizes.append(len(grams))
        columns = np.array(found, dtype=np.int64)
        segment = np.repeat(np.arange(n_segments, dtype=np.int64), sizes)
        known = columns >= 0
        if not known.all():
            columns, segment = columns[known], segment[known]
        if n_families > 1:
            columns += self._offsets[segment % n_families]
        # one key per (segment, column): sorted, its runs are the counts
        key = segment * self.n_features + columns
        key.sort()
        if len(key):
            first = np.empty(len(key), dtype=bool)
            first[0] = True
            np.not_equal(key[1:], key[:-1], out=first[1:])
            starts = np.flatnonzero(first)
            counts = np.diff(np.append(starts, len(key)))
            key = key[starts]
        else:
            counts = key
        segment, columns = np.divmod(key, self.n_features)
        if self._any_binary:
            binary = np.array([f.binary for f in self.families])
            counts = np.where(binary[segment % n_families], 1, counts)
        return columns, counts, np.bincount(segment, minlength=n_segments)

    def _values(self, indices: np.ndarray, counts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """TF-IDF values of the entries, as `TfidfTransformer.transform` computes them block by block."""
        n_families = len(self.families)
        n_rows = len(lengths) // n_families
        if n_families == 1:
            family = 0
        else:
            family = np.repeat(self._family_ids if n_rows == 1 else np.tile(self._family_ids, n_rows), lengths)
        if len(counts) and counts.max() >= TF_TABLE_SIZE:
            spill = counts >= TF_TABLE_SIZE
            data = self._tf_tables[family, np.where(spill, 1, counts)]
            family = np.broadcast_to(family, counts.shape)
            for f, tf_family in enumerate(self.families):
                mask = spill & (family == f)
                data[mask] = _tf_values(counts[mask], self.dtype, tf_family.sublinear)
        else:
            data = self._tf_tables[family, counts]
        data *= self._idf[indices]  # `X.data *= self.idf_[X.indices]`
        if not self._any_l2:
            return data
        # sklearn's _inplace_csr_row_normalize_l2 on each block row: the squares taken in the dtype, summed
        # in double in column order, every value divided by the square root in double and stored back.
        squares = (data * data).astype(np.float64).tolist()
        norms = [1.0] * len(lengths)
        l2 = self._l2 * n_rows
        start = 0
        for segment, length in enumerate(lengths.tolist()):
            if length and l2[segment]:
                total = _sequential_sum(squares[start : start + length], 0.0)
                if total != 0.0:
                    norms[segment] = math.sqrt(total)
            start += length
        return (data.astype(np.float64) / np.repeat(norms, lengths)).astype(self.dtype)


def _linear_product(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, weights: np.ndarray, n_features: int) -> np.ndarray:
    """`X @ weights` for the CSR rows X and dense weights (n_features, width), as SciPy computes it.

    Several rows: SciPy itself (`csr_matvecs`, what `X @ coef_.T` runs). One row: its values times its
    weight rows, accumulated in column order in the common dtype, starting from 0 (`y[k] += a * x[k]`)."""
    n_rows = len(indptr) - 1
    if n_rows != 1:
        return sparse.csr_array((data, indices, indptr), shape=(n_rows, n_features)) @ weights
    dtype = np.result_type(data.dtype, weights.dtype)
    if not len(data):
        return np.zeros((1, weights.shape[1]), dtype=dtype)
    products = data.astype(dtype, copy=False)[:, None] * weights[indices].astype(dtype, copy=False)
    return np.add.accumulate(products, axis=0)[-1:]


class CompiledClassifier:
    """A fitted `CalibratedLinearClassifier` over a linear model: scores and calibrated probabilities."""

    def __init__(self, classifier, n_features: int):
        if type(classifier) is not CalibratedLinearClassifier:
            raise UnsupportedModel(f"classifier {type(classifier).__name__} is not a CalibratedLinearClassifier")
        estimator = getattr(classifier, "estimator_", None)
        if estimator is None:
            raise UnsupportedModel("the classifier is not fitted")
        if type(estimator) not in LINEAR_TYPES:
            names = ", ".join(t.__name__ for t in LINEAR_TYPES)
            raise UnsupportedModel(f"calibrated estimator {type(estimator).__name__} is not one of {names}")
        coef = getattr(estimator, "coef_", None)
        if not isinstance(coef, np.ndarray) or coef.ndim != 2 or coef.shape[1] != n_features or coef.dtype not in FLOAT_TYPES:
            raise UnsupportedModel(f"the linear weights do not match the {n_features} features")
        n_classes = len(classifier.classes_)
        self.binary = n_classes == 2
        if coef.shape[0] != (1 if self.binary else n_classes):
            raise UnsupportedModel(f"{coef.shape[0]} weight rows for {n_classes} classes")
        if not hasattr(classifier, "platt_" if self.binary else "temperature_"):
            raise UnsupportedModel("the classifier is not calibrated")
        self.classifier = classifier
        self.estimator = estimator
        self.coef = coef
        self.width = coef.shape[0]
        self.n_features = n_features

    @functools.cached_property
    def weights(self) -> np.ndarray:
        """`coef_.T` laid out as `X @ coef_.T` reads it (C order), built on first use."""
        return np.ascontiguousarray(self.coef.T)

    def scores(self, product: np.ndarray) -> np.ndarray:
        """`decision_function` from the product of the features with the weights: `_scores` adds the
        intercepts and returns float64, one column raveled."""
        return _one_column_raveled(np.asarray(product + self.estimator.intercept_, dtype=np.float64))

    def positive_proba(self, scores: np.ndarray) -> np.ndarray:
        """The second column of `predict_proba` of a binary model (Platt scaling of the scores)."""
        slope, intercept = self.classifier.platt_
        return expit(slope * scores + intercept)

    def predict_proba(self, scores: np.ndarray) -> np.ndarray:
        """`CalibratedLinearClassifier.predict_proba` from the decision scores (scipy's softmax, inlined)."""
        if self.binary:
            positive = self.positive_proba(scores)
            return np.column_stack([1.0 - positive, positive])
        scaled = scores / self.classifier.temperature_
        exp_shifted = np.exp(scaled - np.max(scaled, axis=1, keepdims=True))
        return exp_shifted / np.sum(exp_shifted, axis=1, keepdims=True)


class CompiledModel:
    """One fitted pipeline (normalize -> TF-IDF features -> calibrated linear classifier), compiled.

    `predict_proba(normalized)` equals `named_steps["classifier"].predict_proba(named_steps["features"].transform(normalized))`
    for texts already normalised, as `Predictor` passes them."""

    def __init__(self, pipeline, features: CompiledFeatures, classifier: CompiledClassifier):
        self.pipeline = pipeline
        self.features = features
        self.classifier = classifier
        self.classes_ = classifier.classifier.classes_
        self._parts = _fitted_parts(pipeline)

    @classmethod
    def from_pipeline(cls, pipeline, features: CompiledFeatures | None = None) -> CompiledModel:
        """Compile a fitted pipeline; `features` is reused when it was compiled from this pipeline's feature
        step (the same fitted object shared by two pipelines). Raises `UnsupportedModel` otherwise."""
        if type(pipeline) is not Pipeline:  # a subclass may transform or predict otherwise
            raise UnsupportedModel(f"{type(pipeline).__name__} is not a scikit-learn Pipeline")
        _, step, classifier = model_steps(pipeline)
        if features is None or features.step is not step:
            features = CompiledFeatures(step)
        return cls(pipeline, features, CompiledClassifier(classifier, features.n_features))

    def is_current(self) -> bool:
        """False when a fitted part this was compiled from has been replaced since (a refit)."""
        return _same(_fitted_parts(self.pipeline), self._parts)

    def decision_function(self, normalized: Sequence[str]) -> np.ndarray:
        data, indices, indptr = self.features.transform(normalized)
        product = _linear_product(data, indices, indptr, self.classifier.weights, self.features.n_features)
        return self.classifier.scores(product)

    def predict_proba(self, normalized: Sequence[str]) -> np.ndarray:
        return self.classifier.predict_proba(self.decision_function(normalized))

    def predict(self, normalized: Sequence[str]) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(normalized), axis=1)]


def _fitted_parts(pipeline, known_step=None) -> list:
    """Every fitted object a compiled pipeline was built from, read afresh from the pipeline: a refit or a
    replaced step shows as a different object (a recalibration does not: calibration is read per call).
    Run at every call, so the steps are read from `pipeline.steps` (no `named_steps`, which builds a Bunch
    each time); the names were checked when compiling, and a pipeline of another length never matches."""
    steps = [step for _, step in pipeline.steps]
    if len(steps) != len(MODEL_STEPS):
        return [pipeline, *steps]
    normalizer, step, classifier = steps
    parts = [pipeline, normalizer, step, classifier]
    if step is not known_step:  # a feature step shared with a pipeline listed already is read once
        parts.append(getattr(step, "transformer_weights", None))
        for transformer in [t for _, t in step.transformer_list] if isinstance(step, FeatureUnion) else [step]:
            tfidf = getattr(transformer, "_tfidf", None)
            parts += [transformer, getattr(transformer, "vocabulary_", None), tfidf, getattr(tfidf, "idf_", None)]
    estimator = getattr(classifier, "estimator_", None)
    parts += [estimator, getattr(estimator, "coef_", None), getattr(estimator, "intercept_", None)]
    return parts


def _same(current: list, recorded: list) -> bool:
    return len(current) == len(recorded) and all(map(operator.is_, current, recorded))


class CompiledBundle:
    """The message-level models of a bundle, compiled. When the intent and purchase models share their
    fitted feature step, features are computed once and both weight matrices are read in one product."""

    def __init__(self, bundle):
        self.bundle = bundle
        self.intent = CompiledModel.from_pipeline(bundle.intent)
        self.purchase = None
        self._weights = None  # (n_features, intent width + purchase width) when the features are shared
        self._intercepts = None  # both intercepts side by side, when they are arrays of one dtype
        if bundle.purchase is not None:
            self.purchase = CompiledModel.from_pipeline(bundle.purchase, features=self.intent.features)
            intent_coef, purchase_coef = self.intent.classifier.coef, self.purchase.classifier.coef
            if self.shared_features and intent_coef.dtype == purchase_coef.dtype:
                # columns are independent in the product, so side by side they give the same numbers
                self._weights = np.ascontiguousarray(np.vstack([intent_coef, purchase_coef]).T)
                intercepts = self.intent.classifier.estimator.intercept_, self.purchase.classifier.estimator.intercept_
                if all(isinstance(i, np.ndarray) and i.ndim == 1 for i in intercepts) and intercepts[0].dtype == intercepts[1].dtype:
                    self._intercepts = np.concatenate(intercepts)  # added as `X @ coef_.T + intercept_` adds each
        self._parts = self._fitted_parts()

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays compiling added to the loaded model (the weights laid out per column, the
        idf over all columns, the tf tables); vocabularies and analyzers are the fitted ones, shared."""
        models = [self.intent] + ([self.purchase] if self.purchase is not None else [])
        features = {id(model.features): model.features for model in models}.values()
        arrays = [self._weights] + [f._idf for f in features] + [f._tf_tables for f in features]
        arrays += [model.classifier.__dict__.get("weights") for model in models]  # built only when used alone
        return sum(array.nbytes for array in arrays if array is not None)

    @property
    def shared_features(self) -> bool:
        return self.purchase is not None and self.purchase.features is self.intent.features

    def _fitted_parts(self) -> list:
        intent, purchase = self.bundle.intent, self.bundle.purchase
        parts = [intent, purchase, *_fitted_parts(intent)]
        if purchase is not None:
            # a feature step shared with the intent model is checked with it already (a refit of it in place,
            # or another step object in either pipeline, still shows)
            intent_step = intent.steps[1][1] if len(intent.steps) == len(MODEL_STEPS) else None
            parts += _fitted_parts(purchase, known_step=intent_step)
        return parts

    def is_current(self) -> bool:
        """False when the bundle's models or a fitted part of them were replaced since compiling. A
        recalibration needs no recompiling: the calibration is read at every call."""
        return _same(self._fitted_parts(), self._parts)

    def probabilities(self, normalized: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """What `Predictor._probabilities` returns: intent probabilities (n, classes) and the purchase
        model's probability of its positive class (n,), or None without a purchase model."""
        intent, purchase = self.intent, self.purchase
        if purchase is None:
            return intent.predict_proba(normalized), None
        if not self.shared_features:
            return intent.predict_proba(normalized), purchase.predict_proba(normalized)[:, 1]
        features = intent.features
        data, indices, indptr = features.transform(normalized)
        if self._weights is None:  # weights of two dtypes (a linear SVM's float64 beside a float32 logistic
            # regression, in bundles trained before `estimators._weights_in_dtype`): one product each, in its own
            # dtype as scikit-learn computes it; the features once
            intent_scores, purchase_scores = (
                model.classifier.scores(_linear_product(data, indices, indptr, model.classifier.weights, features.n_features))
                for model in (intent, purchase)
            )
        else:
            product = _linear_product(data, indices, indptr, self._weights, features.n_features)
            width = intent.classifier.width
            if self._intercepts is None:
                intent_scores, purchase_scores = intent.classifier.scores(product[:, :width]), purchase.classifier.scores(product[:, width:])
            elif len(product) == 1 and not intent.classifier.binary and purchase.classifier.binary:
                return _one_message_probabilities((product[0] + self._intercepts).tolist(), width, intent.classifier.classifier.temperature_,
                                                  purchase.classifier.classifier.platt_)
            else:
                scores = np.asarray(product + self._intercepts, dtype=np.float64)
                intent_scores, purchase_scores = _one_column_raveled(scores[:, :width]), _one_column_raveled(scores[:, width:])
        classifier = purchase.classifier
        positive = classifier.positive_proba(purchase_scores) if classifier.binary else classifier.predict_proba(purchase_scores)[:, 1]
        return intent.classifier.predict_proba(intent_scores), positive


def _one_message_probabilities(scores: list[float], width: int, temperature: float, platt: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The softmax and Platt scaling of one message's scores in plain Python: on 21 numbers numpy's per-call
    cost is twice the arithmetic. The same operations in float64. The purchase probability is expit's, bit
    for bit; in the softmax, `math.exp` and a left-to-right sum instead of numpy's vectorised exp (AVX-512 on
    this machine) and pairwise sum differ from them by a few units in the last place (at most 6.7e-16 on
    the real chats of the speed benchmark)."""
    scaled = [score / temperature for score in scores[:width]]
    top = max(scaled)
    exps = [math.exp(value - top) for value in scaled]
    total = _sequential_sum(exps, 0.0)
    slope, intercept = platt
    z = slope * scores[width] + intercept
    try:
        positive = 1.0 / (1.0 + math.exp(-z))  # scipy's expit, operation for operation
    except OverflowError:  # exp(-z) is inf in C: expit gives 0
        positive = 0.0
    return np.array([[value / total for value in exps]]), np.array([positive])


def _one_column_raveled(scores: np.ndarray) -> np.ndarray:
    return scores.ravel() if scores.shape[1] == 1 else scores


def compile_bundle(bundle) -> CompiledBundle | None:
    """The compiled bundle, or None, with one warning saying why, when its structure is not one the
    compiled path reproduces exactly: the caller then scores with the scikit-learn pipelines."""
    try:
        return CompiledBundle(bundle)
    except UnsupportedModel as exc:
        log.warning("model %s is not compiled (%s): predictions use the scikit-learn pipelines", getattr(bundle, "name", "?"), exc)
        return None
