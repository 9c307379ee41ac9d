"""Run configuration: one YAML file holds every setting; CLI flags override single keys.

Validated with pydantic so a typo in a key or a value out of range fails before any work starts,
with the key named.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.times import date_ms, parse_clock, parse_timezone

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Paths(_Strict):
    data: str
    extra_data: list[str]  # labelled files merged into training (a shop's labelled queue), weighted
    unlabelled: list[str]  # a shop's unlabelled chat exports: only the TF-IDF IDF is fitted on their buyer messages too
    calibration_data: str | None  # a shop's labelled messages, never trained on: intent temperature and fallback threshold
    intent_calibration_data: str | None  # more labelled messages, never trained on, for the intent side of the calibration only
    calibration_chats: list[str]  # a shop's unlabelled chat exports: the same two choices without labels (ATC)
    conversations: str | None
    orders: str | None  # orders of the labelled conversations: the nudge list is evaluated on held-out ones
    reports: str
    quarantine: str
    model_dir: str | None


class MlflowSettings(_Strict):
    tracking_uri: str
    artifact_root: str
    experiment: str
    registered_model: str
    alias: str
    promote: Literal["auto", "always", "never"]
    primary_metric: str
    # The set the primary metric is compared on: "test" (this run's test split) or the name of an --eval-data set.
    promotion_set: str


class SplitSettings(_Strict):
    val_fraction: float = Field(gt=0, lt=0.5)
    test_fraction: float = Field(gt=0, lt=0.5)
    min_examples_per_label: int = Field(ge=3)
    # Validation by author: rows whose `holdout_column` value is listed form the validation split, so
    # thresholds and settings are chosen on text written unlike the training text. Data without the
    # column (or none of the values) falls back to the grouped random validation split.
    holdout_column: str | None
    val_holdout: list[str]
    # train: the shipped message models are the fit the test split measures. train_and_test: after that measurement
    # they are fitted again on train + test (calibrated and thresholded on the same held-out messages), so the seed's
    # draw of the test split no longer changes them; the test figures then describe that procedure (ROUND31_RULES BT).
    final_fit: Literal["train", "train_and_test"]


class TextSettings(_Strict):
    language: Literal["zh", "en"]
    user_dict: str | None
    max_chars: int = Field(ge=1)  # a message is cut to this before any pattern runs


class FeatureSettings(_Strict):
    word_ngram_range: tuple[int, int]
    char_ngram_range: tuple[int, int]
    char_analyzer: Literal["char", "char_wb"]
    min_df: int = Field(ge=1)
    max_features: int | None = Field(ge=1)
    sublinear_tf: bool

    @model_validator(mode="after")
    def _ranges(self) -> "FeatureSettings":
        for name in ("word_ngram_range", "char_ngram_range"):
            low, high = getattr(self, name)
            if not 1 <= low <= high:
                raise ValueError(f"{name} must be [low, high] with 1 <= low <= high, got {[low, high]}")
        return self


class FallbackSettings(_Strict):
    target: Literal["accepted_accuracy", "oos_recall"]
    value: float = Field(gt=0, le=1)
    oos_label: str | None

    @model_validator(mode="after")
    def _oos_label(self) -> "FallbackSettings":
        if self.target == "oos_recall" and not self.oos_label:
            raise ValueError("fallback.target oos_recall needs fallback.oos_label")
        return self


class IntentModelSettings(_Strict):
    classifier: Literal["logreg", "linear_svc", "sgd", "complement_nb"]
    C: float = Field(gt=0)
    alpha: float = Field(gt=0)
    class_weight: Literal["balanced"] | None
    calibration_folds: int = Field(ge=2)  # read with calibrate_on: train_folds (and no calibration data) only
    # train_folds: temperature from out-of-fold scores of the training split; validation: from the
    # validation split (held-out writers), whose text is unlike the training text, as real chats are
    calibrate_on: Literal["train_folds", "validation"]
    max_iter: int = Field(ge=100)
    fallback: FallbackSettings


class PurchaseModelSettings(_Strict):
    classifier: Literal["logreg", "linear_svc", "sgd", "complement_nb"]
    C: float = Field(gt=0)
    alpha: float = Field(gt=0)
    class_weight: Literal["balanced"] | None
    target_precision: float = Field(gt=0, le=1)
    calibration_folds: int = Field(ge=2)  # read with calibrate_on: train_folds only
    calibrate_on: Literal["train_folds", "validation"]
    # where target_precision is met: the validation split (held-out corpus writers), or the labelled calibration set
    # (text more like real chats) when it holds at least threshold_min_positives purchase positives; all_calibration_data:
    # that set and paths.intent_calibration_data together
    threshold_on: Literal["validation", "calibration_data", "all_calibration_data"]
    threshold_min_positives: int = Field(ge=1)
    # > 0: the threshold is the median of the thresholds chosen on this many resamples of its set (ROUND26_RULES.md, AS)
    threshold_bootstrap: int = Field(ge=0)
    # the linear fit's stopping tolerance; null: the library's default (logreg's lbfgs then stops after 17-28 of the
    # 160-220 iterations it needs on the bundled data, and its ranking moves with where it stopped: ROUND37_RULES.md, CZ)
    tol: float | None = Field(gt=0)


class ConversationModelSettings(_Strict):
    C: float = Field(gt=0)
    target_precision: float = Field(gt=0, le=1)
    val_fraction: float = Field(gt=0, lt=0.5)
    test_fraction: float = Field(gt=0, lt=0.5)
    pre_sales_intents: list[str]
    concern_intents: list[str]
    # false: the model reads the purchase scores and the chat's shape only, not its intent mix (share=<intent>,
    # last_intent=<intent>, confidence_mean), which on generated conversations encodes the generator's scenarios
    intent_mix_features: bool
    # 0: the threshold at target_precision on the validation conversations, the model fitted on the training ones;
    # k: on out-of-fold scores of k buyer-grouped folds over both, the model then fitted on both
    threshold_folds: int = Field(ge=0)
    # null: the feature n_flagged counts buyer messages at or over the message purchase threshold; a number: at or over
    # this fixed cut of the calibrated purchase score, so the list does not move when that threshold does (ROUND26_RULES AW)
    count_cut: float | None = Field(gt=0, lt=1)

    @field_validator("threshold_folds")
    @classmethod
    def _no_single_fold(cls, value: int) -> int:
        if value == 1:
            raise ValueError("threshold_folds is 0 (validation conversations) or at least 2 (out-of-fold), not 1")
        return value


ROLES = ("buyer", "agent", "bot")


class FlagSettingsError(ValueError):
    """The `flag:` config section cannot be used (the message names the key)."""


class PrioritySettings(_Strict):
    high: float = Field(ge=0, le=1)  # purchase score for priority 1
    medium: float = Field(ge=0, le=1)  # purchase score for priority 2; below: 3
    unanswered_boost: bool  # the buyer spoke last and got no reply: one level up


class ShareAlertSettings(_Strict):
    """A drift alarm: the flagged share of lost shoppers far from what the field shows means the model's
    threshold (chosen on the training data) may not fit these chats."""

    expected: float | None = Field(gt=0, le=1)  # lost shoppers who expressed purchase intent, in the field; null: no check
    factor: float = Field(gt=1)  # warn below expected / factor or above expected * factor
    min_lost: int = Field(ge=1)  # only with at least this many lost shoppers (fewer are too noisy)


class FlagSettings(_Strict):
    """The `flag:` section (policy for the batch job and the service, plus batch-only resources)."""

    window_hours: float = Field(gt=0)
    attribution_start: Literal["first_message", "last_message"]
    quiet_hours: tuple[str, str] | None
    timezone: str
    time_range: tuple[str, str]
    send_delay_hours: float | None = Field(ge=0)
    min_score: float | None = Field(ge=0, le=1)
    skip_intents: list[str]
    one_per_buyer_shop: bool
    concern_intents: list[str]
    nudges: dict[str, str]
    default_nudge: str
    nudge_texts: dict[str, str]
    priority: PrioritySettings
    evidence_max_chars: int = Field(ge=10)
    share_alert: ShareAlertSettings
    roles: dict[str, list[str]]
    # Batch resources (pipeline/jobs/flag/).
    chunk_rows: int = Field(ge=1)
    shard_rows: int = Field(ge=1)
    predict_batch: int = Field(ge=1)
    workers: int = Field(ge=0)
    work_dir: str | None
    keep_work_dir: bool

    @field_validator("quiet_hours")
    @classmethod
    def _clock(cls, value):
        if value is not None:
            for text in value:
                parse_clock(text)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value):
        parse_timezone(value)
        return value

    @field_validator("time_range")
    @classmethod
    def _range(cls, value):
        if date_ms(value[0]) >= date_ms(value[1]):
            raise ValueError(f"the first date must come before the second, got {list(value)}")
        return value

    @field_validator("roles")
    @classmethod
    def _roles(cls, value):
        unknown = set(value) - set(ROLES)
        if unknown:
            raise ValueError(f"roles may only map {ROLES}, got {sorted(unknown)}")
        return value


class ServingSettings(_Strict):
    """The `serving:` section: limits of the live service (they also appear in its OpenAPI document)."""

    max_messages: int = Field(ge=1, description="messages per /classify request")
    max_chars: int = Field(ge=1, description="characters per message or turn")
    max_turns: int = Field(ge=1, description="turns per conversation")
    max_conversations: int = Field(ge=1, description="conversations per /flag request")
    max_body_mb: float = Field(gt=0, description="request body size limit (MiB); larger bodies get 413")
    timeout_s: float = Field(gt=0, description="per-request timeout; past it the client gets 504")
    body_timeout_s: float = Field(gt=0, description="the whole request body must arrive within this; else 408 (before it takes a slot)")
    max_concurrency: int = Field(ge=1, description="requests in flight (split across workers); past it new requests get 429")
    max_batch_messages: int = Field(ge=1, description="adaptive batching: messages per model call at most")
    workers: int = Field(ge=1, description="server processes (each loads the model)")
    port: int = Field(ge=1, le=65535)
    keepalive_requests: int = Field(
        ge=0, description="API requests per keep-alive connection before the server closes it (spreads clients over workers); 0: no limit"
    )
    access_log: bool = Field(description="one log line per API request (BentoML's access log); /metrics has the counts and latencies either way")
    tracing: bool = Field(description="OpenTelemetry spans for the API routes (configure an exporter in BentoML's config)")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


class SelectSettings(_Strict):
    """The labelling queue (`buyer-intent select`)."""

    mask_pii: bool  # phones, order numbers, addresses, names, links in the queue's text masked (labellers see no buyer data)


class TuneSettings(_Strict):
    """The `tune:` section: the search of `buyer-intent tune` (pipeline/training/tune.py explains the space)."""

    experiment: str
    metric: Literal["accuracy", "macro_f1"]
    space: dict[str, Any]  # dotted key -> list of choices | {log_uniform: [low, high]} | {uniform: [low, high]}
    classifiers: dict[Literal["logreg", "linear_svc", "sgd", "complement_nb"], dict[str, Any] | None] = Field(min_length=1)


class ReportSettings(_Strict):
    top_confusions: int = Field(ge=1)
    examples_per_confusion: int = Field(ge=0)


class ColumnSettings(_Strict):
    """Headers of shop exports -> the columns the jobs read; `--columns HEADER=column` adds to them."""

    aliases: dict[str, list[str]]
    map: str  # HEADER=column,... (what --columns sets)

    @field_validator("map")
    @classmethod
    def _pairs(cls, value: str) -> str:
        from pipeline.data.tables import parse_column_map

        parse_column_map(value)  # a TableError (ValueError) names the bad pair
        return value

    def names(self):
        from pipeline.data.tables import ColumnNames

        return ColumnNames.from_settings(self.aliases, self.map)


class OutputSettings(_Strict):
    """The `output:` section: how the files a person opens are written; `--encoding` overrides."""

    csv_encoding: str  # utf-8-sig | gb18030 | utf-8 (pipeline.data.tables.CSV_ENCODINGS)

    @field_validator("csv_encoding")
    @classmethod
    def _known(cls, value: str) -> str:
        from pipeline.data.tables import check_csv_encoding

        return check_csv_encoding(value)  # a TableError (ValueError) names the choices


class DriftSettings(_Strict):
    """The label-free check of how far scored messages sit from the validation data (`pipeline.drift`)."""

    warn_drop: float = Field(ge=0, le=1)  # `predict` warns when the estimated accuracy is this far below validation's


class Config(_Strict):
    """Every setting of a run. No field has a default here: `configs/default.yaml` is the one source of
    defaults, and another config file only states what it changes (`load_config` lays it over)."""

    seed: int
    n_jobs: int = Field(ge=1)
    extra_data_weight: float = Field(gt=0)
    paths: Paths
    mlflow: MlflowSettings
    split: SplitSettings
    text: TextSettings
    features: FeatureSettings
    intent_model: IntentModelSettings
    purchase_model: PurchaseModelSettings
    conversation_model: ConversationModelSettings
    report: ReportSettings
    flag: FlagSettings
    serving: ServingSettings
    tune: TuneSettings
    select: SelectSettings
    columns: ColumnSettings
    output: OutputSettings
    drift: DriftSettings


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


def nested_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Dotted-key overrides as the config sections they stand for: a YAML overlay that `load_config` reads
    as it would apply the overrides themselves."""
    tree: dict[str, Any] = {}
    for dotted, value in overrides.items():
        _set_dotted(tree, dotted, value)
    return tree


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must be a mapping at the top level")
    return raw


