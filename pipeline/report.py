"""The offline evaluation report: one self-contained HTML page and the same content as Markdown.

Analysts read it without the code, so every section says what it shows and how to read it. Written by
`write_report` into a directory:

    report.html    self-contained (inline CSS, plots embedded as base64 PNG, no external assets)
    report.md      the same content; plots referenced as files in plots/
    plots/*.png    the plots
    metrics.json   the metrics dict (NaN written as null)

Every buyer message shown goes through `mask_pii` first and is HTML-escaped; plots never contain
message text. Files are written atomically (temporary file beside the target, then rename).

matplotlib is imported only when a report is written, and figures are drawn on `Figure` objects with
an explicit Agg canvas: no pyplot state, no GUI backend, nothing changed for the calling process.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.evaluate import CALIBRATION_BINS, calibration_bins, expected_calibration_error, headline_metrics, purchase_metrics, slice_metrics
from pipeline.tables import write_bytes_atomic
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

PLOT_FILES = ("confusion_matrix.png", "confidence_histogram.png", "reliability.png", "purchase_pr_curve.png")
_CALIBRATION_BINS = CALIBRATION_BINS  # the ECE's bins, so the plot shows what the figure measures
_MAX_MESSAGE_CHARS = 200
_DPI = 110


# --------------------------------------------------------------------------------------------------
# Document model: sections of blocks, rendered to HTML and to Markdown from the same content.


@dataclass
class Cell:
    text: str
    css: str = ""  # e.g. "good", "bad", "message"


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell | str]]
    numeric: set[int] = field(default_factory=set)  # right-aligned column indexes
    row_css: list[str] | None = None


@dataclass
class Para:
    text: str


@dataclass
class Note:
    text: str
    kind: str = "info"  # info | warn


@dataclass
class Image:
    filename: str
    alt: str
    png: bytes


@dataclass
class Cards:
    items: list[tuple[str, str, str]]  # label, value, description


@dataclass
class Subheading:
    text: str


@dataclass
class Markdownish:
    text: str


@dataclass
class Section:
    key: str
    title: str
    how_to_read: str
    blocks: list[Any] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return _slug(self.title)


def _slug(text: str) -> str:
    """GitHub-style heading anchor, so the Markdown table of contents links work when rendered."""
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


# --------------------------------------------------------------------------------------------------
# Formatting helpers.


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _num(value: Any, digits: int = 3) -> str:
    return f"{float(value):.{digits}f}" if _finite(value) else "—"


def _pct(value: Any, digits: int = 1) -> str:
    return f"{float(value) * 100:.{digits}f}%" if _finite(value) else "—"


def _signed(value: Any, digits: int = 3) -> str:
    return f"{float(value):+.{digits}f}" if _finite(value) else "—"


def _metric_label(key: str) -> str:
    return METRIC_LABELS.get(key, (key.replace("_", " "), ""))[0]


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
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_json_ready(v) for v in value.tolist()]
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
    if isinstance(value, Path):
        return str(value)
    return str(value)


# --------------------------------------------------------------------------------------------------
# Plots. Figures are fixed-size `Figure` objects on an Agg canvas; every one is closed after saving.


class _Plotter:
    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self._figure_type = Figure
        self._canvas_type = FigureCanvasAgg
        self._open: list[Any] = []

    def figure(self, width: float, height: float):
        fig = self._figure_type(figsize=(width, height), dpi=_DPI, layout="constrained")
        self._canvas_type(fig)
        self._open.append(fig)
        return fig

    def png(self, fig) -> bytes:
        buffer = io.BytesIO()
        try:
            fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
        finally:
            self.close(fig)
        return buffer.getvalue()

    def close(self, fig) -> None:
        fig.clear()
        if fig in self._open:
            self._open.remove(fig)

    def close_all(self) -> None:
        for fig in list(self._open):
            self.close(fig)


def _plot_confusion(plotter: _Plotter, labels: list[str], counts: np.ndarray) -> tuple[bytes, bool]:
    n = len(labels)
    support = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(support[:, None] > 0, counts / np.maximum(support[:, None], 1), 0.0)
    fig = plotter.figure(9.0, 7.8)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    tick_size = 9 if n <= 15 else 7 if n <= 30 else 5
    ax.set_xticks(range(n), labels, rotation=55, ha="right", rotation_mode="anchor", fontsize=tick_size)
    ax.set_yticks(range(n), [f"{label} ({int(s)})" for label, s in zip(labels, support, strict=True)], fontsize=tick_size)
    ax.set_xlabel("predicted intent")
    ax.set_ylabel("true intent (test messages)")
    ax.set_title("Row-normalised confusion matrix (cell text: message count)", fontsize=11)
    annotated = n <= 25
    if annotated:
        size = 9 if n <= 12 else 7 if n <= 18 else 6
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    colour = "white" if share[i, j] > 0.55 else "#1f2937"
                    ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=size, color=colour)
    ax.set_xticks(np.arange(-0.5, n, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.6)
    ax.tick_params(which="minor", length=0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true intent's messages")
    return plotter.png(fig), annotated


def _plot_confidence(plotter: _Plotter, confidence: np.ndarray, correct: np.ndarray, threshold: float) -> bytes:
    bins = np.linspace(0.0, 1.0, 21)
    fig = plotter.figure(8.5, 4.2)
    ax = fig.add_subplot()
    ax.hist(
        [confidence[correct], confidence[~correct]],
        bins=bins,
        stacked=True,
        color=["#4c9a6a", "#d1495b"],
        label=[f"correct ({int(correct.sum())})", f"wrong ({int((~correct).sum())})"],
        edgecolor="white",
        linewidth=0.5,
    )
    ax.axvline(threshold, color="#1f2937", linestyle="--", linewidth=1.5)
    handed = float((confidence < threshold).mean()) if len(confidence) else 0.0
    ax.annotate(
        f"fallback threshold {threshold:.3f}\n← handed to a human: {handed:.1%}",
        xy=(threshold, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(-6, -6),
        textcoords="offset points",
        ha="right",
        va="top",
        fontsize=9,
        bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "#9ca3af", "alpha": 0.9},
    )
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("confidence of the predicted intent")
    ax.set_ylabel("test messages")
    ax.set_title("Confidence of correct and wrong predictions", fontsize=11)
    ax.legend(loc="upper left", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return plotter.png(fig)


def _reliability_panel(fig, grid_column, outcome: np.ndarray, score: np.ndarray, title: str, ylabel: str, xlabel: str) -> None:
    top = fig.add_subplot(grid_column[0])
    bottom = fig.add_subplot(grid_column[1], sharex=top)
    table = calibration_bins(outcome, score, _CALIBRATION_BINS)
    edges, counts, observed, mean_score = table.edges, table.counts, table.observed, table.mean_score
    width = edges[1] - edges[0]
    centres = edges[:-1] + width / 2
    filled = counts > 0
    top.plot([0, 1], [0, 1], color="#9ca3af", linestyle="--", linewidth=1, label="perfect calibration")
    top.bar(centres[filled], observed[filled], width=width * 0.9, color="#3b6ea8", alpha=0.85, label="observed")
    top.scatter(mean_score[filled], observed[filled], color="#1f2937", s=12, zorder=3, label="mean score in bin")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.02)
    top.set_ylabel(ylabel)
    top.set_title(title, fontsize=11)
    top.legend(loc="upper left", frameon=False, fontsize=8)
    top.spines[["top", "right"]].set_visible(False)
    bottom.bar(centres, counts, width=width * 0.9, color="#9ca3af")
    bottom.set_ylabel("messages", fontsize=8)
    bottom.set_xlabel(xlabel)
    bottom.spines[["top", "right"]].set_visible(False)
    top.tick_params(labelbottom=False)


def _plot_reliability(
    plotter: _Plotter, correct: np.ndarray, confidence: np.ndarray, ece: float, purchase: tuple[np.ndarray, np.ndarray] | None
) -> bytes:
    columns = 2 if purchase is not None else 1
    fig = plotter.figure(5.2 * columns, 5.0)
    grid = fig.add_gridspec(2, columns, height_ratios=[3, 1])
    _reliability_panel(
        fig,
        (grid[0, 0], grid[1, 0]),
        correct,
        confidence,
        f"Intent confidence (ECE {_num(ece)})",
        "accuracy in bin",
        "confidence of the predicted intent",
    )
    if purchase is not None:

        labels, scores = purchase
        purchase_ece = expected_calibration_error(labels, scores, bins=_CALIBRATION_BINS)
        _reliability_panel(
            fig,
            (grid[0, 1], grid[1, 1]),
            labels,
            scores,
            f"Purchase score (ECE {_num(purchase_ece)})",
            "share with purchase intent",
            "purchase score",
        )
    return plotter.png(fig)


def _plot_pr_curve(plotter: _Plotter, labels: np.ndarray, scores: np.ndarray, threshold: float, ap: float) -> bytes:
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(labels, scores)
    flagged = scores >= threshold
    at_precision = float(labels[flagged].mean()) if flagged.any() else float("nan")
    at_recall = float(flagged[labels == 1].mean()) if (labels == 1).any() else float("nan")
    fig = plotter.figure(7.0, 4.6)
    ax = fig.add_subplot()
    ax.step(recall, precision, where="post", color="#3b6ea8", linewidth=2, label=f"model (AP {_num(ap)})")
    base = float(labels.mean()) if len(labels) else 0.0
    ax.axhline(base, color="#9ca3af", linestyle=":", linewidth=1.2, label=f"flag everything ({base:.1%} positive)")
    if _finite(at_precision) and _finite(at_recall):
        ax.scatter([at_recall], [at_precision], s=80, color="#d1495b", zorder=4, label="chosen threshold")
        ax.annotate(
            f"threshold {threshold:.3f}\nprecision {at_precision:.3f}, recall {at_recall:.3f}",
            xy=(at_recall, at_precision),
            xytext=(12, -30) if at_recall < 0.6 else (-12, -30),
            textcoords="offset points",
            ha="left" if at_recall < 0.6 else "right",
            fontsize=9,
            arrowprops={"arrowstyle": "-", "color": "#6b7280"},
            bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "#9ca3af"},
        )
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.03)
    ax.set_xlabel("recall (share of purchase-intent messages flagged)")
    ax.set_ylabel("precision (share of flagged that are purchase intent)")
    ax.set_title("Purchase intent: precision-recall on test messages", fontsize=11)
    ax.legend(loc="best", fontsize=9, framealpha=0.9, edgecolor="#e5e7eb")
    ax.spines[["top", "right"]].set_visible(False)
    return plotter.png(fig)


# --------------------------------------------------------------------------------------------------
# Sections.


def _split_headline(metrics: dict[str, Any], split: str) -> dict[str, float]:
    """Message-level headline numbers of one split (the conversation numbers only exist for test)."""

    return {k: v for k, v in headline_metrics(metrics, split).items() if not k.startswith("conversation_")}


def _headline_section(
    headline: dict[str, float], scored: pd.DataFrame, thresholds: dict[str, float], eval_names: list[str], scored_name: str
) -> Section:
    section = Section(
        "headline",
        SECTION_TITLES["headline"],
        f"The numbers compared between runs, measured once on the {len(scored):,} {scored_name}. "
        "Higher is better except for the calibration error; the fallback rate is a trade-off against accepted accuracy.",
    )
    section.blocks.append(
        Cards([(_metric_label(k), _num(v), METRIC_LABELS.get(k, ("", ""))[1]) for k, v in headline.items()])
    )
    rows = []
    descriptions = {
        "fallback": "confidence below which a message is handed to a human",
        "purchase": "purchase score at or above which a message is flagged",
        "conversation": "conversation score at or above which a conversation is flagged",
    }
    for name, value in thresholds.items():
        rows.append([name, _num(value), descriptions.get(name, "")])
    if rows:
        section.blocks.append(Subheading("Decision thresholds (chosen on the validation split)"))
        section.blocks.append(Table(["threshold", "value", "meaning"], rows, numeric={1}))
    if not eval_names:
        section.blocks.append(
            Note(
                "No evaluation set of real chats (eval:<name>) was scored for this report: if these test messages come "
                "from the bundled corpus, the numbers above flatter the model. " + EVAL_SET_NOTE,
                kind="warn",
            )
        )
    return section


def _champion_section(headline: dict[str, float], champion: dict[str, float] | None, n_test: int) -> Section:
    section = Section(
        "champion",
        SECTION_TITLES["champion"],
        "Every headline metric of this model next to the current champion's on the same test split. "
        "▲/▼ is the direction of the change; the verdict says whether that direction is better or worse for the metric.",
    )
    if champion is None:
        section.blocks.append(Note("No champion yet: there is no registered model to compare with.", kind="info"))
        return section
    rows = []
    keys = list(headline) + [k for k in champion if k not in headline]
    for key in keys:
        ours, theirs = headline.get(key), champion.get(key)
        if _finite(ours) and _finite(theirs):
            delta = float(ours) - float(theirs)
            if abs(delta) < 5e-5:
                arrow, verdict, css, delta = "=", "same", "", 0.0
            else:
                arrow = "▲" if delta > 0 else "▼"
                if key in TRADE_OFF:
                    verdict, css = "trade-off", ""
                else:
                    better = (delta < 0) if key in LOWER_IS_BETTER else (delta > 0)
                    verdict, css = ("better", "good") if better else ("worse", "bad")
            delta_cell = Cell(f"= {0.0:.4f}" if arrow == "=" else f"{arrow} {_signed(delta, 4)}", css)
            verdict_cell = Cell(verdict, css)
        else:
            delta_cell, verdict_cell = Cell("—"), Cell("not comparable")
        rows.append([_metric_label(key), _num(ours, 4), _num(theirs, 4), delta_cell, verdict_cell])
    section.blocks.append(Table(["metric", "this run", "champion", "delta", "verdict"], rows, numeric={1, 2, 3}))
    accuracy = headline.get("intent_accuracy")
    if _finite(accuracy) and n_test:
        error = math.sqrt(max(float(accuracy) * (1 - float(accuracy)), 1e-12) / n_test)
        section.blocks.append(
            Para(
                f"For scale: with {n_test:,} test messages, one standard error of the accuracy is about "
                f"{error:.4f}; differences smaller than about twice that are within noise."
            )
        )
    return section


def _eval_sets_section(metrics: dict[str, Any], eval_names: list[str]) -> Section:
    section = Section(
        "eval_sets",
        SECTION_TITLES["eval_sets"],
        "The same headline numbers on the test split and on each evaluation set, side by side. "
        "A large drop from test to a real-chat set is the gap users will see.",
    )
    section.blocks.append(Note(EVAL_SET_NOTE, kind="warn"))
    splits = ["test", *eval_names]
    per_split = {split: _split_headline(metrics, split) for split in splits}
    keys: list[str] = []
    for split in splits:
        keys += [k for k in per_split[split] if k not in keys]
    columns = ["metric", "test", *[name.removeprefix("eval:") for name in eval_names]]
    rows = [["messages", *[str(metrics[s].get("intent", {}).get("n", "—")) for s in splits]]]
    for key in keys:
        rows.append([_metric_label(key), *[_num(per_split[s].get(key)) for s in splits]])
    section.blocks.append(Table(columns, rows, numeric=set(range(1, len(columns)))))
    if not eval_names:
        section.blocks.append(Para("No evaluation sets (eval:<name>) were scored; only the test split is shown."))
    return section


def _per_intent_section(intent_metrics: dict[str, Any], scored: pd.DataFrame) -> Section:
    section = Section(
        "per_intent",
        SECTION_TITLES["per_intent"],
        "Precision: of the messages predicted as the intent, the share that are. Recall: of the intent's messages, "
        "the share found. Sorted worst F1 first; highlighted rows are the weakest intents (below the macro F1).",
    )
    per_intent = intent_metrics.get("per_intent", {})
    if not per_intent:
        section.blocks.append(Para("No per-intent metrics."))
        return section
    predicted_counts = scored["pred_intent"].astype(str).value_counts() if len(scored) else pd.Series(dtype=int)
    errors = scored[scored["intent"].astype(str) != scored["pred_intent"].astype(str)] if len(scored) else scored
    confused_with: dict[str, str] = {}
    if len(errors):
        pairs = errors.groupby([errors["intent"].astype(str), errors["pred_intent"].astype(str)]).size()
        for (true, pred), count in pairs.sort_values(ascending=False).items():
            confused_with.setdefault(true, f"{pred} ({int(count)})")
    macro = intent_metrics.get("macro_f1", float("nan"))
    ordered = sorted(
        per_intent.items(), key=lambda item: (item[1]["support"] == 0, item[1]["f1"], -item[1]["support"], item[0])
    )
    ranked = [label for label, values in ordered if values["support"] > 0]
    worst = {label for label in ranked[:3] if _finite(macro) and per_intent[label]["f1"] < float(macro)}
    rows, css = [], []
    for label, values in ordered:
        flag = "⚠ weakest" if label in worst else ("not in test" if values["support"] == 0 else "")
        rows.append(
            [
                label,
                _num(values["precision"]),
                _num(values["recall"]),
                _num(values["f1"]),
                str(values["support"]),
                str(int(predicted_counts.get(label, 0))),
                confused_with.get(label, "—"),
                Cell(flag, "bad" if label in worst else "muted"),
            ]
        )
        css.append("worst" if label in worst else "")
    section.blocks.append(
        Table(
            ["intent", "precision", "recall", "F1", "support", "predicted", "most often mistaken for", "note"],
            rows,
            numeric={1, 2, 3, 4, 5},
            row_css=css,
        )
    )
    section.blocks.append(
        Para(
            f"Macro F1 {_num(macro)} over {sum(1 for v in per_intent.values() if v['support'] > 0)} intents present "
            f"in test; accuracy {_num(intent_metrics.get('accuracy'))}. \"support\": true messages of the intent; "
            "\"predicted\": messages the model gave that intent."
        )
    )
    return section


def _confusion_matrix_section(plotter: _Plotter, scored: pd.DataFrame, plots: dict[str, bytes]) -> Section:
    section = Section(
        "confusion_matrix",
        SECTION_TITLES["confusion_matrix"],
        "Each row is a true intent (message count in brackets), each column the predicted one; colour is the share "
        "of the row, so a perfect model is a dark diagonal. Off-diagonal dark cells are systematic confusions.",
    )
    if not len(scored):
        section.blocks.append(Para("No test messages."))
        return section
    true = scored["intent"].astype(str).to_numpy()
    pred = scored["pred_intent"].astype(str).to_numpy()
    labels = sorted(set(true) | set(pred))
    index = {label: i for i, label in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels)), dtype=int)
    np.add.at(counts, ([index[t] for t in true], [index[p] for p in pred]), 1)
    png, annotated = _plot_confusion(plotter, labels, counts)
    plots["confusion_matrix.png"] = png
    section.blocks.append(Image("confusion_matrix.png", "Row-normalised confusion matrix", png))
    if not annotated:
        section.blocks.append(Para("Counts are not written in the cells (too many intents to read); see the tables."))
    return section


def _explained(explanation: dict[str, Any] | None) -> str:
    """`票 +5.07 · 发票 +2.75`: the n-grams that pushed the predicted intent, with their contributions."""
    ngrams = (explanation or {}).get("intent", {}).get("ngrams", [])
    return " · ".join(f"{item['ngram']} {item['contribution']:+.2f}" for item in ngrams) or "—"


def _confusions_section(
    scored: pd.DataFrame, fallback_threshold: float | None, top: int, per_pair: int, explain: Callable[..., list] | None = None
) -> Section:
    section = Section(
        "confusions",
        SECTION_TITLES["confusions"],
        "The most frequent mistakes (true → predicted) with example test messages, most confident mistakes first. "
        "\"handed over\" counts the mistakes the fallback caught. Messages are PII-masked."
        + (
            " \"why\": the n-grams that pushed the predicted intent most, with their contributions to its logit "
            "(TF-IDF value × weight, before calibration; n-grams of the normalised text, PII-masked)."
            if explain is not None and per_pair > 0
            else ""
        ),
    )
    if not len(scored):
        section.blocks.append(Para("No test messages."))
        return section
    true = scored["intent"].astype(str)
    pred = scored["pred_intent"].astype(str)
    wrong = scored[true != pred].assign(pair_true=true[true != pred], pair_pred=pred[true != pred])
    if wrong.empty:
        section.blocks.append(Para("No mistakes on the test split."))
        return section
    support = true.value_counts()
    pairs = wrong.groupby(["pair_true", "pair_pred"]).size().reset_index(name="n")
    pairs = pairs.sort_values(["n", "pair_true", "pair_pred"], ascending=[False, True, True]).head(top)
    fallback = wrong["fallback"].astype(bool) if "fallback" in wrong else pd.Series(False, index=wrong.index)
    columns = ["#", "true → predicted", "count", "share of true intent", "handed over"]
    if per_pair > 0:
        columns += ["example message (PII masked)", "confidence"]
        if explain is not None:
            columns.append("why: top n-grams for the predicted intent")
    rows, css = [], []
    examples: list[tuple[int, str, str]] = []  # (row, raw text, predicted intent) of the example rows
    for rank, pair in enumerate(pairs.itertuples(index=False), start=1):
        members = wrong[(wrong["pair_true"] == pair.pair_true) & (wrong["pair_pred"] == pair.pair_pred)]
        head = [
            str(rank),
            f"{pair.pair_true} → {pair.pair_pred}",
            str(int(pair.n)),
            _pct(pair.n / support.get(pair.pair_true, 1)),
            str(int(fallback.loc[members.index].sum())),
        ]
        group_css = "group-a" if rank % 2 else "group-b"
        if per_pair <= 0:
            rows.append(head)
            css.append(group_css)
            continue
        shown: list[tuple[str, float, Any]] = []
        seen: set[str] = set()
        for row in members.sort_values("confidence", ascending=False, kind="stable").itertuples(index=False):
            message = _shown_message(row.text)
            if message in seen:
                continue
            seen.add(message)
            shown.append((message, row.confidence, row.text))
            if len(shown) >= per_pair:
                break
        for i, (message, confidence, text) in enumerate(shown):
            lead = head if i == 0 else ["", "", "", "", ""]
            examples.append((len(rows), "" if not isinstance(text, str) else text, pair.pair_pred))
            rows.append([*lead, Cell(message, "message"), _num(confidence)])
            css.append(group_css)
    if explain is not None and per_pair > 0:
        explanations = explain([text for _, text, _ in examples], [label for _, _, label in examples]) if examples else []
        for (index, _, _), explanation in zip(examples, explanations, strict=True):
            rows[index].append(Cell(_explained(explanation), "message"))
    section.blocks.append(Table(columns, rows, numeric={0, 2, 3, 4, 6}, row_css=css))
    covered = int(pairs["n"].sum())
    section.blocks.append(
        Para(
            f"{len(wrong):,} mistakes in {len(scored):,} test messages; the {len(pairs)} pairs above cover "
            f"{covered:,} of them ({covered / len(wrong):.0%})."
            + (f" Fallback threshold: {fallback_threshold:.3f}." if _finite(fallback_threshold) else "")
        )
    )
    return section


def _confidence_section(plotter: _Plotter, scored: pd.DataFrame, intent_metrics: dict[str, Any], threshold: float, plots: dict[str, bytes]) -> Section:
    section = Section(
        "confidence",
        SECTION_TITLES["confidence"],
        "How sure the model is, split into correct (green) and wrong (red) predictions. Messages left of the dashed "
        "line are handed to a human; a good model keeps most red bars left of it and most green bars right of it.",
    )
    if not len(scored):
        section.blocks.append(Para("No test messages."))
        return section
    confidence = scored["confidence"].to_numpy(dtype=float)
    correct = (scored["intent"].astype(str) == scored["pred_intent"].astype(str)).to_numpy()
    png = _plot_confidence(plotter, confidence, correct, threshold)
    plots["confidence_histogram.png"] = png
    section.blocks.append(Image("confidence_histogram.png", "Confidence histogram with the fallback threshold", png))
    accepted = confidence >= threshold
    wrong = ~correct
    caught = float((~accepted[wrong]).mean()) if wrong.any() else float("nan")
    section.blocks.append(
        Table(
            ["fallback threshold", "handed over", "accuracy of accepted", "mistakes caught by fallback", "correct answers handed over"],
            [
                [
                    _num(threshold),
                    _pct(intent_metrics.get("fallback_rate", float((~accepted).mean()))),
                    _num(intent_metrics.get("accepted_accuracy")),
                    _pct(caught),
                    _pct(float((~accepted[correct]).mean()) if correct.any() else float("nan")),
                ]
            ],
            numeric={0, 1, 2, 3, 4},
        )
    )
    return section


def _calibration_section(plotter: _Plotter, scored: pd.DataFrame, intent_metrics: dict[str, Any], has_purchase_labels: bool, plots: dict[str, bytes]) -> Section:
    section = Section(
        "calibration",
        SECTION_TITLES["calibration"],
        "Messages are grouped by confidence; bars show how often the model was actually right"
        + (" (right panel: grouped by purchase score, how often the message was purchase intent)" if has_purchase_labels else "")
        + ". Bars on the dashed diagonal mean a confidence of 0.8 is right 80% of the time. "
        "ECE is the average gap, weighted by the message counts shown underneath.",
    )
    if not len(scored):
        section.blocks.append(Para("No test messages."))
        return section

    confidence = scored["confidence"].to_numpy(dtype=float)
    correct = (scored["intent"].astype(str) == scored["pred_intent"].astype(str)).to_numpy()
    ece = intent_metrics.get("ece")
    if not _finite(ece):
        ece = expected_calibration_error(correct, confidence, bins=_CALIBRATION_BINS)
    purchase = None
    if has_purchase_labels:
        purchase = (scored["purchase_intent"].to_numpy(dtype=float), scored["purchase_score"].to_numpy(dtype=float))
    png = _plot_reliability(plotter, correct, confidence, float(ece), purchase)
    plots["reliability.png"] = png
    section.blocks.append(Image("reliability.png", "Reliability diagram", png))
    section.blocks.append(Para(f"Intent expected calibration error (ECE, {_CALIBRATION_BINS} bins): {_num(ece, 4)}."))
    return section


def _slices_section(scored: pd.DataFrame) -> Section:
    section = Section(
        "slices",
        SECTION_TITLES["slices"],
        "Accuracy on parts of the test split: message length in characters, whether the message contains a "
        "placeholder or number (order number, phone, price ...), whether it contains Latin letters. "
        "Highlighted slices are more than 5 points below the overall accuracy; small slices are noisy.",
    )
    if not len(scored):
        section.blocks.append(Para("No test messages."))
        return section

    frame = scored
    if "normalized" not in frame.columns:
        frame = frame.assign(normalized=frame["text"].map(normalize))
    frame = frame.assign(intent=frame["intent"].astype(str), pred_intent=frame["pred_intent"].astype(str))
    overall = float((frame["intent"] == frame["pred_intent"]).mean())
    rows: list[list[Cell | str]] = [["all test messages", f"{len(frame):,}", _pct(1.0), _num(overall), "—"]]
    css = ["total"]
    for item in slice_metrics(frame):
        gap = item["accuracy"] - overall
        low = gap < -0.05
        rows.append(
            [
                item["slice"],
                f"{item['n']:,}",
                _pct(item["n"] / len(frame)),
                _num(item["accuracy"]),
                Cell(_signed(gap), "bad" if low else ""),
            ]
        )
        css.append("worst" if low else "")
    section.blocks.append(Table(["slice", "messages", "share", "accuracy", "vs overall"], rows, numeric={1, 2, 3, 4}, row_css=css))
    return section


def _purchase_section(plotter: _Plotter, scored: pd.DataFrame, purchase: dict[str, Any], threshold: float | None, has_labels: bool, plots: dict[str, bytes]) -> Section:
    section = Section(
        "purchase",
        SECTION_TITLES["purchase"],
        "Message-level purchase intent. The curve shows every precision/recall trade-off the score allows; the red dot "
        "is the threshold chosen on validation. Precision: flagged messages that really show purchase intent; "
        "recall: purchase-intent messages that get flagged.",
    )
    threshold = purchase.get("threshold", threshold)
    section.blocks.append(
        Table(
            ["threshold", "precision", "recall", "F1", "average precision", "flagged share", "true share", "messages"],
            [
                [
                    _num(threshold),
                    _num(purchase.get("precision")),
                    _num(purchase.get("recall")),
                    _num(purchase.get("f1")),
                    _num(purchase.get("average_precision")),
                    _pct(purchase.get("flagged_rate")),
                    _pct(purchase.get("positive_rate")),
                    str(purchase.get("n", len(scored))),
                ]
            ],
            numeric=set(range(8)),
        )
    )
    if has_labels and len(scored) and _finite(threshold):
        labels = scored["purchase_intent"].to_numpy(dtype=int)
        if labels.any():
            scores = scored["purchase_score"].to_numpy(dtype=float)
            png = _plot_pr_curve(plotter, labels, scores, float(threshold), purchase.get("average_precision", float("nan")))
            plots["purchase_pr_curve.png"] = png
            section.blocks.append(Image("purchase_pr_curve.png", "Purchase-intent precision-recall curve", png))
        else:
            section.blocks.append(Para("No purchase-intent messages in the test split: no curve to draw."))
    return section


def _group_table(frame: pd.DataFrame, column: str) -> Table:
    rows = []
    label = frame["expressed_purchase_intent"].astype(int)
    flag = frame["flag"].astype(bool)
    for value, part in frame.groupby(frame[column].astype(str), sort=True):
        y, f = label.loc[part.index], flag.loc[part.index]
        tp = int((y.astype(bool) & f).sum())
        precision = tp / f.sum() if f.any() else float("nan")
        recall = tp / y.sum() if y.any() else float("nan")
        rows.append(
            [
                value,
                f"{len(part):,}",
                _pct(y.mean()),
                Cell(_pct(f.mean()), "bad" if abs(f.mean() - y.mean()) > 0.15 else ""),
                _num(precision),
                _num(recall),
                _num(part["purchase_score"].mean()) if "purchase_score" in part else "—",
            ]
        )
    return Table(
        [column, "conversations", "true share", "flagged share", "precision", "recall", "mean score"],
        rows,
        numeric={1, 2, 3, 4, 5, 6},
    )


def _conversation_section(metrics: dict[str, Any], conversation_test: pd.DataFrame | None, thresholds: dict[str, float]) -> Section:
    section = Section(
        "conversation",
        SECTION_TITLES["conversation"],
        "Whether a whole conversation shows purchase intent, scored by the conversation model, next to the simple "
        "baseline \"flag when the best single message scores high\" (thresholded on the same validation data). "
        "The model earns its place only if it beats the baseline; flagged share should be near the true share.",
    )
    conversation = metrics.get("conversation") or {}
    test = conversation.get("test")
    threshold = conversation.get("threshold", thresholds.get("conversation"))
    if test is None and conversation_test is not None and len(conversation_test) and _finite(threshold):

        test = purchase_metrics(
            conversation_test["expressed_purchase_intent"].astype(int), conversation_test["purchase_score"], float(threshold)
        )
    baseline = conversation.get("test_max_message_baseline")
    if test is not None:
        rows = []
        for key, name, pct in (
            ("precision", "precision", False),
            ("recall", "recall", False),
            ("f1", "F1", False),
            ("average_precision", "average precision", False),
            ("flagged_rate", "flagged share", True),
            ("positive_rate", "true share", True),
            ("threshold", "threshold", False),
        ):
            fmt = _pct if pct else _num
            ours = test.get(key)
            theirs = baseline.get(key) if baseline else None
            if key in ("precision", "recall", "f1", "average_precision") and _finite(ours) and _finite(theirs):
                delta = float(ours) - float(theirs)
                diff = Cell(_signed(delta), "good" if delta > 5e-4 else "bad" if delta < -5e-4 else "")
            else:
                diff = "—"
            rows.append([name, fmt(ours), fmt(theirs), diff])
        section.blocks.append(
            Table(["metric", "conversation model", "max-message baseline", "difference"], rows, numeric={1, 2, 3})
        )
        sizes = conversation.get("sizes")
        if sizes:
            section.blocks.append(
                Para(
                    f"Conversations: {sizes.get('train', '—')} train / {sizes.get('val', '—')} val / "
                    f"{sizes.get('test', '—')} test (split by buyer)."
                )
            )
        if baseline is None:
            section.blocks.append(Para("The max-message baseline was not recorded for this run."))
    else:
        section.blocks.append(Para("No conversation-level metrics were recorded."))
    if conversation_test is not None and len(conversation_test):
        needed = {"expressed_purchase_intent", "flag"}
        if needed <= set(conversation_test.columns):
            for column in ("scenario", "category", "stage"):
                if column in conversation_test.columns:
                    section.blocks.append(Subheading(f"By {column}"))
                    section.blocks.append(_group_table(conversation_test, column))
    return section


_REASON_NAMES = {
    "flagged": "flagged (nudge)",
    "not_lost": "not lost (paid within the window)",
    "no_purchase_intent": "lost, no purchase intent",
    "complaint_or_refund": "lost with intent, skipped: complaint or refund",
    "duplicate_in_window": "skipped: already nudged in the window",
    "order_unknown": "outcome unknown",
}


def _flagging_section(flagging: dict[str, Any]) -> Section:
    section = Section(
        "flagging",
        SECTION_TITLES["flagging"],
        "The nudge list `buyer-intent flag` would produce for the held-out test conversations (same decisions and "
        "policy), against the truth: the shopper was lost (no paid order at that shop within the window, from the "
        "orders) and had expressed purchase intent (the conversation's label). Buyers the policy skips count as missed.",
    )
    rows = [
        ["precision", _num(flagging.get("precision"))],
        ["recall", _num(flagging.get("recall"))],
        ["F1", _num(flagging.get("f1"))],
        ["flagged share of lost shoppers", _pct(flagging.get("flagged_share_of_lost"))],
        ["true share of lost shoppers (lost with intent)", _pct(flagging.get("true_share_of_lost"))],
        ["conversations / lost / lost with intent / flagged",
         " / ".join(f"{int(flagging.get(k, 0)):,}" for k in ("conversations", "lost_shoppers", "lost_with_intent", "flagged"))],
        ["conversation score threshold", _num(flagging.get("threshold"))],
    ]
    section.blocks.append(Table(["metric", "test conversations"], rows, numeric={1}))
    reasons = flagging.get("reasons") or {}
    if reasons:
        section.blocks.append(Subheading("Decisions"))
        section.blocks.append(
            Table(["decision", "conversations"], [[_REASON_NAMES.get(k, k), f"{v:,}"] for k, v in reasons.items()], numeric={1})
        )
    by_category = flagging.get("by_category") or {}
    if by_category:
        section.blocks.append(Subheading("By category"))
        section.blocks.append(
            Table(
                ["category", "lost", "true share", "flagged share", "precision", "recall"],
                [
                    [name, f"{m['lost_shoppers']:,}", _pct(m["true_share_of_lost"]),
                     Cell(_pct(m["flagged_share_of_lost"]), "bad" if abs(m["flagged_share_of_lost"] - m["true_share_of_lost"]) > 0.15 else ""),
                     _num(m["precision"]), _num(m["recall"])]
                    for name, m in by_category.items()
                ],
                numeric={1, 2, 3, 4, 5},
            )
        )
    return section


def _details_section(extra: dict[str, str]) -> Section:
    section = Section(
        "details",
        SECTION_TITLES["details"],
        "Where these numbers come from: identifiers, data fingerprints and versions recorded with the run.",
    )
    for name, text in extra.items():
        section.blocks.append(Subheading(str(name)))
        section.blocks.append(Markdownish(str(text)))
    return section


# --------------------------------------------------------------------------------------------------
# Rendering.

_CSS = """
:root { --ink:#1f2937; --muted:#6b7280; --line:#e5e7eb; --bg:#f8fafc; --accent:#3b6ea8;
        --good:#1f7a4d; --good-bg:#e8f5ee; --bad:#b42335; --bad-bg:#fdecee; --warn-bg:#fff7e0; --warn-line:#e0a800; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font: 15px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "PingFang SC",
             "Hiragino Sans GB", "Microsoft YaHei", "Noto Sans CJK SC", "WenQuanYi Micro Hei", sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 28px 32px 60px; background:#fff; min-height:100vh;
       box-shadow: 0 0 0 1px var(--line); }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 40px 0 6px; padding-top: 12px; border-top: 2px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 8px; }
