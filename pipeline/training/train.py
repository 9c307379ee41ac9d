"""Training: fit the message models and the conversation model, choose thresholds on validation,
measure on test. Returns everything the caller logs; logs nothing itself."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy.special import softmax
from sklearn.pipeline import Pipeline

from pipeline.bundle import ModelBundle
from pipeline.config import Config
from pipeline.conversation import ConversationScorer, Turn
from pipeline.data.labelled import LabelledData, assign_splits, fingerprint, split_by_settings
from pipeline.folds import FastStratifiedGroupKFold
from pipeline.training.evaluate import (
    bagged_precision_threshold,
    choose_fallback_threshold,
    choose_precision_threshold,
    headline_metrics,
    intent_metrics,
    purchase_metrics,
)
from pipeline.training.flag_eval import evaluate_flagging, load_orders_index
from pipeline.inference import Predictor
from pipeline.config import load_flag_settings
from pipeline.nudge import NudgePolicy
from pipeline.nudge.features import features_from_turns
from pipeline.training.model import build_conversation_pipeline, build_intent_pipeline, make_purchase_classifier, user_words
from pipeline.text import normalize
from pipeline.drift import MANIFEST_KEY, atc_accuracy, atc_threshold, manifest_record
from pipeline.drift import estimate as drift_estimate
from pipeline.training.shift import fallback_for_expected_accuracy, temperature_for_mean_confidence

log = logging.getLogger(__name__)


@dataclass
class ConversationData:
    frame: pd.DataFrame  # conversation_id, buyer_id, expressed_purchase_intent, turns (list[Turn]), stage, category
    source: str


@dataclass
class UnlabelledData:
    """A shop's unlabelled buyer messages (`train --unlabelled`), used for one thing only: the IDF of the
    TF-IDF features is fitted on the training split's text plus these. The vocabulary stays the training
    text's, and the model keeps nothing of these texts but the idf values of that vocabulary."""

    texts: list[str]  # normalised (`pipeline.text.normalize` with text.max_chars), one per usable buyer row
    files: list[dict[str, Any]]  # per file: source, sha256, rows_in, messages_used, rows_not_buyer, rows_rejected


@dataclass
class TrainResult:
    bundle: ModelBundle
    messages: pd.DataFrame  # the labelled messages with their split
    test_predictions: pd.DataFrame  # test split with predictions (for the report)
    metrics: dict[str, Any]  # {"test": {...}, "val": {...}, "conversation_test": {...}}
    fingerprints: dict[str, Any]
    conversation_test: pd.DataFrame | None = None
    timings: dict[str, float] = field(default_factory=dict)
    user_dict_text: str = ""
    # the fallback and purchase thresholds `test_predictions` were scored with: the shipped ones, or with
    # split.final_fit train_and_test those of the fit before the refit (the manifest's final_fit)
    test_thresholds: dict[str, float] = field(default_factory=dict)


# Marks the calibration rows the purchase threshold may be chosen on (paths.calibration_data, not the intent-only set).
PURCHASE_THRESHOLD_SET = "_purchase_threshold_set"


