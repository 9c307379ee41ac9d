"""The custom pieces of the models: normalisation step, tokenizers and the calibrated linear classifier.

Everything here is imported by serving, so it stays small and free of training-only dependencies.
Tokenizers are module-level classes (picklable, and serialisable by skops as plain state).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
from importlib import resources
from importlib.metadata import PackageNotFoundError, version as package_version

import numpy as np
from scipy import sparse
from scipy.optimize import minimize_scalar
from scipy.special import expit, softmax
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.svm import LinearSVC
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from pipeline.text import MAX_CHARS, normalize
from pipeline.folds import FastStratifiedGroupKFold

_JIEBA_CACHE: dict[tuple[str, str], object] = {}
_JIEBA_LOCK = threading.Lock()
_EN_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
log = logging.getLogger(__name__)

# jieba 0.42's own patterns, here so that a segmenter other than jieba splits text exactly as jieba.cut does
# (`tests/unit/test_tokenize.py` holds them equal to jieba's): word runs (`jieba.re_han_default`), the
# whitespace between them (`jieba.re_skip_default`), and how its HMM step cuts non-Han text
# (`jieba.finalseg.re_skip`).
WORD_RUNS = re.compile("([\u4E00-\u9FD5a-zA-Z0-9+#&\\._%\\-]+)", re.U)
SKIPS = re.compile("(\r\n|\\s)", re.U)
HMM_NON_HAN = re.compile(r"([a-zA-Z0-9]+(?:\.\d+)?%?)")
_HAN = re.compile("[\u4E00-\u9FD5]")
_ONLY_HAN = re.compile("[\u4E00-\u9FD5]+")

DEFAULT_SEGMENTER = "rjieba"  # what a new tokenizer cuts with
LEGACY_SEGMENTER = "jieba"  # what a tokenizer saved before the segmenter was recorded was fitted with
SEGMENTERS = ("jieba", "rjieba")


class SegmenterUnavailable(RuntimeError):
    """The segmenter a model was fitted with is not installed (or not one we know): another one would cut
    words differently, so the model is refused rather than fed other tokens."""


def installed_segmenter(name: str) -> str:
    """`name==version` of the installed segmenter `name`; `SegmenterUnavailable` when it is not installed."""
    if name not in SEGMENTERS:
        raise SegmenterUnavailable(f"unknown segmenter {name!r} (known: {', '.join(SEGMENTERS)})")
    try:
        return f"{name}=={package_version(name)}"
    except PackageNotFoundError:
        raise SegmenterUnavailable(
            f"this model's tokenizer was fitted with the segmenter {name}, which is not installed here; install it "
            f"(`pip install {name}`, or the version in the model's manifest): another segmenter cuts words differently"
        ) from None


def check_segmenter(recorded: str) -> None:
    """Refuse a segmenter that is not installed; warn when another version of it is (its cuts may differ)."""
    name, _, version = recorded.partition("==")
    installed = installed_segmenter(name)
    if version and installed != recorded:
        log.warning("the model's tokenizer was fitted with %s, %s is installed: its word cuts may differ", recorded, installed)


def packaged_user_words() -> tuple[str, ...]:
    """The e-commerce user dictionary shipped with the package (one word per line, optional freq/tag)."""
    text = resources.files("pipeline.resources").joinpath("userdict.txt").read_text(encoding="utf-8")
    return parse_user_dict(text)


def parse_user_dict(text: str) -> tuple[str, ...]:
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entries.append(line)
    return tuple(entries)


BLOCK_CACHE_SIZE = 1 << 17  # memoised jieba runs per dictionary (~20 MB when full)


def _user_entries(user_words: tuple[str, ...]):
    """(word, frequency or None) of each user dictionary entry (`word [freq] [tag]`; the tag is not used)."""
    for entry in user_words:
        parts = entry.split()
        yield parts[0], int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def _cut_block(tokenizer, block: str) -> tuple[str, ...]:
    return tuple(tokenizer.lcut(block, HMM=True))


def _cut_block_rjieba(segmenter, block: str) -> tuple[str, ...]:
    """rjieba's cut of one word run, with its non-Han text cut as jieba's HMM step cuts it.

    jieba-rs keeps ASCII joined by `_` or `-` whole (`t_t`, `i-size`) where jieba's HMM step splits each
    stretch of non-Han characters it is given on `finalseg.re_skip` (`t / _ / t`). So each stretch of rjieba
    tokens without a Han character that are not dictionary words (`c++`, `c#` are, and both keep them) is
    joined and split that way. A run of Han characters only is rjieba's cut as it is."""
    tokens = segmenter.cut(block, True)
    if _ONLY_HAN.fullmatch(block):
        return tuple(tokens)
    out: list[str] = []
    pending: list[str] = []
    for token in tokens:
        if _HAN.search(token) or (len(token) > 1 and segmenter.has_word(token)):
            if pending:
                out.extend(piece for piece in HMM_NON_HAN.split("".join(pending)) if piece)
                pending = []
            out.append(token)
        else:
            pending.append(token)
    if pending:
        out.extend(piece for piece in HMM_NON_HAN.split("".join(pending)) if piece)
    return tuple(out)


