"""Model behaviour on the default model: minimum functionality, invariance and direction.

The probe messages are written here by hand (not taken from any evaluation set)."""

from __future__ import annotations

import pytest

from pipeline.bundle import load_bundle
from pipeline.inference import Predictor

MINIMUM = {
    "greeting": ["在吗", "你好 有人吗", "亲 在不在呀"],
    "thanks": ["好的谢谢", "谢谢亲", "辛苦了 拜拜"],
    "affirm": ["好的", "嗯嗯", "可以的"],
    "deny": ["不用了", "没有了", "算了不要了"],
    "provide_info": ["订单号123456789012345678", "13812345678", "收货人张三 电话13912345678"],
    "product_spec": ["这个是纯棉的吗", "保质期多久", "是正品吗"],
    "size_fit": ["身高165体重120斤穿多大码", "偏大还是偏小", "宝宝两岁穿什么码"],
    "stock": ["黑色还有货吗", "什么时候补货", "现在有现货吗"],
    "price_promo": ["能便宜点吗", "有优惠券吗", "买两件有折扣吗"],
    "place_order": ["怎么下单", "我拍了你改下价", "就要这个了 拍哪个链接"],
    "shipping_time": ["什么时候发货", "今天能发吗", "怎么还没发货啊"],
    "logistics": ["发什么快递", "物流怎么不动了", "能发顺丰吗"],
    "order_change": ["帮我改一下地址", "拍错颜色了能改吗", "帮我取消订单"],
    "payment": ["可以用花呗吗", "付款失败了", "怎么扣了两次钱"],
    "invoice": ["能开发票吗", "发票抬头开公司的", "电子发票在哪看"],
    "return_refund": ["我要退货", "退款什么时候到账", "支持七天无理由吗"],
    "after_sales": ["能换个码吗", "保修多久", "用了两天就不制冷了 怎么修"],
    "complaint": ["收到是坏的 太差了", "少发了一件 你们怎么回事", "态度太差了 给你差评"],
    "human_agent": ["转人工", "你是机器人吗", "找你们主管来"],
    "other": ["哈哈哈", "今天天气不错", "?"],
}


@pytest.fixture(scope="module")
def predictor(corpus_bundle_dir):
    return Predictor(load_bundle(corpus_bundle_dir))


@pytest.mark.parametrize("intent", sorted(MINIMUM))
def test_minimum_functionality_per_intent(predictor, intent):
    predicted = predictor.predict(MINIMUM[intent])["intent"].tolist()
    correct = sum(p == intent for p in predicted)
    assert correct >= 2, f"{intent}: predicted {predicted}"


CLEAR = ["黑色还有货吗", "什么时候发货", "能开发票吗", "我要退货", "能便宜点吗", "转人工", "发什么快递"]


@pytest.mark.parametrize("decorate", [lambda t: "亲 " + t, lambda t: t + " 😊", lambda t: t + "？？？", lambda t: t + "哈", lambda t: "在吗 " + t])
def test_chat_register_does_not_change_the_intent(predictor, decorate):
    plain = predictor.predict(CLEAR)["intent"].tolist()
    decorated = predictor.predict([decorate(t) for t in CLEAR])["intent"].tolist()
    assert decorated == plain


def test_swapping_an_order_number_does_not_change_anything(predictor):
    a = predictor.predict(["订单123456789012345678 怎么还没发货", "[订单x] 怎么还没发货"])
    b = predictor.predict(["订单987654321098765432 怎么还没发货", "[订单x] 怎么还没发货"])
    assert a["intent"].tolist() == b["intent"].tolist()
    assert a["purchase_score"].tolist() == pytest.approx(b["purchase_score"].tolist())


@pytest.mark.parametrize("base", ["这款有黑色吗", "包邮吗", "这个多少钱", "M码有货吗"])
@pytest.mark.parametrize("commitment", ["我要了", "怎么下单"])
def test_stating_a_wish_to_buy_raises_the_purchase_score(predictor, base, commitment):
    scores = predictor.predict([base, f"{base} {commitment}"])["purchase_score"].tolist()
    assert scores[1] > scores[0]


def test_after_sales_messages_score_low_for_purchase(predictor):
    scores = predictor.predict(["我要退货", "收到是坏的", "退款什么时候到"])["purchase_score"]
    assert (scores < predictor.purchase_threshold).all()


def test_empty_text_is_other_with_fallback(predictor):
    row = predictor.predict([""]).iloc[0]
    assert row["intent"] == "other" and bool(row["fallback"]) and row["purchase_intent"] == 0
