"""The labelling queue (`buyer-intent select`): the buyer messages whose labels would teach the model most.

Three rules, in this order of priority:

- **diversity**: messages are first collapsed to one per text (normalised, without spaces and
  punctuation: "有货吗?" and "有货吗" are one message, and `seen` counts how often it occurs), and a
  message is only taken when it is not a near-duplicate of one already in the queue (Jaccard similarity
  of character bigrams below `similarity`): one message per cluster of near-duplicates, so 200 labels
  are not spent on 30 variants of one order card;
- **coverage**: when `n` allows, the queue holds at least one message of every intent the model
  predicts on the input (the most uncertain one of each), so a rare intent the shop's buyers use gets
  labelled examples too;
- **uncertainty**: the rest are the messages the model is least sure about: the smallest margin
  between its two most probable intents (`strategy="margin"`, the default) or the highest entropy of
  its intent probabilities (`strategy="entropy"`).

The queue holds the buyer's text (masked unless `select.mask_pii` is false: phones, order numbers and
addresses become placeholders the model reads as the raw values), the model's guess, its confidence and
empty `intent` and `purchase_intent` columns to fill in. Buyer text is never logged:
log lines carry counts only.
"""

from __future__ import annotations

import logging
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.text import TOKEN_CHARS, mask_pii, normalize

log = logging.getLogger(__name__)

STRATEGIES = ("margin", "entropy")
DEFAULT_SIMILARITY = 0.6
PREDICT_BATCH = 20_000
# The queue's columns: what the person labelling reads, then the two columns they fill in.
QUEUE_COLUMNS = ("text", "guess_intent", "guess_confidence", "margin", "guess_purchase", "purchase_score", "seen", "row", "intent", "purchase_intent")
QUEUE_SUFFIXES = (".csv", ".xlsx")


class SelectError(ValueError):
    """The queue cannot be written as asked (unknown strategy, unsupported output type, nothing to pick)."""


def dedup_key(normalized: str) -> str:
    """The text two messages share when they are the same message: the normalised text (placeholders and
    numbers already canonical) without spaces, punctuation and symbols."""
    key = "".join(ch for ch in normalized if ch in TOKEN_CHARS or unicodedata.category(ch)[0] in "LN")
    return key or normalized


def shingles(key: str, size: int = 2) -> frozenset[str]:
    """Character n-grams of a key (the key itself when shorter)."""
    if len(key) <= size:
        return frozenset((key,))
    return frozenset(key[i : i + size] for i in range(len(key) - size + 1))


def uncertainty(proba: np.ndarray, strategy: str = "margin") -> np.ndarray:
    """Per row, in [0, 1], higher = less sure: 1 - (p1 - p2) for margin, entropy / log(K) for entropy."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] == 0:
        raise SelectError(f"expected a (messages, intents) probability matrix, got shape {proba.shape}")
    if strategy == "margin":
        if proba.shape[1] == 1:
            return np.zeros(len(proba))
        top2 = -np.partition(-proba, 1, axis=1)[:, :2]
        return 1.0 - (top2[:, 0] - top2[:, 1])
    if strategy == "entropy":
        if proba.shape[1] == 1:
            return np.zeros(len(proba))
        clipped = np.clip(proba, 1e-12, 1.0)
        return -(clipped * np.log(clipped)).sum(axis=1) / np.log(proba.shape[1])
    raise SelectError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")


class _NearDuplicates:
    """Near-duplicate test against the messages chosen so far (an inverted index of their bigrams)."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.sets: list[frozenset[str]] = []
        self.index: dict[str, list[int]] = defaultdict(list)

    def is_near(self, grams: frozenset[str]) -> bool:
        if self.threshold > 1.0:
            return False
        shared = Counter(j for gram in grams for j in self.index.get(gram, ()))
        return any(common / (len(grams) + len(self.sets[j]) - common) >= self.threshold for j, common in shared.items())

    def add(self, grams: frozenset[str]) -> None:
        position = len(self.sets)
        self.sets.append(grams)
        for gram in grams:
            self.index[gram].append(position)