def _build_segmenter(name: str, user_words: tuple[str, ...]):
    """(the segmenter with the user words, its memoised word-run cutter)."""
    if name == "rjieba":
        import rjieba

        segmenter = rjieba.Jieba()
        for word, freq in _user_entries(user_words):
            segmenter.add_word(word, freq, None)
        cut = functools.partial(_cut_block_rjieba, segmenter)
    else:
        import jieba

        # jieba logs its dictionary loading at DEBUG through its own stderr handler *and* the
        # root logger's, so every CLI run printed each line twice: only its warnings are kept.
        jieba.setLogLevel(logging.WARNING)
        segmenter = jieba.Tokenizer()
        segmenter.initialize()
        for word, freq in _user_entries(user_words):
            segmenter.add_word(word, freq=freq)
        cut = functools.partial(_cut_block, segmenter)
    return segmenter, functools.lru_cache(maxsize=BLOCK_CACHE_SIZE)(cut)


class JiebaTokenizer:
    """jieba word segmentation with a user dictionary that travels inside the model.

    The dictionary is state of the tokenizer (so of the fitted model), not of the process: two models
    with different dictionaries can be served side by side. So is the segmenter that cuts the word runs
    (`segmenter`, `name==version`): rjieba (jieba-rs, 10x faster than jieba on unseen text, the same tokens
    but on rare near-ties of the route, benchmarks/RESULTS.md "Segmenters") for new models; a tokenizer
    saved before it was recorded means jieba, and keeps cutting with jieba. Loading a model whose segmenter
    is not installed raises `SegmenterUnavailable`.
    """

    def __init__(self, user_words: tuple[str, ...] = (), segmenter: str | None = None):
        self.user_words = tuple(user_words)
        self.segmenter = segmenter if segmenter is not None else installed_segmenter(DEFAULT_SEGMENTER)
        check_segmenter(self.segmenter)

    @property
    def segmenter_name(self) -> str:
        return self.segmenter.partition("==")[0]

    def __setstate__(self, state: dict) -> None:
        """Unpickling and skops loading: no `segmenter` recorded means jieba; a segmenter that is not
        installed is refused here, when the model is loaded, rather than at its first message."""
        state = dict(state)
        state.setdefault("segmenter", LEGACY_SEGMENTER)
        check_segmenter(state["segmenter"])
        self.__dict__.update(state)

    def __getstate__(self) -> dict:
        """The user words and the segmenter only: the reference to the built segmenter is process state."""
        state = dict(self.__dict__)
        state.pop("_built", None)
        return state

    def _segmenter(self):
        """(the segmenter with the user words, its memoised run cutter, jieba's word-run and whitespace
        patterns), built once per segmenter and dictionary, and kept on the instance: finding it again by
        the dictionary's SHA-256 took 4 µs, most of a memoised call."""
        built = self.__dict__.get("_built")
        if built is not None:
            return built
        key = (self.segmenter_name, hashlib.sha256("\n".join(self.user_words).encode("utf-8")).hexdigest())
        built = _JIEBA_CACHE.get(key)
        if built is None:
            with _JIEBA_LOCK:
                built = _JIEBA_CACHE.get(key)
                if built is None:
                    segmenter, cut_block = _build_segmenter(self.segmenter_name, self.user_words)
                    built = _JIEBA_CACHE[key] = (segmenter, cut_block, WORD_RUNS, SKIPS)
        self._built = built
        return built

    def warm_up(self) -> None:
        self("预热一下分词器")

    def __call__(self, text: str) -> list[str]:
        """`jieba.Tokenizer.lcut(text, HMM=True)` without whitespace tokens, token for token (with rjieba:
        but for the near-ties documented in benchmarks/RESULTS.md).

        jieba cuts each run of word characters on its own (`WORD_RUNS`); chat messages repeat the same
        runs endlessly (在吗, 包邮吗, 有货吗), so cut runs are memoised: 2.5-3x faster on the corpus and the
        flagging benchmark (`tests/unit/test_tokenize.py` checks the tokens are jieba's)."""
        _, cut_block, word_runs, skips = self._segmenter()
        tokens: list[str] = []
        for block in word_runs.split(text):
            if not block:
                continue
            if word_runs.match(block):
                tokens.extend(cut_block(block))
            else:  # what jieba.cut yields for the runs between: whitespace runs and single characters
                for piece in skips.split(block):
                    if skips.match(piece):
                        tokens.append(piece)
                    else:
                        tokens.extend(piece)
        return [token for token in tokens if not token.isspace()]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JiebaTokenizer) and (other.user_words, other.segmenter) == (self.user_words, self.segmenter)

    def __hash__(self) -> int:
        return hash((self.user_words, self.segmenter))


