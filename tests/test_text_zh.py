"""Chinese frontend: golden g2p, the opencpop table, normalisation rules, sandhi, invariants."""

from __future__ import annotations

import json

import pytest

from vits.symbols import SYMBOL_TO_ID, ZH_SYMBOLS
from vits.text import clean_text
from vits.text.zh.g2p import g2p
from vits.text.zh.normalizer import normalize
from vits.text.zh.opencpop import PINYIN_TO_PHONES

# the reference normaliser is wrong on these two; ours differs on purpose (tested below)
_REFERENCE_WRONG = {"电话号码是13812345678。", "你好呀，Hello世界！"}


@pytest.fixture(scope="module")
def zh_cases(golden_dir):
    return json.loads((golden_dir / "text" / "zh_cases.json").read_text(encoding="utf-8"))


def test_golden_g2p_exact(zh_cases):
    for case in zh_cases:
        phones, tones, word2ph, unknown = g2p(case["norm_text"])
        assert phones == case["phones"], case["norm_text"]
        if case["text"] == "电话号码是13812345678。":  # reference reads 亿一千 as yi1 qian1; it is yi4 qian1
            assert tones[23:25] == [4, 4] and case["tones"][23:25] == [1, 1]
            tones[23:25] = case["tones"][23:25]
        assert tones == case["tones"], case["norm_text"]
        assert word2ph == case["word2ph"], case["norm_text"]
        assert not unknown


def test_golden_normalisation(zh_cases):
    for case in zh_cases:
        if case["text"] in _REFERENCE_WRONG:
            continue
        assert normalize(case["text"])[0] == case["norm_text"], case["text"]


def test_phone_number_read_digit_by_digit():
    (seg,) = clean_text("电话号码是13812345678。", "ZH")
    assert seg.norm_text == "电话号码是幺三八幺二三四五六七八."
    assert seg.phones[11:13] == ["y", "ao"]


def test_latin_word_kept_as_english_segment():
    segs = clean_text("你好呀，Hello世界！", "ZH")
    assert [(s.language, s.norm_text) for s in segs] == [("ZH", "你好呀,"), ("EN", "Hello"), ("ZH", "世界!")]
    assert segs[1].phones == ["_", "hh", "ah", "l", "ow", "_"]


def test_opencpop_table_from_rules():
    assert len(PINYIN_TO_PHONES) >= 410
    used = {p for pair in PINYIN_TO_PHONES.values() for p in pair}
    assert used == set(ZH_SYMBOLS)  # every one of the 65 Chinese symbols, nothing else
    spec_examples = {"ba": "b a", "a": "AA a", "e": "EE e", "o": "OO o", "yi": "y i", "wu": "w u", "yu": "y v",
                     "zhi": "zh ir", "zi": "z i0", "yuan": "y van", "ye": "y E", "yan": "y En", "lv": "l v",
                     "jue": "j ve", "qu": "q v", "dui": "d ui", "liu": "l iu", "lun": "l un", "er": "EE er"}
    for syllable, phones in spec_examples.items():
        assert " ".join(PINYIN_TO_PHONES[syllable]) == phones, syllable


@pytest.mark.parametrize("text, expected", [
    ("我有3000块钱", "我有三千块钱"),  # digits
    ("体重65.5公斤", "体重六十五点五公斤"),  # decimals
    ("零下-10度", "零下负十度"),  # negatives
    ("增长了50%", "增长了百分之五十"),  # percent
    ("3/4的人", "四分之三的人"),  # fractions
    ("2023年12月26日", "二零二三年十二月二十六日"),  # dates
    ("2023-12-26开会", "二零二三年十二月二十六日开会"),
    ("时间是12:30", "时间是十二点三十分"),  # times
    ("下午3:05:10", "下午三点零五分十秒"),
    ("价格¥100", "价格一百元"),  # currency
    ("花了$20", "花了二十美元"),
    ("验证码是0451", "验证码是零四五幺"),  # codes
    ("第3名", "第三名"),  # ordinals
    ("重5kg，长10km", "重五千克,长十公里"),  # units
    ("温度25℃", "温度二十五摄氏度"),
    ("１２３个", "一百二十三个"),  # full width
    ("等等...", "等等…"),  # ellipsis
    ("他说：“好。”", "他说,'好.'"),  # quotes
    ("1,000,000元", "一百万元"),
    ("3~5天", "三到五天"),
    ("嗯，好", "恩,好"),
])
def test_normalisation_rules(text, expected):
    assert normalize(text)[0] == expected


@pytest.mark.parametrize("text, syllables", [
    ("你好", [("n", 2), ("h", 3)]),  # third-tone sandhi
    ("一样", [("y", 2), ("y", 4)]),  # 一 before tone 4
    ("一天", [("y", 4), ("t", 1)]),  # 一 before other tones
    ("不要", [("b", 2), ("y", 4)]),  # 不 before tone 4
    ("看一看", [("k", 4), ("y", 5), ("k", 4)]),
    ("桌子", [("zh", 1), ("z", 5)]),  # neutral -子
])
def test_tone_sandhi(text, syllables):
    phones, tones, _, _ = g2p(text)
    got = [(phones[1 + 2 * i], tones[1 + 2 * i]) for i in range(len(text))]
    assert got == syllables


def test_invariants_on_awkward_text():
    # text -> number of segments (0: nothing to read; the loop below must not pass by checking nothing)
    cases = {"啊啊啊啊啊": 1, "嗯": 1, "呣": 1, "哼!": 1, "……!?": 0, "鼗鼕鼖": 1, "的的的": 1, "一二三四": 1,
             "我,我.我!": 1}
    for text, count in cases.items():
        segs = clean_text(text, "ZH")
        assert len(segs) == count, text
        for seg in segs:
            assert sum(seg.word2ph) == len(seg.phones)
            assert len(seg.word2ph) == len(seg.norm_text) + 2
            assert len(seg.tones) == len(seg.phones)
            assert all(p in SYMBOL_TO_ID for p in seg.phones)
            assert all(0 <= t <= 5 for t in seg.tones)


def test_every_syllable_two_phones_punctuation_one():
    phones, tones, word2ph, _ = g2p("他们,去了!")
    assert word2ph == [1, 2, 2, 1, 2, 2, 1, 1]
    assert phones[5] == "," and tones[5] == 0
