"""What a shop's own labels buy when they calibrate the model instead of training it (issues #10, #15).

    .venv/bin/python benchmarks/shop_calibration.py --model models/latest              # table to stdout
    .venv/bin/python benchmarks/shop_calibration.py --model models/latest --out benchmarks/CALIBRATION.md

`benchmarks/ADAPTATION.md` shows that adding up to 400 of a shop's labelled messages to the training data
does not move accuracy on its real chats measurably. The model's *confidence* is another matter: it is
calibrated on the held-out writers of the authored corpus, where it is right 9 times in 10, and on real
chats it is right 2 times in 3, so its probabilities are too high (ECE 0.14) and the thresholds chosen on
those writers do not keep their promises there (the fallback hands nothing over). This measures the other
use of the same labels: keep the trained linear models, refit only the calibration (the intent
temperature and the purchase model's Platt scaling, `CalibratedLinearClassifier.recalibrate`) and choose
the fallback and purchase thresholds (`choose_fallback_threshold`, `choose_precision_threshold`, the
targets of the bundle's config) on n labelled messages of the shop.

The shop is played by `../shared/realchat-dev` (600 labelled real messages). 5-fold cross-validation
stratified by source (seed 13, as the adaptation benchmark): for each fold, n messages of the four other
folds are the shop's labels (random, nested prefixes of one permutation, seed 13 + fold), and the held-out
fold is scored. Figures are pooled over the 600 out-of-fold predictions (each fold with its own
calibration and thresholds); the row n = 0 is the bundle as trained. Accuracy does not change (the
temperature keeps the arg-max); what changes is confidence, hand-over and the purchase flag. This is one of
the places dev labels are fitted on (the cross-validated labelling curve); nothing is saved but figures.
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.bundle import load_bundle  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.data.labelled import load_labelled, split_by_settings  # noqa: E402
from pipeline.inference import Predictor  # noqa: E402
from pipeline.text import normalize  # noqa: E402
from pipeline.training.train import UnlabelledData, _calibrate_on_chats, labelled_predictions  # noqa: E402
from pipeline.data.tables import write_text_atomic  # noqa: E402
from pipeline.training.evaluate import (  # noqa: E402
    ThresholdWarning,
    choose_fallback_threshold,
    choose_precision_threshold,
    expected_calibration_error,
    purchase_metrics,
)

SHARED = REPO.parent / "shared"


def _scored(bundle, texts: list[str]):
    """Features and the fitted classifiers of both message models (deep copies: they get recalibrated)."""
    normalized = bundle.intent.named_steps["normalize"].transform(texts)
    intent_x = bundle.intent.named_steps["features"].transform(normalized)
    purchase_features = bundle.purchase.named_steps["features"]
    purchase_x = intent_x if purchase_features is bundle.intent.named_steps["features"] else purchase_features.transform(normalized)
    return np.array([bool(t) for t in normalized]), intent_x, purchase_x


def _predict(intent_clf, purchase_clf, intent_x, purchase_x, present: np.ndarray, empty_label: str):
    """Intent, confidence and purchase score as `Predictor` gives them (an empty message: the empty label,
    confidence 0, purchase 0)."""
    proba = intent_clf.predict_proba(intent_x)
    predicted = intent_clf.classes_[proba.argmax(axis=1)].astype(object)
    confidence = proba.max(axis=1)
    purchase = purchase_clf.predict_proba(purchase_x)[:, 1]
    predicted[~present] = empty_label
    confidence = np.where(present, confidence, 0.0)
    purchase = np.where(present, purchase, 0.0)
    return predicted, confidence, purchase


def _rate(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")


def intent_figures(correct: np.ndarray, confidence: np.ndarray, handed_over: np.ndarray, sources: pd.Series) -> dict:
    """Accuracy, ECE, mean confidence, hand-over and accepted accuracy, over all messages and per source."""
    accepted = ~handed_over

    def part(mask: np.ndarray) -> dict:
        return {"ece": expected_calibration_error(correct[mask], confidence[mask]), "fallback_rate": _rate(handed_over[mask]),
                "accepted_accuracy": _rate(correct[mask & accepted])}

    everything = np.ones(len(correct), dtype=bool)
    return {"accuracy": _rate(correct), "mean_confidence": _rate(confidence), **part(everything),
            "by_source": {str(s): part((sources == s).to_numpy()) for s in sorted(sources.unique())}}


def source_cells(by_source: dict, sources: list[str]) -> str:
    return " | ".join(f"{by_source[s]['ece']:.3f} / {by_source[s]['fallback_rate']:.2f} / {by_source[s]['accepted_accuracy']:.3f}" for s in sources)


def run(bundle_dir: Path, dev_path: Path, sizes: list[int], folds: int, seed: int, purchase_too: bool = False) -> dict:
    bundle = load_bundle(bundle_dir)
    if bundle.purchase is None:
        raise SystemExit(f"{bundle_dir}: the bundle has no purchase model")
    config = bundle.manifest["config"]
    fallback_target = config["intent_model"]["fallback"]
    if fallback_target["target"] != "accepted_accuracy":
        raise SystemExit("this benchmark measures the accepted-accuracy fallback (intent_model.fallback.target)")
    target_accuracy = float(fallback_target["value"])
    target_precision = float(config["purchase_model"]["target_precision"])
    dev = pd.read_csv(dev_path, dtype=str, keep_default_na=False)
    y = dev["intent"].to_numpy(dtype=object)
    y_buy = dev["purchase_intent"].astype(int).to_numpy()
    present, intent_x, purchase_x = _scored(bundle, dev["text"].tolist())
    intent_clf = bundle.intent.named_steps["classifier"]
    purchase_clf = bundle.purchase.named_steps["classifier"]
    labels = [str(c) for c in intent_clf.classes_]
    empty_label = "other" if "other" in labels else labels[0]
    thresholds = bundle.thresholds

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    fold_of = np.empty(len(dev), dtype=int)
    for k, (_, held) in enumerate(splitter.split(np.zeros(len(dev)), dev["source"])):
        fold_of[held] = k

    rows = {}
    for n in [0, *sizes]:
        predicted = np.empty(len(dev), dtype=object)
        confidence = np.zeros(len(dev))
        purchase = np.zeros(len(dev))
        fallback_at = np.zeros(len(dev))
        purchase_at = np.zeros(len(dev))
        warned = 0
        for k in range(folds):
            held = np.flatnonzero(fold_of == k)
            if n == 0:
                intent_k, purchase_k = intent_clf, purchase_clf
                fallback_k, purchase_t = float(thresholds.get("fallback", 0.0)), float(thresholds.get("purchase", 0.5))
            else:
                pool = np.flatnonzero((fold_of != k) & present)
                labelled = np.random.default_rng(seed + k).permutation(pool)[:n]
                intent_k, purchase_k = copy.deepcopy(intent_clf), copy.deepcopy(purchase_clf)
                intent_k.recalibrate(intent_x[labelled], y[labelled])
                if purchase_too:
                    purchase_k.recalibrate(purchase_x[labelled], y_buy[labelled])
                cal_pred, cal_conf, cal_buy = _predict(intent_k, purchase_k, intent_x[labelled], purchase_x[labelled], present[labelled], empty_label)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", ThresholdWarning)
                    fallback_k = choose_fallback_threshold(y[labelled], cal_pred, cal_conf, "accepted_accuracy", target_accuracy)
                    if purchase_too:
                        purchase_t, _ = choose_precision_threshold(y_buy[labelled], cal_buy, target_precision)
                    else:  # as `train --calibration-data`: the purchase model keeps its validation calibration and threshold
                        purchase_t = float(thresholds.get("purchase", 0.5))
                warned += sum(issubclass(w.category, ThresholdWarning) for w in caught)
            p, c, b = _predict(intent_k, purchase_k, intent_x[held], purchase_x[held], present[held], empty_label)
            predicted[held], confidence[held], purchase[held] = p, c, b
            fallback_at[held], purchase_at[held] = fallback_k, purchase_t
        flagged = (purchase >= purchase_at).astype(float)
        buy = purchase_metrics(y_buy, flagged, 0.5)
        rows[n] = {
            **intent_figures(predicted == y, confidence, (confidence < fallback_at) | ~present, dev["source"]),
            "purchase_precision": buy["precision"],
            "purchase_recall": buy["recall"],
            "purchase_f1": buy["f1"],
            "purchase_ece": expected_calibration_error(y_buy, purchase),
            "threshold_warnings": warned,
        }
    return {"model": str(bundle_dir), "dev": len(dev), "positives": int(y_buy.sum()), "folds": folds, "seed": seed,
            "target_accuracy": target_accuracy, "target_precision": target_precision, "purchase_too": purchase_too, "rows": rows}


def chats_row(bundle_dir: Path, dev_path: Path, chats_path: Path, data_path: Path) -> dict:
    """`train --calibration-chats` without retraining: the bundle's validation writers (the split of
    `data_path` by the bundle's config) set the ATC threshold, the shop's unlabelled chats the temperature
    and the fallback threshold (`pipeline.training.train._calibrate_on_chats`, the code the command runs);
    dev's labels only score the result."""
    bundle = load_bundle(bundle_dir)
    config = load_config(overrides={"split": bundle.manifest["config"]["split"], "seed": bundle.manifest["config"]["seed"],
                                    "intent_model": bundle.manifest["config"]["intent_model"]})
    data = load_labelled(data_path)
    frame = data.frame.copy()
    frame["split"] = split_by_settings(frame, config.split, config.seed)
    val_scored = labelled_predictions(Predictor(bundle), frame[frame["split"] == "val"])
    max_chars = bundle.intent.named_steps["normalize"].max_chars
    texts = [t for t in (normalize(x, max_chars) for x in pd.read_csv(chats_path, dtype=str, keep_default_na=False)["text"]) if t]
    manifest = {"thresholds": dict(bundle.thresholds)}
    summary = _calibrate_on_chats(config, bundle.intent, val_scored, UnlabelledData(texts, []), manifest)
    bundle.manifest["thresholds"] = manifest["thresholds"]
    dev = pd.read_csv(dev_path, dtype=str, keep_default_na=False)
    predicted = Predictor(bundle).predict(dev["text"].tolist())
    return {
        "chats": str(chats_path), "messages": len(texts), **{k: summary[k] for k in ("estimated_accuracy", "temperature_validation", "temperature")},
        **intent_figures((predicted["intent"] == dev["intent"]).to_numpy(), predicted["intent_confidence"].to_numpy(),
                         predicted["fallback"].to_numpy(), dev["source"]),
    }


