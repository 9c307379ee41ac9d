"""Bad labelled rows are quarantined with a reason; the split is grouped, stratified and leak-free."""

import pandas as pd
import pytest

from pipeline.data import DataError, assign_splits, load_labelled


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
    assert any("purchase_intent must be 0 or 1" in r for r in reasons)
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


def test_identical_normalised_texts_never_straddle_splits():
    frame = _frame()
    frame.loc[frame.index[::7], "normalized"] = "好的"
    split = assign_splits(frame, val_fraction=0.2, test_fraction=0.2, seed=2)
    assert split[frame["normalized"] == "好的"].nunique() == 1
