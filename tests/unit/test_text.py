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
        ("加我weixin13812345678", "13812345678", "[电话x]"),
        ("phone13812345678 收货", "13812345678", "[电话x]"),
        ("打138.1234.5678找我", "1234.5678", "[电话x]"),
        ("tel:+86 138 1234 5678", "1234 5678", "[电话x]"),
    ],
)
def test_mask_pii_hides_identifying_data(text, secret, mask):
    masked = mask_pii(text)
    assert secret not in masked
    assert mask in masked


def test_mask_pii_keeps_the_message_readable():
    assert mask_pii("M码还有货吗 165斤穿多大") == "M码还有货吗 165斤穿多大"


HOSTILE = {
    "latin run": "x" * 1_000_000,
    "dotted labels": "a." * 500_000,
    "at signs": ("a" * 999 + "@") * 1000,
    "digits": "1" * 1_000_000,
    "digits and dots": "1." * 500_000,
    "han run with 省": "广东省" * 333_333,
    "street without number": ("文一西路" + "9" * 96) * 10_000,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_normalize_and_mask_are_linear_on_hostile_text(name):
    """A megabyte of adversarial text is handled in linear time, whatever the length cap. The old URL and
    e-mail patterns took 17 s on 40k Latin letters, so about three hours on this megabyte; an idle
    machine takes 0.1-0.6 s. The bound is loose on purpose: it tells linear from quadratic on a loaded
    2-core CI machine, it does not measure speed."""
    import time

    text = HOSTILE[name]
    for function in (lambda t: normalize(t, max_chars=len(t)), mask_pii):
        started = time.perf_counter()
        function(text)
        elapsed = time.perf_counter() - started
        assert elapsed < 10.0, f"{name}: {elapsed:.2f} s for {len(text):,} characters"


def test_normalize_reads_at_most_max_chars():
    assert normalize("好" * 10 + "坏" * 10, max_chars=10) == "好" * 3  # cut, then repeats folded
    assert len(normalize("x" * 10_000)) <= 4000


def test_patterns_still_find_links_and_emails_in_ordinary_text():
    assert TOKENS["link"] in normalize("看下这个 item.taobao.com/item.htm?id=1 呢")
    assert TOKENS["link"] in normalize("发到abc.def@qq.com")
    assert TOKENS["link"] in normalize("https://m.tb.cn/h.5abc 这个")
    assert TOKENS["money"] in normalize("便宜5元行吗")


@pytest.mark.parametrize(
    "text",
    ["电话13812345678谢谢", "邮箱abc@qq.com 发票", "身份证110101199003071234", "订单123456789012345678 到哪了",
     "收货人张三 浙江省杭州市余杭区文一西路969号", "https://item.jd.com/100012.html 这个有货吗", "加我weixin13812345678"],
)
def test_the_model_reads_masked_text_as_the_raw_text(text):
    """The batch job keeps only masked buyer text in its checkpoints; predictions must not change."""
    assert normalize(mask_pii(text)) == normalize(text)
