"""`train --unlabelled CHATS` (#15, deliverable 3): a shop's unlabelled buyer messages weigh the n-grams of
the TF-IDF features, and nothing else. The vocabulary and the classifiers stay the training text's, no
unlabelled text is kept in the model, validation/test/evaluation texts never enter the IDF fit, and
without the flag training is what it was. Small corpora only (tests/batch/builders.py): seconds each."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from typer.testing import CliRunner

from pipeline.bundle import save_bundle, sha256_file, verify_bundle
from pipeline.cli import app
from pipeline.compiled import compile_bundle
from pipeline.config import Registry, load_config
from pipeline.data.labelled import DataError, LabelledData, validate_labelled
from pipeline.estimators import CompactTfidfVectorizer
from pipeline.inference import load_model
from pipeline.data.tables import TableError
from pipeline.text import normalize
from pipeline.training.train import UnlabelledData, train
from pipeline.jobs.workflows import load_unlabelled
from tests.batch.builders import labelled_messages

runner = CliRunner()
# Shop messages with n-grams the training text does not have (and longer than any n-gram of the model), so
# a copy of one in the bundle would be a stored unlabelled text.
SHOP_TEXTS = ["量子纠缠保温杯专用款到货没有", "这款破壁料理机噪音大不大", "冰箱侧开门能左右互换吗", "洗碗机安装要另外收费吗", "有货吗 保温杯"]
KW = dict(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True, dtype=np.float32, lowercase=False)


def _config(tmp_path: Path, **overrides):
    return load_config(overrides={"paths.data": "unused.csv", "paths.quarantine": str(tmp_path / "quarantine"), **overrides})


@pytest.fixture(scope="module")
def labelled():
    config = load_config(overrides={"paths.data": "unused.csv"})
    valid, _ = validate_labelled(labelled_messages(), "fixture", config.split.min_examples_per_label)
    return LabelledData(valid, pd.DataFrame(columns=["source", "row", "reason", "raw"]), "fixture")


@pytest.fixture(scope="module")
def shop():
    return UnlabelledData([normalize(t) for t in SHOP_TEXTS * 3], [{"source": "shop.csv", "sha256": "0" * 64, "rows_in": 15,
                                                                  "messages_used": 15, "rows_not_buyer": 0, "rows_rejected": 0}])


@pytest.fixture(scope="module")
def trained(labelled, shop):
    config = load_config(overrides={"paths.data": "unused.csv"})
    return train(config, labelled), train(config, labelled, unlabelled=shop)


def _vectorizers(bundle):
    return [vectorizer for _, vectorizer in bundle.intent.named_steps["features"].transformer_list]


# --- the vectorizer ------------------------------------------------------------------------------------


def test_idf_counts_training_and_unlabelled_documents_for_the_training_vocabulary(monkeypatch):
    train_docs = ["在吗 亲", "有货吗", "黑色有货吗", "在吗", "什么时候发货", "发货 快吗"]
    extra = ["在吗在吗", "发货了吗 亲", "全新的词语 量子"] * 3
    plain = CompactTfidfVectorizer(**KW).fit(train_docs)
    monkeypatch.setattr(CompactTfidfVectorizer, "IDF_BATCH", 2)  # counted in several batches
    adapted = CompactTfidfVectorizer(**KW)
    matrix = adapted.fit_transform(train_docs, idf_documents=extra)
    assert adapted.vocabulary_ == plain.vocabulary_ and "量" not in adapted.vocabulary_
    # scikit-learn's own IDF over both sets, with the training vocabulary fixed
    reference = TfidfVectorizer(**{**KW, "min_df": 1}, vocabulary=adapted.vocabulary_).fit(train_docs + extra)
    assert adapted.idf_.dtype == np.float32 and np.array_equal(adapted.idf_, reference.idf_)
    assert not np.array_equal(adapted.idf_, plain.idf_)
    assert abs(matrix - adapted.transform(train_docs)).max() == 0
    assert np.array_equal(CompactTfidfVectorizer(**KW).fit(train_docs, idf_documents=extra).idf_, adapted.idf_)


def test_without_idf_documents_the_vectorizer_is_scikit_learns():
    docs = ["在吗 亲", "有货吗", "黑色有货吗", "在吗", "什么时候发货", "发货 快吗"]
    stock = TfidfVectorizer(**KW)
    want = stock.fit_transform(docs)
    for idf_documents in (None, []):
        ours = CompactTfidfVectorizer(**KW)
        got = ours.fit_transform(docs, idf_documents=idf_documents)
        assert ours.vocabulary_ == stock.vocabulary_ and np.array_equal(ours.idf_, stock.idf_)
        assert (got != want).nnz == 0


# --- reading a shop's export ----------------------------------------------------------------------------


def test_a_gb18030_export_gives_its_buyer_rows_and_quarantines_bad_ones_with_reasons(tmp_path):
    config = _config(tmp_path, **{"text.max_chars": 50})
    path = tmp_path / "店铺聊天.csv"
    rows = [("c1", "买家", "这个保温杯有货吗"), ("c1", "客服", "亲 在的"), ("c1", "买家", ""), ("c1", "买家", "长" * 60),
            ("c1", "买家", "坏\ufffd字"), ("c1", "买家", "有\x00货"), ("c2", "buyer", "能便宜点吗")]
    lines = ["会话ID,角色,内容"] + [",".join(row) for row in rows]
    data = ("\n".join(lines[:4]) + "\n").encode("gb18030") + b"c3,\xff\xfe\xfa,\xff\xff\n" + ("\n".join(lines[4:]) + "\n").encode("gb18030")
    path.write_bytes(data)
    unlabelled = load_unlabelled([str(path)], config)
    assert unlabelled.texts == [normalize("这个保温杯有货吗"), normalize("能便宜点吗")]
    (summary,) = unlabelled.files
    assert summary == {"source": str(path), "sha256": sha256_file(path), "rows_in": 8, "messages_used": 2, "rows_not_buyer": 1, "rows_rejected": 5}
    assert summary["rows_in"] == summary["messages_used"] + summary["rows_not_buyer"] + summary["rows_rejected"]
    quarantined = pd.read_csv(tmp_path / "quarantine" / "店铺聊天.unlabelled.rejected.csv")
    reasons = sorted(quarantined["reason"])
    assert reasons[0] == "NUL byte in text" and reasons[1] == "bad encoding (U+FFFD in text)"
    assert reasons[2].startswith("bad encoding: neither UTF-8 nor GB18030")
    assert reasons[3] == "empty text" and reasons[4].startswith("longer than text.max_chars (60 > 50 characters)")
    # a clean run removes the previous run's quarantine file
    path.write_text("内容\n这个保温杯有货吗\n", encoding="utf-8")
    assert load_unlabelled([str(path)], config).files[0]["rows_rejected"] == 0
    assert not (tmp_path / "quarantine" / "店铺聊天.unlabelled.rejected.csv").exists()


def test_bom_csv_excel_and_jsonl_exports_read_alike_with_column_aliases_and_columns_map(tmp_path):
    frame = pd.DataFrame({"发送方": ["买家", "客服", "顾客"], "留言": ["黑色还有吗", "有的", "今天能发吗"]})
    config = _config(tmp_path, **{"columns.map": "留言=text"})
    frame.to_csv(tmp_path / "a.csv", index=False, encoding="utf-8-sig")
    frame.to_excel(tmp_path / "b.xlsx", index=False)
    lines = [json.dumps(r, ensure_ascii=False) for r in frame.to_dict(orient="records")]
    nested = json.dumps({"发送方": "买家", "留言": {"card": "订单卡片"}}, ensure_ascii=False)
    (tmp_path / "c.jsonl").write_text("\n".join([lines[0], "{not json", nested, *lines[1:]]) + "\n", encoding="utf-8")
    unlabelled = load_unlabelled([str(tmp_path / n) for n in ("a.csv", "b.xlsx", "c.jsonl")], config)
    assert unlabelled.texts == [normalize("黑色还有吗"), normalize("今天能发吗")] * 3
    assert [f["rows_rejected"] for f in unlabelled.files] == [0, 0, 2]
    quarantined = pd.read_csv(tmp_path / "quarantine" / "c.unlabelled.rejected.csv")
    assert quarantined["reason"].str.startswith("not valid JSON").sum() == 1
    assert (quarantined["reason"] == "text must be a string, got a JSON object").sum() == 1
    assert [f["rows_not_buyer"] for f in unlabelled.files] == [1, 1, 1]
    # without the mapping, 留言 is no known column: the header is refused before any row is read
    with pytest.raises(TableError, match="missing column"):
        load_unlabelled([str(tmp_path / "a.csv")], _config(tmp_path))


def test_an_export_without_a_usable_buyer_message_is_an_error_and_none_given_is_none(tmp_path):
    (tmp_path / "agents.csv").write_text("role,text\nagent,亲 在的\nbuyer,\n", encoding="utf-8")
    with pytest.raises(DataError, match="no usable unlabelled buyer message"):
        load_unlabelled([str(tmp_path / "agents.csv")], _config(tmp_path))
    assert load_unlabelled([], _config(tmp_path)) is None


# --- training -------------------------------------------------------------------------------------------


def test_without_unlabelled_training_is_unchanged(labelled, trained, monkeypatch):
    """The default path against scikit-learn's own TfidfVectorizer fit (the code before --unlabelled)."""
    current, _ = trained
    with monkeypatch.context() as patch:
        patch.setattr(CompactTfidfVectorizer, "fit_transform", TfidfVectorizer.fit_transform)
        patch.setattr(CompactTfidfVectorizer, "fit", TfidfVectorizer.fit)
        reference = train(load_config(overrides={"paths.data": "unused.csv"}), labelled)
    texts = labelled.frame["text"].tolist() + SHOP_TEXTS
    assert np.array_equal(current.bundle.intent.predict_proba(texts), reference.bundle.intent.predict_proba(texts))
    assert np.array_equal(current.bundle.purchase.predict_proba(texts), reference.bundle.purchase.predict_proba(texts))
    for ours, theirs in zip(_vectorizers(current.bundle), _vectorizers(reference.bundle), strict=True):
        assert ours.vocabulary_ == theirs.vocabulary_ and np.array_equal(ours.idf_, theirs.idf_)
    assert current.bundle.thresholds == reference.bundle.thresholds
    same = lambda result: json.dumps(result.metrics, sort_keys=True, default=float)  # noqa: E731 (NaN == NaN here)
    assert same(current) == same(reference) and "unlabelled" not in current.fingerprints