def render_chats(row: dict, target_accuracy: float) -> str:
    sources = sorted(row["by_source"])
    lines = [
        f"| shop's unlabelled chats | messages | ATC estimate of accuracy there | temperature | accuracy (dev) | ECE | mean confidence "
        f"| handed over | accepted accuracy (target {target_accuracy:.2f}) | "
        + " | ".join(f"{s}: ECE / handed over / accepted acc." for s in sources) + " |",
        "|---" * (9 + len(sources)) + "|",
        f"| none (as trained) | - | - | {row['temperature_validation']:.4f} | {row['base']['accuracy']:.3f} | {row['base']['ece']:.3f} "
        f"| {row['base']['mean_confidence']:.3f} | {row['base']['fallback_rate']:.2f} | {row['base']['accepted_accuracy']:.3f} | "
        + source_cells(row["base"]["by_source"], sources) + " |",
        f"| `{Path(row['chats']).parent.name}` | {row['messages']:,} | {row['estimated_accuracy']:.3f} | {row['temperature']:.4f} | "
        f"{row['accuracy']:.3f} | {row['ece']:.3f} | {row['mean_confidence']:.3f} | {row['fallback_rate']:.2f} | {row['accepted_accuracy']:.3f} | "
        + source_cells(row["by_source"], sources) + " |",
    ]
    return "\n".join(lines)


