"""A small labelled message frame for the serving tests: trains in seconds, loads in under a second.

Hand-written phrases per intent (each phrase is one `group`), expanded with the chat particles buyers
add, so the model is real (jieba features, calibration, thresholds) but tiny. Not a quality benchmark.
"""

from __future__ import annotations

import pandas as pd

# intent -> [(phrase, purchase_intent)]
PHRASES: dict[str, list[tuple[str, int]]] = {
    "greeting": [("在吗", 0), ("你好", 0), ("亲在不在", 0), ("有人吗", 0), ("在不在呀", 0), ("客服在吗", 0), ("哈喽", 0), ("您好 请问在吗", 0)],
    "thanks": [("谢谢", 0), ("好的谢谢", 0), ("辛苦了", 0), ("没事了拜拜", 0), ("多谢亲", 0), ("感谢感谢", 0), ("谢啦", 0), ("谢谢你哦", 0)],
    "affirm": [("好的", 0), ("嗯嗯", 0), ("对", 0), ("是的", 0), ("可以", 0), ("ok", 0), ("行", 0), ("没问题", 0)],
    "deny": [("不用了", 0), ("没有了", 0), ("不是", 0), ("算了", 0), ("不要了", 0), ("不需要", 0), ("没事 不用", 0), ("不了", 0)],
    "stock": [
        ("这款有货吗", 0), ("黑色还有吗", 0), ("什么时候补货", 0), ("有货我就拍", 1), ("M码还有没有", 0),
        ("预售几号发", 0), ("有现货的话我现在就下单", 1), ("白色断货了吗", 0),
    ],
    "size_fit": [
        ("165斤穿多大", 0), ("偏大还是偏小", 0), ("宝宝两岁穿什么码", 0), ("我一米七穿L可以吗", 0),
        ("身高160体重100穿什么码", 0), ("鞋子偏码吗", 0), ("帮我推荐个尺码 合适就买", 1), ("腰围70选哪个码", 0),
    ],
    "price_promo": [
        ("能便宜点吗", 0), ("有优惠券吗", 0), ("买两件有折扣吗", 0), ("便宜点我就买了", 1), ("包邮我就拍", 1),
        ("送什么赠品", 0), ("降价了能退差价吗", 0), ("有满减吗 有的话我多买几件", 1),
    ],
    "shipping_time": [
        ("什么时候发货", 0), ("今天能发吗", 0), ("几天能到", 0), ("现在拍今天能发吗", 1), ("怎么还没出库", 0),
        ("下单后多久发", 0), ("明天能到的话我就下单", 1), ("周末发货吗", 0),
    ],
    "logistics": [
        ("发什么快递", 0), ("物流怎么不动了", 0), ("能送货上门吗", 0), ("能发顺丰吗", 0), ("到哪了", 0),
        ("能发顺丰的话我马上拍", 1), ("快递单号多少", 0), ("可以发邮政吗", 0),
    ],
    "complaint": [
        ("收到是坏的", 0), ("少发了一件", 0), ("态度太差了", 0), ("给你差评", 0), ("质量太差了", 0),
        ("颜色和图片差太多", 0), ("包装都破了", 0), ("发错货了", 0),
    ],
    "return_refund": [
        ("我要退货", 0), ("七天无理由吗", 0), ("退款什么时候到", 0), ("运费险有吗", 0), ("怎么申请退款", 0),
        ("退货地址发我", 0), ("不合适能退吗", 0), ("退款原路返回吗", 0),
    ],
    "other": [("哈哈", 0), ("?", 0), ("今天天气不错", 0), ("emmm", 0), ("。。。", 0), ("你猜", 0), ("随便问问", 0), ("刚才手滑了", 0)],
}
PREFIXES = ("", "亲 ", "你好 ", "亲亲 ", "请问 ")
SUFFIXES = ("", "呢", "哈", "呀", "~", "？")


def labelled_frame() -> pd.DataFrame:
    """text, intent, purchase_intent, group: 12 intents x 8 phrases x 6 variants (576 rows)."""
    rows = []
    for intent, phrases in PHRASES.items():
        for p, (phrase, purchase) in enumerate(phrases):
            for v in range(6):
                text = f"{PREFIXES[(p + v) % len(PREFIXES)]}{phrase}{SUFFIXES[v % len(SUFFIXES)]}"
                rows.append({"text": text, "intent": intent, "purchase_intent": purchase, "group": f"{intent}-{p:02d}"})
    return pd.DataFrame(rows)
