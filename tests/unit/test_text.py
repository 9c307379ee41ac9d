"""The normaliser must make raw and anonymised exports look alike, and masking must hide PII."""

import pytest

from pipeline.text import TOKENS, mask_pii, normalize


@pytest.mark.parametrize(
    ("raw", "anonymised"),
    [
        ("订单号：123456789012345678 怎么还没发货", "订单号:[订单x] 怎么还没发货"),
        ("我电话13812345678", "我电话[电话x]"),
        ("https://item.taobao.com/item.htm?id=6543210987 这个有货吗", "[链接x] 这个有货吗"),
        ("¥128 能便宜点吗", "[金额x] 能便宜点吗"),
        ("2026-11-03能到吗", "[日期x]能到吗"),
        ("买3件", "买[数字x]件"),
    ],
)
def test_raw_and_anonymised_exports_normalise_identically(raw, anonymised):
    assert normalize(raw) == normalize(anonymised)


def test_full_width_and_case_are_folded():
    assert normalize("ＸＬ码有吗？ＯＫ") == normalize("xl码有吗?ok")


def test_whitespace_and_long_repeats_are_collapsed():
    assert normalize("  在吗   \n 亲 ") == "在吗 亲"
    assert normalize("哈哈哈哈哈哈哈") == "哈哈哈"


def test_distinct_kinds_get_distinct_tokens():
    text = normalize("13812345678 123456789012345678 [金额x]")
    assert TOKENS["phone"] in text and TOKENS["order"] in text and TOKENS["money"] in text


def test_non_string_input_is_tolerated():
    assert normalize(None) == ""
    assert normalize(12) == TOKENS["number"]


@pytest.mark.parametrize(
    ("text", "secret", "mask"),
    [
        ("电话13812345678谢谢", "13812345678", "[电话x]"),
        ("订单123456789012345678", "123456789012345678", "[订单x]"),
        ("地址浙江省杭州市余杭区文一西路969号", "文一西路969号", "[地址x]"),
        ("收货人张三", "张三", "[姓名x]"),
        ("链接 https://item.jd.com/100012.html", "item.jd.com", "[链接x]"),
        ("邮箱abc@test.com", "abc@test.com", "[邮箱x]"),
    ],
)
def test_mask_pii_hides_identifying_data(text, secret, mask):
    masked = mask_pii(text)
    assert secret not in masked
    assert mask in masked


def test_mask_pii_keeps_the_message_readable():
    assert mask_pii("M码还有货吗 165斤穿多大") == "M码还有货吗 165斤穿多大"
