"""Run configuration: one YAML file holds every setting; CLI flags override single keys.

Validated with pydantic so a typo in a key or a value out of range fails before any work starts,
with the key named.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Paths(_Strict):
    data: str
    conversations: str | None = None
    orders: str | None = None  # orders of the labelled conversations: the nudge list is evaluated on held-out ones
    reports: str = "reports"
    quarantine: str = "data/quarantine"
    model_dir: str | None = None


class MlflowSettings(_Strict):
    tracking_uri: str = "sqlite:///mlflow.db"
    artifact_root: str = "mlartifacts"
    experiment: str = "buyer-intent"
    registered_model: str = "buyer-intent"
    alias: str = "champion"
    promote: Literal["auto", "always", "never"] = "auto"
    primary_metric: str = "intent_macro_f1"


class SplitSettings(_Strict):
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    min_examples_per_label: int = Field(6, ge=3)
    # Validation by author: rows whose `holdout_column` value is listed form the validation split, so
    # thresholds and settings are chosen on text written unlike the training text. Data without the
    # column (or none of the values) falls back to the grouped random validation split.
    holdout_column: str | None = "writer"
    val_holdout: list[str] = Field(default_factory=list)


class TextSettings(_Strict):
    language: Literal["zh", "en"] = "zh"
    user_dict: str | None = None
    max_chars: int = Field(4000, ge=1)  # a message is cut to this before any pattern runs


class FeatureSettings(_Strict):
    word_ngram_range: tuple[int, int] = (1, 2)
    char_ngram_range: tuple[int, int] = (1, 3)
    char_analyzer: Literal["char", "char_wb"] = "char"
    min_df: int = Field(1, ge=1)
    max_features: int | None = Field(None, ge=1)
    sublinear_tf: bool = True

    @model_validator(mode="after")
    def _ranges(self) -> "FeatureSettings":
        for name in ("word_ngram_range", "char_ngram_range"):
            low, high = getattr(self, name)
            if not 1 <= low <= high:
                raise ValueError(f"{name} must be [low, high] with 1 <= low <= high, got {[low, high]}")
        return self


class FallbackSettings(_Strict):
    target: Literal["accepted_accuracy", "oos_recall"] = "accepted_accuracy"
    value: float = Field(0.9, gt=0, le=1)
    oos_label: str | None = None

    @model_validator(mode="after")
    def _oos_label(self) -> "FallbackSettings":
        if self.target == "oos_recall" and not self.oos_label:
            raise ValueError("fallback.target oos_recall needs fallback.oos_label")
        return self


class IntentModelSettings(_Strict):
    classifier: Literal["logreg", "linear_svc", "sgd", "complement_nb"] = "logreg"
    C: float = Field(10.0, gt=0)
    alpha: float = Field(1e-4, gt=0)
    class_weight: Literal["balanced"] | None = "balanced"
    calibration_folds: int = Field(3, ge=2)
    # train_folds: temperature from out-of-fold scores of the training split; validation: from the
    # validation split (held-out writers), whose text is unlike the training text, as real chats are
    calibrate_on: Literal["train_folds", "validation"] = "train_folds"
    max_iter: int = Field(2000, ge=100)
    fallback: FallbackSettings = FallbackSettings()


class PurchaseModelSettings(_Strict):
    C: float = Field(4.0, gt=0)
    class_weight: Literal["balanced"] | None = "balanced"
    target_precision: float = Field(0.9, gt=0, le=1)
    calibration_folds: int = Field(3, ge=2)
    calibrate_on: Literal["train_folds", "validation"] = "train_folds"


class ConversationModelSettings(_Strict):
    C: float = Field(1.0, gt=0)
    target_precision: float = Field(0.9, gt=0, le=1)
    val_fraction: float = Field(0.2, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5)
    pre_sales_intents: list[str] = []
    concern_intents: list[str] = []


class ReportSettings(_Strict):
    top_confusions: int = Field(10, ge=1)
    examples_per_confusion: int = Field(3, ge=0)


class Config(_Strict):
    seed: int = 13
    n_jobs: int = Field(2, ge=1)
    paths: Paths
    mlflow: MlflowSettings = MlflowSettings()
    split: SplitSettings = SplitSettings()
    text: TextSettings = TextSettings()
    features: FeatureSettings = FeatureSettings()
    intent_model: IntentModelSettings = IntentModelSettings()
    purchase_model: PurchaseModelSettings = PurchaseModelSettings()
    conversation_model: ConversationModelSettings = ConversationModelSettings()
    report: ReportSettings = ReportSettings()
    # Free-form sections owned by other stages (flagging policy, serving limits, tuning search space).
    flag: dict[str, Any] = {}
    serving: dict[str, Any] = {}
    tune: dict[str, Any] = {}


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message names the key."""


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot override {dotted!r}: {key!r} is not a section")
    node[leaf] = value


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config (the packaged default when None) and apply dotted-key overrides."""
    config_path = Path(path) if path else DEFAULT_CONFIG
    try:
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {config_path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {config_path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {config_path} must be a mapping at the top level")
    tree = copy.deepcopy(raw)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, dotted, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid config {config_path}: {problems}") from exc


def config_as_flat_dict(config: Config) -> dict[str, str]:
    """Dotted key -> value, for MLflow params."""
    flat: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        else:
            flat[prefix] = str(node)

    walk("", config.model_dump(mode="json"))
    return flat


def resolve_tracking_uri(config: Config) -> str:
    """MLFLOW_TRACKING_URI when set (a team server), else the embedded store from config, made absolute."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or config.mlflow.tracking_uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        uri = prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri
