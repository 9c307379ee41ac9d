"""data/messages.csv: schema, labels, groups, realism and the leak-free split."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from pipeline.data.labelled import assign_splits
from pipeline.synth.messages import COLUMNS
from pipeline.synth.seeds import is_conversation_seed, split_seeds
from pipeline.synth.stats import near_duplicate_share
from pipeline.text import normalize


def test_schema(messages: pd.DataFrame, categories) -> None:
    assert list(messages.columns) == COLUMNS
    assert (messages["text"].str.strip() != "").all()
    assert set(messages["stage"]) == {"pre_sales", "after_sales"}
    assert set(messages["category"]) == categories


def test_size_and_per_intent_floor(messages: pd.DataFrame, corpus_config) -> None:
    # the committed corpus is the one its config builds (a config edited without a rebuild fails here)
    assert len(messages) == corpus_config.messages.total >= 12_000
    counts = messages["intent"].value_counts()
    assert counts.min() >= corpus_config.messages.min_per_intent >= 250


def test_label_set_is_the_taxonomy(messages: pd.DataFrame, corpus_config, taxonomy_intents) -> None:
    assert set(messages["intent"]) == taxonomy_intents
    assert set(corpus_config.intents) == taxonomy_intents and len(corpus_config.intents) == 20


def test_realistic_imbalance(messages: pd.DataFrame) -> None:
    counts = messages["intent"].value_counts()
    assert counts.max() / counts.min() >= 3
    frequent = ["greeting", "affirm", "thanks", "provide_info", "shipping_time", "logistics", "product_spec"]
    assert counts[frequent].min() > counts.median() > max(counts["invoice"], counts["human_agent"])


def test_purchase_intent_values_and_rate(messages: pd.DataFrame, corpus_config, seeds) -> None:
    assert set(messages["purchase_intent"].unique()) <= {0, 1}
    pre = messages["stage"] == "pre_sales"
    assert messages.loc[~pre, "purchase_intent"].sum() == 0, "purchase intent happens before paying"
    target = corpus_config.messages.pre_sales_purchase_intent_rate
    if target is not None:
        assert abs(messages.loc[pre, "purchase_intent"].mean() - target) <= 0.025
        return
    # no target: a purchase-intent seed gets as many variants as any other seed of its intent
    message_seeds, _ = split_seeds(seeds, corpus_config.holdout.conversation_seed_fraction)
    variants = messages["group"].value_counts()
    for intent in ("price_promo", "payment", "stock", "product_spec", "shipping_time"):
        drawn = {flag: [variants.get(s.id, 0) for s in message_seeds if s.intent == intent and s.purchase_intent == flag]
                 for flag in (0, 1)}
        ratio = (sum(drawn[1]) / len(drawn[1])) / (sum(drawn[0]) / len(drawn[0]))
        assert 0.6 <= ratio <= 1.6, f"{intent}: a purchase-intent seed gets {ratio:.2f} times the variants of another"


def test_categories_and_stages_are_covered(messages: pd.DataFrame) -> None:
    shares = messages["category"].value_counts(normalize=True)
    assert shares.min() >= 0.05
    by_intent = messages.groupby("intent")["stage"].nunique()
    assert (by_intent[["greeting", "thanks", "affirm", "provide_info", "shipping_time", "logistics", "payment"]] == 2).all()


def test_group_integrity(messages: pd.DataFrame, seeds, corpus_config) -> None:
    per_group = messages.groupby("group").agg(intents=("intent", "nunique"), flags=("purchase_intent", "nunique"))
    assert (per_group["intents"] == 1).all() and (per_group["flags"] == 1).all()
    by_id = {s.id: s for s in seeds}
    groups = messages.drop_duplicates("group").set_index("group")
    assert set(groups.index) <= set(by_id), "every group is a seed id"
    for group, row in groups.iterrows():
        seed = by_id[group]
        assert (row["intent"], row["purchase_intent"]) == (seed.intent, seed.purchase_intent)
        assert not is_conversation_seed(seed, corpus_config.holdout.conversation_seed_fraction)


def test_no_duplicate_normalised_texts(messages: pd.DataFrame) -> None:
    normalized = messages["text"].map(normalize)
    assert normalized.is_unique


@pytest.fixture(scope="module")
def splits(messages: pd.DataFrame, corpus_config) -> pd.Series:
    split = corpus_config.split
    return assign_splits(messages, val_fraction=split.val_fraction, test_fraction=split.test_fraction, seed=split.seed)


def test_split_keeps_texts_and_groups_apart(messages: pd.DataFrame, splits: pd.Series) -> None:
    frame = pd.DataFrame({"n": messages["text"].map(normalize), "g": messages["group"], "s": splits})
    assert frame.groupby("n")["s"].nunique().max() == 1
    assert frame.groupby("g")["s"].nunique().max() == 1
    assert set(frame["s"]) == {"train", "val", "test"}


def test_near_duplicates_across_split_under_5_percent(messages: pd.DataFrame, splits: pd.Series, corpus_config) -> None:
    normalized = messages["text"].map(normalize)
    share, _ = near_duplicate_share(normalized[splits == "test"].tolist(), normalized[splits == "train"].tolist(), 0.8)
    assert share < 0.05


def test_chat_register(messages: pd.DataFrame) -> None:
    """Shares of chat phenomena, set near what the real JD pool shows (figures in the data card)."""
    text = messages["text"]

    def share(pattern: str) -> float:
        return text.str.contains(pattern, regex=True).mean()

    # real pool: particles 22%, placeholders 24%, Latin letters 26%, emoji under 1%
    assert share(r"[亲哈呢哦嘛啊呀啦吧]") > 0.15
    assert 0.005 < share(r"[\U0001F300-\U0001FAFF]|\[(?:微笑|捂脸|抱拳|玫瑰|发怒|可怜)\]|\^_\^|QAQ|T_T") < 0.06
    assert share(r"\[(?:订单|电话|链接|金额|日期|数字|姓名|地址)x\]") > 0.15
    # a minority of raw (not anonymised) exports keep real numbers and links
    assert share(r"\d{11,}") > 0.003
    assert share(r"https?://") > 0.0005
    assert share(r"[A-Za-z]") > 0.15
    assert share("\n") > 0.01  # pasted order cards, several lines
    assert share(r"再吗|在么|咋|啥|木有|kf|hhh|3q") > 0.01  # typos, homophones, abbreviations
    lengths = text.str.len()
    assert (lengths <= 2).sum() >= 200 and (lengths >= 40).sum() >= 1000
    assert {"好", "嗯"} & set(text)


def test_data_card_reports_these_files(messages: pd.DataFrame, corpus_config) -> None:
    card = corpus_config.path("card").read_text(encoding="utf-8")
    assert f"{len(messages):,} messages" in card
    match = re.search(r"Near duplicates across the split\*\*: ([\d.]+)%", card)
    assert match and float(match.group(1)) < 5


# The kinds of placeholder the anonymising JD export writes (as in ../shared/realchat-pool): nothing else is one.
EXPORT_PLACEHOLDER_KINDS = frozenset(
    {"订单", "电话", "链接", "金额", "日期", "时间", "数字", "姓名", "地址", "站点", "组织机构", "身份证号", "邮箱"}
)


def test_placeholders_are_ones_the_export_writes(messages: pd.DataFrame) -> None:
    """The exporter writes its placeholders, the buyer does not type them: no typo or full-width form inside one
    (the generator once wrote [地扯x], [定单x], [ljx] and ［姓名ｘ］, ROUND40_RULES.md DF)."""
    kinds = messages["text"].str.findall(r"\[([^\[\]]{1,12})x\]").explode().dropna()
    assert set(kinds) <= EXPORT_PLACEHOLDER_KINDS, sorted(set(kinds) - EXPORT_PLACEHOLDER_KINDS)
    assert not messages["text"].str.contains("ｘ］", regex=False).any()
