"""Conversations and their outcome (orders), generated chunk by chunk with chunk-local buyers.

A chunk owns its buyers, so memory stays bounded at any size and chunk k is identical whatever the
total. Pre-sales conversations first decide whether the buyer expresses purchase intent, with the
probability that makes the expected share of expressed intent among lost shoppers the configured one
(given each scenario's buy rate); the scenario then writes the flow and only draws purchase_intent-1
seeds where its script says so, so `expressed_purchase_intent` follows from the messages. The outcome
is written as orders: paid at that shop within the window (converted), at another shop, or too late.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from pipeline.synth.config import CorpusConfig
from pipeline.synth.messages import Composer
from pipeline.synth.replies import (
    AGENT_NAMES,
    ANSWERS,
    ANSWERS_BY_CATEGORY,
    ASK_KIND,
    ASK_KIND_BY_CATEGORY,
    ASKS,
    BOT_ANSWERABLE,
    BOT_ANSWERS,
    BOT_FALLBACK,
    BOT_TRANSFER,
    BOT_WELCOME,
    CITIES,
)
from pipeline.synth.rng import derive_seed, make_rng
from pipeline.synth.seeds import STAGES, Seed
from pipeline.synth.vocab import CATEGORIES, SlotFiller, SlotStyle

TZ = timezone(timedelta(hours=8))
PRE_SALES_SCENARIOS = {  # scenario -> expresses purchase intent
    "browse_ask_buy": True, "haggle_commit": True, "conditional_unanswered": True,
    "ask_and_leave": False, "implicit_interest": False, "haggle_and_leave": False, "bot_frustration": False,
}
AFTER_SALES_SCENARIOS = ("order_tracking", "order_change", "return_refund", "after_sales_service", "complaint", "invoice_payment")
QUESTION_WEIGHTS = {"product_spec": 3.0, "size_fit": 2.0, "stock": 2.0, "price_promo": 1.5, "shipping_time": 2.0, "logistics": 1.0, "payment": 0.4}
SIZE_WEIGHT = {"apparel": 3.0, "baby": 2.0}
POSITIVE_WEIGHTS = {"place_order": 6.0, "stock": 1.0, "price_promo": 1.0, "shipping_time": 1.0, "size_fit": 1.0,
                    "product_spec": 1.0, "payment": 1.0, "logistics": 0.5, "provide_info": 0.5, "invoice": 0.3}
CONDITIONAL_WEIGHTS = {"price_promo": 2.0, "stock": 2.0, "shipping_time": 1.5, "product_spec": 1.0, "logistics": 1.0, "size_fit": 1.0}
# provide_info seeds that carry what the agent asked for
_PREFERRED_INFO = {
    "order": ("{order}",), "address": ("{address}", "{phone}", "{name}"), "body": ("{height}", "{weight}", "{age}", "{size}", "码", "cm"),
    "photo": ("[图片]", "[视频]"), "device": ("[图片]", "[视频]", "SN", "{num}"), "title": ("抬头", "税号", "{name}"),
    "link": ("{link}", "链接"), "baby": ("{age}", "{weight}", "岁", "个月"), "usage": ("{num}", "{qty}", "人", "{spec}"),
}
_HOUR_WEIGHTS = (1, 0.5, 0.3, 0.2, 0.2, 0.3, 0.6, 1.2, 2, 3, 3.5, 3.5, 3, 2.8, 3, 3.2, 3, 2.8, 2.8, 3.2, 4, 4.5, 4, 2.5)


@dataclass(frozen=True, slots=True)
class Turn:
    intent: str
    purchase_intent: int
    reply: str  # answer | ask | refuse | none | fallback | transfer


@dataclass(frozen=True, slots=True)
class Shop:
    id: str
    category: str
    name: str
    has_bot: bool


class SeedPools:
    """Seeds by (intent, stage, category, purchase_intent), built once per run."""

    def __init__(self, seeds: list[Seed]):
        self.pools: dict[tuple[str, str, str, int], tuple[Seed, ...]] = {}
        keys = {(s.intent, s.purchase_intent) for s in seeds}
        for intent, flag in keys:
            for stage in STAGES:
                for category in CATEGORIES:
                    found = tuple(s for s in seeds if s.intent == intent and s.purchase_intent == flag and s.fits(category, stage))
                    if found:
                        self.pools[(intent, stage, category, flag)] = found

    def has(self, intent: str, stage: str, category: str, flag: int) -> bool:
        return (intent, stage, category, flag) in self.pools

    def pick(self, intent: str, stage: str, category: str, flag: int, rng: random.Random, prefer: tuple[str, ...] = ()) -> Seed | None:
        pool = self.pools.get((intent, stage, category, flag))
        if not pool:
            return None
        if prefer:
            preferred = [s for s in pool if any(p in s.text for p in prefer)]
            if preferred and rng.random() < 0.85:
                return rng.choice(preferred)
        return rng.choice(pool)


def make_shops(config: CorpusConfig, seed: int) -> dict[str, list[Shop]]:
    """Shops per category with stable ids; a fixed share runs a bot in front of its agents."""
    syllables = "悦然优品初见木槿南山北海星辰晴空小鹿森林锦绣花间云朵暖阳拾光青柠半亩格调"
    suffixes = {"apparel": "服饰", "beauty": "美妆", "food": "食品", "baby": "母婴", "electronics": "数码", "home": "家居"}
    shops: dict[str, list[Shop]] = {}
    for category in CATEGORIES:
        rng = make_rng(seed, "shops", category)
        shops[category] = [
            Shop(
                id="s" + str(derive_seed(seed, "shop", category, k) % 10**8).zfill(8),
                category=category,
                name="".join(rng.sample(syllables, 2)) + suffixes[category] + rng.choice(("旗舰店", "专营店", "官方店", "小铺", "企业店")),
                has_bot=rng.random() < config.conversations.bot_share,
            )
            for k in range(config.conversations.shops_per_category)
        ]
    return shops


def expressed_probability(config: CorpusConfig) -> float:
    """P(express intent) for a pre-sales conversation so that lost shoppers with intent hit the target."""
    scenarios = config.conversations.scenarios
    target = config.conversations.lost_with_intent_share

    def mean_buy(expressed: bool) -> float:
        chosen = [(scenarios[n].weight, scenarios[n].buy) for n, e in PRE_SALES_SCENARIOS.items() if e == expressed and n in scenarios]
        total = sum(w for w, _ in chosen)
        return sum(w * b for w, b in chosen) / total

    a, b = mean_buy(True), mean_buy(False)
    return target * (1 - b) / (target * (1 - b) + (1 - target) * (1 - a))


def _weighted(options: dict[str, float], rng: random.Random) -> str:
    names = list(options)
    return rng.choices(names, weights=[options[n] for n in names])[0]


class ConversationFactory:
    """Builds conversations and orders for one run (seed pools, shops and composer shared by chunks)."""

    def __init__(self, config: CorpusConfig, seeds: list[Seed], seed: int):
        self.config, self.seed = config, seed
        self.settings = config.conversations
        self.composer = Composer(config)
        self.pools = SeedPools(seeds)
        self.shops = make_shops(config, seed)
        self.p_expressed = expressed_probability(config)
        scenarios = self.settings.scenarios
        self.expressed_weights = {n: scenarios[n].weight for n, e in PRE_SALES_SCENARIOS.items() if e and n in scenarios}
        self.quiet_weights = {n: scenarios[n].weight for n, e in PRE_SALES_SCENARIOS.items() if not e and n in scenarios}
        self.after_weights = {n: scenarios[n].weight for n in AFTER_SALES_SCENARIOS if n in scenarios}
        self.category_weights = [config.messages.category_weights[c] for c in CATEGORIES]
        self.start = int(datetime.fromisoformat(self.settings.start).replace(tzinfo=TZ).timestamp())
        self.window = int(self.settings.window_hours * 3600)
        counts = self.settings.conversations_per_buyer
        self.per_buyer = (list(counts), list(counts.values()))

    # -- scripts ---------------------------------------------------------------------------------
    def _available(self, weights: dict[str, float], stage: str, category: str, flag: int, exclude: set[str]) -> dict[str, float]:
        return {i: w for i, w in weights.items() if i not in exclude and self.pools.has(i, stage, category, flag)}

    def _questions(self, k: int, category: str, rng: random.Random, exclude: set[str] | None = None) -> list[str]:
        weights = dict(QUESTION_WEIGHTS)
        weights["size_fit"] = SIZE_WEIGHT.get(category, 0.4)
        chosen: list[str] = []
        for _ in range(k):
            options = self._available(weights, "pre_sales", category, 0, set(chosen) | (exclude or set()))
            if not options:
                break
            chosen.append(_weighted(options, rng))
        return chosen

    def _positive(self, weights: dict[str, float], category: str, rng: random.Random) -> str | None:
        options = self._available(weights, "pre_sales", category, 1, set())
        return _weighted(options, rng) if options else None

    def script(self, scenario: str, category: str, shop: Shop, rng: random.Random) -> list[Turn]:
        """The buyer's turns and how the shop answers each, for one scenario."""
        r = rng.random
        turns: list[Turn] = []
        if scenario in PRE_SALES_SCENARIOS and r() < 0.45:
            turns.append(Turn("greeting", 0, "answer"))
        elif scenario not in PRE_SALES_SCENARIOS and r() < 0.35:
            turns.append(Turn("greeting", 0, "answer"))
        if scenario == "browse_ask_buy":
            for intent in self._questions(rng.choice((1, 1, 2, 2, 3)), category, rng):
                if intent == "size_fit" and r() < 0.35:
                    turns += [Turn("size_fit", 0, "ask"), Turn("provide_info", 0, "answer")]
                else:
                    turns.append(Turn(intent, 0, "answer"))
            positive = self._positive(POSITIVE_WEIGHTS, category, rng)
            if positive:
                turns.append(Turn(positive, 1, "answer"))
            if r() < 0.3:
                checkout = self._positive({"place_order": 2.0, "payment": 1.0}, category, rng)
                if checkout:
                    turns.append(Turn(checkout, 1, "answer"))
            if r() < 0.6:
                turns.append(Turn(rng.choice(("thanks", "affirm", "thanks")), 0, rng.choice(("answer", "none"))))
        elif scenario == "haggle_commit":
            turns += [Turn(q, 0, "answer") for q in self._questions(rng.choice((0, 1)), category, rng, {"price_promo"})]
            turns.append(Turn("price_promo", 0, "refuse"))
            if self.pools.has("price_promo", "pre_sales", category, 1):
                turns.append(Turn("price_promo", 1, rng.choice(("refuse", "answer"))))
            else:
                positive = self._positive(POSITIVE_WEIGHTS, category, rng)
                turns += [Turn(positive, 1, "refuse")] if positive else []
            if r() < 0.5:
                turns.append(Turn(rng.choice(("deny", "other", "thanks", "affirm")), 0, "none"))
        elif scenario == "conditional_unanswered":
            turns += [Turn(q, 0, "answer") for q in self._questions(rng.choice((0, 0, 1)), category, rng)]
            positive = self._positive(CONDITIONAL_WEIGHTS, category, rng) or self._positive(POSITIVE_WEIGHTS, category, rng)
            silent = "fallback" if shop.has_bot else "none"
            if positive:
                turns.append(Turn(positive, 1, silent))
            for _ in range(rng.choice((1, 1, 2))):
                turns.append(Turn(rng.choice(("greeting", "other", "human_agent")), 0, silent if r() < 0.7 else "none"))
        elif scenario == "ask_and_leave":
            turns += [Turn(q, 0, "answer") for q in self._questions(rng.choice((1, 1, 2)), category, rng)]
            if r() < 0.5:
                turns.append(Turn(rng.choice(("thanks", "affirm", "deny", "thanks")), 0, rng.choice(("answer", "none"))))
        elif scenario == "implicit_interest":
            wanted = ["size_fit", "stock", "shipping_time"] if self.pools.has("size_fit", "pre_sales", category, 0) else ["stock", "shipping_time"]
            wanted += self._questions(rng.choice((0, 1, 1, 2)), category, rng, set(wanted))
            if r() < 0.5:
                rng.shuffle(wanted)
            for intent in wanted:
                if intent == "size_fit" and r() < 0.35:
                    turns += [Turn("size_fit", 0, "ask"), Turn("provide_info", 0, "answer")]
                else:
                    turns.append(Turn(intent, 0, "answer"))
            if r() < 0.6:
                turns.append(Turn(rng.choice(("affirm", "thanks")), 0, rng.choice(("answer", "none"))))
        elif scenario == "haggle_and_leave":
            turns += [Turn(q, 0, "answer") for q in self._questions(rng.choice((0, 1)), category, rng, {"price_promo"})]
            turns += [Turn("price_promo", 0, "refuse") for _ in range(rng.choice((1, 2, 2)))]
            if r() < 0.6:
                turns.append(Turn(rng.choice(("deny", "other", "thanks", "deny")), 0, rng.choice(("answer", "none"))))
        elif scenario == "bot_frustration":
            first = self._questions(1, category, rng)
            mode = "fallback" if shop.has_bot else "none"
            turns += [Turn(q, 0, mode) for q in first]
            if first and r() < 0.4:
                turns.append(Turn(first[0], 0, mode))
            turns.append(Turn("human_agent", 0, "transfer" if shop.has_bot else "none"))
            if r() < 0.5:
                turns.append(Turn(rng.choice(("other", "greeting", "human_agent")), 0, "none"))
        elif scenario == "order_tracking":
            intent = rng.choice(("shipping_time", "logistics", "shipping_time"))
            turns += [Turn(intent, 0, "ask"), Turn("provide_info", 0, "answer")]
            if r() < 0.35:
                turns.append(Turn(rng.choice(("shipping_time", "logistics")), 0, "answer"))
            if r() < 0.7:
                turns.append(Turn(rng.choice(("thanks", "affirm", "thanks")), 0, rng.choice(("answer", "none"))))
        elif scenario == "order_change":
            turns += [Turn("order_change", 0, "ask"), Turn("provide_info", 0, "answer")]
            if r() < 0.4:
                turns.append(Turn("affirm", 0, "answer"))
            if r() < 0.6:
                turns.append(Turn("thanks", 0, rng.choice(("answer", "none"))))
        elif scenario == "return_refund":
            if r() < 0.5:
                turns += [Turn("return_refund", 0, "ask"), Turn("provide_info", 0, "answer")]
            else:
                turns.append(Turn("return_refund", 0, "answer"))
            if r() < 0.5:
                turns.append(Turn("return_refund", 0, "answer"))
            if r() < 0.6:
                turns.append(Turn(rng.choice(("thanks", "affirm", "deny")), 0, rng.choice(("answer", "none"))))
        elif scenario == "after_sales_service":
            turns += [Turn("after_sales", 0, "ask"), Turn("provide_info", 0, "answer")]
            if r() < 0.4:
                turns.append(Turn("after_sales", 0, "answer"))
            if r() < 0.6:
                turns.append(Turn(rng.choice(("thanks", "affirm")), 0, rng.choice(("answer", "none"))))
        elif scenario == "complaint":
            turns.append(Turn("complaint", 0, "answer"))
            turns.append(Turn(rng.choice(("complaint", "return_refund", "after_sales")), 0, "answer" if r() < 0.7 else "ask"))
            if turns[-1].reply == "ask":
                turns.append(Turn("provide_info", 0, "answer"))
            if r() < 0.3:
                turns.append(Turn("human_agent", 0, "answer"))
            if r() < 0.6:
                turns.append(Turn(rng.choice(("thanks", "deny", "complaint", "affirm")), 0, rng.choice(("answer", "none"))))
        elif scenario == "invoice_payment":
            intent = rng.choice(("invoice", "invoice", "payment"))
            if r() < 0.5:
                turns += [Turn(intent, 0, "ask"), Turn("provide_info", 0, "answer")]
            else:
                turns.append(Turn(intent, 0, "answer"))
            if r() < 0.6:
                turns.append(Turn(rng.choice(("thanks", "affirm")), 0, rng.choice(("answer", "none"))))
        else:
            raise ValueError(f"unknown scenario {scenario!r}")
        return turns

    # -- rendering -------------------------------------------------------------------------------
    def _reply_text(self, template: str, filler: SlotFiller, shop: Shop, agent: str, rng: random.Random) -> str:
        text = template.replace("{agent}", agent).replace("{shop}", shop.name)
        text = text.replace("{city}", rng.choice(CITIES)).replace("{n}", str(rng.choice((3, 5, 10, 12, 20))))
        return filler.fill(text)

    def render(self, turns: list[Turn], stage: str, category: str, shop: Shop, start: int, rng: random.Random) -> list[dict]:
        """Messages with timestamps (epoch seconds, formatted later) for a script."""
        p = self.config.noise
        style = SlotStyle(anonymised=rng.random() < p.anonymised, mask_numbers=p.mask_numbers, platform_export=rng.random() < p.platform_export)
        filler = SlotFiller(category, rng, style)
        agent = rng.choice(AGENT_NAMES)
        messages: list[dict] = []
        now = start
        topic = None
        welcomed = False
        for position, turn in enumerate(turns):
            prefer = ()
            if turn.intent == "provide_info" and topic is not None:
                prefer = _PREFERRED_INFO.get(ask_kind(topic, category), ())
            seed = self.pools.pick(turn.intent, stage, category, turn.purchase_intent, rng, prefer)
            if seed is None:
                continue
            text = self.composer.compose(seed, category, stage, rng, style)
            if messages:
                # after a reply the buyer reads and types (about 2 s a character); unanswered, they wait, then nudge
                typing = min(len(text), 60) * rng.uniform(0.8, 2.5)
                wait = rng.expovariate(1 / 25) if messages[-1]["role"] != "buyer" else rng.uniform(20, 600)
                now += int(typing + wait) + 2
            messages.append({"role": "buyer", "text": text, "sent_at": now, "intent": seed.intent,
                             "purchase_intent": seed.purchase_intent, "group": seed.id})
            if turn.intent not in ("provide_info", "affirm", "thanks", "deny", "other", "greeting"):
                topic = turn.intent
            if shop.has_bot and not welcomed:
                welcomed = True
                now += rng.randint(1, 3)
                messages.append({"role": "bot", "text": self._reply_text(rng.choice(BOT_WELCOME), filler, shop, agent, rng), "sent_at": now})
                if turn.intent == "greeting" and turn.reply == "answer":
                    continue
            role, template = self._reply(turn, topic, shop, category, turns[position + 1] if position + 1 < len(turns) else None, rng)
            if template is None:
                continue
            reply = self._reply_text(template, filler, shop, agent, rng)
            now += rng.randint(1, 4) if role == "bot" else int(rng.expovariate(1 / 40) + len(reply) * rng.uniform(0.3, 0.8)) + 3
            messages.append({"role": role, "text": reply, "sent_at": now})
        return messages

    def _reply(self, turn: Turn, topic: str | None, shop: Shop, category: str, following: Turn | None, rng: random.Random) -> tuple[str, str | None]:
        mode = turn.reply
        if mode == "none":
            return "agent", None
        if mode == "fallback":
            return ("bot", rng.choice(BOT_FALLBACK)) if shop.has_bot else ("agent", None)
        if mode == "transfer":
            return ("bot", rng.choice(BOT_TRANSFER)) if shop.has_bot else ("agent", None)
        if mode == "refuse":
            return "agent", rng.choice(ANSWERS["refuse"])
        if mode == "ask" or (following is not None and following.intent == "provide_info" and turn.intent != "provide_info"):
            return "agent", rng.choice(ASKS[ask_kind(turn.intent, category)])
        intent = turn.intent
        if intent == "provide_info" and topic in ANSWERS and rng.random() < 0.6:
            intent = topic  # the answer to the question the data was asked for
        if shop.has_bot and intent in BOT_ANSWERABLE and rng.random() < 0.35:
            return "bot", rng.choice(BOT_ANSWERS[intent])
        return "agent", rng.choice(ANSWERS_BY_CATEGORY.get((intent, category)) or ANSWERS[intent])

    # -- chunks ----------------------------------------------------------------------------------
    def _start_time(self, rng: random.Random) -> int:
        day = rng.randrange(self.settings.days)
        hour = rng.choices(range(24), weights=_HOUR_WEIGHTS)[0]
        return self.start + day * 86400 + hour * 3600 + rng.randrange(3600)

    def _order_id(self, rng: random.Random, used: set[str]) -> str:
        while True:
            order_id = str(rng.randint(1, 4)) + str(rng.randrange(10**17)).zfill(17)
            if order_id not in used:
                used.add(order_id)
                return order_id

    def _purchase_delay(self, rng: random.Random) -> int:
        u = rng.random()
        if u < 0.6:
            return rng.randint(30, 3600)
        if u < 0.9:
            return rng.randint(3600, 86400)
        return rng.randint(86400, self.window - 60)

    def chunk(self, index: int, count: int, first_number: int) -> tuple[list[dict], list[tuple[str, str, str, int]]]:
        """`count` conversations (ids from `first_number`) and their orders; buyers are local to the chunk.

        Times are epoch seconds here; the writers format them (ISO 8601 +08:00 or a Parquet timestamp).
        """
        rng = make_rng(self.seed, "chunk", index)
        settings = self.settings
        conversations: list[dict] = []
        orders: list[tuple[str, str, str, int]] = []
        used: set[str] = set()
        buyer_number = 0
        while len(conversations) < count:
            buyer_number += 1
            buyer = "u" + hashlib.sha1(f"{self.seed}:{index}:{buyer_number}".encode()).hexdigest()[:12]
            k = min(rng.choices(self.per_buyer[0], weights=self.per_buyer[1])[0], count - len(conversations))
            now = self._start_time(rng)
            last_purchase: tuple[Shop, int] | None = None
            for _ in range(k):
                stage = "after_sales" if rng.random() < settings.after_sales_share else "pre_sales"
                if stage == "after_sales" and last_purchase is not None and rng.random() < settings.follow_up_same_shop:
                    shop, paid = last_purchase  # comes back about what they bought
                    start = max(now, paid) + rng.randint(2 * 86400, 12 * 86400)
                    prior = None
                else:
                    category = rng.choices(CATEGORIES, weights=self.category_weights)[0]
                    shop = rng.choice(self.shops[category])
                    start = now
                    prior = start - rng.randint(2 * 86400, 25 * 86400) if stage == "after_sales" else None
                category = shop.category
                if stage == "pre_sales":
                    pool = self.expressed_weights if rng.random() < self.p_expressed else self.quiet_weights
                    scenario = _weighted(pool, rng)
                else:
                    scenario = _weighted(self.after_weights, rng)
                turns = self.script(scenario, category, shop, rng)
                messages = self.render(turns, stage, category, shop, start, rng)
                if not messages:
                    continue
                last = messages[-1]["sent_at"]
                if prior is not None:
                    orders.append((self._order_id(rng, used), buyer, shop.id, prior))
                buys = rng.random() < settings.scenarios[scenario].buy
                if stage == "after_sales" and rng.random() < settings.repeat_order:
                    buys = True
                if buys:
                    paid = last + self._purchase_delay(rng)
                    orders.append((self._order_id(rng, used), buyer, shop.id, paid))
                    last_purchase = (shop, paid)
                elif stage == "pre_sales":
                    if rng.random() < settings.other_shop_order:
                        other = rng.choice([s for s in self.shops[category] if s.id != shop.id])
                        orders.append((self._order_id(rng, used), buyer, other.id, last + self._purchase_delay(rng)))
                    if rng.random() < settings.late_order:
                        late = last + self.window + rng.randint(3600, 12 * 86400)
                        orders.append((self._order_id(rng, used), buyer, shop.id, late))
                conversations.append({
                    "buyer_id": buyer, "shop_id": shop.id, "category": category, "stage": stage, "scenario": scenario,
                    "messages": messages,
                    "expressed_purchase_intent": int(any(m.get("purchase_intent") == 1 for m in messages)),
                })
                now = last + rng.randint(86400, 30 * 86400)
        conversations.sort(key=lambda c: (c["messages"][0]["sent_at"], c["buyer_id"]))
        for offset, conversation in enumerate(conversations):
            conversation["conversation_id"] = f"c{first_number + offset:09d}"
        orders.sort(key=lambda o: (o[3], o[0]))
        return conversations, orders


def ask_kind(intent: str, category: str) -> str:
    """What the agent asks for after this buyer intent (order number, address, photo ...)."""
    return ASK_KIND_BY_CATEGORY.get((intent, category)) or ASK_KIND.get(intent, "order")


def iso(epoch: int) -> str:
    """ISO 8601 with the +08:00 offset (China Standard Time)."""
    return datetime.fromtimestamp(epoch, TZ).isoformat()


CONVERSATION_KEYS = ("conversation_id", "buyer_id", "shop_id", "category", "stage", "scenario", "messages", "expressed_purchase_intent")


def ordered(conversation: dict) -> dict:
    """The conversation in schema key order with ISO times (stable JSON bytes)."""
    record = {key: conversation[key] for key in CONVERSATION_KEYS}
    record["messages"] = [{**m, "sent_at": iso(m["sent_at"])} for m in conversation["messages"]]
    return record
