"""MLflow: where runs go, what a training run logs, registration and the champion alias."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.data.dataset_source_registry import get_dataset_source_from_json
from mlflow.data.pandas_dataset import from_pandas
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import ColSpec, Schema

from pipeline.bundle import MODELS_FILE, bundle_seal, save_bundle
from pipeline.config import Config, config_as_flat_dict, resolve_tracking_uri
from pipeline.data.labelled import fingerprint
from pipeline.training.evaluate import flat_metrics
from pipeline.text import mask_pii

log = logging.getLogger(__name__)
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")
_RUNTIME_PACKAGES = ("scikit-learn", "scipy", "numpy", "pandas", "jieba", "rjieba", "skops", "pyarrow", "mlflow")
# shown in the report's run details and tagged on the run: what a result depends on
_REPORTED_PACKAGES = ("buyer-intent", "scikit-learn", "numpy", "scipy", "pandas", "rjieba", "jieba", "skops", "mlflow", "bentoml")
MODEL_DESCRIPTION = (
    "Intent (the label set of its training data) and purchase-intent classifier for buyer messages of "
    "e-commerce customer-service chats, with a conversation-level purchase-intent model for flagging lost "
    "shoppers. TF-IDF word and character n-grams, linear models, calibrated; a sealed skops bundle. "
    "Each version's description says what it was trained on and how it scored."
)


def setup(config: Config) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns the experiment id."""
    mlflow.set_tracking_uri(resolve_tracking_uri(config))
    experiment = mlflow.get_experiment_by_name(config.mlflow.experiment)
    if experiment is not None:
        mlflow.set_experiment(experiment_id=experiment.experiment_id)
        return experiment.experiment_id
    artifact_location = None
    if not os.environ.get("MLFLOW_TRACKING_URI") or resolve_tracking_uri(config).startswith(("sqlite:", "file:")):
        artifact_location = Path(config.mlflow.artifact_root).resolve().as_uri()
    experiment_id = mlflow.create_experiment(config.mlflow.experiment, artifact_location=artifact_location)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


_COLUMN_TYPES = {"O": "string", "U": "string", "f": "double", "b": "boolean", "i": "long", "u": "long"}


def output_schema(output: pd.DataFrame) -> Schema:
    """The prediction columns as they are: `purchase_intent` is a 0/1 integer that is never missing
    (MLflow's inference warns about integer columns that might be)."""
    return Schema([ColSpec(_COLUMN_TYPES[output[column].dtype.kind], str(column)) for column in output.columns])


def code_version(cwd: str | Path = Path(__file__).resolve().parent) -> str:
    """The git commit of the checkout this package runs from (`+changes` when tracked files differ from
    it), or `unknown` outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+changes" if dirty else "")


def installed_versions(names: tuple[str, ...] = _REPORTED_PACKAGES) -> dict[str, str]:
    """name -> installed version, for the names that are installed."""
    versions = {}
    for name in names:
        try:
            versions[name] = package_version(name)
        except PackageNotFoundError:
            continue
    return versions


def run_name(config: Config, when: datetime | None = None) -> str:
    """`train-messages-20261205-041230`: what was trained on, and when (UTC), instead of MLflow's random words."""
    when = when or datetime.now(timezone.utc)
    return f"train-{Path(config.paths.data).stem}-{when:%Y%m%d-%H%M%S}"


def log_datasets(inputs: list[tuple[pd.DataFrame, str, str, str]]) -> None:
    """Each data set as an MLflow run input (name, source, digest, schema and size; no rows are stored):
    (frame, name, source path, context), context `training` or `evaluation`."""
    for frame, name, source, context in inputs:
        columns = [c for c in ("text", "intent", "purchase_intent") if c in frame.columns]
        table = frame[columns].astype({"purchase_intent": "float64"} if "purchase_intent" in columns else {})  # a label, not an id
        # a local file as MLflow's `local` source: resolving a plain path warns (two registered sources claim it)
        located = get_dataset_source_from_json(json.dumps({"uri": str(Path(source).resolve())}), "local")
        dataset = from_pandas(table, source=located, name=name, targets="intent" if "intent" in columns else None,
                              digest=fingerprint(frame, columns)["sha256"][:16])
        mlflow.log_input(dataset, context=context)


