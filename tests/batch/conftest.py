"""The batch tests' scorer and config (the small bundle `flag_bundle_dir` is in tests/conftest.py: the
reliability suite uses it too)."""

from __future__ import annotations

import pytest


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
