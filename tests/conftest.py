"""Shared fixtures: a model trained once per session on the bundled corpus, and small data files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MESSAGES = REPO / "data" / "messages.csv"


@pytest.fixture(scope="session")
def corpus_training(tmp_path_factory):
    """The default configuration trained on the bundled corpus (no MLflow), from the inputs a `buyer-intent
    train` run reads (`training_inputs`): the model users get, but for the refit on train + test (`split.final_fit`).
    That refit is the same fit on 15 % more rows and would double this fixture, the longest step of the suite's
    critical path (about 180 s of 580 s with it); tests/cli/test_final_fit.py pins that the shipped refit is that fit."""
    from pipeline.bundle import save_bundle
    from pipeline.config import load_config
    from pipeline.jobs.workflows import training_inputs
    from pipeline.training.train import train

    if not MESSAGES.exists():
        pytest.skip("data/messages.csv is not built")
    defaults = load_config()
    paths = {name: getattr(defaults.paths, name) for name in ("data", "calibration_data", "intent_calibration_data", "conversations", "orders")}
    config = load_config(overrides={
        **{f"paths.{name}": str(REPO / path) if path else None for name, path in paths.items()},
        "paths.extra_data": [str(REPO / path) for path in defaults.paths.extra_data],
        "paths.quarantine": str(tmp_path_factory.mktemp("corpus-quarantine")),
        "split.final_fit": "train",
    })
    result = train(config, **training_inputs(config))
    directory = save_bundle(result.bundle, tmp_path_factory.mktemp("corpus-model") / "bundle", result.user_dict_text)
    return result, directory


@pytest.fixture(scope="session")
def corpus_bundle_dir(corpus_training) -> Path:
    return corpus_training[1]


@pytest.fixture(scope="session")
def small_messages_csv(tmp_path_factory) -> Path:
    """About 1,600 corpus messages (whole groups), enough to train a real model in seconds."""
    if not MESSAGES.exists():
        pytest.skip("data/messages.csv is not built")
    frame = pd.read_csv(MESSAGES, dtype=str, keep_default_na=False)
    groups = frame.groupby("intent")["group"].unique()
    keep = {g for members in groups for g in sorted(members)[:25]}
    path = tmp_path_factory.mktemp("small") / "messages.csv"
    frame[frame["group"].isin(keep)].to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def flag_bundle_dir(tmp_path_factory) -> Path:
    """A small real bundle (message models and a conversation model) trained in seconds on tests/batch/builders.py."""
    from pipeline.bundle import save_bundle
    from pipeline.config import load_config
    from pipeline.conversation import Turn
    from pipeline.data.labelled import LabelledData, validate_labelled
    from pipeline.training.train import ConversationData, train
    from tests.batch.builders import labelled_conversations, labelled_messages

    # the flagging tests' expectations were set on this tiny model's decisions: its classifier stays fixed when
    # the default one changes (chosen on the bundled corpus, not on these few hundred messages), and so does its fit:
    # on the train split (the refit on train + test, split.final_fit, is tested in tests/cli/test_final_fit.py)
    config = load_config(overrides={"paths.data": "unused.csv", "intent_model.classifier": "logreg", "intent_model.C": 4.0,
                                    "features.char_analyzer": "char", "split.final_fit": "train"})
    valid, _ = validate_labelled(labelled_messages(), "fixture", config.split.min_examples_per_label)
    data = LabelledData(valid, pd.DataFrame(columns=["source", "row", "reason", "raw"]), "fixture")
    conversations = pd.DataFrame(labelled_conversations())
    conversations["turns"] = [[Turn(role, text) for role, text in turns] for turns in conversations["turns"]]
    result = train(config, data, ConversationData(conversations, "fixture"))
    return save_bundle(result.bundle, tmp_path_factory.mktemp("flag-model") / "bundle", result.user_dict_text)


# Fixtures that train a model, build the corpus tables or start a server: a test using one is `slow`,
# so `pytest -m "not slow"` is the quick tier (code and data-free behaviour tests).
SLOW_FIXTURES = frozenset(
    {
        "corpus_training",
        "corpus_bundle_dir",
        "flag_bundle_dir",
        "flag_scorer",
        "model_dir",
        "service_module",
        "app_client",
        "server",
        "tampered_server",
        "messages",
        "conversations",
        "orders",
        "first_run",  # tests/cli: a training run through the CLI
    }
)
SLOW_FOLDERS = ("benchmarks", "notebooks", "model", "serving", "reliability", "tracking", "spark")
# `make test` runs the suite on two xdist workers (`--dist loadgroup`): the tests sharing an expensive
# session fixture (the corpus model, a server, PostgreSQL, a JVM) stay on one worker, so it is built once.
XDIST_GROUPS = {"notebooks": "corpus", "model": "corpus", "serving": "serving", "reliability": "reliability",
                "tracking": "tracking", "spark": "spark"}
CORPUS_FIXTURES = frozenset({"corpus_training", "corpus_bundle_dir"})
# The fault suite (`pytest -m reliability`, issue #16): tests/reliability plus the schema-driven fuzzing of
# the live service's OpenAPI document, which lives beside the other server tests.
RELIABILITY_FILES = frozenset({"test_server_openapi.py"})
# the fault suite's live-server tests, apart from its batch jobs: the two halves run side by side
RELIABILITY_SERVER_FILES = frozenset({"test_overload.py", "test_hostile_json.py", "test_shared_slots.py"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "reliability: the fault suite (tests/reliability and the OpenAPI fuzzing), `pytest -m reliability`")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        fixtures = set(getattr(item, "fixturenames", ()))
        if folder in SLOW_FOLDERS or SLOW_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slow)
        if folder == "reliability" or Path(str(item.fspath)).name in RELIABILITY_FILES:
            item.add_marker(pytest.mark.reliability)
        group = "corpus" if CORPUS_FIXTURES & fixtures else XDIST_GROUPS.get(folder)
        if folder == "reliability" and Path(str(item.fspath)).name in RELIABILITY_SERVER_FILES:
            group = "reliability-server"
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
