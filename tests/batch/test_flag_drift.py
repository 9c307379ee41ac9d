"""`buyer-intent flag` says, like `predict`, how far the buyer messages it scored sit from the validation data
(`pipeline.drift`): the summary records the label-free accuracy estimate (summed over shards and worker
processes: tests/batch/test_flag.py::test_worker_processes_give_the_same_output), and warns when it falls `drift.warn_drop` below validation. The decisions never depend on it."""

from __future__ import annotations

import pandas as pd
from typer.testing import CliRunner

from pipeline.bundle import USER_DICT_FILE, load_bundle, save_bundle
from pipeline.cli import app
from pipeline.drift import MANIFEST_KEY, estimate
from pipeline.inference import Predictor
from pipeline.jobs.flag import run_flag

from .builders import flat_rows, write_csv, write_orders

# Characters the small model has no n-gram of (as in tests/cli/test_predict_drift.py): rarely confident.
UNSEEN = [chr(0x4E00 + (37 * i) % 20000) * 3 for i in range(200)]
SHIFT_WARNING = "these messages read unlike the data the model was validated on"


def _unseen_chats() -> pd.DataFrame:
    """The fixture's conversations with every buyer message replaced by text unlike the training data."""
    frame = flat_rows()
    buyer = frame["role"] == "buyer"
    frame.loc[buyer, "text"] = [UNSEEN[i % len(UNSEEN)] for i in range(int(buyer.sum()))]
    return frame


def _run(chats, out, orders, bundle, config):
    return run_flag(chats, out, orders, str(bundle), None, config, progress=False)


def test_the_summary_estimates_the_accuracy_on_the_buyer_messages_it_scored(tmp_path, flag_bundle_dir, flag_config):
    frame = flat_rows()
    chats, orders = write_csv(frame, tmp_path / "chats.csv"), write_orders(tmp_path / "orders.csv")
    summary = _run(chats, tmp_path / "nudges.csv", orders, flag_bundle_dir, flag_config())
    bundle = load_bundle(flag_bundle_dir)
    buyers = frame[frame["role"] == "buyer"].reset_index(drop=True)
    buyer_texts = buyers["text"].tolist()
    confidence = Predictor(bundle).predict(buyer_texts)["intent_confidence"].to_numpy()
    expected = estimate(confidence, bundle.manifest)
    record = summary["accuracy_estimate"]
    assert len(buyer_texts) == summary["messages"]["buyer"]
    assert record == {"method": "ATC", "buyer_messages": len(buyer_texts),
                      "estimated_accuracy": expected.estimated, "validation_accuracy": bundle.manifest[MANIFEST_KEY]["validation_accuracy"],
                      "drop": expected.drop}
    assert 0 < record["estimated_accuracy"] < 1
    # per shop (and category): the same estimate on that shop's buyer messages, to find the shop to calibrate for
    for key, part_name in (("shop_id", "per_shop"), ("category", "per_category")):
        for name, part in buyers.groupby(key):
            want = estimate(confidence[part.index.to_numpy()], bundle.manifest)
            got = summary[part_name][name]
            assert (got["buyer_messages"], got["estimated_accuracy"]) == (len(part), want.estimated), (key, name)
    assert sum(part["buyer_messages"] for part in summary["per_shop"].values()) == len(buyer_texts)


def test_chats_unlike_the_training_data_get_the_warning_and_the_same_decisions(tmp_path, flag_bundle_dir, flag_config):
    chats, orders = write_csv(_unseen_chats(), tmp_path / "chats.csv"), write_orders(tmp_path / "orders.csv")
    loud = _run(chats, tmp_path / "a.csv", orders, flag_bundle_dir, flag_config())
    assert loud["accuracy_estimate"]["drop"] >= 0.05
    assert [w for w in loud["warnings"] if SHIFT_WARNING in w and "--calibration-chats" in w]
    quiet_config = flag_config()
    quiet_config = quiet_config.model_copy(update={"drift": quiet_config.drift.model_copy(update={"warn_drop": 1.0})})
    quiet = _run(chats, tmp_path / "b.csv", orders, flag_bundle_dir, quiet_config)
    assert not [w for w in quiet["warnings"] if SHIFT_WARNING in w]
    assert quiet["accuracy_estimate"] == loud["accuracy_estimate"]
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()  # a warning, not another decision


def test_the_terminal_summary_shows_the_estimate_and_the_warning(tmp_path, flag_bundle_dir):
    chats, orders = write_csv(_unseen_chats(), tmp_path / "chats.csv"), write_orders(tmp_path / "orders.csv")
    result = CliRunner().invoke(app, ["flag", "--chats", str(chats), "--orders", str(orders), "--out", str(tmp_path / "n.csv"),
                                      "--model", str(flag_bundle_dir)], terminal_width=400)
    assert result.exit_code == 0, result.output
    assert "intent accuracy, estimated" in result.output
    assert SHIFT_WARNING in " ".join(result.output.split())


def test_a_model_without_the_record_reports_no_estimate(tmp_path, flag_bundle_dir, flag_config):
    """A bundle trained before the record existed: no estimate, no warning, the same nudge list."""
    bundle = load_bundle(flag_bundle_dir)
    user_dict = (flag_bundle_dir / USER_DICT_FILE).read_text(encoding="utf-8") if (flag_bundle_dir / USER_DICT_FILE).is_file() else None
    bundle.manifest.pop(MANIFEST_KEY)
    older = save_bundle(bundle, tmp_path / "older", user_dict)
    chats, orders = write_csv(_unseen_chats(), tmp_path / "chats.csv"), write_orders(tmp_path / "orders.csv")
    with_record = _run(chats, tmp_path / "a.csv", orders, flag_bundle_dir, flag_config())
    without = _run(chats, tmp_path / "b.csv", orders, older, flag_config())
    assert with_record["accuracy_estimate"] is not None
    assert without["accuracy_estimate"] is None and not [w for w in without["warnings"] if SHIFT_WARNING in w]
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