def render(results: dict) -> str:
    acc, prec = results["target_accuracy"], results["target_precision"]
    sources = sorted(next(iter(results["rows"].values()))["by_source"])
    lines = [
        "| shop labels | accuracy | ECE | mean confidence | handed over | accepted accuracy (target "
        f"{acc:.2f}) | purchase P / R / F1 (target P {prec:.2f}) | purchase ECE | "
        + " | ".join(f"{s}: ECE / handed over / accepted acc." for s in sources) + " | threshold warnings |",
        "|---" * (9 + len(sources)) + "|",
    ]
    for n, m in results["rows"].items():
        name = "0 (as trained: held-out writers)" if int(n) == 0 else str(n)
        per_source = source_cells(m["by_source"], sources)
        lines.append(
            f"| {name} | {m['accuracy']:.3f} | {m['ece']:.3f} | {m['mean_confidence']:.3f} | {m['fallback_rate']:.2f} | "
            f"{m['accepted_accuracy']:.3f} | {m['purchase_precision']:.2f} / {m['purchase_recall']:.2f} / {m['purchase_f1']:.3f} | "
            f"{m['purchase_ece']:.3f} | {per_source} | {m['threshold_warnings']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a trained bundle of the default configuration (make demo: models/latest)")
    parser.add_argument("--dev", type=Path, default=SHARED / "realchat-dev" / "messages.csv")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[50, 100, 200, 400])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--chats", type=Path, default=SHARED / "realchat-pool" / "messages.csv",
                        help="the shop's unlabelled chats for the label-free row (--out only); default: the real pool")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "messages.csv", help="the bundle's training data (its validation writers)")
    parser.add_argument("--purchase", action="store_true", help="also refit the purchase model's Platt scaling and threshold on the shop's labels")
    parser.add_argument("--out", type=Path, default=None, help="write the table and the command into this Markdown file")
    args = parser.parse_args(argv)
    if not args.dev.exists():
        raise SystemExit(f"{args.dev} not found: this benchmark needs ../shared/realchat-dev")
    results = run(args.model, args.dev, args.sizes, args.folds, args.seed, args.purchase)
    table = render(results)
    print(table)
    if args.out is not None:
        both = run(args.model, args.dev, args.sizes, args.folds, args.seed, not args.purchase)
        intent_only, with_purchase = (results, both) if not args.purchase else (both, results)
        chats = chats_row(args.model, args.dev, args.chats, args.data) if args.chats.exists() else None
        if chats is not None:
            chats["base"] = intent_only["rows"][0]
            print(render_chats(chats, intent_only["target_accuracy"]))
        write_text_atomic(document(intent_only, with_purchase, chats, args), args.out)
    return 0


