"""`benchmarks/chat_selection.py`'s building blocks: every option is a valid change of the default config,
the bootstrap keeps message groups whole within their writer, and the rule tells purchase options apart."""

from __future__ import annotations

import numpy as np
import yaml

from benchmarks.chat_selection import OPTIONS, overlay, resamples, verdict
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
        # everything else is the default's: the whole config, with the option's keys put back to the default's values
        undone = load_config(path, {key: _dotted(default, key) for key in option.changes if "." in key})
        if "extra_data_weight" in option.changes:
            undone = undone.model_copy(update={"extra_data_weight": default.extra_data_weight})
        assert undone.model_dump() == default.model_dump(), option.name


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
    sizes = {g: int(np.count_nonzero(groups == g)) for g in set(groups)}
    for index in draws:
        drawn = groups[index]
        # a drawn group brings all its messages, and only its own writer's
        draws_of = {g: np.count_nonzero(drawn == g) // sizes[g] for g in set(drawn)}
        assert all(np.count_nonzero(drawn == g) % sizes[g] == 0 for g in set(drawn))
        # each writer keeps its number of groups (w1 has three of sizes 2, 1, 3; w2 two of one message)
        assert sum(n for g, n in draws_of.items() if g in {"a", "b", "c"}) == 3
        assert sum(n for g, n in draws_of.items() if g in {"d", "e"}) == 2
    # over many draws every group is drawn at some point, and not always the same ones
    assert set(groups[np.concatenate(draws)]) == set(groups)
    assert len({tuple(sorted(index)) for index in draws}) > 10


def _row(**diffs):
    """A row of differences with standard error 0.002 everywhere; `diffs` sets the differences (default 0)."""
    row, known = {}, set()
    for name in ("yardstick", "held-out writers"):
        for metric in ("accuracy", "macro_f1", "purchase_ap"):
            key = f"{name.split()[0].replace('-', '_')}_{metric}"
            known.add(key)
            row[f"{name}|{metric}|diff"] = diffs.get(key, 0.0)
            row[f"{name}|{metric}|se"] = 0.002
    assert set(diffs) <= known, set(diffs) - known  # a misspelt difference would silently stay 0
    return row


def test_the_rule_keeps_an_intent_option_only_with_both_gains_and_no_losses_past_its_guards():
    by_name = {o.name: o for o in OPTIONS}
    intent = by_name["min_df_1"]
    assert verdict(intent, _row(yardstick_accuracy=0.005, yardstick_macro_f1=0.003)) == "yes"
    # the second run's min_df 1: both gains, but the shared features cost the purchase detector 2.4 SE
    assert verdict(intent, _row(yardstick_accuracy=0.005, yardstick_macro_f1=0.0023, yardstick_purchase_ap=-0.0048)) == \
        "no: yardstick purchase AP"
    assert verdict(intent, _row(yardstick_accuracy=0.005, yardstick_macro_f1=0.001)) == "no: yardstick macro-F1 gain"
    assert verdict(intent, _row(yardstick_accuracy=0.005, yardstick_macro_f1=0.003, held_out_accuracy=-0.0021)) == "no: held-out accuracy"
    assert verdict(intent, _row(yardstick_accuracy=0.005, yardstick_macro_f1=0.003, held_out_accuracy=-0.002)) == "yes"  # exactly one SE
    assert verdict(intent, _row()) == "no: yardstick accuracy gain, yardstick macro-F1 gain"


def test_the_rule_judges_a_purchase_option_on_purchase_ap_alone():
    purchase = {o.name: o for o in OPTIONS}["purchase_C_16"]
    assert verdict(purchase, _row(yardstick_purchase_ap=0.003)) == "yes"
    assert verdict(purchase, _row(yardstick_purchase_ap=0.003, held_out_purchase_ap=-0.004)) == "yes"  # two SE allowed
    assert verdict(purchase, _row(yardstick_purchase_ap=0.003, held_out_purchase_ap=-0.0041)) == "no: held-out purchase AP"
    assert verdict(purchase, _row(yardstick_accuracy=0.01, yardstick_macro_f1=0.01)) == "no: yardstick purchase AP gain"
