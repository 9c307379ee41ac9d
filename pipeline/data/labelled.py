"""Labelled messages: loading, validation with quarantine, fingerprints and the train/val/test split.

The split is grouped (variants of one seed, or one conversation, never straddle splits) and
stratified, and it is a function of each group's id and the seed, not of row order: retraining on
a grown export keeps old groups where they were, so a champion and a challenger are compared on
the same test messages.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.tables import PLAIN_COLUMNS, ColumnNames, Rejected, TableError, parse_yes_no, read_table, rejected_frame, write_table_atomic
from pipeline.text import normalize

REQUIRED_COLUMNS = ("text", "intent")
OPTIONAL_COLUMNS = ("purchase_intent", "group")
LABELLED_COLUMNS = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)  # the columns export headers are mapped to
log = logging.getLogger(__name__)
_LABEL_RE = re.compile(r"^[^\s,;]{1,64}$")


class DataError(ValueError):
    """A labelled file that cannot be used at all (missing columns, nothing valid left)."""


@dataclass
class LabelledData:
    frame: pd.DataFrame  # text, intent, purchase_intent (Int8 or absent), group, normalized
    rejected: pd.DataFrame  # source, row, reason, raw
    source: str

    @property
    def has_purchase_labels(self) -> bool:
        return "purchase_intent" in self.frame.columns


def validate_labelled(frame: pd.DataFrame, source: str, min_examples_per_label: int = 1) -> tuple[pd.DataFrame, list[Rejected]]:
    """Valid rows (with a `normalized` column) and the rejected ones, each with its reason."""
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing required column(s) {missing}; found {list(frame.columns)}")
    frame = frame.reset_index(drop=True)
    row_numbers = frame["_line"].tolist() if "_line" in frame.columns else list(range(1, len(frame) + 1))
    has_purchase = "purchase_intent" in frame.columns
    keep: list[int] = []
    rejected: list[Rejected] = []
    purchase: list[int] = []
    for position, record in enumerate(frame.itertuples(index=False)):
        row = dict(zip(frame.columns, record, strict=True))
        text = row["text"]
        intent = row["intent"]
        reason = None
        if not isinstance(text, str) or not text.strip():
            reason = "empty text"
        elif not isinstance(intent, str) or not intent.strip():
            reason = "no intent label (an unlabelled row: fill in the intent column)"
        elif not _LABEL_RE.match(intent.strip()):
            reason = f"bad intent label {intent!r} (one word, no spaces, commas or semicolons)"
        elif has_purchase and parse_yes_no(row["purchase_intent"]) is None:
            reason = f"purchase_intent must be yes or no (1/0, true/false, 是/否), got {row['purchase_intent']!r}"
        if reason:
            raw = ",".join(str(row.get(column, "")) for column in frame.columns if column != "_line")
            rejected.append(Rejected(row_numbers[position], reason, raw))
            continue
        keep.append(position)
        if has_purchase:
            purchase.append(parse_yes_no(row["purchase_intent"]))
    valid = frame.iloc[keep].copy()
    valid["text"] = valid["text"].astype(str)
    valid["intent"] = valid["intent"].astype(str).str.strip()
    if has_purchase:
        valid["purchase_intent"] = np.asarray(purchase, dtype=np.int8)
    if "group" in valid.columns:
        valid["group"] = valid["group"].astype(str)
    else:
        valid["group"] = [f"row-{n}" for n in range(len(valid))]
    valid["_row"] = [row_numbers[p] for p in keep]

    counts = valid["intent"].value_counts()
    rare = set(counts[counts < min_examples_per_label].index)
    if rare:
        mask = valid["intent"].isin(rare)
        for row_number, intent, text in zip(valid.loc[mask, "_row"], valid.loc[mask, "intent"], valid.loc[mask, "text"], strict=True):
            rejected.append(
                Rejected(
                    row_number,
                    f"intent {intent!r} has only {counts[intent]} examples "
                    f"(at least {min_examples_per_label} are needed to split it)",
                    text,
                )
            )
        valid = valid[~mask]
    valid["normalized"] = [normalize(text) for text in valid["text"]]
    columns = ["text", "intent", *(["purchase_intent"] if has_purchase else []), "group", "normalized", "_row"]
    extra = [c for c in valid.columns if c not in columns and c != "_line"]
    return valid[columns + extra].reset_index(drop=True), rejected


def load_labelled(
    path: str | Path, quarantine_dir: str | Path | None = None, min_examples_per_label: int = 1, names: ColumnNames = PLAIN_COLUMNS
) -> LabelledData:
    """Read and validate a labelled file (headers mapped by `names`); rejected rows are written to
    `quarantine_dir/<name>.rejected.csv`."""
    path = Path(path)
    try:
        frame, rejected = read_table(path, names)
    except TableError as exc:
        raise DataError(str(exc)) from exc
    valid, invalid = validate_labelled(frame, str(path), min_examples_per_label)
    rejected = rejected + invalid
    rejected_table = rejected_frame(rejected, path)
    if quarantine_dir is not None and rejected:
        write_table_atomic(rejected_table, Path(quarantine_dir) / f"{path.stem}.rejected.csv")
    if valid.empty:
        reasons = Counter(r.reason for r in rejected).most_common(3)
        raise DataError(f"{path}: no valid rows left ({len(rejected)} rejected; most common: {reasons})")
    return LabelledData(valid, rejected_table, str(path))


def load_training_data(
    path: str | Path,
    extra_paths: list[str] | tuple[str, ...] = (),
    quarantine_dir: str | Path | None = None,
    min_examples_per_label: int = 1,
    names: ColumnNames = PLAIN_COLUMNS,
    extra_weight: float = 1.0,
) -> LabelledData:
    """The labelled file plus more labelled files (a shop's filled-in labelling queue), as one training set.

    Every row keeps its `source` (the file's name) and a `_weight` (1 for the first file, `extra_weight` for
    the others). An extra row whose label the first file does not have, or that misses a label, is
    quarantined with the reason; texts, not ids, are the key: where an extra file labels a text the first
    file also has, the extra file's label replaces it (the shop knows its own buyers)."""
    base = load_labelled(path, quarantine_dir, min_examples_per_label, names)
    if not extra_paths:
        return base
    frame = base.frame.copy()
    if "source" not in frame.columns:
        frame["source"] = Path(path).stem
    frame["_weight"] = 1.0
    labels = set(frame["intent"])
    parts, rejected_tables = [frame], [base.rejected]
    for extra in extra_paths:
        data = load_labelled(extra, None, 1, names)
        part = data.frame
        unknown = ~part["intent"].isin(labels)
        problems = [
            Rejected(row, f"intent {intent!r} is not a label of {Path(path).name} ({len(labels)} labels)", text)
            for row, intent, text in zip(part.loc[unknown, "_row"], part.loc[unknown, "intent"], part.loc[unknown, "text"], strict=True)
        ]
        if base.has_purchase_labels and not data.has_purchase_labels:
            raise DataError(f"{extra}: no purchase_intent column, but {path} has one (label both, or neither)")
        rejected = pd.concat([data.rejected, rejected_frame(problems, Path(extra))], ignore_index=True)
        if quarantine_dir is not None and len(rejected):
            write_table_atomic(rejected, Path(quarantine_dir) / f"{Path(extra).stem}.rejected.csv")
        rejected_tables.append(rejected)
        part = part[~unknown].copy()
        part["group"] = Path(extra).stem + ":" + part["group"].astype(str)
        part["source"] = Path(extra).stem
        part["_weight"] = float(extra_weight)
        parts.append(part[[c for c in frame.columns if c in part.columns]])
    merged = pd.concat(parts, ignore_index=True)
    # The last extra file that labels a text decides it, and a shop's label replaces the bundled one.
    is_extra = np.arange(len(merged)) >= len(frame)
    replaced = ~is_extra & merged["normalized"].isin(set(merged.loc[is_extra, "normalized"]))
    superseded = is_extra & merged["normalized"].where(is_extra).duplicated(keep="last")
    if replaced.any() or superseded.any():
        log.info("extra labelled files: %d rows of %s and %d earlier extra rows relabelled by a later file",
                 int(replaced.sum()), path, int(superseded.sum()))
    merged = merged[~(replaced | superseded)].reset_index(drop=True)
    return LabelledData(merged, pd.concat(rejected_tables, ignore_index=True), ", ".join([str(path), *map(str, extra_paths)]))


def _stable_rank(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha1(f"{seed}:{key}".encode()).digest()[:8], "big")


def merged_groups(groups: pd.Series, normalized: pd.Series) -> pd.Series:
    """Groups joined where rows share a normalised text, so identical texts can never straddle splits."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        root = node
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(node, node) != root:
            parent[node], node = root, parent[node]
        return root

    first_group_of_text: dict[str, str] = {}
    for group, text in zip(groups, normalized, strict=True):
        group = f"g:{group}"
        other = first_group_of_text.setdefault(text, group)
        if other != group:
            a, b = find(group), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return pd.Series([find(f"g:{g}") for g in groups], index=groups.index)


def _majority_labels(groups: np.ndarray, labels: np.ndarray) -> pd.Series:
    """Each group's most frequent label, a tie going to the label the group shows first (what
    `Series.value_counts().index[0]` gives), in one grouped count instead of one call per group."""
    table = pd.DataFrame({"group": groups, "label": labels, "position": np.arange(len(groups))})
    counts = table.groupby(["group", "label"], sort=False).agg(n=("position", "size"), first=("position", "min")).reset_index()
    counts = counts.sort_values(["group", "n", "first"], ascending=[True, False, True], kind="mergesort")
    return counts.drop_duplicates("group").set_index("group")["label"]


def assign_splits(
    frame: pd.DataFrame,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    label_column: str = "intent",
    group_column: str = "group",
    holdout_column: str | None = None,
    val_holdout: list[str] | tuple[str, ...] = (),
) -> pd.Series:
    """'train' / 'val' / 'test' per row: grouped, stratified by each group's majority label, seeded.

    With `holdout_column` and `val_holdout`, validation is every group with a row whose holdout value
    is listed (a held-out writer), and test is drawn from the other groups; without them (or when no
    row matches) validation is drawn like test."""
    normalized = frame["normalized"] if "normalized" in frame.columns else frame["text"].map(normalize)
    groups = (
        frame[group_column].astype(str)
        if group_column in frame.columns
        else pd.Series([f"row-{i}" for i in range(len(frame))], index=frame.index)
    )
    merged = merged_groups(groups, normalized)
    split_of_group: dict[str, str] = {}
    if holdout_column and val_holdout and holdout_column in frame.columns:
        held = frame[holdout_column].astype(str).isin([str(v) for v in val_holdout])
        split_of_group = dict.fromkeys(merged[held].unique(), "val")
    if split_of_group:
        val_fraction = 0.0
    rest = ~merged.isin(split_of_group)
    sizes = merged[rest].value_counts()
    majority = _majority_labels(merged[rest].to_numpy(), frame.loc[rest, label_column].to_numpy())
    for _label, members in majority.groupby(majority):
        ordered = sorted(members.index, key=lambda g: _stable_rank(seed, g))
        total = sizes[ordered].sum()
        test_quota, val_quota = test_fraction * total, val_fraction * total
        test_rows = val_rows = 0
        # Rare strata with fewer than three groups stay in training: they cannot be evaluated anyway.
        for position, group in enumerate(ordered):
            if len(ordered) >= 3 and position < len(ordered) - 1 and test_rows < test_quota and test_rows + sizes[group] <= max(test_quota * 1.5, 1):
                split_of_group[group] = "test"
                test_rows += sizes[group]
            elif len(ordered) >= 3 and position < len(ordered) - 1 and val_rows < val_quota and val_rows + sizes[group] <= max(val_quota * 1.5, 1):
                split_of_group[group] = "val"
                val_rows += sizes[group]
            else:
                split_of_group[group] = "train"
    return merged.map(split_of_group).rename("split")


def split_by_settings(frame: pd.DataFrame, settings, seed: int) -> np.ndarray:
    """`assign_splits` with a run's `split` settings (fractions, held-out writers)."""
    return assign_splits(
        frame,
        val_fraction=settings.val_fraction,
        test_fraction=settings.test_fraction,
        seed=seed,
        holdout_column=settings.holdout_column,
        val_holdout=settings.val_holdout,
    ).to_numpy()


