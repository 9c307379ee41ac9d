"""A small real model bundle (message models and a conversation model), trained once per session."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from .builders import labelled_conversations, labelled_messages


@pytest.fixture(scope="session")
def flag_bundle_dir(tmp_path_factory) -> Path:
    from pipeline.bundle import save_bundle
    from pipeline.config import load_config
    from pipeline.conversation import Turn
    from pipeline.data import LabelledData, validate_labelled
    from pipeline.train import ConversationData, train

    config = load_config(overrides={"paths.data": "unused.csv"})
    valid, _ = validate_labelled(labelled_messages(), "fixture", config.split.min_examples_per_label)
    data = LabelledData(valid, pd.DataFrame(columns=["source", "row", "reason", "raw"]), "fixture")
    conversations = pd.DataFrame(labelled_conversations())
    conversations["turns"] = [[Turn(role, text) for role, text in turns] for turns in conversations["turns"]]
    result = train(config, data, ConversationData(conversations, "fixture"))
    return save_bundle(result.bundle, tmp_path_factory.mktemp("flag-model") / "bundle", result.user_dict_text)


@pytest.fixture(scope="session")
def flag_scorer(flag_bundle_dir):
    from pipeline.bundle import load_bundle
    from pipeline.conversation import ConversationScorer
    from pipeline.inference import Predictor

    return ConversationScorer(Predictor(load_bundle(flag_bundle_dir)))


@pytest.fixture()
def flag_config():
    """The default config with settings tests override through `flag_config(**flag_keys)`."""
    from pipeline.config import load_config

    def make(**flag):
        overrides = {"paths.data": "unused.csv", "flag.workers": 1}
        overrides.update({f"flag.{key}": value for key, value in flag.items()})
        return load_config(overrides=overrides)

    return make
