"""`--engine spark`: `buyer-intent predict` and `buyer-intent flag` on Apache Spark (PySpark 4).

Nothing here is imported by the local engine or the service: pyspark is imported inside these functions.
The rules are not written twice. Every pandas UDF below calls the local engine's own functions:

- rows are checked by `flag.validate_chat_rows` / `nudge.rows.check_order_rows` (the same reasons), CSV rows
  with a wrong number of fields get the local reader's reason, JSONL lines are parsed as the local reader does;
- messages are scored by `Predictor.predict` (distinct texts once: `predict` scores `DISTINCT text`,
  `flag` the distinct texts of each batch, as `nudge.predict_messages` does), conversations by
  `nudge.features.score_flat`, decisions by `nudge.rules.decide_table`, one nudge per buyer/shop/window by
  `nudge.rules.apply_one_per_window` (applyInPandas per buyer and shop with more than one candidate).

Spark does the data movement: reading (CSV with Spark's `encoding` option, so GB18030 works; Parquet; JSONL
read as text lines), the shuffle of messages by (shop_id, conversation_id) so every conversation is whole in
one partition, sorted by time; the join with the orders (lost = no paid order of that buyer at that shop
in [attribution start, last message + window], on the same 64-bit buyer/shop key as `OrdersIndex`), the
per-shop and per-category counts, the final order. Only summary numbers come back to the driver.

The model bundle is verified on the driver, shipped with `SparkContext.addFile` and verified again
(checksums and the driver's seal) when a Python worker first loads it; a worker keeps it for every later
task (`spark.python.worker.reuse`, on by default).

Output: Spark writes Parquet parts into a temporary directory beside `--out`; the driver streams them, in
order, into one file in the local engine's format (CSV with BOM, JSONL, Parquet, Excel) inside that
directory and renames it into place. A job that dies leaves the old output set (or none), never a part.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.bundle import bundle_seal, read_manifest, sha256_file, verify_bundle
from pipeline.drift import estimate_from_counts, shift_warnings, summary_record, threshold_of
from pipeline.config import Config, Registry
from pipeline.data.tables import (
    DEFAULT_CSV_ENCODING,
    DELIMITED_FORMATS,
    ColumnNames,
    csv_bytes,
    detect_encoding,
    output_format,
    read_header,
    require_columns,
    table_format,
    text_delimiter,
    write_xlsx,
)

log = logging.getLogger(__name__)

INSTALL_HINT = "install it with `uv sync --group spark` (or `pip install 'pyspark>=4.0'`)"
JAVA_HINT = "Spark needs a Java 17 or 21 runtime: `apt-get install openjdk-17-jre-headless` (or set JAVA_HOME)"
SEQ_BITS = 33  # monotonically_increasing_id: partition index << 33 | row within the partition
BATCH_ROWS = 50_000  # messages scored together in one flag batch (whole conversations)


class SparkEngineError(ValueError):
    """The Spark engine cannot run (no pyspark, no Java, an input Spark cannot read); the message says why."""


# --- the session ------------------------------------------------------------------------------------


def parse_conf(items: list[str] | None) -> dict[str, str]:
    """`--conf k=v` (repeatable) -> {k: v}."""
    conf = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SparkEngineError(f"--conf must look like key=value, got {item!r}")
        conf[key.strip()] = value.strip()
    return conf


def spark_session(master: str = "local[*]", conf: dict[str, str] | None = None):
    """The active SparkSession (a test's or a notebook's), else a new one on `master` with `conf`.
    Returns (session, created): a session this call created is the caller's to stop."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise SparkEngineError(f"--engine spark needs PySpark ({exc}); {INSTALL_HINT}") from exc
    active = SparkSession.getActiveSession()
    if active is not None:
        if master != active.sparkContext.master or conf:  # said, not silently dropped
            log.warning("running on the active Spark session (master %s): --master %s and --conf %s are not applied to it",
                        active.sparkContext.master, master, sorted(conf or {}) or "none")
        return active, False
    if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
        raise SparkEngineError(f"--engine spark: no `java` on PATH and no JAVA_HOME; {JAVA_HINT}")
    # Python workers run this interpreter (with pandas, pyarrow and this project), not the system python.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    settings = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        **(conf or {}),
    }
    builder = SparkSession.builder.master(master).appName("buyer-intent")
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start (py4j's errors are not one type)
        raise SparkEngineError(f"--engine spark: Spark did not start ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); {JAVA_HINT}") from exc
    return session, True


# --- the model on the workers -----------------------------------------------------------------------

_WORKER: dict[tuple, Any] = {}


def ship_bundle(spark, directory: Path, expected_seal: str | None) -> tuple[str, str, dict[str, Any]]:
    """Verify the bundle here, give it a name unique to its seal and ship it to every executor; the name,
    the seal and the verified manifest."""
    verify_bundle(directory, expected_seal)
    seal = bundle_seal(directory)
    name = f"buyer-intent-bundle-{seal[:16]}"
    staging = Path(tempfile.gettempdir()) / "buyer-intent-spark" / name
    if not staging.is_dir():
        staging.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=staging.parent))
        shutil.copytree(directory, tmp, dirs_exist_ok=True)
        try:
            os.replace(tmp, staging)
        except OSError:  # another run shipped the same bundle first
            shutil.rmtree(tmp, ignore_errors=True)
    manifest = verify_bundle(staging, seal)
    try:
        spark.sparkContext.addFile(str(staging), recursive=True)
    except Exception as exc:  # already added in this session: the same name means the same seal
        if "already registered" not in str(exc):
            raise
    return name, seal, manifest


def _predictor(bundle_name: str, seal: str):
    """The Predictor of this Python worker, loaded once from the shipped bundle (checksums and seal checked)."""
    key = ("predictor", bundle_name, seal)
    if key not in _WORKER:
        from pyspark import SparkFiles

        from pipeline.bundle import load_bundle
        from pipeline.inference import Predictor

        predictor = Predictor(load_bundle(SparkFiles.get(bundle_name), seal))
        predictor.warm_up()
        _WORKER[key] = predictor
    return _WORKER[key]


# --- reading ----------------------------------------------------------------------------------------


