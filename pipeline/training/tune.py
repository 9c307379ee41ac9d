"""Model selection: random search over features and classifiers by grouped cross-validation.

Only the training split is used (the same grouped split `train` makes, so validation and test stay
unseen); folds are grouped the way the split is (a group, and every row sharing a normalised text
with it, stays in one fold). Every trial is a nested MLflow run under one parent run, and the best
setting is written as a complete YAML config that `buyer-intent train --config` accepts.

The search space lives in the config's `tune:` section (defaults in configs/default.yaml):

    tune:
      experiment: buyer-intent-tune      # MLflow experiment of the search
      metric: accuracy                   # accuracy | macro_f1 (mean over folds)
      space:                             # shared by every classifier: dotted key -> choices
        features.char_analyzer: [char_wb, char]
        features.char_ngram_range: [[1, 4], [2, 5]]
      classifiers:                       # classifier -> its own space (e.g. its regularisation)
        linear_svc: {intent_model.C: {log_uniform: [0.1, 10]}}
        logreg: {intent_model.C: {log_uniform: [1, 100]}}

A value is a list of choices, `{log_uniform: [low, high]}` or `{uniform: [low, high]}`, drawn by
scikit-learn's `ParameterSampler` (one sub-space per classifier, scipy's `loguniform` / `uniform`). Trial 0 is
always the config as given, so the written config is never worse in cross-validation than the start.
Cross-validation scores the uncalibrated linear model: the temperature scaling that `train` adds
keeps the arg-max, so accuracy and macro-F1 are the same.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.stats import loguniform, uniform
from joblib import Parallel, delayed
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import ParameterGrid, ParameterSampler

from pipeline.config import Config, ConfigError
from pipeline.data.labelled import LabelledData, fingerprint, merged_groups, split_by_settings
from pipeline.folds import FastStratifiedGroupKFold

log = logging.getLogger(__name__)

METRICS = ("accuracy", "macro_f1")

class TuneError(ValueError):
    """A search space that cannot be used; the message names the key."""


# --------------------------------------------------------------------------------------- the space


def _distribution(spec: Any, key: str) -> Any:
    """A config value as ParameterSampler takes it: a list of choices or a scipy distribution."""
    if isinstance(spec, list):
        if not spec:
            raise TuneError(f"tune: {key} has no choices")
        return spec
    if isinstance(spec, dict) and len(spec) == 1:
        (kind, bounds), = spec.items()
        if kind in ("log_uniform", "uniform") and isinstance(bounds, list) and len(bounds) == 2:
            low, high = float(bounds[0]), float(bounds[1])
            valid = 0 < low <= high if kind == "log_uniform" else low <= high
            if not valid:
                raise TuneError(f"tune: {key} has bad bounds {bounds}")
            if low == high:
                return [low]
            return loguniform(low, high) if kind == "log_uniform" else uniform(low, high - low)
    raise TuneError(f"tune: {key} must be a list of choices, {{log_uniform: [low, high]}} or {{uniform: [low, high]}}; got {spec!r}")


def search_space(config: Config) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(shared space, per-classifier spaces) from `config.tune` (validated when the config was loaded)."""
    return dict(config.tune.space), {name: dict(sub or {}) for name, sub in config.tune.classifiers.items()}