def choose(keys: Sequence[str], guesses: Sequence[str], scores: np.ndarray, n: int, similarity: float = DEFAULT_SIMILARITY) -> list[int]:
    """Positions of up to `n` distinct keys: first the most uncertain message of each guessed intent
    (coverage; the intents with the most uncertain messages first when `n` is smaller than their number),
    then the most uncertain of the rest, each skipped when a near-duplicate of one already chosen; when
    near-duplicates are all that is left, they fill the queue in the same order.

    Ties are broken by position (the first occurrence in the input), so the choice is deterministic."""
    if n <= 0:
        return []
    scores = np.asarray(scores, dtype=np.float64)
    order = sorted(range(len(keys)), key=lambda i: (-scores[i], i))
    grams = {}
    near = _NearDuplicates(similarity)
    chosen: list[int] = []
    taken: set[int] = set()
    seen_keys: set[str] = set()

    def take(i: int) -> None:
        chosen.append(i)
        taken.add(i)
        seen_keys.add(keys[i])
        near.add(grams.setdefault(i, shingles(keys[i])))

    def acceptable(i: int, allow_near: bool) -> bool:
        if i in taken or keys[i] in seen_keys:
            return False
        return allow_near or not near.is_near(grams.setdefault(i, shingles(keys[i])))

    # Coverage: the most uncertain candidate per guessed intent, intents ordered by that candidate.
    firsts: dict[str, int] = {}
    for i in order:
        firsts.setdefault(str(guesses[i]), i)
    for i in sorted(firsts.values(), key=lambda i: (-scores[i], i)):
        if len(chosen) >= n:
            break
        if acceptable(i, allow_near=False):
            take(i)
        else:  # its best candidate is a near-duplicate of an earlier pick: the next of that intent
            intent = str(guesses[i])
            for j in order:
                if str(guesses[j]) == intent and acceptable(j, allow_near=False):
                    take(j)
                    break
    for allow_near in (False, True):
        for i in order:
            if len(chosen) >= n:
                return chosen
            if acceptable(i, allow_near):
                take(i)
    return chosen


def _collapse(texts: Sequence[str], rows: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per dedup key: the first text written that way, how often it was seen, its first row.
    Empty messages (nothing left after normalisation) are not candidates."""
    first: dict[str, int] = {}
    counts: Counter[str] = Counter()
    normalized_of: dict[str, str] = {}
    for position, text in enumerate(texts):
        norm = normalize(text if isinstance(text, str) else ("" if text is None else str(text)))
        if not norm:
            continue
        key = dedup_key(norm)
        counts[key] += 1
        if key not in first:
            first[key] = position
            normalized_of[key] = norm
    keys = list(first)
    positions = [first[k] for k in keys]
    return pd.DataFrame(
        {
            "text": [texts[p] for p in positions],
            "key": keys,
            "normalized": [normalized_of[k] for k in keys],
            "seen": [counts[k] for k in keys],
            "position": positions,
            "row": [rows[p] for p in positions] if rows is not None else [p + 1 for p in positions],
        }
    )


def score_candidates(predictor, frame: pd.DataFrame, strategy: str = "margin") -> pd.DataFrame:
    """The model's guess, confidence, margin, uncertainty and purchase score for each candidate."""
    if strategy not in STRATEGIES:
        raise SelectError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    k = len(predictor.labels)
    parts = []
    texts = frame["text"].astype(str).tolist()
    for start in range(0, len(texts), PREDICT_BATCH):
        batch = texts[start : start + PREDICT_BATCH]
        out = predictor.predict_arrays(batch, top_k=k)
        proba = np.zeros((len(batch), k))
        column = {label: j for j, label in enumerate(predictor.labels)}
        for row, top in enumerate(out["top"]):
            for label, value in top:
                proba[row, column[label]] = value
        sorted_proba = -np.sort(-proba, axis=1)
        parts.append(
            pd.DataFrame(
                {
                    "guess_intent": out["intent"].astype(str),
                    "guess_confidence": np.round(sorted_proba[:, 0], 4),
                    "margin": np.round(sorted_proba[:, 0] - (sorted_proba[:, 1] if k > 1 else 0.0), 4),
                    "uncertainty": uncertainty(proba, strategy),
                    "guess_purchase": out["purchase_intent"].astype(int) if predictor.has_purchase else np.zeros(len(batch), dtype=int),
                    "purchase_score": np.round(out["purchase_score"], 4),
                }
            )
        )
    scored = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["guess_intent", "guess_confidence", "margin", "uncertainty", "guess_purchase", "purchase_score"]
    )
    return pd.concat([frame.reset_index(drop=True), scored], axis=1)


def select_messages(
    predictor,
    texts: Sequence[str],
    n: int,
    *,
    strategy: str = "margin",
    similarity: float = DEFAULT_SIMILARITY,
    rows: Sequence[int] | None = None,
) -> pd.DataFrame:
    """The queue for `texts` (buyer messages): up to `n` rows, in the order they were chosen, with the
    columns of QUEUE_COLUMNS plus `position` (index into `texts`) and `uncertainty`."""
    if n < 1:
        raise SelectError(f"n must be at least 1, got {n}")
    candidates = score_candidates(predictor, _collapse(list(texts), rows), strategy)
    picked = choose(candidates["key"].tolist(), candidates["guess_intent"].tolist(), candidates["uncertainty"].to_numpy(), n, similarity)
    queue = candidates.iloc[picked].reset_index(drop=True)
    queue["intent"] = ""
    queue["purchase_intent"] = ""
    log.info(
        "select: %d messages, %d distinct, %d chosen covering %d of %d guessed intents",
        len(texts), len(candidates), len(queue), queue["guess_intent"].nunique(), candidates["guess_intent"].nunique(),
    )
    return queue[[*QUEUE_COLUMNS, "position", "uncertainty"]]


