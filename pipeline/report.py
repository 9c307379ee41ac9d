"""The offline evaluation report: one self-contained HTML page and the same content as Markdown.

Analysts read it without the code, so every section says what it shows and how to read it. Written by
`write_report` into a directory:

    report.html    self-contained (inline CSS, plots embedded as base64 PNG, no external assets)
    report.md      the same content; plots referenced as files in plots/
    plots/*.png    the plots
    metrics.json   the metrics dict (NaN written as null)

`write_report` turns the results into a plain dict (numbers, rows of table cells, masked messages) and
renders one Jinja2 template, `templates/report.j2`, twice: with the HTML macros (autoescaped) and with
the Markdown macros (escaped by the `md` filters). Every buyer message shown goes through `mask_pii`
first; plots never contain message text. Files are written atomically.

The plots are scikit-learn's `ConfusionMatrixDisplay`, `CalibrationDisplay` and `PrecisionRecallDisplay`
drawn on `Figure` objects with an explicit Agg canvas: matplotlib is imported only when a report is
written, and no backend is chosen or changed for the calling process.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from collections.abc import Callable
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape
from sklearn.metrics import confusion_matrix, precision_score, recall_score

from pipeline.training.evaluate import CALIBRATION_BINS, expected_calibration_error, headline_metrics, purchase_metrics, slice_metrics
from pipeline.data.tables import csv_bytes, write_bytes_atomic
from pipeline.text import mask_pii, normalize

__all__ = ["write_report", "SECTION_TITLES", "EVAL_SET_NOTE"]

SECTION_TITLES = {
    "headline": "Headline metrics",
    "champion": "Change against the champion",
    "eval_sets": "Test split vs evaluation sets",
    "per_intent": "Per-intent quality",
    "confusion_matrix": "Confusion matrix",
    "confusions": "Most frequent confusions",
    "confidence": "Confidence and fallback",
    "calibration": "Calibration",
    "slices": "Slices",
    "purchase": "Purchase intent",
    "conversation": "Conversation-level purchase intent",
    "flagging": "Lost-shopper flagging (the nudge list)",
    "details": "Run details",
}

EVAL_SET_NOTE = (
    "The bundled corpus is authored and generated: its test split shares templates and phrasing with the "
    "training data, so it flatters any model. Evaluation sets of real buyer chats are what matters; judge a "
    "model by those."
)

METRIC_LABELS: dict[str, tuple[str, str]] = {
    "intent_accuracy": ("Intent accuracy", "share of messages whose top intent is right"),
    "intent_macro_f1": ("Intent macro F1", "F1 averaged over intents, each intent counting equally"),
    "intent_fallback_rate": ("Fallback rate", "share handed to a human (confidence below the fallback threshold)"),
    "intent_accepted_accuracy": ("Accepted accuracy", "accuracy on the messages that are not handed over"),
    "intent_ece": ("Calibration error (ECE)", "gap between confidence and accuracy; lower is better"),
    "purchase_average_precision": ("Purchase AP", "area under the purchase precision-recall curve"),
    "purchase_precision": ("Purchase precision", "of messages flagged as purchase intent, the share that are"),
    "purchase_recall": ("Purchase recall", "of purchase-intent messages, the share flagged"),
    "purchase_f1": ("Purchase F1", "balance of purchase precision and recall at the threshold"),
    "conversation_precision": ("Conversation precision", "of flagged conversations, the share with purchase intent"),
    "conversation_recall": ("Conversation recall", "of conversations with purchase intent, the share flagged"),
    "conversation_f1": ("Conversation F1", "balance of conversation precision and recall"),
    "conversation_average_precision": ("Conversation AP", "area under the conversation precision-recall curve"),
    "flag_precision": ("Nudge precision", "of flagged lost shoppers, the share who had expressed purchase intent"),
    "flag_recall": ("Nudge recall", "of lost shoppers who had expressed purchase intent, the share flagged"),
    "flag_f1": ("Nudge F1", "balance of nudge precision and recall"),
}
LOWER_IS_BETTER = frozenset({"intent_ece"})
# More hand-overs is neither better nor worse by itself: it trades coverage for accepted accuracy.
TRADE_OFF = frozenset({"intent_fallback_rate"})
THRESHOLD_MEANINGS = {
    "fallback": "confidence below which a message is handed to a human",
    "purchase": "purchase score at or above which a message is flagged",
    "conversation": "conversation score at or above which a conversation is flagged",
}
REASON_NAMES = {
    "flagged": "flagged (nudge)",
    "not_lost": "not lost (paid within the window)",
    "no_purchase_intent": "lost, no purchase intent",
    "complaint_or_refund": "lost with intent, skipped: complaint or refund",
    "duplicate_in_window": "skipped: already nudged in the window",
    "order_unknown": "outcome unknown",
}

FOOTER = "Buyer messages in this report are PII-masked (phones, order numbers, addresses, names, links). Generated by pipeline.report."
NUMERIC_KINDS = frozenset({"num", "num4", "pct", "signed", "delta", "int"})
# Example mistakes: one per template. Two examples whose character bigrams overlap this much (Jaccard) are
# variants of one message (a particle, an emoji, punctuation), so only the more confident one is shown.
NEAR_DUPLICATE_JACCARD = 0.6
_MAX_MESSAGE_CHARS = 200
_DPI = 110


# --------------------------------------------------------------------------------------------------
# Formatting: the template's filters. A table column has a kind; a cell is a value, or {"v": value, "css": class}.


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fmt(value: Any, kind: str = "num") -> str:
    """A value as shown. Text (and a number formatted already, a string) is shown as it is; a number that
    is missing or not finite is a dash."""
    if isinstance(value, str) or kind in ("text", "message"):
        return "" if value is None else str(value)
    if not _finite(value):
        return "—"
    v = float(value)
    if kind == "delta":
        return "= 0.0000" if abs(v) < 5e-5 else f"{'▲' if v > 0 else '▼'} {v:+.4f}"
    return {"num": f"{v:.3f}", "num4": f"{v:.4f}", "pct": f"{v:.1%}", "signed": f"{v:+.3f}", "int": f"{int(v):,}"}[kind]


def cells(row: list[Any], columns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(text, CSS classes) of each cell of a table row; `columns` are (header, kind)."""
    out = []
    for cell, (_, kind) in zip(row, columns, strict=True):
        value, css = (cell["v"], cell["css"]) if isinstance(cell, dict) else (cell, "")
        role = "num" if kind in NUMERIC_KINDS else "message" if kind == "message" else ""
        out.append((fmt(value, kind), " ".join(c for c in (role, css) if c)))
    return out


