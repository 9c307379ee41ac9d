"""A shop's filled-in labelling queue merges into training: its own source and weight, bad labels
quarantined with reasons, texts as the key (the shop's label replaces the bundled one)."""

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from pipeline.data.labelled import DataError, load_training_data
from pipeline.estimators import CalibratedLinearClassifier


def _base(tmp_path):
    path = tmp_path / "bundled.csv"
    rows = ["text,intent,purchase_intent,group"]
    rows += [f"在吗{i},greeting,0,g{i}" for i in range(6)] + [f"有货吗{i},stock,0,s{i}" for i in range(6)]
    rows += ["什么时候发货,stock,0,s9"]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _queue(tmp_path, body: str):
    path = tmp_path / "queue.csv"
    # The queue `select` writes: the guess columns stay, the person fills intent and purchase_intent.
    path.write_text("text,guess_intent,guess_confidence,intent,purchase_intent\n" + body, encoding="utf-8-sig")
    return path


def test_queue_rows_get_their_source_weight_and_own_groups(tmp_path):
    queue = _queue(tmp_path, "亲在不在,greeting,0.4,greeting,0\n黑色还有吗,greeting,0.3,stock,否\n")
    data = load_training_data(_base(tmp_path), [str(queue)], extra_weight=5.0)
    shop = data.frame[data.frame["source"] == "queue"]
    assert sorted(shop["text"]) == ["亲在不在", "黑色还有吗"]
    assert set(shop["_weight"]) == {5.0}
    assert set(data.frame.loc[data.frame["source"] == "bundled", "_weight"]) == {1.0}
    assert shop["group"].str.startswith("queue:").all()  # never the same group as a bundled row-n
    assert dict(zip(shop["text"], shop["purchase_intent"])) == {"亲在不在": 0, "黑色还有吗": 0}


def test_empty_and_unknown_labels_are_quarantined_and_the_rest_trains(tmp_path):
    queue = _queue(tmp_path, "亲在不在,greeting,0.4,greeting,0\n还没填,stock,0.3,,\n要发票,stock,0.3,invoice,0\n好的,affirm,0.9,affirm,1\n")
    data = load_training_data(_base(tmp_path), [str(queue)], quarantine_dir=tmp_path / "q", extra_weight=2.0)
    assert data.frame.loc[data.frame["source"] == "queue", "text"].tolist() == ["亲在不在"]
    quarantined = pd.read_csv(tmp_path / "q" / "queue.rejected.csv")
    reasons = dict(zip(quarantined["row"], quarantined["reason"]))
    assert len(reasons) == 3
    assert "no intent label" in reasons[2]
    assert "'invoice' is not a label of bundled.csv" in reasons[3]
    assert "'affirm' is not a label" in reasons[4]


def test_the_shops_label_replaces_the_bundled_one_for_the_same_text(tmp_path):
    queue = _queue(tmp_path, "什么时候发货,stock,0.5,greeting,0\n")
    data = load_training_data(_base(tmp_path), [str(queue)], extra_weight=5.0)
    rows = data.frame[data.frame["text"] == "什么时候发货"]
    assert rows[["intent", "source"]].values.tolist() == [["greeting", "queue"]]
    assert len(data.frame) == 13


def test_a_queue_without_purchase_labels_is_refused_when_the_corpus_has_them(tmp_path):
    queue = tmp_path / "intents_only.csv"
    queue.write_text("text,intent\n亲在不在,greeting\n", encoding="utf-8")
    with pytest.raises(DataError, match="intents_only.csv: no purchase_intent column"):
        load_training_data(_base(tmp_path), [str(queue)])


def test_without_extra_files_the_data_is_unchanged(tmp_path):
    data = load_training_data(_base(tmp_path), [])
    assert "_weight" not in data.frame.columns and "source" not in data.frame.columns
    assert len(data.frame) == 13


def test_sample_weight_moves_the_linear_fit_towards_the_heavier_rows():
    # Two contradicting copies of one feature pattern: the weighted side wins the prediction.
    x = sparse.csr_matrix(np.array([[1.0, 0.0]] * 6 + [[0.0, 1.0]] * 6 + [[1.0, 0.0]] * 6))
    y = np.array(["a"] * 6 + ["b"] * 6 + ["b"] * 6)
    groups = np.arange(18)
    model = CalibratedLinearClassifier(LogisticRegression(C=1.0), n_folds=3, random_state=0)
    light = model.fit(x, y, groups=groups, sample_weight=np.r_[np.full(6, 5.0), np.ones(12)]).predict(x[:1])[0]
    heavy = model.fit(x, y, groups=groups, sample_weight=np.r_[np.ones(12), np.full(6, 5.0)]).predict(x[:1])[0]
    assert (light, heavy) == ("a", "b")
    with pytest.raises(ValueError, match="sample_weight has shape"):
        model.fit(x, y, sample_weight=np.ones(3))
