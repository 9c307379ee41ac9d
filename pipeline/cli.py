"""`buyer-intent`: the command line users and the Makefile run."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.config import ConfigError, load_config

app = typer.Typer(help="Intent and purchase-intent models for e-commerce buyer chats.", no_args_is_help=True, add_completion=False)
ConfigOption = Annotated[Optional[Path], typer.Option("--config", help="YAML config (default: configs/default.yaml)")]
ColumnsOption = Annotated[
    Optional[str],
    typer.Option("--columns", help="map the file's headers: HEADER=column,... e.g. 内容=text,发送时间=sent_at (adds to columns.aliases)"),
]
ModelOption = Annotated[
    Optional[str],
    typer.Option("--model", help="models:/buyer-intent@champion (default), a registered version, or a local model directory"),
]
EngineOption = Annotated[str, typer.Option("--engine", help="local (this machine's cores) or spark (PySpark; see README, On Spark)")]
MasterOption = Annotated[str, typer.Option("--master", help="with --engine spark: the Spark master URL")]
ConfOption = Annotated[Optional[list[str]], typer.Option("--conf", help="with --engine spark: a Spark setting key=value; repeatable")]
EncodingOption = Annotated[
    Optional[str],
    typer.Option("--encoding", help="CSV output encoding: utf-8-sig (UTF-8 with BOM, for Excel), gb18030 (old Excel/ERP imports) or "
                 "utf-8 (no BOM); default output.csv_encoding (utf-8-sig). Ignored for .xlsx, .parquet and .jsonl outputs"),
]


def _check_engine(engine: str) -> None:
    if engine not in ("local", "spark"):
        raise typer.BadParameter(f"--engine must be local or spark, got {engine!r}")


def _check_encoding(encoding: Optional[str]) -> None:
    """An unknown --encoding is one line naming the choices, before any model is loaded."""
    from pipeline.data.tables import TableError, check_csv_encoding

    if encoding is not None:
        try:
            check_csv_encoding(encoding)
        except TableError as exc:
            _fail(ValueError(f"--encoding: {exc}"))


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # MLflow's artifact download bars (when a logged model is validated) cut through the log lines; its own
    # switch turns them off unless the user set it.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _config(path: Optional[Path], overrides: dict):
    try:
        return load_config(path, overrides)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def train(
    config: ConfigOption = None,
    data: Annotated[
        Optional[list[Path]],
        typer.Option(help="labelled messages (CSV/JSONL/Parquet/Excel); repeat to add more labelled files, e.g. the filled-in queue of `select` (weighted by extra_data_weight). "
                     "Replaces the config's training files (paths.data, paths.extra_data) and, unless --calibration-data is given, its calibration set"),
    ] = None,
    add_data: Annotated[
        Optional[list[Path]],
        typer.Option("--add-data", help="more labelled files added to the config's training files (the bundled corpus and its written "
                     "chats by default), weighted by extra_data_weight: e.g. the filled-in queue of `select`; repeatable"),
    ] = None,
    eval_data: Annotated[
        Optional[list[str]],
        typer.Option("--eval-data", help="extra labelled sets to evaluate on, PATH or NAME=PATH (default name: the file's folder); repeatable"),
    ] = None,
    model_dir: Annotated[Optional[Path], typer.Option(help="also write the model bundle to this directory")] = None,
    conversations: Annotated[Optional[Path], typer.Option(help="labelled conversations JSONL for the conversation-level detector")] = None,
    orders: Annotated[
        Optional[Path], typer.Option(help="orders of those conversations' shops: the nudge list is evaluated on held-out conversations")
    ] = None,
    promote: Annotated[Optional[bool], typer.Option("--promote/--no-promote", help="force or forbid setting the champion alias")] = None,
    seed: Annotated[Optional[int], typer.Option(help="override the config seed")] = None,
    columns: ColumnsOption = None,
    unlabelled: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--unlabelled",
            help="a shop's unlabelled chat export (CSV/JSONL/Parquet/Excel; with a role column, buyer rows only); repeatable. "
            "Fits only the TF-IDF IDF on the training text + these messages: the vocabulary and the classifiers stay the "
            "training text's, and the model keeps no unlabelled text (benchmarks/ADAPTATION.md: neutral to slightly "
            "positive on real chats). Self-training and importance weighting are not offered: they did not help there",
        ),
    ] = None,
    calibration_data: Annotated[
        Optional[Path],
        typer.Option(
            "--calibration-data",
            help="a shop's own labelled messages (text, intent[, purchase_intent]), never trained on: the intent model's "
            "temperature and the fallback threshold are fitted on them instead of the config's calibration set (the bundled written chats), so confidence and "
            "hand-over follow the shop's real chats (benchmarks/CALIBRATION.md: ECE on real chats 0.14 -> 0.07 with 200)",
        ),
    ] = None,
    calibration_chats: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--calibration-chats",
            help="a shop's unlabelled chat export (read as --unlabelled reads it); repeatable; replaces the config's calibration set. Without labels: the intent "
            "temperature is set so that the mean confidence on these messages is ATC's estimate of the accuracy there, and "
            "the fallback threshold so that the accepted messages' mean confidence reaches the target (benchmarks/CALIBRATION.md)",
        ),
    ] = None,
) -> None:
    """Fit, evaluate, log to MLflow, register `buyer-intent`, maybe promote to champion, write the report.

    With --unlabelled the shop's own buyer messages also weigh the n-grams (IDF only); with --calibration-data its
    labelled messages calibrate the intent model's confidence and hand-over."""
    from pipeline.data.labelled import DataError
    from pipeline.jobs.workflows import train_and_track

    _setup_logging()
    cfg = _config(
        config,
        {"paths.data": str(data[0]) if data else None, "paths.extra_data": [str(p) for p in data[1:]] if data else None,
         "paths.model_dir": str(model_dir) if model_dir else None,
         "paths.conversations": str(conversations) if conversations else None, "paths.orders": str(orders) if orders else None,
         "seed": seed, "columns.map": columns, "paths.unlabelled": [str(p) for p in unlabelled] if unlabelled else None,
         "paths.calibration_data": str(calibration_data) if calibration_data else None,
         "paths.calibration_chats": [str(p) for p in calibration_chats] if calibration_chats else None},
    )
    if conversations and not orders:  # the config's orders belong to the config's conversations, not to these
        cfg = cfg.model_copy(update={"paths": cfg.paths.model_copy(update={"orders": None})})
    if add_data:
        cfg = cfg.model_copy(update={"paths": cfg.paths.model_copy(update={"extra_data": [*cfg.paths.extra_data, *map(str, add_data)]})})
    if (data or calibration_chats) and not calibration_data:
        # the config's calibration set belongs to the config's training files (the bundled corpus), not to a
        # shop's data, whose labels may differ; and a shop's chats calibrate instead of it
        cfg = cfg.model_copy(update={"paths": cfg.paths.model_copy(update={"calibration_data": None})})
    try:
        summary = train_and_track(cfg, list(eval_data or []), promote)
    except (DataError, ValueError, OSError) as exc:  # OSError: a full disk, a read-only directory
        _fail(exc)
    typer.echo(f"run id: {summary['run_id']}")
    typer.echo(f"registered: {cfg.mlflow.registered_model} version {summary['model_version']}"
               f" ({'promoted to @' + cfg.mlflow.alias if summary['promoted'] else 'not promoted'}: {summary['promotion_reason']})")
    if summary.get("unlabelled"):
        used = summary["unlabelled"]
        typer.echo(f"IDF fitted on the training text + {used['messages_used']} unlabelled buyer messages ({used['rows_rejected']} rows "
                   f"quarantined in {cfg.paths.quarantine}, {used['excluded_held_out']} left out as validation/test/evaluation texts)")
    if summary.get("calibration"):
        fitted = summary["calibration"]
        typer.echo(f"intent temperature and fallback threshold fitted on {fitted['rows']} labelled messages of {fitted['source']} "
                   f"({fitted['rejected']} rows quarantined); there: " + ", ".join(f"{k}={v:.4f}" for k, v in fitted["headline"].items()))
    if summary.get("calibration_chats"):
        chats = summary["calibration_chats"]
        typer.echo(f"calibrated on {chats['messages_used']} unlabelled buyer messages: estimated accuracy there "
                   f"{chats['estimated_accuracy']:.3f}, temperature {chats['temperature_validation']:.4f} -> {chats['temperature']:.4f}"
                   + (f", fallback hands over {chats['handed_over_share']:.0%} (expected accepted accuracy {chats['expected_accepted_accuracy']:.3f})"
                      if "handed_over_share" in chats else ""))
    typer.echo("test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in summary["headline"].items()))
    for name, headline in summary["eval"].items():
        typer.echo(f"{name} metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in headline.items()))
        if name in summary.get("eval_estimates", {}):
            typer.echo(f"{name} label-free estimate of the intent accuracy (ATC, what `predict` reports on unlabelled chats): "
                       f"{summary['eval_estimates'][name]:.4f} against the measured {headline['intent_accuracy']:.4f}")
    typer.echo(f"report: {summary['report']}")
    if summary["model_dir"]:
        typer.echo(f"model directory: {summary['model_dir']}")


@app.command()
def predict(
    input: Annotated[Path, typer.Option("--input", help="CSV/JSONL/Parquet with a `text` column")],
    output: Annotated[Path, typer.Option("--output", help="output file; format by extension")],
    model: ModelOption = None,
    config: ConfigOption = None,
    columns: ColumnsOption = None,
    explain: Annotated[
        bool,
        typer.Option("--explain", help="add `explanation`: JSON of the n-grams that pushed the predicted intent and the purchase score, "
                     "with their contributions to the model's logits (pipeline/explain.py)"),
    ] = False,
    explain_top_k: Annotated[Optional[int], typer.Option("--explain-top-k", min=1, help="n-grams listed per model with --explain (default 5)")] = None,
    engine: EngineOption = "local",
    master: MasterOption = "local[*]",
    conf: ConfOption = None,
    encoding: EncodingOption = None,
) -> None:
    """Add intent, intent_confidence, fallback, purchase_intent and purchase_score to every row (and `explanation` with --explain)."""
    from pipeline.bundle import ModelIntegrityError
    from pipeline.drift import shift_warnings
    from pipeline.inference import ModelNotFoundError
    from pipeline.data.tables import TableError
    from pipeline.jobs.workflows import predict_file

    _setup_logging()
    _check_engine(engine)
    _check_encoding(encoding)
    run_config = _config(config, {"columns.map": columns, "output.csv_encoding": encoding})
    try:
        if engine == "spark":
            from pipeline.jobs.spark import SparkEngineError, parse_conf, run_predict

            if explain:
                raise SparkEngineError("--explain runs with --engine local only")
            counts = run_predict(input, output, model, run_config, master=master, conf=parse_conf(conf))
        else:
            counts = predict_file(input, output, model, run_config, explain=explain, explain_top_k=explain_top_k)
    except (ModelNotFoundError, ModelIntegrityError, TableError, ValueError, OSError) as exc:
        _fail(exc)
    typer.echo(f"scored {counts['rows_scored']} rows -> {output}" + (f"; {counts['rows_rejected']} rejected -> {output}.rejected.csv" if counts["rows_rejected"] else ""))
    estimate = counts.get("accuracy_estimate")
    if estimate is not None:
        typer.echo(estimate.message())
        for warning in shift_warnings(estimate, run_config.drift.warn_drop):
            typer.echo(f"warning: {warning}", err=True)


@app.command()
def select(
    input: Annotated[Path, typer.Option("--input", help="chat export (CSV/JSONL/Parquet) with a `text` column; with `role`, buyer rows only")],
    out: Annotated[Path, typer.Option("--out", help="the queue: .csv (UTF-8 with BOM unless --encoding, opens in Excel) or .xlsx (needs openpyxl)")],
    n: Annotated[int, typer.Option("--n", min=1, help="messages to queue for labelling")] = 200,
    strategy: Annotated[str, typer.Option(help="uncertainty: margin (top-2 probabilities) or entropy")] = "margin",
    similarity: Annotated[float, typer.Option(help="near-duplicates: character-bigram Jaccard at or above this (>1: off)")] = 0.6,
    model: ModelOption = None,
    config: ConfigOption = None,
    columns: ColumnsOption = None,
    encoding: EncodingOption = None,
) -> None:
    """Choose the buyer messages whose labels would teach the model most; write them with the model's guess
    and empty `intent` and `purchase_intent` columns to fill in."""
    from pipeline.bundle import ModelIntegrityError
    from pipeline.inference import ModelNotFoundError
    from pipeline.jobs.select import select_file
    from pipeline.data.tables import TableError

    _setup_logging()
    _check_encoding(encoding)
    run_config = _config(config, {"columns.map": columns, "output.csv_encoding": encoding})
    try:
        summary = select_file(input, out, n, model, run_config, strategy=strategy, similarity=similarity)
    except (ModelNotFoundError, ModelIntegrityError, TableError, ValueError) as exc:
        _fail(exc)
    typer.echo(json.dumps(summary, ensure_ascii=False, indent=2))


@app.command()
def evaluate(
    data: Annotated[Path, typer.Option("--data", help="labelled messages: PATH or NAME=PATH (default name: the file's folder)")],
    out: Annotated[Path, typer.Option("--out", help="directory for metrics.json and the report")],
    model: ModelOption = None,
    config: ConfigOption = None,
    columns: ColumnsOption = None,
) -> None:
    """Metrics and the report of a model on a labelled file."""
    from pipeline.bundle import ModelIntegrityError
    from pipeline.data.labelled import DataError
    from pipeline.inference import ModelNotFoundError
    from pipeline.jobs.workflows import evaluate_file

    _setup_logging()
    try:
        metrics = evaluate_file(data, out, model, _config(config, {"columns.map": columns}))
    except (ModelNotFoundError, ModelIntegrityError, DataError, ValueError, OSError) as exc:
        _fail(exc)
    typer.echo(f"accuracy={metrics['accuracy']:.4f} macro_f1={metrics['macro_f1']:.4f} fallback_rate={metrics['fallback_rate']:.4f}")
    if "purchase" in metrics:
        p = metrics["purchase"]
        typer.echo(f"purchase: average_precision={p['average_precision']:.4f} precision={p['precision']:.4f} recall={p['recall']:.4f}")
    typer.echo(f"metrics: {out / 'metrics.json'}; report: {out / 'report.html'}")


def _parse_hours(value: str, what: str = "window") -> float:
    """'72h', '3d', '30m' or a number of hours -> hours (--window, --send-delay)."""
    text = value.strip().lower()
    try:
        if text.endswith("h"):
            hours = float(text[:-1])
        elif text.endswith("d"):
            hours = float(text[:-1]) * 24
        elif text.endswith("m"):
            hours = float(text[:-1]) / 60
        else:
            hours = float(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{what} must look like 72h, 3d or 30m, got {value!r}") from exc
    if not hours >= 0:  # also refuses nan
        raise typer.BadParameter(f"{what} must not be negative, got {value!r}")
    return hours


@app.command()
def flag(
    chats: Annotated[Path, typer.Option("--chats", help="flat message export, or conversation JSONL (--engine local only)")],
    out: Annotated[Path, typer.Option("--out", help="nudge list; format by extension")],
    orders: Annotated[Optional[Path], typer.Option("--orders", help="orders table: order_id, buyer_id, shop_id, paid_at")] = None,
    model: ModelOption = None,
    window: Annotated[Optional[str], typer.Option("--window", help="attribution window, e.g. 72h")] = None,
    send_delay: Annotated[
        Optional[str],
        typer.Option("--send-delay", help="send each nudge this long after the last message, e.g. 2h (催拍 within hours; "
                     "flag.send_delay_hours); default: when the window closes. Always moved out of quiet hours"),
    ] = None,
    config: ConfigOption = None,
    columns: ColumnsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the whole summary as JSON (it is always written to <out>.summary.json)")] = False,
    engine: EngineOption = "local",
    master: MasterOption = "local[*]",
    conf: ConfOption = None,
    encoding: EncodingOption = None,
) -> None:
    """Find lost shoppers who had wanted to buy and write the nudge list (催拍)."""
    from pipeline.bundle import ModelIntegrityError
    from pipeline.jobs.flag import run_flag
    from pipeline.inference import ModelNotFoundError
    from pipeline.data.tables import TableError

    _setup_logging()
    _check_engine(engine)
    _check_encoding(encoding)
    window_hours = _parse_hours(window) if window else None
    delay = _parse_hours(send_delay, "--send-delay") if send_delay else None
    run_config = _config(config, {"columns.map": columns, "flag.send_delay_hours": delay, "output.csv_encoding": encoding})
    try:
        if engine == "spark":
            from pipeline.jobs.spark import parse_conf, run_flag_spark

            summary = run_flag_spark(chats, out, orders, model, window_hours,
                                     run_config, master=master, conf=parse_conf(conf))
        else:
            summary = run_flag(chats, out, orders, model, window_hours, run_config)
    except (ModelNotFoundError, ModelIntegrityError, TableError, ValueError, OSError) as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        from pipeline.terminal import print_flag_summary

        print_flag_summary(summary)
        typer.echo(f"summary: {out.with_name(out.name + '.summary.json')}")


@app.command()
def tune(
    out: Annotated[Path, typer.Option("--out", help="YAML config with the best settings")],
    config: ConfigOption = None,
    data: Annotated[Optional[Path], typer.Option(help="labelled messages")] = None,
    trials: Annotated[int, typer.Option(help="number of configurations to try")] = 20,
    folds: Annotated[int, typer.Option(help="grouped cross-validation folds on the training split")] = 3,
    n_jobs: Annotated[int, typer.Option(help="parallel workers")] = 2,
    columns: ColumnsOption = None,
) -> None:
    """Search features and classifiers by cross-validation on the training split; write the best config."""
    from pipeline.data.labelled import LABELLED_COLUMNS, DataError, load_training_data
    from pipeline.data.tables import TableError
    from pipeline.training.tune import run_tune

    _setup_logging()
    cfg = _config(config, {"paths.data": str(data) if data else None, "columns.map": columns})
    try:  # TuneError (a bad search space) is a ValueError: a one-line error naming the key, not a traceback
        # the training files `train` reads (the corpus and the config's extra files); the cross-validation counts each row once
        labelled = load_training_data(cfg.paths.data, cfg.paths.extra_data, cfg.paths.quarantine, cfg.split.min_examples_per_label,
                                      cfg.columns.names().only(LABELLED_COLUMNS), cfg.extra_data_weight)
        result = run_tune(cfg, labelled, out, n_trials=trials, folds=folds, n_jobs=n_jobs)
    except (ConfigError, DataError, TableError, ValueError, OSError) as exc:
        _fail(exc)
    typer.echo(json.dumps(result, ensure_ascii=False, indent=2, default=str))


@app.command("export-bento")
def export_bento(model: ModelOption = None, config: ConfigOption = None) -> None:
    """Copy a verified registered model into the BentoML model store for serving."""
    from pipeline.tracking.bento import export_bento as export
    from pipeline.config import Registry

    from pipeline.bundle import ModelIntegrityError
    from pipeline.inference import ModelNotFoundError

    _setup_logging()
    try:
        tag = export(model, Registry.from_config(_config(config, {})))
    except (ModelNotFoundError, ModelIntegrityError) as exc:
        _fail(exc)
    typer.echo(f"bentoml model: {tag}")


def _mount_data_commands() -> None:
    try:
        from pipeline.synth.cli import data_app
    except ImportError:  # the corpus generator is optional for scoring-only installs
        return
    app.add_typer(data_app, name="data", help="Build the bundled corpus and synthesise data at scale.")


_mount_data_commands()

if __name__ == "__main__":
    app()
