"""`benchmarks/chat_selection.py`'s building blocks: every option is a valid change of the default config,
the bootstrap keeps message groups whole within their writer, and the rule tells purchase options apart."""

from __future__ import annotations

import numpy as np
import yaml

from benchmarks.chat_selection import OPTIONS, overlay, resamples
from pipeline.config import load_config


def _dotted(config, key: str):
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def test_every_option_overlay_loads_and_changes_only_its_keys(tmp_path):
    default = load_config()
    for option in OPTIONS:
        path = tmp_path / f"{option.name}.yaml"
        path.write_text(yaml.safe_dump(overlay(option.changes), allow_unicode=True) or "{}\n", encoding="utf-8")
        config = load_config(path)
        for key, value in option.changes.items():
            read = _dotted(config, key)
            assert (list(read) if isinstance(read, tuple) else read) == value, (option.name, key)
        # the written chats and the calibration set stay: the options are trained as the default is
        assert config.paths.extra_data == default.paths.extra_data
        assert config.paths.calibration_data == default.paths.calibration_data
        untouched = {"seed", "intent_model.classifier", "features.word_ngram_range", "purchase_model.C"} - set(option.changes)
        for key in untouched:
            assert _dotted(config, key) == _dotted(default, key), (option.name, key)


def test_overlay_nests_dotted_keys_by_section():
    assert overlay({"features.min_df": 1, "features.char_ngram_range": [1, 4], "extra_data_weight": 2.0}) == {
        "features": {"min_df": 1, "char_ngram_range": [1, 4]}, "extra_data_weight": 2.0,
    }
    assert overlay({}) == {}


def test_purchase_options_are_told_from_intent_options():
    by_name = {o.name: o for o in OPTIONS}
    assert by_name["purchase_C_1"].purchase_only and by_name["purchase_C_16"].purchase_only
    assert not by_name["C_1"].purchase_only and not by_name["default"].purchase_only
    assert not by_name["chats_weight_2"].purchase_only  # the weight moves both models: judged as an intent option


def test_resamples_draw_whole_groups_within_each_writer_and_are_seeded():
    groups = np.array(["a", "a", "b", "c", "c", "c", "d", "e"])
    writers = np.array(["w1", "w1", "w1", "w1", "w1", "w1", "w2", "w2"])
    draws = resamples(groups, writers, n=200, seed=3)
    again = resamples(groups, writers, n=200, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(draws, again, strict=True))
    for index in draws:
        # each writer keeps its number of groups; a drawn group brings all its messages
        assert sum(1 for i in index if writers[i] == "w2") == 2
        drawn = groups[index]
        for group in set(drawn):
            members = np.flatnonzero(groups == group)
            assert np.count_nonzero(drawn == group) % len(members) == 0
    # over many draws every group is drawn at some point, and not always the same ones
    assert set(groups[np.concatenate(draws)]) == set(groups)
    assert len({tuple(sorted(index)) for index in draws}) > 10
