"""Language detection, markup, bad input, the user dictionary and sentence splitting."""

from __future__ import annotations

import random
import warnings

import pytest

from vits.errors import KoeError
from vits.text import (
    TextWarning,
    UserDict,
    clean_single,
    clean_text,
    detect_language,
    split_markup,
    split_sentences,
)


def _langs(segments):
    return [(s.language, s.norm_text) for s in segments]


@pytest.mark.parametrize("text, expected", [
    ("我爱北京天安门。", "ZH"),
    ("これは日本語です。", "JP"),
    ("東京", "ZH"),  # Han only, no kana: Chinese
    ("Hello there, how are you?", "EN"),
    ("Hello my friend 世界", "EN"),
    ("123", "ZH"),
])
def test_detect_language(text, expected):
    assert detect_language(text) == expected


def test_auto_splits_scripts_into_segments():
    segs = clean_text("今日はいい天気ですね。Hello!", "AUTO")
    assert _langs(segs) == [("JP", "今日はいい天気ですね."), ("EN", "Hello!")]
    segs = clean_text("I love 北京 very much.", "AUTO")
    assert [s.language for s in segs] == ["EN", "ZH", "EN"]
    segs = clean_text("東京でiPhoneを買った。", "AUTO")
    assert [s.language for s in segs] == ["JP", "EN", "JP"]


def test_host_language_reads_the_numbers():
    assert _langs(clean_text("我有3个apple", "ZH"))[0] == ("ZH", "我有三个")
    assert _langs(clean_text("I have 3 苹果", "EN"))[0] == ("EN", "I have three")


@pytest.mark.parametrize("text", [
    "[ZH]你好[ZH][EN]good morning[EN][JP]おはよう[JP]",
    "<zh>你好<en>good morning<jp>おはよう",
    "<zh>你好</zh><en>good morning</en><ja>おはよう</ja>",
])
def test_markup(text):
    segs = clean_text(text, "MIX")
    assert [s.language for s in segs] == ["ZH", "EN", "JP"]
    assert segs[1].norm_text == "good morning"


def test_markup_outside_tags_is_detected():
    assert split_markup("hi [ZH]你好[ZH]") == [(None, "hi "), ("ZH", "你好")]
    assert [s.language for s in clean_text("hi there [ZH]你好[ZH]", "MIX")] == ["EN", "ZH"]


@pytest.mark.parametrize("text", ["", "   \n\t ", "。。。!!", "……", "'-'"])
def test_nothing_to_read_gives_empty_list(text):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lang in ("ZH", "JP", "EN", "AUTO", "MIX"):
            assert clean_text(text, lang) == []


def test_emoji_removed_with_a_warning_naming_them():
    with pytest.warns(TextWarning, match="U\\+1F600"):
        assert clean_text("😀😀", "AUTO") == []
    with pytest.warns(TextWarning, match="U\\+1F389"):
        segs = clean_text("太好了🎉！", "ZH")
    assert _langs(segs) == [("ZH", "太好了!")]


def test_unplaceable_scripts_are_removed_with_a_warning():
    with pytest.warns(TextWarning, match="U\\+0E2A"):  # Hangul is read since Korean came (tests/test_text_ko.py)
        segs = clean_text("สวัสดี Привет 你好", "AUTO")
    assert _langs(segs) == [("ZH", "你好")]


def test_clean_single_keeps_one_language():
    with pytest.warns(TextWarning, match="'H'"):
        seg = clean_single("你好呀，Hello世界！", "ZH")
    assert (seg.language, seg.norm_text) == ("ZH", "你好呀,世界!")  # the reference's training-line behaviour
    assert clean_single("   ", "EN") is None
    with pytest.raises(KoeError, match="one language"):
        clean_single("hi", "AUTO")


def test_bad_language_and_type():
    with pytest.raises(KoeError, match="unknown language"):
        clean_text("hi", "FR")
    with pytest.raises(KoeError, match="string"):
        clean_text(None, "ZH")


def test_long_text():
    text = "今天天气很好，我们去公园散步吧。" * 600  # 9600 characters
    segs = clean_text(text[:10000], "ZH")
    assert len(segs) == 1 and len(segs[0].norm_text) == 9600
    assert sum(segs[0].word2ph) == len(segs[0].phones)


def test_random_unicode_never_raises():
    rng = random.Random(0)
    pools = ["abc xyz'.,!?-", "你好世界一不了的", "あいうえおーっんカタカナ", "0123456789%$/:.-", "😀🎉한글Ωé\u0301\u200b\x00",
             "。，！？…「」『』（）【】"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(40):
            text = "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 30)))
            for lang in ("ZH", "JP", "EN", "AUTO", "MIX"):
                for seg in clean_text(text, lang):
                    assert sum(seg.word2ph) == len(seg.phones) == len(seg.tones), (text, lang)


# --- user dictionary -----------------------------------------------------------------------------------

def test_user_dictionary_overrides_each_language(tmp_path):
    path = tmp_path / "userdict.txt"
    path.write_text("# my voice\n重庆\tchong2 qing4\n你好\tni3 hao3\n東京\tトーキョー/0\nKoe\tK OW1 EY0\n",
                    encoding="utf-8")
    ud = UserDict.load(path)
    assert len(ud) == 4
    (zh,) = clean_text("你好，重庆", "ZH", user_dict=ud)
    assert zh.tones[1:5] == [3, 3, 3, 3]  # explicit tones: no third-tone sandhi
    assert zh.phones[6:10] == ["ch", "ong", "q", "ing"]
    (default,) = clean_text("你好", "ZH")
    assert default.tones[1:5] == [2, 2, 3, 3]
    (en,) = clean_text("Koe", "EN", user_dict=ud)
    assert en.phones == ["_", "k", "ow", "ey", "_"] and en.tones == [0, 3, 2, 1, 0]
    (ja,) = clean_text("東京", "JP", user_dict=ud)
    assert ja.phones[1:-1] == ["t", "o", "o", "ky", "o", "o"]
    assert ja.tones[1:-1] == [0, 0, 1, 1, 1, 1]  # accent 0: low then high


@pytest.mark.parametrize("line, message", [
    ("重庆\tchong2", "2 characters but 1"),
    ("重庆\tchong2 qxng4", "not a Mandarin syllable"),
    ("Koe\tK OW1 QQ", "not ARPAbet"),
    ("東京\tトーキョー/9", "accent 9"),
    ("word\t???", "cannot tell"),
    ("lonely", "no pronunciation"),
])
def test_user_dictionary_bad_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "userdict.txt"
    path.write_text("好\thao3\n" + line + "\n", encoding="utf-8")
    with pytest.raises(KoeError, match=message) as info:
        UserDict.load(path)
    assert f"{path}:2" in str(info.value) and "→" in str(info.value)


def test_missing_user_dictionary_is_empty(tmp_path):
    assert len(UserDict.load(tmp_path / "nope.txt")) == 0


# --- sentences ------------------------------------------------------------------------------------------

def test_split_sentences():
    text = "你好。我是派蒙！Hello world. It costs 3.14 dollars... ok? 「はい。」次"
    assert split_sentences(text) == ["你好。", "我是派蒙！", "Hello world.", "It costs 3.14 dollars...", "ok?",
                                     "「はい。」", "次"]
    assert split_sentences("") == [] and split_sentences(" 。。 ") == []
    long = "这是一个很长的句子，" * 40
    parts = split_sentences(long, max_chars=50)
    assert all(len(p) <= 50 for p in parts) and "".join(parts) == long