class EnglishTokenizer:
    """Lower-case word tokens for English (and other space-separated) data; punctuation kept as tokens."""

    def warm_up(self) -> None:
        return None

    def __call__(self, text: str) -> list[str]:
        return _EN_TOKEN_RE.findall(text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EnglishTokenizer)

    def __hash__(self) -> int:
        return hash(EnglishTokenizer)


class TextNormalizer(TransformerMixin, BaseEstimator):
    """The first step of every model: `pipeline.text.normalize`, so training and serving cannot diverge."""

    def __init__(self, max_chars: int = MAX_CHARS):
        self.max_chars = max_chars

    def fit(self, X, y=None):
        self.n_features_in_ = 1
        return self

    def transform(self, X):
        max_chars = getattr(self, "max_chars", MAX_CHARS)  # models saved before the setting existed
        return [normalize(text, max_chars) for text in X]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.requires_fit = False
        return tags


class FeatureSubset(TransformerMixin, BaseEstimator):
    """Keeps the named keys of feature dicts (the conversation model's input), so a model fitted on a subset
    reads only that subset wherever it is scored: the features are still computed on one path for all."""

    def __init__(self, keep: tuple[str, ...] = ()):
        self.keep = keep

    def fit(self, X, y=None):
        seen = {name for row in X for name in row}
        never = sorted(set(self.keep) - seen)
        if never:  # a misspelt or renamed feature would otherwise be dropped without a word
            raise ValueError(f"features to keep that no training row has: {never}")
        self.keep_ = tuple(sorted(set(self.keep)))  # a tuple: skops rebuilds it without trusting more types
        return self

    def transform(self, X):
        check_is_fitted(self)
        keep = set(self.keep_)
        return [{name: value for name, value in row.items() if name in keep} for row in X]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.dict = True
        tags.input_tags.two_d_array = False
        return tags


class CompactTfidfVectorizer(TfidfVectorizer):
    """TfidfVectorizer whose vocabulary is saved as two arrays instead of a dict.

    skops writes a dict entry by entry; with a few hundred thousand n-grams that made saving take
    seconds and loading slow. Arrays are stored as plain .npy blocks. The pruned-terms set
    (`stop_words_`) is only for introspection and is not kept.
    """

    IDF_BATCH = 20_000  # unlabelled documents counted per call: bounds the memory of `idf_documents`

    def fit(self, raw_documents, y=None, idf_documents=None):
        if idf_documents is None:
            return super().fit(raw_documents, y)
        self.fit_transform(raw_documents, y, idf_documents=idf_documents)
        return self

    def fit_transform(self, raw_documents, y=None, idf_documents=None):
        """TfidfVectorizer's fit; with `idf_documents` (a shop's unlabelled messages, `train --unlabelled`)
        the vocabulary (min_df, max_features) is still learnt from `raw_documents` alone, and only the IDF
        counts both: idf = ln((1 + n) / (1 + df)) + 1 over the documents of both (smooth_idf), for the
        training vocabulary's terms. Nothing of `idf_documents` is kept but those idf values.
        Without `idf_documents` it is TfidfVectorizer.fit_transform itself."""
        if idf_documents is None:
            return super().fit_transform(raw_documents, y)
        self._check_params()
        self._tfidf = TfidfTransformer(norm=self.norm, use_idf=self.use_idf, smooth_idf=self.smooth_idf, sublinear_tf=self.sublinear_tf)
        counts = CountVectorizer.fit_transform(self, raw_documents)  # the vocabulary of the training text only
        self._tfidf.fit(counts)  # validation, n_features_in_; the idf is replaced below
        if self.use_idf:
            df = np.bincount(counts.tocsr().indices, minlength=counts.shape[1]).astype(np.int64)
            n_documents = counts.shape[0]
            idf_documents = list(idf_documents)
            for start in range(0, len(idf_documents), self.IDF_BATCH):
                extra = CountVectorizer.transform(self, idf_documents[start : start + self.IDF_BATCH]).tocsr()
                df += np.bincount(extra.indices, minlength=counts.shape[1])
                n_documents += extra.shape[0]
            # TfidfTransformer.fit's arithmetic, in its dtype, on the document frequencies of both sets
            dtype = counts.dtype if counts.dtype in (np.float64, np.float32) else np.float64
            df = df.astype(dtype)
            df += float(self.smooth_idf)
            n_documents += int(self.smooth_idf)
            idf = np.full_like(df, fill_value=n_documents, dtype=dtype)
            idf /= df
            np.log(idf, out=idf)
            idf += 1.0
            self._tfidf.idf_ = idf
        return self._tfidf.transform(counts, copy=False)

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: object.__getstate__ returns the live __dict__
        vocabulary = state.pop("vocabulary_", None)
        state.pop("stop_words_", None)
        if vocabulary is not None:
            terms = list(vocabulary)
            state["_vocabulary_terms"] = np.array(terms, dtype=str)
            state["_vocabulary_ids"] = np.fromiter((vocabulary[t] for t in terms), dtype=np.int64, count=len(terms))
        return state

    def __setstate__(self, state):
        state = dict(state)
        terms = state.pop("_vocabulary_terms", None)
        ids = state.pop("_vocabulary_ids", None)
        if terms is not None:
            state["vocabulary_"] = dict(zip(terms.tolist(), ids.tolist()))
        super().__setstate__(state)