def fingerprint(frame: pd.DataFrame, columns: list[str]) -> dict[str, object]:
    """Content hash, size and label distribution: enough to tell whether two runs saw the same data."""
    digest = hashlib.sha256()
    for row in frame[columns].astype(str).itertuples(index=False):
        digest.update("\x1f".join(row).encode("utf-8"))
        digest.update(b"\x1e")
    result: dict[str, object] = {"sha256": digest.hexdigest(), "rows": int(len(frame))}
    if "intent" in frame.columns:
        result["intent_counts"] = {k: int(v) for k, v in frame["intent"].value_counts().sort_index().items()}
    if "purchase_intent" in frame.columns:
        result["purchase_intent_rate"] = round(float(frame["purchase_intent"].mean()), 4)
    return result


def load_labelled_conversations(path: str | Path, quarantine_dir: str | Path | None = None):
    """Labelled conversations (JSONL): conversation_id, buyer_id, messages[{role, text, sent_at}],
    expressed_purchase_intent. Invalid ones are quarantined with a reason."""
    from pipeline.conversation import Turn

    path = Path(path)
    rows, rejected = [], []
    try:
        frame, rejected = read_table(path)
    except TableError as exc:
        raise DataError(str(exc)) from exc
    for record in frame.to_dict(orient="records"):
        line = record.get("_line")
        messages = record.get("messages")
        label = parse_yes_no(record.get("expressed_purchase_intent"))
        reason = None
        if not record.get("conversation_id"):
            reason = "missing conversation_id"
        elif not isinstance(messages, list) or not messages:
            reason = "messages must be a non-empty list"
        elif any(not isinstance(m, dict) or "role" not in m or "text" not in m for m in messages):
            reason = "every message needs role and text"
        elif label is None:
            reason = f"expressed_purchase_intent must be yes or no (1/0, true/false, 是/否), got {record.get('expressed_purchase_intent')!r}"
        if reason:
            rejected.append(Rejected(line, reason, str(record.get("conversation_id", ""))))
            continue
        rows.append(
            {
                "conversation_id": str(record["conversation_id"]),
                "buyer_id": str(record.get("buyer_id") or record["conversation_id"]),
                "shop_id": str(record.get("shop_id", "")),
                "category": str(record.get("category", "")),
                "stage": str(record.get("stage", "")),
                "scenario": str(record.get("scenario", "")),
                "expressed_purchase_intent": label,
                "turns": [Turn(str(m["role"]), str(m["text"] or ""), m.get("sent_at")) for m in messages],
            }
        )
    rejected_table = rejected_frame(rejected, path)
    if quarantine_dir is not None and rejected:
        write_table_atomic(rejected_table, Path(quarantine_dir) / f"{path.stem}.rejected.csv")
    return pd.DataFrame(rows), rejected_table
