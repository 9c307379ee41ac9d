"""Diversity and distribution figures of the corpus, computed (never typed) for the data card.

Near duplicates are measured on `pipeline.text.normalize`d texts with character 3-gram Jaccard
similarity: a test message counts as leaked when some training message is at least 0.8 similar, which
would flatter test metrics. Texts shorter than three characters count as a single gram (the text).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from scipy import sparse

from pipeline.text import normalize

EMOJI_MARKERS = ("[", "😂", "🙏", "😊", "😭", "🤔", "👍", "😅", "^_^", "QAQ", "orz", "T_T", ":)")
PLACEHOLDER_MARKERS = ("[订单", "[电话", "[链接", "[金额", "[日期", "[数字", "[姓名", "[地址")


def char_ngrams(normalized: str, n: int = 3) -> frozenset[str]:
    """Character n-grams of a normalised text; a shorter text is its own single gram."""
    if len(normalized) < n:
        return frozenset((normalized,))
    return frozenset(normalized[i : i + n] for i in range(len(normalized) - n + 1))


class NearDuplicateIndex:
    """Incremental index answering: is this text >= threshold similar to one of another group?"""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.postings: dict[str, list[int]] = {}
        self.sizes: list[int] = []
        self.groups: list[str] = []

    def find(self, grams: frozenset[str], group: str) -> int | None:
        """Index of a near duplicate from another group, or None."""
        size, t = len(grams), self.threshold
        overlap: Counter[int] = Counter()
        for gram in grams:
            postings = self.postings.get(gram)
            if postings:
                overlap.update(postings)
        for other, inter in overlap.items():
            if inter >= t * size and self.groups[other] != group:
                if inter / (size + self.sizes[other] - inter) >= t:
                    return other
        return None

    def add(self, grams: frozenset[str], group: str) -> None:
        index = len(self.sizes)
        self.sizes.append(len(grams))
        self.groups.append(group)
        for gram in grams:
            self.postings.setdefault(gram, []).append(index)


def _gram_matrix(gram_sets: list[frozenset[str]], vocabulary: dict[str, int]) -> sparse.csr_matrix:
    rows, cols = [], []
    for row, grams in enumerate(gram_sets):
        for gram in grams:
            column = vocabulary.setdefault(gram, len(vocabulary))
            rows.append(row)
            cols.append(column)
    data = np.ones(len(rows), dtype=np.float32)
    return sparse.csr_matrix((data, (rows, cols)), shape=(len(gram_sets), max(len(vocabulary), 1)))


def near_duplicate_shares(test: list[str], train: list[str], thresholds: tuple[float, ...] = (0.8,), chunk: int = 2000) -> dict[float, tuple[float, int]]:
    """Per threshold: (share, count) of `test` texts (normalised) with a `train` text of 3-gram Jaccard >= it."""
    if not test or not train:
        return {t: (0.0, 0) for t in thresholds}
    vocabulary: dict[str, int] = {}
    train_matrix = _gram_matrix([char_ngrams(t) for t in train], vocabulary)
    test_matrix = _gram_matrix([char_ngrams(t) for t in test], vocabulary)
    width = len(vocabulary)
    train_matrix.resize((train_matrix.shape[0], width))
    test_matrix.resize((test_matrix.shape[0], width))
    train_sizes = np.asarray(train_matrix.sum(axis=1)).ravel()
    test_sizes = np.asarray(test_matrix.sum(axis=1)).ravel()
    train_t = train_matrix.T.tocsr()
    best = np.zeros(len(test))
    for start in range(0, len(test), chunk):
        block = (test_matrix[start : start + chunk] @ train_t).tocoo()
        if block.nnz == 0:
            continue
        jaccard = block.data / (test_sizes[start + block.row] + train_sizes[block.col] - block.data)
        np.maximum.at(best, start + block.row, jaccard)
    return {t: (float((best >= t).mean()), int((best >= t).sum())) for t in thresholds}


def near_duplicate_share(test: list[str], train: list[str], threshold: float = 0.8) -> tuple[float, int]:
    """(share, count) of `test` texts with a `train` text of 3-gram Jaccard >= threshold."""
    return near_duplicate_shares(test, train, (threshold,))[threshold]


def message_figures(messages: pd.DataFrame, splits: pd.Series, threshold: float) -> dict:
    """Distributions and diversity of the message table (`splits` from pipeline.data.labelled.assign_splits)."""
    normalized = messages["text"].map(normalize)
    pre = messages["stage"] == "pre_sales"
    figures: dict = {
        "messages": int(len(messages)),
        "groups": int(messages["group"].nunique()),
        "distinct_normalized": int(normalized.nunique()),
        "distinct_raw": int(messages["text"].nunique()),
        "intent_counts": {k: int(v) for k, v in messages["intent"].value_counts().items()},
        "category_counts": {k: int(v) for k, v in messages["category"].value_counts().items()},
        "stage_counts": {k: int(v) for k, v in messages["stage"].value_counts().items()},
        "purchase_intent_rate_pre_sales": float(messages.loc[pre, "purchase_intent"].mean()),
        "purchase_intent_rate_after_sales": float(messages.loc[~pre, "purchase_intent"].mean()) if (~pre).any() else 0.0,
        "purchase_intent_positives": int(messages["purchase_intent"].sum()),
    }
    per_intent: dict[str, dict] = {}
    for intent, frame in messages.groupby("intent", sort=True):
        texts = normalized[frame.index]
        grams: set[str] = set()
        for text in texts:
            grams.update(char_ngrams(text))
        per_intent[intent] = {
            "messages": int(len(frame)),
            "seeds": int(frame["group"].nunique()),
            "distinct_3grams": len(grams),
            "purchase_intent_rate": float(frame["purchase_intent"].mean()),
            "pre_sales_share": float((frame["stage"] == "pre_sales").mean()),
            "median_length": float(frame["text"].str.len().median()),
        }
    figures["per_intent"] = per_intent
    lengths = messages["text"].str.len()
    figures["register"] = {
        "median_length": float(lengths.median()),
        "share_at_most_2_chars": float((lengths <= 2).mean()),
        "share_at_least_40_chars": float((lengths >= 40).mean()),
        "share_with_placeholder": float(messages["text"].map(lambda t: any(m in t for m in PLACEHOLDER_MARKERS)).mean()),
        "share_with_raw_long_number": float(messages["text"].str.contains(r"\d{11,}", regex=True).mean()),
        "share_with_link": float(messages["text"].str.contains(r"https?://|¥[A-Za-z0-9]{8,14}¥", regex=True).mean()),
        "share_with_latin": float(messages["text"].str.contains(r"[A-Za-z]", regex=True).mean()),
        "share_with_fullwidth": float(messages["text"].str.contains(r"[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]", regex=True).mean()),
        "share_multiline": float(messages["text"].str.contains("\n").mean()),
        "share_with_emoji_or_emoticon": float(messages["text"].map(_has_emoji).mean()),
        "share_order_card": float(messages["text"].str.contains(r"订单号[:：]|订单编号|\[订单信息\]|咨询订单", regex=True).mean()),
    }
    split_counts = splits.value_counts()
    train_texts = normalized[splits == "train"].tolist()
    test_texts = normalized[splits == "test"].tolist()
    shares = near_duplicate_shares(test_texts, train_texts, tuple(sorted({0.5, 0.6, 0.7, threshold})))
    figures["split"] = {k: int(v) for k, v in split_counts.items()}
    figures["near_duplicate_share_test_vs_train"], figures["near_duplicate_count_test_vs_train"] = shares[threshold]
    figures["near_duplicate_share_by_threshold"] = {str(t): v[0] for t, v in shares.items()}
    figures["normalized_texts_in_two_splits"] = int(
        pd.DataFrame({"n": normalized, "s": splits}).groupby("n")["s"].nunique().gt(1).sum()
    )
    return figures


def _has_emoji(text: str) -> bool:
    return any(ord(c) >= 0x1F300 for c in text) or any(m in text for m in ("[微笑]", "[捂脸]", "^_^", "QAQ", "orz", "T_T", "[玫瑰]", "[发怒]", "[抱拳]", "[OK]", "╭", "(๑", ":)", "：）"))


def conversation_figures(conversations: Iterable[dict], orders: pd.DataFrame, window_hours: float, start: str = "first") -> dict:
    """Flows, expressed intent and the lost-shopper outcome, recomputed from the written files."""
    rows = []
    message_roles: Counter[str] = Counter()
    buyer_intents: Counter[str] = Counter()
    turns = []
    for conv in conversations:
        message_roles.update(m["role"] for m in conv["messages"])
        buyer_intents.update(m["intent"] for m in conv["messages"] if m["role"] == "buyer")
        turns.append(len(conv["messages"]))
        rows.append(
            {
                "conversation_id": conv["conversation_id"],
                "buyer_id": conv["buyer_id"],
                "shop_id": conv["shop_id"],
                "stage": conv["stage"],
                "scenario": conv["scenario"],
                "category": conv["category"],
                "expressed": conv["expressed_purchase_intent"],
                "first": conv["messages"][0]["sent_at"],
                "last": conv["messages"][-1]["sent_at"],
            }
        )
    frame = pd.DataFrame(rows)
    frame["lost"] = lost_flags(frame, orders, window_hours, start)
    during = ~lost_flags(frame, orders, window_hours, "first") & lost_flags(frame, orders, window_hours, "last")
    pre = frame[frame["stage"] == "pre_sales"]
    lost_pre = pre[pre["lost"]]
    per_scenario = (
        frame.groupby("scenario")
        .agg(conversations=("conversation_id", "size"), expressed=("expressed", "mean"), converted=("lost", lambda s: 1 - s.mean()))
        .reset_index()
    )
    conversations_per_buyer = frame["buyer_id"].value_counts()
    return {
        "order_kinds": order_kinds(frame, orders, window_hours),
        "paid_during_conversation": int(during.sum()),
        "conversations": int(len(frame)),
        "buyers": int(frame["buyer_id"].nunique()),
        "buyers_with_several_conversations": int((conversations_per_buyer > 1).sum()),
        "shops": int(frame["shop_id"].nunique()),
        "orders": int(len(orders)),
        "messages": int(sum(message_roles.values())),
        "role_counts": dict(message_roles),
        "median_messages_per_conversation": float(np.median(turns)),
        "stage_counts": {k: int(v) for k, v in frame["stage"].value_counts().items()},
        "category_counts": {k: int(v) for k, v in frame["category"].value_counts().items()},
        "buyer_intent_counts": dict(buyer_intents.most_common()),
        "expressed_rate": float(frame["expressed"].mean()),
        "expressed_rate_pre_sales": float(pre["expressed"].mean()),
        "lost_pre_sales": int(len(lost_pre)),
        "lost_rate_pre_sales": float(pre["lost"].mean()),
        "lost_pre_sales_with_intent_share": float(lost_pre["expressed"].mean()) if len(lost_pre) else 0.0,
        "converted_with_intent_share": float(pre[~pre["lost"]]["expressed"].mean()) if (~pre["lost"]).any() else 0.0,
        "per_scenario": per_scenario.to_dict(orient="records"),
    }


def lost_flags(conversations: pd.DataFrame, orders: pd.DataFrame, window_hours: float, start: str = "first") -> pd.Series:
    """True where the buyer paid no order at that shop from the `start` message ("first" or "last", as
    flag.attribution_start) to the last message + window."""
    def times(column: str) -> pd.Series:
        return pd.to_datetime(conversations[column], format="ISO8601", utc=True).reset_index(drop=True)

    keyed = pd.DataFrame({"buyer_id": conversations["buyer_id"].values, "shop_id": conversations["shop_id"].values,
                          "start": times(start), "last": times("last"), "row": np.arange(len(conversations))})
    paid = orders.assign(paid=pd.to_datetime(orders["paid_at"], format="ISO8601", utc=True))[["buyer_id", "shop_id", "paid"]]
    joined = keyed.merge(paid, on=["buyer_id", "shop_id"], how="inner")
    window = pd.Timedelta(hours=window_hours)
    inside = joined[(joined["paid"] >= joined["start"]) & (joined["paid"] <= joined["last"] + window)]
    converted = np.zeros(len(conversations), dtype=bool)
    converted[inside["row"].unique()] = True
    return pd.Series(~converted, index=conversations.index, name="lost")


def order_kinds(conversations: pd.DataFrame, orders: pd.DataFrame, window_hours: float) -> dict[str, int]:
    """How each order relates to the buyer's conversations: it converts one, or is noise of some kind."""
    last = pd.to_datetime(conversations["last"], format="ISO8601", utc=True).reset_index(drop=True)
    talks = pd.DataFrame({"buyer_id": conversations["buyer_id"].values, "shop_id": conversations["shop_id"].values, "last": last})
    paid = orders.assign(paid=pd.to_datetime(orders["paid_at"], format="ISO8601", utc=True), order=np.arange(len(orders)))
    joined = paid.merge(talks, on=["buyer_id", "shop_id"], how="left")
    window = pd.Timedelta(hours=window_hours)
    joined["inside"] = (joined["paid"] >= joined["last"]) & (joined["paid"] <= joined["last"] + window)
    joined["late"] = joined["paid"] > joined["last"] + window
    joined["before"] = joined["paid"] < joined["last"]
    per_order = joined.groupby("order").agg(talked=("last", "count"), inside=("inside", "any"), late=("late", "any"), before=("before", "any"))
    kinds = np.select(
        [per_order["talked"] == 0, per_order["inside"], per_order["late"] & ~per_order["before"], per_order["before"] & ~per_order["late"]],
        ["at_a_shop_without_conversation", "converts_a_conversation", "after_the_window", "before_the_conversation"],
        default="before_one_after_another",
    )
    return {str(k): int(v) for k, v in pd.Series(kinds).value_counts().items()}


def read_jsonl(path: str | Path) -> Iterable[dict]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)
