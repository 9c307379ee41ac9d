"""Explanations of message-level predictions, read exactly from the fitted linear models (issue #15).

Both message-level models are linear over the TF-IDF features of the normalised text: the intent model's
score of class c (its *logit*, what `CalibratedLinearClassifier.decision_function` returns before the
calibration) is

    logit_c = intercept_c + sum over the message's n-grams j of  value_j * weight_cj

where value_j is the n-gram's TF-IDF value in the message (the model's own float32 feature, after the
sublinear tf, the idf and the l2 norm of its family) and weight_cj the model's weight (`coef_`). The
**contribution** of an n-gram is its term `value_j * weight_cj`: for the intent, to the logit of the
*predicted* intent; for purchase, to the purchase model's logit (the score of the positive class). The
calibration only rescales logits monotonically (the intent probabilities are softmax(logit / temperature),
the purchase score is expit(slope * logit + intercept) with Platt's slope > 0), so a positive contribution
pushes towards the predicted intent, or raises the purchase score. With a one-vs-rest or multinomial
model the contributions are to that class's own logit (the multinomial weights of a feature sum to ~0 over
the classes, so a contribution is also relative to the mean class). A two-class intent model has one
weight row: the second class's logit is the decision score, the first's its negation.

Nothing is sampled or approximated: the contributions are the products of the two stored float32 numbers,
computed in double (where such a product is exact); their sum plus the intercept equals the model's logit up
to the float32 rounding of the model's own accumulation (< 1e-5; `tests/model/test_explain.py`).

Per message, `Explainer.explain` returns (JSON-ready; `None` for a message that is empty once normalised,
which the model does not score):

    {"intent":   {"label": "invoice", "logit": 6.1, "intercept": -0.15, "rest": 0.42,
                  "ngrams": [{"ngram": "发票", "kind": "word", "contribution": 2.31}, ...]},
     "purchase": {"logit": -2.7, "intercept": -1.1, "rest": -0.05, "ngrams": [...]}}   # null without a purchase model

- intent `ngrams`: the top-k n-grams by contribution to the predicted intent's logit, largest first, only
  those that push towards it (contribution > 0);
- purchase `ngrams`: the top-k n-grams by absolute contribution to the purchase logit, signed (positive:
  towards purchase intent, negative: against), since a low purchase score is a decision too;
- `kind`: `word` (jieba word n-grams, words joined by a space) or `char` (character n-grams; a blank in
  one is shown as `␣`);
- `rest`: the sum of the contributions of the n-grams not listed, so that
  `intercept + sum(listed contributions) + rest == logit` (up to the rounding to 6 decimals).

Ties are broken by feature column, so the output is deterministic. N-grams are read from the normalised
text, where numbers, phones, order numbers, links, money, dates, names and addresses are already single
private-use tokens: those are shown as the anonymised-export placeholders (`[订单x]`, `[电话x]` ...), and
every n-gram shown then goes through `pipeline.text.mask_pii`, like any buyer text leaving the project.

The features and weights are those `Predictor` scores with: the compiled path's vocabularies, idf,
feature computation and weight arrays (pipeline/compiled.py) when the model is compiled, else the
scikit-learn pipelines (the features are bit-identical, so are the explanations).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

from pipeline.compiled import CompiledBundle, UnsupportedModel, _fitted_parts, _same, compile_bundle, model_steps
from pipeline.text import TOKENS, mask_pii

DEFAULT_TOP_K = 5
DIGITS = 6  # contributions, logits and intercepts are rounded to this many decimals

# How the canonical tokens of normalised text are shown (the anonymised-export convention of mask_pii).
_TOKEN_DISPLAY = {
    "order": "[订单x]",
    "phone": "[电话x]",
    "link": "[链接x]",
    "money": "[金额x]",
    "date": "[日期x]",
    "number": "[数字x]",
    "name": "[姓名x]",
    "address": "[地址x]",
}
_DISPLAY_TABLE = str.maketrans({char: _TOKEN_DISPLAY[kind] for kind, char in TOKENS.items()})


class UnsupportedExplanation(ValueError):
    """The model is not linear over TF-IDF n-grams, so its predictions cannot be read from its weights."""


def _model_steps(pipeline) -> tuple:
    """`compiled.model_steps`: the (normalize, features, classifier) steps by name, or UnsupportedExplanation."""
    try:
        return model_steps(pipeline)
    except UnsupportedModel as exc:
        raise UnsupportedExplanation(str(exc)) from exc


def _pipeline_parts(pipelines: list) -> list:
    """The fitted parts of the pipelines (`compiled._fitted_parts`), to notice a refit."""
    for pipeline in pipelines:
        _model_steps(pipeline)
    return [part for pipeline in pipelines for part in _fitted_parts(pipeline)]


def display_ngram(ngram: str, kind: str = "word") -> str:
    """An n-gram as it may be shown: canonical tokens as placeholders, then PII masked; a blank inside a
    character n-gram is shown as `␣` (in a word n-gram it separates the words)."""
    shown = mask_pii(ngram.translate(_DISPLAY_TABLE))
    return shown.replace(" ", "␣") if kind == "char" else shown


@dataclass(eq=False)
class _Family:
    """One TF-IDF vectorizer: its block of feature columns and its n-grams by column."""

    vectorizer: Any
    offset: int
    width: int
    kind: str  # word | char
    _terms: np.ndarray | None = None

    @property
    def terms(self) -> np.ndarray:
        """The n-gram of every column (built on first use from the fitted vocabulary)."""
        if self._terms is None:
            vocabulary = self.vectorizer.vocabulary_
            terms = np.empty(self.width, dtype=object)
            terms[np.fromiter(vocabulary.values(), dtype=np.int64, count=len(vocabulary))] = list(vocabulary)
            self._terms = terms
        return self._terms


def _kind(vectorizer) -> str:
    return "char" if getattr(vectorizer, "analyzer", "word") in ("char", "char_wb") else "word"


def _step_families(step) -> list[_Family]:
    """The vectorizers of a feature step (a FeatureUnion of them, or one) with their column offsets, in the
    order `FeatureUnion.transform` stacks them."""
    names = getattr(step, "transformer_list", None)
    transformers = [t for _, t in names if not (isinstance(t, str) and t == "drop")] if names is not None else [step]
    families, offset = [], 0
    for transformer in transformers:
        vocabulary = getattr(transformer, "vocabulary_", None)
        if not isinstance(vocabulary, dict):
            raise UnsupportedExplanation(f"feature transformer {type(transformer).__name__} has no fitted n-gram vocabulary")
        families.append(_Family(transformer, offset, len(vocabulary), _kind(transformer)))
        offset += len(vocabulary)
    if getattr(step, "transformer_weights", None):
        raise UnsupportedExplanation("the feature union has transformer_weights")
    return families


@dataclass(eq=False)
class _Linear:
    """The weights of one fitted `CalibratedLinearClassifier`: coef (rows, features) and intercepts (rows,)."""

    coef: np.ndarray
    intercept: np.ndarray
    classes: list[str]

    @classmethod
    def from_classifier(cls, classifier, n_features: int) -> _Linear:
        estimator = getattr(classifier, "estimator_", None)
        coef = getattr(estimator, "coef_", None)
        if not isinstance(coef, np.ndarray) or coef.ndim != 2 or coef.shape[1] != n_features:
            name = type(estimator).__name__ if estimator is not None else type(classifier).__name__
            raise UnsupportedExplanation(f"{name} has no linear weights over the {n_features} features")
        intercept = np.broadcast_to(np.asarray(getattr(estimator, "intercept_", 0.0), dtype=np.float64), (coef.shape[0],))
        return cls(coef, intercept, [str(label) for label in classifier.classes_])

    def row(self, class_index: int) -> tuple[np.ndarray, float, float]:
        """(weight row, intercept, sign) of a class's logit: one row for a two-class model (the second class's
        logit is the decision score, the first's its negation)."""
        if self.coef.shape[0] == 1:
            sign = 1.0 if class_index == len(self.classes) - 1 else -1.0
            return self.coef[0], float(self.intercept[0]), sign
        return self.coef[class_index], float(self.intercept[class_index]), 1.0