def sampler_grid(space: dict[str, Any], classifiers: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One sub-space per classifier, the shared keys in each: ParameterSampler picks a sub-space
    uniformly for every draw, then a value for each of its keys."""
    return [
        {
            "intent_model.classifier": [name],
            **{key: _distribution(spec, key) for key, spec in space.items()},
            **{key: _distribution(spec, f"classifiers.{name}.{key}") for key, spec in classifiers[name].items()},
        }
        for name in sorted(classifiers)
    ]


def _readable(value: Any) -> Any:
    """A drawn float to 4 significant digits (a YAML a person reads); choices copied, not shared."""
    if isinstance(value, (float, np.floating)):
        return float(f"{float(value):.4g}")
    return copy.deepcopy(value)


def draw_params(space: dict[str, Any], classifiers: dict[str, dict[str, Any]], n_draws: int, seed: int) -> list[dict[str, Any]]:
    """Up to `n_draws` distinct parameter sets (fewer when the space holds fewer), in draw order."""
    grid = sampler_grid(space, classifiers)
    if all(isinstance(values, list) for sub in grid for values in sub.values()):
        n_draws = min(n_draws, len(ParameterGrid(grid)))  # without replacement: no more than the grid holds
    draws, seen = [], set()
    for params in ParameterSampler(grid, n_iter=n_draws, random_state=seed):
        params = {key: _readable(params[key]) for key in sorted(params)}
        key = json.dumps(params, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            draws.append(params)
    return draws


def apply_params(config: Config, params: dict[str, Any]) -> Config:
    """A validated copy of `config` with the dotted keys set (a bad value raises `ConfigError`)."""
    tree = config.model_dump(mode="json")
    for dotted, value in params.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return Config.model_validate(tree)
    except Exception as exc:  # pydantic.ValidationError: name the trial's keys
        raise ConfigError(f"tune: parameters {params} give an invalid config: {exc}") from exc


# --------------------------------------------------------------------------------------- scoring


def _fold_score(config_tree: dict[str, Any], texts: list[str], labels: np.ndarray, train_idx: np.ndarray, held_idx: np.ndarray) -> dict[str, float]:
    """Fit features and the (uncalibrated) linear model on one fold; scores on the held-out part."""
    from sklearn.base import clone

    from pipeline.training.model import build_intent_pipeline

    config = Config.model_validate(config_tree)
    started = time.perf_counter()
    pipeline = build_intent_pipeline(config)
    features = pipeline.named_steps["features"]
    classifier = pipeline.named_steps["classifier"]
    # The linear model inside the calibration wrapper (temperature scaling keeps the arg-max).
    model = clone(getattr(classifier, "estimator", None) or classifier)
    matrix = features.fit_transform([texts[i] for i in train_idx])
    model.fit(matrix, labels[train_idx])
    fit_s = time.perf_counter() - started
    predicted = model.predict(features.transform([texts[i] for i in held_idx]))
    truth = labels[held_idx]
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, labels=np.unique(truth), average="macro", zero_division=0)),
        "fit_s": fit_s,
        "n_features": float(matrix.shape[1]),
    }


def _training_split(config: Config, data: LabelledData):
    frame = data.frame.copy()
    frame["split"] = split_by_settings(frame, config.split, config.seed)
    return frame[frame["split"] == "train"].reset_index(drop=True)


def cv_folds(frame, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grouped, stratified folds (groups merged where rows share a normalised text, as in the split)."""
    groups = merged_groups(frame["group"].astype(str), frame["normalized"]).to_numpy()
    n_groups = len(np.unique(groups))
    if n_groups < folds:
        raise TuneError(f"{folds} folds need at least {folds} groups in the training split; it has {n_groups}")
    splitter = FastStratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(np.asarray(a), np.asarray(b)) for a, b in splitter.split(np.zeros(len(frame)), frame["intent"].to_numpy(), groups)]


# --------------------------------------------------------------------------------------- MLflow


def _setup_mlflow(config: Config, experiment: str) -> str:
    from pipeline.tracking import runs as tracking

    tune_config = config.model_copy(update={"mlflow": config.mlflow.model_copy(update={"experiment": experiment})})
    return tracking.setup(tune_config)


def _param_str(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) or value is None else str(value)


# --------------------------------------------------------------------------------------- the search


def write_config(config: Config, out: Path, header: str) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    out.write_text("".join(f"# {line}\n" for line in header.splitlines()) + body, encoding="utf-8")
    return out