def labelled_predictions(predictor: Predictor, frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with the predictor's outputs added as pred_* columns."""
    predictions = predictor.predict(frame["text"].tolist())
    out = frame.reset_index(drop=True).copy()
    out["pred_intent"] = predictions["intent"].to_numpy()
    out["confidence"] = predictions["intent_confidence"].to_numpy()
    out["fallback"] = predictions["fallback"].to_numpy()
    out["purchase_score"] = predictions["purchase_score"].to_numpy()
    out["pred_purchase"] = predictions["purchase_intent"].to_numpy()
    return out


def score_labelled(predictor: Predictor, frame: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    scored = labelled_predictions(predictor, frame)
    metrics: dict[str, Any] = {
        "intent": intent_metrics(scored["intent"], scored["pred_intent"], scored["confidence"], scored["fallback"])
    }
    estimate = drift_estimate(scored["confidence"].to_numpy(), predictor.bundle.manifest)
    if estimate is not None:  # beside the measured accuracy: how far the label-free estimate is off on this set
        metrics["intent"]["estimated_accuracy"] = estimate.estimated
    if "purchase_intent" in scored.columns and predictor.has_purchase:
        metrics["purchase"] = purchase_metrics(scored["purchase_intent"], scored["purchase_score"], predictor.purchase_threshold)
    return metrics, scored


def _purchase_threshold(config: Config, val_scored: pd.DataFrame, calibration_scored: pd.DataFrame | None) -> tuple[float, dict[str, Any]]:
    """The purchase threshold at the target precision, and where it was chosen: on the labelled calibration set
    (text more like real chats than the held-out corpus writers) when configured and it has enough positives."""
    settings = config.purchase_model
    on, scored = "validation", val_scored
    if settings.threshold_on in ("calibration_data", "all_calibration_data") and calibration_scored is not None:
        column = calibration_scored.get("purchase_intent")
        labelled = calibration_scored[column.notna()] if column is not None else None
        positives = int(labelled["purchase_intent"].sum()) if labelled is not None else 0
        if positives >= settings.threshold_min_positives:
            on, scored = settings.threshold_on, labelled
        else:  # a file without purchase labels counts as none
            log.warning("purchase threshold chosen on validation: the calibration data has %d purchase positives, fewer than "
                        "purchase_model.threshold_min_positives (%d)", positives, settings.threshold_min_positives)
    labels = scored["purchase_intent"].to_numpy()
    if settings.threshold_bootstrap:
        groups = scored["writer"].to_numpy() if "writer" in scored.columns else None
        threshold, reached = bagged_precision_threshold(labels, scored["purchase_score"].to_numpy(), settings.target_precision,
                                                        settings.threshold_bootstrap, config.seed, groups)
    else:
        threshold, reached = choose_precision_threshold(labels, scored["purchase_score"].to_numpy(), settings.target_precision)
    record = {"set": on, "messages": len(scored), "positives": int(labels.sum()),
              **{k: None if np.isnan(v) else round(v, 4) for k, v in reached.items()}}
    return threshold, record


def _calibrated_on_held_out(config: Config, shop: pd.DataFrame | None) -> tuple[bool, bool]:
    """Whether the intent and the purchase model take their calibration from held-out messages
    (`_recalibrate_on_validation`) rather than from out-of-fold scores of the training split."""
    return shop is not None or config.intent_model.calibrate_on == "validation", config.purchase_model.calibrate_on == "validation"


def _fit_message_models(
    config: Config, train: pd.DataFrame, has_purchase: bool, idf_texts: list[str] | None, calibrated_on_held_out: tuple[bool, bool],
) -> tuple[Pipeline, Pipeline | None]:
    """`idf_texts` (normalised unlabelled messages): the feature step's IDF is fitted on the training text
    plus these (CompactTfidfVectorizer's `idf_documents`); the vocabulary and the classifiers see the
    training text only. A model calibrated on held-out messages afterwards (`calibrated_on_held_out`, for
    the intent and the purchase model) is fitted without the calibration folds, whose calibration the held-out
    one replaces: the same linear model in a third of the fitting time."""
    intent_later, purchase_later = calibrated_on_held_out
    intent_pipeline = build_intent_pipeline(config)
    intent_pipeline.named_steps["classifier"].set_params(cross_fit=not intent_later)
    normalizer = intent_pipeline.named_steps["normalize"].fit(train["text"])
    features = intent_pipeline.named_steps["features"]
    if idf_texts is None:
        matrix = features.fit_transform(train["normalized"].tolist())
    else:
        matrix = features.fit_transform(train["normalized"].tolist(), idf_documents=idf_texts)
    weights = train["_weight"].to_numpy() if "_weight" in train.columns else None  # extra labelled files count more
    intent_pipeline.named_steps["classifier"].fit(matrix, train["intent"].to_numpy(), groups=train["group"].to_numpy(), sample_weight=weights)
    purchase_pipeline = None
    if has_purchase:
        classifier = make_purchase_classifier(config).set_params(cross_fit=not purchase_later)
        classifier.fit(matrix, train["purchase_intent"].to_numpy(), groups=train["group"].to_numpy(), sample_weight=weights)
        # The same fitted feature steps: features are computed once for both models at prediction time.
        purchase_pipeline = Pipeline([("normalize", normalizer), ("features", features), ("classifier", classifier)])
    return intent_pipeline, purchase_pipeline


def _recalibrate_on_validation(
    config: Config, intent_pipeline: Pipeline, purchase_pipeline: Pipeline | None, val: pd.DataFrame, shop: pd.DataFrame | None = None
) -> None:
    """Refit the calibration of the models configured for it on the validation writers; the intent model's
    on `shop` instead when given (`paths.calibration_data`: a shop's own labelled messages)."""
    wanted: list[tuple[Pipeline, str, pd.DataFrame]] = []
    intent_later, purchase_later = _calibrated_on_held_out(config, shop)
    if intent_later:
        wanted.append((intent_pipeline, "intent", val if shop is None else shop))
    if purchase_pipeline is not None and purchase_later:
        wanted.append((purchase_pipeline, "purchase_intent", val))
    features, matrices = intent_pipeline.named_steps["features"], {}
    for pipeline, labels, frame in wanted:
        if id(frame) not in matrices:  # the validation features once for both models
            matrices[id(frame)] = features.transform(frame["normalized"].tolist())
        pipeline.named_steps["classifier"].recalibrate(matrices[id(frame)], frame[labels].to_numpy())


def _calibrate_on_chats(config: Config, intent_pipeline: Pipeline, val_scored: pd.DataFrame, chats: UnlabelledData,
                        manifest: dict[str, Any]) -> dict[str, Any]:
    """Set the intent temperature and the fallback threshold from a shop's unlabelled messages (ATC,
    `pipeline.training.shift`), after the validation calibration they start from. Returns the figures."""
    classifier = intent_pipeline.named_steps["classifier"]
    scores = classifier.decision_function(intent_pipeline.named_steps["features"].transform(chats.texts))
    threshold = atc_threshold(val_scored["confidence"].to_numpy(), (val_scored["intent"] == val_scored["pred_intent"]).to_numpy())
    validation_temperature = float(classifier.temperature_)
    estimate = atc_accuracy(softmax(scores / validation_temperature, axis=1).max(axis=1), threshold)
    classifier.temperature_ = temperature_for_mean_confidence(scores, estimate)
    confidence = softmax(scores / classifier.temperature_, axis=1).max(axis=1)
    summary: dict[str, Any] = {
        "method": "ATC (average thresholded confidence) on validation, temperature matched on the chats",
        "messages_used": len(chats.texts), "files": chats.files, "atc_threshold": round(threshold, 6),
        "estimated_accuracy": round(estimate, 4), "temperature_validation": round(validation_temperature, 6),
        "temperature": round(float(classifier.temperature_), 6),
    }
    fallback = config.intent_model.fallback
    on = {"intent": "calibration_chats", "purchase": config.purchase_model.calibrate_on}
    if fallback.target == "accepted_accuracy":
        manifest["thresholds"]["fallback"], expected = fallback_for_expected_accuracy(confidence, fallback.value)
        summary.update({"expected_accepted_accuracy": round(expected, 4),
                        "handed_over_share": round(float((confidence < manifest["thresholds"]["fallback"]).mean()), 4)})
        on["fallback"] = "calibration_chats"
    else:  # an out-of-scope recall target needs labels: it stays chosen on validation
        on["fallback"] = "validation"
    manifest["calibrated_on"] = on
    log.info("calibrated on %d unlabelled chat messages: estimated accuracy %.3f, temperature %.4f -> %.4f, fallback threshold %.4f",
             len(chats.texts), estimate, validation_temperature, classifier.temperature_, manifest["thresholds"]["fallback"])
    return summary


def _conversation_split(frame: pd.DataFrame, config: Config) -> pd.Series:
    keyed = pd.DataFrame(
        {
            "intent": frame["expressed_purchase_intent"].astype(str),
            "group": frame["buyer_id"].astype(str),
            "normalized": frame["conversation_id"].astype(str),
        }
    )
    settings = config.conversation_model
    return assign_splits(keyed, val_fraction=settings.val_fraction, test_fraction=settings.test_fraction, seed=config.seed).to_numpy()


def conversation_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    return purchase_metrics(y_true, scores, threshold)


def _fit_conversation_model(config: Config, predictor: Predictor, conversations: ConversationData, bundle: ModelBundle) -> tuple[dict[str, Any], pd.DataFrame]:
    frame = conversations.frame.reset_index(drop=True).copy()
    frame["split"] = _conversation_split(frame, config)
    settings = config.conversation_model
    scorer = ConversationScorer(predictor, settings.pre_sales_intents or None, settings.concern_intents or None)
    policy = NudgePolicy.from_settings(load_flag_settings(config.flag))
    features = features_from_turns(frame["turns"].tolist(), scorer, policy)
    y = frame["expressed_purchase_intent"].to_numpy(dtype=int)
    train_idx = np.flatnonzero(frame["split"] == "train")
    val_idx = np.flatnonzero(frame["split"] == "val")
    test_idx = np.flatnonzero(frame["split"] == "test")
    out_of_fold = None
    if settings.threshold_folds:
        # The threshold from out-of-fold scores over training and validation conversations together: four times the
        # conversations a validation-only choice sees, so it moves less from one retraining to the next.
        fit_idx = chosen_on_idx = np.concatenate([train_idx, val_idx])
        buyers = frame["buyer_id"].astype(str).to_numpy()[fit_idx]
        out_of_fold = _out_of_fold_conversation_scores(config, scorer, [features[i] for i in fit_idx], y[fit_idx], buyers)
    else:
        fit_idx, chosen_on_idx = train_idx, val_idx
    model = build_conversation_pipeline(config)
    model.fit([features[i] for i in fit_idx], y[fit_idx])
    bundle.conversation = model
    scorer.model = model
    chosen_on_scores = out_of_fold if out_of_fold is not None else scorer.score_features([features[i] for i in val_idx])
    threshold, _ = choose_precision_threshold(y[chosen_on_idx], chosen_on_scores, settings.target_precision)
    test_scores = scorer.score_features([features[i] for i in test_idx])
    test = frame.iloc[test_idx].copy()
    test["purchase_score"] = test_scores
    test["flag"] = test_scores >= threshold
    metrics = {
        # with threshold_folds: the out-of-fold scores of training and validation conversations the threshold was chosen on
        "val": conversation_metrics(y[chosen_on_idx], chosen_on_scores, threshold),
        "test": conversation_metrics(y[test_idx], test_scores, threshold),
        "threshold": threshold,
        "threshold_chosen_on": f"out_of_fold_{settings.threshold_folds}" if settings.threshold_folds else "validation",
        "sizes": {"train": int(len(train_idx)), "val": int(len(val_idx)), "test": int(len(test_idx))},
    }
    # Baseline for the report: the best single message score, thresholded on the same validation data.
    max_val = np.array([features[i]["purchase_max"] for i in val_idx])
    max_test = np.array([features[i]["purchase_max"] for i in test_idx])
    base_threshold, _ = choose_precision_threshold(y[val_idx], max_val, settings.target_precision)
    metrics["test_max_message_baseline"] = conversation_metrics(y[test_idx], max_test, base_threshold)
    return metrics, test


def _out_of_fold_conversation_scores(
    config: Config, scorer: ConversationScorer, features: list[dict[str, float]], y: np.ndarray, buyers: np.ndarray
) -> np.ndarray:
    """Each conversation scored by a model fitted on folds without its buyer (a buyer's chats stay in one fold)."""
    folds = FastStratifiedGroupKFold(n_splits=config.conversation_model.threshold_folds, shuffle=True, random_state=config.seed)
    scores = np.zeros(len(y), dtype=float)
    for fit_rows, scored_rows in folds.split(np.zeros(len(y)), y, buyers):
        fold_model = build_conversation_pipeline(config)
        fold_model.fit([features[i] for i in fit_rows], y[fit_rows])
        scorer.model = fold_model
        scores[scored_rows] = scorer.score_features([features[i] for i in scored_rows])
    return scores


def _evaluate_flagging(config: Config, predictor: Predictor, test: pd.DataFrame) -> tuple[dict[str, Any] | None, pd.DataFrame]:
    """The nudge list the flag job would produce for the test conversations, against the truth."""
    settings = load_flag_settings(config.flag)
    policy = NudgePolicy.from_settings(settings)
    orders, info = load_orders_index(config.paths.orders, policy, config.columns.names())
    metrics, table = evaluate_flagging(test, ConversationScorer(predictor), policy, orders)
    if table["order_unknown"].all():
        log.warning("nudge list not evaluated: no test conversation has the message times needed to tell lost shoppers")
        return None, table
    metrics["orders"] = {"rows_used": info["rows_used"], "rows_rejected": info["rows_rejected"]}
    log.info(
        "flagging on %d test conversations: precision %.3f recall %.3f, flagged %.1f%% of lost (true %.1f%%)",
        metrics["conversations"], metrics["precision"], metrics["recall"],
        100 * metrics["flagged_share_of_lost"], 100 * metrics["true_share_of_lost"],
    )
    return metrics, table


def _idf_texts(config: Config, unlabelled: UnlabelledData, held_out: list[pd.Series], evaluation_texts: list[str]) -> tuple[list[str], int]:
    """The unlabelled messages that may enter the IDF fit: none whose normalised text is a validation,
    test or evaluation-set text (those are measured on, so nothing of them is fitted on). Returns the
    texts and how many were left out."""
    max_chars = config.text.max_chars
    measured = {normalize(text, max_chars) for part in held_out for text in part.astype(str)}
    measured.update(normalize(text, max_chars) for text in evaluation_texts)
    kept = [text for text in unlabelled.texts if text not in measured]
    return kept, len(unlabelled.texts) - len(kept)


@dataclass
class _HeldOut:
    """The messages every fit is calibrated and thresholded on, and never trained on."""

    val: pd.DataFrame  # the validation writers
    shop: pd.DataFrame | None  # calibration_data + intent_calibration_data, concatenated
    calibration: LabelledData | None
    intent_calibration: LabelledData | None
    calibration_chats: UnlabelledData | None


@dataclass
class _CalibratedFit:
    bundle: ModelBundle
    predictor: Predictor
    val_metrics: dict[str, Any]
    shop_metrics: dict[str, Any] | None
    chats_summary: dict[str, Any] | None


def _fit_and_calibrate(config: Config, rows: pd.DataFrame, held_out: _HeldOut, has_purchase: bool, idf_texts: list[str] | None,
                       described: dict[str, Any]) -> _CalibratedFit:
    """The message models fitted on `rows`, then calibrated and thresholded on the held-out messages: one function for
    the fit that the test split measures and for the refit on train + test, so the two cannot be chosen apart."""
    val, shop, calibration = held_out.val, held_out.shop, held_out.calibration
    intent_pipeline, purchase_pipeline = _fit_message_models(config, rows, has_purchase, idf_texts, _calibrated_on_held_out(config, shop))
    manifest: dict[str, Any] = {**described, "labels": [str(c) for c in intent_pipeline.classes_],
                                "thresholds": {"fallback": 0.0, "purchase": 0.5}}
    bundle = ModelBundle(intent_pipeline, purchase_pipeline, None, manifest)

    # Validation choices: calibration (when configured), then the thresholds on calibrated scores. The predictor comes
    # after the calibration: a model fitted without its calibration folds has no probabilities before it.
    _recalibrate_on_validation(config, intent_pipeline, purchase_pipeline, val, shop)
    predictor = Predictor(bundle)
    _, val_scored = score_labelled(predictor, val)
    fallback = config.intent_model.fallback
    fallback_on = val_scored if shop is None else score_labelled(predictor, shop)[1]
    manifest["thresholds"]["fallback"] = choose_fallback_threshold(
        fallback_on["intent"], fallback_on["pred_intent"], fallback_on["confidence"], fallback.target, fallback.value, fallback.oos_label
    )
    if shop is not None:
        intent_on = "+".join(name for name, part in (("calibration_data", calibration), ("intent_calibration_data", held_out.intent_calibration))
                             if part is not None)
        manifest["calibrated_on"] = {"intent": intent_on, "fallback": intent_on, "purchase": config.purchase_model.calibrate_on}
    chats_summary = None
    if held_out.calibration_chats is not None:
        chats_summary = _calibrate_on_chats(config, intent_pipeline, val_scored, held_out.calibration_chats, manifest)
    if purchase_pipeline is not None:
        if config.purchase_model.threshold_on == "all_calibration_data":
            purchase_on = fallback_on if shop is not None else None
        else:
            purchase_on = fallback_on[fallback_on[PURCHASE_THRESHOLD_SET]] if calibration is not None else None
        manifest["thresholds"]["purchase"], manifest["purchase_threshold_on"] = _purchase_threshold(config, val_scored, purchase_on)
    predictor = Predictor(bundle)
    val_metrics, val_final = score_labelled(predictor, val)
    # For a label-free estimate of the accuracy on whatever the model later scores (`pipeline.drift`): ATC's
    # threshold is set where the confidence was calibrated, the labelled calibration set when there is one.
    shop_metrics, shop_final = score_labelled(predictor, shop) if shop is not None else (None, None)
    atc_on = val_final if shop_final is None else shop_final
    manifest[MANIFEST_KEY] = manifest_record(atc_on["confidence"].to_numpy(), (atc_on["intent"] == atc_on["pred_intent"]).to_numpy())
    return _CalibratedFit(bundle, predictor, val_metrics, shop_metrics, chats_summary)


def _fit_each(config: Config, row_sets: list[pd.DataFrame], held_out: _HeldOut, has_purchase: bool, idf_texts: list[str] | None,
              described: dict[str, Any]) -> list[_CalibratedFit]:
    """`_fit_and_calibrate` on each row set, in parallel worker processes when `n_jobs` allows (the linear SVM fits on one
    core); each predictor is rebuilt here, so its compiled form belongs to this process's bundle."""
    # A cross-fitted model runs its fold fits side by side itself (n_jobs): nested in a worker they would run as threads,
    # which share liblinear's random state, and the linear SVM's weights would depend on the threads' timing.
    cross_fitted = not all(_calibrated_on_held_out(config, held_out.shop))
    jobs = 1 if cross_fitted else min(config.n_jobs, len(row_sets))
    if jobs == 1:
        return [_fit_and_calibrate(config, rows, held_out, has_purchase, idf_texts, described) for rows in row_sets]
    fits = Parallel(n_jobs=jobs)(delayed(_fit_and_calibrate)(config, rows, held_out, has_purchase, idf_texts, described) for rows in row_sets)
    for fit in fits:
        fit.predictor = Predictor(fit.bundle)
    return fits


def train(
    config: Config,
    data: LabelledData,
    conversations: ConversationData | None = None,
    unlabelled: UnlabelledData | None = None,
    evaluation_texts: list[str] | tuple[str, ...] = (),
    calibration: LabelledData | None = None,
    calibration_chats: UnlabelledData | None = None,
    intent_calibration: LabelledData | None = None,
) -> TrainResult:
    """Fit on the train split, choose thresholds on validation, measure once on test.

    `unlabelled`: the IDF (only) is fitted on the training text plus these messages, less any that is also
    a validation or test text or one of `evaluation_texts` (the sets the caller will measure on).
    `calibration`: a shop's own labelled messages, never trained on (a training row with the same
    normalised text is left out of the fit): the intent temperature and the fallback threshold are fitted
    on them instead of the validation writers, so confidence and hand-over follow the shop's real chats
    (benchmarks/CALIBRATION.md). The purchase model stays calibrated on validation.
    `intent_calibration`: more labelled messages, never trained on, that join `calibration` for the intent
    temperature, the fallback threshold and the accuracy estimate only: the purchase threshold stays chosen on
    `calibration` (data/seeds/chats/ROUND25_RULES.md, AM: more calibration text kept the hand-over promise on
    written chats at large, and moved the purchase threshold away from its own).
    `calibration_chats`: a shop's unlabelled buyer messages: the same two choices without labels
    (`pipeline.training.shift`: the temperature at which the mean confidence there is ATC's estimate of the
    accuracy there, and the fallback threshold at which the accepted messages' mean confidence reaches the
    target)."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    frame = data.frame.copy()
    frame["split"] = split_by_settings(frame, config.split, config.seed)
    shop = None
    labelled_sets = [part for part in (calibration, intent_calibration) if part is not None]
    if labelled_sets and calibration_chats is not None:
        raise ValueError("calibrate on labelled messages (paths.calibration_data, paths.intent_calibration_data) or on unlabelled "
                         "chats (paths.calibration_chats), not both: the default config calibrates on data/chats/calibration.csv, so a "
                         "config that sets calibration_chats sets both to null (the CLI's --calibration-chats does it)")
    if labelled_sets:
        parts = []
        for labelled in labelled_sets:
            part = labelled.frame[labelled.frame["normalized"] != ""]
            if part.empty:
                raise ValueError(f"{labelled.source}: no labelled message to calibrate on")
            unknown = sorted(set(part["intent"]) - set(frame["intent"]))
            if unknown:
                raise ValueError(f"{labelled.source}: intents the training data does not have: {unknown}")
            parts.append(part.assign(**{PURCHASE_THRESHOLD_SET: labelled is calibration}))
        shop = pd.concat(parts, ignore_index=True)
        overlap = (frame["split"] == "train") & frame["normalized"].isin(set(shop["normalized"]))
        if overlap.any():
            log.info("%d training rows left out: their text is one of the calibration messages", int(overlap.sum()))
            frame.loc[overlap, "split"] = "calibration_overlap"
    train_part, val_part, test_part = (frame[frame["split"] == name] for name in ("train", "val", "test"))
    if val_part.empty or test_part.empty:
        raise ValueError("validation or test split is empty: the data set is too small to train and evaluate honestly")
    log.info("split: %d train / %d val / %d test messages", len(train_part), len(val_part), len(test_part))

    idf_texts, unlabelled_summary = None, None
    if unlabelled is not None:
        idf_texts, excluded = _idf_texts(config, unlabelled, [val_part["text"], test_part["text"]], list(evaluation_texts))
        if not idf_texts:
            raise ValueError(f"no unlabelled message left for the IDF fit ({excluded} were validation, test or evaluation texts)")
        unlabelled_summary = {
            "fitted": "idf only (vocabulary and classifiers: the training rows)",
            "messages_used": len(idf_texts),
            "rows_rejected": sum(f["rows_rejected"] for f in unlabelled.files),
            "excluded_held_out": excluded,
            "files": unlabelled.files,
        }
        log.info("IDF fitted on %d training + %d unlabelled messages (%d left out: validation, test or evaluation texts)",
                 len(train_part), len(idf_texts), excluded)

    words = user_words(config) if config.text.language == "zh" else ()
    described: dict[str, Any] = {
        "name": config.mlflow.registered_model,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "package_version": package_version("buyer-intent"),
        "language": config.text.language,
        "seed": config.seed,
        "config": config.model_dump(mode="json"),
        "pre_sales_intents": config.conversation_model.pre_sales_intents,
        "concern_intents": config.conversation_model.concern_intents,
    }
    if config.conversation_model.count_cut is not None:  # read by ConversationScorer: the cut is part of the model
        described["conversation_count_cut"] = config.conversation_model.count_cut
    held_out = _HeldOut(val_part, shop, calibration, intent_calibration, calibration_chats)
    refit = config.split.final_fit == "train_and_test"
    # split.final_fit train_and_test (ROUND31_RULES BT): the test split is measured on the first fit, and the shipped models
    # are fitted again with it, so which rows the seed drew for it no longer changes them. Rows whose text is a calibration
    # message stay out, as in train. The two fits are independent: with n_jobs > 1 they run side by side.
    refit_rows = test_part if shop is None else test_part[~test_part["normalized"].isin(set(shop["normalized"]))]
    row_sets = [train_part, pd.concat([train_part, refit_rows])] if refit else [train_part]
    fits = _fit_each(config, row_sets, held_out, data.has_purchase_labels, idf_texts, described)
    fitted = fits[0]
    timings["fit_message_models_s"] = time.perf_counter() - started
    test_metrics, test_scored = score_labelled(fitted.predictor, test_part)
    test_thresholds = dict(fitted.bundle.thresholds)
    timings["evaluate_s"] = time.perf_counter() - started - timings["fit_message_models_s"]
    if refit:
        fitted = fits[1]
        fitted.bundle.manifest["final_fit"] = {
            "rows": "train+test", "messages": int(len(row_sets[1])),
            "test_rows_left_out": int(len(test_part) - len(refit_rows)),
            "test_metrics_from": "the fit on the train split, before the refit (the shipped models have seen the test split)",
            "evaluation_fit_thresholds": test_thresholds,
        }
        log.info("shipped models refit on train + test (%d messages, split.final_fit); the test figures are the first fit's", len(row_sets[1]))
    bundle, predictor, manifest = fitted.bundle, fitted.predictor, fitted.bundle.manifest
    purchase_pipeline = bundle.purchase
    val_metrics, shop_metrics, chats_summary = fitted.val_metrics, fitted.shop_metrics, fitted.chats_summary

    metrics: dict[str, Any] = {"val": val_metrics, "test": test_metrics}
    if shop_metrics is not None:  # fitted on: what the calibration reached there, not a measurement of the model
        metrics["calibration"] = shop_metrics
    conversation_test = None
    fingerprints: dict[str, Any] = {
        "messages": fingerprint(frame, ["text", "intent", *(["purchase_intent"] if data.has_purchase_labels else []), "group"]),
        "splits": {name: int((frame["split"] == name).sum()) for name in ("train", "val", "test")},
        "rejected_rows": int(len(data.rejected)),
    }
    if unlabelled_summary is not None:  # counts and checksums only: no unlabelled text is kept
        fingerprints["unlabelled"] = unlabelled_summary
    if chats_summary is not None:  # counts, checksums and the fitted figures: no chat text is kept
        fingerprints["calibration_chats"] = chats_summary
    if shop is not None:  # counts and a checksum only, as for the other sets
        fingerprints["calibration"] = {
            "source": " + ".join(str(part.source) for part in labelled_sets), "rows": int(len(shop)),
            "rejected": int(sum(len(part.rejected) for part in labelled_sets)),
            "training_rows_left_out": int((frame["split"] == "calibration_overlap").sum()),
            **fingerprint(shop, ["text", "intent"]),
        }
        if intent_calibration is not None:
            fingerprints["calibration"]["intent_only_rows"] = int((~shop[PURCHASE_THRESHOLD_SET]).sum())
    if "_weight" in frame.columns:  # extra labelled files: how many rows each source gave, and their weight
        fingerprints["sources"] = {
            str(source): {"rows": int(len(part)), "weight": float(part["_weight"].iloc[0]),
                          **{name: int((part["split"] == name).sum()) for name in ("train", "val", "test")}}
            for source, part in frame.groupby("source", sort=False)
        }
    if conversations is not None and purchase_pipeline is not None and not conversations.frame.empty:
        conversation_started = time.perf_counter()
        metrics["conversation"], conversation_test = _fit_conversation_model(config, predictor, conversations, bundle)
        manifest["thresholds"]["conversation"] = metrics["conversation"]["threshold"]
        fingerprints["conversations"] = {
            "rows": int(len(conversations.frame)),
            "expressed_purchase_intent_rate": round(float(conversations.frame["expressed_purchase_intent"].mean()), 4),
            "source": conversations.source,
        }
        timings["conversation_model_s"] = time.perf_counter() - conversation_started
        missing = {"buyer_id", "shop_id"} - set(conversation_test.columns)
        if config.paths.orders and missing:
            log.warning("nudge list not evaluated: the labelled conversations have no %s", ", ".join(sorted(missing)))
        elif config.paths.orders and Path(config.paths.orders).is_file():
            flag_started = time.perf_counter()
            flagging, flag_table = _evaluate_flagging(config, predictor, conversation_test)
            if flagging is not None:
                metrics["flagging"] = flagging
                conversation_test = conversation_test.merge(
                    flag_table[["conversation_id", "lost", "flagged", "reason"]], on="conversation_id", how="left"
                )
                fingerprints["orders"] = {"source": config.paths.orders, **flagging.pop("orders")}
            timings["flag_evaluation_s"] = time.perf_counter() - flag_started
        conversation_test = conversation_test.drop(columns=["turns"])
    manifest["fingerprints"] = fingerprints
    manifest["headline"] = headline_metrics(metrics)
    timings["total_s"] = time.perf_counter() - started
    return TrainResult(
        bundle=bundle,
        messages=frame,
        test_predictions=test_scored,
        metrics=metrics,
        fingerprints=fingerprints,
        conversation_test=conversation_test,
        timings=timings,
        user_dict_text="\n".join(words) + ("\n" if words else ""),
        test_thresholds=test_thresholds,
    )


def turns_from_messages(messages: list[dict]) -> list[Turn]:
    return [Turn(str(m.get("role", "")), str(m.get("text", "") or ""), m.get("sent_at")) for m in messages]
