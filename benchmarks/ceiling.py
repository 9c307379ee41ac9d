"""Ideas the model selection did not cover, measured on held-out writers and then on real chats (#10).

    .venv/bin/python benchmarks/ceiling.py                      # writes benchmarks/CEILING.md, prints the table
    .venv/bin/python benchmarks/ceiling.py --out /tmp/c.md      # elsewhere

`benchmarks/SELECTION.md` chose the features and the linear model on held-out writers, and
`benchmarks/ADAPTATION.md` showed that a shop's unlabelled chats, and even 400 of its labelled messages,
move real-chat accuracy by about a point. This measures what is left on the model side for the targets
furthest away (purchase F1 0.55, ECE 0.10, accuracy 0.70), one change at a time from the default:

- purchase detector: stacked on the intent model's probabilities (place_order is a purchase message 83% of
  the time in the corpus); a linear SVM; NB-weighted features (NBSVM, Wang & Manning 2012); the mean of the
  logistic regression and complement naive Bayes;
- intent model: the mean of the linear SVM's and a logistic regression's probabilities; training on the
  training split plus one copy of every message with 15% of its words dropped (real messages are
  elliptical); low-confidence predictions handed to `other` (the taxonomy's "unclear");
- calibration: the temperature fitted on validation messages with 15% or 30% of their words dropped.

Data and split exactly as `buyer-intent train` makes them (`configs/default.yaml`): every model is fitted on
the training split, calibrated (temperature, Platt scaling) and thresholded (purchase: precision target
0.9; `other` hand-over: the confidence that maximises held-out macro-F1) on the validation split, the
held-out writers w04 and w05, as the project does; the stacked purchase model is fitted on validation
too, so its held-out figures are cross-fitted between the two writers. Then each is scored once on the
real-chat dev set (`../shared/realchat-dev`). Nothing is chosen on dev and nothing is adopted by this
script: it records how far each idea moves both yardsticks.
"""

from __future__ import annotations

import argparse
import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core per process (a shared machine)
    os.environ.setdefault(_name, "1")
import platform
import sys
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.special import expit, softmax
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, f1_score
from sklearn.naive_bayes import ComplementNB
from sklearn.svm import LinearSVC

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.selection import NBLogRegBinary  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.data.labelled import LABELLED_COLUMNS, load_training_data, split_by_settings  # noqa: E402
from pipeline.data.tables import write_text_atomic  # noqa: E402
from pipeline.estimators import _fit_platt, _fit_temperature  # noqa: E402
from pipeline.training.evaluate import ThresholdWarning, binary_scores, choose_precision_threshold, expected_calibration_error  # noqa: E402
from pipeline.training.model import build_intent_pipeline  # noqa: E402

SHARED = REPO.parent / "shared"
DROP_RATE = 0.15


def drop_words(tokens: list[str], rate: float, rng: np.random.Generator) -> str:
    """The message with each word dropped with probability `rate`; never empty (all dropped: unchanged)."""
    kept = [token for token in tokens if rng.random() >= rate]
    return "".join(kept) if kept else "".join(tokens)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def stack_features(purchase: np.ndarray, intent_probabilities: np.ndarray) -> np.ndarray:
    """What the stacked purchase model reads: the purchase logit and the intent probabilities."""
    return np.column_stack([logit(purchase), intent_probabilities])


def to_other(probabilities: np.ndarray, classes: np.ndarray, threshold: float, other: str = "other") -> np.ndarray:
    predicted = classes[probabilities.argmax(axis=1)].astype(object)
    predicted[probabilities.max(axis=1) < threshold] = other
    return predicted


@dataclass
class Sets:
    """Features and labels of the validation split and the dev set; the validation writers."""

    X: dict
    intent: dict
    purchase: dict
    writer: np.ndarray


def intent_figures(predicted: np.ndarray, confidence: np.ndarray, truth: np.ndarray) -> dict:
    correct = predicted == truth
    return {"accuracy": float(correct.mean()), "macro_f1": float(f1_score(truth, predicted, average="macro")),
            "ece": float(expected_calibration_error(correct, confidence))}


