"""The CLI's jobs as plain functions (train-and-track, predict, evaluate), so tests and notebooks call
exactly what users run."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.bundle import ModelBundle, save_bundle, sha256_file
from pipeline.config import Config, Registry
from pipeline.data.labelled import LABELLED_COLUMNS, DataError, LabelledData, load_labelled, load_labelled_conversations, load_training_data
from pipeline.training.evaluate import headline_metrics, intent_metrics, purchase_metrics
from pipeline.inference import ModelNotFoundError, Predictor, load_model
from pipeline.drift import estimate as drift_estimate
from pipeline.data.tables import Rejected, TableError, iter_table, rejected_frame, require_columns, write_table_atomic, write_text_atomic
from pipeline.text import normalize
from pipeline.training.train import ConversationData, TrainResult, UnlabelledData, score_labelled, train

log = logging.getLogger(__name__)
PREDICTION_COLUMNS = ("intent", "intent_confidence", "fallback", "purchase_intent", "purchase_score")


def eval_set_spec(spec: str) -> tuple[str, str]:
    """`NAME=PATH`, or a path named after its folder (../shared/realchat-dev/messages.csv -> realchat-dev)."""
    if "=" in spec and not Path(spec).exists():
        name, path = spec.split("=", 1)
        return name.strip(), path
    path = Path(spec)
    return (path.parent.name or path.stem) if path.parent.name not in ("", ".") else path.stem, spec


def per_source_metrics(name: str, scored: pd.DataFrame, purchase_threshold: float | None) -> dict[str, Any]:
    """`<name>/<source>` metrics for an eval set with a `source` column (e.g. JD after-sales vs Taobao
    pre-sales): a mean over sources hides that one of them is failing. `purchase_threshold`: the one `scored`
    was scored with (None: no purchase model)."""
    if "source" not in scored.columns or scored["source"].nunique() < 2:
        return {}
    parts = {}
    for source, part in scored.groupby(scored["source"].astype(str)):
        metrics = {"intent": intent_metrics(part["intent"], part["pred_intent"], part["confidence"], part["fallback"])}
        if "purchase_intent" in part.columns and purchase_threshold is not None:
            metrics["purchase"] = purchase_metrics(part["purchase_intent"], part["purchase_score"], purchase_threshold)
        parts[f"{name}/{source}"] = metrics
    return parts


def _write_report(out_dir: Path, **kwargs) -> dict[str, Any]:
    from pipeline.report import write_report

    return write_report(out_dir, **kwargs)


def _promises_of(bundle) -> dict[str, float]:
    """The targets the bundle's thresholds were chosen for, from the config it was trained with."""
    from pipeline.report import threshold_promises

    return threshold_promises(bundle.manifest.get("config", {}))


def _report_explainer(predictor: Predictor):
    """The report's "why" column for its example mistakes: the top 3 n-grams of the predicted intent; None (no
    column) for a model that is not linear over the n-grams, e.g. complement naive Bayes."""
    from pipeline.explain import Explainer, UnsupportedExplanation

    try:
        explainer = Explainer.for_predictor(predictor)
    except UnsupportedExplanation as exc:
        log.warning("the report explains no mistakes: %s", exc)
        return None
    return functools.partial(explainer.explain, top_k=3)


def _promotion_set(config: Config, result: TrainResult, eval_sets: list) -> tuple[str, pd.DataFrame] | None:
    """The set this run and the champion are compared on (`mlflow.promotion_set`): (its metrics key, its labelled
    rows); None when it names an evaluation set this run did not evaluate. The test split follows the training data,
    so a run trained on more of the harder text than the champion is judged on a different mix than the text the
    project chooses models on; a fixed evaluation set (the written-chat yardstick) is the same for both."""
    name = config.mlflow.promotion_set
    if name == "test":
        return "test", result.messages[result.messages["split"] == "test"]
    frames = {set_name: eval_set.frame for set_name, _, eval_set in eval_sets}
    return (f"eval:{name}", frames[name]) if name in frames else None


def _champion_headline(config: Config, labelled: pd.DataFrame) -> tuple[dict[str, float] | None, str | None]:
    """The current champion's headline metrics on `labelled` (None when there is no champion)."""
    try:
        champion = load_model(None, Registry.from_config(config))
    except ModelNotFoundError:
        return None, None
    metrics, _ = score_labelled(Predictor(champion), labelled)
    return headline_metrics({"set": metrics}, "set"), champion.version