def slug(text: str) -> str:
    """GitHub-style heading anchor, so the Markdown table of contents links work when rendered."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def md(text: Any, one_line: bool = True) -> str:
    """Text safe to put in Markdown without becoming HTML: only what could start a tag or an entity is
    escaped, so the raw file stays readable ("length <= 4" stays as it is). With `one_line`, runs of white
    space that contain a line break become one space (template prose is wrapped)."""
    text = re.sub(r"\s*\n\s*", " ", str(text)).strip() if one_line else str(text)
    text = re.sub(r"&(?=#?\w+;)", "&amp;", text)
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)


def md_cell(text: str, classes: str = "") -> str:
    """A Markdown table cell: no line or column breaks, no raw HTML; messages literal, good/bad in bold."""
    text = md(text)
    if "message" in classes.split():
        text = re.sub(r"([\\`*_])", r"\\\1", text)
    elif {"good", "bad"} & set(classes.split()) and text not in ("", "—"):
        text = f"**{text}**"
    return text.replace("|", "\\|")


def code_spans(text: Any) -> Markup:
    """HTML: escaped text whose `backticks` become <code>."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


@cache
def _environment(html: bool) -> Environment:
    env = Environment(
        loader=PackageLoader("pipeline", "templates"),
        autoescape=html,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(fmt=fmt, slug=slug, md=md, md_cell=md_cell, code=code_spans)
    env.globals.update(cells=cells, numeric=NUMERIC_KINDS, titles=SECTION_TITLES, eval_set_note=EVAL_SET_NOTE, footer=FOOTER)
    return env


def _render(context: dict[str, Any], html: bool) -> str:
    text = _environment(html).get_template("report.j2").render(context, format="html" if html else "markdown")
    return re.sub(r"\n{3,}", "\n\n", text).lstrip()


def _shown_message(text: Any) -> str:
    """A buyer message as it may appear in the report: PII masked, one line, bounded length."""
    masked = mask_pii("" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text))
    masked = re.sub(r"\s*[\r\n]+\s*", " ⏎ ", masked).strip()
    if len(masked) > _MAX_MESSAGE_CHARS:
        masked = masked[: _MAX_MESSAGE_CHARS - 1] + "…"
    return masked or "(empty)"


def _json_ready(value: Any) -> Any:
    """Plain JSON types; NaN and infinities become null (strict JSON, readable by any tool)."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (datetime, pd.Timestamp)):
        return value.isoformat()
    return str(value)


# --------------------------------------------------------------------------------------------------
# Plots: scikit-learn's displays on a fixed-size Figure with its own Agg canvas (no pyplot state).


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _plot_confusion(labels: list[str], counts: np.ndarray, where: str = "test messages") -> tuple[bytes, bool]:
    """Colour: the share of the true intent's messages; cell text: the message count."""
    from sklearn.metrics import ConfusionMatrixDisplay

    n = len(labels)
    support = counts.sum(axis=1)
    annotated = n <= 25
    fig = _figure(9.0, 7.8)
    ax = fig.add_subplot()
    display = ConfusionMatrixDisplay(counts / np.maximum(support[:, None], 1), display_labels=labels).plot(
        ax=ax, cmap="Blues", include_values=annotated, colorbar=False, im_kw={"vmin": 0.0, "vmax": 1.0}
    )
    if annotated:
        for (i, j), text in np.ndenumerate(display.text_):
            text.set(text=str(counts[i, j]) if counts[i, j] else "", fontsize=9 if n <= 12 else 7 if n <= 18 else 6)
    tick_size = 9 if n <= 15 else 7 if n <= 30 else 5
    ax.set_xticks(range(n), labels, rotation=55, ha="right", rotation_mode="anchor", fontsize=tick_size)
    ax.set_yticks(range(n), [f"{label} ({s})" for label, s in zip(labels, support, strict=True)], fontsize=tick_size)
    ax.set(xlabel="predicted intent", ylabel=f"true intent ({where})")
    ax.set_title("Row-normalised confusion matrix (cell text: message count)", fontsize=11)
    fig.colorbar(display.im_, ax=ax, shrink=0.8, label="share of the true intent's messages")
    return _png(fig), annotated


