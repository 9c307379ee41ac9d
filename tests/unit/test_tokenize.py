import logging
import pickle
import re

import pytest

from pipeline.estimators import EnglishTokenizer, JiebaTokenizer, SegmenterUnavailable, installed_segmenter, packaged_user_words

_HAN_ONLY = re.compile("[\u4E00-\u9FD5]+")


def test_user_dictionary_words_stay_whole():
    tokenizer = JiebaTokenizer(packaged_user_words())
    tokens = tokenizer("七天无理由退货吗 运费险有吗 能用花呗吗")
    for word in ("七天无理由", "运费险", "花呗"):
        assert word in tokens


def test_dictionary_is_part_of_the_tokenizer_not_the_process():
    plain = JiebaTokenizer(())
    custom = JiebaTokenizer(("拍下改价",))
    assert "拍下改价" in custom("我拍下改价了")
    assert "拍下改价" not in plain("我拍下改价了")


def test_whitespace_is_not_a_token():
    assert " " not in JiebaTokenizer(())("在吗 亲")


def test_tokenizers_survive_pickling():
    tokenizer = JiebaTokenizer(("运费险",))
    tokenizer("warm")
    clone = pickle.loads(pickle.dumps(tokenizer))
    assert clone == tokenizer and clone("运费险") == ["运费险"]


def test_english_tokenizer_splits_words_and_punctuation():
    assert EnglishTokenizer()("what's my balance? 42") == ["what's", "my", "balance", "?", "42"]


AWKWARD = ["", "   ", "a b\r\nc", "M码 165斤\t穿多大?", "😀😀在吗~~", "订单123456789 ＃ 包邮吗!!", "iPhone15ProMax 有货吗", "。。。",
           # ASCII joined by `_`, `-`, `.`, `%` inside a word run: jieba-rs keeps some whole, jieba's HMM step cuts them
           "在吗t_t", "有i-size认证吗", "t__t好的", "3.5kg包邮吗", "打折a.5%吗", "ok_ok-12.5%了", "x-l码_有吗", "c++和c#", "5.5.5号"]


def _normalised_corpus(rows: int | None = None) -> list[str]:
    import pandas as pd

    from pipeline.text import normalize
    from tests.conftest import REPO

    texts = pd.read_csv(REPO / "data" / "messages.csv", usecols=["text"])["text"].astype(str)
    return [normalize(t) for t in (texts if rows is None else texts[:rows])]


def _jieba_lcut(words: tuple[str, ...]):
    """jieba 0.42 itself (not the project's code) with the user words, as the reference."""
    import jieba

    reference = jieba.Tokenizer()
    reference.initialize()
    for entry in words:
        parts = entry.split()
        reference.add_word(parts[0], freq=int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None)
    return lambda text: [w for w in reference.lcut(text, HMM=True) if not w.isspace()]


def test_new_tokenizers_cut_with_rjieba_and_record_it():
    from importlib.metadata import version

    tokenizer = JiebaTokenizer(("运费险",))
    assert tokenizer.segmenter == f"rjieba=={version('rjieba')}"
    import rjieba

    assert isinstance(tokenizer._segmenter()[0], rjieba.Jieba)


def test_the_split_patterns_are_jiebas_own():
    """The tokenizer splits text with copies of jieba 0.42's patterns: they must stay jieba's."""
    import jieba
    import jieba.finalseg

    from pipeline.estimators import HMM_NON_HAN, SKIPS, WORD_RUNS

    for ours, theirs in ((WORD_RUNS, jieba.re_han_default), (SKIPS, jieba.re_skip_default), (HMM_NON_HAN, jieba.finalseg.re_skip)):
        assert (ours.pattern, ours.flags) == (theirs.pattern, theirs.flags)


def test_memoised_jieba_cutting_gives_jiebas_tokens():
    """The block cache must not change a single token: the jieba segmenter (models fitted before rjieba)
    against jieba's own lcut on the corpus (normalised, so with the canonical placeholder tokens) and on
    awkward inputs, twice (cold and warm)."""
    words = packaged_user_words()
    tokenizer = JiebaTokenizer(words, segmenter=installed_segmenter("jieba"))
    texts = _normalised_corpus(4000) + AWKWARD
    reference = _jieba_lcut(words)
    expected = [reference(t) for t in texts]
    assert [tokenizer(t) for t in texts] == expected
    assert [tokenizer(t) for t in texts] == expected


def test_rjieba_gives_jiebas_tokens_but_for_han_route_near_ties():
    """rjieba with the non-Han re-cut against jieba's own lcut on the whole corpus and awkward inputs:
    every non-Han token is jieba's, the awkward inputs are cut identically, and the texts that differ
    (benchmarks/RESULTS.md "Segmenters": 5 of 72,000) differ only in how a run of Han characters is cut
    into words (the same characters, another route), in at most 0.02% of texts."""
    words = packaged_user_words()
    tokenizer, reference = JiebaTokenizer(words), _jieba_lcut(words)
    assert tokenizer.segmenter.startswith("rjieba==")
    assert [tokenizer(t) for t in AWKWARD] == [reference(t) for t in AWKWARD]
    texts = _normalised_corpus()
    differ = [(want, got) for want, got in ((reference(t), tokenizer(t)) for t in texts) if want != got]
    assert len(differ) <= 0.0002 * len(texts)
    for want, got in differ:
        assert "".join(want) == "".join(got)
        assert [w for w in want if not _HAN_ONLY.fullmatch(w)] == [w for w in got if not _HAN_ONLY.fullmatch(w)]


def test_a_tokenizer_saved_without_a_segmenter_record_cuts_with_jieba():
    """State written before the segmenter was recorded (user words only) means jieba."""
    legacy = JiebaTokenizer.__new__(JiebaTokenizer)
    legacy.__setstate__({"user_words": packaged_user_words()})
    assert legacy.segmenter == "jieba"
    texts = _normalised_corpus(2000) + AWKWARD
    reference = _jieba_lcut(packaged_user_words())
    assert [legacy(t) for t in texts] == [reference(t) for t in texts]


def hide_rjieba(monkeypatch) -> None:
    """From here on, rjieba's distribution is not found, as on a machine where it is not installed."""
    import pipeline.estimators as estimators

    real = estimators.package_version

    def without_rjieba(name):
        if name == "rjieba":
            raise estimators.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(estimators, "package_version", without_rjieba)


def test_a_segmenter_that_is_not_installed_is_refused_at_load(monkeypatch):
    saved = pickle.dumps(JiebaTokenizer(("运费险",)))
    hide_rjieba(monkeypatch)
    with pytest.raises(SegmenterUnavailable, match="fitted with the segmenter rjieba, which is not installed"):
        pickle.loads(saved)
    with pytest.raises(SegmenterUnavailable, match="unknown segmenter"):
        JiebaTokenizer((), segmenter="nosuch==1.0")


def test_another_version_of_the_segmenter_is_loaded_with_a_warning(caplog):
    tokenizer = JiebaTokenizer(("运费险",))
    tokenizer.segmenter = "rjieba==0.0.1"
    with caplog.at_level(logging.WARNING, logger="pipeline.estimators"):
        clone = pickle.loads(pickle.dumps(tokenizer))
    assert clone.segmenter == "rjieba==0.0.1"
    assert any("fitted with rjieba==0.0.1" in record.getMessage() for record in caplog.records)
