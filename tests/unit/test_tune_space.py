"""The search space of `buyer-intent tune`: what scikit-learn's ParameterSampler draws from the config."""

import pytest

from pipeline.training.tune import TuneError, draw_params

SPACE = {"features.min_df": [1, 2], "features.char_ngram_range": [[1, 3], [2, 4]]}
CLASSIFIERS = {"logreg": {"intent_model.C": {"log_uniform": [1.0, 100.0]}}, "complement_nb": {"intent_model.alpha": [0.1, 0.5]}}


def test_draws_are_distinct_reproducible_and_keep_each_classifier_to_its_own_keys():
    draws = draw_params(SPACE, CLASSIFIERS, 200, seed=7)
    assert draws == draw_params(SPACE, CLASSIFIERS, 200, seed=7)
    assert draws != draw_params(SPACE, CLASSIFIERS, 200, seed=8)
    keys = [tuple(sorted(d.items(), key=str)) for d in draws]
    assert len(set(map(str, keys))) == len(draws)
    for d in draws:
        assert d["features.min_df"] in (1, 2) and d["features.char_ngram_range"] in ([1, 3], [2, 4])
        if d["intent_model.classifier"] == "logreg":
            assert "intent_model.alpha" not in d and 1.0 <= d["intent_model.C"] <= 100.0
            assert d["intent_model.C"] == float(f"{d['intent_model.C']:.4g}")  # readable in the written YAML
        else:
            assert "intent_model.C" not in d and d["intent_model.alpha"] in (0.1, 0.5)
    assert {d["intent_model.classifier"] for d in draws} == {"logreg", "complement_nb"}


def test_a_space_of_choices_only_is_drawn_without_replacement_and_no_further():
    draws = draw_params({"features.min_df": [1, 2]}, {"logreg": {}, "complement_nb": {}}, 100, seed=0)
    assert len(draws) == 4
    assert {(d["features.min_df"], d["intent_model.classifier"]) for d in draws} == {(1, "logreg"), (2, "logreg"), (1, "complement_nb"), (2, "complement_nb")}


def test_drawn_lists_are_copies():
    draws = draw_params({"features.char_ngram_range": [[1, 3]]}, {"logreg": {}}, 5, seed=0)
    draws[0]["features.char_ngram_range"].append(9)
    assert draw_params({"features.char_ngram_range": [[1, 3]]}, {"logreg": {}}, 5, seed=0)[0]["features.char_ngram_range"] == [1, 3]


@pytest.mark.parametrize("spec", [[], {"log_uniform": [0, 1]}, {"uniform": [2, 1]}, {"normal": [0, 1]}, 3])
def test_a_bad_value_names_its_key(spec):
    with pytest.raises(TuneError, match="classifiers.logreg.intent_model.C"):
        draw_params({}, {"logreg": {"intent_model.C": spec}}, 5, seed=0)
