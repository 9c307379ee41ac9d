"""Native jieba ports against jieba 0.42 with the shipped user dictionary: same tokens? how much faster?

    uv run --with jieba-fast-dat python benchmarks/segmenter.py [--results benchmarks/RESULTS.md]

The candidates (issue #12: a Rust or C implementation of jieba's algorithm on PyPI): rjieba, a project
dependency since the tokenizer adopted it, and jieba-fast-dat, which is not (`uv run --with` puts it in a
throw-away overlay of the project environment); a candidate that is not installed is reported as such. The
project's tokenizer is shown with each of its segmenters: jieba (models fitted before #12) and rjieba with
jieba's cut of non-Han text (`pipeline.estimators._cut_block_rjieba`, new models). Also counted: the
distinct word runs (`jieba.re_han_default`) of all the texts that the adopted tokenizer cuts otherwise. Texts: a sample of data/messages.csv, and, when present,
../shared/realchat-dev and ../shared/realchat-pool (read there, never copied), each normalised as the
model normalises (pipeline.text.normalize). Every segmenter gets the user words of
pipeline/resources/userdict.txt with their frequencies and cuts with the HMM on, as
pipeline.estimators.JiebaTokenizer does; whitespace tokens are dropped on all sides. Reported per text
set: texts whose tokens are identical to jieba's, tokens that differ, and one-text-per-call speed without
memoisation (one process, the same texts, side by side in this run). Not a test.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.text import normalize  # noqa: E402

SHARED = REPO.parent / "shared"
MARK_START, MARK_END = "<!-- segmenter:start -->", "<!-- segmenter:end -->"


def user_words() -> list[tuple[str, int | None]]:
    words = []
    for line in (REPO / "pipeline" / "resources" / "userdict.txt").read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if parts and not line.startswith("#"):
            words.append((parts[0], int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None))
    return words


def _jieba_api(module_name: str, distribution: str, words):
    """jieba and the ports that copy its Python API: a Tokenizer with the user words, cut with the HMM."""
    import importlib

    module = importlib.import_module(module_name)
    module.setLogLevel(logging.WARNING)
    tokenizer = module.Tokenizer()
    tokenizer.initialize()
    for word, freq in words:
        tokenizer.add_word(word, freq=freq)
    return f"{distribution} {importlib.metadata.version(distribution)}", lambda text: tokenizer.lcut(text, HMM=True)


def jieba_reference(words):
    return _jieba_api("jieba", "jieba", words)


def rjieba_candidate(words):
    import rjieba

    segmenter = rjieba.Jieba()
    for word, freq in words:
        segmenter.add_word(word, freq, None)
    return f"rjieba {importlib.metadata.version('rjieba')}", lambda text: segmenter.cut(text, hmm=True)


def jieba_fast_dat_candidate(words):
    return _jieba_api("jieba_fast_dat", "jieba-fast-dat", words)


def project_tokenizer(words, segmenter: str):
    """What the model runs: the segmenter with each word run's cut memoised (a fresh memo per text set)."""
    from pipeline.estimators import _JIEBA_CACHE, JiebaTokenizer, installed_segmenter

    _JIEBA_CACHE.clear()
    return JiebaTokenizer(tuple(w if f is None else f"{w} {f}" for w, f in words), segmenter=installed_segmenter(segmenter))


PROJECT = {"jieba": "the project's JiebaTokenizer, jieba (memoised word runs; models before #12)",
           "rjieba": "the project's JiebaTokenizer, rjieba + jieba's non-Han cut (memoised; adopted)"}


CANDIDATES = {"rjieba": rjieba_candidate, "jieba-fast-dat": jieba_fast_dat_candidate}


def text_sets(corpus_sample: int, seed: int) -> dict[str, list[str]]:
    sets = {}
    corpus = pd.read_csv(REPO / "data" / "messages.csv", dtype=str, keep_default_na=False)["text"]
    sets[f"corpus sample ({min(corpus_sample, len(corpus)):,})"] = corpus.sample(min(corpus_sample, len(corpus)), random_state=seed).tolist()
    for name in ("realchat-dev", "realchat-pool"):
        path = SHARED / name / "messages.csv"
        if path.is_file():
            sets[name] = pd.read_csv(path, dtype=str, keep_default_na=False)["text"].tolist()
    return {name: [normalize(t) for t in texts] for name, texts in sets.items()}


def tokens(cut, text: str) -> list[str]:
    return [token for token in cut(text) if token.strip()]


def timed(cut, texts: list[str]) -> tuple[list[list[str]], float]:
    started = time.perf_counter()
    out = [tokens(cut, t) for t in texts]
    return out, len(texts) / (time.perf_counter() - started)


