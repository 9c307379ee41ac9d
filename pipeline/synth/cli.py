"""`buyer-intent data ...`: rebuild the bundled corpus, or stream a synthetic data set of any size.

The lead mounts this as `app.add_typer(data_app, name="data")`; `python -m pipeline.synth.cli` works
without it.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from enum import Enum
from pathlib import Path

import pandas as pd
import typer

from pipeline.synth.card import render_card
from pipeline.synth.chats import export_chat_sheets
from pipeline.synth.config import CorpusConfig, load_corpus_config
from pipeline.synth.messages import generate_messages
from pipeline.synth.seeds import load_seeds, seed_problems, split_seeds
from pipeline.synth.stats import conversation_figures, message_figures, read_jsonl
from pipeline.synth.writer import StreamSummary, replace_atomically, stream

DEFAULT_CORPUS_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "corpus.yaml"

data_app = typer.Typer(help="Build the bundled corpus and stream synthetic data sets.", no_args_is_help=True)


class OutputFormat(str, Enum):
    jsonl = "jsonl"
    parquet = "parquet"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def build(config: CorpusConfig, *, card: bool = True, log=print) -> dict:
    """Regenerate messages.csv, conversations.jsonl, orders.csv (and the data card) from the seeds."""
    seeds = load_seeds(config.path("seeds"), config.intents)
    present = sorted({s.intent for s in seeds})
    missing = [i for i in config.intents if i not in present]
    if missing:
        log(f"warning: no seed file for {missing}; building without them")
    message_seeds, conversation_seeds = split_seeds(seeds, config.holdout.conversation_seed_fraction)
    log(f"{len(seeds)} seeds: {len(message_seeds)} for messages, {len(conversation_seeds)} for conversations")

    messages, report = generate_messages(message_seeds, config)
    messages_path = config.path("messages")
    messages_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = messages_path.with_suffix(".csv.tmp")
    messages.to_csv(temporary, index=False, lineterminator="\n")
    replace_atomically(temporary, messages_path)
    log(f"wrote {len(messages):,} messages to {messages_path}")

    conversations_path, orders_path = config.path("conversations"), config.path("orders")
    conv_tmp, orders_tmp = conversations_path.with_suffix(".jsonl.tmp"), orders_path.with_suffix(".csv.tmp")
    summary = stream(config, conversation_seeds, count=config.conversations.count, seed=config.seed,
                     chunk_size=config.conversations.chunk_size, conversations_path=conv_tmp, orders_path=orders_tmp)
    replace_atomically(conv_tmp, conversations_path)
    replace_atomically(orders_tmp, orders_path)
    log(f"wrote {summary.conversations:,} conversations and {summary.orders:,} orders")

    figures: dict = {"generation": {**report.__dict__, "shortfalls": report.shortfalls}}
    if config.paths.chat_sheets and config.paths.chat_messages:
        figures["chats"] = export_chat_sheets(config.path("chat_sheets"), config.path("chat_messages"), messages["text"])
        for use, numbers in figures["chats"].items():
            log(f"wrote {numbers['kept']:,} written chat messages to {config.path('chat_messages') / (use + '.csv')} "
                f"({numbers['left_out_seen']} left out: their text is already in the corpus or an earlier use)")
    if card:
        from pipeline.data.labelled import assign_splits  # the lead's split; only the card needs it

        splits = assign_splits(messages, val_fraction=config.split.val_fraction, test_fraction=config.split.test_fraction,
                               seed=config.split.seed, label_column="intent", group_column="group")
        orders = pd.read_csv(orders_path, dtype=str, keep_default_na=False)
        figures["messages"] = message_figures(messages, splits, config.messages.near_duplicate_jaccard)
        figures["conversations"] = conversation_figures(read_jsonl(conversations_path), orders, config.conversations.window_hours,
                                                        config.conversations.attribution_start.split("_")[0])
        figures["seeds"] = {
            "total": len(seeds), "message": len(message_seeds), "conversation": len(conversation_seeds),
            "per_intent": {
                i: {"total": sum(s.intent == i for s in seeds), "conversation": sum(s.intent == i for s in conversation_seeds)}
                for i in present
            },
        }
        figures["problems"] = seed_problems(seeds)
        figures["review"] = review_figures(config.path("seeds"), seeds)
        figures["realism"] = realism_figures(config, messages, log)
        card_path = config.path("card")
        card_path.write_text(render_card(figures, config), encoding="utf-8")
        log(f"wrote the data card to {card_path}")
    return figures


def review_figures(seed_dir: Path, seeds: list) -> dict:
    """Seeds per writer and the agreement of the blind second labels (corpus v2 tables)."""
    from collections import Counter

    from pipeline.synth.relabel import relabel_figures
    from pipeline.synth.review import agreement, read_records

    records = [r for path in sorted(Path(seed_dir).glob("v2/*.tsv")) for r in read_records(path)]
    written = Counter(r.writer for r in records)
    kept = Counter(s.writer for s in seeds)
    writers = {w: {"written": written.get(w, kept[w]), "kept": kept[w]} for w in sorted(set(written) | set(kept))}
    return {"writers": writers, "agreement": agreement(records) if records else None,
            "relabels": relabel_figures(Path(seed_dir) / "relabel")}


REALISM_DRAWS = 3  # draws of a small set and of the corpus at its size (the figure of one draw moves by +-0.05)


def realism_figures(config: CorpusConfig, messages: pd.DataFrame, log) -> dict | None:
    """How far the messages read from real ones, with ../shared/tools/realism.py when it is beside the
    project (local and CI machines only: the real chats never enter the project)."""
    import importlib.util

    tool = Path(config.root).resolve().parent / "shared" / "tools" / "realism.py"
    spec = importlib.util.spec_from_file_location("realism", tool) if tool.is_file() else None
    if spec is None or spec.loader is None:
        return None
    realism = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(realism)
    real = pd.read_csv(realism.POOL, dtype=str, keep_default_na=False)["text"]
    auc, n, corpus_side, real_side = realism.realism_auc(messages["text"], real, top=12)

    def auc_by(frame: pd.DataFrame, column: str) -> dict[str, float]:
        """The AUC of each group of at least 100 messages (none when the column is missing)."""
        if column not in frame.columns:
            return {}
        return {str(key): round(realism.realism_auc(texts, real, top=0)[0], 3)
                for key, texts in frame.groupby(column)["text"] if len(texts) >= 100}

    def mean_auc_at(texts: pd.Series, size: int) -> float:
        """The mean AUC of draws of `size` messages: the AUC grows with the sample the classifier learns from, so
        only figures at the same size compare, and a small set's figure moves with the draw."""
        draws = [realism.realism_auc(texts.sample(size, random_state=seed), real, seed=seed, top=0)[0]
                 for seed in range(REALISM_DRAWS)]
        return round(sum(draws) / len(draws), 3)

    per_intent = auc_by(messages, "intent")
    # The pool is one platform and one stage (JD after-sales): a corpus stage is comparable only with real messages
    # of the same kind, so each stage is measured alone and real messages of each source are measured the same way,
    # at their own size, beside the corpus's stages drawn at that size.
    by_stage = auc_by(messages, "stage")
    references = real.tolist()
    real_by_source, stage_at_real_size = {}, {}
    if realism.DEV.is_file():
        dev = pd.read_csv(realism.DEV, dtype=str, keep_default_na=False)
        references += dev["text"].tolist()
        if "source" in dev.columns:
            for source, texts in dev.groupby("source")["text"]:
                size = min(len(texts), len(real))
                if size < 100:
                    continue
                real_by_source[str(source)] = {"n": size, "auc": mean_auc_at(texts, size)}
                if "stage" in messages.columns:
                    stage_at_real_size[str(source)] = {str(stage): mean_auc_at(group, size)
                                                       for stage, group in messages.groupby("stage")["text"] if len(group) >= size}
    copies = len(realism.copies(messages["text"], references))
    log(f"realism AUC {auc:.3f}, copied messages {copies}")
    return {"auc": round(auc, 3), "n": n, "per_intent": per_intent, "by_stage": by_stage, "real_by_source": real_by_source,
            "stage_at_real_size": stage_at_real_size, "copies": copies, "corpus_ngrams": corpus_side, "real_ngrams": real_side}