def purchase_figures(scores: np.ndarray, truth: np.ndarray, threshold: float) -> dict:
    precision, recall, f1 = binary_scores(truth, scores >= threshold)
    return {"ap": float(average_precision_score(truth, scores)), "precision": precision, "recall": recall, "f1": f1}


def platt(scores_val: np.ndarray, y_val: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    a, b = _fit_platt(scores_val, y_val)
    return [expit(a * s + b) for s in (scores_val, *others)]


def run(config_path: Path, dev_path: Path, seed: int) -> dict:
    config = load_config(config_path, {})
    data = load_training_data(REPO / config.paths.data, (), None, config.split.min_examples_per_label,
                              config.columns.names().only(LABELLED_COLUMNS))
    frame = data.frame.copy()
    frame["split"] = split_by_settings(frame, config.split, config.seed)  # exactly `buyer-intent train`'s split
    train = frame[frame["split"] == "train"].reset_index(drop=True)
    val = frame[frame["split"] == "val"].reset_index(drop=True)
    dev = pd.read_csv(dev_path, dtype={"text": str}, keep_default_na=False)
    pipeline = build_intent_pipeline(config)
    normalizer = pipeline.named_steps["normalize"].fit(train["text"])
    features = pipeline.named_steps["features"]
    X_train = features.fit_transform(train["normalized"].tolist())
    tokenizer = features.transformer_list[0][1].tokenizer
    dev_normalized = list(normalizer.transform(dev["text"]))
    sets = Sets(
        X={"val": features.transform(val["normalized"].tolist()), "dev": features.transform(dev_normalized)},
        intent={"val": val["intent"].to_numpy(), "dev": dev["intent"].to_numpy()},
        purchase={"val": val["purchase_intent"].to_numpy(), "dev": dev["purchase_intent"].to_numpy()},
        writer=val["writer"].to_numpy(),
    )
    y_intent, y_purchase = train["intent"].to_numpy(), train["purchase_intent"].to_numpy()
    intent_settings, purchase_settings = config.intent_model, config.purchase_model

    def svm():
        return LinearSVC(C=intent_settings.C, class_weight=intent_settings.class_weight, max_iter=intent_settings.max_iter, random_state=config.seed)

    def purchase_lr():
        return LogisticRegression(C=purchase_settings.C, class_weight=purchase_settings.class_weight, max_iter=2000, random_state=config.seed)

    def intent_probabilities(model, temperature_rows=None) -> tuple[np.ndarray, dict]:
        classes = model.classes_
        y_val = np.searchsorted(classes, sets.intent["val"])
        scores_val = model.decision_function(sets.X["val"] if temperature_rows is None else temperature_rows)
        temperature = _fit_temperature(scores_val, y_val)
        return classes, {name: softmax(model.decision_function(sets.X[name]) / temperature, axis=1) for name in ("val", "dev")}

    rows: list[dict] = []

    def add(name: str, kind: str, probabilities: dict | None, classes=None, purchase: dict | None = None, predicted: dict | None = None) -> None:
        row = {"name": name, "kind": kind}
        for part in ("val", "dev"):
            if probabilities is not None:
                labels = predicted[part] if predicted else classes[probabilities[part].argmax(axis=1)]
                row[part] = intent_figures(labels, probabilities[part].max(axis=1), sets.intent[part])
            else:
                row[part] = {}
        if purchase is not None:
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always", ThresholdWarning)
                threshold, _ = choose_precision_threshold(sets.purchase["val"], purchase["val"], purchase_settings.target_precision)
            row["val"].update(purchase_figures(purchase["val"], sets.purchase["val"], threshold))
            row["dev"].update(purchase_figures(purchase["dev"], sets.purchase["dev"], threshold))
            row["purchase_threshold"] = threshold
        rows.append(row)
        print(f"{name}: " + " | ".join(f"{part} " + ", ".join(f"{k} {v:.3f}" for k, v in row[part].items()) for part in ("val", "dev")), flush=True)

    def purchase_scores(model) -> dict:
        """Fitted on the training split, Platt-scaled on validation: its validation and dev scores."""
        model.fit(X_train, y_purchase)
        raw = [model.decision_function(sets.X[p]) if hasattr(model, "decision_function") else
               np.diff(model.predict_log_proba(sets.X[p]), axis=1).ravel() for p in ("val", "dev")]
        return dict(zip(("val", "dev"), platt(raw[0], sets.purchase["val"], raw[1])))

    # The default: linear SVM intents, logistic-regression purchase detector, both calibrated on validation.
    intent_model = svm().fit(X_train, y_intent)
    classes, default_probabilities = intent_probabilities(intent_model)
    default_purchase = purchase_scores(purchase_lr())
    add("default (linear SVM intents, logistic-regression purchase)", "-", default_probabilities, classes, default_purchase)

    # Purchase detector options (the intent model stays the default).
    cross = np.zeros(len(sets.writer))
    stacked_val = stack_features(default_purchase["val"], default_probabilities["val"])
    for writer in np.unique(sets.writer):
        fit_rows = sets.writer != writer
        stacker = LogisticRegression(C=0.1, max_iter=2000).fit(stacked_val[fit_rows], sets.purchase["val"][fit_rows])
        cross[~fit_rows] = stacker.predict_proba(stacked_val[~fit_rows])[:, 1]
    stacker = LogisticRegression(C=0.1, max_iter=2000).fit(stacked_val, sets.purchase["val"])
    stacked = {"val": cross, "dev": stacker.predict_proba(stack_features(default_purchase["dev"], default_probabilities["dev"]))[:, 1]}
    add("purchase: stacked on the intent probabilities (fitted on validation, cross-fitted between its writers)", "purchase", None, purchase=stacked)

    add("purchase: linear SVM C 0.5 (Platt on validation)", "purchase", None,
        purchase=purchase_scores(LinearSVC(C=0.5, class_weight="balanced", random_state=config.seed)))
    add("purchase: NB-weighted features + logistic regression", "purchase", None,
        purchase=purchase_scores(NBLogRegBinary(C=purchase_settings.C, class_weight="balanced", seed=config.seed)))
    nb = purchase_scores(ComplementNB(alpha=0.1))
    add("purchase: mean of logistic regression and complement naive Bayes", "purchase", None,
        purchase={p: (default_purchase[p] + nb[p]) / 2 for p in ("val", "dev")})

    # Intent model options (purchase detector: the default).
    lr_intent = LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000, random_state=config.seed).fit(X_train, y_intent)
    _, lr_probabilities = intent_probabilities(lr_intent)
    add("intent: mean of linear SVM and logistic regression (C 4) probabilities", "intent",
        {p: (default_probabilities[p] + lr_probabilities[p]) / 2 for p in ("val", "dev")}, classes)

    rng = np.random.default_rng(seed)
    dropped = [drop_words(list(tokenizer(text)), DROP_RATE, rng) for text in train["normalized"]]
    augmented = svm().fit(sparse.vstack([X_train, features.transform(dropped)]).tocsr(), np.r_[y_intent, y_intent])
    _, augmented_probabilities = intent_probabilities(augmented)
    add(f"intent: training split + a copy with {DROP_RATE:.0%} of words dropped", "intent", augmented_probabilities, classes)

    candidates = np.round(np.arange(0.0, 0.61, 0.05), 2)
    val_f1 = [f1_score(sets.intent["val"], to_other(default_probabilities["val"], classes, t), average="macro") for t in candidates]
    handover = float(candidates[int(np.argmax(val_f1))])
    add(f"intent: `other` below confidence {handover:.2f} (best held-out macro-F1)", "intent", default_probabilities, classes,
        predicted={p: to_other(default_probabilities[p], classes, handover) for p in ("val", "dev")})

    # Calibration options: the default model, its temperature fitted on word-dropped validation messages.
    for rate in (0.15, 0.3):
        rng = np.random.default_rng(seed)  # one stream for all messages: independent drops
        dropped_val = [drop_words(list(tokenizer(text)), rate, rng) for text in val["normalized"]]
        _, probabilities = intent_probabilities(intent_model, temperature_rows=features.transform(dropped_val))
        add(f"calibration: temperature fitted on validation with {rate:.0%} of words dropped", "calibration", probabilities, classes)

    return {"rows": rows, "train": len(train), "val": len(val), "dev": len(dev), "held": [str(w) for w in config.split.val_holdout]}