def _plot_confidence(confidence: np.ndarray, correct: np.ndarray, threshold: float) -> bytes:
    fig = _figure(8.5, 4.2)
    ax = fig.add_subplot()
    ax.hist(
        [confidence[correct], confidence[~correct]],
        bins=np.linspace(0.0, 1.0, 21),
        stacked=True,
        color=["#4c9a6a", "#d1495b"],
        label=[f"correct ({int(correct.sum())})", f"wrong ({int((~correct).sum())})"],
        edgecolor="white",
    )
    handed = float((confidence < threshold).mean()) if len(confidence) else 0.0
    ax.axvline(threshold, color="#1f2937", linestyle="--", label=f"fallback threshold {threshold:.3f} (handed over: {handed:.1%})")
    ax.set(xlim=(0.0, 1.0), xlabel="confidence of the predicted intent", ylabel="test messages")
    ax.set_title("Confidence of correct and wrong predictions", fontsize=11)
    ax.legend(loc="upper left", frameon=False)
    return _png(fig)


def _plot_calibration(panels: list[tuple[str, np.ndarray, np.ndarray, str, str]]) -> bytes:
    """Per panel (title, outcome, score, y label, x label): the reliability curve over the ECE's bins,
    and underneath how many messages fall in each bin."""
    from sklearn.calibration import CalibrationDisplay

    fig = _figure(5.2 * len(panels), 5.0)
    grid = fig.add_gridspec(2, len(panels), height_ratios=[3, 1])
    for column, (title, outcome, score, ylabel, xlabel) in enumerate(panels):
        top = fig.add_subplot(grid[0, column])
        bottom = fig.add_subplot(grid[1, column], sharex=top)
        CalibrationDisplay.from_predictions(outcome, score, n_bins=CALIBRATION_BINS, pos_label=1, ax=top, name="model")
        top.set(xlabel="", ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02))
        top.set_title(title, fontsize=11)
        top.tick_params(labelbottom=False)
        top.legend(loc="upper left", frameon=False, fontsize=8)
        bottom.hist(score, bins=np.linspace(0.0, 1.0, CALIBRATION_BINS + 1), color="#9ca3af", edgecolor="white")
        bottom.set(xlabel=xlabel, ylabel="messages")
    return _png(fig)


def _plot_pr_curve(labels: np.ndarray, scores: np.ndarray, threshold: float, where: str = "test messages") -> bytes:
    from sklearn.metrics import PrecisionRecallDisplay

    flagged = scores >= threshold
    precision = precision_score(labels, flagged, zero_division=np.nan)
    recall = recall_score(labels, flagged, zero_division=np.nan)
    fig = _figure(7.0, 4.6)
    ax = fig.add_subplot()
    PrecisionRecallDisplay.from_predictions(labels, scores, ax=ax, name="model", plot_chance_level=True)
    if _finite(precision) and _finite(recall):
        label = f"chosen threshold {threshold:.3f}: precision {precision:.3f}, recall {recall:.3f}"
        ax.plot([recall], [precision], "o", markersize=9, color="#d1495b", label=label)
    ax.set(
        aspect="auto",
        xlim=(0, 1.01),
        ylim=(0, 1.03),
        xlabel="recall (share of purchase-intent messages flagged)",
        ylabel="precision (share of flagged that are purchase intent)",
    )
    ax.set_title(f"Purchase intent: precision-recall on {where}", fontsize=11)
    ax.legend(loc="lower left", fontsize=9, framealpha=0.9)
    return _png(fig)


# --------------------------------------------------------------------------------------------------
# The results behind each section, as plain data for the template.


def _metric_label(key: str) -> tuple[str, str]:
    return METRIC_LABELS.get(key, (key.replace("_", " "), ""))


def _champion_section(metrics: dict, headline: dict[str, float], champion: dict[str, float] | None, champion_set: str | None,
                      n_test: int, eval_scored: dict[str, pd.DataFrame] | None) -> dict[str, Any]:
    """This run against the champion on the set the promotion compares them on (`mlflow.promotion_set`); None for
    `champion_set` when there is a champion but that set was not evaluated in this run."""
    if champion_set is None:
        return {"rows": None, "set": None}
    label = "the test split" if champion_set == "test" else f"the evaluation set {champion_set}"
    if champion is None:
        return {"rows": None, "set": label}
    if champion_set == "test":
        return {**_champion(headline, champion, n_test), "set": label, "n": n_test}
    key = f"eval:{champion_set}"
    n = len((eval_scored or {}).get(key, ()))
    return {**_champion(headline_metrics(metrics, key), champion, n), "set": label, "n": n}


