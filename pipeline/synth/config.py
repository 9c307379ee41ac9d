"""Generator settings (configs/corpus.yaml), validated so a mistyped key fails before any work starts.

Relative paths are resolved against the project root: the parent of the folder that holds the config
file (configs/corpus.yaml -> the repository root), so a build gives the same files from any cwd.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.synth.vocab import CATEGORIES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CorpusPaths(_Strict):
    seeds: str
    messages: str
    conversations: str
    orders: str
    card: str
    chat_sheets: str | None = None  # whole chats written without choosing intents, one folder per use (pipeline.synth.chats)
    chat_messages: str | None = None  # where each use's settled messages are written (<use>.csv)


class HoldoutSettings(_Strict):
    conversation_seed_fraction: float = Field(0.2, gt=0, lt=1)


class NoiseSettings(_Strict):
    """Probabilities of each register transformation (per message)."""

    clean: float = Field(ge=0, le=1)  # leave the filled seed as written
    anonymised: float = Field(ge=0, le=1)  # an anonymised export: [订单x] [电话x] ...
    mask_numbers: float = Field(ge=0, le=1)  # in an anonymised export, also mask prices/dates/numbers
    mask_bare_numbers: float = Field(ge=0, le=1)  # ... and digits the seed wrote literally (165斤 -> [数字x]斤)
    vocative: float = Field(ge=0, le=1)  # 亲 / 老板 / 客服 in front
    greeting_prefix: float = Field(ge=0, le=1)  # 在吗 / 你好 before a question (rule 2)
    preamble: float = Field(ge=0, le=1)  # 请问 / 问下 / 麻烦问一下
    context: float = Field(ge=0, le=1)  # a neutral situation sentence (long, rambling messages)
    polite_tail: float = Field(ge=0, le=1)  # 谢谢 / 麻烦了 / 在线等 after a question
    vent_tail: float = Field(ge=0, le=1)  # 无语了 / 气死了 after a complaint
    order_card: float = Field(ge=0, le=1)  # platform order card before an after-sales question (rule 7)
    product_card: float = Field(ge=0, le=1)  # pasted product link / card before a pre-sales question
    repeat_short: float = Field(ge=0, le=1)  # 在吗在吗 / 好的好的
    particle: float = Field(ge=0, le=1)  # 哈 / 呢 / 哦 / 呀 at the end
    emoji: float = Field(ge=0, le=1)
    typo: float = Field(ge=0, le=1)  # homophones, typos, pinyin and English swaps
    punctuation: float = Field(ge=0, le=1)  # dropped, doubled, ASCII or runs (？？？ / 。。。)
    spaces: float = Field(ge=0, le=1)  # punctuation replaced by spaces
    commas: float = Field(ge=0, le=1)  # spaces between clauses replaced by commas (when not the above)
    fullwidth: float = Field(ge=0, le=1)  # ASCII letters and digits typed full-width
    newline: float = Field(ge=0, le=1)  # parts of a composed message joined by a line break
    platform_export: float = Field(0.0, ge=0, le=1)  # messages (conversations) as the JD export writes them
    long: float = Field(ge=0, le=1)  # a long, rambling message: up to max_additions added sentences (else 1)
    max_additions: int = Field(3, ge=1)


class MessageSettings(_Strict):
    total: int = Field(gt=0)  # target size before the per-intent floor
    min_per_intent: int = Field(gt=0)
    intent_weights: dict[str, float]
    category_weights: dict[str, float]
    # target share of purchase_intent 1 among pre-sales messages, reached by drawing purchase-intent seeds more or less
    # often than the others of their intent; null: every seed of an intent alike (the rate follows the seeds)
    pre_sales_purchase_intent_rate: float | None = Field(gt=0, lt=1)
    any_stage_pre_sales: float = Field(gt=0, lt=1)  # stage drawn for seeds written as `any`
    near_duplicate_jaccard: float = Field(gt=0, le=1)  # cross-seed variants at least this similar are rejected
    attempts_per_message: int = Field(gt=0)  # candidates tried before a seed counts as exhausted

    @model_validator(mode="after")
    def _categories(self) -> "MessageSettings":
        if set(self.category_weights) != set(CATEGORIES):
            raise ValueError(f"category_weights must name exactly {CATEGORIES}")
        return self


class ScenarioSettings(_Strict):
    weight: float = Field(ge=0)  # relative weight within its stage (and, pre-sales, within expressed / not)
    buy: float = Field(ge=0, le=1)  # probability the buyer pays at the shop within the window


class ConversationSettings(_Strict):
    count: int = Field(gt=0)
    chunk_size: int = Field(gt=0)  # conversations generated (and buyers shared) per chunk
    after_sales_share: float = Field(ge=0, lt=1)
    lost_with_intent_share: float = Field(gt=0, lt=1)  # target: expressed intent among lost pre-sales shoppers
    window_hours: float = Field(gt=0)  # attribution window after the last message
    attribution_start: str = Field(pattern="^(first|last)_message$")  # orders count from here (as flag.attribution_start)
    start: str  # first day of the simulated period (ISO date, +08:00)
    days: int = Field(gt=0)
    shops_per_category: int = Field(gt=0)
    conversations_per_buyer: dict[int, float]  # how many conversations a buyer has -> weight
    bot_share: float = Field(ge=0, le=1)  # shops whose first replies come from a bot
    other_shop_order: float = Field(ge=0, le=1)  # lost shopper bought the thing at another shop in the window
    late_order: float = Field(ge=0, le=1)  # lost shopper bought at this shop, but after the window
    repeat_order: float = Field(ge=0, le=1)  # an after-sales buyer orders again at the shop
    follow_up_same_shop: float = Field(ge=0, le=1)  # an after-sales chat of a buyer who bought is about that order
    scenarios: dict[str, ScenarioSettings]


class SplitSettings(_Strict):
    """Mirrors configs/default.yaml (split fractions, run seed) for the near-duplicate figure."""

    val_fraction: float = Field(gt=0, lt=0.5)
    test_fraction: float = Field(gt=0, lt=0.5)
    seed: int


class SynthSettings(_Strict):
    seed_pool: str = Field(pattern="^(all|conversation|message)$")  # seeds the scale generator draws from
    chunk_size: int = Field(gt=0)


class CorpusConfig(_Strict):
    seed: int
    intents: list[str]
    paths: CorpusPaths
    holdout: HoldoutSettings
    noise: NoiseSettings
    messages: MessageSettings
    conversations: ConversationSettings
    split: SplitSettings
    synth: SynthSettings
    root: str = "."  # set by load_corpus_config: the project root relative paths refer to

    @model_validator(mode="after")
    def _intents(self) -> "CorpusConfig":
        if set(self.messages.intent_weights) != set(self.intents):
            missing = set(self.intents) ^ set(self.messages.intent_weights)
            raise ValueError(f"messages.intent_weights must name exactly the intents; differs on {sorted(missing)}")
        return self

    def path(self, name: str) -> Path:
        value = Path(getattr(self.paths, name))
        return value if value.is_absolute() else Path(self.root) / value


def load_corpus_config(path: str | Path, overrides: dict[str, Any] | None = None) -> CorpusConfig:
    """Read configs/corpus.yaml; `overrides` maps dotted keys (conversations.count) to values."""
    path = Path(path).resolve()
    tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    for dotted, value in (overrides or {}).items():
        node = tree
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    tree.setdefault("root", str(path.parent.parent))
    return CorpusConfig.model_validate(tree)