def _pip_requirements() -> list[str]:
    return [f"{name}=={version}" for name, version in installed_versions(_RUNTIME_PACKAGES).items()]


def log_run_contents(
    config: Config,
    metrics: dict[str, Any],
    fingerprints: dict[str, Any],
    report_dir: Path | None,
    user_dict_text: str,
    extra_params: dict[str, str] | None = None,
) -> None:
    """Params, metrics, fingerprints, report and dictionary of the active run."""
    params = config_as_flat_dict(config)
    params.update(extra_params or {})
    mlflow.log_params({key: value[:6000] for key, value in params.items()})
    scalars: dict[str, float] = {}
    for split, part in metrics.items():
        if not isinstance(part, dict):
            continue
        if split == "conversation":
            scalars.update(flat_metrics("conversation_test", part.get("test", {})))
            scalars.update(flat_metrics("conversation_val", part.get("val", {})))
            continue
        if split == "flagging":
            scalars.update(flat_metrics("flagging_test", part))
            continue
        for task in ("intent", "purchase"):
            if task in part:
                scalars.update(flat_metrics(f"{split.replace(':', '_')}_{task}", part[task]))
    mlflow.log_metrics(scalars)
    mlflow.log_dict(fingerprints, "data/fingerprints.json")
    mlflow.log_dict(json.loads(json.dumps(metrics, default=float)), "metrics/metrics.json")
    if user_dict_text:
        mlflow.log_text(user_dict_text, "model_inputs/userdict.txt")
    if report_dir is not None and report_dir.is_dir():
        mlflow.log_artifacts(str(report_dir), "report")


def log_and_register_model(
    bundle, user_dict_text: str, config: Config, sample_texts: list[str], description: str = ""
) -> tuple[str, str]:
    """Log the bundle as a models-from-code pyfunc, register it with its seal and `description`; returns
    (version, seal)."""
    from pipeline.inference import Predictor

    with tempfile.TemporaryDirectory(prefix="buyer-intent-bundle-") as tmp:
        bundle_dir = save_bundle(bundle, Path(tmp) / "bundle", user_dict_text)
        seal = bundle_seal(bundle_dir)
        example = pd.DataFrame({"text": [mask_pii(text) for text in sample_texts[:5]] or ["在吗"]})
        output = Predictor(bundle).predict(example["text"].tolist())
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts={"bundle": str(bundle_dir)},
            # the seal travels in MLmodel too, so mlflow.pyfunc.load_model refuses an edited manifest (threshold,
            # labels) as the project's own loader does with the registry tag
            model_config={"bundle_seal": seal},
            signature=ModelSignature(inputs=infer_signature(example).inputs, outputs=output_schema(output)),
            input_example=example,
            pip_requirements=_pip_requirements(),
            registered_model_name=config.mlflow.registered_model,
        )
    model_version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_model_version_tag(config.mlflow.registered_model, model_version, "bundle_seal", seal)
    client.set_model_version_tag(config.mlflow.registered_model, model_version, "models_sha256", bundle.manifest["sha256"][MODELS_FILE])
    client.update_registered_model(config.mlflow.registered_model, description=MODEL_DESCRIPTION)
    if description:
        client.update_model_version(config.mlflow.registered_model, model_version, description=description)
    return model_version, seal


def current_champion_version(config: Config) -> str | None:
    client = mlflow.MlflowClient()
    try:
        return str(client.get_model_version_by_alias(config.mlflow.registered_model, config.mlflow.alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def should_promote(policy: str, new: dict[str, float], champion: dict[str, float] | None, metric: str) -> tuple[bool, str]:
    """Promote when there is no champion, or the new model is at least as good on the same test split."""
    if policy == "always":
        return True, "promotion forced"
    if policy == "never":
        return False, "promotion disabled"
    if champion is None:
        return True, "no champion yet"
    if metric not in new or metric not in champion:
        return False, f"{metric} missing from the comparison"
    if new[metric] >= champion[metric]:
        return True, f"{metric} {new[metric]:.4f} >= champion {champion[metric]:.4f}"
    return False, f"{metric} {new[metric]:.4f} < champion {champion[metric]:.4f}"


def promote(config: Config, model_version: str) -> None:
    mlflow.MlflowClient().set_registered_model_alias(config.mlflow.registered_model, config.mlflow.alias, model_version)