@data_app.command("build")
def build_command(
    config: Path = typer.Option(DEFAULT_CORPUS_CONFIG, "--config", help="Generator settings (configs/corpus.yaml)."),
    card: bool = typer.Option(True, "--card/--no-card", help="Also recompute the figures of data/README.md."),
) -> None:
    """Regenerate data/messages.csv, conversations.jsonl, orders.csv and data/README.md from the seeds."""
    settings = load_corpus_config(config)
    started = time.perf_counter()
    figures = build(settings, card=card, log=lambda line: typer.echo(line, err=True))
    summary = {"seconds": round(time.perf_counter() - started, 1)}
    if "messages" in figures:
        summary.update(
            messages=figures["messages"]["messages"],
            purchase_intent_rate_pre_sales=round(figures["messages"]["purchase_intent_rate_pre_sales"], 4),
            near_duplicate_share=round(figures["messages"]["near_duplicate_share_test_vs_train"], 4),
            conversations=figures["conversations"]["conversations"],
            lost_pre_sales_with_intent_share=round(figures["conversations"]["lost_pre_sales_with_intent_share"], 4),
        )
    if figures["generation"]["shortfalls"]:
        summary["shortfalls"] = figures["generation"]["shortfalls"]
    typer.echo(json.dumps(summary, ensure_ascii=False))