UNLABELLED_COLUMNS = ("text", "role")


def unlabelled_rejection(value: Any, max_chars: int) -> str | None:
    """Why a buyer row of an unlabelled export cannot be used for the IDF fit (None when it can)."""
    if isinstance(value, dict):
        return "text must be a string, got a JSON object"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "text must be a string, got a list"
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))) or not str(value).strip():
        return "empty text"
    text = str(value)
    if "\x00" in text:
        return "NUL byte in text"
    if "\ufffd" in text:
        return "bad encoding (U+FFFD in text)"
    if len(text) > max_chars:
        return f"longer than text.max_chars ({len(text)} > {max_chars} characters): not a chat message"
    return None


def load_unlabelled(paths: list[str] | tuple[str, ...], config: Config, chunk_rows: int = 100_000) -> UnlabelledData | None:
    """The buyer messages of a shop's unlabelled chat exports (`train --unlabelled`), for the IDF fit.

    Read as `predict` and `select` read chats (CSV in UTF-8, UTF-8 with BOM or GB18030, JSONL, Parquet,
    Excel; headers through columns.aliases and --columns; with a `role` column only buyer rows). Rows the
    reader cannot use (bad encoding, wrong field count, bad JSON) and buyer rows that are empty, hold a NUL
    byte or U+FFFD, or are longer than text.max_chars are quarantined with their reason in
    `<quarantine>/<name>.unlabelled.rejected.csv`. Log lines carry counts only."""
    if not paths:
        return None
    names = config.columns.names().only(UNLABELLED_COLUMNS)
    for path in paths:  # every header before any row is read
        require_columns(path, ["text"], names)
    max_chars = config.text.max_chars
    texts: list[str] = []
    files: list[dict[str, Any]] = []
    for path in paths:
        rejected: list[Rejected] = []
        used = not_buyer = offset = unreadable = 0
        for chunk in iter_table(path, chunk_rows, names):
            rejected.extend(chunk.rejected)
            unreadable += len(chunk.rejected)
            frame = chunk.frame.reset_index(drop=True)
            if frame.empty:
                continue
            if "text" not in frame.columns:
                raise TableError(f"{path}: no `text` column (found {list(frame.columns)})")
            lines = frame["_line"].tolist() if "_line" in frame.columns else list(range(offset + 1, offset + len(frame) + 1))
            offset += len(frame)
            buyers = buyer_rows(frame, config)
            keep = np.ones(len(frame), dtype=bool) if buyers is None else buyers
            not_buyer += int((~keep).sum())
            for position in np.flatnonzero(keep):
                value = frame.at[position, "text"]
                reason = unlabelled_rejection(value, max_chars)
                normalized = normalize(str(value), max_chars) if reason is None else ""
                if reason is None and not normalized:
                    reason = "empty text (nothing left after normalisation)"
                if reason is not None:
                    raw = "" if value is None else str(value)
                    rejected.append(Rejected(lines[position], reason, raw[:max_chars]))
                    continue
                texts.append(normalized)
                used += 1
        quarantine = Path(config.paths.quarantine) / f"{Path(path).stem}.unlabelled.rejected.csv"
        quarantine.unlink(missing_ok=True)  # a previous run's: it would describe other rows
        if rejected:
            write_table_atomic(rejected_frame(rejected, path), quarantine)
        files.append({"source": str(path), "sha256": sha256_file(Path(path)), "rows_in": offset + unreadable,
                      "messages_used": used, "rows_not_buyer": not_buyer, "rows_rejected": len(rejected)})
        log.info("%s (unlabelled): %d buyer messages, %d rows not from the buyer, %d quarantined", path, used, not_buyer, len(rejected))
    if not texts:
        raise DataError(f"{', '.join(map(str, paths))}: no usable unlabelled buyer message "
                        f"({sum(f['rows_rejected'] for f in files)} quarantined, {sum(f['rows_not_buyer'] for f in files)} not from the buyer)")
    return UnlabelledData(texts, files)


