"""One SparkSession (local[2]) for the whole folder, a small model, and a generated day of chats."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from tests.batch.builders import labelled_conversations, labelled_messages

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def spark():
    pytest.importorskip("pyspark")
    from pipeline.spark_engine import SparkEngineError, spark_session

    try:
        session, created = spark_session(
            "local[2]",
            {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "2",
             "spark.sql.adaptive.enabled": "true"},
        )
    except SparkEngineError as exc:
        pytest.skip(str(exc))
    yield session
    if created:
        session.stop()


@pytest.fixture(scope="session")
def spark_bundle_dir(tmp_path_factory) -> Path:
    """The batch tests' small model (distinctive phrases per intent), trained in seconds."""
    from pipeline.bundle import save_bundle
    from pipeline.config import load_config
    from pipeline.conversation import Turn
    from pipeline.data import LabelledData, validate_labelled
    from pipeline.train import ConversationData, train

    config = load_config(overrides={"paths.data": "unused.csv"})
    valid, _ = validate_labelled(labelled_messages(), "fixture", config.split.min_examples_per_label)
    data = LabelledData(valid, pd.DataFrame(columns=["source", "row", "reason", "raw"]), "fixture")
    conversations = pd.DataFrame(labelled_conversations())
    conversations["turns"] = [[Turn(role, text) for role, text in turns] for turns in conversations["turns"]]
    result = train(config, data, ConversationData(conversations, "fixture"))
    return save_bundle(result.bundle, tmp_path_factory.mktemp("spark-model") / "bundle", result.user_dict_text)


@pytest.fixture(scope="session")
def generated_day(tmp_path_factory) -> tuple[Path, Path]:
    """2,000 conversations (~20,000 messages, interleaved by time) and their orders, from the flag
    benchmark's generator; ids folded onto 20 shops and 400 buyers so buyers come back to a shop (the
    one-nudge-per-window rule has work to do)."""
    spec = importlib.util.spec_from_file_location("flag_throughput", REPO / "benchmarks" / "flag_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    chats, orders = module.generate_flat(2000, 11, tmp_path_factory.mktemp("day"))

    def fold(frame: pd.DataFrame) -> pd.DataFrame:
        shop = frame["shop_id"].str.removeprefix("shop-").astype(int) % 20
        buyer = frame["buyer_id"].str.removeprefix("buyer-").astype(int) % 400
        return frame.assign(shop_id="shop-" + shop.astype(str), buyer_id="buyer-" + buyer.astype(str))

    fold(pd.read_parquet(chats)).to_parquet(chats, index=False)
    fold(pd.read_csv(orders, dtype=str)).to_csv(orders, index=False)
    return chats, orders


@pytest.fixture()
def flag_settings():
    from pipeline.config import load_config

    return load_config(overrides={"paths.data": "unused.csv", "flag.workers": 1})