def _champion(headline: dict[str, float], champion: dict[str, float] | None, n_test: int) -> dict[str, Any]:
    if champion is None:
        return {"rows": None}
    rows = []
    for key in [*headline, *(k for k in champion if k not in headline)]:
        ours, theirs = headline.get(key), champion.get(key)
        delta, verdict, css = None, "not comparable", ""
        if _finite(ours) and _finite(theirs):
            delta = float(ours) - float(theirs)
            if abs(delta) < 5e-5:
                verdict = "same"
            elif key in TRADE_OFF:
                verdict = "trade-off"
            else:
                verdict, css = ("better", "good") if (delta < 0) == (key in LOWER_IS_BETTER) else ("worse", "bad")
        rows.append([_metric_label(key)[0], ours, theirs, {"v": delta, "css": css}, {"v": verdict, "css": css}])
    accuracy = headline.get("intent_accuracy")
    error = math.sqrt(max(float(accuracy) * (1 - float(accuracy)), 1e-12) / n_test) if _finite(accuracy) and n_test else None
    return {"rows": rows, "standard_error": error}


def _eval_sets(metrics: dict[str, Any], eval_names: list[str], promises: dict[str, float] | None = None) -> dict[str, Any]:
    splits = ["test", *eval_names]
    per_split = {
        split: {k: v for k, v in headline_metrics(metrics, split).items() if not k.startswith("conversation_")} for split in splits
    }
    keys = list(dict.fromkeys(k for split in splits for k in per_split[split]))
    columns = [("metric", "text"), ("test", "num"), *((name.removeprefix("eval:"), "num") for name in eval_names)]
    rows = [["messages", *(str(metrics[s].get("intent", {}).get("n", "—")) for s in splits)]]
    rows += [[_metric_label(key)[0], *(per_split[s].get(key) for s in splits)] for key in keys]
    return {"columns": columns, "rows": rows, "names": [name for name in eval_names if name.startswith("eval:")],
            "promises": _promises(per_split, promises or {})}


def threshold_promises(config: dict[str, Any]) -> dict[str, float]:
    """What the thresholds promise where they were chosen (the calibration set or validation), from a model's
    training config (its manifest): the accuracy of the predictions not handed over, and the precision of the
    purchase flag."""
    promises = {}
    fallback = config.get("intent_model", {}).get("fallback", {})
    if fallback.get("target") == "accepted_accuracy" and fallback.get("value") is not None:
        promises["intent_accepted_accuracy"] = float(fallback["value"])
    if config.get("purchase_model", {}).get("target_precision") is not None:
        promises["purchase_precision"] = float(config["purchase_model"]["target_precision"])
    return promises


def _promises(per_split: dict[str, dict[str, float]], promises: dict[str, float]) -> dict[str, Any] | None:
    """Each promise next to its target on every set: validation text is unlike real chats, so a threshold
    that keeps its promise on validation may break it on real text, and this table is where that shows.
    `per_split`: {split: headline metrics}; a set without the metric is neither kept nor broken."""
    if not promises:
        return None
    rows = []
    for key, target in promises.items():
        row: list[Any] = [_metric_label(key)[0], target]
        broken = []
        for split, headline in per_split.items():
            value = headline.get(key)
            is_broken = value is not None and not (_finite(value) and float(value) >= target - 1e-12)
            if is_broken:
                broken.append(split.removeprefix("eval:"))
            row.append({"v": value, "css": "bad" if is_broken else ""})
        rows.append([*row, ", ".join(broken) or "none"])
    columns = [("promise", "text"), ("target", "num"), *((s.removeprefix("eval:"), "num") for s in per_split), ("broken on", "text")]
    return {"columns": columns, "rows": rows}


def _per_intent(intent: dict[str, Any], scored: pd.DataFrame) -> dict[str, Any]:
    per_intent = intent.get("per_intent", {})
    true, pred = scored["intent"].astype(str), scored["pred_intent"].astype(str)
    predicted = pred.value_counts()
    pairs = scored[true != pred].groupby([true[true != pred], pred[true != pred]]).size().sort_values(ascending=False)
    confused_with: dict[str, str] = {}
    for (label, other), count in pairs.items():
        confused_with.setdefault(label, f"{other} ({int(count)})")
    macro = intent.get("macro_f1", float("nan"))
    ordered = sorted(per_intent.items(), key=lambda item: (item[1]["support"] == 0, item[1]["f1"], -item[1]["support"], item[0]))
    ranked = [label for label, values in ordered if values["support"] > 0]
    worst = {label for label in ranked[:3] if _finite(macro) and per_intent[label]["f1"] < float(macro)}
    rows = [
        [
            label,
            v["precision"],
            v["recall"],
            v["f1"],
            v["support"],
            int(predicted.get(label, 0)),
            confused_with.get(label, "—"),
            {"v": "⚠ weakest", "css": "bad"} if label in worst else {"v": "not in test" if v["support"] == 0 else "", "css": "muted"},
        ]
        for label, v in ordered
    ]
    return {
        "rows": rows,
        "row_css": ["worst" if label in worst else "" for label, _ in ordered],
        "macro_f1": macro,
        "present": len(ranked),
        "accuracy": intent.get("accuracy"),
    }


