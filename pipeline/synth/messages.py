"""The labelled message table (data/messages.csv) composed from the message seeds.

Per intent a target count (weights with a floor) is spread over its seeds; purchase_intent-1 seeds get
one common weight multiplier, solved so that the expected share of purchase_intent 1 among pre-sales
messages hits the configured rate. A candidate variant is dropped when its normalised text already
exists, or when it is a near duplicate (3-gram Jaccard >= threshold) of a variant of *another* seed:
such pairs would straddle the grouped split and flatter test metrics. A seed whose candidates keep
being dropped is exhausted and the intent's remaining quota moves to its other seeds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pandas as pd

from pipeline.synth.config import CorpusConfig
from pipeline.synth.noise import NoiseModel, as_exported
from pipeline.synth.rng import make_rng
from pipeline.synth.seeds import Seed
from pipeline.synth.stats import NearDuplicateIndex, char_ngrams
from pipeline.synth.vocab import CATEGORIES, SlotFiller, SlotStyle
from pipeline.text import normalize

COLUMNS = ["text", "intent", "purchase_intent", "group", "category", "stage", "writer"]


@dataclass
class Composer:
    """Fills and roughens one seed for a category and stage; shared by messages and conversations."""

    config: CorpusConfig
    noise: NoiseModel = field(init=False)
    category_weights: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.noise = NoiseModel(self.config.noise)
        self.category_weights = [self.config.messages.category_weights[c] for c in CATEGORIES]

    def category_for(self, seed: Seed, rng: random.Random) -> str:
        options = seed.categories or CATEGORIES
        weights = [self.config.messages.category_weights[c] for c in options]
        return rng.choices(options, weights=weights)[0]

    def stage_for(self, seed: Seed, rng: random.Random) -> str:
        if seed.stage != "any":
            return seed.stage
        if seed.purchase_intent:
            return "pre_sales"  # wanting to buy happens before paying
        return "pre_sales" if rng.random() < self.config.messages.any_stage_pre_sales else "after_sales"

    def compose(self, seed: Seed, category: str, stage: str, rng: random.Random, style: SlotStyle | None = None) -> str:
        """One variant of `seed`; `style` fixes raw vs anonymised (a conversation is one export)."""
        p = self.config.noise
        if style is None:
            style = SlotStyle(anonymised=rng.random() < p.anonymised, mask_numbers=p.mask_numbers, platform_export=rng.random() < p.platform_export)
        filler = SlotFiller(category, rng, style, hint=seed.text)
        body = filler.fill(seed.text)
        if style.anonymised and rng.random() < p.mask_bare_numbers:
            body = filler.mask_bare_numbers(body)
        text = self.noise.apply(body, seed.intent, stage, filler, rng)
        return as_exported(text) if style.platform_export else text


def intent_targets(config: CorpusConfig, available: set[str]) -> dict[str, int]:
    """Messages per intent: the total spread by intent weight, never below the floor."""
    weights = {i: w for i, w in config.messages.intent_weights.items() if i in available}
    scale = config.messages.total / sum(weights.values())
    return {i: max(config.messages.min_per_intent, round(w * scale)) for i, w in weights.items()}


def _pre_share(seed: Seed, any_pre: float) -> float:
    if seed.stage == "pre_sales" or (seed.stage == "any" and seed.purchase_intent):
        return 1.0
    return any_pre if seed.stage == "any" else 0.0


def purchase_multiplier(by_intent: dict[str, list[Seed]], targets: dict[str, int], rate: float | None, any_pre: float) -> float:
    """Weight of a purchase_intent-1 seed relative to a 0 seed giving the target pre-sales rate (None: 1, no target)."""
    if rate is None:
        return 1.0

    def expected(m: float) -> float:
        positives = pre = 0.0
        for intent, seeds in by_intent.items():
            total = sum(m if s.purchase_intent else 1.0 for s in seeds)
            for s in seeds:
                share = targets[intent] * (m if s.purchase_intent else 1.0) / total
                pre += share * _pre_share(s, any_pre)
                positives += share * s.purchase_intent
        return positives / pre if pre else 0.0

    low, high = 1e-3, 1e3
    if expected(high) < rate:
        return high
    for _ in range(60):
        middle = (low * high) ** 0.5
        low, high = (middle, high) if expected(middle) < rate else (low, middle)
    return (low * high) ** 0.5


def _quotas(seeds: list[Seed], target: int, multiplier: float) -> list[int]:
    weights = [multiplier if s.purchase_intent else 1.0 for s in seeds]
    exact = [target * w / sum(weights) for w in weights]
    quotas = [int(x) for x in exact]
    order = sorted(range(len(seeds)), key=lambda i: (-(exact[i] - quotas[i]), seeds[i].id))
    for i in order[: target - sum(quotas)]:
        quotas[i] += 1
    return quotas


@dataclass
class GenerationReport:
    targets: dict[str, int]
    produced: dict[str, int]
    multiplier: float
    candidates: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    exhausted_seeds: list[str] = field(default_factory=list)

    @property
    def shortfalls(self) -> dict[str, int]:
        return {i: self.targets[i] - n for i, n in self.produced.items() if n < self.targets[i]}


class _Accepter:
    """Global acceptance state: normalised texts seen and the cross-seed near-duplicate index."""

    def __init__(self, composer: Composer, settings, report: GenerationReport, rows: list[tuple]):
        self.composer, self.settings, self.report, self.rows = composer, settings, report, rows
        self.index = NearDuplicateIndex(settings.near_duplicate_jaccard)
        self.seen: set[str] = set()

    def attempt(self, seed: Seed, rng: random.Random) -> bool:
        """Add one new variant of `seed`; False when it keeps producing duplicates (exhausted)."""
        for _ in range(self.settings.attempts_per_message):
            category = self.composer.category_for(seed, rng)
            stage = self.composer.stage_for(seed, rng)
            text = self.composer.compose(seed, category, stage, rng)
            self.report.candidates += 1
            normalized = normalize(text)
            if not normalized or normalized in self.seen:
                self.report.exact_duplicates += 1
                continue
            grams = char_ngrams(normalized)
            if self.index.find(grams, seed.id) is not None:
                self.report.near_duplicates += 1
                continue
            self.seen.add(normalized)
            self.index.add(grams, seed.id)
            self.rows.append((text, seed.intent, seed.purchase_intent, seed.id, category, stage, seed.writer))
            return True
        return False


def generate_messages(seeds: list[Seed], config: CorpusConfig) -> tuple[pd.DataFrame, GenerationReport]:
    """Deterministic message table from the message seeds, plus what was dropped and why."""
    settings = config.messages
    by_intent = {i: [s for s in seeds if s.intent == i] for i in config.intents}
    by_intent = {i: s for i, s in by_intent.items() if s}
    targets = intent_targets(config, set(by_intent))
    multiplier = purchase_multiplier(by_intent, targets, settings.pre_sales_purchase_intent_rate, settings.any_stage_pre_sales)
    report = GenerationReport(targets, {}, multiplier)
    rows: list[tuple] = []
    accepter = _Accepter(Composer(config), settings, report, rows)

    for intent, intent_seeds in by_intent.items():
        rngs = {s.id: make_rng(config.seed, "message", s.id) for s in intent_seeds}
        made = dict.fromkeys(rngs, 0)
        exhausted: set[str] = set()

        def grow(seed: Seed, rng: random.Random, made: dict[str, int] = made, exhausted: set[str] = exhausted) -> bool:
            if accepter.attempt(seed, rng):
                made[seed.id] += 1
                return True
            exhausted.add(seed.id)
            return False

        for seed, quota in zip(intent_seeds, _quotas(intent_seeds, targets[intent], multiplier), strict=True):
            while made[seed.id] < quota and grow(seed, rngs[seed.id]):
                pass
        # move the quota of exhausted seeds to the others, round-robin, same weights
        deficit = targets[intent] - sum(made.values())
        while deficit > 0:
            live = [s for s in intent_seeds if s.id not in exhausted]
            if not live:
                break
            for seed in live:
                if deficit <= 0:
                    break
                if seed.purchase_intent and rngs[seed.id].random() > min(1.0, multiplier):
                    continue  # keep the purchase-intent balance while topping up
                if grow(seed, rngs[seed.id]):
                    deficit -= 1
        report.produced[intent] = sum(made.values())
        report.exhausted_seeds.extend(sorted(exhausted))

    frame = pd.DataFrame(rows, columns=COLUMNS)
    order = list(range(len(frame)))
    make_rng(config.seed, "message-order").shuffle(order)
    return frame.iloc[order].reset_index(drop=True), report
