import pytest

from pipeline.config import ConfigError, config_as_flat_dict, load_config


def test_default_config_loads():
    config = load_config()
    assert config.paths.data.endswith("messages.csv")
    assert 0 < config.purchase_model.target_precision <= 1


def test_overrides_use_dotted_keys_and_none_is_ignored():
    config = load_config(overrides={"seed": 7, "paths.data": "x.csv", "paths.model_dir": None})
    assert config.seed == 7 and config.paths.data == "x.csv" and config.paths.model_dir is None


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("paths: {data: a.csv}\nfeatures: {char_ngram: [1, 3]}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="features.char_ngram"):
        load_config(path)


def test_invalid_range_is_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("paths: {data: a.csv}\nfeatures: {char_ngram_range: [3, 1]}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="char_ngram_range"):
        load_config(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_flat_dict_for_mlflow_params():
    flat = config_as_flat_dict(load_config())
    assert flat["intent_model.classifier"] == "logreg"
