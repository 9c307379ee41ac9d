"""Model construction from config: one scikit-learn Pipeline per task (training side only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.naive_bayes import ComplementNB
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.feature_extraction import DictVectorizer

from pipeline.config import Config, FeatureSettings
from pipeline.conversation import SCORE_AND_SHAPE_FEATURES
from pipeline.estimators import (
    CalibratedLinearClassifier,
    CompactTfidfVectorizer,
    EnglishTokenizer,
    FeatureSubset,
    JiebaTokenizer,
    TextNormalizer,
    packaged_user_words,
    parse_user_dict,
)


def user_words(config: Config) -> tuple[str, ...]:
    if config.text.user_dict:
        return parse_user_dict(Path(config.text.user_dict).read_text(encoding="utf-8"))
    return packaged_user_words()


def make_tokenizer(config: Config):
    if config.text.language == "zh":
        return JiebaTokenizer(user_words(config))
    return EnglishTokenizer()


def make_features(settings: FeatureSettings, tokenizer) -> FeatureUnion:
    """jieba (or English) word n-grams next to character n-grams, TF-IDF weighted."""
    shared = dict(
        lowercase=False,
        min_df=settings.min_df,
        max_features=settings.max_features,
        sublinear_tf=settings.sublinear_tf,
        dtype=np.float32,
    )
    words = CompactTfidfVectorizer(tokenizer=tokenizer, token_pattern=None, ngram_range=tuple(settings.word_ngram_range), **shared)
    chars = CompactTfidfVectorizer(analyzer=settings.char_analyzer, ngram_range=tuple(settings.char_ngram_range), **shared)
    return FeatureUnion([("words", words), ("chars", chars)])


def make_linear(*, C: float, class_weight, seed: int, classifier: str = "logreg", alpha: float = 1e-4, max_iter: int = 2000,
                tol: float | None = None):
    """`tol` None keeps the library's default stopping tolerance of that classifier."""
    stop = {} if tol is None else {"tol": tol}
    if classifier == "logreg":
        return LogisticRegression(C=C, class_weight=class_weight, max_iter=max_iter, random_state=seed, **stop)
    if classifier == "linear_svc":
        return LinearSVC(C=C, class_weight=class_weight, max_iter=max_iter, random_state=seed, **stop)
    if classifier == "sgd":
        return SGDClassifier(loss="modified_huber", alpha=alpha, class_weight=class_weight, max_iter=max_iter, random_state=seed, **stop)
    if classifier == "complement_nb":
        return ComplementNB(alpha=max(alpha, 1e-3))
    raise ValueError(f"unknown classifier {classifier!r}")


def build_intent_pipeline(config: Config) -> Pipeline:
    settings = config.intent_model
    base = make_linear(
        C=settings.C,
        class_weight=settings.class_weight,
        seed=config.seed,
        classifier=settings.classifier,
        alpha=settings.alpha,
        max_iter=settings.max_iter,
    )
    return Pipeline(
        [
            ("normalize", TextNormalizer(max_chars=config.text.max_chars)),
            ("features", make_features(config.features, make_tokenizer(config))),
            ("classifier", CalibratedLinearClassifier(base, n_folds=settings.calibration_folds, random_state=config.seed, n_jobs=config.n_jobs)),
        ]
    )


def make_purchase_classifier(config: Config) -> CalibratedLinearClassifier:
    """The purchase-intent classifier; it shares the intent model's fitted feature steps."""
    settings = config.purchase_model
    base = make_linear(C=settings.C, class_weight=settings.class_weight, seed=config.seed, classifier=settings.classifier,
                       alpha=settings.alpha, tol=settings.tol)
    return CalibratedLinearClassifier(base, n_folds=settings.calibration_folds, random_state=config.seed, n_jobs=config.n_jobs)


def build_conversation_pipeline(config: Config) -> Pipeline:
    """Second level: a small linear model over features of the message-level outputs."""
    settings = config.conversation_model
    subset = [] if settings.intent_mix_features else [("subset", FeatureSubset(keep=SCORE_AND_SHAPE_FEATURES))]
    return Pipeline(
        [
            *subset,
            ("vectorize", DictVectorizer(sparse=False)),
            ("scale", StandardScaler()),
            ("classifier", LogisticRegression(C=settings.C, class_weight="balanced", max_iter=2000, random_state=config.seed)),
        ]
    )
