"""Shared fixtures of the data tests: the bundled corpus files, its config and small generator runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.synth.config import CorpusConfig, load_corpus_config
from pipeline.synth.seeds import Seed, load_seeds

ROOT = Path(__file__).resolve().parents[2]
CORPUS_CONFIG = ROOT / "configs" / "corpus.yaml"

# The default taxonomy (../shared/taxonomy.md): exactly these labels, no more, no fewer.
TAXONOMY_INTENTS = frozenset({
    "greeting", "thanks", "affirm", "deny", "provide_info", "product_spec", "size_fit", "stock", "price_promo",
    "place_order", "shipping_time", "logistics", "order_change", "payment", "invoice", "return_refund",
    "after_sales", "complaint", "human_agent", "other",
})
CATEGORIES = frozenset({"apparel", "beauty", "food", "baby", "electronics", "home"})


@pytest.fixture(scope="session")
def taxonomy_intents() -> frozenset[str]:
    return TAXONOMY_INTENTS


@pytest.fixture(scope="session")
def categories() -> frozenset[str]:
    return CATEGORIES


@pytest.fixture(scope="session")
def corpus_config() -> CorpusConfig:
    return load_corpus_config(CORPUS_CONFIG)


@pytest.fixture(scope="session")
def seeds(corpus_config: CorpusConfig) -> list[Seed]:
    return load_seeds(corpus_config.path("seeds"), corpus_config.intents)


@pytest.fixture(scope="session")
def messages(corpus_config: CorpusConfig) -> pd.DataFrame:
    return pd.read_csv(corpus_config.path("messages"), dtype={"text": str, "group": str}, keep_default_na=False)


@pytest.fixture(scope="session")
def conversations(corpus_config: CorpusConfig) -> list[dict]:
    with open(corpus_config.path("conversations"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="session")
def orders(corpus_config: CorpusConfig) -> pd.DataFrame:
    return pd.read_csv(corpus_config.path("orders"), dtype=str, keep_default_na=False)


@pytest.fixture
def small_config(tmp_path: Path):
    """Write a copy of configs/corpus.yaml with small sizes and outputs under `directory`; return its path."""

    def make(directory: Path, **overrides) -> Path:
        tree = yaml.safe_load(CORPUS_CONFIG.read_text(encoding="utf-8"))
        tree["root"] = str(ROOT)
        tree["paths"] = {
            "seeds": str(ROOT / tree["paths"]["seeds"]),
            "messages": str(directory / "messages.csv"),
            "conversations": str(directory / "conversations.jsonl"),
            "orders": str(directory / "orders.csv"),
            "card": str(directory / "README.md"),
        }
        tree["messages"]["total"] = 400
        tree["messages"]["min_per_intent"] = 10
        tree["conversations"]["count"] = 80
        tree["conversations"]["chunk_size"] = 30
        for dotted, value in overrides.items():
            node = tree
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node[key]
            node[leaf] = value
        directory.mkdir(parents=True, exist_ok=True)
        path = tmp_path / f"corpus-{directory.name}.yaml"
        path.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8")
        return path

    return make