@dataclass
class Part:
    """The exact decomposition of one model's logit for one message."""

    columns: np.ndarray  # feature columns present in the message (int64, ascending)
    values: np.ndarray  # their TF-IDF values (float64 copies of the model's float32 features)
    kinds: list[str]  # word | char per column
    ngrams: list[str]  # the n-gram per column, as in the normalised text (not masked: not for display)
    contributions: np.ndarray  # value * weight per column, in double
    intercept: float

    @property
    def logit(self) -> float:
        return self.intercept + float(np.sum(self.contributions))


@dataclass
class Contributions:
    """What `explain` summarises for one message: the explained intent and both decompositions."""

    label: str
    intent: Part
    purchase: Part | None  # None without a purchase model


class Explainer:
    """Explanations of a bundle's message-level predictions (see the module docstring).

    `compiled`: the bundle's compiled path (`Predictor`'s own, see `for_predictor`), whose vocabularies,
    idf, feature computation and weight arrays are used; None: the scikit-learn pipelines. Raises
    `UnsupportedExplanation` for a model that is not linear over TF-IDF n-grams."""

    def __init__(self, bundle, compiled: CompiledBundle | None = None):
        self.bundle = bundle
        self.compiled = compiled
        self._normalize = _model_steps(bundle.intent)[0].transform
        self._build()

    @classmethod
    def for_predictor(cls, predictor) -> Explainer:
        """The explainer of a `Predictor`'s bundle, on the compiled path it scores with (when it has one)."""
        return cls(predictor.bundle, getattr(predictor, "_compiled", None))

    def _build(self) -> None:
        pipelines = [self.bundle.intent] + ([self.bundle.purchase] if self.bundle.purchase is not None else [])
        if self.compiled is not None:  # the compiled path's features: the same vectorizers, offsets and weights
            models = [self.compiled.intent] + ([self.compiled.purchase] if self.compiled.purchase is not None else [])
            self._sources = [model.features for model in models]
            steps = [model.features.step for model in models]
            families = [[_Family(f.vectorizer, f.offset, f.width, _kind(f.vectorizer)) for f in model.features.families] for model in models]
            classifiers = [model.classifier.classifier for model in models]
        else:
            fitted = [_model_steps(pipe) for pipe in pipelines]
            steps = [features for _, features, _ in fitted]
            classifiers = [classifier for _, _, classifier in fitted]
            self._sources = steps
            families = [_step_families(step) for step in steps]
        if len(steps) == 2 and steps[0] is steps[1]:  # a shared feature step: transformed once, one n-gram table
            families[1] = families[0]
        self._steps = steps
        self._families = families
        self._starts = [np.array([f.offset for f in fams], dtype=np.int64) for fams in families]
        self._linear = [
            _Linear.from_classifier(classifier, sum(f.width for f in fams)) for classifier, fams in zip(classifiers, families, strict=True)
        ]
        if self._linear[0].coef.shape[0] == 1 and len(self._linear[0].classes) != 2:
            raise UnsupportedExplanation("the intent model has one weight row for more than two classes")
        self._parts = _pipeline_parts(pipelines)

    def _current(self) -> None:
        """Follow a refit as `Predictor` does: recompile (or rebuild) when a fitted part was replaced."""
        pipelines = [self.bundle.intent] + ([self.bundle.purchase] if self.bundle.purchase is not None else [])
        if _same(_pipeline_parts(pipelines), self._parts):
            return
        if self.compiled is not None:
            self.compiled = compile_bundle(self.bundle)
        self._build()

    def _matrix(self, index: int, normalized: list[str]) -> sparse.csr_array:
        """The feature rows of one model (0 intent, 1 purchase) exactly as it scores them."""
        source = self._sources[index]
        if self.compiled is not None:
            data, indices, indptr = source.transform(normalized)
            return sparse.csr_array((data, indices, indptr), shape=(len(normalized), source.n_features))
        from pipeline.inference import transform_features

        return sparse.csr_array(transform_features(source, normalized))

    def contributions(self, texts: Sequence[str], labels: Sequence[str | None] | None = None) -> list[Contributions | None]:
        """The exact decomposition per message. `labels`: the intent to explain per message (the predicted
        one, as `Predictor` returned it); without it (or None, or a label the model does not know): the
        intent with the highest logit, which is the predicted one (calibration keeps the order of the
        logits). None for a message that is empty once normalised (the model does not score it)."""
        self._current()
        normalized = self._normalize(list(texts))
        present = [i for i, text in enumerate(normalized) if text]
        out: list[Contributions | None] = [None] * len(normalized)
        if not present:
            return out
        batch = [normalized[i] for i in present]
        matrices = [self._matrix(0, batch)]
        if len(self._linear) == 2:
            matrices.append(matrices[0] if self._steps[0] is self._steps[1] else self._matrix(1, batch))
        intent_model = self._linear[0]
        class_index = {label: i for i, label in enumerate(intent_model.classes)}
        wanted = [None] * len(present) if labels is None else [labels[i] for i in present]
        best = None
        if any(label not in class_index for label in wanted):
            logits = np.asarray(matrices[0].astype(np.float64) @ intent_model.coef.T.astype(np.float64)) + intent_model.intercept
            if intent_model.coef.shape[0] == 1:
                logits = np.column_stack([-logits[:, 0], logits[:, 0]])
            best = logits.argmax(axis=1)
        for row, i in enumerate(present):
            c = class_index[wanted[row]] if wanted[row] in class_index else int(best[row])
            intent = self._part(0, matrices[0], row, c)
            purchase = None
            if len(matrices) == 2:
                purchase = self._part(1, matrices[1], row, len(self._linear[1].classes) - 1)
            out[i] = Contributions(intent_model.classes[c], intent, purchase)
        return out

    def _part(self, index: int, matrix: sparse.csr_array, row: int, class_index: int) -> Part:
        start, stop = matrix.indptr[row], matrix.indptr[row + 1]
        columns = np.asarray(matrix.indices[start:stop], dtype=np.int64)
        values = np.asarray(matrix.data[start:stop], dtype=np.float64)
        weights, intercept, sign = self._linear[index].row(class_index)
        # a product of two float32 numbers is exact in double
        contributions = values * (sign * weights[columns].astype(np.float64))
        families = self._families[index]
        which = (np.searchsorted(self._starts[index], columns, side="right") - 1).tolist()
        kinds = [families[f].kind for f in which]
        ngrams = [families[f].terms[col - families[f].offset] for f, col in zip(which, columns.tolist(), strict=True)]
        return Part(columns, values, kinds, ngrams, contributions, sign * intercept)

    def explain(
        self, texts: Sequence[str], labels: Sequence[str | None] | None = None, top_k: int = DEFAULT_TOP_K
    ) -> list[dict[str, Any] | None]:
        """Per message, the JSON-ready explanation of the module docstring (None for an empty message)."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        return [None if c is None else summarize(c, top_k) for c in self.contributions(texts, labels)]


def _top(part: Part, top_k: int, signed: bool) -> np.ndarray:
    """Positions of the listed n-grams: by contribution (signed: by absolute contribution), largest first,
    ties by column; unsigned, only positive contributions are listed."""
    contributions = part.contributions
    order = np.lexsort((part.columns, -(np.abs(contributions) if signed else contributions)))
    if not signed:
        order = order[contributions[order] > 0]
    return order[:top_k]


def _summary(part: Part, top_k: int, signed: bool) -> dict[str, Any]:
    listed = _top(part, top_k, signed)
    rest = np.ones(len(part.contributions), dtype=bool)
    rest[listed] = False
    return {
        "logit": round(part.logit, DIGITS),
        "intercept": round(part.intercept, DIGITS),
        "rest": round(float(np.sum(part.contributions[rest])), DIGITS),
        "ngrams": [
            {"ngram": display_ngram(part.ngrams[j], part.kinds[j]), "kind": part.kinds[j], "contribution": round(float(part.contributions[j]), DIGITS)}
            for j in listed.tolist()
        ],
    }


def summarize(c: Contributions, top_k: int = DEFAULT_TOP_K) -> dict[str, Any]:
    """The JSON-ready explanation of one message's contributions."""
    return {
        "intent": {"label": c.label, **_summary(c.intent, top_k, signed=False)},
        "purchase": None if c.purchase is None else _summary(c.purchase, top_k, signed=True),
    }