@functools.lru_cache(maxsize=1)
def _default_tree() -> dict[str, Any]:
    return _read_yaml(DEFAULT_CONFIG)


def default_tree() -> dict[str, Any]:
    """configs/default.yaml as a plain tree (a fresh copy)."""
    return copy.deepcopy(_default_tree())


def layered(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`changes` laid over `base`: a section's keys replace the base's one by one; a key's value (a
    list, a mapping such as `tune.space`) replaces the base's value whole."""
    tree = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            tree[key] = {**tree[key], **copy.deepcopy(value)}
        else:
            tree[key] = copy.deepcopy(value)
    return tree


def _problems(exc: ValidationError, prefix: str = "") -> str:
    return "; ".join(f"{prefix}{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())


DATA_COMPANIONS: dict[str, Any] = {"extra_data": [], "calibration_data": None, "intent_calibration_data": None}


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config laid over configs/default.yaml (the packaged default when None), apply dotted-key
    overrides, and validate every section, so a typo anywhere fails here with the key named."""
    config_path = Path(path) if path else DEFAULT_CONFIG
    own = {} if config_path.resolve() == DEFAULT_CONFIG.resolve() else _read_yaml(config_path)
    tree = layered(_default_tree(), own) if own else default_tree()
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, dotted, value)
    # The default's extra training files and calibration set (the bundled written chats) belong to its data: a config
    # or an override that names other training data and not these gets none of them, as `train --data` does.
    named = set((own.get("paths") or {}) if isinstance(own, dict) else {})
    named |= {dotted.split(".", 1)[1] for dotted, value in (overrides or {}).items() if value is not None and dotted.startswith("paths.")}
    if "data" in named and tree.get("paths", {}).get("data") != _default_tree()["paths"]["data"]:
        for key, none in DATA_COMPANIONS.items():
            if key not in named:
                tree["paths"][key] = none
    # The intent-only calibration set joins the default's calibration set: a config that calibrates otherwise drops it too.
    if named & {"calibration_data", "calibration_chats"} and "intent_calibration_data" not in named:
        tree["paths"]["intent_calibration_data"] = None
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(f"invalid config {config_path}: {_problems(exc)}") from exc


def load_flag_settings(section: FlagSettings | Mapping[str, Any] | None, window_hours: float | None = None) -> FlagSettings:
    """Flag settings from a validated section or a partial mapping laid over configs/default.yaml's `flag:`;
    `window_hours` (the --window flag) overrides."""
    raw = section.model_dump() if isinstance(section, FlagSettings) else {**_default_tree()["flag"], **dict(section or {})}
    if window_hours is not None:
        raw["window_hours"] = window_hours
    try:
        return FlagSettings.model_validate(raw)
    except ValidationError as exc:
        raise FlagSettingsError(f"invalid flag settings: {_problems(exc, 'flag.')}") from exc


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


@dataclass(frozen=True)
class Registry:
    """Where registered models live and which one a bare reference means: the config's model name and
    alias with the tracking URI (`MLFLOW_TRACKING_URI` first). Resolved here only."""

    tracking_uri: str
    name: str
    alias: str

    @classmethod
    def from_config(cls, config: "Config") -> "Registry":
        return cls(resolve_tracking_uri(config), config.mlflow.registered_model, config.mlflow.alias)


def resolve_tracking_uri(config: Config) -> str:
    """MLFLOW_TRACKING_URI when set (a team server), else the embedded store from config, made absolute."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or config.mlflow.tracking_uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        uri = prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri
