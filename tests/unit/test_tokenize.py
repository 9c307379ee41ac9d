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
