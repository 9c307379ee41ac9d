"""Bad labelled rows are quarantined with a reason; the split is grouped, stratified and leak-free."""

import pandas as pd
import pytest

from pipeline.data.labelled import DataError, assign_splits, load_labelled


def test_bad_rows_are_quarantined_with_reasons(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(
        "text,intent,purchase_intent\n在吗,greeting,0\n,greeting,0\n有货吗,stock,2\n好的,has space,0\n包邮就拍,stock,1\n",
        encoding="utf-8",
    )
    data = load_labelled(path, tmp_path / "q")
    assert data.frame["text"].tolist() == ["在吗", "包邮就拍"]
    reasons = data.rejected["reason"].tolist()
    assert any("empty text" in r for r in reasons)
    assert any("purchase_intent must be yes or no" in r for r in reasons)
    assert any("bad intent label" in r for r in reasons)
    quarantined = pd.read_csv(tmp_path / "q" / "m.rejected.csv")
    assert len(quarantined) == 3 and set(quarantined["row"]) == {2, 3, 4}


def test_missing_columns_name_the_file(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("message,label\n在吗,greeting\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"m\.csv: missing required column"):
        load_labelled(path)


def test_rare_labels_are_quarantined_not_dropped(tmp_path):
    path = tmp_path / "m.csv"
    rows = ["text,intent"] + [f"在吗{i},greeting" for i in range(10)] + ["开发票,invoice"]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    data = load_labelled(path, None, min_examples_per_label=3)
    assert "invoice" not in set(data.frame["intent"])
    assert "only 1 examples" in data.rejected["reason"].iloc[0]


def _frame(n_groups=60, per_group=3):
    rows = []
    for g in range(n_groups):
        intent = ["a", "b", "c"][g % 3]
        for v in range(per_group):
            rows.append({"text": f"msg {g} variant {v}", "intent": intent, "group": f"g{g}", "normalized": f"msg {g} v{v}"})
    return pd.DataFrame(rows)


def test_split_keeps_groups_together_and_is_stratified():
    frame = _frame()
    split = assign_splits(frame, val_fraction=0.15, test_fraction=0.15, seed=1)
    assert (frame.assign(split=split).groupby("group")["split"].nunique() == 1).all()
    for intent in "abc":
        assert set(split[frame["intent"] == intent]) == {"train", "val", "test"}


def test_split_is_deterministic_and_stable_under_growth():
    frame = _frame()
    first = assign_splits(frame, val_fraction=0.15, test_fraction=0.15, seed=1)
    assert first.equals(assign_splits(frame, val_fraction=0.15, test_fraction=0.15, seed=1))
    shuffled = frame.sample(frac=1.0, random_state=3)
    again = assign_splits(shuffled, val_fraction=0.15, test_fraction=0.15, seed=1)
    assert again.sort_index().equals(first.sort_index())


def test_each_groups_majority_label_is_what_value_counts_gives_ties_included():
    """The split's strata: one grouped count gives, for every group, the label `value_counts().index[0]`
    gives (the most frequent; on a tie, the one the group shows first)."""
    import numpy as np

    from pipeline.data.labelled import _majority_labels

    rng = np.random.default_rng(5)
    groups = rng.integers(0, 400, 3000).astype(str)
    labels = rng.choice(["a", "b", "c", "d"], 3000)  # small groups of 2-15 rows: many ties
    want = pd.Series(labels).groupby(groups).agg(lambda s: s.value_counts().index[0])
    got = _majority_labels(groups, labels)
    assert got.sort_index().equals(want.rename("label").rename_axis("group"))
    ties = pd.crosstab(groups, labels).apply(lambda row: (row == row.max()).sum() > 1, axis=1)
    assert ties.sum() > 50  # the tie rule is exercised


def test_identical_normalised_texts_never_straddle_splits():
    frame = _frame()
    frame.loc[frame.index[::7], "normalized"] = "好的"
    split = assign_splits(frame, val_fraction=0.2, test_fraction=0.2, seed=2)
    assert split[frame["normalized"] == "好的"].nunique() == 1


def test_validation_holds_out_whole_writers():
    frame = _frame(n_groups=90)
    frame["writer"] = [f"w{(g // 3) % 6}" for g in range(90) for _ in range(3)]
    frame.loc[0, "normalized"] = frame.loc[frame["writer"] == "w5", "normalized"].iloc[0]  # shared text: joins w5's group
    split = assign_splits(frame, val_fraction=0.15, test_fraction=0.15, seed=1, holdout_column="writer", val_holdout=["w5"])
    assert (split[frame["writer"] == "w5"] == "val").all()
    assert set(split[frame["writer"] != "w5"]) >= {"train", "test"}
    assert (split[frame["group"] == "g0"] == "val").all()  # identical texts never straddle, even across writers
    assert ((split == "val") == ((frame["writer"] == "w5") | (frame["group"] == "g0"))).all()


def test_validation_falls_back_to_random_groups_without_the_writer_column():
    frame = _frame()
    split = assign_splits(frame, val_fraction=0.15, test_fraction=0.15, seed=1, holdout_column="writer", val_holdout=["w5"])
    assert split.equals(assign_splits(frame, val_fraction=0.15, test_fraction=0.15, seed=1))


def test_eval_sets_are_named_after_their_folder_or_explicitly():
    from pipeline.jobs.workflows import eval_set_spec

    assert eval_set_spec("../shared/realchat-dev/messages.csv") == ("realchat-dev", "../shared/realchat-dev/messages.csv")
    assert eval_set_spec("dev=/tmp/x/messages.csv") == ("dev", "/tmp/x/messages.csv")
    assert eval_set_spec("messages.csv") == ("messages", "messages.csv")


def test_eval_sets_with_a_source_column_are_also_scored_per_source():
    from pipeline.jobs.workflows import per_source_metrics

    scored = pd.DataFrame(
        {
            "intent": ["a", "b", "a", "b"], "pred_intent": ["a", "b", "b", "b"], "confidence": [0.9, 0.8, 0.6, 0.7],
            "fallback": [False] * 4, "purchase_intent": [1, 0, 0, 1], "purchase_score": [0.9, 0.1, 0.2, 0.3],
            "source": ["jd", "jd", "taobao", "taobao"],
        }
    )
    parts = per_source_metrics("eval:dev", scored, 0.5)
    assert set(parts) == {"eval:dev/jd", "eval:dev/taobao"}
    assert parts["eval:dev/jd"]["intent"]["accuracy"] == 1.0
    assert parts["eval:dev/taobao"]["intent"]["accuracy"] == 0.5
    assert parts["eval:dev/taobao"]["purchase"]["recall"] == 0.0
    assert per_source_metrics("eval:dev", scored.drop(columns="source"), None) == {}


@pytest.mark.parametrize("cell, expected", [("1", 1), ("是", 1), (" Yes ", 1), ("y", 1), ("0", 0), ("否", 0), ("F", 0), ("false", 0)])
def test_labelled_purchase_intent_reads_every_yes_no_form_the_flag_job_reads(tmp_path, cell, expected):
    """One yes/no rule: a label file and a chat export's `ordered` column accept the same spellings."""
    path = tmp_path / "m.csv"
    path.write_text(f"text,intent,purchase_intent\n包邮就拍,stock,{cell}\n", encoding="utf-8")
    data = load_labelled(path)
    assert data.frame["purchase_intent"].tolist() == [expected]
    assert data.rejected.empty