def test_only_the_idf_changes(labelled, shop, trained):
    plain, adapted = trained
    assert adapted.messages["split"].tolist() == plain.messages["split"].tolist()
    fitted_on = ["train", "test"] if "final_fit" in adapted.bundle.manifest else ["train"]  # split.final_fit: the shipped refit's rows
    train_texts = adapted.messages.loc[adapted.messages["split"].isin(fitted_on), "normalized"].tolist()
    for before, after in zip(_vectorizers(plain.bundle), _vectorizers(adapted.bundle), strict=True):
        assert after.vocabulary_ == before.vocabulary_  # the training text's n-grams, none of the shop's new ones
        assert not np.array_equal(after.idf_, before.idf_)
        reference = TfidfVectorizer(analyzer=after.build_analyzer(), vocabulary=after.vocabulary_, sublinear_tf=True, dtype=np.float32)
        assert np.array_equal(after.idf_, reference.fit(train_texts + shop.texts).idf_)
    assert type(adapted.bundle.intent).__name__ == "Pipeline" and adapted.bundle.purchase.named_steps["features"] is adapted.bundle.intent.named_steps["features"]
    summary = adapted.fingerprints["unlabelled"]
    assert summary["messages_used"] == 15 and summary["excluded_held_out"] == 0 and summary["files"] == shop.files
    assert adapted.bundle.manifest["fingerprints"]["unlabelled"] == summary


