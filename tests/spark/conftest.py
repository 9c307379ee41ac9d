"""One SparkSession (local[2], two shuffle partitions: one per core) for the whole folder, a small model, and a
generated day of chats."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def spark():
    pytest.importorskip("pyspark")
    from pipeline.jobs.spark import SparkEngineError, spark_session

    try:
        session, created = spark_session(
            "local[2]",
            {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2",
             "spark.sql.adaptive.enabled": "true",
             # Small data, many short jobs: the JVM's own CPU (compiling generated code, JIT) is most of a test's
             # time. Interpreted plans and the quick JIT tier give the same rows.
             "spark.sql.codegen.wholeStage": "false",
             "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"},
        )
    except SparkEngineError as exc:
        pytest.skip(str(exc))
    yield session
    if created:
        session.stop()


@pytest.fixture(scope="session")
def spark_bundle_dir(flag_bundle_dir) -> Path:
    """The batch tests' small model (distinctive phrases per intent), trained in seconds: the same bundle
    as tests/conftest.py's `flag_bundle_dir`, so a whole-suite run trains it once."""
    return flag_bundle_dir


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
