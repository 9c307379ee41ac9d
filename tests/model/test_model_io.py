"""Saved models load to identical predictions; tampered or foreign files are refused."""

from __future__ import annotations

import json
import shutil

import pytest
import skops.io as sio

from pipeline.bundle import MODELS_FILE, ModelIntegrityError, load_bundle, save_bundle
from pipeline.config import load_config
from pipeline.data.labelled import load_labelled
from pipeline.inference import Predictor
from pipeline.training.train import train

PROBES = ["在吗", "有货我就拍", "订单123456789012345678 怎么还没发", "", "能开专票吗 ^_^"]


@pytest.fixture(scope="module")
def small_result(small_messages_csv):
    config = load_config(overrides={"paths.data": str(small_messages_csv)})
    return train(config, load_labelled(small_messages_csv, None, config.split.min_examples_per_label))


def test_round_trip_gives_identical_predictions(small_result, tmp_path):
    before = Predictor(small_result.bundle).predict(PROBES, top_k=3)
    directory = save_bundle(small_result.bundle, tmp_path / "m", small_result.user_dict_text)
    after = Predictor(load_bundle(directory)).predict(PROBES, top_k=3)
    assert before.equals(after)


def test_a_changed_byte_is_refused(small_result, tmp_path):
    directory = save_bundle(small_result.bundle, tmp_path / "m", small_result.user_dict_text)
    data = bytearray((directory / MODELS_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (directory / MODELS_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="SHA-256"):
        load_bundle(directory)


def test_a_registry_seal_mismatch_is_refused(small_result, tmp_path):
    directory = save_bundle(small_result.bundle, tmp_path / "m", small_result.user_dict_text)
    with pytest.raises(ModelIntegrityError, match="seal"):
        load_bundle(directory, expected_seal="0" * 64)


@pytest.mark.parametrize("edit", ["purchase threshold", "fallback threshold", "labels", "user dictionary"])
def test_any_change_to_what_decides_a_prediction_breaks_the_seal(small_result, tmp_path, edit):
    """main accepted thresholds.purchase = 0 in manifest.json (在吗 became purchase intent)."""
    from pipeline.bundle import USER_DICT_FILE, bundle_seal, sha256_file

    directory = save_bundle(small_result.bundle, tmp_path / "m", small_result.user_dict_text)
    seal = bundle_seal(directory)
    load_bundle(directory, expected_seal=seal)
    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    if edit == "purchase threshold":
        manifest["thresholds"]["purchase"] = 0.0
    elif edit == "fallback threshold":
        manifest["thresholds"]["fallback"] = 0.0
    elif edit == "labels":
        manifest["labels"] = list(reversed(manifest["labels"]))
    else:  # a changed dictionary whose new checksum is written into the manifest too
        (directory / USER_DICT_FILE).write_text("在吗 100000\n", encoding="utf-8")
        manifest["sha256"][USER_DICT_FILE] = sha256_file(directory / USER_DICT_FILE)
    (directory / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ModelIntegrityError, match="seal"):
        load_bundle(directory, expected_seal=seal)


def test_a_file_with_foreign_types_is_refused_even_with_a_matching_checksum(tmp_path):
    directory = tmp_path / "evil"
    directory.mkdir()
    sio.dump({"intent": shutil.copyfile, "purchase": None, "conversation": None}, directory / MODELS_FILE)
    from pipeline.bundle import sha256_file

    (directory / "manifest.json").write_text(json.dumps({"sha256": {MODELS_FILE: sha256_file(directory / MODELS_FILE)}}))
    with pytest.raises(ModelIntegrityError, match="not allowed"):
        load_bundle(directory)


def test_same_data_config_and_seed_give_the_same_metrics(small_messages_csv, small_result):
    config = load_config(overrides={"paths.data": str(small_messages_csv)})
    again = train(config, load_labelled(small_messages_csv, None, config.split.min_examples_per_label))
    assert again.bundle.manifest["headline"] == small_result.bundle.manifest["headline"]
    assert again.bundle.thresholds == small_result.bundle.thresholds


def test_no_normalised_text_is_in_both_train_and_test(small_result):
    messages = small_result.messages
    train_texts = set(messages.loc[messages["split"] == "train", "normalized"])
    test_texts = set(messages.loc[messages["split"] == "test", "normalized"])
    assert not train_texts & test_texts


def test_fallback_threshold_meets_its_validation_target(small_result):
    val = small_result.metrics["val"]["intent"]
    assert 0.0 <= small_result.bundle.thresholds["fallback"] < 1.0
    assert val["accepted_accuracy"] >= 0.9


@pytest.mark.parametrize("content", [b"\x80\x04\x95 a pickle, not a zip", b"PK\x03\x04 truncated zip"])
def test_a_pickled_or_corrupt_models_file_is_a_clear_error(small_result, tmp_path, content):
    """main raised a BadZipFile traceback when models.skops was a pickle with a matching manifest."""
    from pipeline.bundle import sha256_file

    directory = save_bundle(small_result.bundle, tmp_path / "m", small_result.user_dict_text)
    (directory / MODELS_FILE).write_bytes(content)
    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    manifest["sha256"][MODELS_FILE] = sha256_file(directory / MODELS_FILE)
    (directory / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ModelIntegrityError, match="not a skops model file"):
        load_bundle(directory)