def test_the_saved_bundle_holds_no_unlabelled_text(trained, tmp_path):
    _, adapted = trained
    directory = save_bundle(adapted.bundle, tmp_path / "bundle", adapted.user_dict_text)
    blobs = []
    for path in directory.iterdir():
        blobs.append(path.read_bytes())
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                blobs += [archive.read(name) for name in archive.namelist()]
    for text in {t for raw in SHOP_TEXTS for t in (raw, normalize(raw))} - {normalize("有货吗 保温杯")}:
        needles = [text.encode("utf-8"), text.encode("utf-32-le"), json.dumps(text)[1:-1].encode("ascii")]  # numpy str arrays are UTF-32
        assert not any(needle in blob for needle in needles for blob in blobs), text
    manifest = verify_bundle(directory)
    assert manifest["fingerprints"]["unlabelled"]["messages_used"] == 15


def test_validation_test_and_evaluation_texts_never_enter_the_idf_fit(labelled, shop):
    config = load_config(overrides={"paths.data": "unused.csv"})
    split = train(config, labelled).messages
    val_text, test_text = (split.loc[split["split"] == name, "text"].iloc[0] for name in ("val", "test"))
    evaluation = "这是评估集里的一句话吗"
    leaky = UnlabelledData(shop.texts + [normalize(val_text), normalize(test_text), normalize(evaluation)] * 2, shop.files)
    with_leaks = train(config, labelled, unlabelled=leaky, evaluation_texts=[evaluation])
    clean = train(config, labelled, unlabelled=shop)
    assert with_leaks.fingerprints["unlabelled"]["excluded_held_out"] == 6
    assert with_leaks.fingerprints["unlabelled"]["messages_used"] == len(shop.texts)
    for leaked, expected in zip(_vectorizers(with_leaks.bundle), _vectorizers(clean.bundle), strict=True):
        assert np.array_equal(leaked.idf_, expected.idf_)


