"""Hand-authored seed messages (data/seeds/<intent>.yaml): loading, validation and the holdout.

A seed's id becomes the `group` of every message composed from it, so splits keep a seed's variants
together. A fixed ~20% of seeds per intent (chosen by a hash of the id, so a seed never changes side
when others are added) is reserved for conversations: the conversation-level model is trained on
message-model scores, which must be out-of-sample for the message model.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.synth.relabel import Relabel, load_relabels
from pipeline.synth.rng import stable_fraction
from pipeline.synth.vocab import CATEGORIES, SLOTS

STAGES = ("pre_sales", "after_sales")
SEED_STAGES = (*STAGES, "any")
_SLOT_RE = re.compile(r"\{([a-z_]+)\}")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: 10x faster on 3k seeds


class SeedError(ValueError):
    """A seed file that cannot be used (bad YAML, unknown slot, duplicate id ...)."""


@dataclass(frozen=True, slots=True)
class Seed:
    id: str
    intent: str
    text: str
    purchase_intent: int
    stage: str  # pre_sales | after_sales | any
    categories: tuple[str, ...] | None  # None: fits every category
    writer: str = "v1"  # who wrote it: v1 = the first authoring round (YAML files), else the v2 writer id

    def fits(self, category: str, stage: str) -> bool:
        return (self.categories is None or category in self.categories) and self.stage in (stage, "any")

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(_SLOT_RE.findall(self.text))


def _parse_seed(raw: object, intent: str, source: str) -> Seed:
    if not isinstance(raw, dict):
        raise SeedError(f"{source}: a seed must be a mapping, got {raw!r}")
    missing = [key for key in ("id", "text", "purchase_intent", "stage") if key not in raw]
    if missing:
        raise SeedError(f"{source}: seed {raw.get('id')!r} lacks {missing}")
    seed_id, text = str(raw["id"]).strip(), str(raw["text"])
    if not text.strip():
        raise SeedError(f"{source}: seed {seed_id} has an empty text")
    if raw["purchase_intent"] not in (0, 1):
        raise SeedError(f"{source}: seed {seed_id} purchase_intent must be 0 or 1, got {raw['purchase_intent']!r}")
    if raw["stage"] not in SEED_STAGES:
        raise SeedError(f"{source}: seed {seed_id} stage must be one of {SEED_STAGES}, got {raw['stage']!r}")
    categories = raw.get("categories")
    if categories is not None:
        if isinstance(categories, str):
            categories = [categories]
        unknown = sorted(set(categories) - set(CATEGORIES))
        if unknown or not categories:
            raise SeedError(f"{source}: seed {seed_id} has unknown categories {unknown or categories}")
        categories = tuple(c for c in CATEGORIES if c in categories)
    unknown_slots = sorted(set(_SLOT_RE.findall(text)) - set(SLOTS))
    if unknown_slots:
        raise SeedError(f"{source}: seed {seed_id} uses unknown slot(s) {unknown_slots}")
    return Seed(seed_id, intent, text, int(raw["purchase_intent"]), raw["stage"], categories)


def _buying_before_paying(raw: dict) -> dict:
    """Wanting to buy happens before paying: a settled purchase label of 1 moves an after-sales seed to pre-sales."""
    if raw.get("purchase_intent") == 1 and raw.get("stage") == "after_sales":
        return {**raw, "stage": "pre_sales"}
    return raw


def _relabelled(raw: dict, relabels: Mapping[str, Relabel], source: str) -> dict:
    """`raw` with its settled relabel applied (`pipeline.synth.relabel`), its stage following the new label."""
    relabel = relabels.get(str(raw.get("id", "")).strip())
    if relabel is None:
        return raw
    if relabel.text != str(raw.get("text")):
        raise SeedError(f"{source}: seed {raw.get('id')} was relabelled for another text: {relabel.text[:40]!r}")
    return _buying_before_paying({**raw, relabel.field: relabel.label})


def load_seed_file(path: Path, relabels: Mapping[str, Relabel] | None = None) -> list[Seed]:
    """Seeds of one intent file; the file name must equal its `intent` key."""
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise SeedError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(document, dict) or "intent" not in document or "seeds" not in document:
        raise SeedError(f"{path}: expected a mapping with `intent` and `seeds`")
    intent = str(document["intent"])
    if intent != path.stem:
        raise SeedError(f"{path}: intent {intent!r} does not match the file name")
    raws = document["seeds"] or []
    if relabels:
        raws = [_relabelled(raw, relabels, str(path)) if isinstance(raw, dict) else raw for raw in raws]
    return [_parse_seed(raw, intent, str(path)) for raw in raws]


def load_seed_table(path: Path, relabels: Mapping[str, Relabel] | None = None) -> list[Seed]:
    """The kept seeds of one v2 writer table (`data/seeds/v2/<writer>.tsv`, see `pipeline.synth.review`):
    double-labelled, agreed or settled by a third label; dropped and pending seeds are left out."""
    from pipeline.synth.review import ReviewError, read_records

    try:
        records = read_records(path)
    except (ReviewError, TypeError, ValueError) as exc:
        raise SeedError(f"{path}: {exc}") from exc
    seeds = []
    for record in records:
        if record.status not in ("agreed", "adjudicated"):
            continue
        raw = {"id": record.id, "text": record.text, "purchase_intent": int(record.purchase_intent), "stage": record.stage}
        raw = _buying_before_paying(_relabelled(raw, relabels or {}, f"{path}:{record.id}"))
        if record.categories:
            raw["categories"] = record.categories.split()
        seed = _parse_seed(raw, record.intent, f"{path}:{record.id}")
        seeds.append(Seed(seed.id, seed.intent, seed.text, seed.purchase_intent, seed.stage, seed.categories, record.writer))
    return seeds


def load_seeds(directory: str | Path, intents: list[str] | None = None, relabel_dir: str | Path | None = "relabel") -> list[Seed]:
    """All seeds under `directory`: the YAML files of the first round (in name order), then the
    double-labelled writer tables under `v2/`; optionally only the listed intents. The settled blind
    relabels under `directory/relabel_dir` are applied (None: the labels as authored and settled)."""
    relabels = load_relabels(Path(directory) / relabel_dir) if relabel_dir is not None else {}
    seeds: list[Seed] = []
    for path in sorted(Path(directory).glob("*.yaml")):
        if intents is not None and path.stem not in intents:
            continue
        seeds.extend(load_seed_file(path, relabels))
    for path in sorted(Path(directory).glob("v2/*.tsv")):
        seeds.extend(s for s in load_seed_table(path, relabels) if intents is None or s.intent in intents)
    unused = sorted(set(relabels) - {s.id for s in seeds}) if intents is None else []
    if unused:
        raise SeedError(f"relabels for seeds that are not in the corpus (or not kept): {unused[:5]}")
    seeds = first_of_each_text(seeds)
    duplicates = [seed_id for seed_id, n in Counter(s.id for s in seeds).items() if n > 1]
    if duplicates:
        raise SeedError(f"duplicate seed ids: {sorted(duplicates)[:10]}")
    return seeds


def first_of_each_text(seeds: list[Seed]) -> list[Seed]:
    """Short phrases (退货, 在吗) are written by many writers; one copy each, or the same text
    lands on both sides of the train/test split under different seed ids."""
    seen: set[str] = set()
    kept = []
    for seed in seeds:
        key = " ".join(seed.text.split())
        if key not in seen:
            seen.add(key)
            kept.append(seed)
    return kept


def seed_problems(seeds: list[Seed]) -> list[str]:
    """Authoring problems that do not stop a build but belong in the report: same text, two labels."""
    labels: dict[str, set[tuple[str, int]]] = {}
    for seed in seeds:
        labels.setdefault(seed.text.strip(), set()).add((seed.intent, seed.purchase_intent))
    problems = [f"{text!r} is labelled {sorted(found)}" for text, found in labels.items() if len(found) > 1]
    problems += [f"{s.id}: purchase_intent 1 in an after_sales seed" for s in seeds if s.purchase_intent and s.stage == "after_sales"]
    return problems


def is_conversation_seed(seed: Seed, fraction: float) -> bool:
    """True for the seeds reserved for conversations (a fixed hash of the id, independent of other seeds)."""
    return stable_fraction(f"holdout:{seed.id}") < fraction


def split_seeds(seeds: list[Seed], fraction: float) -> tuple[list[Seed], list[Seed]]:
    """(message seeds, conversation seeds)."""
    message_seeds = [s for s in seeds if not is_conversation_seed(s, fraction)]
    conversation_seeds = [s for s in seeds if is_conversation_seed(s, fraction)]
    return message_seeds, conversation_seeds
