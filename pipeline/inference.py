"""Inference: resolve a model reference, load it safely, classify messages.

This is the part serving and batch jobs import; it does not import training code, and MLflow is only
imported when a registry reference has to be resolved.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.pipeline import FeatureUnion

from pipeline.bundle import ModelBundle, ModelIntegrityError, load_bundle, read_manifest
from pipeline.compiled import compile_bundle, model_steps

BUNDLE_ARTIFACT = "bundle"


class ModelNotFoundError(LookupError):
    """The requested model reference does not resolve to a model."""


@dataclass
class ResolvedModel:
    directory: Path
    name: str
    version: str
    expected_seal: str | None = None  # the bundle's seal recorded outside it (registry tag); None for a local directory


def _find_bundle_dir(root: Path) -> Path:
    for candidate in (root, root / "artifacts" / BUNDLE_ARTIFACT, root / BUNDLE_ARTIFACT):
        if (candidate / "manifest.json").is_file():
            return candidate
    raise ModelNotFoundError(f"{root}: no model bundle (manifest.json) found")


def default_registry():
    """The registry of configs/default.yaml (or BUYER_INTENT_CONFIG), for callers that pass none."""
    from pipeline.config import Registry, load_config

    return Registry.from_config(load_config(os.environ.get("BUYER_INTENT_CONFIG") or None))


def resolve_model(reference: str | None, registry=None, download_dir: str | Path | None = None) -> ResolvedModel:
    """A local bundle directory, `models:/name@alias`, `models:/name/version`, a bare version number of
    the registry's model, or None for the registry's `name@alias` (`pipeline.config.Registry`: the
    config's `mlflow.registered_model` and `mlflow.alias`, so an English config means its own model)."""
    if reference and Path(reference).exists():
        directory = _find_bundle_dir(Path(reference))
        return ResolvedModel(directory, read_manifest(directory).get("name", "local"), "local")
    import mlflow
    from mlflow.exceptions import MlflowException

    registry = registry or default_registry()
    mlflow.set_tracking_uri(registry.tracking_uri)
    reference = reference or f"models:/{registry.name}@{registry.alias}"
    if reference.isdigit():
        reference = f"models:/{registry.name}/{reference}"
    if not reference.startswith("models:/"):
        raise ModelNotFoundError(f"{reference!r} is neither an existing directory nor a models:/ URI")
    client = mlflow.MlflowClient()
    spec = reference[len("models:/") :]
    try:
        if "@" in spec:
            name, alias = spec.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = spec.rsplit("/", 1)
            version = client.get_model_version(name, number)
        target = Path(download_dir) if download_dir else None
        if target:
            target.mkdir(parents=True, exist_ok=True)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version.version}", dst_path=str(target) if target else None
        )
    except MlflowException as exc:
        raise ModelNotFoundError(f"cannot resolve {reference}: {exc.message}") from exc
    seal = (version.tags or {}).get("bundle_seal")
    if not seal:
        raise ModelIntegrityError(
            f"{reference}: version {version.version} has no `bundle_seal` tag (registered before bundles were sealed, "
            "or the tag was removed); refusing to load an unsealed model. Retrain, or register it again"
        )
    return ResolvedModel(_find_bundle_dir(Path(local)), name, str(version.version), seal)


def load_model(reference: str | None = None, registry=None) -> ModelBundle:
    resolved = resolve_model(reference, registry)
    bundle = load_bundle(resolved.directory, resolved.expected_seal)
    if resolved.version != "local":
        bundle.manifest["version"] = resolved.version
        bundle.manifest["name"] = resolved.name
    return bundle


