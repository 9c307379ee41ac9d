"""Prediction speed of one model: the scikit-learn path, the compiled path (issue #12) and fastText, in one run.

    .venv/bin/python benchmarks/inference_speed.py --model DIR [--rounds 3] [--results benchmarks/RESULTS.md]

On the same texts, in this one process, interleaved round by round (a change of load on the shared
machine hits every system alike; the best round of each is kept, as in `benchmarks/quality.py`):

- one message per call and all texts as one batch, in messages/s;
- ours through `Predictor.predict_arrays(texts, top_k=3)` (what the live service calls), through
  `Predictor.predict` (the DataFrame of the batch jobs) and the model alone (`Predictor._probabilities`
  on normalised text), each with `compiled=False` (the fitted scikit-learn pipelines) and the default
  compiled path;
- fastText (`fasttext-numpy2`, the dev dependency `benchmarks/quality.py` uses): a supervised model
  trained here on the bundled corpus (`data/messages.csv`) with the same normalisation and the project
  tokenizer cutting with jieba 0.42, then `predict(text, k=1)` on normalised, tokenised text: normalisation
  and segmentation are inside its timing, as they are inside ours; it predicts the intent only (ours:
  intent distribution, fallback, purchase score). Timed twice: fed by jieba (issue #12's reference) and
  fed by the model's own segmenter (rjieba for models fitted since #12), so the comparison is like for like;
- the floors: normalisation + each segmenter alone.

The segmenters' memos (`JiebaTokenizer` caches cut runs) are emptied before every timed pass, so each pass
pays for segmentation as a stream of distinct texts does (`--warm` keeps them). Texts: the real chats in
../shared (realchat-dev and realchat-pool, read in place) when present, else corpus messages. Also printed:
the largest difference between the two paths' probabilities on these texts, and the resident memory the
compiled path adds to the loaded model.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `pipeline` importable from the checkout
    sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared"
REAL_CHATS = (SHARED / "realchat-dev" / "messages.csv", SHARED / "realchat-pool" / "messages.csv")
CORPUS = REPO / "data" / "messages.csv"
SECTION_START = "<!-- inference-speed:start -->"
SECTION_END = "<!-- inference-speed:end -->"
FASTTEXT_JIEBA = "fastText fed by jieba (intent only)"
FASTTEXT_OURS = "fastText fed by our segmenter (intent only)"
FLOOR_JIEBA = "normalisation + jieba alone"
FLOOR_OURS = "normalisation + our segmenter alone"
FASTTEXT_PARAMS = {"epoch": 25, "lr": 0.5, "wordNgrams": 2, "minn": 1, "maxn": 3, "dim": 100, "bucket": 200000,
                   "loss": "softmax", "minCount": 1, "thread": 1, "seed": 13}


def load_texts(paths: list[Path], limit: int | None) -> tuple[list[str], str]:
    paths = [path for path in paths if path.is_file()]
    if not paths:
        raise SystemExit("no texts: give --texts CSV (a `text` column)")
    texts = [text for path in paths for text in pd.read_csv(path, dtype=str, keep_default_na=False)["text"].tolist()]
    if limit:
        texts = texts[:limit]
    names = ", ".join(_rel(path) for path in paths)
    return texts, names


def _rel(path: Path) -> str:
    for root, label in ((REPO, ""), (SHARED, "../shared/")):
        try:
            return label + str(Path(path).resolve().relative_to(root.resolve()))
        except ValueError:
            continue
    return str(path)


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def jieba_memo_clearer(tokenizers) -> Callable[[], None]:
    """Empties the memos of cut runs of these tokenizers (each shared by every user of its segmenter and dictionary)."""
    caches = [tokenizer._segmenter()[1] for tokenizer in tokenizers]
    return lambda: [cache.cache_clear() for cache in caches]


def train_fasttext(work: Path, tokenize: Callable[[str], str]):
    """A supervised fastText intent model on the bundled corpus, tokenised as ours reads it."""
    try:
        import fasttext
    except ImportError as exc:
        raise SystemExit(f"fastText is not installed ({exc}): `uv sync --group dev` installs fasttext-numpy2") from exc

    frame = pd.read_csv(CORPUS, dtype=str, keep_default_na=False)
    path = work / "fasttext-train.txt"
    with open(path, "w", encoding="utf-8") as handle:
        for text, intent in zip(frame["text"], frame["intent"]):
            line = tokenize(text)
            if line:
                handle.write(f"__label__{intent} {line}\n")
    started = time.perf_counter()
    model = fasttext.train_supervised(input=str(path), verbose=0, **FASTTEXT_PARAMS)
    return model, time.perf_counter() - started, len(frame)


def rates(function: Callable[[list[str]], object], texts: list[str], single: int, clear: Callable[[], None] | None,
          batch_repeats: int = 3) -> tuple[float, float]:
    """(messages/s for the texts in one call, the best of `batch_repeats` calls; messages/s one message per
    call over the first `single`)."""
    batch = 0.0
    for _ in range(batch_repeats):
        if clear:
            clear()
        gc.collect()
        started = time.perf_counter()
        function(texts)
        batch = max(batch, len(texts) / (time.perf_counter() - started))
    if clear:
        clear()
    gc.collect()
    sample = texts[:single]
    started = time.perf_counter()
    for text in sample:
        function([text])
    return batch, len(sample) / (time.perf_counter() - started)


def run(model_dir: Path, texts: list[str], rounds: int, single: int, warm: bool) -> dict:
    from pipeline.bundle import load_bundle
    from pipeline.estimators import JiebaTokenizer, installed_segmenter
    from pipeline.inference import Predictor
    from pipeline.text import normalize

    rss_start = _rss_mb()
    bundle = load_bundle(model_dir)
    reference = Predictor(bundle, compiled=False)
    reference.warm_up()
    rss_loaded = _rss_mb()
    started = time.perf_counter()
    fast = Predictor(bundle)
    compile_s = time.perf_counter() - started
    if fast._compiled is None:
        raise SystemExit(f"{model_dir}: the model is not compiled (see the warning above)")
    fast.warm_up()
    rss_compiled = _rss_mb()
    max_chars = bundle.intent.named_steps["normalize"].max_chars
    step = bundle.intent.steps[1][1]
    words = next(t for _, t in getattr(step, "transformer_list", [("", step)]) if isinstance(getattr(t, "tokenizer", None), JiebaTokenizer))
    tokenizer = words.tokenizer
    # the reference: the same tokenizer (user words, memo, whitespace) cutting with jieba 0.42
    jieba_tokenizer = JiebaTokenizer(tokenizer.user_words, segmenter=installed_segmenter("jieba"))

    def tokenize(text: str) -> str:
        return " ".join(tokenizer(normalize(text, max_chars)))

    def tokenize_jieba(text: str) -> str:
        return " ".join(jieba_tokenizer(normalize(text, max_chars)))

    # Equivalence on these texts (model only, every text as one batch and one per call).
    normalized = [text for text in reference.bundle.intent.named_steps["normalize"].transform(texts) if text]
    want_intent, want_purchase = reference._probabilities(normalized)
    got_intent, got_purchase = fast._probabilities(normalized)
    one = [fast._probabilities([text]) for text in normalized]
    one_intent = np.vstack([i for i, _ in one])
    one_purchase = np.concatenate([p for _, p in one]) if want_purchase is not None else None
    diff = {
        "intent": max(float(np.abs(got_intent - want_intent).max()), float(np.abs(one_intent - want_intent).max())),
        "purchase": max(float(np.abs(got_purchase - want_purchase).max()), float(np.abs(one_purchase - want_purchase).max()))
        if want_purchase is not None else float("nan"),
        "labels_differ": int((got_intent.argmax(1) != want_intent.argmax(1)).sum() + (one_intent.argmax(1) != want_intent.argmax(1)).sum()),
        "texts": len(normalized),
    }

    with tempfile.TemporaryDirectory(prefix="buyer-intent-speed-") as tmp:
        ft_model, ft_fit_s, ft_rows = train_fasttext(Path(tmp), tokenize_jieba)

    def fasttext_with(tokenize_text: Callable[[str], str]):
        def function(chunk: list[str]):
            lines = [tokenize_text(text) for text in chunk]
            return ft_model.predict(lines[0] if len(lines) == 1 else lines, k=1)
        return function

    def floor_with(tokenize_text: Callable[[str], str]):
        return lambda chunk: [tokenize_text(text) for text in chunk]

    def model_only(predictor):
        normalize_step = predictor.bundle.intent.named_steps["normalize"]

        def function(chunk: list[str]):
            present = [text for text in normalize_step.transform(chunk) if text]
            return predictor._probabilities(present) if present else None
        return function

    systems: dict[str, Callable[[list[str]], object]] = {
        "ours, scikit-learn path: predict_arrays (service)": lambda chunk: reference.predict_arrays(chunk, top_k=3),
        "ours, compiled path: predict_arrays (service)": lambda chunk: fast.predict_arrays(chunk, top_k=3),
        "ours, scikit-learn path: predict (DataFrame)": lambda chunk: reference.predict(chunk, top_k=3),
        "ours, compiled path: predict (DataFrame)": lambda chunk: fast.predict(chunk, top_k=3),
        "ours, scikit-learn path: model only": model_only(reference),
        "ours, compiled path: model only": model_only(fast),
        FASTTEXT_JIEBA: fasttext_with(tokenize_jieba),
        FASTTEXT_OURS: fasttext_with(tokenize),
        FLOOR_JIEBA: floor_with(tokenize_jieba),
        FLOOR_OURS: floor_with(tokenize),
    }
    clear = None if warm else jieba_memo_clearer([tokenizer, jieba_tokenizer])
    for function in systems.values():  # warm-up: imports, first calls
        function(texts[:16])
    best: dict[str, list[float]] = {name: [0.0, 0.0] for name in systems}
    load_start = os.getloadavg()
    for round_index in range(rounds):
        names = list(systems)
        names = names[round_index % len(names):] + names[: round_index % len(names)]  # rotate the order
        for name in names:
            batch, one_rate = rates(systems[name], texts, single, clear)
            best[name] = [max(best[name][0], batch), max(best[name][1], one_rate)]
            print(f"[speed] round {round_index + 1} {name}: batch {batch:,.0f} msgs/s, single {one_rate:,.0f} msgs/s", file=sys.stderr)
    return {
        "model": str(model_dir), "texts": len(texts), "single": min(single, len(texts)), "rounds": rounds, "warm": warm,
        "rates": best, "diff": diff, "compile_s": compile_s,
        "rss": {"start": rss_start, "loaded": rss_loaded, "compiled": rss_compiled},
        "fasttext": {"fit_s": ft_fit_s, "rows": ft_rows},
        "load": (load_start, os.getloadavg()),
        "manifest": {key: bundle.manifest.get(key) for key in ("name", "created_at", "package_version", "labels", "config")},
        "n_features": fast._compiled.intent.features.n_features,
        "segmenter": tokenizer.segmenter,
        "compiled_mb": fast._compiled.nbytes / 2**20,
    }


def _version(name: str) -> str:
    try:
        return package_version(name)
    except PackageNotFoundError:
        return "?"


def _model_description(manifest: dict) -> str:
    config = manifest.get("config") or {}
    model = config.get("intent_model", {})
    data = (config.get("paths") or {}).get("data")
    return (f"{manifest.get('name')}, trained {manifest.get('created_at')} on `{data}` by buyer-intent {manifest.get('package_version')}, "
            f"{len(manifest.get('labels') or [])} intents, {model.get('classifier')} C={model.get('C')}")


def render(results: dict, texts_name: str, command: str) -> str:
    rates = results["rates"]
    fast_batch, fast_single = rates[FASTTEXT_JIEBA]
    same_batch, same_single = rates[FASTTEXT_OURS]
    load = " / ".join(f"{v:.1f}" for v in results["load"][0]), " / ".join(f"{v:.1f}" for v in results["load"][1])
    diff = results["diff"]
    rss = results["rss"]
    lines = [
        SECTION_START,
        "# Inference speed: scikit-learn path, compiled path, fastText (issue #12)",
        "",
        f"Generated by `{command}` on {datetime.now(timezone.utc).isoformat(timespec='seconds')} ({platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; load average 1/5/15 min {load[0]} at the start, "
        f"{load[1]} at the end: the machine is shared, read the ratios). scikit-learn {_version('scikit-learn')}, "
        f"numpy {_version('numpy')}, scipy {_version('scipy')}, jieba {_version('jieba')}, rjieba {_version('rjieba')}, fastText: fasttext-numpy2 "
        f"{_version('fasttext-numpy2')}.",
        "",
        f"Texts: {results['texts']:,} messages ({texts_name}); one message per call over the first {results['single']:,}, "
        f"batch = all of them in one call (best of 3 calls a round). Best of {results['rounds']} interleaved rounds. Segmenter memos "
        f"{'warm (kept between passes)' if results['warm'] else 'emptied before every timed pass'}. Model: "
        f"`{results['model']}` ({_model_description(results['manifest'])}; segmenter {results['segmenter']}), {results['n_features']:,} n-gram columns; compiled in {results['compile_s'] * 1000:.0f} ms, "
        f"resident memory {rss['loaded']:.0f} MB with the model loaded (process), {rss['compiled']:.0f} MB once compiled; "
        f"the compiled arrays take {results['compiled_mb']:.1f} MB.",
        "",
        f"fastText: supervised, trained here on the bundled corpus ({results['fasttext']['rows']:,} messages, "
        f"{results['fasttext']['fit_s']:.1f} s; {', '.join(f'{k} {v}' for k, v in FASTTEXT_PARAMS.items())}) on the same "
        "normalised text cut by jieba; it gives the top intent only. At prediction it is fed by jieba (issue #12's "
        f"reference, \"vs fastText/jieba\") and by the model's own segmenter ({results['segmenter']}, \"vs fastText/same\").",
        "",
        "| system | msgs/s one per call | vs fastText/jieba | vs fastText/same | msgs/s one batch | vs fastText/jieba | vs fastText/same |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (batch, single) in rates.items():
        lines.append(f"| {name} | {single:,.0f} | {single / fast_single:.2f}x | {single / same_single:.2f}x "
                     f"| {batch:,.0f} | {batch / fast_batch:.2f}x | {batch / same_batch:.2f}x |")
    sk_single = rates["ours, scikit-learn path: predict_arrays (service)"][1]
    co_single = rates["ours, compiled path: predict_arrays (service)"][1]
    sk_model = rates["ours, scikit-learn path: model only"][1]
    co_model = rates["ours, compiled path: model only"][1]
    floor_us = 1e6 / rates[FLOOR_OURS][1]
    model_us, call_us = 1e6 / co_model, 1e6 / co_single
    lines += [
        "",
        f"One message per call, the compiled path is {co_single / sk_single:.1f}x the scikit-learn path through "
        f"`predict_arrays` and {co_model / sk_model:.1f}x for the model alone. Of a compiled `predict_arrays` call "
        f"({call_us:.0f} µs), normalisation + segmentation take {floor_us:.0f} µs, the rest of the model {model_us - floor_us:.0f} µs "
        "(the vectorizers' own analyzers for character n-grams and word bigrams, the n-grams counted and looked up in the "
        f"two vocabulary dicts, about 25 numpy calls on arrays as long as the message's n-grams) and `Predictor`'s outputs {call_us - model_us:.0f} µs. "
        "In one batch the analyzers and look-ups, the same in both paths, are nearly all the time: the paths are level "
        "within the noise of this machine.",
        "",
        f"Same numbers: on the {diff['texts']:,} non-empty texts above, the largest difference between the compiled "
        f"and the scikit-learn probabilities (one batch and one per call) is {diff['intent']:.3g} (intent) and "
        f"{diff['purchase']:.3g} (purchase), {diff['labels_differ']} labels differ (`tests/model/test_compiled.py` checks "
        "the whole corpus and the dev set within 1e-9).",
        "",
        "Reproduce: `make demo` (or any bundle of the default configuration), then "
        "`.venv/bin/python benchmarks/inference_speed.py --model models/latest --rounds 5 --results benchmarks/RESULTS.md`.",
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def update_results(path: Path, section: str, start_marker: str = SECTION_START, end_marker: str = SECTION_END) -> None:
    """Replace the section between the markers in the results file, or append it (other benchmarks pass theirs)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    start, end = text.find(start_marker), text.find(end_marker)
    if start != -1 and end != -1:
        text = text[:start] + section + text[end + len(end_marker):].lstrip("\n")
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", type=Path, required=True, help="model bundle directory (e.g. models/latest)")
    parser.add_argument("--texts", type=Path, action="append", help="CSV with a `text` column (repeatable); default: ../shared real chats, else the corpus")
    parser.add_argument("--limit", type=int, default=None, help="use the first N texts")
    parser.add_argument("--single", type=int, default=100_000, help="messages timed one per call (the first N)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warm", action="store_true", help="keep the jieba memo between passes")
    parser.add_argument("--results", type=Path, default=None, help="write the section into this Markdown file (e.g. benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)
    paths = args.texts or [path for path in REAL_CHATS if path.is_file()] or [CORPUS]
    texts, texts_name = load_texts(paths, args.limit)
    results = run(args.model, texts, args.rounds, args.single, args.warm)
    command = "benchmarks/inference_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    section = render(results, texts_name, command.strip())
    print(section)
    if args.results:
        update_results(args.results, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