def run(corpus_sample: int, seed: int, shown: int = 5) -> tuple[list[dict], list[str], list[str]]:
    """(table rows, segmenter names, a few differences on the corpus sample: authored text, never a real chat)."""
    words = user_words()
    name, reference = jieba_reference(words)
    names = [name]
    segmenters = [(label, segmenter) for segmenter, label in PROJECT.items()]
    for key, build in CANDIDATES.items():
        try:
            segmenters.append(build(words))
            names.append(segmenters[-1][0])
        except ImportError:
            print(f"{key}: not installed (run with `uv run --with {key}`)")
    rows, diffs = [], []
    sets = text_sets(corpus_sample, seed)
    for position, (set_name, texts) in enumerate(sets.items()):
        tokens(reference, texts[0])  # dictionary loaded before timing
        expected, reference_rate = timed(reference, texts)
        rows.append({"texts": set_name, "segmenter": name, "identical texts": "reference", "differing tokens": "", "msgs/s": reference_rate, "x jieba": 1.0})
        for label, cut in segmenters:
            if isinstance(cut, str):
                cut = project_tokenizer(words, cut)  # a fresh memo per text set
            tokens(cut, texts[0])
            got, rate = timed(cut, texts)
            differ = [(text, a, b) for text, a, b in zip(texts, expected, got) if a != b]
            rows.append({"texts": set_name, "segmenter": label,
                         "identical texts": f"{len(texts) - len(differ):,} / {len(texts):,} ({1 - len(differ) / len(texts):.1%})",
                         "differing tokens": f"{sum(len(set(a) ^ set(b)) for _, a, b in differ):,}", "msgs/s": rate, "x jieba": rate / reference_rate})
            if position == 0:
                diffs += [f"- {label}: `{' / '.join(b)}` where jieba gives `{' / '.join(a)}`" for _, a, b in differ[:shown]]
    return rows, names, diffs, word_run_differences(words, reference, sets)


def word_run_differences(words, reference, sets: dict[str, list[str]]) -> tuple[int, int]:
    """(distinct word runs of the corpus and of every text set, those the adopted tokenizer cuts otherwise than jieba)."""
    import jieba

    from pipeline.estimators import WORD_RUNS

    tokenizer = project_tokenizer(words, "rjieba")
    corpus = pd.read_csv(REPO / "data" / "messages.csv", dtype=str, keep_default_na=False)["text"].map(normalize).tolist()
    runs = {run for texts in [corpus, *sets.values()] for text in texts for run in WORD_RUNS.split(text) if run and WORD_RUNS.match(run)}
    assert WORD_RUNS.pattern == jieba.re_han_default.pattern
    return len(runs), sum(tokens(reference, run) != tokenizer(run) for run in runs)


def markdown(rows: list[dict], names: list[str], diffs: list[str], runs: tuple[int, int], command: str) -> str:
    table = pd.DataFrame(rows)
    table["msgs/s"] = table["msgs/s"].map(lambda v: f"{v:,.0f}")
    table["x jieba"] = table["x jieba"].map(lambda v: f"{v:.2f}")
    header = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns) + "\n"
    body = "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in table.itertuples(index=False))
    return (
        f"{MARK_START}\n# Segmenters: native jieba ports against jieba 0.42 (issue #12)\n\n"
        f"Generated by `{command}` on {datetime.now(timezone.utc).isoformat(timespec='seconds')} "
        f"({platform.machine()}, Python {platform.python_version()}; {', '.join(names)}). The shipped user dictionary, "
        "HMM on, whitespace tokens dropped, one text per call without memoisation, one process, side by side.\n\n"
        + header + body + f"\nDistinct word runs (`jieba.re_han_default`) of the whole corpus and the text sets above: {runs[0]:,}; "
        f"cut otherwise than jieba by the adopted tokenizer: {runs[1]:,}.\n"
        + "\nDifferences on the corpus sample (authored text):\n\n" + "\n".join(diffs) + f"\n{MARK_END}\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus-sample", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, help="write the section into this Markdown file")
    args = parser.parse_args()
    rows, names, diffs, runs = run(args.corpus_sample, args.seed)
    command = "uv run --with jieba-fast-dat python benchmarks/segmenter.py" + (f" --results {args.results}" if args.results else "")
    section = markdown(rows, names, diffs, runs, command)
    print(section)
    if args.results:
        text = args.results.read_text(encoding="utf-8") if args.results.exists() else ""
        if MARK_START in text and MARK_END in text:
            text = text[: text.index(MARK_START)] + section.rstrip("\n") + text[text.index(MARK_END) + len(MARK_END):]
        else:
            text = text.rstrip("\n") + "\n\n" + section
        args.results.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
