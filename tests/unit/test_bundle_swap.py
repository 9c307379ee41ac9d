"""Saving a model over the previous one: the directory is swapped in one step, never missing."""

import os

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import pipeline.bundle as bundle_module
from pipeline.bundle import ModelBundle, ModelIntegrityError, exchange_paths, read_manifest, save_bundle


def _bundle(tag: str) -> ModelBundle:
    model = LogisticRegression().fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    return ModelBundle(model, None, None, {"name": tag})


def test_exchange_swaps_two_directories(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_text("from a"), (b / "x").write_text("from b")
    if not exchange_paths(a, b):
        pytest.skip("this kernel or file system cannot exchange paths")
    assert (a / "x").read_text() == "from b" and (b / "x").read_text() == "from a"


def test_saving_over_a_model_replaces_it_and_leaves_nothing_beside_it(tmp_path):
    save_bundle(_bundle("first"), tmp_path / "latest")
    save_bundle(_bundle("second"), tmp_path / "latest")
    assert read_manifest(tmp_path / "latest")["name"] == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest"]


def test_without_exchange_an_interrupted_save_names_where_the_old_model_is(tmp_path, monkeypatch):
    save_bundle(_bundle("first"), tmp_path / "latest")
    monkeypatch.setattr(bundle_module, "exchange_paths", lambda a, b: False)
    real_replace, calls = os.replace, []

    def dies_on_the_second_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process stops between moving the old model aside and moving the new in
        real_replace(src, dst)

    monkeypatch.setattr(bundle_module.os, "replace", dies_on_the_second_rename)
    with pytest.raises(KeyboardInterrupt):
        save_bundle(_bundle("second"), tmp_path / "latest")
    with pytest.raises(ModelIntegrityError, match=r"a save was interrupted and the previous model is in .*\.latest\.old"):
        read_manifest(tmp_path / "latest")
