"""Small labelled data and chat fixtures for the batch tests: distinctive phrases per intent, so a model
trained in seconds classifies the fixture messages reliably."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

# intent -> [(phrase, purchase_intent)]
PHRASES: dict[str, list[tuple[str, int]]] = {
    "greeting": [("在吗", 0), ("你好", 0), ("亲在不在", 0), ("有人吗", 0), ("在不在呀", 0), ("哈喽客服", 0)],
    "thanks": [("谢谢", 0), ("好的谢谢", 0), ("辛苦了", 0), ("没事了拜拜", 0), ("多谢亲", 0), ("感谢感谢", 0)],
    "affirm": [("好的", 0), ("嗯嗯", 0), ("对的", 0), ("是的", 0), ("可以的", 0), ("ok", 0)],
    "price_promo": [
        ("能便宜点吗", 0), ("有优惠券吗", 0), ("买两件有折扣吗", 0), ("便宜点我就买了", 1), ("有券我马上拍", 1), ("能不能再少点", 0),
    ],
    "stock": [("有货吗", 0), ("黑色还有吗", 0), ("什么时候补货", 0), ("有货我就要", 1), ("现货还有吗", 0), ("补货了我就下单", 1)],
    "size_fit": [
        ("165斤穿多大", 0), ("偏大还是偏小", 0), ("我穿什么码", 0), ("尺码怎么选", 0), ("身高170选哪个码我现在就拍", 1), ("M码合适我就买", 1),
    ],
    "shipping_time": [
        ("什么时候发货", 0), ("今天能发吗", 0), ("几天能到", 0), ("现在拍今天能发吗", 1), ("下单后多久发货", 0), ("明天能到我就拍", 1),
    ],
    "place_order": [("我要了", 1), ("怎么下单", 1), ("拍哪个链接", 1), ("我拍了你改下价", 1), ("就要这个了", 1), ("想买两箱", 1)],
    "complaint": [("收到是坏的", 0), ("少发了一件", 0), ("态度太差了", 0), ("给你差评", 0), ("质量太差", 0), ("投诉你们", 0)],
    "return_refund": [("我要退货", 0), ("七天无理由吗", 0), ("退款什么时候到", 0), ("申请退款", 0), ("怎么退货", 0), ("退货运费谁出", 0)],
    "product_spec": [("是纯棉的吗", 0), ("保质期多久", 0), ("是正品吗", 0), ("怎么用", 0), ("什么材质", 0), ("和那款有什么区别", 0)],
    "other": [("哈哈", 0), ("今天天气不错", 0), ("嗯哼", 0), ("随便问问", 0), ("啊这", 0), ("吃饭了没", 0)],
}
_PREFIXES = ("", "亲 ")
_SUFFIXES = ("", "呢", "？")


def labelled_messages() -> pd.DataFrame:
    """About 430 messages: each phrase with prefixes and suffixes, one group per phrase."""
    rows = []
    for intent, phrases in PHRASES.items():
        for number, (phrase, purchase) in enumerate(phrases):
            for prefix in _PREFIXES:
                for suffix in _SUFFIXES:
                    rows.append((f"{prefix}{phrase}{suffix}", intent, purchase, f"{intent}-{number}"))
    frame = pd.DataFrame(rows, columns=["text", "intent", "purchase_intent", "group"]).drop_duplicates("text")
    return frame.reset_index(drop=True)


def labelled_conversations() -> list[dict]:
    """Conversations for the second-level model: a buyer with and without a purchase phrase."""
    conversations = []
    buying = [p for phrases in PHRASES.values() for p, flag in phrases if flag]
    asking = [p for intent in ("price_promo", "stock", "size_fit", "shipping_time", "product_spec") for p, flag in PHRASES[intent] if not flag]
    for i in range(120):
        expressed = i % 2
        middle = buying[i % len(buying)] if expressed else asking[i % len(asking)]
        turns = [("buyer", "在吗"), ("agent", "亲 在的"), ("buyer", asking[(i * 7) % len(asking)]), ("agent", "有的亲"), ("buyer", middle)]
        if i % 3 == 0:
            turns.append(("buyer", "好的谢谢"))
        conversations.append({"conversation_id": f"train-{i}", "buyer_id": f"tb-{i}", "expressed_purchase_intent": expressed, "turns": turns})
    return conversations


# Fixture conversations: (conversation_id, buyer_id, shop_id, category, [(role, text, sent_at)]).
T0 = "2024-05-01T10:00:00+08:00"


def chat_fixture() -> list[tuple[str, str, str, str, list[tuple[str, str, str]]]]:
    """Conversations covering the lost rules, policy and nudge kinds (orders in `orders_fixture`)."""
    return [
        # c1: price concern, lost (no order at all) -> coupon
        ("c1", "b1", "s1", "apparel", [
            ("buyer", "在吗", "2024-05-01T10:00:00+08:00"),
            ("agent", "亲 在的", "2024-05-01T10:00:30+08:00"),
            ("buyer", "能便宜点吗 便宜点我就买了", "2024-05-01T10:01:00+08:00"),
            ("agent", "已经是最低价了亲", "2024-05-01T10:02:00+08:00"),
        ]),
        # c2: order exactly 72h after the last message -> not lost
        ("c2", "b2", "s1", "apparel", [
            ("buyer", "有货吗 有货我就要", "2024-05-01T11:00:00+08:00"),
            ("agent", "有的亲", "2024-05-01T11:01:00+08:00"),
        ]),
        # c3: order 72h + 1s after the last message -> lost; stock -> restock alert
        ("c3", "b3", "s1", "apparel", [
            ("buyer", "黑色还有吗 有货我就要", "2024-05-01T12:00:00+08:00"),
            ("agent", "黑色缺货了亲", "2024-05-01T12:01:00+08:00"),
        ]),
        # c4: order before the conversation only -> lost; size -> size help; buyer spoke last
        ("c4", "b4", "s2", "apparel", [
            ("buyer", "身高170选哪个码我现在就拍 我穿什么码", "2024-05-01T13:00:00+08:00"),
        ]),
        # c5: order at another shop in the window -> lost here; shipping time -> shipping promise;
        # ends at 22:31, so the nudge waits for 08:00 after the quiet hours
        ("c5", "b5", "s2", "food", [
            ("buyer", "现在拍今天能发吗", "2024-05-01T22:20:00+08:00"),
            ("agent", "今天发不了了亲", "2024-05-01T22:21:00+08:00"),
            ("buyer", "明天能到我就拍 什么时候发货", "2024-05-01T22:30:00+08:00"),
            ("agent", "明天发", "2024-05-01T22:31:00+08:00"),
        ]),
        # c6: complained -> skipped even though lost
        ("c6", "b6", "s1", "food", [
            ("buyer", "我要了 怎么下单", "2024-05-01T09:00:00+08:00"),
            ("agent", "直接拍就行", "2024-05-01T09:01:00+08:00"),
            ("buyer", "收到是坏的 质量太差 给你差评 投诉你们", "2024-05-01T09:05:00+08:00"),
        ]),
        # c7 and c8: same buyer and shop a day apart -> one nudge in the window
        ("c7", "b7", "s3", "beauty", [
            ("buyer", "我要了 拍哪个链接", "2024-05-02T10:00:00+08:00"),
            ("agent", "这个链接亲", "2024-05-02T10:01:00+08:00"),
        ]),
        ("c8", "b7", "s3", "beauty", [
            ("buyer", "就要这个了 怎么下单", "2024-05-03T10:00:00+08:00"),
            ("agent", "直接拍", "2024-05-03T10:01:00+08:00"),
        ]),
        # c9: same buyer b7 at another shop -> its own nudge; bought at s3 does not matter here
        ("c9", "b7", "s4", "beauty", [
            ("buyer", "想买两箱 怎么下单", "2024-05-02T10:00:00+08:00"),
            ("agent", "好的亲", "2024-05-02T10:01:00+08:00"),
        ]),
        # c10: paid during the conversation -> not lost
        ("c10", "b10", "s1", "apparel", [
            ("buyer", "我要了", "2024-05-01T15:00:00+08:00"),
            ("buyer", "我拍了你改下价", "2024-05-01T15:10:00+08:00"),
            ("agent", "好的改了", "2024-05-01T15:20:00+08:00"),
        ]),
        # c11: greetings only -> no purchase intent (with the model's threshold)
        ("c11", "b11", "s1", "home", [
            ("buyer", "在吗", "2024-05-01T16:00:00+08:00"),
            ("agent", "在的亲", "2024-05-01T16:00:10+08:00"),
            ("buyer", "哈哈 好的谢谢", "2024-05-01T16:01:00+08:00"),
        ]),
    ]


def orders_fixture() -> list[tuple[str, str, str, str]]:
    """order_id, buyer_id, shop_id, paid_at."""
    return [
        ("o2", "b2", "s1", "2024-05-04T11:01:00+08:00"),  # c2 last message + exactly 72h
        ("o3", "b3", "s1", "2024-05-04T12:01:01+08:00"),  # c3 last message + 72h + 1s
        ("o4", "b4", "s2", "2024-04-30T13:00:00+08:00"),  # before c4
        ("o5", "b5", "s9", "2024-05-02T10:00:00+08:00"),  # another shop
        ("o9", "b7", "s3", "2024-06-30T10:00:00+08:00"),  # long after the window
        ("o10", "b10", "s1", "2024-05-01T15:12:00+08:00"),  # during c10
    ]


def flat_rows(conversations=None) -> pd.DataFrame:
    rows = []
    for cid, buyer, shop, category, turns in conversations or chat_fixture():
        for role, text, sent_at in turns:
            rows.append({"conversation_id": cid, "buyer_id": buyer, "shop_id": shop, "category": category,
                         "role": role, "text": text, "sent_at": sent_at})
    return pd.DataFrame(rows)


def write_csv(frame: pd.DataFrame, path: Path, encoding: str = "utf-8") -> Path:
    path.write_bytes(frame.to_csv(index=False).encode(encoding))
    return path


def write_orders(path: Path, orders=None) -> Path:
    frame = pd.DataFrame(orders or orders_fixture(), columns=["order_id", "buyer_id", "shop_id", "paid_at"])
    frame.to_csv(path, index=False)
    return path


def write_conversation_jsonl(path: Path, conversations=None) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for cid, buyer, shop, category, turns in conversations or chat_fixture():
            record = {"conversation_id": cid, "buyer_id": buyer, "shop_id": shop, "category": category,
                      "messages": [{"role": r, "text": t, "sent_at": s} for r, t, s in turns]}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
