"""`benchmarks/wave_rule.py` (rule AZ3): its figures agree with scikit-learn, its bootstrap stays within writers, the
spread between training draws widens the SE, and each of the rule's conditions can turn a wave away on its own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, f1_score

from benchmarks.wave_rule import (
    accuracy_macro_f1,
    combine,
    list_figures,
    paired_deltas,
    summarise,
    within_writer_resamples,
)


def test_accuracy_and_macro_f1_match_scikit_learn_over_the_labels_present():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 300)  # label 4 of 5 never occurs in the truth
    pred = np.where(rng.random(300) < 0.7, truth, rng.integers(0, 5, 300))
    accuracy, macro_f1 = accuracy_macro_f1(truth, pred, n_labels=5)
    assert accuracy == pytest.approx(accuracy_score(truth, pred))
    assert macro_f1 == pytest.approx(f1_score(truth, pred, labels=[0, 1, 2, 3], average="macro"))


def test_a_prediction_outside_the_yardstick_labels_counts_as_wrong():
    truth = np.array([0, 0, 1, 1])
    accuracy, _ = accuracy_macro_f1(truth, np.array([0, -1, 1, -1]), n_labels=2)
    assert accuracy == 0.5
    perfect, perfect_f1 = accuracy_macro_f1(truth, truth.copy(), n_labels=2)
    assert perfect == 1.0 and perfect_f1 == 1.0


def test_resamples_stay_within_each_writer_keep_its_share_and_are_seeded():
    writers = np.array(["w2", "w1", "w2", "w1", "w1", "w3"])
    draws = within_writer_resamples(writers, draws=100, seed=27)
    again = within_writer_resamples(writers, draws=100, seed=27)
    assert all(np.array_equal(a, b) for a, b in zip(draws, again, strict=True))
    for index in draws:
        assert sorted(writers[index]) == sorted(writers)  # each writer keeps its number of messages
    assert len({tuple(index) for index in draws}) > 10
    assert set(np.concatenate(draws)) == set(range(len(writers)))


def test_identical_models_have_no_delta_and_no_error():
    scores = {"A": np.array([0.1, 0.5, 0.9]), "B": np.array([0.1, 0.5, 0.9])}
    draws = [np.array([0, 0, 2]), np.array([1, 2, 2])]
    delta, se = paired_deltas(lambda key, index: scores[key][index], draws, 3)
    assert np.array_equal(delta, np.zeros(3)) and np.array_equal(se, np.zeros(3))


def test_paired_deltas_use_the_same_resample_for_both_models():
    # B is A plus a constant: every paired resample sees exactly that constant, so the SE is zero
    base = np.array([0.2, 0.4, 0.6, 0.8])
    delta, se = paired_deltas(lambda key, index: np.array([(base + (key == "B") * 0.1)[index].mean()]),
                              within_writer_resamples(np.array(["w"] * 4), 50, 1), 4)
    assert delta[0] == pytest.approx(0.1) and se[0] == pytest.approx(0.0, abs=1e-12)


def test_combine_adds_the_spread_between_draws_to_the_bootstrap_error():
    mean, se = combine([0.002, 0.002, 0.002], [0.001, 0.001, 0.001])
    assert mean == pytest.approx(0.002) and se == pytest.approx(0.001)
    # wave 52's purchase AP: the three draws disagree, and the SE grows with their variance
    mean, se = combine([-0.0034, -0.0041, 0.0010], [0.0005, 0.0005, 0.0008])
    spread = np.var([-0.0034, -0.0041, 0.0010], ddof=1) / 3
    assert mean == pytest.approx(-0.0065 / 3)
    assert se == pytest.approx(np.sqrt(np.mean(np.square([0.0005, 0.0005, 0.0008])) + spread))
    assert se > 0.0008


def test_list_figures_read_lost_shoppers_only():
    table = pd.DataFrame({
        "lost": [True, True, True, True, False],
        "truth": [1, 1, 0, 0, 1],
        "purchase_score": [0.9, 0.3, 0.6, 0.1, 0.99],
        "flagged": [True, False, True, False, False],
    })
    ap, f1 = list_figures(table, np.arange(5))
    assert ap == pytest.approx(average_precision_score([1, 1, 0, 0], [0.9, 0.3, 0.6, 0.1]))
    assert f1 == pytest.approx(0.5)  # one of two flagged right, one of two buyers found


def _seed_row(seed, yard=(0.002, 0.002, 0.0), held=(0.0, 0.0), lists=(0.0, 0.0), yard_se=0.0005, list_se=0.01):
    return {"seed": seed, "yardstick_delta": list(yard), "yardstick_se": [yard_se] * 3, "held_out_delta": list(held),
            "list_delta": list(lists), "list_se": [list_se] * 2}


def test_a_wave_that_gains_on_every_draw_is_kept():
    decision = summarise([_seed_row(s) for s in (13, 14, 15)])
    assert decision["kept"] and all(decision["pass"].values())
    assert decision["yardstick"]["accuracy"] == {"delta": 0.002, "se": 0.0005}


@pytest.mark.parametrize(("change", "fails"), [
    ({"yard": (0.0004, 0.002, 0.0)}, "yardstick"),        # accuracy gain under its SE
    ({"yard": (0.002, 0.0004, 0.0)}, "yardstick"),        # macro-F1 gain under its SE
    ({"yard": (0.002, 0.002, -0.001)}, "yardstick"),      # purchase AP loses more than its SE
    ({"held": (-0.011, 0.0)}, "held_out"),
    ({"held": (0.0, -0.011)}, "held_out"),
    ({"lists": (-0.011, 0.0)}, "list_a"),
    ({"lists": (0.0, -0.011)}, "list_b"),
])
def test_each_condition_turns_a_wave_away_on_its_own(change, fails):
    decision = summarise([_seed_row(s, **change) for s in (13, 14, 15)])
    assert not decision["kept"]
    assert [name for name, ok in decision["pass"].items() if not ok] == [fails]


def test_a_loss_on_one_draw_is_weighed_against_the_spread_of_the_draws():
    # purchase AP -0.003 on one seed, +0.001 on two: mean -0.00033, within its SE once the spread counts
    rows = [_seed_row(13, yard=(0.002, 0.002, -0.003)), _seed_row(14, yard=(0.002, 0.002, 0.001)),
            _seed_row(15, yard=(0.002, 0.002, 0.001))]
    decision = summarise(rows)
    assert decision["pass"]["yardstick"]
    # the same mean loss measured the same on every draw is outside a bootstrap SE of 0.0002
    flat = summarise([_seed_row(s, yard=(0.002, 0.002, -0.001), yard_se=0.0002) for s in (13, 14, 15)])
    assert not flat["pass"]["yardstick"]