def document(intent_only: dict, with_purchase: dict, chats: dict | None, args) -> str:
    rows, base = intent_only["rows"], intent_only["rows"][0]
    sizes = [n for n in rows if n]
    say = [
        f"- **Confidence.** ECE on the shop's real chats {base['ece']:.3f} as trained -> "
        + ", ".join(f"{rows[n]['ece']:.3f} with {n}" for n in sizes)
        + f" labels (mean confidence {base['mean_confidence']:.2f} -> {rows[sizes[-1]]['mean_confidence']:.2f}; accuracy {base['accuracy']:.3f} is unchanged).",
        f"- **The fallback's promise.** As trained, the threshold chosen on the held-out writers hands over "
        f"{base['fallback_rate']:.0%} and the accepted accuracy is {base['accepted_accuracy']:.3f} against the target "
        f"{intent_only['target_accuracy']:.2f}; chosen on the shop's labels it hands over "
        + ", ".join(f"{rows[n]['fallback_rate']:.0%}" for n in sizes) + " and accepts at "
        + ", ".join(f"{rows[n]['accepted_accuracy']:.3f}" for n in sizes)
        + ": close to the promise, at the price of handing over more than half of the messages to people, which is what "
        "this model's accuracy on these chats implies.",
        "- **Purchase.** Refitting the purchase model's Platt scaling and threshold too (second table) does not help: "
        + ", ".join(f"F1 {with_purchase['rows'][n]['purchase_f1']:.3f}" for n in sizes)
        + f" against {base['purchase_f1']:.3f}: {intent_only['positives']} of {intent_only['dev']} messages carry purchase intent, so "
        "n labels hold about n/15 positives, too few to choose a threshold at precision "
        f"{intent_only['target_precision']:.2f}. `train --calibration-data` therefore calibrates the intent model only.",
        "- A shop's labelled messages are drawn from the chats the model will score, the case this measures. Labelled "
        "messages of another shop or period would calibrate less well.",
    ]
    chats_section = ""
    if chats is not None:
        say.append(
            f"- **Without labels** (`train --calibration-chats`, {chats['messages']:,} unlabelled messages of `{Path(chats['chats']).parent.name}`, "
            f"no dev label used to fit): ATC estimates the accuracy there at {chats['estimated_accuracy']:.3f}; with the temperature "
            f"matched to it ({chats['temperature_validation']:.4f} -> {chats['temperature']:.4f}) ECE on dev is {chats['ece']:.3f} "
            f"(from {chats['base']['ece']:.3f}), and the fallback chosen from the chats' calibrated confidence hands over "
            f"{chats['fallback_rate']:.0%} at accepted accuracy {chats['accepted_accuracy']:.3f}. "
            + ", ".join(f"{s}: ECE {v['ece']:.3f}, accepted {v['accepted_accuracy']:.3f}" for s, v in chats["by_source"].items())
            + ": the pool is JD after-sales chats, so the JD part of dev is the shop it describes; the Taobao part is another shop."
        )
        chats_section = (
            "## Without labels: the shop's unlabelled chats (what `train --calibration-chats` does)\n\n"
            "The ATC threshold is set on the bundle's validation writers (recomputed from `data/messages.csv` with the "
            "bundle's split settings), the temperature and fallback threshold on the chats, with the code the command runs "
            "(`pipeline.training.train._calibrate_on_chats`); dev's labels only score the result.\n\n"
            f"{render_chats(chats, intent_only['target_accuracy'])}\n\n"
        )
    intro = __doc__.split("\n\n", 2)[2].strip()
    return (
        f"# Calibrating on a shop's labels (`train --calibration-data`)\n\n{intro}\n\n"
        f"Model `{intent_only['model']}`; {intent_only['dev']} labelled messages ({intent_only['positives']} with purchase intent), "
        f"{intent_only['folds']} folds, seed {intent_only['seed']}. Threshold warnings: folds where the target could not be met "
        "on the n labels (the closest threshold was used).\n\n"
        f"## Intent temperature and fallback threshold from the shop's labels (what `train --calibration-data` does)\n\n{render(intent_only)}\n\n"
        f"## The purchase model's calibration and threshold from them too\n\n{render(with_purchase)}\n\n"
        + chats_section +
        "## What the figures say\n\n" + "\n".join(say) + "\n\n"
        f"Reproduce: `make demo`, then `.venv/bin/python benchmarks/shop_calibration.py --model models/latest --out benchmarks/CALIBRATION.md` (seconds).\n"
    )


if __name__ == "__main__":
    sys.exit(main())
