import pickle

from pipeline.estimators import EnglishTokenizer, JiebaTokenizer, packaged_user_words


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


def test_memoised_cutting_gives_jiebas_tokens():
    """The block cache must not change a single token: compared with jieba's own lcut on the corpus
    (normalised, so with the canonical placeholder tokens) and on awkward inputs, twice (cold and warm)."""
    import pandas as pd

    from pipeline.text import normalize
    from tests.conftest import REPO

    tokenizer = JiebaTokenizer(packaged_user_words())
    jieba_itself = tokenizer._segmenter()[0]
    texts = [normalize(t) for t in pd.read_csv(REPO / "data" / "messages.csv", usecols=["text"])["text"].astype(str)[:4000]]
    texts += ["", "   ", "a b\r\nc", "M码 165斤\t穿多大?", "😀😀在吗~~", "订单123456789 ＃ 包邮吗!!", "iPhone15ProMax 有货吗", "。。。"]
    expected = [[w for w in jieba_itself.lcut(t, HMM=True) if not w.isspace()] for t in texts]
    assert [tokenizer(t) for t in texts] == expected
    assert [tokenizer(t) for t in texts] == expected