_LINEAR = (LogisticRegression, LinearSVC, SGDClassifier)


def _scores(estimator, X) -> np.ndarray:
    if isinstance(estimator, _LINEAR) and sparse.issparse(X) and X.shape[1] == estimator.coef_.shape[1]:
        # What their decision_function computes, without its per-call input validation (a third of
        # the time of a one-message batch); X comes from our own vectorizers.
        scores = np.asarray(X @ estimator.coef_.T + estimator.intercept_, dtype=np.float64)
        return scores.ravel() if scores.shape[1] == 1 else scores
    if hasattr(estimator, "decision_function"):
        return np.asarray(estimator.decision_function(X), dtype=np.float64)
    return np.asarray(estimator.predict_log_proba(X), dtype=np.float64)


def _fit_clone(estimator, X, y, rows, sample_weight=None):
    if sample_weight is None:
        fitted = clone(estimator).fit(X[rows], y[rows])
    else:
        fitted = clone(estimator).fit(X[rows], y[rows], sample_weight=sample_weight[rows])
    return _weights_in_dtype(fitted, X.dtype)


def _weights_in_dtype(estimator, dtype):
    """A linear model's weights and intercepts stored in the features' dtype.

    liblinear (LinearSVC) and SGD return float64 weights whatever the input; the logistic regression keeps
    the float32 of our TF-IDF rows. In one dtype, both message models are scored in the same precision,
    the weights take half the memory, and the compiled path reads the intent and purchase weights in one
    product (issue #12). Rounding the weights to float32 changes scores by about 1e-7 relative."""
    dtype = np.dtype(dtype)
    if isinstance(estimator, _LINEAR) and dtype == np.float32:
        for name in ("coef_", "intercept_"):
            value = getattr(estimator, name, None)
            if isinstance(value, np.ndarray) and value.dtype == np.float64:
                setattr(estimator, name, value.astype(np.float32))
    return estimator


