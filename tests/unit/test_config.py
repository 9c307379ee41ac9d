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
    assert flat["intent_model.classifier"] == "linear_svc"


def test_the_yaml_is_the_only_source_of_defaults():
    """No setting has a default in code (main had C 10 vs 4, min_df 1 vs 2 between code and YAML)."""
    from pydantic import BaseModel

    from pipeline.config import Config

    def walk(model: type[BaseModel], prefix: str):
        for name, field in model.model_fields.items():
            assert field.is_required(), f"{prefix}{name} has a default in code"
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")

    walk(Config, "")


def test_another_config_states_only_what_it_changes(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 5\nintent_model: {C: 2.0}\nmlflow: {registered_model: other}\n", encoding="utf-8")
    config, default = load_config(path), load_config()
    assert config.seed == 5 and config.intent_model.C == 2.0 and config.mlflow.registered_model == "other"
    assert config.intent_model.fallback == default.intent_model.fallback  # untouched keys of a section stay
    assert config.features == default.features and config.flag == default.flag


@pytest.mark.parametrize(
    ("section", "key"),
    [("flag: {windw_hours: 3}", "flag.windw_hours"), ("serving: {max_chars: 0}", "serving.max_chars"),
     ("tune: {metric: recall}", "tune.metric"), ("flag: {quiet_hours: ['25:00', '08:00']}", "flag.quiet_hours"),
     ("output: {csv_encoding: latin-1}", "output.csv_encoding")],
)
def test_every_section_is_validated_at_load_time(tmp_path, section, key):
    """A typo under flag:, serving: or tune: fails when the config is read, not after training."""
    path = tmp_path / "c.yaml"
    path.write_text(section + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(path)


def test_csv_outputs_are_utf8_with_a_bom_unless_the_config_or_encoding_says_otherwise(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output: {csv_encoding: gb18030}\n", encoding="utf-8")
    assert load_config().output.csv_encoding == "utf-8-sig"
    assert load_config(path).output.csv_encoding == "gb18030"
    assert load_config(path, {"output.csv_encoding": "utf-8"}).output.csv_encoding == "utf-8"  # --encoding wins


def test_model_name_alias_and_tracking_uri_come_from_the_config(tmp_path, monkeypatch):
    """An English run's champion comparison, predict and flag mean buyer-intent-en@champion, not the
    Chinese champion (main hard-coded buyer-intent@champion)."""
    from pipeline.config import Registry
    from pipeline.inference import ModelNotFoundError, resolve_model

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    registry = Registry.from_config(load_config("configs/english.yaml"))
    assert (registry.name, registry.alias) == ("buyer-intent-en", "champion")
    assert registry.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(ModelNotFoundError, match="buyer-intent-en@champion"):
        resolve_model(None, registry)
    with pytest.raises(ModelNotFoundError, match="models:/buyer-intent-en/3"):
        resolve_model("3", registry)


def test_other_training_data_does_not_inherit_the_bundled_written_chats(tmp_path):
    default = load_config().paths
    assert default.extra_data and default.calibration_data  # the bundled corpus comes with its written chats
    for config in (load_config(overrides={"paths.data": "shop.csv"}), _config_file(tmp_path, "paths: {data: shop.csv}\n")):
        assert (config.paths.extra_data, config.paths.calibration_data) == ([], None)
    # what a config names itself stays, and the bundled data keeps its companions
    kept = _config_file(tmp_path, "paths: {data: shop.csv, calibration_data: mine.csv}\n").paths
    assert (kept.extra_data, kept.calibration_data) == ([], "mine.csv")
    same = load_config(overrides={"paths.data": default.data, "seed": 3}).paths
    assert (same.extra_data, same.calibration_data) == (default.extra_data, default.calibration_data)
    assert load_config(overrides={"seed": 3}).paths.extra_data == default.extra_data


def test_the_intent_only_calibration_set_goes_with_the_bundled_calibration_set(tmp_path):
    default = load_config().paths
    assert default.intent_calibration_data == "data/chats/intent_calibration.csv"
    assert load_config(overrides={"paths.data": "shop.csv"}).paths.intent_calibration_data is None
    for dotted, value in (("paths.calibration_data", "mine.csv"), ("paths.calibration_chats", ["chats.csv"])):  # as train's flags pass them
        assert load_config(overrides={dotted: value}).paths.intent_calibration_data is None, dotted
    for text in ("paths: {calibration_data: mine.csv}\n", "paths: {calibration_data: null}\n", "paths: {calibration_chats: [chats.csv]}\n"):
        assert _config_file(tmp_path, text).paths.intent_calibration_data is None, text
    named = _config_file(tmp_path, "paths: {calibration_data: mine.csv, intent_calibration_data: more.csv}\n").paths
    assert named.intent_calibration_data == "more.csv"
    assert load_config(overrides={"seed": 3}).paths.intent_calibration_data == default.intent_calibration_data


def _config_file(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)