def _csv_fields(line: str | None, delimiter: str = ",") -> int:
    try:
        return len(next(csv.reader([line or ""], delimiter=delimiter), []))
    except csv.Error:
        return 0


def read_spark_table(spark, path: Path, names: ColumnNames, lower: bool = False):
    """A DataFrame of the file with the jobs' column names, plus `_seq` (input order) and `_bad`/`_raw`
    (why a row could not be read, and the row as it was). CSV and JSONL columns are strings."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    fmt = table_format(path)
    if fmt == "xlsx":
        raise SparkEngineError(f"{path}: Spark does not read Excel; save it as CSV or Parquet, or use --engine local")
    headers = read_header(path)
    if not headers:
        raise SparkEngineError(f"{path}: no header (an empty file, or a first JSONL line that is not an object)")
    mapping = names.mapping([str(h) for h in headers])
    columns = [mapping[str(h)] for h in headers]
    if lower:
        columns = [str(c).strip().lower() for c in columns]
    if fmt == "parquet":
        frame = spark.read.parquet(str(path)).toDF(*columns)
        # Spark hands timestamps to Python as naive times in its session zone (UTC): an instant would then be
        # read as shop-local time, hours off. As ISO text they mean what the local engine reads: an instant
        # with its offset, a time without a zone (TIMESTAMP_NTZ) as the shop's wall clock.
        for field in frame.schema.fields:
            if isinstance(field.dataType, T.TimestampType):
                frame = frame.withColumn(field.name, F.date_format(F.col(field.name), "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"))
            elif isinstance(field.dataType, T.TimestampNTZType):
                frame = frame.withColumn(field.name, F.date_format(F.col(field.name), "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"))
        frame = frame.withColumn("_bad", F.lit(None).cast("string")).withColumn("_raw", F.lit(None).cast("string"))
    elif fmt in DELIMITED_FORMATS:  # comma or TAB, as the local reader sniffs it from the header line
        encoding = detect_encoding(path)
        if encoding == "utf-16":  # Spark's CSV reader splits lines before decoding: UTF-16 is read line-broken
            raise SparkEngineError(f"{path}: UTF-16 text for Spark must be converted first: iconv -f UTF-16 -t UTF-8 {path} > converted.{fmt} "
                                   "(or run it with --engine local, which reads UTF-16)")
        delimiter = text_delimiter(path, encoding)
        if encoding != "utf-8":  # Spark 4 reads only UTF/ISO charsets unless its legacy Java-charset switch is on
            spark.conf.set("spark.sql.legacy.javaCharsets", "true")
        schema = T.StructType([T.StructField(c, T.StringType()) for c in columns] + [T.StructField("_corrupt", T.StringType())])
        frame = (
            spark.read.schema(schema)
            .options(header=True, sep=delimiter, encoding=encoding, mode="PERMISSIVE", columnNameOfCorruptRecord="_corrupt", multiLine=False)
            .csv(str(path))
        )
        n_fields = len(columns)
        fields = F.udf(lambda line: _csv_fields(line, delimiter), "int")
        frame = frame.withColumn(
            "_bad", F.when(F.col("_corrupt").isNotNull(), F.format_string(f"expected {n_fields} fields, found %d", fields("_corrupt")))
        ).withColumnRenamed("_corrupt", "_raw")
    else:  # jsonl: lines as text, parsed by the local reader's rules (blank lines skipped, line numbers kept)
        encoding = detect_encoding(path)
        if encoding != "utf-8":
            raise SparkEngineError(f"{path}: JSONL for Spark must be UTF-8; convert it first: iconv -f {encoding.upper()} -t UTF-8 {path} > converted.jsonl")
        keys: list[str] = []
        with open(path, encoding="utf-8-sig") as handle:
            for _, line in zip(range(1000), handle):
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, RecursionError):  # RecursionError: nested too deeply (quarantined below)
                    continue
                if isinstance(record, dict):
                    if "messages" in record:
                        raise SparkEngineError(f"{path}: conversation records (`messages`) are read by --engine local only; "
                                               "export one message per line (CSV, Parquet or flat JSONL) for Spark")
                    keys += [k for k in record if k not in keys]
        text = spark.read.text(str(path)).withColumn("_seq", F.monotonically_increasing_id())
        # keys that first appear after those lines (a `category` filled in only later in the day): one pass
        # over every line, so no column the local engine reads is dropped here
        known = list(keys)
        later = (
            text.mapInPandas(lambda batches: _new_keys(batches, known), "key string, first long")
            .groupBy("key").agg(F.min("first").alias("first")).orderBy("first").collect()
        )
        keys += [row["key"] for row in later]
        mapping = names.mapping(keys)
        columns = [str(mapping[k]).strip().lower() if lower else mapping[k] for k in keys]
        schema = ", ".join(f"`{c}` string" for c in columns) + ", _bad string, _raw string, _seq long, _blank boolean"
        parsed = text.mapInPandas(lambda batches: _parse_jsonl(batches, keys, columns), schema)
        return parsed.filter(~F.col("_blank")).drop("_blank"), columns
    return frame.withColumn("_seq", F.monotonically_increasing_id()), columns


def _new_keys(batches: Iterator[pd.DataFrame], known: list[str]) -> Iterator[pd.DataFrame]:
    """Keys of JSON objects not in `known`, with the first `_seq` each is seen at (lines that do not parse
    are the reader's to quarantine)."""
    known_set = set(known)
    for batch in batches:
        first: dict[str, int] = {}
        for line, seq in zip(batch["value"].tolist(), batch["_seq"].tolist(), strict=True):
            if not line or "{" not in line:
                continue
            try:
                record = json.loads(line.lstrip("\ufeff"))
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(record, dict):
                for key in record:
                    if key not in known_set and key not in first:
                        first[key] = seq
        yield pd.DataFrame({"key": pd.Series(list(first), dtype=object), "first": pd.Series(list(first.values()), dtype="int64")})


def _parse_jsonl(batches: Iterator[pd.DataFrame], keys: list[str], columns: list[str]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        out = {c: [] for c in (*columns, "_bad", "_raw")}
        blank = []
        for line in batch["value"].tolist():
            line = (line or "").lstrip("\ufeff")
            blank.append(not line.strip())
            bad = None
            record: dict = {}
            if line.strip():
                try:
                    record = json.loads(line)
                    if not isinstance(record, dict):
                        bad, record = "a line must be a JSON object", {}
                except json.JSONDecodeError as exc:
                    bad = f"not valid JSON: {exc.msg}"
                except RecursionError:  # as the local reader: the line is rejected, not the job
                    bad, line = "not valid JSON: nested too deeply", line[:1000]
            for key, column in zip(keys, columns, strict=True):
                value = record.get(key)
                out[column].append(None if value is None else value if isinstance(value, str) else str(value))
            out["_bad"].append(bad)
            out["_raw"].append(line if bad else None)
        frame = pd.DataFrame(out, dtype=object)
        frame["_seq"] = batch["_seq"].to_numpy()
        frame["_blank"] = blank
        yield frame


def _row_numbers(spark, frame):
    """1-based record numbers (line numbers for JSONL) from `_seq`: rows per input partition are counted
    (small numbers back to the driver) and turned into offsets."""
    from pyspark.sql import functions as F

    counts = frame.groupBy(F.shiftright("_seq", SEQ_BITS).alias("p")).agg(F.max(F.col("_seq").bitwiseAND((1 << SEQ_BITS) - 1)).alias("n")).collect()
    offsets, total = {}, 0
    for row in sorted(counts, key=lambda r: r["p"]):
        offsets[int(row["p"])] = total
        total += int(row["n"]) + 1
    if not offsets:
        return F.lit(None).cast("long")
    mapping = F.create_map(*[F.lit(x) for p, o in offsets.items() for x in (p, o)])
    return mapping[F.shiftright("_seq", SEQ_BITS)] + F.col("_seq").bitwiseAND((1 << SEQ_BITS) - 1) + 1


# --- writing ----------------------------------------------------------------------------------------


class _Staging:
    """A temporary directory beside `out` for Spark's parts and the assembled file; removed on exit."""

    def __init__(self, out: Path):
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        self.path = out.parent / f".{out.name}.spark-{uuid.uuid4().hex[:12]}"

    def __enter__(self) -> "_Staging":
        self.path.mkdir()
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def parts(self, name: str) -> Path:
        return self.path / name


def _parts(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("part-*") if p.suffix == ".parquet")


def assemble(frame, parts_dir: Path, target: Path, finish=None, csv_encoding: str = DEFAULT_CSV_ENCODING) -> None:
    """Write the (ordered) Spark DataFrame as Parquet parts, then stream them, in order, into one file
    at `target` in the local engine's format for its extension (`finish`: per pandas chunk, the local
    engine's dtypes; a CSV in `csv_encoding`). `target` is inside the staging directory; publishing is a rename."""
    frame.write.mode("overwrite").parquet(str(parts_dir))
    parts = _parts(parts_dir)
    fmt = output_format(target)
    arrow_schema = pq.read_schema(parts[0]) if parts else None

    def chunks() -> Iterator[pd.DataFrame]:
        for part in parts:
            chunk = pq.read_table(part).to_pandas()
            if len(chunk):
                yield finish(chunk) if finish else chunk

    empty = pd.DataFrame({name: pd.Series(dtype=object) for name in frame.columns})
    with open(target, "wb") as handle:
        if fmt == "csv":
            wrote = False
            for chunk in chunks():
                handle.write(csv_bytes(chunk, header=not wrote, encoding=csv_encoding))
                wrote = True
            if not wrote:
                handle.write(csv_bytes(finish(empty) if finish else empty, encoding=csv_encoding))
        elif fmt == "jsonl":
            for chunk in chunks():
                handle.write(chunk.to_json(orient="records", lines=True, force_ascii=False).encode("utf-8"))
        elif fmt == "parquet":
            writer = None
            for chunk in chunks():
                table = pa.Table.from_pandas(chunk, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(handle, table.schema)
                writer.write_table(table.cast(writer.schema))
            if writer is None:
                pq.write_table(pa.Table.from_pandas(finish(empty) if finish else empty, preserve_index=False) if arrow_schema is None
                               else arrow_schema.empty_table(), handle)
            else:
                writer.close()
        else:  # xlsx: one sheet, built in memory (Excel stops at 1,048,576 rows anyway)
            whole = pd.concat(list(chunks()), ignore_index=True) if parts else empty
            write_xlsx(whole, handle)
        handle.flush()
        os.fsync(handle.fileno())
    shutil.rmtree(parts_dir, ignore_errors=True)


def _publish(staged: Path, out: Path) -> None:
    os.chmod(staged, 0o666 & ~_umask())
    os.replace(staged, out)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- predict ----------------------------------------------------------------------------------------

PREDICTION_SCHEMA = "_key string, intent string, intent_confidence double, fallback boolean, purchase_intent int, purchase_score double"


def _score_texts(batches: Iterator[pd.DataFrame], bundle_name: str, seal: str) -> Iterator[pd.DataFrame]:
    predictor = _predictor(bundle_name, seal)
    for batch in batches:
        keys = batch["_key"].astype(object).tolist()
        predictions = predictor.predict(keys)
        predictions.insert(0, "_key", keys)
        predictions["purchase_intent"] = predictions["purchase_intent"].astype(np.int32)
        yield predictions


def _is_buyer(batches: Iterator[pd.DataFrame], roles: dict) -> Iterator[pd.DataFrame]:
    from pipeline.jobs.workflows import buyer_rows

    config = _RolesConfig(roles)
    for batch in batches:
        batch["_buyer"] = buyer_rows(batch[["role"]], config)
        yield batch


class _RolesConfig:
    """What `workflows.buyer_rows` reads of a Config (`config.flag.roles`), picklable for the workers."""

    def __init__(self, roles: dict):
        self.flag = type("FlagRoles", (), {"roles": roles})()


def run_predict(
    input_path: Path, output_path: Path, model: str | None, config: Config, *, master: str = "local[*]", conf: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`buyer-intent predict --engine spark`: every input row and column kept, the prediction columns
    added (with a `role` column: buyer rows only, `scored`), rows Spark cannot read to `<out>.rejected.csv`."""
    from pipeline.inference import resolve_model
    from pipeline.jobs.workflows import PREDICTION_COLUMNS

    input_path, output_path = Path(input_path), Path(output_path)
    names = config.columns.names().only(("text", "role"))
    require_columns(input_path, ["text"], names)
    output_format(output_path)
    csv_encoding = config.output.csv_encoding
    resolved = resolve_model(model, Registry.from_config(config))
    spark, created = spark_session(master, conf)
    try:
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        bundle_name, seal, manifest = ship_bundle(spark, resolved.directory, resolved.expected_seal)
        frame, columns = read_spark_table(spark, input_path, names)
        frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
        row = _row_numbers(spark, frame)
        good = frame.filter(F.col("_bad").isNull())
        added = (*PREDICTION_COLUMNS, "scored")
        renames = {c: f"{c}_input" for c in columns if c in added}
        for old, new in renames.items():
            good = good.withColumnRenamed(old, new)
        kept = [renames.get(c, c) for c in columns if c != "_line"]
        has_role = "role" in columns
        good = good.withColumn("_key", F.coalesce(F.col("text").cast("string"), F.lit("")))
        if has_role:
            from pyspark.sql.types import BooleanType, StructField, StructType

            roles = {role: list(aliases) for role, aliases in config.flag.roles.items()}
            schema = StructType([*good.schema.fields, StructField("_buyer", BooleanType())])
            good = good.mapInPandas(lambda b: _is_buyer(b, roles), schema)
        to_score = good.filter(F.col("_buyer")) if has_role else good
        scored = to_score.select("_key").distinct().mapInPandas(lambda b: _score_texts(b, bundle_name, seal), PREDICTION_SCHEMA)
        scored = scored.persist(StorageLevel.MEMORY_AND_DISK)  # scored once: the output and the accuracy estimate read it
        joined = good.join(scored, "_key", "left")
        if has_role:
            for name in PREDICTION_COLUMNS:
                joined = joined.withColumn(name, F.when(F.col("_buyer"), F.col(name)))
            joined = joined.withColumn("scored", F.col("_buyer"))
        result = joined.orderBy("_seq").select(*kept, *PREDICTION_COLUMNS, *(["scored"] if has_role else []))

        def finish(chunk: pd.DataFrame) -> pd.DataFrame:
            # the local engine's dtypes: with a role column its predictions are reindexed (NaN for other rows)
            if has_role:
                for name in ("intent_confidence", "purchase_intent", "purchase_score"):
                    chunk[name] = chunk[name].astype(np.float64)
                chunk["fallback"] = chunk["fallback"].astype(object)
                chunk["scored"] = chunk["scored"].astype(bool)
            else:
                chunk["purchase_intent"] = chunk["purchase_intent"].astype(np.int8)
            return chunk

        rejected = frame.filter(F.col("_bad").isNotNull()).select(
            F.lit(str(input_path)).alias("source"), row.alias("row"), F.col("_bad").alias("reason"), F.col("_raw").alias("raw")
        ).orderBy("row")
        with _Staging(output_path) as staging:
            target = staging.parts(output_path.name)
            assemble(result, staging.parts("predictions"), target, finish, csv_encoding)
            n_rejected = rejected.count()
            rejected_target = staging.parts("rejected.csv")
            if n_rejected:
                assemble(rejected, staging.parts("rejected"), rejected_target, csv_encoding=csv_encoding)
            counts = good.agg(F.count(F.lit(1)).alias("rows"), F.sum(F.col("_buyer").cast("long")).alias("buyers") if has_role else F.count(F.lit(1)).alias("buyers")).collect()[0]
            estimate = None
            if (threshold := threshold_of(manifest)) is not None:  # the local engine's estimate, summed over the rows
                confident = joined.filter(F.col("intent_confidence").isNotNull()).agg(
                    F.count(F.lit(1)).alias("messages"), F.sum((F.col("intent_confidence") > F.lit(threshold)).cast("long")).alias("above")
                ).collect()[0]
                estimate = estimate_from_counts(int(confident["above"] or 0), int(confident["messages"]), manifest)
            _publish(target, output_path)
            rejected_path = output_path.with_name(f"{output_path.name}.rejected.csv")
            if n_rejected:
                _publish(rejected_target, rejected_path)
            else:  # a previous run's, as the local engine does: it would describe other rows
                rejected_path.unlink(missing_ok=True)
        frame.unpersist()
        scored.unpersist()
        rows, buyers = int(counts["rows"]), int(counts["buyers"] or 0)
        summary: dict[str, Any] = {"rows_in": rows + n_rejected, "rows_scored": buyers, "rows_not_buyer": rows - buyers, "rows_rejected": n_rejected}
        if estimate is not None:
            summary["accuracy_estimate"] = estimate
        return summary
    finally:
        if created:
            spark.stop()


# --- flag -------------------------------------------------------------------------------------------

VALID_SCHEMA = (
    "_seq long, shop_id string, conversation_id string, buyer_id string, role string, text string, sent_at long, "
    "category string, ordered int, _bad string, _raw string"
)
CONVERSATION_SCHEMA = (
    "conversation_id string, buyer_id string, shop_id string, category string, first_ms long, last_ms long, ordered int, "
    "purchase_score double, evidence string, has_skip_intent boolean, open_concern string, last_turn_is_buyer boolean, "
    "n_buyer_turns long, n_confident_buyer_turns long, _key long, _rows long"
)
DECIDED_SCHEMA = (
    "conversation_id string, buyer_id string, shop_id string, category string, last_ms long, purchase_score double, "
    "evidence string, open_concern string, lost int, expressed boolean, reason string, suggested_nudge string, nudge_text string, "
    "priority long, send_after_ms long, n_buyer_turns long, n_confident_buyer_turns long, _rows long"
)
ORDERS_SCHEMA = "_seq long, _key long, paid_at long, _bad string, _raw string"


def _policy(settings_json: str):
    from pipeline.config import FlagSettings
    from pipeline.nudge import NudgePolicy

    key = ("policy", settings_json)
    if key not in _WORKER:
        settings = FlagSettings.model_validate_json(settings_json)
        _WORKER[key] = (settings, NudgePolicy.from_settings(settings))
    return _WORKER[key]


def _validate_chats(batches: Iterator[pd.DataFrame], settings_json: str, columns: list[str]) -> Iterator[pd.DataFrame]:
    """`flag.validate_chat_rows` on each Arrow batch: valid rows in shard layout (text masked, as the local
    engine's checkpoints keep it), rejected rows with the local engine's reason and masked raw line."""
    from pipeline.jobs.flag.files import CHAT_COLUMNS, raw_line
    from pipeline.jobs.flag.partition import validate_chat_rows
    from pipeline.text import mask_pii

    _, policy = _policy(settings_json)
    shown = [c for c in (*CHAT_COLUMNS, "category", "ordered") if c in columns]
    for batch in batches:
        seq = batch["_seq"].to_numpy(np.int64)
        unreadable = batch["_bad"].notna().to_numpy()
        frame = batch.drop(columns=["_seq", "_bad", "_raw"]).reset_index(drop=True)
        bad_rows = [(int(i), str(batch["_bad"].iat[i]), mask_pii(str(batch["_raw"].iat[i]))) for i in np.flatnonzero(unreadable)]
        readable = np.flatnonzero(~unreadable)
        part = frame.iloc[readable].reset_index(drop=True)
        valid_idx = np.zeros(0, dtype=np.int64)
        valid = None
        if len(part):
            valid, rejected = validate_chat_rows(part, policy)
            rejected_pos = {i for i, _ in rejected}
            valid_idx = readable[[i for i in range(len(part)) if i not in rejected_pos]]
            bad_rows += [(int(readable[i]), reason, raw_line(part.iloc[i][shown].tolist())) for i, reason in rejected]
        if valid is not None and len(valid):
            codes, distinct = pd.factorize(valid["text"].to_numpy(object))
            out = pd.DataFrame(
                {
                    "_seq": seq[valid_idx],
                    **{c: valid[c].to_numpy(object) for c in ("shop_id", "conversation_id", "buyer_id", "role")},
                    "text": np.asarray([mask_pii(t) for t in distinct], dtype=object)[codes],
                    "sent_at": valid["sent_at"].to_numpy(np.int64),
                    "category": valid["category"].to_numpy(object),
                    "ordered": valid["ordered"].to_numpy(np.int32),
                    "_bad": None,
                    "_raw": None,
                }
            )
            yield out
        if bad_rows:
            positions = np.asarray([i for i, _, _ in bad_rows], dtype=np.int64)
            yield pd.DataFrame(
                {
                    "_seq": seq[positions],
                    **{c: pd.Series([None] * len(bad_rows), dtype=object) for c in ("shop_id", "conversation_id", "buyer_id", "role", "text")},
                    "sent_at": np.zeros(len(bad_rows), dtype=np.int64),
                    "category": pd.Series([None] * len(bad_rows), dtype=object),
                    "ordered": np.zeros(len(bad_rows), dtype=np.int32),
                    "_bad": [r for _, r, _ in bad_rows],
                    "_raw": [r for _, _, r in bad_rows],
                }
            )


def _validate_orders(batches: Iterator[pd.DataFrame], settings_json: str, columns: list[str]) -> Iterator[pd.DataFrame]:
    """`nudge.rows.check_order_rows` on each batch: usable orders as (buyer/shop key, paid_at), the rest rejected."""
    from pipeline.jobs.flag.files import raw_line
    from pipeline.nudge.rows import check_order_rows
    from pipeline.text import mask_pii

    _, policy = _policy(settings_json)
    for batch in batches:
        frame = batch.drop(columns=["_seq", "_bad", "_raw"]).reset_index(drop=True)
        unreadable = batch["_bad"].notna().to_numpy()
        readable = np.flatnonzero(~unreadable)
        checked = check_order_rows(frame.iloc[readable].reset_index(drop=True), policy)
        good = checked.reasons == None  # noqa: E711
        n = len(batch)
        keys = np.zeros(n, dtype=np.int64)
        paid = np.zeros(n, dtype=np.int64)
        keys[readable[good]] = checked.keys.view(np.int64)
        paid[readable[good]] = checked.paid_at
        bad = batch["_bad"].astype(object).where(batch["_bad"].notna(), None).to_numpy(object)
        raw = np.full(n, None, dtype=object)
        raw[unreadable] = [mask_pii(str(v)) for v in batch["_raw"].to_numpy(object)[unreadable]]
        shown = [c for c in frame.columns]
        for j in np.flatnonzero(~good):
            i = readable[j]
            bad[i] = str(checked.reasons[j])
            raw[i] = raw_line(frame.iloc[i][shown].tolist())
        yield pd.DataFrame({"_seq": batch["_seq"].to_numpy(np.int64), "_key": keys, "paid_at": paid, "_bad": bad, "_raw": raw})


def _conversations(frame: pd.DataFrame, bundle_name: str, seal: str, settings_json: str) -> pd.DataFrame:
    """One row per conversation of `frame` (sorted by shop, conversation, sent_at, input order), as the
    local engine's `process_shard` builds it: first/last time, category, ordered, and `nudge.features.score_flat`."""
    from pipeline.conversation import ConversationScorer
    from pipeline.jobs.flag.shards import conversation_categories, conversation_starts
    from pipeline.nudge.features import score_flat
    from pipeline.nudge.orders import buyer_shop_keys

    settings, policy = _policy(settings_json)
    key = ("scorer", bundle_name, seal)
    if key not in _WORKER:
        _WORKER[key] = ConversationScorer(_predictor(bundle_name, seal))
    scorer = _WORKER[key]
    frame = frame.reset_index(drop=True)
    for column in ("shop_id", "conversation_id", "buyer_id", "role", "text", "category"):
        frame[column] = frame[column].astype(object)
    starts = conversation_starts(frame)
    heads = starts[:-1]
    sent_at = frame["sent_at"].to_numpy(np.int64)
    category = conversation_categories(frame["category"].to_numpy(object), starts)
    ordered = np.maximum.reduceat(frame["ordered"].to_numpy(np.int8), heads)
    scored, _ = score_flat(frame["role"].to_numpy(object), frame["text"].to_numpy(object), starts, scorer, policy, settings.predict_batch)
    buyers, shops = frame["buyer_id"].to_numpy(object)[heads], frame["shop_id"].to_numpy(object)[heads]
    table = pd.DataFrame(
        {
            "conversation_id": frame["conversation_id"].to_numpy(object)[heads],
            "buyer_id": buyers,
            "shop_id": shops,
            "category": category,
            "first_ms": sent_at[heads],
            "last_ms": sent_at[starts[1:] - 1],
            "ordered": ordered.astype(np.int32),
        }
    )
    table = pd.concat([table, scored], axis=1)
    table["_key"] = buyer_shop_keys(buyers, shops).view(np.int64)
    table["_rows"] = np.diff(starts)
    return table


def _score_partition(batches: Iterator[pd.DataFrame], bundle_name: str, seal: str, settings_json: str) -> Iterator[pd.DataFrame]:
    """A partition sorted by (shop, conversation, sent_at, seq) in Arrow batches: whole conversations are
    scored together, about BATCH_ROWS messages at a time; a conversation cut by a batch waits for the next."""
    pending: list[pd.DataFrame] = []
    size = 0
    for batch in batches:
        pending.append(batch)
        size += len(batch)
        if size < BATCH_ROWS:
            continue
        frame = pd.concat(pending, ignore_index=True)
        shop, cid = frame["shop_id"].to_numpy(object), frame["conversation_id"].to_numpy(object)
        tail = (shop == shop[-1]) & (cid == cid[-1])
        cut = int(np.flatnonzero(~tail)[-1]) + 1 if (~tail).any() else 0
        if cut:
            yield _conversations(frame.iloc[:cut], bundle_name, seal, settings_json)
        pending, size = [frame.iloc[cut:]], len(frame) - cut
    if size:
        yield _conversations(pd.concat(pending, ignore_index=True), bundle_name, seal, settings_json)


def _decide(batches: Iterator[pd.DataFrame], settings_json: str, threshold: float) -> Iterator[pd.DataFrame]:
    """`nudge.rules.decide_table` per batch of conversations (`ordered` already carries the orders join)."""
    from pipeline.nudge.rules import decide_table

    _, policy = _policy(settings_json)
    for batch in batches:
        decided = decide_table(batch.reset_index(drop=True), policy, threshold, None)
        decided["expressed"] = decided["expressed_purchase_intent"].astype(bool)
        decided["lost"] = decided["lost"].astype(np.int32)
        decided["priority"] = decided["priority"].astype(np.int64)
        yield decided[[f.split(" ")[0] for f in DECIDED_SCHEMA.split(", ")]]


def _one_per_window(group: pd.DataFrame, settings_json: str) -> pd.DataFrame:
    from pipeline.nudge.rules import apply_one_per_window

    _, policy = _policy(settings_json)
    return group[apply_one_per_window(group.reset_index(drop=True), policy)]


def _format_send_after(batches: Iterator[pd.DataFrame], settings_json: str, columns: list[str]) -> Iterator[pd.DataFrame]:
    from pipeline.times import format_times

    _, policy = _policy(settings_json)
    for batch in batches:
        batch["send_after"] = format_times(batch["send_after_ms"].to_numpy(np.int64), policy.tz)
        yield batch[columns]


def _counts_by(rows: list, key: str, manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-shop / per-category summary of `flag.merge_results` from Spark's small aggregates."""
    from pipeline.jobs.flag.merge import group_entry

    return {
        str(row[key]) or "unknown": group_entry(int(row["conversations"]), int(row["lost_shoppers"]), int(row["flagged"]),
                                                int(row["buyer_messages"] or 0), int(row["confident"] or 0), manifest)
        for row in sorted(rows, key=lambda r: r[key])
    }


def run_flag_spark(
    chats: Path, out: Path, orders: Path | None, model: str | None, window_hours: float | None, config: Config,
    *, master: str = "local[*]", conf: dict[str, str] | None = None,
) -> dict:
    """`buyer-intent flag --engine spark`: the nudge list, `<out>.rejected.csv` and `<out>.summary.json`
    as the local engine writes them (same rows, same order, same summary keys)."""
    from pipeline.jobs.flag.files import CHAT_COLUMNS, FlagError, reason_kind, write_json_atomic
    from pipeline.jobs.flag.job import checked_job
    from pipeline.jobs.flag.merge import open_window_warnings, orders_warnings, share_of_lost
    from pipeline.inference import resolve_model
    from pipeline.nudge import NUDGE_COLUMNS
    from pipeline.nudge.policy import (
        ORDERED_NO,
        ORDERED_YES,
        REASON_FLAGGED,
        REASON_ORDER_UNKNOWN,
        REASON_SKIPPED,
        share_warnings,
    )
    from pipeline.nudge.rows import ORDER_COLUMNS
    from pipeline.times import format_times

    started = time.perf_counter()
    chats, out, orders, settings, policy, chat_names, order_names = checked_job(chats, out, orders, config, window_hours)
    resolved = resolve_model(model, Registry.from_config(config))
    manifest = read_manifest(resolved.directory)
    thresholds = manifest.get("thresholds", {})
    threshold = settings.min_score if settings.min_score is not None else float(thresholds.get("conversation", thresholds.get("purchase", 0.5)))
    settings_json = settings.model_dump_json()

    spark, created = spark_session(master, conf)
    cached = []
    try:
        from pyspark import StorageLevel
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        def keep(frame):
            cached.append(frame.persist(StorageLevel.MEMORY_AND_DISK))
            return cached[-1]

        bundle_name, seal, _ = ship_bundle(spark, resolved.directory, resolved.expected_seal)
        raw, columns = read_spark_table(spark, chats, chat_names, lower=True)
        missing = [c for c in CHAT_COLUMNS if c not in columns]
        if missing:
            raise FlagError(f"{chats}: missing column(s) {missing}; found {columns}")
        optional = [c for c in ("category", "ordered") if c in columns]
        raw = keep(raw.select(*CHAT_COLUMNS, *optional, "_seq", "_bad", "_raw"))
        row_number = _row_numbers(spark, raw)
        blank = lambda c: F.col(c).isNull() | (F.trim(F.col(c).cast("string")) == "")  # noqa: E731
        has = raw.filter(F.col("_bad").isNull()).agg(
            *[(F.sum((~blank(c)).cast("long")) if c in optional else F.lit(0)).alias(c) for c in ("category", "ordered")],
        ).collect()[0]
        has_category, has_ordered = bool(has["category"]), bool(has["ordered"])
        if orders is None and not has_ordered:
            raise FlagError(f"{chats}: no --orders and no `ordered` column: cannot tell which shoppers were lost")
        checked = keep(raw.mapInPandas(lambda b: _validate_chats(b, settings_json, [*CHAT_COLUMNS, *optional]), VALID_SCHEMA)
                       .withColumn("row", row_number))
        valid = checked.filter(F.col("_bad").isNull())
        # One conversation, one buyer: rows naming another buyer than its first message are rejected.
        by_time = Window.partitionBy("shop_id", "conversation_id").orderBy("sent_at", "_seq")
        valid = valid.withColumn("_first_buyer", F.first("buyer_id").over(by_time))
        mismatch_raw = F.udf(lambda *values: _masked_raw(list(values)), "string")
        mismatched = valid.filter(F.col("buyer_id") != F.col("_first_buyer")).select(
            "_seq", "row", F.lit("buyer_id differs from the conversation's first message").alias("reason"),
            mismatch_raw("conversation_id", "buyer_id", "shop_id", "role", "text").alias("raw"),
        )
        valid = valid.filter(F.col("buyer_id") == F.col("_first_buyer")).drop("_first_buyer", "_bad", "_raw", "row")
        messages = valid.repartition("shop_id", "conversation_id").sortWithinPartitions("shop_id", "conversation_id", "sent_at", "_seq")
        conversations = keep(messages.mapInPandas(lambda b: _score_partition(b, bundle_name, seal, settings_json), CONVERSATION_SCHEMA))

        orders_info = None
        horizon = None
        order_rejected = None
        if orders is not None:
            order_raw, order_columns = read_spark_table(spark, orders, order_names, lower=True)
            missing = [c for c in ORDER_COLUMNS if c not in order_columns]
            if missing:
                raise FlagError(f"{orders}: missing column(s) {missing}; found {order_columns}")
            order_raw = keep(order_raw)
            order_rows = _row_numbers(spark, order_raw)
            user_columns = [c for c in order_columns]
            checked_orders = keep(order_raw.select(*user_columns, "_seq", "_bad", "_raw")
                                  .mapInPandas(lambda b: _validate_orders(b, settings_json, user_columns), ORDERS_SCHEMA)
                                  .withColumn("row", order_rows))
            paid = checked_orders.filter(F.col("_bad").isNull()).select("_key", "paid_at")
            stats = checked_orders.agg(F.count(F.lit(1)).alias("n"), F.sum(F.col("_bad").isNull().cast("long")).alias("used"),
                                       F.max(F.when(F.col("_bad").isNull(), F.col("paid_at"))).alias("last")).collect()[0]
            horizon = None if stats["last"] is None else int(stats["last"])
            orders_info = {
                "rows_in": int(stats["n"]),
                "rows_used": int(stats["used"] or 0),
                "rows_rejected": int(stats["n"]) - int(stats["used"] or 0),
                "last_paid_at": format_times(np.array([horizon]), policy.tz)[0] if horizon is not None else None,
            }
            order_rejected = checked_orders.filter(F.col("_bad").isNotNull()).select(
                F.lit(1).alias("_part"), "_seq", F.lit(str(orders)).alias("source"), F.col("row").cast("string").alias("row"),
                F.col("_bad").alias("reason"), F.col("_raw").alias("raw"))
            # The lost rule as a join: paid when an order of this buyer at this shop was paid in
            # [attribution start, last message + window], both inclusive (`OrdersIndex.any_paid_between`).
            start = "first_ms" if policy.attribution_start == "first_message" else "last_ms"
            c, o = conversations.alias("c"), paid.alias("o")
            hit = c.join(o, (F.col("c._key") == F.col("o._key")) & (F.col("o.paid_at") >= F.col(f"c.{start}"))
                         & (F.col("o.paid_at") <= F.col("c.last_ms") + F.lit(policy.window_ms)), "left_semi")
            hit = hit.select("shop_id", "conversation_id").withColumn("_paid", F.lit(True))
            conversations = (conversations.join(hit, ["shop_id", "conversation_id"], "left")
                             .withColumn("ordered", F.when(F.col("_paid"), F.lit(ORDERED_YES)).otherwise(F.lit(ORDERED_NO)))
                             .drop("_paid"))
        decided = keep(conversations.select(*[f.split(" ")[0] for f in CONVERSATION_SCHEMA.split(", ")])
                       .mapInPandas(lambda b: _decide(b, settings_json, threshold), DECIDED_SCHEMA))
        window_open = (F.col("reason") == REASON_FLAGGED) & (
            (F.col("last_ms") + F.lit(policy.window_ms)) > F.lit(horizon) if horizon is not None else F.lit(False))
        candidates = keep(decided.filter(F.col("reason") == REASON_FLAGGED).drop(
            "lost", "expressed", "reason", "last_ms", "n_buyer_turns", "n_confident_buyer_turns", "_rows"))
        per_pair = Window.partitionBy("buyer_id", "shop_id")
        counted = candidates.withColumn("_n", F.count(F.lit(1)).over(per_pair))
        single = counted.filter(F.col("_n") == 1).drop("_n")
        if policy.one_per_buyer_shop:
            several = counted.filter(F.col("_n") > 1).drop("_n")
            several = several.groupBy("buyer_id", "shop_id").applyInPandas(lambda g: _one_per_window(g, settings_json), several.schema)
            flagged = keep(single.unionByName(several))
        else:
            flagged = candidates
        output_columns = [c for c in NUDGE_COLUMNS if c != "category" or has_category]
        ordered_out = flagged.orderBy(F.col("priority").asc(), F.col("purchase_score").desc(), F.col("send_after_ms").asc(),
                                      F.col("shop_id").asc(), F.col("conversation_id").asc())
        out_schema = ", ".join(f"`{c}` {'double' if c == 'purchase_score' else 'long' if c == 'priority' else 'string'}" for c in output_columns)
        nudge_list = ordered_out.mapInPandas(lambda b: _format_send_after(b, settings_json, output_columns), out_schema)

        chat_rejected = checked.filter(F.col("_bad").isNotNull()).select(
            "_seq", F.col("row").cast("string").alias("row"), F.col("_bad").alias("reason"), F.col("_raw").alias("raw"))
        chat_rejected = chat_rejected.unionByName(mismatched.select("_seq", F.col("row").cast("string").alias("row"), "reason", "raw"))
        rejected = chat_rejected.select(F.lit(0).alias("_part"), "_seq", F.lit(str(chats)).alias("source"), "row", "reason", "raw")
        if order_rejected is not None:
            rejected = rejected.unionByName(order_rejected)
        rejected = rejected.orderBy("_part", "_seq").select("source", "row", "reason", "raw")

        # summary numbers (small aggregates back to the driver), all read from the cached decisions: the
        # conversations behind them are the orders join, which is not cached
        n_rows = raw.count()
        reasons = Counter()
        for r in chat_rejected.groupBy("reason").agg(F.count(F.lit(1)).alias("n")).collect():
            reasons[reason_kind(r["reason"])] += int(r["n"])
        n_rejected = sum(reasons.values())
        distinct_texts = valid.filter(F.col("role") == "buyer").select("text").distinct().count()
        flags = decided.select(
            "shop_id", "category", F.lit(1).alias("conversations"), (F.col("lost") == 1).cast("long").alias("lost_shoppers"),
            ((F.col("lost") == 1) & F.col("expressed")).cast("long").alias("lost_with_intent"),
            (F.col("reason") == REASON_SKIPPED).cast("long").alias("skipped"),
            (F.col("reason") == REASON_ORDER_UNKNOWN).cast("long").alias("order_unknown"),
            (F.col("reason") == REASON_FLAGGED).cast("long").alias("candidates"), window_open.cast("long").alias("window_open"),
            F.col("_rows").alias("rows"), F.col("n_buyer_turns").alias("buyer_messages"), F.col("n_confident_buyer_turns").alias("confident"),
        )
        totals = flags.agg(*[F.sum(c).alias(c) for c in ("conversations", "lost_shoppers", "lost_with_intent", "skipped",
                                                         "order_unknown", "candidates", "window_open", "rows", "buyer_messages",
                                                         "confident")]).collect()[0]
        totals = {k: int(totals[k] or 0) for k in totals.asDict()}
        estimate = estimate_from_counts(totals["confident"], totals["buyer_messages"], manifest)
        n_flagged = flagged.count()

        def group(key: str):
            counts = flags.groupBy(key).agg(*[F.sum(c).alias(c) for c in ("conversations", "lost_shoppers", "buyer_messages", "confident")])
            marks = flagged.groupBy(key).agg(F.count(F.lit(1)).alias("flagged"))
            return _counts_by(counts.join(marks, key, "left").fillna(0, ["flagged"]).collect(), key, manifest)

        rows_used = totals["rows"]
        lost = totals["lost_shoppers"]
        rejected_path = out.with_name(f"{out.name}.rejected.csv")
        summary_path = out.with_name(f"{out.name}.summary.json")
        summary = {
            "input": {"chats": str(chats), "orders": None if orders is None else str(orders), "format": "flat"},
            "rows": {
                "in": int(n_rows),
                "used": rows_used,
                "rejected": n_rejected,
                "balanced": int(n_rows) == rows_used + n_rejected,
                "rejected_reasons": dict(sorted(reasons.items())),
                "rejected_file": str(rejected_path),
            },
            "orders": orders_info,
            "lost_rule": "ordered column" if orders is None else f"no paid order at the shop from the {policy.attribution_start.replace('_', ' ')} to the last message + window",
            "window_hours": policy.window_hours,
            "threshold": threshold,
            "model": {"name": resolved.name, "version": resolved.version, "sha256": (manifest.get("sha256") or {}).get("models.skops")},
            "conversations": totals["conversations"],
            "lost_shoppers": lost,
            "lost_with_purchase_intent": totals["lost_with_intent"],
            "skipped_complaint_or_refund": totals["skipped"],
            "suppressed_one_per_window": totals["candidates"] - n_flagged,
            "order_status_unknown": totals["order_unknown"],
            "flagged": n_flagged,
            "flagged_share_of_lost": share_of_lost(n_flagged, lost),
            "candidates_before_window_end": totals["window_open"],
            "warnings": share_warnings(n_flagged, lost, settings.share_alert)
            + orders_warnings(orders, orders_info)
            + open_window_warnings(totals["window_open"], orders_info, policy)
            + shift_warnings(estimate, config.drift.warn_drop),
            "accuracy_estimate": summary_record(estimate),
            "messages": {"buyer": totals["buyer_messages"], "distinct_buyer_texts": int(distinct_texts)},
            "per_shop": group("shop_id"),
            "per_category": group("category") if has_category else {},
            "output": str(out),
            "engine": {"name": "spark", "master": spark.sparkContext.master, "spark": spark.version},
        }
        with _Staging(out) as staging:
            staged_out, staged_rejected = staging.parts(out.name), staging.parts(rejected_path.name)
            assemble(nudge_list, staging.parts("nudges"), staged_out,
                     lambda chunk: chunk.assign(priority=chunk["priority"].astype(np.int64)), config.output.csv_encoding)
            assemble(rejected, staging.parts("rejected"), staged_rejected, csv_encoding=config.output.csv_encoding)
            summary["files_sha256"] = {out.name: sha256_file(staged_out), rejected_path.name: sha256_file(staged_rejected)}
            # As the local engine: the summary (the set's commit record) goes first and comes back last.
            summary_path.unlink(missing_ok=True)
            _publish(staged_out, out)
            _publish(staged_rejected, rejected_path)
        for warning in summary["warnings"]:
            log.warning("%s", warning)
        if not summary["rows"]["balanced"]:
            log.error("rows in (%d) != used (%d) + rejected (%d)", n_rows, rows_used, n_rejected)
        write_json_atomic(summary, summary_path)
        log.info("flag (spark): %d conversations, %d flagged in %.1fs", summary["conversations"], n_flagged, time.perf_counter() - started)
        return summary
    finally:
        for frame in cached:
            try:
                frame.unpersist()
            except Exception:  # noqa: BLE001 (a stopped context)
                pass
        if created:
            spark.stop()


def _masked_raw(values: list) -> str:
    from pipeline.jobs.flag.files import raw_line

    return raw_line(values)