class Predictor:
    """Message-level predictions with the thresholds that were chosen on validation data.

    `compiled=False` scores with the scikit-learn pipelines, the reference the compiled path is tested against."""

    def __init__(self, bundle: ModelBundle, compiled: bool = True):
        self.bundle = bundle
        self.labels: list[str] = [str(label) for label in bundle.intent.classes_]
        thresholds = bundle.thresholds
        self.fallback_threshold = float(thresholds.get("fallback", 0.0))
        self.purchase_threshold = float(thresholds.get("purchase", 0.5))
        self.empty_label = "other" if "other" in self.labels else bundle.manifest.get("empty_label", self.labels[0])
        # (features, classifier) of each model, read by name: a pipeline of another shape is refused here.
        self._intent_steps = model_steps(bundle.intent)[1:]
        self._purchase_steps = model_steps(bundle.purchase)[1:] if bundle.purchase is not None else None
        # When both models share their fitted feature steps, features are computed once per batch.
        self._shared_features = self._purchase_steps is not None and self._intent_steps[0] is self._purchase_steps[0]
        # The compiled path (pipeline/compiled.py): the same probabilities without scikit-learn per call;
        # None (one warning) for a model of another structure, or compiled=False: the scikit-learn path.
        self._compiled = compile_bundle(bundle) if compiled else None

    @property
    def has_purchase(self) -> bool:
        return self.bundle.purchase is not None

    def warm_up(self) -> None:
        self.predict(["在吗 亲 包邮吗 [订单x]"])

    def _probabilities(self, normalized: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        if self._compiled is not None and not self._compiled.is_current():  # a model part was refit since
            self._compiled = compile_bundle(self.bundle)
        if self._compiled is not None:
            return self._compiled.probabilities(normalized)
        intent_features, intent_classifier = self._intent_steps
        features = transform_features(intent_features, normalized)
        intent_proba = intent_classifier.predict_proba(features)
        purchase = None
        if self._purchase_steps is not None:
            purchase_features, purchase_classifier = self._purchase_steps
            purchase_features = features if self._shared_features else transform_features(purchase_features, normalized)
            purchase = purchase_classifier.predict_proba(purchase_features)[:, 1]
        return intent_proba, purchase

    def predict_arrays(self, texts: Sequence[str], top_k: int = 0) -> dict[str, np.ndarray | list]:
        """The columns of `predict` as arrays (and `top`: a list of (label, score) lists when top_k).

        The live service calls this directly: building a DataFrame costs more than the model on
        small batches. One message (what the service gets per request) takes `_predict_one`, the same
        columns without the batch's masks and index arrays."""
        if len(texts) == 1:
            return self._predict_one(texts[0], top_k)
        normalized = self.bundle.intent.named_steps["normalize"].transform(texts)
        n = len(normalized)
        intents = np.full(n, self.empty_label, dtype=object)
        confidence = np.zeros(n)
        purchase_score = np.zeros(n)
        top: list[list[tuple[str, float]]] = [[] for _ in range(n)]
        present = np.array([bool(text) for text in normalized], dtype=bool)
        if present.any():
            index = np.flatnonzero(present)
            proba, purchase = self._probabilities([normalized[i] for i in index])
            best = proba.argmax(axis=1)
            intents[index] = np.asarray(self.labels, dtype=object)[best]
            confidence[index] = proba[np.arange(len(index)), best]
            if purchase is not None:
                purchase_score[index] = purchase
            if top_k:
                order = np.argsort(-proba, axis=1)[:, :top_k]
                for row, i in enumerate(index):
                    top[i] = [(self.labels[j], round(float(proba[row, j]), 6)) for j in order[row]]
        columns: dict[str, np.ndarray | list] = {
            "intent": intents,
            "intent_confidence": confidence.round(6),
            "fallback": (confidence < self.fallback_threshold) | ~present,
            "purchase_intent": ((purchase_score >= self.purchase_threshold) & present).astype(np.int8),
            "purchase_score": purchase_score.round(6),
        }
        if top_k:
            columns["top"] = top
        return columns

    def _predict_one(self, text: str, top_k: int) -> dict[str, np.ndarray | list]:
        """`predict_arrays([text], top_k)`, value for value and dtype for dtype (the same rounding, the same
        `argsort` order of the top-k): the per-call cost of the batch path's arrays, about a fifth of a
        compiled one-message call, is what this saves (`tests/model/test_compiled.py` compares the two)."""
        normalized = self.bundle.intent.named_steps["normalize"].transform([text])[0]
        present = bool(normalized)
        intent, confidence, purchase, top = self.empty_label, 0.0, 0.0, []
        if present:
            proba, purchase_proba = self._probabilities([normalized])
            row = proba[0]
            best = int(row.argmax())
            intent, confidence = self.labels[best], row[best]
            if purchase_proba is not None:
                purchase = purchase_proba[0]
            if top_k:
                top = [(self.labels[j], round(float(row[j]), 6)) for j in np.argsort(-row)[:top_k]]
        scores = np.array([confidence, purchase], dtype=np.float64).round(6)  # one rounding call for both columns
        columns: dict[str, np.ndarray | list] = {
            "intent": np.array([intent], dtype=object),
            "intent_confidence": scores[:1],
            "fallback": np.array([confidence < self.fallback_threshold or not present]),
            "purchase_intent": np.array([purchase >= self.purchase_threshold and present], dtype=np.int8),
            "purchase_score": scores[1:],
        }
        if top_k:
            columns["top"] = [top]
        return columns

    def predict(self, texts: Sequence[str], top_k: int = 0) -> pd.DataFrame:
        """intent, intent_confidence, fallback, purchase_intent, purchase_score (and top-k when asked)."""
        columns = self.predict_arrays(texts, top_k)
        columns["intent"] = columns["intent"].astype(str)
        return pd.DataFrame(columns)


def transform_features(step, texts: list[str]):
    """`FeatureUnion.transform` without its joblib dispatch, which costs more than the vectorizers
    themselves on the small batches of live traffic; any other step is called as it is."""
    if not isinstance(step, FeatureUnion) or step.n_jobs not in (None, 1):
        return step.transform(texts)
    weights = step.transformer_weights or {}
    blocks = []
    for name, transformer in step.transformer_list:
        if transformer == "drop":
            continue
        if transformer == "passthrough":
            return step.transform(texts)
        block = transformer.transform(texts)
        blocks.append(block * weights[name] if name in weights else block)
    if not blocks:
        return step.transform(texts)
    if all(sparse.issparse(block) for block in blocks):
        return sparse.hstack(blocks, format="csr")
    return step.transform(texts)