def _explained(explanation: dict[str, Any] | None) -> str:
    """`票 +5.07 · 发票 +2.75`: the n-grams that pushed the predicted intent, with their contributions."""
    ngrams = (explanation or {}).get("intent", {}).get("ngrams", [])
    return " · ".join(f"{item['ngram']} {item['contribution']:+.2f}" for item in ngrams) or "—"


def _bigrams(text: str) -> frozenset[str]:
    """Character bigrams of a message without blanks and punctuation, the surface that near-duplicates share."""
    letters = re.sub(r"[\W_]+", "", text)
    return frozenset(letters[i : i + 2] for i in range(len(letters) - 1)) or frozenset({letters})


def _near_duplicate(a: frozenset[str], b: frozenset[str]) -> bool:
    return len(a & b) >= NEAR_DUPLICATE_JACCARD * len(a | b)


def _confusions(scored: pd.DataFrame, top: int, per_pair: int, explain: Callable[..., list] | None) -> dict[str, Any]:
    true, pred = scored["intent"].astype(str), scored["pred_intent"].astype(str)
    wrong = scored[true != pred].assign(pair_true=true[true != pred], pair_pred=pred[true != pred])
    explain = explain if per_pair > 0 else None
    columns = [("#", "int"), ("true → predicted", "text"), ("count", "int"), ("share of true intent", "pct"), ("handed over", "int")]
    if per_pair > 0:
        columns += [("example message (PII masked)", "message"), ("confidence", "num")]
    if explain is not None:
        columns.append(("why: top n-grams for the predicted intent", "message"))
    result: dict[str, Any] = {"mistakes": len(wrong), "columns": columns, "rows": [], "row_css": [], "explained": explain is not None}
    if wrong.empty:
        return result
    support = true.value_counts()
    pairs = wrong.groupby(["pair_true", "pair_pred"]).size().reset_index(name="n")
    pairs = pairs.sort_values(["n", "pair_true", "pair_pred"], ascending=[False, True, True]).head(top)
    fallback = wrong["fallback"].astype(bool) if "fallback" in wrong else pd.Series(False, index=wrong.index)
    rows, css, examples = result["rows"], result["row_css"], []
    for rank, pair in enumerate(pairs.itertuples(index=False), start=1):
        members = wrong[(wrong["pair_true"] == pair.pair_true) & (wrong["pair_pred"] == pair.pair_pred)]
        head = [rank, f"{pair.pair_true} → {pair.pair_pred}", pair.n, pair.n / support.get(pair.pair_true, 1), int(fallback.loc[members.index].sum())]
        shown: dict[str, tuple[float, Any]] = {}  # masked message -> (confidence, raw text)
        grams: list[frozenset[str]] = []  # one example per template: near-duplicates of a shown one are skipped
        for row in members.sort_values("confidence", ascending=False, kind="stable").itertuples(index=False):
            if len(shown) >= per_pair:
                break
            message = _shown_message(row.text)
            bigrams = _bigrams(message)
            if not any(_near_duplicate(bigrams, seen) for seen in grams):
                grams.append(bigrams)
                shown[message] = (row.confidence, row.text)
        for i, (message, (confidence, text)) in enumerate(shown.items()):
            examples.append((len(rows), text if isinstance(text, str) else "", pair.pair_pred))
            rows.append([*(head if i == 0 else [""] * 5), message, confidence])
        if not shown:
            rows.append(head)
        css += ["group-a" if rank % 2 else "group-b"] * max(len(shown), 1)
    if explain is not None:
        for (index, _, _), explanation in zip(examples, explain([t for _, t, _ in examples], [p for _, _, p in examples]), strict=True):
            rows[index].append(_explained(explanation))
    result.update(pairs=len(pairs), covered=int(pairs["n"].sum()))
    return result


def _confidence(scored: pd.DataFrame, correct: np.ndarray, intent: dict[str, Any], threshold: float, plots: dict) -> dict[str, Any]:
    confidence = scored["confidence"].to_numpy(dtype=float)
    plots["confidence_histogram.png"] = _plot_confidence(confidence, correct, threshold)
    handed = confidence < threshold
    return {
        "threshold": threshold,
        "handed_over": intent.get("fallback_rate", float(handed.mean())),
        "accepted_accuracy": intent.get("accepted_accuracy"),
        "mistakes_caught": handed[~correct].mean() if (~correct).any() else None,
        "correct_handed_over": handed[correct].mean() if correct.any() else None,
    }


def _calibration(scored: pd.DataFrame, correct: np.ndarray, intent: dict[str, Any], labelled: bool, plots: dict, prefix: str = "") -> dict[str, Any]:
    confidence = scored["confidence"].to_numpy(dtype=float)
    ece = intent.get("ece")
    if not _finite(ece):
        ece = expected_calibration_error(correct, confidence)
    panels = [(f"Intent confidence (ECE {fmt(ece)})", correct.astype(int), confidence, "accuracy in bin", "confidence of the predicted intent")]
    if labelled:
        outcome, score = scored["purchase_intent"].to_numpy(dtype=int), scored["purchase_score"].to_numpy(dtype=float)
        purchase_ece = expected_calibration_error(outcome, score)
        panels.append((f"Purchase score (ECE {fmt(purchase_ece)})", outcome, score, "share with purchase intent", "purchase score"))
    plots[prefix + "reliability.png"] = _plot_calibration(panels)
    return {"ece": ece, "bins": CALIBRATION_BINS, "purchase_panel": labelled, "plot": prefix + "reliability.png",
            "accuracy": intent.get("accuracy"), "estimated_accuracy": intent.get("estimated_accuracy")}