def _fit_temperature(scores: np.ndarray, y_index: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of out-of-fold scores."""

    def nll(log_t: float) -> float:
        logits = scores / np.exp(log_t)
        logits = logits - logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(logits).sum(axis=1))
        return float(np.mean(log_norm - logits[np.arange(len(y_index)), y_index]))

    result = minimize_scalar(nll, bounds=(-5.0, 5.0), method="bounded")
    return float(np.exp(result.x))


def _fit_platt(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    platt = LogisticRegression(C=1e6, max_iter=1000)
    platt.fit(scores.reshape(-1, 1), y)
    return float(platt.coef_[0, 0]), float(platt.intercept_[0])


class CalibratedLinearClassifier(ClassifierMixin, BaseEstimator):
    """A linear classifier whose probabilities are calibrated on out-of-fold scores of the training data.

    Multiclass: temperature scaling (keeps the arg-max, so accuracy is untouched); binary: Platt scaling.
    Folds are grouped when `groups` is passed, so variants of one message never calibrate each other.
    `sample_weight` weights the linear fits (e.g. a shop's own labels against the bundled corpus); the
    calibration treats every out-of-fold message alike.
    `cross_fit=False` fits the linear model alone, for a caller that calibrates on held-out data with
    `recalibrate` anyway: the fold models would cost twice the final fit and their calibration would be
    replaced. Until `recalibrate` is called such a model gives scores but no probabilities.
    """

    def __init__(self, estimator=None, n_folds: int = 3, random_state: int | None = 0, n_jobs: int | None = None,
                 cross_fit: bool = True):
        self.estimator = estimator
        self.n_folds = n_folds
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.cross_fit = cross_fit

    def fit(self, X, y, groups=None, sample_weight=None):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], dtype=None)
        check_classification_targets(y)
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64)
            if sample_weight.shape != y.shape:
                raise ValueError(f"sample_weight has shape {sample_weight.shape}, y has {y.shape}")
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)  # finite numbers
        self.classes_ = np.unique(y)
        y_index = np.searchsorted(self.classes_, y)
        binary = len(self.classes_) == 2
        for name in ("platt_", "temperature_"):  # a refit forgets the calibration of the previous fit
            if hasattr(self, name):
                delattr(self, name)
        if not self.cross_fit:
            self.estimator_ = _fit_clone(self.estimator, X, y_index, np.arange(X.shape[0]), sample_weight)
            return self
        if groups is not None:
            splitter = FastStratifiedGroupKFold(n_splits=self.n_folds, shuffle=True, random_state=self.random_state)
            folds = splitter.split(X, y_index, groups)
        else:
            splitter = StratifiedKFold(n_splits=self.n_folds, shuffle=True, random_state=self.random_state)
            folds = splitter.split(X, y_index)
        width = 1 if binary else len(self.classes_)
        oof = np.zeros((X.shape[0], width))
        folds = list(folds)
        # The fold models and the final model are independent fits: run them side by side.
        fitted = Parallel(n_jobs=self.n_jobs)(
            delayed(_fit_clone)(self.estimator, X, y_index, rows, sample_weight)
            for rows in [train for train, _ in folds] + [np.arange(X.shape[0])]
        )
        self.estimator_ = fitted[-1]
        for fold_model, (_train_idx, held_idx) in zip(fitted[:-1], folds, strict=True):
            fold_scores = _scores(fold_model, X[held_idx])
            if binary:
                oof[held_idx, 0] = fold_scores if fold_scores.ndim == 1 else fold_scores[:, 1] - fold_scores[:, 0]
            else:
                full = np.full((len(held_idx), len(self.classes_)), -1e3)
                full[:, fold_model.classes_] = fold_scores
                oof[held_idx] = full
        if binary:
            self.platt_ = _fit_platt(oof[:, 0], y_index)
        else:
            self.temperature_ = _fit_temperature(oof, y_index)
        return self

    def __setstate__(self, state):
        # a model saved before `cross_fit` existed was cross-fitted
        super().__setstate__({"cross_fit": True, **state})

    def recalibrate(self, X, y):
        """Refit only the calibration (temperature or Platt) on held-out data, keeping the linear model:
        probabilities then reflect how the model does on text unlike its training text."""
        check_is_fitted(self)
        y = np.asarray(y)
        known = np.isin(y, self.classes_)  # a label the model never saw cannot be calibrated for
        y_index = np.searchsorted(self.classes_, y[known])
        scores = self.decision_function(X[np.flatnonzero(known)])
        if len(self.classes_) == 2:
            self.platt_ = _fit_platt(scores, y_index)
        else:
            self.temperature_ = _fit_temperature(scores, y_index)
        return self

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self)
        # dtype=None: the float32 TF-IDF rows are scored as they are (the compiled path's numbers)
        X = validate_data(self, X, accept_sparse=["csr", "csc"], dtype=None, reset=False)
        scores = _scores(self.estimator_, X)
        if len(self.classes_) == 2 and scores.ndim == 2:
            scores = scores[:, 1] - scores[:, 0]
        return scores

    def predict_proba(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        if not hasattr(self, "platt_" if len(self.classes_) == 2 else "temperature_"):
            raise NotFittedError("fitted with cross_fit=False and not recalibrated yet: call recalibrate on held-out data")
        if len(self.classes_) == 2:
            slope, intercept = self.platt_
            positive = expit(slope * scores + intercept)
            return np.column_stack([1.0 - positive, positive])
        return softmax(scores / self.temperature_, axis=1)

    def predict(self, X) -> np.ndarray:
        best = np.argmax(self.predict_proba(X), axis=1)  # checks the fit before classes_ is read
        return self.classes_[best]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # TF-IDF rows
        return tags
