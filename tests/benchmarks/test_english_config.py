"""configs/english.yaml: valid, English, and `train` + bundle + `Predictor` work on an English labelled set."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENGLISH = REPO / "configs" / "english.yaml"


def test_english_config_is_valid_and_english():
    from pipeline.config import load_config

    config = load_config(ENGLISH)
    assert config.text.language == "en"
    assert config.mlflow.registered_model != load_config().mlflow.registered_model  # never the Chinese champion
    assert config.tune.space and config.tune.classifiers
    assert "features.char_ngram_range" in config.tune.space and config.tune.space != load_config().tune.space  # replaced whole
    from pipeline.training.tune import search_space

    space, classifiers = search_space(config)
    assert set(classifiers) == {"logreg", "linear_svc", "sgd", "complement_nb"}


def test_english_config_trains_and_predicts(english_csv, tmp_path):
    from pipeline.bundle import load_bundle, save_bundle
    from pipeline.config import load_config
    from pipeline.data.labelled import load_labelled
    from pipeline.inference import Predictor
    from pipeline.training.train import train

    config = load_config(ENGLISH, {"paths.data": str(english_csv), "n_jobs": 1})
    data = load_labelled(english_csv, None, config.split.min_examples_per_label)
    result = train(config, data)
    assert result.bundle.manifest["language"] == "en"
    directory = save_bundle(result.bundle, tmp_path / "model", result.user_dict_text)
    predictor = Predictor(load_bundle(directory))
    out = predictor.predict(["What is the balance of my savings?", "I LOST my credit card!!", "will it rain in Oslo today"])
    assert list(out["intent"]) == ["balance", "card_lost", "weather"]
    assert ((out["intent_confidence"] > 0) & (out["intent_confidence"] <= 1)).all()
    assert result.metrics["test"]["intent"]["accuracy"] >= 0.75