def _slices(scored: pd.DataFrame) -> dict[str, Any]:
    frame = scored if "normalized" in scored.columns else scored.assign(normalized=scored["text"].map(normalize))
    frame = frame.assign(intent=frame["intent"].astype(str), pred_intent=frame["pred_intent"].astype(str))
    overall = float((frame["intent"] == frame["pred_intent"]).mean())
    rows, css = [["all test messages", len(frame), 1.0, overall, None]], ["total"]
    for item in slice_metrics(frame):
        gap = item["accuracy"] - overall
        rows.append([item["slice"], item["n"], item["n"] / len(frame), item["accuracy"], {"v": gap, "css": "bad" if gap < -0.05 else ""}])
        css.append("worst" if gap < -0.05 else "")
    return {"rows": rows, "row_css": css}


def _purchase(
    scored: pd.DataFrame, purchase: dict[str, Any], threshold: float | None, labelled: bool, plots: dict, prefix: str = "", where: str = "test messages"
) -> dict[str, Any]:
    threshold = purchase.get("threshold", threshold)
    plot = prefix + "purchase_pr_curve.png"
    result = {**purchase, "threshold": threshold, "n": purchase.get("n", len(scored)), "curve": False, "no_positives": False, "plot": plot}
    if labelled and len(scored) and _finite(threshold):
        labels = scored["purchase_intent"].to_numpy(dtype=int)
        result["no_positives"] = not labels.any()
        if labels.any():
            plots[plot] = _plot_pr_curve(labels, scored["purchase_score"].to_numpy(dtype=float), float(threshold), where)
            result["curve"] = True
    return result


def _errors_csv(scored: pd.DataFrame, correct: np.ndarray) -> bytes:
    """Every misclassified message, PII-masked, most confident first: the file to read mistakes in."""
    wrong = scored.loc[~correct].sort_values("confidence", ascending=False, kind="stable")
    columns = [c for c in ("intent", "pred_intent", "confidence", "fallback", "purchase_intent", "purchase_score", "pred_purchase", "source")
               if c in wrong.columns]
    table = pd.concat([wrong["text"].map(_shown_message).rename("text"), wrong[columns]], axis=1)
    return csv_bytes(table.rename(columns={"intent": "true_intent", "pred_intent": "predicted_intent"}))


def _scored_set(
    scored: pd.DataFrame,
    set_metrics: dict[str, Any],
    thresholds: dict[str, float],
    plots: dict[str, bytes],
    errors: dict[str, bytes],
    prefix: str,
    errors_stem: str,
    where: str,
    top_confusions: int,
    examples_per_confusion: int,
    explain: Callable[..., list] | None,
) -> dict[str, Any]:
    """The sections about one scored set (the test split, or an evaluation set): its per-intent table,
    confusion matrix, example confusions, calibration and purchase intent. Plots are named `prefix` + the
    test split's names; the misclassified messages go to errors/<errors_stem>.csv."""
    errors_file = f"errors/{errors_stem}.csv"
    scored = scored.reset_index(drop=True)
    intent = set_metrics.get("intent", {})
    n = len(scored)
    labelled = (
        "purchase" in set_metrics and {"purchase_intent", "purchase_score"} <= set(scored.columns) and bool(scored["purchase_intent"].notna().all())
    )
    correct = (scored["intent"].astype(str) == scored["pred_intent"].astype(str)).to_numpy()
    confusion: dict[str, Any] = {"plot": prefix + "confusion_matrix.png"}
    if n:
        labels = sorted(set(scored["intent"].astype(str)) | set(scored["pred_intent"].astype(str)))
        counts = confusion_matrix(scored["intent"].astype(str), scored["pred_intent"].astype(str), labels=labels)
        plots[confusion["plot"]], confusion["annotated"] = _plot_confusion(labels, counts, where)
        errors[errors_file] = _errors_csv(scored, correct)
    return {
        "scored": scored,
        "correct": correct,
        "n": n,
        "where": where,
        "errors_file": errors_file,
        "fallback_threshold": float(thresholds.get("fallback", 0.0)),
        "per_intent": _per_intent(intent, scored) if intent.get("per_intent") else {},
        "confusion_matrix": confusion,
        "confusions": _confusions(scored, max(int(top_confusions), 0), max(int(examples_per_confusion), 0), explain),
        "calibration": _calibration(scored, correct, intent, labelled, plots, prefix) if n else {},
        "purchase": _purchase(scored, set_metrics["purchase"], thresholds.get("purchase"), labelled, plots, prefix, where)
        if "purchase" in set_metrics
        else None,
    }


def _template_view(view: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in view.items() if key not in ("scored", "correct")}


def _flagged_share(flagged: float, true: float) -> dict[str, Any]:
    """The flagged share, marked when it is far from the true share."""
    return {"v": flagged, "css": "bad" if abs(flagged - true) > 0.15 else ""}


