"""data/conversations.jsonl and data/orders.csv: schema, labels, holdout and the lost-shopper outcome."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime

import pandas as pd
import pytest

from pipeline.synth.dialogue import CONVERSATION_KEYS, make_shops
from pipeline.synth.seeds import is_conversation_seed
from pipeline.synth.stats import lost_flags

ISO_CST = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+08:00$")


@pytest.fixture(scope="module")
def frame(conversations: list[dict], orders: pd.DataFrame, corpus_config) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "conversation_id": [c["conversation_id"] for c in conversations],
            "buyer_id": [c["buyer_id"] for c in conversations],
            "shop_id": [c["shop_id"] for c in conversations],
            "stage": [c["stage"] for c in conversations],
            "scenario": [c["scenario"] for c in conversations],
            "expressed": [c["expressed_purchase_intent"] for c in conversations],
            "first": [c["messages"][0]["sent_at"] for c in conversations],
            "last": [c["messages"][-1]["sent_at"] for c in conversations],
            "questions": [sum(m["role"] == "buyer" and m["intent"] in ("size_fit", "stock", "shipping_time", "product_spec", "price_promo", "logistics") for m in c["messages"]) for c in conversations],
        }
    )
    window = corpus_config.conversations.window_hours
    table["lost"] = lost_flags(table, orders, window, corpus_config.conversations.attribution_start.split("_")[0])
    # orders are paid after the chat: counting from the first or the last message gives the same labels
    assert (table["lost"] == lost_flags(table, orders, window, "last")).all()
    return table


def test_schema(conversations: list[dict], taxonomy_intents, categories) -> None:
    assert len(conversations) >= 3000
    ids = [c["conversation_id"] for c in conversations]
    assert len(set(ids)) == len(ids)
    for conversation in conversations:
        assert tuple(conversation) == CONVERSATION_KEYS
        assert conversation["category"] in categories
        assert conversation["stage"] in ("pre_sales", "after_sales")
        assert conversation["messages"] and conversation["messages"][0]["role"] == "buyer"
        times = []
        for message in conversation["messages"]:
            assert message["role"] in ("buyer", "agent", "bot") and message["text"].strip()
            assert ISO_CST.match(message["sent_at"]), message["sent_at"]
            times.append(datetime.fromisoformat(message["sent_at"]))
            if message["role"] == "buyer":
                assert message["intent"] in taxonomy_intents
                assert message["purchase_intent"] in (0, 1)
                assert message["group"]
            else:
                assert set(message) == {"role", "text", "sent_at"}
        assert times == sorted(times)


def test_expressed_purchase_intent_agrees_with_messages(conversations: list[dict]) -> None:
    for conversation in conversations:
        expected = int(any(m.get("purchase_intent") == 1 for m in conversation["messages"]))
        assert conversation["expressed_purchase_intent"] == expected


def test_conversations_use_only_holdout_seeds(conversations: list[dict], messages: pd.DataFrame, seeds, corpus_config) -> None:
    groups = {m["group"] for c in conversations for m in c["messages"] if m["role"] == "buyer"}
    assert not groups & set(messages["group"]), "a seed feeds both messages.csv and conversations"
    by_id = {s.id: s for s in seeds}
    fraction = corpus_config.holdout.conversation_seed_fraction
    assert all(is_conversation_seed(by_id[g], fraction) for g in groups)
    for conversation in conversations:
        for message in conversation["messages"]:
            if message["role"] == "buyer":
                seed = by_id[message["group"]]
                assert (message["intent"], message["purchase_intent"]) == (seed.intent, seed.purchase_intent)
                assert seed.fits(conversation["category"], conversation["stage"])


def test_flows_cover_the_scenarios(conversations: list[dict], frame: pd.DataFrame, corpus_config, categories) -> None:
    assert set(frame["scenario"]) == set(corpus_config.conversations.scenarios)
    assert {c["category"] for c in conversations} == categories
    roles = Counter(m["role"] for c in conversations for m in c["messages"])
    assert roles["agent"] > 0 and roles["bot"] > 0
    implicit = [c for c in conversations if c["scenario"] == "implicit_interest"]
    assert implicit and all(c["expressed_purchase_intent"] == 0 for c in implicit)
    asked = [{m["intent"] for m in c["messages"] if m["role"] == "buyer"} for c in implicit]
    assert sum({"stock", "shipping_time"} <= intents for intents in asked) / len(asked) > 0.5


def test_orders_reference_known_buyers_and_shops(orders: pd.DataFrame, frame: pd.DataFrame, corpus_config) -> None:
    assert list(orders.columns) == ["order_id", "buyer_id", "shop_id", "paid_at"]
    assert orders["order_id"].is_unique and orders["order_id"].str.fullmatch(r"\d{18}").all()
    assert orders["paid_at"].str.match(ISO_CST).all()
    assert set(orders["buyer_id"]) <= set(frame["buyer_id"])
    shops = {s.id for pool in make_shops(corpus_config, corpus_config.seed).values() for s in pool}
    assert set(orders["shop_id"]) <= shops and set(frame["shop_id"]) <= shops


def test_lost_shoppers(frame: pd.DataFrame, corpus_config) -> None:
    pre = frame[frame["stage"] == "pre_sales"]
    lost = pre[pre["lost"]]
    assert 0.3 < len(lost) / len(pre) < 0.9
    target = corpus_config.conversations.lost_with_intent_share
    assert abs(lost["expressed"].mean() - target) < 0.05
    bought = pre[~pre["lost"]]
    # buyers mostly said so or asked a lot; some impulse buyers and some intent-expressers who left
    assert ((bought["expressed"] == 1) | (bought["questions"] >= 3)).mean() > 0.6
    assert (bought["expressed"] == 0).any() and (lost["expressed"] == 1).any()


def test_outcome_noise_exercises_the_lost_logic(frame: pd.DataFrame, orders: pd.DataFrame, corpus_config) -> None:
    assert (frame["buyer_id"].value_counts() > 1).sum() > 100, "buyers with several conversations"
    talked = set(zip(frame["buyer_id"], frame["shop_id"], strict=True))
    assert sum((b, s) not in talked for b, s in zip(orders["buyer_id"], orders["shop_id"], strict=True)) > 20, "orders at other shops"
    last = frame.assign(last=pd.to_datetime(frame["last"], format="ISO8601", utc=True))
    paid = orders.assign(paid=pd.to_datetime(orders["paid_at"], format="ISO8601", utc=True))
    joined = paid.merge(last, on=["buyer_id", "shop_id"])
    window = pd.Timedelta(hours=corpus_config.conversations.window_hours)
    assert (joined["paid"] > joined["last"] + window).sum() > 20, "orders after the window"
    assert (joined["paid"] < joined["last"]).sum() > 20, "orders before the conversation (after-sales)"
