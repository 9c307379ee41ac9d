"""`benchmarks/shop_calibration.py` measures what `train --calibration-data` does: the row without shop labels
is the bundle's own prediction, and the calibrated rows keep the arg-max (accuracy) and, unless asked, the
purchase model. A small Chinese corpus and a made-up "shop" (no shared data needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.bundle import save_bundle
from pipeline.config import load_config
from pipeline.inference import Predictor, load_model
from pipeline.training.evaluate import expected_calibration_error
from pipeline.training.train import train
from tests.batch.builders import labelled_messages
from tests.cli.test_calibration_data import CONFIG, _labelled, _shop_frame


@pytest.fixture(scope="module")
def bundle_and_shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("shop-calibration")
    result = train(load_config(overrides=CONFIG), _labelled(labelled_messages(), "fixture"))
    save_bundle(result.bundle, root / "model")
    shop = _shop_frame()
    shop["source"] = np.where(np.arange(len(shop)) % 2 == 0, "shop_a", "shop_b")
    shop.to_csv(root / "shop.csv", index=False)
    return root / "model", root / "shop.csv", shop


def test_without_labels_the_row_is_the_bundles_own_prediction(bundle_and_shop):
    from benchmarks.shop_calibration import run

    model, path, shop = bundle_and_shop
    results = run(model, path, sizes=[40], folds=2, seed=13)
    predicted = Predictor(load_model(str(model))).predict(shop["text"].tolist())
    correct = (predicted["intent"] == shop["intent"]).to_numpy()
    base = results["rows"][0]
    assert base["accuracy"] == pytest.approx(correct.mean())
    assert base["ece"] == pytest.approx(expected_calibration_error(correct, predicted["intent_confidence"].to_numpy()), abs=1e-5)
    assert base["fallback_rate"] == pytest.approx(predicted["fallback"].mean())
    calibrated = results["rows"][40]
    # the temperature keeps the arg-max; a shop where the model is often wrong gets lower confidence
    assert calibrated["accuracy"] == base["accuracy"] and calibrated["mean_confidence"] < base["mean_confidence"]
    assert calibrated["ece"] < base["ece"]
    # the purchase model is untouched unless asked
    assert (calibrated["purchase_precision"], calibrated["purchase_recall"]) == (base["purchase_precision"], base["purchase_recall"])
    assert set(calibrated["by_source"]) == {"shop_a", "shop_b"}


def test_the_document_has_both_tables_and_what_they_say(bundle_and_shop, tmp_path):
    from benchmarks.shop_calibration import main

    model, path, _ = bundle_and_shop
    out = tmp_path / "CALIBRATION.md"
    assert main(["--model", str(model), "--dev", str(path), "--sizes", "40", "--folds", "2", "--out", str(out),
                 "--chats", str(tmp_path / "no-chats.csv")]) == 0  # no label-free row: the shared pool is not read here
    text = out.read_text(encoding="utf-8")
    assert text.count("| 0 (as trained: held-out writers) |") == 2 and "## What the figures say" in text
    assert "shop_a" in text and "唉 那个" not in text  # figures only, no message


def test_the_label_free_row_is_what_train_calibration_chats_gives(bundle_and_shop, tmp_path):
    from benchmarks.shop_calibration import chats_row
    from pipeline.text import normalize
    from pipeline.training.train import UnlabelledData
    from tests.cli.test_calibration_data import _labelled

    model, path, shop = bundle_and_shop
    labelled_messages().to_csv(tmp_path / "labelled.csv", index=False)
    chats = pd.DataFrame({"text": [f"请问 {t}" for t in shop["text"]]})
    chats.to_csv(tmp_path / "chats.csv", index=False)
    row = chats_row(model, path, tmp_path / "chats.csv", tmp_path / "labelled.csv")
    trained = train(load_config(overrides=CONFIG), _labelled(labelled_messages(), "fixture"),
                    calibration_chats=UnlabelledData([normalize(t) for t in chats["text"]], []))
    predicted = Predictor(trained.bundle).predict(shop["text"].tolist())
    correct = (predicted["intent"] == shop["intent"]).to_numpy()
    assert row["ece"] == pytest.approx(expected_calibration_error(correct, predicted["intent_confidence"].to_numpy()), abs=1e-5)
    assert row["fallback_rate"] == pytest.approx(predicted["fallback"].mean())
    assert row["temperature"] == trained.fingerprints["calibration_chats"]["temperature"]