def _group_rows(frame: pd.DataFrame, column: str) -> list[list[Any]]:
    rows = []
    for value, part in frame.groupby(frame[column].astype(str), sort=True):
        truth, flagged = part["expressed_purchase_intent"].astype(int), part["flag"].astype(bool)
        rows.append(
            [
                value,
                len(part),
                truth.mean(),
                _flagged_share(flagged.mean(), truth.mean()),
                precision_score(truth, flagged, zero_division=np.nan),
                recall_score(truth, flagged, zero_division=np.nan),
                part["purchase_score"].mean() if "purchase_score" in part else None,
            ]
        )
    return rows


def _conversation(metrics: dict[str, Any], frame: pd.DataFrame | None, thresholds: dict[str, float]) -> dict[str, Any]:
    conversation = metrics.get("conversation") or {}
    test = conversation.get("test")
    threshold = conversation.get("threshold", thresholds.get("conversation"))
    has_frame = frame is not None and len(frame) > 0
    if test is None and has_frame and _finite(threshold):
        test = purchase_metrics(frame["expressed_purchase_intent"].astype(int), frame["purchase_score"], float(threshold))
    baseline = conversation.get("test_max_message_baseline")
    rows = []
    for key, name, kind in (
        ("precision", "precision", "num"),
        ("recall", "recall", "num"),
        ("f1", "F1", "num"),
        ("average_precision", "average precision", "num"),
        ("flagged_rate", "flagged share", "pct"),
        ("positive_rate", "true share", "pct"),
        ("threshold", "threshold", "num"),
    ):
        ours, theirs = (test or {}).get(key), (baseline or {}).get(key)
        delta = float(ours) - float(theirs) if key in ("precision", "recall", "f1", "average_precision") and _finite(ours) and _finite(theirs) else None
        css = "" if delta is None or abs(delta) <= 5e-4 else "good" if delta > 0 else "bad"
        rows.append([name, fmt(ours, kind), fmt(theirs, kind), {"v": delta, "css": css}])
    groups = []
    if has_frame and {"expressed_purchase_intent", "flag"} <= set(frame.columns):
        groups = [(column, _group_rows(frame, column)) for column in ("scenario", "category", "stage") if column in frame.columns]
    return {"rows": rows if test is not None else None, "baseline": baseline is not None, "sizes": conversation.get("sizes"), "groups": groups}


def _flagging(flagging: dict[str, Any]) -> dict[str, Any]:
    counts = " / ".join(fmt(flagging.get(k, 0), "int") for k in ("conversations", "lost_shoppers", "lost_with_intent", "flagged"))
    by_category = [
        [name, m["lost_shoppers"], m["true_share_of_lost"], _flagged_share(m["flagged_share_of_lost"], m["true_share_of_lost"]), m["precision"], m["recall"]]
        for name, m in (flagging.get("by_category") or {}).items()
    ]
    reasons = [[REASON_NAMES.get(k, k), v] for k, v in (flagging.get("reasons") or {}).items()]
    return {**flagging, "counts": counts, "reasons": reasons, "by_category": by_category}


def _details(extra: dict[str, str]) -> list[dict[str, Any]]:
    """Each extra section's text: a fenced block or JSON is shown as code, anything else as text."""
    items = []
    for name, text in extra.items():
        text = str(text).strip()
        fenced = re.fullmatch(r"```[^\n]*\n(.*?)\n?```", text, flags=re.DOTALL)
        items.append({"name": str(name), "text": fenced.group(1) if fenced else text, "code": bool(fenced) or text.startswith(("{", "["))})
    return items


# --------------------------------------------------------------------------------------------------
# Entry point.