.meta { color: var(--muted); font-size: 13px; margin-bottom: 18px; }
.how { color: var(--muted); font-style: italic; margin: 0 0 14px; max-width: 900px; }
nav.toc { background: var(--bg); border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; font-size: 14px; }
nav.toc ol { margin: 4px 0; padding-left: 22px; columns: 2; }
nav.toc a { color: var(--accent); text-decoration: none; }
nav.toc a:hover { text-decoration: underline; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 14px; max-width: 100%; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: #eef2f7; font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even):not(.group-a):not(.group-b) { background: #fafbfc; }
tr.worst td { background: var(--bad-bg); }
tr.total td { font-weight: 600; background: #f1f5f9; }
tr.group-b td { background: #f6f8fb; }
td.good { color: var(--good); font-weight: 600; }
td.bad { color: var(--bad); font-weight: 600; }
td.muted { color: var(--muted); }
td.message { max-width: 460px; word-break: break-all; }
.note { border-left: 4px solid var(--accent); background: #eef4fb; padding: 8px 12px; border-radius: 4px; margin: 10px 0; }
.note.warn { border-left-color: var(--warn-line); background: var(--warn-bg); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr)); gap: 10px; margin: 8px 0 14px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; background: #fff; }
.card .label { font-size: 13px; color: var(--muted); }
.card .value { font-size: 24px; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .desc { font-size: 12px; color: var(--muted); line-height: 1.35; }
figure { margin: 8px 0 14px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
pre { background: var(--bg); border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; overflow-x: auto; font-size: 13px; }
code { background: var(--bg); padding: 0 3px; border-radius: 3px; font-size: 13px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"""


def _inline_html(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def _markdownish_html(text: str) -> str:
    """A small, safe subset of Markdown (everything escaped first): paragraphs, lists, pipe tables, code."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        return f"<pre>{html.escape(stripped, quote=False)}</pre>"
    out: list[str] = []
    lines = stripped.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```"):
            block = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i])
                i += 1
            out.append(f"<pre>{html.escape(chr(10).join(block), quote=False)}</pre>")
            i += 1
        elif re.match(r"\s*[-*] ", line):
            items = []
            while i < len(lines) and re.match(r"\s*[-*] ", lines[i]):
                item = re.sub(r"^\s*[-*] ", "", lines[i])
                items.append(f"<li>{_inline_html(item)}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        elif line.strip().startswith("|"):
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-{2,}:?", c) for c in cells):
                    tag = "th" if not rows else "td"
                    rows.append("<tr>" + "".join(f"<{tag}>{_inline_html(c)}</{tag}>" for c in cells) + "</tr>")
                i += 1
            out.append("<table>" + "".join(rows) + "</table>")
        elif re.match(r"#{1,6} ", line):
            out.append(f"<h4>{_inline_html(line.lstrip('#').strip())}</h4>")
            i += 1
        elif not line.strip():
            i += 1
        else:
            paragraph = []
            while i < len(lines) and lines[i].strip() and not re.match(r"\s*([-*] |\||```|#{1,6} )", lines[i]):
                paragraph.append(_inline_html(lines[i].strip()))
                i += 1
            out.append("<p>" + "<br>".join(paragraph) + "</p>")
    return "\n".join(out)


def _cell(value: Cell | str) -> Cell:
    return value if isinstance(value, Cell) else Cell(str(value))


def _table_html(table: Table) -> str:
    head = "".join(
        f'<th class="num">{html.escape(c)}</th>' if i in table.numeric else f"<th>{html.escape(c)}</th>"
        for i, c in enumerate(table.columns)
    )
    body = []
    for r, row in enumerate(table.rows):
        row_css = table.row_css[r] if table.row_css and r < len(table.row_css) else ""
        cells = []
        for i, value in enumerate(row):
            cell = _cell(value)
            classes = " ".join(c for c in ("num" if i in table.numeric else "", cell.css) if c)
            attr = f' class="{classes}"' if classes else ""
            cells.append(f"<td{attr}>{html.escape(cell.text, quote=False)}</td>")
        attr = f' class="{row_css}"' if row_css else ""
        body.append(f"<tr{attr}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _block_html(block: Any) -> str:
    if isinstance(block, Table):
        return _table_html(block)
    if isinstance(block, Para):
        return f"<p>{html.escape(block.text, quote=False)}</p>"
    if isinstance(block, Note):
        return f'<div class="note {block.kind}">{html.escape(block.text, quote=False)}</div>'
    if isinstance(block, Subheading):
        return f"<h3>{html.escape(block.text, quote=False)}</h3>"
    if isinstance(block, Image):
        data = base64.b64encode(block.png).decode("ascii")
        return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.alt)}"></figure>'
    if isinstance(block, Cards):
        cards = "".join(
            f'<div class="card"><div class="label">{html.escape(label)}</div><div class="value">{html.escape(value)}</div>'
            f'<div class="desc">{html.escape(desc)}</div></div>'
            for label, value, desc in block.items
        )
        return f'<div class="cards">{cards}</div>'
    if isinstance(block, Markdownish):
        return _markdownish_html(block.text)
    raise TypeError(f"unknown block {type(block).__name__}")


def _render_html(title: str, meta: str, sections: list[Section]) -> str:
    toc = "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>{html.escape(title)}</h1>",
        f'<div class="meta">{html.escape(meta)}</div>',
        f'<nav class="toc"><strong>Contents</strong><ol>{toc}</ol></nav>',
    ]
    for section in sections:
        parts.append(f'<section id="{section.anchor}"><h2>{html.escape(section.title)}</h2>')
        parts.append(f'<p class="how">How to read this: {html.escape(section.how_to_read, quote=False)}</p>')
        parts.extend(_block_html(block) for block in section.blocks)
        parts.append("</section>")
    parts.append(
        "<footer>Buyer messages in this report are PII-masked (phones, order numbers, addresses, names, links). "
        "Generated by pipeline.report.</footer></main></body></html>"
    )
    return "\n".join(parts) + "\n"


def _md_text(text: str) -> str:
    """Text safe to put in Markdown without becoming HTML: only what could start a tag or an entity is
    escaped, so the raw file stays readable ("length <= 4" stays as it is)."""
    text = re.sub(r"&(?=#?\w+;)", "&amp;", text)
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)


def _md_escape(text: str) -> str:
    """For table cells: no line breaks, no column breaks, no raw HTML."""
    text = _md_text(text).replace("|", "\\|")
    return re.sub(r"[\r\n]+", " ", text)


def _table_md(table: Table) -> str:
    lines = [
        "| " + " | ".join(_md_escape(c) if c else " " for c in table.columns) + " |",
        "|" + "|".join("---:" if i in table.numeric else "---" for i in range(len(table.columns))) + "|",
    ]
    for row in table.rows:
        cells = []
        for value in row:
            cell = _cell(value)
            text = _md_escape(cell.text)
            if cell.css == "message":
                text = re.sub(r"([\\`*_])", r"\\\1", text)
            elif cell.css in ("good", "bad") and text and text != "—":
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _block_md(block: Any) -> str:
    if isinstance(block, Table):
        return _table_md(block)
    if isinstance(block, Para):
        return _md_text(block.text)
    if isinstance(block, Note):
        prefix = "**Note:** " if block.kind == "warn" else ""
        return "> " + prefix + _md_text(block.text)
    if isinstance(block, Subheading):
        return f"### {block.text}"
    if isinstance(block, Image):
        return f"![{block.alt}](plots/{block.filename})"
    if isinstance(block, Cards):
        rows = [[label, value, desc] for label, value, desc in block.items]
        return _table_md(Table(["metric", "value", "meaning"], rows, numeric={1}))
    if isinstance(block, Markdownish):
        text = block.text.strip()
        return f"```\n{text}\n```" if text.startswith(("{", "[")) else text
    raise TypeError(f"unknown block {type(block).__name__}")


def _render_md(title: str, meta: str, sections: list[Section]) -> str:
    parts = [f"# {title}", f"_{meta}_", "**Contents**", "\n".join(f"{i}. [{s.title}](#{s.anchor})" for i, s in enumerate(sections, 1))]
    for section in sections:
        parts.append(f"## {section.title}")
        parts.append(f"_How to read this: {section.how_to_read}_")
        parts.extend(_block_md(block) for block in section.blocks)
    parts.append(
        "_Buyer messages in this report are PII-masked (phones, order numbers, addresses, names, links). "
        "Generated by pipeline.report._"
    )
    return "\n\n".join(parts) + "\n"


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
    champion_headline: dict[str, float] | None = None,
    conversation_test: pd.DataFrame | None = None,
    extra_sections: dict[str, str] | None = None,
    top_confusions: int = 10,
    examples_per_confusion: int = 3,
    scored_name: str = "held-out test messages",
    scored_is_real: bool = False,
    explain: Callable[..., list] | None = None,
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

    Returns {"html": Path, "markdown": Path, "plots": [Path, ...], "metrics": Path}.
    """
    out_dir = Path(out_dir)
    plots_dir = out_dir / "plots"
    scored = scored.reset_index(drop=True)
    test = metrics.get("test", {})
    intent = test.get("intent", {})
    eval_names = sorted(k for k in metrics if str(k).startswith("eval:"))
    has_purchase = "purchase" in test
    has_purchase_labels = (
        has_purchase and "purchase_intent" in scored.columns and "purchase_score" in scored.columns
        and scored["purchase_intent"].notna().all()
    )
    fallback_threshold = float(thresholds.get("fallback", 0.0))

    plots: dict[str, bytes] = {}
    plotter = _Plotter()
    try:
        sections = [
            _headline_section(headline, scored, thresholds, eval_names or (["scored"] if scored_is_real else []), scored_name),
            *([] if scored_is_real else [_champion_section(headline, champion_headline, len(scored))]),
            _eval_sets_section(metrics, eval_names),
            _per_intent_section(intent, scored),
            _confusion_matrix_section(plotter, scored, plots),
            _confusions_section(scored, fallback_threshold, max(int(top_confusions), 0), max(int(examples_per_confusion), 0), explain),
            _confidence_section(plotter, scored, intent, fallback_threshold, plots),
            _calibration_section(plotter, scored, intent, has_purchase_labels, plots),
            _slices_section(scored),
        ]
        if has_purchase:
            sections.append(
                _purchase_section(plotter, scored, test["purchase"], thresholds.get("purchase"), has_purchase_labels, plots)
            )
        if "conversation" in metrics or conversation_test is not None:
            sections.append(_conversation_section(metrics, conversation_test, thresholds))
        if metrics.get("flagging"):
            sections.append(_flagging_section(metrics["flagging"]))
        if extra_sections:
            sections.append(_details_section(extra_sections))
    finally:
        plotter.close_all()

    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = f"Generated {generated} · {len(scored):,} {scored_name} · {len(intent.get('per_intent', {}))} intents"
    if eval_names:
        meta += " · evaluation sets: " + ", ".join(name.removeprefix("eval:") for name in eval_names)

    plot_paths = [write_bytes_atomic(png, plots_dir / name) for name, png in plots.items()]
    for name in PLOT_FILES:  # plots of an earlier report in the same directory that this one does not have
        if name not in plots:
            (plots_dir / name).unlink(missing_ok=True)
    metrics_path = write_bytes_atomic(
        json.dumps(_json_ready(metrics), ensure_ascii=False, indent=2, sort_keys=True, allow_nan=False) + "\n",
        out_dir / "metrics.json",
    )
    markdown_path = write_bytes_atomic(_render_md(title, meta, sections), out_dir / "report.md")
    html_path = write_bytes_atomic(_render_html(title, meta, sections), out_dir / "report.html")
    return {"html": html_path, "markdown": markdown_path, "plots": plot_paths, "metrics": metrics_path}