@data_app.command("synth")
def synth_command(
    conversations: int = typer.Option(..., "--conversations", min=1, help="How many conversations to generate."),
    seed: int = typer.Option(..., "--seed", help="Run seed: same seed, same bytes."),
    out: Path = typer.Option(..., "--out", help="Output directory (created)."),
    output_format: OutputFormat = typer.Option(OutputFormat.jsonl, "--format", help="conversations.jsonl or a flat messages.parquet."),
    config: Path = typer.Option(DEFAULT_CORPUS_CONFIG, "--config", help="Generator settings (configs/corpus.yaml)."),
    chunk_size: int | None = typer.Option(None, "--chunk-size", min=1, help="Conversations per chunk (default: synth.chunk_size)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress lines."),
) -> None:
    """Stream a synthetic data set (conversations + orders) of any size in bounded memory."""
    settings = load_corpus_config(config)
    seeds = load_seeds(settings.path("seeds"), settings.intents)
    if settings.synth.seed_pool != "all":
        message_seeds, conversation_seeds = split_seeds(seeds, settings.holdout.conversation_seed_fraction)
        seeds = conversation_seeds if settings.synth.seed_pool == "conversation" else message_seeds
    out.mkdir(parents=True, exist_ok=True)
    target = out / ("conversations.jsonl" if output_format is OutputFormat.jsonl else "messages.parquet")
    started = time.perf_counter()
    step = max(1, conversations // 20)
    next_report = [step]

    def progress(summary: StreamSummary) -> None:
        if not quiet and summary.conversations >= next_report[0]:
            next_report[0] += step
            rate = summary.conversations / (time.perf_counter() - started)
            typer.echo(f"{summary.conversations:,} conversations  {rate:,.0f}/s  peak RSS {_peak_rss_mb():,.0f} MB", err=True)

    summary = stream(settings, seeds, count=conversations, seed=seed, chunk_size=chunk_size or settings.synth.chunk_size,
                     conversations_path=target, orders_path=out / "orders.csv", fmt=output_format.value, progress=progress)
    seconds = time.perf_counter() - started
    typer.echo(json.dumps({
        "conversations": summary.conversations, "messages": summary.messages, "orders": summary.orders,
        "files": [str(target), str(out / "orders.csv")], "seconds": round(seconds, 2),
        "conversations_per_second": round(summary.conversations / seconds, 1), "peak_rss_mb": round(_peak_rss_mb(), 1),
    }))


if __name__ == "__main__":
    data_app(sys.argv[1:])
