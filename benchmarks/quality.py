"""Quality benchmark: our English configurations next to fastText and the published CLINC150 rows.

    .venv/bin/python benchmarks/quality.py [--zh-model models/champion] [--out benchmarks/RESULTS.md]

One run measures, on the same splits and with the same metric code:
- CLINC150 `data_full.json`, both protocols of Larson et al. (2019): oos-train (out-of-scope as a 151st
  class) and oos-threshold (in-scope training only; a confidence threshold chosen on validation), each
  reported as in-scope accuracy and out-of-scope recall; oos-train is also reported with our fallback
  threshold chosen on validation (the product's setting);
- BANKING77: accuracy and macro-F1 (fastText is tuned on a stratified 10% of the training file, then
  refit on all of it; our configurations are fixed beforehand by `buyer-intent tune`);
- the real-chat dev set with a Chinese model directory (`--zh-model`), skipped with a note when absent.

Systems: our best configuration (configs/english.yaml), our default configuration (configs/default.yaml
with text.language en) and fastText (PyPI `fasttext-numpy2`, imported as `fasttext`), tuned on the
validation data over epochs, learning rate, word n-grams and character n-grams in a separate process.
For every system: fit time, prediction throughput (batch and one message at a time, normalisation
included) and model size on disk. Writes a Markdown report and logs to MLflow (experiment
"buyer-intent-benchmarks"; MLFLOW_TRACKING_URI or the best config's mlflow.tracking_uri).

The data sets are read in place from ../shared/benchmarks; nothing is copied into the repository.
Test sets are used once per reported configuration; every choice (fastText's hyperparameters,
thresholds) is made on validation data.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `pipeline` importable from the checkout
    sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared"
BENCHMARKS = SHARED / "benchmarks"
REALCHAT = SHARED / "realchat-dev" / "messages.csv"
EXPERIMENT = "buyer-intent-benchmarks"
OOS = "oos"

# Larson et al. 2019, Table 2 (Full): in-scope accuracy / out-of-scope recall, in percent.
PUBLISHED = {
    "oos_train": [("SVM", 91.0, 14.5), ("FastText", 89.0, 9.7), ("Rasa", 91.5, 45.3), ("MLP-USE", 93.5, 47.4), ("BERT", 96.9, 40.3)],
    "oos_threshold": [("SVM", 88.2, 18.0), ("FastText", 88.6, 28.3), ("Rasa", 90.9, 31.2), ("MLP-USE", 93.4, 49.1), ("BERT", 96.2, 52.3)],
}

FASTTEXT_GRID = {
    "epoch": [10, 25, 50],
    "lr": [0.1, 0.5, 1.0],
    "wordNgrams": [1, 2, 3],
    "char": [[0, 0], [2, 5], [3, 6]],  # [minn, maxn]; [0, 0] = no character n-grams
}
FASTTEXT_FIXED = {"dim": 100, "bucket": 200000, "loss": "softmax", "minCount": 1, "thread": 1, "seed": 13}
SINGLE_MESSAGES = 500  # messages timed one at a time


# --------------------------------------------------------------------------------------------- data


@dataclass
class Split:
    texts: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)

    def __add__(self, other: "Split") -> "Split":
        return Split(self.texts + other.texts, np.concatenate([self.labels, other.labels]))

    def where(self, mask: np.ndarray) -> "Split":
        return Split([t for t, keep in zip(self.texts, mask, strict=True) if keep], self.labels[mask])


@dataclass
class Task:
    """One protocol: what is fitted, what fastText is tuned on, where thresholds are chosen, what is scored."""

    name: str
    title: str
    kind: str  # oos_train | oos_threshold | closed
    tune_train: Split  # fastText's grid search fits on this ...
    tune_val: Split  # ... and is scored on this
    train: Split  # the reported models are fitted on this
    val: Split  # thresholds are chosen on this
    test: Split
    oos_label: str | None = None
    notes: list[str] = field(default_factory=list)


def _split(rows: list[list[str]]) -> Split:
    return Split([str(t) for t, _ in rows], np.asarray([str(label) for _, label in rows], dtype=object))


def _slice_rows(rows: list, keep_labels: set[str] | None, per_label: int | None) -> list:
    if keep_labels is None and per_label is None:
        return rows
    out, seen = [], {}
    for text, label in rows:
        if keep_labels is not None and label not in keep_labels and label != OOS:
            continue
        seen[label] = seen.get(label, 0) + 1
        if per_label is None or seen[label] <= per_label:
            out.append([text, label])
    return out


def load_clinc(root: Path = BENCHMARKS, max_labels: int | None = None, per_label: int | None = None) -> dict[str, Split]:
    data = json.loads((root / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    labels = sorted({label for _, label in data["train"]})
    keep = set(labels[:max_labels]) if max_labels else None
    return {key: _split(_slice_rows(data[key], keep, per_label)) for key in ("train", "val", "test", "oos_train", "oos_val", "oos_test")}


def load_banking(root: Path = BENCHMARKS, max_labels: int | None = None, per_label: int | None = None, seed: int = 13) -> dict[str, Split]:
    from sklearn.model_selection import train_test_split

    parts = {}
    for name in ("train", "test"):
        frame = pd.read_csv(root / "banking77" / f"{name}.csv", dtype=str, keep_default_na=False)
        rows = frame[["text", "category"]].values.tolist()
        labels = sorted(set(frame["category"]))
        parts[name] = _split(_slice_rows(rows, set(labels[:max_labels]) if max_labels else None, per_label))
    train = parts["train"]
    index = np.arange(len(train))
    n_val = max(int(round(0.1 * len(train))), len(set(train.labels)))  # a 10% stratified validation part
    fit_idx, val_idx = train_test_split(index, test_size=n_val, stratify=train.labels, random_state=seed)
    parts["fit"] = Split([train.texts[i] for i in fit_idx], train.labels[fit_idx])
    parts["val"] = Split([train.texts[i] for i in val_idx], train.labels[val_idx])
    return parts


def build_tasks(root: Path = BENCHMARKS, max_labels: int | None = None, per_label: int | None = None, seed: int = 13) -> list[Task]:
    clinc = load_clinc(root, max_labels, per_label)
    banking = load_banking(root, max_labels, per_label, seed)
    val_all = clinc["val"] + clinc["oos_val"]
    test_all = clinc["test"] + clinc["oos_test"]
    train_all = clinc["train"] + clinc["oos_train"]
    return [
        Task("clinc150_oos_train", "CLINC150, oos-train (out-of-scope as a 151st class)", "oos_train",
             train_all, val_all, train_all, val_all, test_all, OOS),
        Task("clinc150_oos_threshold", "CLINC150, oos-threshold (in-scope training, threshold on validation)", "oos_threshold",
             clinc["train"], clinc["val"], clinc["train"], val_all, test_all, OOS),
        Task("banking77", "BANKING77", "closed", banking["fit"], banking["val"], banking["train"], banking["val"], banking["test"]),
    ]


def export_training_csvs(out_dir: Path, root: Path = BENCHMARKS) -> list[Path]:
    """Training files as labelled CSVs (text,intent) for `buyer-intent tune|train`: write them outside the repo."""
    out_dir = Path(out_dir)
    if out_dir.resolve().is_relative_to(REPO):
        raise SystemExit("export the benchmark data outside the repository (e.g. /tmp/bench)")
    out_dir.mkdir(parents=True, exist_ok=True)
    clinc = load_clinc(root)
    banking = load_banking(root)
    written = []
    for name, split in (("clinc150_oos_train.csv", clinc["train"] + clinc["oos_train"]), ("clinc150_in_scope_train.csv", clinc["train"]), ("banking77_train.csv", banking["train"])):
        path = out_dir / name
        pd.DataFrame({"text": split.texts, "intent": split.labels}).to_csv(path, index=False)
        written.append(path)
    return written


# ----------------------------------------------------------------------------------------- metrics


def oos_scores(y: np.ndarray, predicted: np.ndarray, confidence: np.ndarray, threshold: float, oos_label: str) -> tuple[float, float]:
    """(in-scope accuracy, out-of-scope recall) when predictions under `threshold` count as out-of-scope."""
    y, predicted, confidence = np.asarray(y), np.asarray(predicted), np.asarray(confidence, dtype=float)
    fallback = confidence < threshold
    in_scope = y != oos_label
    accuracy = float(np.mean((predicted[in_scope] == y[in_scope]) & ~fallback[in_scope])) if in_scope.any() else float("nan")
    recall = float(np.mean((predicted[~in_scope] == oos_label) | fallback[~in_scope])) if (~in_scope).any() else float("nan")
    return accuracy, recall


def choose_oos_threshold(y_val, predicted_val, confidence_val, oos_label: str) -> dict[str, float]:
    """The fallback threshold by `evaluate.choose_fallback_threshold` (target oos_recall); the target
    itself is the one whose threshold maximises the mean of in-scope accuracy and out-of-scope recall
    on validation."""
    from pipeline.training.evaluate import ThresholdWarning, choose_fallback_threshold

    best: dict[str, float] | None = None
    for target in np.round(np.arange(0.05, 1.0001, 0.05), 2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ThresholdWarning)
            threshold = choose_fallback_threshold(y_val, predicted_val, confidence_val, "oos_recall", float(target), oos_label)
        accuracy, recall = oos_scores(y_val, predicted_val, confidence_val, threshold, oos_label)
        objective = (accuracy + recall) / 2
        if best is None or objective > best["objective"] + 1e-12:
            best = {"threshold": float(threshold), "target_oos_recall": float(target), "objective": objective,
                    "val_in_scope_accuracy": accuracy, "val_oos_recall": recall}
    return best


def reliability(correct: np.ndarray, confidence: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    from pipeline.training.evaluate import calibration_bins

    table = calibration_bins(correct, confidence, bins)
    return [
        {"low": float(table.edges[b]), "high": float(table.edges[b + 1]), "n": int(table.counts[b]),
         "confidence": float(table.mean_score[b]), "accuracy": float(table.observed[b])}
        for b in np.flatnonzero(table.counts)
    ]


def score_task(task: Task, predictions: dict[str, Any]) -> dict[str, Any]:
    """Metrics of one system on one task from its validation and test predictions."""
    from pipeline.training.evaluate import intent_metrics

    val_pred, val_conf = np.asarray(predictions["val"]["labels"], dtype=object), np.asarray(predictions["val"]["confidence"], dtype=float)
    test_pred, test_conf = np.asarray(predictions["test"]["labels"], dtype=object), np.asarray(predictions["test"]["confidence"], dtype=float)
    y_test = task.test.labels
    out: dict[str, Any] = {}
    if task.kind == "closed":
        metrics = intent_metrics(y_test, test_pred, test_conf, np.zeros(len(y_test), dtype=bool))
        out.update(accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"], ece=metrics["ece"])
        calibrated = y_test, test_pred, test_conf
    else:
        choice = choose_oos_threshold(task.val.labels, val_pred, val_conf, task.oos_label)
        if task.kind == "oos_train":
            out["in_scope_accuracy"], out["oos_recall"] = oos_scores(y_test, test_pred, test_conf, 0.0, task.oos_label)
            out["fallback_in_scope_accuracy"], out["fallback_oos_recall"] = oos_scores(y_test, test_pred, test_conf, choice["threshold"], task.oos_label)
            calibrated = y_test, test_pred, test_conf
        else:
            out["in_scope_accuracy"], out["oos_recall"] = oos_scores(y_test, test_pred, test_conf, choice["threshold"], task.oos_label)
            in_scope = y_test != task.oos_label  # a model without the out-of-scope class: calibration on in-scope rows
            calibrated = y_test[in_scope], test_pred[in_scope], test_conf[in_scope]
        out["threshold"] = choice["threshold"]
        out["threshold_target_oos_recall"] = choice["target_oos_recall"]
        metrics = intent_metrics(*calibrated, np.zeros(len(calibrated[0]), dtype=bool))
        out["ece"] = metrics["ece"]
    y_cal, pred_cal, conf_cal = calibrated
    out["reliability"] = reliability(np.asarray(pred_cal) == np.asarray(y_cal), np.asarray(conf_cal, dtype=float))
    return out


# ------------------------------------------------------------------------------------ our systems


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _throughput(predict, texts: list[str], single: int = SINGLE_MESSAGES) -> tuple[float, float]:
    """(messages/s for the texts in one batch, messages/s one message per call on the first `single`)."""
    predict(texts[:8])  # warm-up
    batch = _timed(predict, texts)
    sample = texts[:single]
    started = time.perf_counter()
    for text in sample:
        predict([text])
    return len(texts) / batch, len(sample) / (time.perf_counter() - started)


def _timed(function, argument) -> float:
    started = time.perf_counter()
    function(argument)
    return time.perf_counter() - started


def fit_ours(config, train: Split):
    """The intent pipeline of `config` fitted the way `pipeline.training.train` fits it (normalised text in)."""
    from pipeline.training.model import build_intent_pipeline
    from pipeline.text import normalize

    pipeline = build_intent_pipeline(config)
    normalized = [normalize(text) for text in train.texts]
    pipeline.named_steps["normalize"].fit(train.texts)
    matrix = pipeline.named_steps["features"].fit_transform(normalized)
    pipeline.named_steps["classifier"].fit(matrix, np.asarray(train.labels).astype(str))
    return pipeline


def run_ours(name: str, config, task: Task, work: Path) -> dict[str, Any]:
    from pipeline.bundle import ModelBundle, load_bundle, save_bundle
    from pipeline.inference import Predictor

    started = time.perf_counter()
    pipeline = fit_ours(config, task.train)
    fit_s = time.perf_counter() - started
    manifest = {"name": f"benchmark-{name}", "labels": [str(c) for c in pipeline.classes_], "language": config.text.language,
                "thresholds": {"fallback": 0.0, "purchase": 0.5}, "config": config.model_dump(mode="json")}
    directory = save_bundle(ModelBundle(pipeline, None, None, manifest), work / f"{name}-{task.name}")
    predictor = Predictor(load_bundle(directory))  # what a user of the bundle gets
    result: dict[str, Any] = {"fit_s": fit_s, "size_bytes": _dir_size(directory), "model_path": str(directory)}
    for split_name, split in (("val", task.val), ("test", task.test)):
        frame = predictor.predict(split.texts)
        result[split_name] = {"labels": frame["intent"].tolist(), "confidence": frame["intent_confidence"].astype(float).tolist()}
    return result


# --------------------------------------------------------------------------------------- fastText


def fasttext_distribution() -> str:
    for name in ("fasttext-numpy2", "fasttext", "fasttext-wheel"):
        try:
            return f"{name} {package_version(name)}"
        except PackageNotFoundError:
            continue
    return "not installed"


def _ft_text(text: str) -> str:
    from pipeline.estimators import EnglishTokenizer
    from pipeline.text import normalize

    return " ".join(EnglishTokenizer()(normalize(text)))


def _grid(grid: dict[str, list]) -> list[dict[str, Any]]:
    points = [{}]
    for key, values in grid.items():
        points = [point | {key: value} for point in points for value in values]
    out = []
    for point in points:
        minn, maxn = point.pop("char")
        out.append(point | {"minn": int(minn), "maxn": int(maxn)})
    return out


def _ft_predict(model, texts: list[str]) -> tuple[list[str], list[float]]:
    labels, probs = model.predict([_ft_text(t) for t in texts], k=1)
    return [label[0][len("__label__"):] for label in labels], [float(p[0]) for p in probs]


def fasttext_timing(model_path: Path, texts_path: Path) -> dict[str, float]:
    """One round of throughput of a saved fastText model (loading excluded)."""
    import fasttext

    model = fasttext.load_model(str(model_path))
    texts = json.loads(Path(texts_path).read_text(encoding="utf-8"))
    batch, single = _throughput(lambda chunk: _ft_predict(model, chunk), texts)
    return {"msgs_per_s": batch, "msgs_per_s_single": single}


class FastTextProcess:
    """The separate process that runs every fastText call of a benchmark run (fit, predict, timing).

    One process for the run, so its start-up and imports are paid once; requests and answers are JSON lines.
    """

    def __init__(self, log_path: Path):
        self._log = open(log_path, "w", encoding="utf-8")
        self._process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "fasttext-server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log, text=True, cwd=str(REPO), bufsize=1,
        )

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        if self._process.poll() is not None:
            raise RuntimeError(f"fastText process ended (exit {self._process.returncode})")
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"fastText process ended (exit {self._process.wait()})")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise RuntimeError(answer.get("error", "unknown error"))
        return answer["result"]

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._log.close()


def fasttext_server() -> None:
    """The loop of `FastTextProcess`: one JSON request per line on stdin, one JSON answer per line on stdout."""
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["cmd"] == "fit":
                result = fasttext_worker(Path(request["job"]))
            elif request["cmd"] == "time":
                result = fasttext_timing(Path(request["model"]), Path(request["texts"]))
            else:
                raise ValueError(f"unknown command {request['cmd']!r}")
            answer = {"ok": True, "result": result}
        except Exception as exc:  # reported to the parent, which records the failure
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


def measure_throughput(task: Task, per_system: dict[str, dict[str, Any]], work: Path, rounds: int = 3, fasttext: FastTextProcess | None = None) -> None:
    """Throughput of every fitted system on the test texts, interleaved round by round so that a change of
    load on the machine hits all systems alike; the best round of each is kept."""
    from pipeline.bundle import load_bundle
    from pipeline.inference import Predictor

    texts = task.test.texts
    texts_path = work / f"{task.name}-test-texts.json"
    texts_path.write_text(json.dumps(texts), encoding="utf-8")
    predictors = {name: Predictor(load_bundle(run["model_path"])) for name, run in per_system.items()
                  if "error" not in run and name != "fastText"}
    best: dict[str, tuple[float, float]] = {}
    for _ in range(rounds):
        for name, run in per_system.items():
            if "error" in run:
                continue
            if name == "fastText":
                try:
                    timing = fasttext.call({"cmd": "time", "model": run["model_path"], "texts": str(texts_path)})
                except (RuntimeError, AttributeError) as exc:
                    print(f"[quality] fastText timing failed: {exc}", file=sys.stderr)
                    continue
                rates = (timing["msgs_per_s"], timing["msgs_per_s_single"])
            else:
                rates = _throughput(predictors[name].predict, texts)
            previous = best.get(name, (0.0, 0.0))
            best[name] = (max(previous[0], rates[0]), max(previous[1], rates[1]))
    for name, run in per_system.items():
        if "error" not in run:
            run["msgs_per_s"], run["msgs_per_s_single"] = best.get(name, (float("nan"), float("nan")))


def fasttext_worker(job_path: Path) -> dict[str, Any]:
    """In the fastText process: tune on (tune_train, tune_val), refit on train, predict val and test."""
    import fasttext

    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    work = Path(job["work"])
    fixed = FASTTEXT_FIXED | job.get("fixed", {})

    def write(split: dict, path: Path) -> Path:
        with open(path, "w", encoding="utf-8") as handle:
            for text, label in zip(split["texts"], split["labels"], strict=True):
                handle.write(f"__label__{label} {_ft_text(text)}\n")
        return path

    def fit(path: Path, params: dict):
        return fasttext.train_supervised(input=str(path), verbose=0, **fixed, **params)

    predict = _ft_predict
    tune_file = write(job["tune_train"], work / "tune_train.txt")
    trials = []
    for params in _grid(job["grid"]):
        started = time.perf_counter()
        try:
            model = fit(tune_file, params)
        except RuntimeError as exc:  # "Encountered NaN": the learning rate diverged on this setting
            trials.append({"params": params, "val_accuracy": float("-inf"), "error": str(exc)})
            continue
        predicted, _ = predict(model, job["tune_val"]["texts"])
        accuracy = float(np.mean(np.asarray(predicted) == np.asarray(job["tune_val"]["labels"])))
        trials.append({"params": params, "val_accuracy": accuracy, "fit_s": time.perf_counter() - started})
    train_file = write(job["train"], work / "train.txt")
    # Best on validation first (grid order breaks ties); the next one if the refit diverges.
    for best in sorted((t for t in trials if "error" not in t), key=lambda t: -t["val_accuracy"]):
        started = time.perf_counter()
        try:
            model = fit(train_file, best["params"])
        except RuntimeError:
            continue
        fit_s = time.perf_counter() - started
        break
    else:
        raise RuntimeError("every fastText setting diverged")
    model_path = work / "model.bin"
    model.save_model(str(model_path))
    model = fasttext.load_model(str(model_path))
    result = {"fit_s": fit_s, "size_bytes": model_path.stat().st_size, "model_path": str(model_path),
              "params": best["params"] | fixed, "tune_val_accuracy": best["val_accuracy"], "settings_tried": len(trials),
              "settings_diverged": sum("error" in t for t in trials), "trials": trials}
    for name in ("val", "test"):
        labels, confidence = predict(model, job[name]["texts"])
        result[name] = {"labels": labels, "confidence": confidence}
    return result


def run_fasttext(task: Task, work: Path, grid: dict[str, list], fixed: dict[str, Any] | None, process: FastTextProcess) -> dict[str, Any]:
    work = work / f"fasttext-{task.name}"
    work.mkdir(parents=True, exist_ok=True)
    as_dict = lambda split: {"texts": split.texts, "labels": [str(label) for label in split.labels]}  # noqa: E731
    job = {"work": str(work), "grid": grid, "fixed": fixed or {},
           "tune_train": as_dict(task.tune_train), "tune_val": as_dict(task.tune_val), "train": as_dict(task.train),
           "val": as_dict(task.val), "test": as_dict(task.test)}
    job_path = work / "job.json"
    job_path.write_text(json.dumps(job), encoding="utf-8")
    return process.call({"cmd": "fit", "job": str(job_path)})


# ------------------------------------------------------------------------------------- real chats


def run_realchat(model_dir: Path | None, path: Path = REALCHAT) -> dict[str, Any]:
    if model_dir is None:
        return {"skipped": "no --zh-model given"}
    if not Path(model_dir).exists():
        return {"skipped": f"no Chinese model at {model_dir} (train one with `buyer-intent train --model-dir {model_dir}`)"}
    if not path.is_file():
        return {"skipped": f"real-chat dev set not found at {path}"}
    from pipeline.training.evaluate import intent_metrics, purchase_metrics
    from pipeline.inference import Predictor, load_model

    predictor = Predictor(load_model(str(model_dir)))
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    texts = frame["text"].tolist()
    scored = predictor.predict(texts)
    metrics = intent_metrics(frame["intent"], scored["intent"], scored["intent_confidence"], scored["fallback"])
    batch, single = _throughput(lambda t: predictor.predict(t), texts)
    out = {"n": len(frame), "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "ece": metrics["ece"],
           "fallback_rate": metrics["fallback_rate"], "accepted_accuracy": metrics["accepted_accuracy"],
           "msgs_per_s": batch, "msgs_per_s_single": single, "model": str(model_dir),
           "model_version": predictor.bundle.version, "by_source": {}}
    if "source" in frame.columns:
        for source, part in frame.groupby("source"):
            idx = part.index.to_numpy()
            out["by_source"][source] = {"n": len(idx), "accuracy": float((scored["intent"].to_numpy()[idx] == part["intent"].to_numpy()).mean())}
    if "purchase_intent" in frame.columns and predictor.has_purchase:
        y = frame["purchase_intent"].astype(int).to_numpy()
        p = purchase_metrics(y, scored["purchase_score"].to_numpy(), predictor.purchase_threshold)
        out["purchase"] = {k: p[k] for k in ("average_precision", "precision", "recall", "f1")}
    return out


# ----------------------------------------------------------------------------------------- report


def _pct(value: float | None) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{100 * value:.1f}"


def _size(num_bytes: float) -> str:
    return f"{num_bytes / 2**20:.1f} MB"


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _cost(r: dict[str, Any]) -> str:
    return f"{r['fit_s']:.1f} | {_rate(r['msgs_per_s'])} | {_rate(r['msgs_per_s_single'])} | {_size(r['size_bytes'])}"


def _not_run_row(system: str, r: dict[str, Any] | None) -> str:
    """A results-table row for a system that failed or was not run (8 columns, as every table here)."""
    return f"| {system} | {r.get('error', 'not run') if r else 'not run'} | | | | | | |"


def render_report(results: dict[str, Any]) -> str:
    meta = results["meta"]
    systems = results["systems"]
    lines = [
        "# Quality benchmark: English intent classification",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} ({meta['machine']}; load average 1/5/15 min "
        f"{meta.get('load_start', '?')} at the start, {meta.get('load_end', '?')} at the end: the machine is shared, so "
        "timings are indicative).",
        f"Code and libraries: buyer-intent {meta['versions'].get('buyer-intent')}, scikit-learn {meta['versions'].get('scikit-learn')}, "
        f"numpy {meta['versions'].get('numpy')}, fastText: {meta['versions'].get('fasttext')}. Seed {meta['seed']}.",
    ]
    if meta.get("slice"):
        lines += ["", f"**Slice run** ({meta['slice']}): figures are not comparable with the full data sets."]
    lines += [
        "",
        "Systems:",
        *[f"- **{s}**: {desc}" for s, desc in meta["system_descriptions"].items()],
        "",
        "Protocol: test sets are used once per reported configuration. Our configurations were fixed beforehand "
        "(`buyer-intent tune`, grouped CV on training data only); fastText's hyperparameters are chosen on validation data "
        f"(grid: {json.dumps(meta['fasttext_grid'])}; fixed: {json.dumps(meta['fasttext_fixed'])}). Thresholds (fallback / "
        "oos-threshold) come from `evaluate.choose_fallback_threshold` with target oos_recall, the target chosen on validation "
        "to maximise the mean of in-scope accuracy and out-of-scope recall. Fit time is the whole fit (ours: features, "
        "calibration folds and final fit); throughput includes text normalisation and tokenisation, on the test set in one "
        f"batch and one message per call ({SINGLE_MESSAGES} messages); size is the model on disk (ours: the skops bundle; "
        "fastText: the .bin file). ECE: 15-bin expected calibration error of the top-class confidence on the test set.",
    ]
    cost_head = "fit s | msgs/s batch | msgs/s single | size"
    for task in results["tasks"]:
        name, kind = task["name"], task["kind"]
        lines += ["", f"## {task['title']}", "", f"train {task['sizes']['train']}, validation {task['sizes']['val']}, test {task['sizes']['test']} messages."]
        if kind == "closed":
            lines += ["", f"| system | accuracy | macro-F1 | ECE | {cost_head} |", "|---|---|---|---|---|---|---|---|"]
            for system in systems:
                r = results["results"].get(name, {}).get(system)
                if r is None or "error" in r:
                    lines.append(_not_run_row(system, r))
                    continue
                m = r["metrics"]
                lines.append(f"| {system} | {_pct(m['accuracy'])} | {_pct(m['macro_f1'])} | {m['ece']:.3f} | {_cost(r)} |")
            continue
        lines += ["", f"| system | in-scope accuracy | out-of-scope recall | ECE | {cost_head} |", "|---|---|---|---|---|---|---|---|"]
        for system in systems:
            r = results["results"].get(name, {}).get(system)
            if r is None or "error" in r:
                lines.append(_not_run_row(system, r))
                continue
            m = r["metrics"]
            label = system if kind == "oos_train" else f"{system} (threshold {m['threshold']:.3f})"
            lines.append(f"| {label} | {_pct(m['in_scope_accuracy'])} | {_pct(m['oos_recall'])} | {m['ece']:.3f} | {_cost(r)} |")
        if kind == "oos_train":
            for system in systems:
                r = results["results"].get(name, {}).get(system)
                if r and "error" not in r:
                    m = r["metrics"]
                    lines.append(f"| {system} + fallback threshold {m['threshold']:.3f} (chosen on validation) | "
                                 f"{_pct(m['fallback_in_scope_accuracy'])} | {_pct(m['fallback_oos_recall'])} | | | | | |")
        for published, accuracy, recall in PUBLISHED[kind]:
            lines.append(f"| *published: {published}* (Larson et al. 2019) | {accuracy:.1f} | {recall:.1f} | | | | | |")
    lines += ["", "## fastText: hyperparameters chosen on validation", "", "| task | epoch | lr | wordNgrams | minn-maxn | validation accuracy |", "|---|---|---|---|---|---|"]
    for task in results["tasks"]:
        r = results["results"].get(task["name"], {}).get("fastText")
        if r and "error" not in r:
            p = r["params"]
            lines.append(f"| {task['name']} | {p['epoch']} | {p['lr']} | {p['wordNgrams']} | {p['minn']}-{p['maxn']} | {_pct(r['tune_val_accuracy'])} |")
    best = systems[0]
    lines += ["", f"## Calibration of {best} (reliability on the test set)", ""]
    for task in results["tasks"]:
        r = results["results"].get(task["name"], {}).get(best)
        if not r or "error" in r:
            continue
        lines += [f"{task['name']} (ECE {r['metrics']['ece']:.3f}):", "", "| confidence bin | messages | mean confidence | accuracy |", "|---|---|---|---|"]
        for row in r["metrics"]["reliability"]:
            lines.append(f"| {row['low']:.1f}-{row['high']:.1f} | {row['n']} | {row['confidence']:.3f} | {row['accuracy']:.3f} |")
        lines.append("")
    lines += ["## Real-chat dev set (Chinese default model)", ""]
    real = results.get("realchat", {})
    if "skipped" in real:
        lines.append(f"Skipped: {real['skipped']}.")
    else:
        lines += [
            f"Model `{real['model']}` (version {real['model_version']}), {real['n']} messages.",
            "",
            "| accuracy | macro-F1 | ECE | fallback rate | accepted accuracy | msgs/s batch | msgs/s single |",
            "|---|---|---|---|---|---|---|",
            f"| {_pct(real['accuracy'])} | {_pct(real['macro_f1'])} | {real['ece']:.3f} | {_pct(real['fallback_rate'])} | "
            f"{_pct(real['accepted_accuracy'])} | {_rate(real['msgs_per_s'])} | {_rate(real['msgs_per_s_single'])} |",
        ]
        for source, part in real.get("by_source", {}).items():
            lines.append(f"\n{source}: accuracy {_pct(part['accuracy'])} on {part['n']} messages.")
        if "purchase" in real:
            p = real["purchase"]
            lines.append(f"\npurchase intent: average precision {p['average_precision']:.3f}, precision {_pct(p['precision'])}, recall {_pct(p['recall'])}.")
    lines += ["", "## Targets", ""] + [f"- {line}" for line in results.get("targets", [])]
    lines += [
        "",
        "## Reproduce",
        "",
        "```",
        "uv sync --group dev                                   # fastText: fasttext-numpy2 (numpy 2 compatible)",
        "python benchmarks/quality.py export --out /tmp/bench  # training files as CSV, outside the repository",
        "buyer-intent tune --config configs/english.yaml --data /tmp/bench/clinc150_oos_train.csv --out /tmp/bench/clinc.yaml --trials 24",
        "buyer-intent tune --config configs/english.yaml --data /tmp/bench/banking77_train.csv --out /tmp/bench/banking.yaml --trials 24",
        f"{meta['command']}",
        "```",
    ]
    if meta.get("notes"):
        lines += ["", meta["notes"].strip()]
    return "\n".join(lines) + "\n"


def check_targets(results: dict[str, Any], best: str) -> list[str]:
    def get(task, system, key):
        r = results["results"].get(task, {}).get(system)
        return None if not r or "error" in r else r["metrics"].get(key)

    lines = []
    def mark(ok):
        return "reached" if ok else "**not reached**"

    acc, rec = get("clinc150_oos_train", best, "in_scope_accuracy"), get("clinc150_oos_train", best, "oos_recall")
    if acc is not None:
        lines.append(f"CLINC150 oos-train in-scope accuracy >= 93.5: {_pct(acc)} ({mark(acc >= 0.935)}); "
                     f"out-of-scope recall >= 47: {_pct(rec)} ({mark(rec >= 0.47)}); with the fallback threshold: "
                     f"{_pct(get('clinc150_oos_train', best, 'fallback_in_scope_accuracy'))} / {_pct(get('clinc150_oos_train', best, 'fallback_oos_recall'))}.")
    b = get("banking77", best, "accuracy")
    if b is not None:
        lines.append(f"BANKING77 accuracy >= 93: {_pct(b)} ({mark(b >= 0.93)}).")
    figures = [("clinc150_oos_train", "in_scope_accuracy"), ("clinc150_oos_threshold", "in_scope_accuracy"), ("banking77", "accuracy"), ("banking77", "macro_f1")]
    pairs = [(t, k, get(t, best, k), get(t, "fastText", k)) for t, k in figures]
    pairs = [p for p in pairs if p[2] is not None and p[3] is not None]
    if pairs:
        ahead = all(ours > ft for _, _, ours, ft in pairs)
        lines.append(f"ahead of fastText on every accuracy figure: {mark(ahead)} (" + "; ".join(f"{t} {k}: {_pct(o)} vs {_pct(f)}" for t, k, o, f in pairs) + ").")
        rates = [(t, results["results"][t][best]["msgs_per_s"], results["results"][t]["fastText"]["msgs_per_s"])
                 for t in results["results"] if get(t, best, "ece") is not None and get(t, "fastText", "ece") is not None]
        ok = all(ours >= 0.5 * ft for _, ours, ft in rates)
        lines.append(f"batch throughput at least half of fastText's: {mark(ok)} (" + "; ".join(f"{t}: {_rate(o)} vs {_rate(f)} msgs/s" for t, o, f in rates) + ").")
    return lines


# ------------------------------------------------------------------------------------------- MLflow


def log_to_mlflow(results: dict[str, Any], report_path: Path, tracking_uri: str, artifact_root: str | None) -> str:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        location = None
        if tracking_uri.startswith(("sqlite:", "file:")) and artifact_root:
            location = Path(artifact_root).resolve().as_uri()
        experiment_id = mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    with mlflow.start_run(run_name="quality-slice" if results["meta"].get("slice") else "quality") as parent:
        mlflow.log_params({"seed": results["meta"]["seed"], "slice": results["meta"].get("slice") or "full",
                           "fasttext": results["meta"]["versions"].get("fasttext"), "systems": ",".join(results["systems"])})
        for system in results["systems"]:
            with mlflow.start_run(run_name=system, nested=True):
                metrics: dict[str, float] = {}
                for task, per_system in results["results"].items():
                    r = per_system.get(system)
                    if not r or "error" in r:
                        continue
                    for key, value in r["metrics"].items():
                        if isinstance(value, (int, float)) and np.isfinite(value):
                            metrics[f"{task}.{key}"] = float(value)
                    for key in ("fit_s", "msgs_per_s", "msgs_per_s_single", "size_bytes"):
                        metrics[f"{task}.{key}"] = float(r[key])
                    if "params" in r:
                        mlflow.log_params({f"{task}.{k}": str(v) for k, v in r["params"].items()})
                mlflow.log_metrics(metrics)
                mlflow.log_metrics({f"{_slug(system)}.{k}": v for k, v in metrics.items()}, run_id=parent.info.run_id)
        real = results.get("realchat", {})
        if "skipped" not in real:
            mlflow.log_metrics({f"realchat.{k}": float(real[k]) for k in ("accuracy", "macro_f1", "ece", "fallback_rate", "msgs_per_s")})
        mlflow.log_artifact(str(report_path), "benchmark")
        mlflow.log_dict(_without_predictions(results), "benchmark/results.json")
        for figure in results.get("figures", []):
            mlflow.log_artifact(figure, "benchmark/reliability")
        return parent.info.run_id


def _slug(system: str) -> str:
    """"ours (best)" -> "ours_best": MLflow metric names take letters, digits, _ - . / : and spaces only."""
    return "_".join(re.findall(r"[A-Za-z0-9]+", system))


def _without_predictions(results: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in results.items() if k != "figures"}, default=float))


def reliability_figure(results: dict[str, Any], system: str, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for task, per_system in results["results"].items():
        r = per_system.get(system)
        if not r or "error" in r:
            continue
        rows = r["metrics"]["reliability"]
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
        ax.plot([row["confidence"] for row in rows], [row["accuracy"] for row in rows], "o-")
        ax.set(xlabel="confidence", ylabel="accuracy", title=f"{task}\n{system}, ECE {r['metrics']['ece']:.3f}", xlim=(0, 1), ylim=(0, 1))
        fig.tight_layout()
        path = out_dir / f"reliability-{task}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(str(path))
    return paths


# --------------------------------------------------------------------------------------------- main


def _versions() -> dict[str, str]:
    out = {}
    for name in ("buyer-intent", "scikit-learn", "numpy", "mlflow"):
        try:
            out[name] = package_version(name)
        except PackageNotFoundError:
            out[name] = "?"
    out["fasttext"] = fasttext_distribution()
    return out


def run_benchmark(
    *,
    best_config: Path = REPO / "configs" / "english.yaml",
    default_config: Path = REPO / "configs" / "default.yaml",
    benchmarks: Path = BENCHMARKS,
    zh_model: Path | None = None,
    realchat: Path = REALCHAT,
    out: Path = REPO / "benchmarks" / "RESULTS.md",
    max_labels: int | None = None,
    per_label: int | None = None,
    fasttext_grid: dict[str, list] | None = None,
    fasttext_fixed: dict[str, Any] | None = None,
    with_fasttext: bool = True,
    mlflow_uri: str | None = None,
    use_mlflow: bool = True,
    command: str = "",
    tasks: list[str] | None = None,
    notes: str | None = None,
    throughput_rounds: int = 3,
    config_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from pipeline.config import load_config
    from pipeline.tracking.runs import resolve_tracking_uri

    best = load_config(best_config, config_overrides)
    default = load_config(default_config, {"text.language": "en", **(config_overrides or {})})
    grid = fasttext_grid or FASTTEXT_GRID
    fixed = FASTTEXT_FIXED | (fasttext_fixed or {})
    systems = {"ours (best)": best, "ours (default)": default}
    names = list(systems) + (["fastText"] if with_fasttext else [])
    sliced = max_labels is not None or per_label is not None
    results: dict[str, Any] = {
        "meta": {
            "command": command or "benchmarks/quality.py",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "load_start": _load(),
            "versions": _versions(),
            "seed": best.seed,
            "slice": f"{max_labels or 'all'} labels, at most {per_label or 'all'} messages per label and split" if sliced else None,
            "fasttext_grid": grid,
            "notes": notes,
            "fasttext_fixed": fixed,
            "system_descriptions": {
                "ours (best)": f"`{_rel(best_config)}`: {_describe(best)}",
                "ours (default)": f"`{_rel(default_config)}` with text.language en: {_describe(default)}",
                **({"fastText": f"{fasttext_distribution()}, supervised softmax, tuned on validation (separate process)"} if with_fasttext else {}),
            },
        },
        "systems": names,
        "tasks": [],
        "results": {},
    }
    # One small fit first: the worker pool of the calibration folds starts and imports now, so no
    # system's fit time pays for it.
    fit_ours(best, Split([f"warm up {i} {word}" for i in range(3) for word in ("a", "b", "c")],
                         np.asarray([word for _ in range(3) for word in ("a", "b", "c")], dtype=object)))
    with tempfile.TemporaryDirectory(prefix="buyer-intent-bench-") as tmp:
        work = Path(tmp)
        fasttext = FastTextProcess(work / "fasttext.log") if with_fasttext else None
        try:
            _run_tasks(results, systems, benchmarks, max_labels, per_label, best.seed, tasks, grid, fixed, fasttext, work, throughput_rounds)
        finally:
            if fasttext is not None:
                fasttext.close()
    results["realchat"] = run_realchat(zh_model, realchat)
    results["meta"]["load_end"] = _load()
    results["targets"] = check_targets(results, names[0])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(results) + _kept_speed_section(out), encoding="utf-8")
    if use_mlflow:
        figure_dir = Path(tempfile.mkdtemp(prefix="buyer-intent-bench-fig-"))
        results["figures"] = reliability_figure(results, names[0], figure_dir)
        uri = mlflow_uri or resolve_tracking_uri(best)
        results["mlflow_run_id"] = log_to_mlflow(results, out, uri, best.mlflow.artifact_root)
    return results


def _run_tasks(results, systems, benchmarks, max_labels, per_label, seed, only, grid, fixed, fasttext, work, throughput_rounds) -> None:
    for task in build_tasks(benchmarks, max_labels, per_label, seed):
        if only and task.name not in only:
            continue
        results["tasks"].append({"name": task.name, "title": task.title, "kind": task.kind,
                                 "sizes": {"train": len(task.train), "val": len(task.val), "test": len(task.test)}})
        per_system = results["results"].setdefault(task.name, {})
        for system, config in systems.items():
            print(f"[quality] {task.name}: {system} ...", file=sys.stderr, flush=True)
            run = run_ours(_slug(system), config, task, work)
            per_system[system] = _finish(task, run)
        if fasttext is not None:
            print(f"[quality] {task.name}: fastText ({len(_grid(grid))} settings) ...", file=sys.stderr, flush=True)
            try:
                per_system["fastText"] = _finish(task, run_fasttext(task, work, grid, fixed, fasttext))
            except RuntimeError as exc:
                per_system["fastText"] = {"error": f"fastText failed: {exc}"}
        print(f"[quality] {task.name}: throughput ...", file=sys.stderr, flush=True)
        measure_throughput(task, per_system, work, throughput_rounds, fasttext)


def _finish(task: Task, run: dict[str, Any]) -> dict[str, Any]:
    metrics = score_task(task, run)
    keep = {k: v for k, v in run.items() if k not in ("val", "test", "trials")}
    return keep | {"metrics": metrics}


def _kept_speed_section(path: Path) -> str:
    """The section `benchmarks/inference_speed.py` writes into the same file, kept as it is ("" without one)."""
    text = Path(path).read_text(encoding="utf-8") if Path(path).exists() else ""
    start, end = text.find("<!-- inference-speed:start -->"), text.find("<!-- inference-speed:end -->")
    return "\n" + text[start : end + len("<!-- inference-speed:end -->")] + "\n" if start != -1 and end > start else ""


def _load() -> str:
    try:
        return " / ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "?"


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _describe(config) -> str:
    f, m = config.features, config.intent_model
    reg = f"C={m.C:g}" if m.classifier in ("logreg", "linear_svc") else f"alpha={m.alpha:g}"
    return (f"{m.classifier} ({reg}, class_weight {m.class_weight}), words {list(f.word_ngram_range)} + {f.char_analyzer} "
            f"{list(f.char_ngram_range)}, min_df {f.min_df}, max_features {f.max_features}, sublinear_tf {f.sublinear_tf}, "
            f"temperature-calibrated on {m.calibration_folds} folds")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["fasttext-server"]:
        fasttext_server()
        return 0
    if argv[:1] == ["export"]:
        parser = argparse.ArgumentParser(prog="quality.py export", description="write the benchmark training files as labelled CSVs")
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument("--benchmarks", type=Path, default=BENCHMARKS)
        args = parser.parse_args(argv[1:])
        for path in export_training_csvs(args.out, args.benchmarks):
            print(path)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "english.yaml", help="our best configuration")
    parser.add_argument("--default-config", type=Path, default=REPO / "configs" / "default.yaml", help="our default configuration (run with language en)")
    parser.add_argument("--benchmarks", type=Path, default=BENCHMARKS)
    parser.add_argument("--zh-model", type=Path, default=REPO / "models" / "champion", help="Chinese model directory for the real-chat dev set")
    parser.add_argument("--realchat", type=Path, default=REALCHAT)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    parser.add_argument("--json", type=Path, default=None, help="also write all figures as JSON here")
    parser.add_argument("--max-labels", type=int, default=None, help="slice: first N labels of each data set")
    parser.add_argument("--per-label", type=int, default=None, help="slice: at most N messages per label and split")
    parser.add_argument("--task", action="append", choices=["clinc150_oos_train", "clinc150_oos_threshold", "banking77"], help="run only these tasks")
    parser.add_argument("--no-fasttext", action="store_true")
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--notes", type=Path, default=None, help="Markdown appended to the report (e.g. the model-selection runs)")
    args = parser.parse_args(argv)
    if not (args.benchmarks / "clinc150" / "data_full.json").is_file():
        print(f"benchmarks not found under {args.benchmarks}", file=sys.stderr)
        return 2
    results = run_benchmark(
        best_config=args.config, default_config=args.default_config, benchmarks=args.benchmarks, zh_model=args.zh_model,
        realchat=args.realchat, out=args.out, max_labels=args.max_labels, per_label=args.per_label,
        with_fasttext=not args.no_fasttext, use_mlflow=not args.no_mlflow, tasks=args.task,
        notes=args.notes.read_text(encoding="utf-8") if args.notes else None,
        command="benchmarks/quality.py " + " ".join(argv) if argv else "benchmarks/quality.py",
    )
    if args.json:
        args.json.write_text(json.dumps(_without_predictions(results), indent=2, default=float), encoding="utf-8")
    print(args.out.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