def test_the_compiled_path_gives_the_scikit_learn_probabilities(trained):
    _, adapted = trained
    compiled = compile_bundle(adapted.bundle)
    assert compiled is not None
    texts = SHOP_TEXTS + adapted.messages["text"].tolist() + ["", "吗", "ꙮ𓀀"]
    intent, purchase = compiled.probabilities(adapted.bundle.intent.named_steps["normalize"].transform(texts))
    assert np.abs(intent - adapted.bundle.intent.predict_proba(texts)).max() <= 1e-9
    assert np.abs(purchase - adapted.bundle.purchase.predict_proba(texts)[:, 1]).max() <= 1e-9


# --- the command ----------------------------------------------------------------------------------------


def test_train_unlabelled_logs_counts_and_checksum_and_seals_them_in_the_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    labelled_messages().to_csv(tmp_path / "labelled.csv", index=False)
    (tmp_path / "config.yaml").write_text("paths:\n  conversations: null\n  orders: null\n", encoding="utf-8")
    chats = tmp_path / "shop.csv"
    chats.write_text("发送方,消息内容\n" + "".join(f"买家,{t}\n客服,好的亲\n" for t in SHOP_TEXTS * 2) + "买家,\n", encoding="utf-8-sig")
    result = runner.invoke(app, ["train", "--config", str(tmp_path / "config.yaml"), "--data", str(tmp_path / "labelled.csv"),
                                 "--unlabelled", str(chats), "--model-dir", str(tmp_path / "model"), "--no-promote"])
    assert result.exit_code == 0, result.output
    assert "IDF fitted on the training text + 10 unlabelled buyer messages (1 rows quarantined" in result.output
    run = mlflow.MlflowClient().get_run(result.output.split("run id:")[1].split()[0])
    params = run.data.params
    assert params["unlabelled_messages_used"] == "10" and params["unlabelled_rows_rejected"] == "1"
    assert params["unlabelled_sha256"] == sha256_file(chats) and params["paths.unlabelled"] == str([str(chats)])
    # the registered bundle is loaded only when its manifest matches the seal recorded at registration
    registered = load_model(run.data.tags["registered_version"], Registry(f"sqlite:///{tmp_path}/mlflow.db", "buyer-intent", "champion"))
    for manifest in (registered.manifest, verify_bundle(tmp_path / "model")):
        files = manifest["fingerprints"]["unlabelled"]["files"]
        assert [(f["sha256"], f["messages_used"], f["rows_not_buyer"], f["rows_rejected"]) for f in files] == [(sha256_file(chats), 10, 10, 1)]
        assert manifest["config"]["paths"]["unlabelled"] == [str(chats)]
    assert (tmp_path / "data" / "quarantine" / "shop.unlabelled.rejected.csv").exists()
    # what the run logged in text form (fingerprints, metrics, report) holds no shop text
    logged = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".json", ".md", ".html", ".txt", ".yaml") and "quarantine" not in p.parts]
    for text in SHOP_TEXTS[:4]:
        assert not any(text in p.read_text(encoding="utf-8", errors="replace") for p in logged), text
