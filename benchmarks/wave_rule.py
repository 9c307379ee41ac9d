"""Rule AZ3 (#10, `data/seeds/chats/ROUND28_RULES.md`, rule BL): is a wave of written chats kept for training?

    .venv/bin/python benchmarks/wave_rule.py --a D13 D14 D15 --b C13 C14 C15 [--out decision.json]

D_s is the default trained at run seed s (`buyer-intent train --seed s`), C_s the same with the wave added to the
training chats. Run the copy of this script in the candidate's checkout after its `buyer-intent data build`: that
checkout's `data/chats/yardstick.csv` then holds no text the wave also holds, and its data and config are read.

Why three draws: a wave's effect on the yardstick's purchase AP moved with the draw of added text (wave 48 in halves:
+0.0007 and -0.0001 where the whole wave gave -0.0026) and with the training seed (wave 52: -0.0041 to +0.0010), by as
much as the losses that turned waves away. One trained pair's bootstrap SE does not hold that variation; the spread
over three seeds does.

Per seed s, on the pair (D_s, C_s):
- the yardstick: deltas of accuracy, macro-F1 and purchase AP, with a paired bootstrap SE that resamples messages
  within each writer (300 draws, seed 27);
- the held-out corpus writers (`split.val_holdout`): deltas of accuracy and purchase AP;
- the nudge list on that seed's test conversations: deltas of (a) the AP of the conversation score among lost shoppers
  and (b) the list's F1, with a paired bootstrap SE over the conversations (300 draws, seed 27).
Each delta is then the mean over the seeds, its SE sqrt(mean squared SE + variance of the deltas / number of seeds).
Kept if accuracy and macro-F1 gain more than their SE, purchase AP loses less than its SE, the held-out writers lose
less than 0.010 on both, and the list's (a) and (b) lose less than their SE. The real-chat dev set is not read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.bundle import load_bundle  # noqa: E402
from pipeline.config import load_config, load_flag_settings  # noqa: E402
from pipeline.conversation import ConversationScorer  # noqa: E402
from pipeline.data.labelled import load_labelled_conversations  # noqa: E402
from pipeline.inference import Predictor  # noqa: E402
from pipeline.nudge import NudgePolicy  # noqa: E402
from pipeline.training.flag_eval import evaluate_flagging, load_orders_index  # noqa: E402
from pipeline.training.train import _conversation_split  # noqa: E402

SEEDS = (13, 14, 15)
DRAWS = 300
BOOTSTRAP_SEED = 27
HELD_OUT_FLOOR = -0.010
YARDSTICK = ("accuracy", "macro_f1", "purchase_ap")
LIST = ("ap_lost", "f1")


def accuracy_macro_f1(truth: np.ndarray, pred: np.ndarray, n_labels: int) -> tuple[float, float]:
    """Accuracy and macro-F1 over the labels present in `truth`; a prediction of -1 (a label the yardstick does not
    carry) counts as wrong for every label."""
    cells = np.bincount(truth * (n_labels + 1) + (pred + 1), minlength=n_labels * (n_labels + 1))
    confusion = cells.reshape(n_labels, n_labels + 1)[:, 1:]
    hits = np.diag(confusion).astype(float)
    support = confusion.sum(1)
    predicted = np.bincount(pred[pred >= 0], minlength=n_labels)
    precision = np.divide(hits, predicted, out=np.zeros(n_labels), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros(n_labels), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n_labels), where=(precision + recall) > 0)
    return float(hits.sum() / len(truth)), float(f1[support > 0].mean())


def within_writer_resamples(writers: np.ndarray, draws: int, seed: int) -> list[np.ndarray]:
    """Bootstrap indices that resample messages within each writer (writers in sorted order), so every draw keeps
    each writer's share of the yardstick."""
    members = [np.flatnonzero(writers == w) for w in sorted(set(writers))]
    rng = np.random.default_rng(seed)
    return [np.concatenate([m[rng.integers(0, len(m), len(m))] for m in members]) for _ in range(draws)]