def write_report(
    out_dir: str | Path,
    *,
    title: str,
    metrics: dict,
    scored: pd.DataFrame,
    thresholds: dict[str, float],
    headline: dict[str, float],
    eval_scored: dict[str, pd.DataFrame] | None = None,
    champion_headline: dict[str, float] | None = None,
    champion_set: str | None = "test",
    conversation_test: pd.DataFrame | None = None,
    extra_sections: dict[str, str] | None = None,
    top_confusions: int = 10,
    examples_per_confusion: int = 3,
    scored_name: str = "held-out test messages",
    scored_is_real: bool = False,
    explain: Callable[..., list] | None = None,
    promises: dict[str, float] | None = None,
    test_thresholds: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Write report.html, report.md, plots/*.png and metrics.json into `out_dir`.

    `scored_name` says what `scored` is (the test split, or an evaluation set by its name); with
    `scored_is_real` (an evaluation of a named set) there is no warning about a missing real-chat set and
    no champion section (the comparison with the champion belongs to training runs).

    `metrics`: {"test": {"intent": ..., "purchase": ...?}, "val": ...?, "conversation": ...?, "eval:<name>": ...};
    `scored`: the scored test split (text, normalized, intent, pred_intent, confidence, fallback, purchase_score,
    pred_purchase, and purchase_intent when labelled). Buyer messages are PII-masked before they are shown;
    `title` and `extra_sections` are shown as given (they must not contain buyer text).
    `explain(texts, predicted_intents)`: explanations of the example mistakes (e.g.
    `functools.partial(pipeline.explain.Explainer(bundle).explain, top_k=3)`, whose n-grams are PII-masked),
    shown beside them; None: no explanations.

    `test_thresholds`: the thresholds `scored` was scored with when they are not `thresholds` (a model refit on
    train + test after the test split was measured: split.final_fit); None: `thresholds`.

    `promises`: {headline metric: target} the thresholds were chosen to keep (`threshold_promises`): shown
    next to what every set achieves.

    `eval_scored`: {"eval:<name>": scored frame like `scored`}: each of these evaluation sets gets the test
    split's per-intent table, confusion matrix, example confusions, calibration and purchase sections under
    its own name. Every misclassified message of the test split and of each of these sets, PII-masked, is
    written to errors/<set>.csv (UTF-8 with BOM, for Excel).

    Returns {"html": Path, "markdown": Path, "plots": [Path, ...], "errors": [Path, ...], "metrics": Path}.
    """
    out_dir = Path(out_dir)
    test = metrics.get("test", {})
    eval_names = sorted(k for k in metrics if str(k).startswith("eval:"))
    plots: dict[str, bytes] = {}
    errors: dict[str, bytes] = {}
    # with `scored_is_real` (`buyer-intent evaluate`) the scored messages are a named set, not a test split
    stem = slug(scored_name) if scored_is_real else "test"
    scored_with = test_thresholds or thresholds
    view = _scored_set(scored, test, scored_with, plots, errors, "", stem, scored_name, top_confusions, examples_per_confusion, explain)
    scored, n = view["scored"], view["n"]
    sections = {
        "headline": {
            "cards": [(_metric_label(key)[0], value, _metric_label(key)[1]) for key, value in headline.items()],
            "thresholds": [[name, value, THRESHOLD_MEANINGS.get(name, "")] for name, value in thresholds.items()],
            "warn_no_eval_set": not (eval_names or scored_is_real),
        },
        "champion": None if scored_is_real else _champion_section(metrics, headline, champion_headline, champion_set, n, eval_scored),
        # the test split per source (a shop's labelled queue next to the bundled corpus), then every evaluation set
        "eval_sets": _eval_sets(metrics, sorted(k for k in metrics if str(k).startswith("test/")) + eval_names, promises),
        "per_intent": view["per_intent"],
        "confusion_matrix": view["confusion_matrix"],
        "confusions": view["confusions"],
        "confidence": _confidence(scored, view["correct"], test.get("intent", {}), float(scored_with.get("fallback", 0.0)), plots) if n else {},
        "calibration": view["calibration"],
        "slices": _slices(scored) if n else {},
        "purchase": view["purchase"],
    }
    titles = dict(SECTION_TITLES)
    for name in eval_names:  # every evaluation set scored here gets the test split's tables under its own name
        if name in (eval_scored or {}):
            label = name.removeprefix("eval:")
            titles[name] = f"Evaluation set: {label}"
            sections[name] = _template_view(_scored_set(
                eval_scored[name], metrics[name], thresholds, plots, errors, f"eval-{slug(label)}-", f"eval-{slug(label)}", f"messages of {label}",
                top_confusions, examples_per_confusion, explain,
            ))
    sections.update({
        "conversation": _conversation(metrics, conversation_test, thresholds)
        if "conversation" in metrics or conversation_test is not None
        else None,
        "flagging": _flagging(metrics["flagging"]) if metrics.get("flagging") else None,
        "details": _details(extra_sections) if extra_sections else None,
    })
    meta = (
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} · {n:,} {scored_name} · "
        f"{len(test.get('intent', {}).get('per_intent', {}))} intents"
        + (" · evaluation sets: " + ", ".join(name.removeprefix("eval:") for name in eval_names) if eval_names else "")
    )
    context = {
        "titles": titles,
        "test_view": _template_view(view),
        "eval_views": [key for key in sections if key.startswith("eval:")],
        "title": title,
        "meta": meta,
        "n": n,
        "scored_name": scored_name,
        "test_refit": test_thresholds is not None,
        "sections": {key: value for key, value in sections.items() if value is not None},
        "images": {name: base64.b64encode(png).decode("ascii") for name, png in plots.items()},
    }

    plot_paths = [write_bytes_atomic(png, out_dir / "plots" / name) for name, png in plots.items()]
    error_paths = [write_bytes_atomic(table, out_dir / name) for name, table in errors.items()]
    # files of an earlier report in the same directory that this one does not have
    for stale in [*(out_dir / "plots").glob("*.png"), *(out_dir / "errors").glob("*.csv")]:
        if stale not in plot_paths and stale not in error_paths:
            stale.unlink(missing_ok=True)
    metrics_json = json.dumps(_json_ready(metrics), ensure_ascii=False, indent=2, sort_keys=True, allow_nan=False) + "\n"
    return {
        "html": write_bytes_atomic(_render(context, html=True), out_dir / "report.html"),
        "markdown": write_bytes_atomic(_render(context, html=False), out_dir / "report.md"),
        "plots": plot_paths,
        "errors": error_paths,
        "metrics": write_bytes_atomic(metrics_json, out_dir / "metrics.json"),
    }
