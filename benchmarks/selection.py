"""Model selection on held-out writers (#10): which Chinese feature and model options hold on text
unlike the training text?

    .venv/bin/python benchmarks/selection.py                   # writes benchmarks/SELECTION.md, prints the table
    .venv/bin/python benchmarks/selection.py --options default,char_1_4 --no-dev --out /tmp/s.md   # a quick look

Data and split: `data/messages.csv` loaded and split exactly as `buyer-intent train` does
(`load_training_data`, `split_by_settings` with `configs/default.yaml`): every option is fitted on the
training split only and scored on the validation split, i.e. every message of the held-out writers
(`split.val_holdout`: w04, w05). The test split is never read, and the real-chat dev set
(`../shared/realchat-dev`) plays no part in the choice: it is scored only after the choice is made, for
the default and the winner the held-out writers chose (see `dev_figures`).

Every option is an intent model; its purchase model is the project's (logistic regression, C and class
weight of `purchase_model`, on the option's features) unless the option is about it (NB-weighted features,
ensembles). Models are fitted as `pipeline.training.train` fits them, but for one step that cannot change
a figure here: the calibration folds of `CalibratedLinearClassifier` are skipped (only the base estimator
is fitted on the whole training split). The project refits the temperature and Platt scaling on the
validation writers anyway (`calibrate_on: validation`), a temperature never changes the arg-max (accuracy,
macro-F1) and Platt scaling is monotone (purchase AP, thresholds); calibration is measured here with its
own cross-fitted temperature. Feature blocks are fitted once per setting and shared (a FeatureUnion is the
horizontal stack of its blocks, so this is the same matrix).

Held-out metrics per option: intent accuracy, macro-F1 (`evaluate.intent_metrics`); ECE of the top-class
confidence after a temperature cross-fitted across the two writers (fitted on w04, measured on w05 and vice
versa, pooled); purchase AP over both writers. Standard errors of the differences with the default: a
bootstrap over the validation groups (variants of one message move together; resampled within each writer),
paired (the same resample for both models). The rule: keep an option only if it beats the default on
held-out accuracy AND macro-F1 by more than one standard error, without lowering purchase AP. The best-ranked
option passing it (accuracy + macro-F1) is the stage-1 winner; stage 2 then tries a few options built from it
(its C halved and doubled; its features swapped for another kept feature change) and lets one replace it only
if it passes the rule against the default AND against the stage-1 winner. The dev set is scored after that,
for the default and the winner only.

Threshold rules for the purchase detector (default features and model): A = the lowest threshold reaching
precision `purchase_model.target_precision` (`evaluate.choose_precision_threshold`, the project's rule), B =
the F1-maximising threshold; chosen on one writer, measured on the other, both directions.
"""

from __future__ import annotations

import argparse
import logging
import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core per process (a shared machine)
    os.environ.setdefault(_name, "1")
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.special import expit, softmax
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, precision_recall_curve
from sklearn.naive_bayes import ComplementNB
from sklearn.pipeline import FeatureUnion

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import load_config  # noqa: E402
from pipeline.data.labelled import LABELLED_COLUMNS, load_labelled, load_training_data, merged_groups, split_by_settings  # noqa: E402
from pipeline.estimators import TextNormalizer, _fit_platt, _fit_temperature, _scores  # noqa: E402
from pipeline.training.evaluate import (  # noqa: E402
    ThresholdWarning,
    binary_scores,
    choose_precision_threshold,
    expected_calibration_error,
    intent_metrics,
)
from pipeline.training.model import make_features, make_linear, make_tokenizer  # noqa: E402
from pipeline.data.tables import write_text_atomic  # noqa: E402

log = logging.getLogger("selection")
DEV = REPO.parent / "shared" / "realchat-dev" / "messages.csv"


# ---------------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class Option:
    name: str
    label: str  # what the table says
    blocks: tuple[tuple, ...] = (("words", (1, 2)), ("char", (1, 3)))  # (kind, ngram range); kind words|char|char_wb
    classifier: str = "logreg"  # logreg | linear_svc | complement_nb | nb_logreg | ensemble
    C: float = 4.0
    class_weight: str | None = "balanced"
    alpha: float = 1e-4
    parts: tuple[str, ...] = ()  # ensemble: the options whose calibrated probabilities are averaged
    stage: int = 1  # 2: built from the stage-1 winner after stage 1 (see main)


def options(config) -> list[Option]:
    f, m = config.features, config.intent_model
    default_blocks = (("words", tuple(f.word_ngram_range)), (f.char_analyzer, tuple(f.char_ngram_range)))
    words = default_blocks[0]
    base = dict(blocks=default_blocks, C=m.C, class_weight=m.class_weight, alpha=m.alpha)

    def opt(name, label, **changes):
        return Option(name, label, **{**base, **changes})

    return [
        opt("default", f"default: logreg C={m.C:g} {m.class_weight}, words {list(f.word_ngram_range)} + {f.char_analyzer} {list(f.char_ngram_range)}"),
        opt("char_1_4", "char 1-4 (instead of 1-3)", blocks=(words, ("char", (1, 4)))),
        opt("char_wb_1_3", "char_wb 1-3 (instead of char 1-3)", blocks=(words, ("char_wb", (1, 3)))),
        opt("char_wb_2_4", "char_wb 2-4 (instead of char 1-3)", blocks=(words, ("char_wb", (2, 4)))),
        opt("words_only", "words 1-2 only", blocks=(words,)),
        opt("chars_only", "char 1-3 only", blocks=(default_blocks[1],)),
        opt("C_1", "C=1", C=1.0),
        opt("C_16", "C=16", C=16.0),
        opt("no_class_weight", "class_weight None", class_weight=None),
        opt("linear_svc", "LinearSVC C=0.5", classifier="linear_svc", C=0.5),
        opt("cnb", f"ComplementNB alpha={max(m.alpha, 1e-3):g} (the project's make_linear)", classifier="complement_nb"),
        opt("cnb_0_1", "ComplementNB alpha=0.1", classifier="complement_nb", alpha=0.1),
        opt("nb_logreg", "NB-weighted features + logreg (one-vs-rest)", classifier="nb_logreg"),
        opt("ens_cnb", "ensemble: mean prob. of default + ComplementNB alpha=0.1", classifier="ensemble", parts=("default", "cnb_0_1")),
        opt("ens_nb_logreg", "ensemble: mean prob. of default + NB-weighted logreg", classifier="ensemble", parts=("default", "nb_logreg")),
    ]


# ---------------------------------------------------------------------------------------------- features
class Blocks:
    """Each TF-IDF block (words or characters, one n-gram range) fitted once on the training text,
    built by the project's `make_features` so its settings are the project's."""

    def __init__(self, config, train_texts: list[str], val_texts: list[str]):
        self.config = config
        self.tokenizer = make_tokenizer(config)
        self.train_texts, self.val_texts = train_texts, val_texts
        self.fitted: dict[tuple, tuple] = {}  # key -> (vectorizer, train matrix, val matrix)
        self.seconds: dict[tuple, float] = {}

    def _vectorizer(self, kind: str, ngrams: tuple[int, int]):
        if kind == "words":
            settings = self.config.features.model_copy(update={"word_ngram_range": ngrams})
            union: FeatureUnion = make_features(settings, self.tokenizer)
            return dict(union.transformer_list)["words"]
        settings = self.config.features.model_copy(update={"char_analyzer": kind, "char_ngram_range": ngrams})
        return dict(make_features(settings, self.tokenizer).transformer_list)["chars"]

    def get(self, key: tuple):
        if key not in self.fitted:
            started = time.perf_counter()
            vectorizer = self._vectorizer(*key)
            train = vectorizer.fit_transform(self.train_texts)
            val = vectorizer.transform(self.val_texts)
            self.fitted[key] = (vectorizer, train.tocsr(), val.tocsr())
            self.seconds[key] = time.perf_counter() - started
            log.info("block %s: %d n-grams, %.1f s", key, train.shape[1], self.seconds[key])
        return self.fitted[key]

    def matrices(self, blocks: tuple[tuple, ...]):
        parts = [self.get(key) for key in blocks]
        if len(parts) == 1:
            return parts[0][1], parts[0][2]
        return sparse.hstack([p[1] for p in parts], format="csr"), sparse.hstack([p[2] for p in parts], format="csr")

    def transform(self, blocks: tuple[tuple, ...], texts: list[str]):
        return sparse.hstack([self.get(key)[0].transform(texts) for key in blocks], format="csr")


# ---------------------------------------------------------------------------------------------- models
class NBLogReg:
    """NB-weighted features with logistic regression (Wang & Manning 2012, NBSVM with an LR loss),
    one-vs-rest: for class c the TF-IDF features are scaled by r_c = log((p/|p|) / (q/|q|)), p and q the
    feature sums (+ alpha) over the messages of c and of the others, and a binary logistic regression is
    fitted on the scaled rows. Scoring is linear in the unscaled features: X @ (r_c * w_c) + b_c."""

    def __init__(self, C: float, class_weight, seed: int, alpha: float = 1.0, max_iter: int = 2000):
        self.C, self.class_weight, self.seed, self.alpha, self.max_iter = C, class_weight, seed, alpha, max_iter

    @staticmethod
    def ratio(X, positive: np.ndarray, alpha: float) -> np.ndarray:
        p = alpha + np.asarray(X[positive].sum(axis=0)).ravel()
        q = alpha + np.asarray(X[~positive].sum(axis=0)).ravel()
        return np.log(p / p.sum()) - np.log(q / q.sum())

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        coefs, intercepts = [], []
        for c in self.classes_:
            positive = y == c
            r = self.ratio(X, positive, self.alpha)
            lr = LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter, random_state=self.seed)
            lr.fit(X @ sparse.diags(r.astype(X.dtype)), positive.astype(int))
            coefs.append(r * lr.coef_[0])
            intercepts.append(lr.intercept_[0])
        self.coef_ = np.vstack(coefs)
        self.intercept_ = np.asarray(intercepts)
        return self

    def decision_function(self, X) -> np.ndarray:
        return np.asarray(X @ self.coef_.T + self.intercept_, dtype=np.float64)


class NBLogRegBinary(NBLogReg):
    """The binary case (the purchase detector on NB-weighted features): one ratio, one regression."""

    def fit(self, X, y):
        positive = np.asarray(y) == 1
        r = self.ratio(X, positive, self.alpha)
        lr = LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter, random_state=self.seed)
        lr.fit(X @ sparse.diags(r.astype(X.dtype)), positive.astype(int))
        self.coef_, self.intercept_ = r * lr.coef_[0], lr.intercept_[0]
        return self

    def decision_function(self, X) -> np.ndarray:
        return np.asarray(X @ self.coef_ + self.intercept_, dtype=np.float64).ravel()


def raw_scores(estimator, X) -> np.ndarray:
    """What `CalibratedLinearClassifier.decision_function` computes from its base estimator."""
    if isinstance(estimator, NBLogReg):
        return estimator.decision_function(X)
    scores = _scores(estimator, X)
    if len(estimator.classes_) == 2 and scores.ndim == 2:
        scores = scores[:, 1] - scores[:, 0]
    return scores


@dataclass
class Fitted:
    option: Option
    intent: object | None  # base estimator (None for an ensemble)
    purchase: object | None
    val_intent: np.ndarray  # raw scores on validation (n x classes); ensembles: log of mean probabilities, cross-fitted
    val_purchase: np.ndarray  # raw purchase scores on validation (ensembles: mean of cross-fitted Platt probabilities)
    classes: np.ndarray
    seconds: float
    extra: dict = field(default_factory=dict)


def fit_option(option: Option, config, blocks: Blocks, y: np.ndarray, y_purchase: np.ndarray, cache: dict) -> Fitted:
    started = time.perf_counter()
    X, V = blocks.matrices(option.blocks)
    seed = config.seed
    if option.classifier == "nb_logreg":
        intent = NBLogReg(option.C, option.class_weight, seed, max_iter=config.intent_model.max_iter).fit(X, y)
    else:
        intent = make_linear(C=option.C, class_weight=option.class_weight, seed=seed, classifier=option.classifier,
                             alpha=option.alpha, max_iter=config.intent_model.max_iter).fit(X, y)
    # The purchase model: the project's on these features (shared between options with the same features),
    # NB-weighted for the NB-weighted option.
    pm = config.purchase_model
    if option.classifier == "nb_logreg":
        purchase = NBLogRegBinary(pm.C, pm.class_weight, seed).fit(X, y_purchase)
    elif option.classifier == "complement_nb":
        key = ("purchase", option.blocks, "logreg")
        if key not in cache:
            cache[key] = LogisticRegression(C=pm.C, class_weight=pm.class_weight, max_iter=2000, random_state=seed).fit(X, y_purchase)
        purchase = cache[key]
        # its own binary ComplementNB too, for the ensemble with it (not this option's purchase model)
        cache[("purchase_cnb", option.name)] = ComplementNB(alpha=max(option.alpha, 1e-3)).fit(X, y_purchase)
    else:
        key = ("purchase", option.blocks, "logreg")
        if key not in cache:
            cache[key] = LogisticRegression(C=pm.C, class_weight=pm.class_weight, max_iter=2000, random_state=seed).fit(X, y_purchase)
        purchase = cache[key]
    seconds = time.perf_counter() - started
    return Fitted(option, intent, purchase, raw_scores(intent, V), raw_scores(purchase, V), intent.classes_, seconds)


# ---------------------------------------------------------------------------------------------- calibration
def crossfit_temperature(scores: np.ndarray, y_index: np.ndarray, halves: list[np.ndarray]) -> np.ndarray:
    """Probabilities of each half with the temperature fitted on the other half."""
    probs = np.zeros_like(scores)
    for held, other in ((halves[0], halves[1]), (halves[1], halves[0])):
        t = _fit_temperature(scores[other], y_index[other])
        probs[held] = softmax(scores[held] / t, axis=1)
    return probs


def crossfit_platt(scores: np.ndarray, y: np.ndarray, halves: list[np.ndarray]) -> np.ndarray:
    out = np.zeros(len(scores))
    for held, other in ((halves[0], halves[1]), (halves[1], halves[0])):
        slope, intercept = _fit_platt(scores[other], y[other])
        out[held] = expit(slope * scores[held] + intercept)
    return out


def ensemble(parts: list[Fitted], y_index: np.ndarray, y_purchase: np.ndarray, halves: list[np.ndarray], purchase_parts: list[np.ndarray]):
    """Mean of the parts' calibrated probabilities, every calibration cross-fitted: for the held-out half h,
    each part's temperature is fitted on the other half o, and so is the ensemble's own temperature (on
    the log of the mean on o). Returns (log mean probabilities of each half, cross-fitted
    probabilities, mean of the cross-fitted Platt probabilities of the purchase parts)."""
    log_mean = np.zeros_like(parts[0].val_intent)
    calibrated = np.zeros_like(log_mean)
    for held, other in ((halves[0], halves[1]), (halves[1], halves[0])):
        temps = [_fit_temperature(p.val_intent[other], y_index[other]) for p in parts]

        def mean_prob(rows):
            return np.mean([softmax(p.val_intent[rows] / t, axis=1) for p, t in zip(parts, temps, strict=True)], axis=0)

        held_log, other_log = np.log(mean_prob(held) + 1e-12), np.log(mean_prob(other) + 1e-12)
        log_mean[held] = held_log
        t = _fit_temperature(other_log, y_index[other])
        calibrated[held] = softmax(held_log / t, axis=1)
    purchase = np.mean([crossfit_platt(s, y_purchase, halves) for s in purchase_parts], axis=0)
    return log_mean, calibrated, purchase


# ---------------------------------------------------------------------------------------------- bootstrap
def bootstrap_weights(cluster: np.ndarray, stratum: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Row weights (n_boot x rows) of a cluster bootstrap within each stratum: how often each row's
    cluster was drawn."""
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_boot, len(cluster)))
    for s in np.unique(stratum):
        rows = np.flatnonzero(stratum == s)
        ids, inverse = np.unique(cluster[rows], return_inverse=True)
        draws = rng.integers(0, len(ids), size=(n_boot, len(ids)))
        counts = np.stack([np.bincount(d, minlength=len(ids)) for d in draws])  # n_boot x clusters
        weights[:, rows] = counts[:, inverse]
    return weights


def weighted_accuracy_f1(W: np.ndarray, y: np.ndarray, pred: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and macro-F1 (over the labels present, as `intent_metrics`) under each row of weights W."""
    correct = (y == pred).astype(float)
    accuracy = W @ correct / W.sum(axis=1)
    Y = np.eye(n_classes)[y]
    P = np.eye(n_classes)[pred]
    tp = W @ (Y * correct[:, None])
    support = W @ Y
    predicted = W @ P
    f1 = np.where(support > 0, 2 * tp / np.maximum(support + predicted, 1e-12), 0.0)
    macro = (f1 * (support > 0)).sum(axis=1) / (support > 0).sum(axis=1)
    return accuracy, macro


# ---------------------------------------------------------------------------------------------- thresholds
def f1_threshold(y: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, thresholds = precision_recall_curve(y, scores)
    precision, recall = precision[:-1], recall[:-1]
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return float(thresholds[int(np.argmax(f1))])


def threshold_experiment(scores: np.ndarray, y: np.ndarray, writer: np.ndarray, held: list[str], target: float) -> list[dict]:
    rows = []
    for chosen_on, measured_on in ((held[0], held[1]), (held[1], held[0])):
        a, b = writer == chosen_on, writer == measured_on
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ThresholdWarning)
            rule_a, _ = choose_precision_threshold(y[a], scores[a], target)
        rule_b = f1_threshold(y[a], scores[a])
        for rule, threshold in ((f"A: precision {target:g}", rule_a), ("B: max F1", rule_b)):
            p_in, r_in, f_in = binary_scores(y[a], scores[a] >= threshold)
            p, r, f = binary_scores(y[b], scores[b] >= threshold)
            rows.append({"rule": rule, "chosen_on": chosen_on, "measured_on": measured_on, "in_sample": (p_in, r_in, f_in),
                         "precision": p, "recall": r, "f1": f, "flagged": float((scores[b] >= threshold).mean())})
    return rows


# ---------------------------------------------------------------------------------------------- dev
def dev_figures(fitted: Fitted, config, blocks: Blocks, dev: pd.DataFrame, y_val_index, y_val_purchase, parts: list[Fitted] | None) -> dict:
    """The real-chat dev set, scored after the choice: temperature and Platt scaling fitted on the whole
    validation split (as `buyer-intent train` does), purchase threshold by the project's rule (precision
    target) on the validation split."""
    texts = TextNormalizer(max_chars=config.text.max_chars).transform(dev["text"].tolist())
    target = config.purchase_model.target_precision

    def single(f: Fitted):
        D = blocks.transform(f.option.blocks, texts)
        t = _fit_temperature(f.val_intent, y_val_index)
        probs = softmax(raw_scores(f.intent, D) / t, axis=1)
        slope, intercept = _fit_platt(f.val_purchase, y_val_purchase)
        val_p = expit(slope * f.val_purchase + intercept)
        dev_p = expit(slope * raw_scores(f.purchase, D) + intercept)
        return probs, val_p, dev_p

    if parts:
        outs = [single(p) for p in parts]
        probs = np.mean([o[0] for o in outs], axis=0)
        val_p, dev_p = np.mean([o[1] for o in outs], axis=0), np.mean([o[2] for o in outs], axis=0)
        # the ensemble's own temperature, on validation (log of the mean of the parts' validation probabilities)
        val_log = np.log(np.mean([softmax(p.val_intent / _fit_temperature(p.val_intent, y_val_index), axis=1) for p in parts], axis=0) + 1e-12)
        probs = softmax(np.log(probs + 1e-12) / _fit_temperature(val_log, y_val_index), axis=1)
    else:
        probs, val_p, dev_p = single(fitted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ThresholdWarning)
        threshold, _ = choose_precision_threshold(y_val_purchase, val_p, target)
    classes = fitted.classes
    predicted = classes[np.argmax(probs, axis=1)]
    confidence = probs.max(axis=1)
    y_p = dev["purchase_intent"].to_numpy(dtype=int)

    def figures(mask):
        m = intent_metrics(dev["intent"].to_numpy()[mask], predicted[mask], confidence[mask], np.zeros(mask.sum(), bool))
        p, r, f = binary_scores(y_p[mask], dev_p[mask] >= threshold)
        ap = average_precision_score(y_p[mask], dev_p[mask]) if y_p[mask].any() else float("nan")
        return {"n": int(mask.sum()), "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "ece": m["ece"],
                "purchase_precision": p, "purchase_recall": r, "purchase_f1": f, "purchase_ap": float(ap),
                "positives": int(y_p[mask].sum())}

    out = {"all": figures(np.ones(len(dev), bool)), "threshold": threshold}
    if "source" in dev.columns:
        for source in sorted(dev["source"].astype(str).unique()):
            out[source] = figures((dev["source"].astype(str) == source).to_numpy())
    return out


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    parser.add_argument("--options", default="", help="comma-separated option names (default: all)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the validation groups")
    parser.add_argument("--no-dev", action="store_true", help="skip the dev set figures")
    parser.add_argument("--no-stage2", action="store_true", help="skip the combinations built from the stage-1 winner")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "SELECTION.md"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    run_started = time.perf_counter()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_start = " / ".join(f"{x:.1f}" for x in os.getloadavg())

    config = load_config(args.config)
    data = load_training_data(
        REPO / config.paths.data, (), None, config.split.min_examples_per_label, config.columns.names().only(LABELLED_COLUMNS)
    )
    frame = data.frame.copy()
    frame["split"] = split_by_settings(frame, config.split, config.seed)  # exactly `buyer-intent train`'s split
    train = frame[frame["split"] == "train"].reset_index(drop=True)
    val = frame[frame["split"] == "val"].reset_index(drop=True)
    held = [str(w) for w in config.split.val_holdout]
    writer = val[config.split.holdout_column].astype(str).to_numpy()
    if len(held) != 2 or not set(writer) <= set(held):
        raise SystemExit(f"this benchmark cross-fits across exactly two held-out writers; got {held}, validation writers {sorted(set(writer))}")
    halves = [np.flatnonzero(writer == held[0]), np.flatnonzero(writer == held[1])]
    log.info("split: %d train / %d validation (%s) / %d test (not read)", len(train), len(val), ", ".join(held), int((frame["split"] == "test").sum()))

    all_options = options(config)
    wanted = [o for o in all_options if not args.options or o.name in args.options.split(",") or o.name == "default"]
    by_name = {o.name: o for o in all_options}
    for o in list(wanted):  # an ensemble needs its parts
        for part in o.parts:
            if by_name[part] not in wanted:
                wanted.insert(wanted.index(o), by_name[part])

    blocks = Blocks(config, train["normalized"].tolist(), val["normalized"].tolist())
    y_train, y_train_p = train["intent"].to_numpy(), train["purchase_intent"].to_numpy(dtype=int)
    y_val, y_val_p = val["intent"].to_numpy(), val["purchase_intent"].to_numpy(dtype=int)
    cache: dict = {}
    fitted: dict[str, Fitted] = {}

    def fit_timed(option) -> None:
        """Fit one option; its wall time counts the feature blocks it was the first to need."""
        before = dict(blocks.seconds)
        f = fit_option(option, config, blocks, y_train, y_train_p, cache)
        f.extra["feature_s"] = sum(s for k, s in blocks.seconds.items() if k not in before)
        fitted[option.name] = f
        log.info("%-16s fit %.1f s (+ %.1f s new feature blocks)", option.name, f.seconds, f.extra["feature_s"])
        print(f"{option.name}: {f.seconds + f.extra['feature_s']:.1f} s wall", flush=True)

    for option in wanted:
        if option.classifier == "ensemble":
            continue
        fit_timed(option)

    classes = fitted["default"].classes
    if any(not np.array_equal(f.classes, classes) for f in fitted.values()):
        raise SystemExit("options disagree on the label set")
    if not set(y_val) <= set(classes):
        raise SystemExit("a validation label the models never saw")
    y_val_index = np.searchsorted(classes, y_val)

    # Held-out figures per option
    results: dict[str, dict] = {}
    purchase_probs: dict[str, np.ndarray] = {}

    def score(option: Option) -> None:
        """Held-out figures of one fitted option (ensembles: combined here from their fitted parts)."""
        if option.classifier == "ensemble":
            parts = [fitted[p] for p in option.parts]
            started = time.perf_counter()
            purchase_parts = [parts[0].val_purchase]
            second = parts[1]
            if second.option.classifier == "complement_nb":
                cnb = cache[("purchase_cnb", second.option.name)]
                purchase_parts.append(raw_scores(cnb, blocks.matrices(second.option.blocks)[1]))
            else:
                purchase_parts.append(second.val_purchase)
            scores, probs, purchase = ensemble(parts, y_val_index, y_val_p, halves, purchase_parts)
            fitted[option.name] = Fitted(option, None, None, scores, purchase, classes, sum(p.seconds for p in parts) + time.perf_counter() - started,
                                         {"feature_s": sum(p.extra["feature_s"] for p in parts)})
        else:
            scores = fitted[option.name].val_intent
            probs = crossfit_temperature(scores, y_val_index, halves)
        f = fitted[option.name]
        # purchase AP pooled over both writers, on Platt probabilities cross-fitted across them (as the ensembles' are)
        purchase_probs[option.name] = f.val_purchase if option.classifier == "ensemble" else crossfit_platt(f.val_purchase, y_val_p, halves)
        predicted_index = np.argmax(scores, axis=1)
        metrics = intent_metrics(y_val, classes[predicted_index], probs.max(axis=1), np.zeros(len(y_val), bool))
        ece = expected_calibration_error(predicted_index == y_val_index, probs.max(axis=1))
        per_writer = {w: float((predicted_index[h] == y_val_index[h]).mean()) for w, h in zip(held, halves, strict=True)}
        results[option.name] = {
            "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "ece": ece,
            "purchase_ap": float(average_precision_score(y_val_p, purchase_probs[option.name])),
            "per_writer": per_writer, "pred": predicted_index, "seconds": f.seconds + f.extra.get("feature_s", 0.0),
        }

    # Paired cluster bootstrap of the differences between two options: the same resamples for every pair
    clusters = merged_groups(val["group"].astype(str), val["normalized"]).to_numpy()
    W = bootstrap_weights(clusters, writer, args.bootstrap, config.seed)
    boot: dict[str, tuple] = {}

    def resampled(name: str):
        if name not in boot:
            acc, f1 = weighted_accuracy_f1(W, y_val_index, results[name]["pred"], len(classes))
            ap = np.array([average_precision_score(y_val_p, purchase_probs[name], sample_weight=w) for w in W])
            boot[name] = (acc, f1, ap)
        return boot[name]

    def compare(name: str, ref: str) -> dict:
        """Differences name - ref with their paired bootstrap SE, and the rule's verdict."""
        a, b = resampled(name), resampled(ref)
        r, q = results[name], results[ref]
        out = {"d_acc": r["accuracy"] - q["accuracy"], "se_acc": float(np.std(a[0] - b[0], ddof=1)),
               "d_f1": r["macro_f1"] - q["macro_f1"], "se_f1": float(np.std(a[1] - b[1], ddof=1)),
               "d_ap": r["purchase_ap"] - q["purchase_ap"], "se_ap": float(np.std(a[2] - b[2], ddof=1))}
        out["passes"] = name != ref and out["d_acc"] > out["se_acc"] and out["d_f1"] > out["se_f1"] and out["d_ap"] >= 0
        return out

    def rank_key(name: str) -> float:
        return -(results[name]["accuracy"] + results[name]["macro_f1"])

    # Stage 1: every option against the default
    for option in wanted:
        score(option)
    check_acc, check_f1 = weighted_accuracy_f1(np.ones((1, len(y_val))), y_val_index, results["default"]["pred"], len(classes))
    assert abs(check_acc[0] - results["default"]["accuracy"]) < 1e-9 and abs(check_f1[0] - results["default"]["macro_f1"]) < 1e-9
    results["default"]["raw_ap"] = float(average_precision_score(y_val_p, fitted["default"].val_purchase))
    for option in wanted:
        results[option.name].update(compare(option.name, "default"))
    passing = sorted((o.name for o in wanted if results[o.name]["passes"]), key=rank_key)
    ranked = sorted((o.name for o in wanted if o.name != "default"), key=rank_key)
    stage1_winner = passing[0] if passing else None

    # Stage 2 (only when stage 1 keeps an option): the stage-1 winner combined with the other kept
    # feature change, and its C halved and doubled. A stage-2 option replaces the winner only if it
    # passes the rule against the default AND against the stage-1 winner.
    stage2: list[Option] = []
    if stage1_winner and not args.no_stage2:
        w = fitted[stage1_winner].option
        if w.classifier in ("logreg", "linear_svc", "nb_logreg"):
            for factor in (0.5, 2.0):
                stage2.append(replace(w, name=f"{w.name}+C_x{factor:g}", label=f"{w.label}, C={w.C * factor:g}", C=w.C * factor, stage=2))
        default = fitted["default"].option
        for other in passing[1:]:  # kept options that change only the feature blocks
            o = fitted[other].option
            if replace(o, name=default.name, label=default.label, blocks=default.blocks) == default and o.blocks != w.blocks and w.classifier != "ensemble":
                stage2.append(replace(w, name=f"{w.name}+{o.name}", label=f"{w.label} + {o.label}", blocks=o.blocks, stage=2))
        for option in stage2:
            fit_timed(option)
            score(option)
            results[option.name].update(compare(option.name, "default"))
            results[option.name]["vs_winner"] = compare(option.name, stage1_winner)
    replacing = sorted((o.name for o in stage2 if results[o.name]["passes"] and results[o.name]["vs_winner"]["passes"]), key=rank_key)
    winner = replacing[0] if replacing else stage1_winner

    # Threshold rules on the default's purchase scores
    thresholds = threshold_experiment(fitted["default"].val_purchase, y_val_p, writer, held, config.purchase_model.target_precision)

    # The dev set: only now that the choice is made, only for the default and the winner (or, when no
    # option passes the rule, the best-ranked one)
    chosen = winner or (ranked[0] if ranked else None)
    dev_names = ["default"] + ([chosen] if chosen else [])
    dev_results: dict[str, dict] = {}
    dev_info = "not computed (--no-dev)" if args.no_dev else f"{DEV} not found"
    if not args.no_dev and DEV.is_file():
        dev = load_labelled(DEV, None, names=config.columns.names().only(LABELLED_COLUMNS)).frame
        dev_info = f"`../shared/realchat-dev/messages.csv`, {len(dev)} messages"
        for name in dev_names:
            o = fitted[name].option
            parts = [fitted[p] for p in o.parts] if o.parts else None
            dev_results[name] = dev_figures(fitted[name], config, blocks, dev, y_val_index, y_val_p, parts)

    total = time.perf_counter() - run_started
    load_end = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    choice = {"passing": passing, "ranked": ranked, "stage1_winner": stage1_winner, "stage2": stage2, "replacing": replacing,
              "winner": winner, "chosen": chosen}
    report = render(config, wanted, results, thresholds, dev_results, dev_info, choice, blocks, fitted, train, val, held,
                    args, total, started_at, load_start, load_end)
    write_text_atomic(report, Path(args.out))
    print(table(wanted, results, fitted))
    if stage2:
        print()
        print(table2(stage2, results, stage1_winner, fitted))
    print(f"\nstage 1 passing the rule: {', '.join(passing) or 'none'}; stage-1 winner: {stage1_winner}; "
          f"stage 2 replacing it: {', '.join(replacing) or 'none'}; winner: {winner}")
    for name, d in dev_results.items():
        x = d["all"]
        print(f"dev {name}: accuracy {x['accuracy']:.3f} macro-F1 {x['macro_f1']:.3f} ECE {x['ece']:.3f} purchase F1 {x['purchase_f1']:.3f}")
    print(f"wrote {args.out} ({total:.0f} s)")


# ---------------------------------------------------------------------------------------------- report
def table(wanted, results, fitted) -> str:
    lines = ["| option | accuracy | Δ acc ± SE | macro-F1 | Δ F1 ± SE | ECE (cross-fit T) | purchase AP | Δ AP ± SE | acc w04 / w05 | wall s | rule |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for option in wanted:
        r = results[option.name]
        delta = lambda d, se: "-" if option.name == "default" else f"{d:+.4f} ± {se:.4f}"  # noqa: E731
        pw = " / ".join(f"{v:.3f}" for v in r["per_writer"].values())
        verdict = "-" if option.name == "default" else ("**keep**" if r["passes"] else "no")
        lines.append(
            f"| {option.label} | {r['accuracy']:.4f} | {delta(r['d_acc'], r['se_acc'])} | {r['macro_f1']:.4f} | {delta(r['d_f1'], r['se_f1'])} "
            f"| {r['ece']:.4f} | {r['purchase_ap']:.4f} | {delta(r['d_ap'], r['se_ap'])} | {pw} | {r['seconds']:.0f} | {verdict} |"
        )
    return "\n".join(lines)


def table2(stage2, results, winner, fitted) -> str:
    lines = ["| option (stage 2) | accuracy | macro-F1 | ECE | purchase AP | vs default: Δ acc / Δ F1 / Δ AP | "
             f"vs {fitted[winner].option.label}: Δ acc / Δ F1 / Δ AP | wall s | replaces it |",
             "|---|---|---|---|---|---|---|---|---|"]
    for option in stage2:
        r = results[option.name]
        v = r["vs_winner"]
        fmt = lambda x: f"{x['d_acc']:+.4f} ± {x['se_acc']:.4f} / {x['d_f1']:+.4f} ± {x['se_f1']:.4f} / {x['d_ap']:+.4f}"  # noqa: E731
        verdict = "**yes**" if r["passes"] and v["passes"] else "no"
        lines.append(f"| {option.label} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['ece']:.4f} | {r['purchase_ap']:.4f} | {fmt(r)} | {fmt(v)} "
                     f"| {r['seconds']:.0f} | {verdict} |")
    return "\n".join(lines)


def render(config, wanted, results, thresholds, dev_results, dev_info, choice, blocks, fitted, train, val, held, args,
           total, started_at, load_start, load_end) -> str:
    import sklearn

    passing, winner, chosen, stage1_winner = choice["passing"], choice["winner"], choice["chosen"], choice["stage1_winner"]
    label = lambda name: fitted[name].option.label  # noqa: E731

    n = len(val)
    acc = results["default"]["accuracy"]
    counts = {w: int((val[config.split.holdout_column].astype(str) == w).sum()) for w in held}
    pos = int(val["purchase_intent"].sum())
    cmd = "`.venv/bin/python benchmarks/selection.py`" + (f" with `{' '.join(sys.argv[1:])}`" if sys.argv[1:] else "")
    out = [
        "# Model selection on held-out writers (#10)",
        "",
        f"Written by `benchmarks/selection.py` (its docstring has the method) on {started_at}; {platform.machine()}, "
        f"Python {platform.python_version()}, scikit-learn {sklearn.__version__}, seed {config.seed}, n_jobs 1; load average "
        f"1/5/15 min {load_start} at the start, {load_end} at the end (a shared 2-core machine: times are indicative). "
        f"Whole run: {total / 60:.1f} min.",
        "",
        "## What was compared",
        "",
        f"Training: the training split of `data/messages.csv` ({len(train):,} messages), exactly the split `buyer-intent train` makes "
        f"with `configs/default.yaml`. Held out: the validation split, every message of writers {' and '.join(held)} "
        f"({n:,} messages: {', '.join(f'{w} {c:,}' for w, c in counts.items())}; {pos} purchase-intent). The test split is not read; the "
        "real-chat dev set is not used for any choice (below).",
        "",
        "Options: one change at a time from the default (`configs/default.yaml`): character n-gram range and analyzer, word or "
        "character block alone, regularisation C, class weights, LinearSVC, ComplementNB, NB-weighted features (NBSVM-style "
        "log-count-ratio scaling of the TF-IDF features, one-vs-rest logistic regressions, Wang & Manning 2012), and two ensembles "
        "(mean of calibrated probabilities). Purchase model: the project's logistic regression on the option's features, except "
        "for NB-weighted features (a binary NB-weighted logistic regression) and the ensembles (mean of the parts' Platt-calibrated "
        "purchase probabilities, cross-fitted across the writers; the ComplementNB ensemble's second part is a binary ComplementNB). "
        "So options that only change the intent classifier share the default's purchase AP exactly.",
        "",
        "Columns: accuracy and macro-F1 over both held-out writers (`evaluate.intent_metrics`); Δ = option − default, ± the "
        f"standard error of that paired difference from a bootstrap of the validation groups ({args.bootstrap} resamples, "
        "within each writer, both models on the same resample; variants of one message move together); ECE = 15-bin expected "
        "calibration error of the top-class probability after a temperature fitted on the other writer (w04 → w05 and w05 → w04, "
        "pooled); purchase AP over both writers, of the Platt probability fitted on the other writer (the default's AP of its raw "
        f"scores, the figure `buyer-intent train` logs for validation: {results['default']['raw_ap']:.4f}); acc w04 / w05 = accuracy per writer; wall s = fitting time of the option "
        "(intent + purchase model) plus the feature blocks it was the first to need (`make_features` blocks are fitted once "
        "and shared).",
        "",
        "## Held-out writers",
        "",
        table(wanted, results, fitted),
        "",
        f"Yardstick: the binomial standard error of an accuracy of {acc:.3f} on {n:,} messages is ±{np.sqrt(acc * (1 - acc) / n):.4f}; "
        "a paired difference between two models on the same messages is less noisy, which the ± above measure.",
        "",
        "## The rule",
        "",
        "Keep an option only if it beats the default on held-out accuracy AND macro-F1 by more than one standard error "
        "(the paired bootstrap SE above), without lowering purchase AP (Δ AP ≥ 0).",
        "",
    ]
    if passing:
        out.append(f"Stage 1, passing (best-ranked first, by held-out accuracy + macro-F1): {', '.join(f'**{label(p)}**' for p in passing)}. "
                   f"Stage-1 winner: **{label(stage1_winner)}**.")
    else:
        out.append("Stage 1: **no option passes**; the default stays.")
    out.append("")
    if choice["stage2"]:
        out += ["Stage 2, built from the stage-1 winner after stage 1 (so chosen on the same held-out writers, a second look "
                "at them): its C halved and doubled, and its features with another kept feature change. A stage-2 option "
                "replaces the stage-1 winner only if it passes the rule against the default AND against the stage-1 winner "
                "(same paired bootstrap).", "", table2(choice["stage2"], results, stage1_winner, fitted), ""]
    if winner:
        r = results[winner]
        out.append(f"**Winner: {label(winner)}** (against the default: Δ accuracy {r['d_acc']:+.4f} ± {r['se_acc']:.4f}, "
                   f"Δ macro-F1 {r['d_f1']:+.4f} ± {r['se_f1']:.4f}, Δ purchase AP {r['d_ap']:+.4f}, ECE {r['ece']:.4f} against "
                   f"{results['default']['ece']:.4f}).")
    elif chosen:
        out.append(f"No winner; best-ranked on the held-out writers: {label(chosen)}.")
    n_tried = len(wanted) - 1 + len(choice["stage2"])
    out += ["", f"Caveat: {n_tried} options were compared on the same held-out messages, so the best of them is an optimistic "
            "estimate; the one-SE rule guards against noise in a single comparison, not against picking the luckiest of many. "
            "The dev set below is the check that does not share that optimism.", ""]
    out += ["", "## Purchase threshold rule: which transfers to an unseen writer?", "",
            f"Default features and purchase model (raw scores; Platt scaling is monotone so thresholds are equivalent). Rule A: the "
            f"lowest threshold reaching precision {config.purchase_model.target_precision:g} (`evaluate.choose_precision_threshold`, "
            "the project's rule); rule B: the threshold maximising F1. Chosen on one writer, measured on the other.", "",
            "| rule | chosen on | P / R / F1 where chosen | measured on | precision | recall | F1 | flagged share |",
            "|---|---|---|---|---|---|---|---|"]
    for t in thresholds:
        p, r, f = t["in_sample"]
        out.append(f"| {t['rule']} | {t['chosen_on']} | {p:.3f} / {r:.3f} / {f:.3f} | {t['measured_on']} | {t['precision']:.3f} | "
                   f"{t['recall']:.3f} | {t['f1']:.3f} | {t['flagged']:.3f} |")
    a = [t for t in thresholds if t["rule"].startswith("A")]
    b = [t for t in thresholds if t["rule"].startswith("B")]
    out += ["", threshold_finding(a, b, config.purchase_model.target_precision), ""]

    out += ["## Real-chat dev set (after the choice)", "",
            f"Set: {dev_info}. Scored only after the held-out writers had fixed the choice, and only for the default and "
            "the winner (the best-ranked option when none passes); it did not drive anything. Temperature and Platt scaling fitted on the "
            "whole validation split and the purchase threshold chosen there by rule A, as `buyer-intent train` does. No dev "
            "message is used for training or copied anywhere.", ""]
    if dev_results:
        sources = [k for k in next(iter(dev_results.values())) if k not in ("all", "threshold")]
        out.append("| model | set | n | accuracy | macro-F1 | ECE | purchase F1 (P / R) | purchase AP | positives |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for name, d in dev_results.items():
            for key in ["all", *sources]:
                x = d[key]
                out.append(f"| {fitted[name].option.label} | {key} | {x['n']} | {x['accuracy']:.3f} | {x['macro_f1']:.3f} | {x['ece']:.3f} | "
                           f"{x['purchase_f1']:.3f} ({x['purchase_precision']:.2f} / {x['purchase_recall']:.2f}) | {x['purchase_ap']:.3f} | {x['positives']} |")
        dn = next(iter(dev_results.values()))["all"]["n"]
        da = dev_results["default"]["all"]["accuracy"]
        out += ["", f"On {dn} dev messages the standard error of an accuracy near {da:.2f} is ±{np.sqrt(da * (1 - da) / dn):.3f}."]
        if chosen in dev_results:
            c, d = dev_results[chosen]["all"], dev_results["default"]["all"]
            out.append(f"{label(chosen)} minus the default on dev: accuracy {c['accuracy'] - d['accuracy']:+.3f}, macro-F1 "
                       f"{c['macro_f1'] - d['macro_f1']:+.3f}, ECE {c['ece'] - d['ece']:+.3f}, purchase F1 {c['purchase_f1'] - d['purchase_f1']:+.3f} "
                       f"({d['positives']} purchase-intent messages: one message moves recall by {1 / max(d['positives'], 1):.3f}).")
    out += ["", "## Reproduce", "", f"{cmd} (from the repository root, after `make install`): about {total / 60:.0f} min on this machine.",
            "`--options a,b` runs a subset (the default is always included), `--no-dev` skips the dev set, `--out` writes elsewhere.", ""]
    return "\n".join(out)


def threshold_finding(a: list[dict], b: list[dict], target: float) -> str:
    mean = lambda rows, k: float(np.mean([r[k] for r in rows]))  # noqa: E731
    inside = lambda rows, i: float(np.mean([r["in_sample"][i] for r in rows]))  # noqa: E731
    return (
        f"Mean over the two directions, on the writer not chosen on: rule A precision {mean(a, 'precision'):.3f} (target {target:g}; "
        f"{min(r['precision'] for r in a):.3f} to {max(r['precision'] for r in a):.3f}), recall {mean(a, 'recall'):.3f}, F1 "
        f"{mean(a, 'f1'):.3f}; rule B precision {mean(b, 'precision'):.3f}, recall {mean(b, 'recall'):.3f}, F1 {mean(b, 'f1'):.3f}. "
        f"From the writer chosen on to the other, F1 moves {mean(a, 'f1') - inside(a, 2):+.3f} under rule A and "
        f"{mean(b, 'f1') - inside(b, 2):+.3f} under rule B, precision {mean(a, 'precision') - inside(a, 0):+.3f} and "
        f"{mean(b, 'precision') - inside(b, 0):+.3f} (small moves: the rule transfers to a writer "
        "it has not seen). Rule B trades precision for F1; rule A keeps the precision the project targets."
    )


if __name__ == "__main__":
    main()