def yardstick_figures(truth, purchase_truth, pred, purchase_score, index, n_labels) -> np.ndarray:
    accuracy, macro_f1 = accuracy_macro_f1(truth[index], pred[index], n_labels)
    return np.array([accuracy, macro_f1, average_precision_score(purchase_truth[index], purchase_score[index])])


def paired_deltas(figures, resamples: Sequence[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """`figures(model, index)` -> array; the delta B - A on all n items and its paired bootstrap SE (the same
    resample for both models)."""
    everything = np.arange(n)
    delta = figures("B", everything) - figures("A", everything)
    boot = np.array([figures("B", index) - figures("A", index) for index in resamples])
    return delta, boot.std(axis=0, ddof=1)


def list_figures(table: pd.DataFrame, index: np.ndarray) -> np.ndarray:
    """(a) AP of the conversation score among lost shoppers, (b) F1 of the flag among them."""
    lost = table.lost.to_numpy()[index]
    truth = table.truth.to_numpy()[index].astype(bool)
    score = table.purchase_score.to_numpy()[index]
    flagged = table.flagged.to_numpy()[index].astype(bool)
    ap = average_precision_score(truth[lost], score[lost])
    hits = (flagged & truth & lost).sum()
    precision, recall = hits / max(flagged.sum(), 1), hits / max((truth & lost).sum(), 1)
    return np.array([ap, 2 * precision * recall / max(precision + recall, 1e-9)])


def combine(deltas: Sequence[float], ses: Sequence[float]) -> tuple[float, float]:
    """Mean delta over the training draws; its SE holds the bootstrap SE of each draw and the spread between draws."""
    d, s = np.asarray(deltas, float), np.asarray(ses, float)
    return float(d.mean()), float(np.sqrt((s**2).mean() + d.var(ddof=1) / len(d)))


def summarise(per_seed: list[dict]) -> dict:
    """The rule's quantities over the seeds and its verdict."""
    out: dict = {"per_seed": per_seed}
    for part, names in (("yardstick", YARDSTICK), ("list", LIST)):
        out[part] = {}
        for i, name in enumerate(names):
            delta, se = combine([r[f"{part}_delta"][i] for r in per_seed], [r[f"{part}_se"][i] for r in per_seed])
            out[part][name] = {"delta": round(delta, 4), "se": round(se, 4)}
    out["held_out"] = np.mean([r["held_out_delta"] for r in per_seed], axis=0).round(4).tolist()
    out["pass"] = verdict(out)
    out["kept"] = all(out["pass"].values())
    return out


def verdict(summary: dict) -> dict[str, bool]:
    ys, ls = summary["yardstick"], summary["list"]
    return {
        "yardstick": ys["accuracy"]["delta"] > ys["accuracy"]["se"]
        and ys["macro_f1"]["delta"] > ys["macro_f1"]["se"]
        and ys["purchase_ap"]["delta"] > -ys["purchase_ap"]["se"],
        "held_out": all(v > HELD_OUT_FLOOR for v in summary["held_out"]),
        "list_a": ls["ap_lost"]["delta"] > -ls["ap_lost"]["se"],
        "list_b": ls["f1"]["delta"] > -ls["f1"]["se"],
    }


@dataclass(frozen=True)
class Inputs:
    """What every training draw is measured on, read once from this checkout's data and config."""

    yardstick: pd.DataFrame
    held_out: pd.DataFrame
    conversations: pd.DataFrame
    policy: NudgePolicy
    orders: object


def load_inputs() -> Inputs:
    base = load_config()
    yard = pd.read_csv(REPO / "data/chats/yardstick.csv", dtype={"text": str}, keep_default_na=False)
    messages = pd.read_csv(REPO / base.paths.data, dtype={"text": str}, keep_default_na=False)
    held = messages[messages[base.split.holdout_column].isin(base.split.val_holdout)]
    frame, _ = load_labelled_conversations(REPO / base.paths.conversations, None)
    policy = NudgePolicy.from_settings(load_flag_settings(base.flag))
    orders, _ = load_orders_index(REPO / base.paths.orders, policy, base.columns.names())
    return Inputs(yard, held, frame.reset_index(drop=True), policy, orders)


def measure_seed(seed: int, bundle_a: str, bundle_b: str, draws: int, inputs: Inputs) -> dict:
    """AZ's quantities for one trained pair."""
    yard, held, frame, policy, orders = (inputs.yardstick, inputs.held_out, inputs.conversations, inputs.policy,
                                         inputs.orders)
    labels = sorted(set(yard.intent))
    label_index = {label: i for i, label in enumerate(labels)}
    truth = yard.intent.map(label_index).to_numpy()
    purchase_truth = yard.purchase_intent.astype(int).to_numpy()
    predictors = {"A": Predictor(load_bundle(bundle_a)), "B": Predictor(load_bundle(bundle_b))}

    scored = {}
    for key, predictor in predictors.items():
        result = predictor.predict(list(yard.text))
        scored[key] = (result.intent.map(lambda s: label_index.get(s, -1)).to_numpy(), result.purchase_score.to_numpy())

    def yard_figures(key, index):
        return yardstick_figures(truth, purchase_truth, *scored[key], index, len(labels))

    resamples = within_writer_resamples(yard.writer.to_numpy(), draws, BOOTSTRAP_SEED)
    yard_delta, yard_se = paired_deltas(yard_figures, resamples, len(yard))

    held_figures = {}
    for key, predictor in predictors.items():
        result = predictor.predict(list(held.text))
        held_figures[key] = np.array([
            (result.intent.to_numpy() == held.intent.to_numpy()).mean(),
            average_precision_score(held.purchase_intent.astype(int), result.purchase_score),
        ])

    test = frame[_conversation_split(frame, load_config(overrides={"seed": seed})) == "test"].copy()
    tables = {
        key: evaluate_flagging(test, ConversationScorer(p), policy, orders)[1].reset_index(drop=True)
        for key, p in predictors.items()
    }
    n = len(tables["A"])
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    list_resamples = [rng.integers(0, n, n) for _ in range(draws)]
    list_delta, list_se = paired_deltas(lambda key, index: list_figures(tables[key], index), list_resamples, n)
    everything = np.arange(n)
    return {
        "seed": seed,
        "yardstick_delta": yard_delta.round(4).tolist(),
        "yardstick_se": yard_se.round(4).tolist(),
        "yardstick_A": yard_figures("A", np.arange(len(yard))).round(4).tolist(),
        "held_out_delta": (held_figures["B"] - held_figures["A"]).round(4).tolist(),
        "list_delta": list_delta.round(4).tolist(),
        "list_se": list_se.round(4).tolist(),
        "list_A": list_figures(tables["A"], everything).round(4).tolist(),
        "test_conversations": n,
        "thresholds": {
            key: {"purchase": p.purchase_threshold, "fallback": p.fallback_threshold} for key, p in predictors.items()
        },
        "yardstick_messages": len(yard),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", nargs="+", required=True, help="the default's bundles, one per seed")
    parser.add_argument("--b", nargs="+", required=True, help="the candidate's bundles, in the same seed order")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--draws", type=int, default=DRAWS)
    parser.add_argument("--out", type=Path, help="also write the decision as JSON here")
    args = parser.parse_args(argv)
    if not len(args.a) == len(args.b) == len(args.seeds) or len(args.seeds) < 2:
        parser.error("give one default and one candidate bundle per seed, for at least two seeds")
    inputs = load_inputs()
    per_seed = []
    for seed, bundle_a, bundle_b in zip(args.seeds, args.a, args.b, strict=True):
        row = measure_seed(seed, bundle_a, bundle_b, args.draws, inputs)
        print(json.dumps(row), flush=True)
        per_seed.append(row)
    summary = summarise(per_seed)
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        staged = args.out.with_name(f".{args.out.name}.tmp")
        staged.write_text(text + "\n", encoding="utf-8")
        os.replace(staged, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