def unlabelled_params(fingerprints: dict[str, Any]) -> dict[str, str]:
    """MLflow params of a run trained with --unlabelled (none without it)."""
    summary = fingerprints.get("unlabelled")
    if not summary:
        return {}
    return {
        "unlabelled_messages_used": str(summary["messages_used"]),
        "unlabelled_rows_rejected": str(summary["rows_rejected"]),
        "unlabelled_excluded_held_out": str(summary["excluded_held_out"]),
        "unlabelled_sha256": ",".join(f["sha256"] for f in summary["files"]),
    }


def calibration_chats_params(fingerprints: dict[str, Any]) -> dict[str, str]:
    """MLflow params of a run calibrated on a shop's unlabelled chats (none without it)."""
    summary = fingerprints.get("calibration_chats")
    if not summary:
        return {}
    keys = ("messages_used", "estimated_accuracy", "temperature_validation", "temperature", "expected_accepted_accuracy", "handed_over_share")
    return {f"calibration_chats_{key}": str(summary[key]) for key in keys if key in summary} | {
        "calibration_chats_sha256": ",".join(f["sha256"] for f in summary["files"])}


def _training_files(config: Config, messages: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(path, its rows) of every labelled training file (the rows of all splits: the split is in the params)."""
    paths = [config.paths.data, *config.paths.extra_data]
    if "source" not in messages.columns or len(paths) == 1:
        return [(paths[0], messages)]
    return [(path, messages[messages["source"] == Path(path).stem]) for path in paths]


def _version_description(config: Config, result: TrainResult, code: str, run_id: str) -> str:
    """What a registered version was trained on and how it scored, for a reader of the model registry."""
    splits = result.fingerprints["splits"]
    lines = [
        f"Trained on {', '.join([config.paths.data, *config.paths.extra_data])} "
        f"({splits['train']:,} training / {splits['val']:,} validation / {splits['test']:,} test messages) "
        f"by MLflow run {run_id}, code at git commit {code}.",
    ]
    for name in ["test", *(k for k in result.metrics if k.startswith("eval:"))]:
        intent = result.metrics[name]["intent"]
        lines.append(f"{name.removeprefix('eval:')}: intent accuracy {intent['accuracy']:.3f}, macro-F1 {intent['macro_f1']:.3f}, "
                     f"ECE {intent['ece']:.3f} ({intent['n']:,} messages).")
    return "\n".join(lines)


def _calibration_set(config: Config, path: str | None) -> LabelledData | None:
    """A labelled calibration file (paths.calibration_data, paths.intent_calibration_data), or None when unset."""
    if not path:
        return None
    labelled = load_labelled(path, config.paths.quarantine, names=config.columns.names().only(LABELLED_COLUMNS))
    log.info("%s: %d calibration rows, %d quarantined", path, len(labelled.frame), len(labelled.rejected))
    return labelled


def training_inputs(config: Config) -> dict[str, Any]:
    """Every input of `train` that the config names (its keyword arguments but `evaluation_texts`): what a
    training run reads, in one place for the CLI's run and the test suite's model of the default config."""
    unlabelled = load_unlabelled(config.paths.unlabelled, config)
    data = load_training_data(
        config.paths.data, config.paths.extra_data, config.paths.quarantine, config.split.min_examples_per_label,
        config.columns.names().only(LABELLED_COLUMNS), config.extra_data_weight,
    )
    log.info("%s: %d valid rows, %d quarantined", data.source, len(data.frame), len(data.rejected))
    conversations = None
    if config.paths.conversations and Path(config.paths.conversations).exists():
        frame, rejected = load_labelled_conversations(config.paths.conversations, config.paths.quarantine)
        log.info("%s: %d conversations, %d quarantined", config.paths.conversations, len(frame), len(rejected))
        conversations = ConversationData(frame, config.paths.conversations)
    calibration, intent_calibration = (_calibration_set(config, path) for path in (config.paths.calibration_data, config.paths.intent_calibration_data))
    return {"data": data, "conversations": conversations, "unlabelled": unlabelled, "calibration": calibration,
            "calibration_chats": load_unlabelled(config.paths.calibration_chats, config), "intent_calibration": intent_calibration}


def train_and_track(config: Config, eval_data: list[str] | None = None, promote: bool | None = None) -> dict[str, Any]:
    """Train, evaluate on test and every eval set, log to MLflow, register, maybe promote, write the report."""
    import mlflow  # here, not at import: `predict` and `evaluate` need neither MLflow (~3.5 s to import) nor the tracking code

    from pipeline.tracking import runs as tracking

    inputs = training_inputs(config)
    unlabelled, calibration, intent_calibration = inputs["unlabelled"], inputs["calibration"], inputs["intent_calibration"]
    # The evaluation sets are read before training: with --unlabelled none of their texts enters the IDF fit.
    eval_sets = [
        (set_name, path, load_labelled(path, config.paths.quarantine, names=config.columns.names().only(LABELLED_COLUMNS)))
        for set_name, path in map(eval_set_spec, eval_data or [])
    ]
    evaluation_texts = [text for _, _, eval_set in eval_sets for text in eval_set.frame["text"]] if unlabelled else []
    result = train(config, evaluation_texts=evaluation_texts, **inputs)
    predictor = Predictor(result.bundle)
    shipped_purchase = predictor.purchase_threshold if predictor.has_purchase else None
    test_purchase = result.test_thresholds.get("purchase") if predictor.has_purchase else None
    result.metrics.update(per_source_metrics("test", result.test_predictions, test_purchase))  # e.g. bundled vs the shop's labels
    eval_scored: dict[str, pd.DataFrame] = {}
    for set_name, path, eval_set in eval_sets:
        name = f"eval:{set_name}"
        result.metrics[name], eval_scored[name] = score_labelled(predictor, eval_set.frame)
        result.fingerprints[name] = {"rows": len(eval_set.frame), "rejected": len(eval_set.rejected), "source": path}
        result.metrics.update(per_source_metrics(name, eval_scored[name], shipped_purchase))

    tracking.setup(config)
    headline = headline_metrics(result.metrics)
    code, versions = tracking.code_version(), tracking.installed_versions()
    with mlflow.start_run(run_name=tracking.run_name(config)) as run:
        run_id = run.info.run_id
        mlflow.set_tags({"git_commit": code, **{f"version.{name}": value for name, value in versions.items()}})
        tracking.log_datasets(
            [(part, Path(path).stem, path, "training") for path, part in _training_files(config, result.messages)]
            + [(eval_set.frame, set_name, path, "evaluation") for set_name, path, eval_set in eval_sets]
            + [(part.frame, Path(path).stem, path, "calibration")
               for part, path in ((calibration, config.paths.calibration_data), (intent_calibration, config.paths.intent_calibration_data))
               if part is not None]
        )
        promotion = _promotion_set(config, result, eval_sets)
        if promotion is None:
            champion_headline, champion_version = None, tracking.current_champion_version(config)
        else:
            champion_headline, champion_version = _champion_headline(config, promotion[1])
        report_dir = Path(config.paths.reports) / run_id
        extra = {
            "Run": f"MLflow run `{run_id}` ({run.info.run_name}); champion before this run: "
            + (f"version {champion_version}" if champion_version else "none"),
            "Code": f"git commit {code}; " + ", ".join(f"{name} {value}" for name, value in versions.items()),
            "Data": "```\n" + json.dumps(result.fingerprints, ensure_ascii=False, indent=1) + "\n```",
            "Thresholds": ", ".join(f"{k} = {v:.4f}" for k, v in result.bundle.thresholds.items()),
        }
        report = _write_report(
            report_dir,
            title=f"buyer-intent training run {run_id}",
            metrics=result.metrics,
            scored=result.test_predictions,
            eval_scored=eval_scored,
            thresholds=result.bundle.thresholds,
            test_thresholds=result.test_thresholds if "final_fit" in result.bundle.manifest else None,
            headline=headline,
            champion_headline=champion_headline,
            champion_set=None if promotion is None and champion_version else config.mlflow.promotion_set,
            conversation_test=result.conversation_test,
            extra_sections=extra,
            top_confusions=config.report.top_confusions,
            examples_per_confusion=config.report.examples_per_confusion,
            explain=_report_explainer(predictor),
            promises=_promises_of(result.bundle),
        )
        tracking.log_run_contents(
            config,
            result.metrics,
            result.fingerprints,
            report_dir,
            result.user_dict_text,
            {"timings": json.dumps({k: round(v, 2) for k, v in result.timings.items()}), **unlabelled_params(result.fingerprints),
             **calibration_chats_params(result.fingerprints)},
        )
        test_texts = result.test_predictions["text"].tolist()
        description = _version_description(config, result, code, run_id)
        version, sha = tracking.log_and_register_model(result.bundle, result.user_dict_text, config, test_texts, description)
        policy = config.mlflow.promote if promote is None else ("always" if promote else "never")
        if promotion is None and champion_version and policy == "auto":
            name = config.mlflow.promotion_set
            promoted, reason = False, (f"the promotion set {name!r} was not evaluated in this run (pass --eval-data "
                                       f"{name}=PATH, or set mlflow.promotion_set: test)")
        else:
            ours = headline_metrics(result.metrics, promotion[0]) if promotion else headline
            promoted, reason = tracking.should_promote(policy, ours, champion_headline, config.mlflow.primary_metric)
            if promotion and champion_headline is not None:
                reason += " on the test split" if promotion[0] == "test" else f" on {config.mlflow.promotion_set}"
        if promoted:
            tracking.promote(config, version)
        mlflow.set_tags({"registered_version": version, "promoted": str(promoted), "promotion_reason": reason})
    if config.paths.model_dir:
        save_bundle(result.bundle, config.paths.model_dir, result.user_dict_text)
    return {
        "run_id": run_id,
        "model_version": version,
        "bundle_seal": sha,
        "promoted": promoted,
        "promotion_reason": reason,
        "headline": headline,
        "eval": {name: headline_metrics(result.metrics, name) for name in result.metrics if name.startswith("eval:")},
        "eval_estimates": {name: result.metrics[name]["intent"]["estimated_accuracy"] for name in result.metrics
                           if name.startswith("eval:") and "estimated_accuracy" in result.metrics[name]["intent"]},
        "report": str(report.get("html", report_dir)),
        "model_dir": config.paths.model_dir,
        "unlabelled": result.fingerprints.get("unlabelled"),
        "calibration": {**result.fingerprints["calibration"], "headline": headline_metrics(result.metrics, "calibration")}
        if "calibration" in result.metrics else None,
        "calibration_chats": result.fingerprints.get("calibration_chats"),
    }


def _load_for_use(model: str | None, config: Config) -> ModelBundle:
    return load_model(model, Registry.from_config(config))


def buyer_rows(frame: pd.DataFrame, config: Config) -> np.ndarray | None:
    """Which rows a buyer wrote, when the table has a `role` column (role names mapped through
    `flag.roles`, so 买家/客服 work); None when it has none (every row is a buyer message)."""
    if "role" not in frame.columns:
        return None
    aliases = {alias.strip().lower(): role for role, names in config.flag.roles.items() for alias in names}
    return frame["role"].astype(str).str.strip().str.lower().map(aliases).eq("buyer").to_numpy()


def _with_explanations(predictions: pd.DataFrame, texts: list[str], explainer, top_k: int) -> pd.DataFrame:
    """`explanation`: per message the JSON of `pipeline.explain` for the predicted intent (empty for an
    empty message, which the model does not score)."""
    explained = explainer.explain(texts, predictions["intent"].tolist(), top_k)
    column = [None if item is None else json.dumps(item, ensure_ascii=False) for item in explained]
    return predictions.assign(explanation=pd.Series(column, index=predictions.index, dtype=object))


def predict_file(
    input_path: str | Path,
    output_path: str | Path,
    model: str | None,
    config: Config,
    chunk_rows: int = 100_000,
    explain: bool = False,
    explain_top_k: int | None = None,
) -> dict[str, Any]:
    """Score every buyer row of a table with a `text` column; every input column and row is kept. With a
    `role` column, agent and bot rows are not scored: `scored` is false and the prediction columns empty.
    `explain`: also an `explanation` column, the JSON of `pipeline.explain` (top `explain_top_k` n-grams,
    default `pipeline.explain.DEFAULT_TOP_K`, for the predicted intent and for the purchase score)."""
    from pipeline.explain import DEFAULT_TOP_K, Explainer

    names = config.columns.names().only(("text", "role"))
    require_columns(input_path, ["text"], names)  # before the model is loaded
    predictor = Predictor(_load_for_use(model, config))
    explainer = Explainer.for_predictor(predictor) if explain else None
    top_k = DEFAULT_TOP_K if explain_top_k is None else explain_top_k
    if explain and top_k < 1:
        raise ValueError(f"explain top-k must be at least 1, got {top_k}")
    added = (*PREDICTION_COLUMNS, "scored", *(("explanation",) if explain else ()))
    parts, rejected = [], []
    skipped = 0
    for chunk in iter_table(input_path, chunk_rows, names):
        rejected.extend(chunk.rejected)
        frame = chunk.frame.drop(columns=["_line"], errors="ignore")
        if "text" not in frame.columns:
            raise ValueError(f"{input_path}: no `text` column (found {list(frame.columns)})")
        frame = frame.rename(columns={c: f"{c}_input" for c in added if c in frame.columns}).reset_index(drop=True)
        buyers = buyer_rows(frame, config)
        if buyers is None:
            texts = frame["text"].fillna("").astype(str).tolist()
            predictions = predictor.predict(texts)
            if explainer is not None:
                predictions = _with_explanations(predictions, texts, explainer, top_k)
        else:
            texts = frame.loc[buyers, "text"].fillna("").astype(str).tolist()
            scored = predictor.predict(texts)
            if explainer is not None:
                scored = _with_explanations(scored, texts, explainer, top_k)
            predictions = scored.set_index(np.flatnonzero(buyers)).reindex(range(len(frame))).assign(scored=buyers)
            skipped += int((~buyers).sum())
        parts.append(pd.concat([frame, predictions], axis=1))
    output = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["text", *PREDICTION_COLUMNS, *(("explanation",) if explain else ())])
    Path(f"{output_path}.rejected.csv").unlink(missing_ok=True)  # a previous run's: it would describe other rows
    csv_encoding = config.output.csv_encoding
    write_table_atomic(output, output_path, csv_encoding)
    if rejected:
        write_table_atomic(rejected_frame(rejected, input_path), f"{output_path}.rejected.csv", csv_encoding)
    counts: dict[str, Any] = {"rows_in": len(output) + len(rejected), "rows_scored": len(output) - skipped, "rows_not_buyer": skipped,
                              "rows_rejected": len(rejected)}
    estimate = drift_estimate(output["intent_confidence"].to_numpy(dtype=float, na_value=np.nan), predictor.bundle.manifest)
    if estimate is not None:  # agent and bot rows have no confidence: buyer messages only
        counts["accuracy_estimate"] = estimate
    return counts


def evaluate_file(data_path: str | Path, out_dir: str | Path, model: str | None, config: Config) -> dict[str, Any]:
    """metrics.json and the report for a labelled file (`NAME=PATH`, or named after its folder)."""
    set_name, data_path = eval_set_spec(str(data_path))
    names = config.columns.names().only(LABELLED_COLUMNS)
    require_columns(data_path, ["text", "intent"], names)  # before the model is loaded
    bundle = _load_for_use(model, config)
    data: LabelledData = load_labelled(data_path, config.paths.quarantine, names=names)
    predictor = Predictor(bundle)
    metrics, scored = score_labelled(predictor, data.frame)
    out_dir = Path(out_dir)
    headline = headline_metrics({"test": metrics})
    per_source = per_source_metrics(f"eval:{set_name}", scored, predictor.purchase_threshold if predictor.has_purchase else None)
    _write_report(
        out_dir,
        title=f"evaluation of {bundle.name} version {bundle.version} on {set_name}",
        scored_name=f"messages of {set_name}",
        scored_is_real=True,
        metrics={"test": metrics, **per_source},
        scored=scored,
        thresholds=bundle.thresholds,
        headline=headline,
        extra_sections={"Data": f"{data_path}: {len(data.frame)} rows used, {len(data.rejected)} rejected"},
        top_confusions=config.report.top_confusions,
        examples_per_confusion=config.report.examples_per_confusion,
        explain=_report_explainer(predictor),
        promises=_promises_of(bundle),
    )
    flat = {
        "model": {"name": bundle.name, "version": bundle.version},
        "eval_set": set_name,
        "per_source": {name.split("/", 1)[1]: part for name, part in per_source.items()},
        "rows": len(data.frame),
        "rows_rejected": len(data.rejected),
        "accuracy": metrics["intent"]["accuracy"],
        "macro_f1": metrics["intent"]["macro_f1"],
        "fallback_rate": metrics["intent"]["fallback_rate"],
        "per_intent": metrics["intent"]["per_intent"],
        "intent": metrics["intent"],
    }
    if "purchase" in metrics:
        flat["purchase"] = metrics["purchase"]
    write_text_atomic(json.dumps(flat, ensure_ascii=False, indent=2, default=float), out_dir / "metrics.json")
    return flat