def _cell(figures: dict, key: str) -> str:
    return f"{figures[key]:.3f}" if key in figures else "-"


def render(results: dict, seed: int) -> str:
    header = ("| option | kind | held-out accuracy | macro-F1 | ECE | purchase AP | purchase P / R / F1 "
              "| dev accuracy | macro-F1 | ECE | purchase AP | purchase P / R / F1 |")
    lines = [header, "|" + "---|" * 12]
    for row in results["rows"]:
        cells = [row["name"], row["kind"]]
        for part in ("val", "dev"):
            figures = row[part]
            cells += [_cell(figures, "accuracy"), _cell(figures, "macro_f1"), _cell(figures, "ece"), _cell(figures, "ap"),
                      " / ".join(_cell(figures, k) for k in ("precision", "recall", "f1")) if "f1" in figures else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    held = " and ".join(results["held"])
    return "\n".join([
        *_heading(results, seed, held),
        *lines,
        "",
        "## Against the default",
        "",
        *against_default(results["rows"]),
        "",
    ])


def against_default(rows: list[dict]) -> list[str]:
    """One line per option: its differences from the default on both yardsticks, for the figures it changes."""
    base, lines = rows[0], []
    for row in rows[1:]:
        keys = ["accuracy", "macro_f1", "ece"] if row["kind"] != "purchase" else ["ap", "f1"]
        parts = []
        for part, label in (("val", "held-out"), ("dev", "dev")):
            deltas = [f"{key.replace('_', '-')} {row[part][key] - base[part][key]:+.3f}" for key in keys
                      if key in row[part] and key in base[part]]
            parts.append(f"{label} " + ", ".join(deltas))
        lines.append(f"- {row['name']}: " + "; ".join(parts) + ".")
    return lines


def _heading(results: dict, seed: int, held: str) -> list[str]:
    return [
        "# Ideas beyond the model selection, on held-out writers and on real chats (#10)",
        "",
        f"Written by `benchmarks/ceiling.py` (its docstring has the method) on {datetime.now(timezone.utc).isoformat(timespec='seconds')}; "
        f"{platform.machine()}, Python {platform.python_version()}, seed {seed}. Training split {results['train']:,} messages, "
        f"held-out writers {held} ({results['val']:,} messages: thresholds and temperatures are fitted there), real-chat dev set "
        f"{results['dev']} messages (scored once, after fitting; never fitted on).",
        "",
        "Yardsticks: one standard error of an accuracy near 0.90 on the held-out writers is about 0.004, near 0.68 on dev 0.019; "
        "dev has 41 purchase messages, so its purchase figures move by several points with one or two of them. Purchase "
        "P / R / F1 at the threshold chosen on the held-out writers for precision 0.9 (the project's rule); the stacked "
        "model's held-out figures are cross-fitted (fitted on one writer, scored on the other).",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "default.yaml")
    parser.add_argument("--dev", type=Path, default=SHARED / "realchat-dev" / "messages.csv")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "CEILING.md")
    args = parser.parse_args()
    if not args.dev.is_file():
        sys.exit(f"no real-chat dev set at {args.dev}")
    text = render(run(args.config, args.dev, args.seed), args.seed)
    write_text_atomic(text, args.out)
    print(text)


if __name__ == "__main__":
    main()