def run_tune(config: Config, data: LabelledData, out: Path, n_trials: int = 20, folds: int = 3, n_jobs: int = 2) -> dict:
    """Random search by grouped CV on the training split; writes the best config to `out`.

    Returns the best parameters and score, every trial's scores, and the MLflow ids.
    """
    import mlflow

    if n_trials < 1:
        raise TuneError("n_trials must be at least 1")
    if folds < 2:
        raise TuneError("folds must be at least 2")
    metric = config.tune.metric
    space, classifiers = search_space(config)

    # Trial 0 is the config as given; then distinct random draws (validated before any fitting).
    candidates: list[tuple[dict[str, Any], Config]] = [({}, config)]
    for params in draw_params(space, classifiers, 50 * n_trials, config.seed):
        if len(candidates) == n_trials:
            break
        candidates.append((params, apply_params(config, params)))

    train_part = _training_split(config, data)
    if train_part.empty:
        raise TuneError("the training split is empty")
    texts = train_part["normalized"].tolist()
    labels = train_part["intent"].to_numpy().astype(str)
    splits = cv_folds(train_part, folds, config.seed)
    log.info("tune: %d trials x %d folds on %d training messages (%d intents)", len(candidates), folds, len(texts), len(np.unique(labels)))

    experiment = config.tune.experiment
    experiment_id = _setup_mlflow(config, experiment)
    tasks = [
        delayed(_fold_score)(trial_config.model_dump(mode="json"), texts, labels, train_idx, held_idx)
        for _, trial_config in candidates
        for train_idx, held_idx in splits
    ]
    trials: list[dict[str, Any]] = []
    started = time.perf_counter()
    with mlflow.start_run(run_name="tune") as parent:
        mlflow.log_params(
            {
                "n_trials": len(candidates), "folds": folds, "n_jobs": n_jobs, "metric": metric, "seed": config.seed,
                "language": config.text.language, "train_messages": len(texts), "intents": len(np.unique(labels)),
                "data_sha256": fingerprint(train_part, ["text", "intent", "group"])["sha256"],
            }
        )
        mlflow.log_dict({"space": space, "classifiers": classifiers}, "tune/space.json")
        fold_results: list[dict[str, float]] = []
        results = Parallel(n_jobs=n_jobs, return_as="generator")(tasks)
        for result in results:
            fold_results.append(result)
            if len(fold_results) < folds:
                continue
            number = len(trials)
            params, trial_config = candidates[number]
            scores = {
                f"cv_{name}": float(np.mean([r[name] for r in fold_results])) for name in METRICS
            } | {f"cv_{name}_std": float(np.std([r[name] for r in fold_results])) for name in METRICS}
            scores["fit_s"] = float(np.mean([r["fit_s"] for r in fold_results]))
            scores["n_features"] = float(np.mean([r["n_features"] for r in fold_results]))
            fold_results = []
            effective = _effective_params(trial_config)
            with mlflow.start_run(run_name=f"trial-{number:03d}", nested=True) as child:
                mlflow.log_params({key: _param_str(value) for key, value in effective.items()} | {"trial": number})
                mlflow.log_metrics(scores)
                run_id = child.info.run_id
            trials.append({"trial": number, "params": params, "effective": effective, **scores, "run_id": run_id})
            log.info("tune: trial %d %s -> cv %s %.4f", number, params or "(as given)", metric, scores[f"cv_{metric}"])
        best = max(trials, key=lambda t: (t[f"cv_{metric}"], -t["trial"]))
        best_config = candidates[best["trial"]][1]
        header = (
            f"Written by `buyer-intent tune`: best of {len(trials)} trials by {folds}-fold grouped CV on the training split\n"
            f"cv {metric} {best[f'cv_{metric}']:.4f} (trial {best['trial']}, MLflow run {best['run_id']}; parent {parent.info.run_id})\n"
            f"changed from the starting config: {json.dumps(best['params'], default=str)}"
        )
        written = write_config(best_config, out, header)
        mlflow.log_metrics({f"best_cv_{name}": best[f"cv_{name}"] for name in METRICS} | {"search_s": time.perf_counter() - started})
        mlflow.log_params({"best_trial": best["trial"]})
        mlflow.log_artifact(str(written), "tune")
        parent_id = parent.info.run_id
    return {
        "out": str(written),
        "metric": metric,
        "best_score": best[f"cv_{metric}"],
        "best_trial": best["trial"],
        "best_params": best["effective"],
        "changed": best["params"],
        "trials": [
            {key: trial[key] for key in ("trial", "params", "cv_accuracy", "cv_macro_f1", "fit_s", "run_id")}
            for trial in trials
        ],
        "experiment": experiment,
        "experiment_id": experiment_id,
        "parent_run_id": parent_id,
    }


def _effective_params(config: Config) -> dict[str, Any]:
    """The settings a trial actually used (its features and the parameters of its classifier)."""
    model = config.intent_model
    params: dict[str, Any] = {f"features.{k}": v for k, v in config.features.model_dump(mode="json").items()}
    params["intent_model.classifier"] = model.classifier
    if model.classifier in ("logreg", "linear_svc"):
        params["intent_model.C"] = model.C
    else:
        params["intent_model.alpha"] = model.alpha
    if model.classifier != "complement_nb":
        params["intent_model.class_weight"] = model.class_weight
    return params