def write_queue(queue: pd.DataFrame, path: str | Path, csv_encoding: str | None = None) -> Path:
    """CSV (UTF-8 with a BOM unless `csv_encoding` says otherwise: Excel opens it with the Chinese intact)
    or .xlsx, written atomically by the same writer as every other output (buyer text that looks like a
    formula stays text). The queue is sorted by guessed intent, least sure first, which is how it is
    fastest to label."""
    from pipeline.data.tables import DEFAULT_CSV_ENCODING, write_table_atomic

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in QUEUE_SUFFIXES:
        raise SelectError(f"{path}: the queue is written as .csv (UTF-8 with BOM) or .xlsx, not {suffix!r}")
    table = queue[list(QUEUE_COLUMNS)].sort_values(["guess_intent", "guess_confidence"], kind="stable").reset_index(drop=True)
    return write_table_atomic(table, path, csv_encoding or DEFAULT_CSV_ENCODING)  # .xlsx: text cells as text; .csv: formulas defused


def select_file(
    input_path: str | Path,
    out_path: str | Path,
    n: int,
    model: str | None,
    config,
    *,
    strategy: str = "margin",
    similarity: float = DEFAULT_SIMILARITY,
    chunk_rows: int = 100_000,
) -> dict[str, Any]:
    """`buyer-intent select`: read the buyer rows of a chat export, choose `n` messages, write the queue.
    Rejected input rows go to `<out>.rejected.csv` with their reason, as with `predict`."""
    from pipeline.config import Registry
    from pipeline.inference import Predictor, load_model
    from pipeline.data.tables import iter_table, rejected_frame, require_columns, write_table_atomic
    from pipeline.jobs.workflows import buyer_rows

    if n < 1:
        raise SelectError(f"n must be at least 1, got {n}")
    if strategy not in STRATEGIES:
        raise SelectError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if Path(out_path).suffix.lower() not in QUEUE_SUFFIXES:
        raise SelectError(f"{out_path}: the queue is written as .csv (UTF-8 with BOM) or .xlsx")
    names = config.columns.names().only(("text", "role"))
    require_columns(input_path, ["text"], names)  # before the model is loaded
    texts: list[str] = []
    rows: list[int] = []
    rejected = []
    not_buyer = 0
    offset = 0
    for chunk in iter_table(input_path, chunk_rows, names):
        rejected.extend(chunk.rejected)
        frame = chunk.frame.reset_index(drop=True)
        if "text" not in frame.columns:
            raise SelectError(f"{input_path}: no `text` column (found {list(frame.columns)})")
        line = frame["_line"].astype(int).tolist() if "_line" in frame.columns else list(range(offset + 1, offset + len(frame) + 1))
        offset += len(frame)
        buyers = buyer_rows(frame, config)
        keep = np.ones(len(frame), dtype=bool) if buyers is None else buyers
        not_buyer += int((~keep).sum())
        for position in np.flatnonzero(keep):
            texts.append("" if pd.isna(frame.at[position, "text"]) else str(frame.at[position, "text"]))
            rows.append(line[position])
    if not texts:
        raise SelectError(f"{input_path}: no buyer messages to choose from")
    predictor = Predictor(load_model(model, Registry.from_config(config)))
    queue = select_messages(predictor, texts, n, strategy=strategy, similarity=similarity, rows=rows)
    if config.select.mask_pii:  # chosen on the raw text; labelled masked (`normalize` reads both the same)
        queue = queue.assign(text=[mask_pii(text) for text in queue["text"]])
    write_queue(queue, out_path, config.output.csv_encoding)
    if rejected:
        write_table_atomic(rejected_frame(rejected, input_path), f"{out_path}.rejected.csv", config.output.csv_encoding)
    return {
        "rows_in": offset + len(rejected),
        "buyer_messages": len(texts),
        "rows_not_buyer": not_buyer,
        "rows_rejected": len(rejected),
        "queued": int(len(queue)),
        "masked": bool(config.select.mask_pii),
        "guessed_intents": int(queue["guess_intent"].nunique()),
        "out": str(out_path),
    }
