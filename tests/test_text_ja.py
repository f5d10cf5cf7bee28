"""Japanese frontend: golden g2p with pyopenjtalk-plus and the real char tokenizer, accents, kana rules."""

from __future__ import annotations

import json

import pytest

from vits.symbols import JA_SYMBOLS, PUNCTUATION
from vits.text import clean_text
from vits.text.ja.g2p import g2p
from vits.text.ja.kana import KANA_TO_PHONES, kana_to_phones
from vits.text.ja.normalizer import normalize


@pytest.fixture(scope="module")
def ja_cases(golden_dir):
    return json.loads((golden_dir / "text" / "ja_cases.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ja_tokenizer(golden_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(golden_dir / "tokenizers" / "deberta-v2-large-japanese-char-wwm"))


def test_golden_normalise_and_g2p(ja_cases):
    for case in ja_cases:
        assert normalize(case["text"])[0] == case["norm_text"], case["text"]
        phones, tones, word2ph, unknown, bert_text = g2p(case["norm_text"])
        assert phones == case["phones"], case["norm_text"]
        assert tones == case["tones"], case["norm_text"]
        assert word2ph == case["word2ph"], case["norm_text"]
        assert bert_text == case["norm_text"] and not unknown


def test_word2ph_matches_real_tokenizer(ja_cases, ja_tokenizer):
    texts = [c["norm_text"] for c in ja_cases] + ["コーヒーとケーキ、ちょっと待って!", "東京タワーは333メートル!"]
    for text in texts:
        for seg in clean_text(text, "JP"):
            n_tokens = len(ja_tokenizer(seg.norm_text)["input_ids"])
            assert len(seg.word2ph) == n_tokens, seg.norm_text
            assert sum(seg.word2ph) == len(seg.phones)


@pytest.mark.parametrize("word, tones", [
    ("雨", [1, 0, 0]),  # a-me: head-high (accent 1)
    ("飴", [0, 1, 1]),  # a-me: flat (accent 0)
    ("箸", [1, 1, 0, 0]),  # ha-shi: accent 1
    ("橋", [0, 0, 1, 1]),  # ha-shi: accent 2 (high on the 2nd mora)
])
def test_accent_tones_on_known_words(word, tones):
    (seg,) = clean_text(word + "。", "JP")
    assert seg.tones[1:-2] == tones


def test_long_vowels_sokuon_and_n():
    assert kana_to_phones("コーヒー")[0] == ["k", "o", "o", "h", "i", "i"]
    assert kana_to_phones("ちょっと")[0] == ["ch", "o", "q", "t", "o"]
    assert kana_to_phones("さんぽ")[0] == ["s", "a", "n", "p", "o"]
    assert kana_to_phones("ヴァイオリン")[0] == ["v", "a", "i", "o", "r", "i", "n"]  # 2.3: ヴ -> v
    (seg,) = clean_text("がんばって、ちょっとまって", "JP")
    assert "q" in seg.phones and "n" in seg.phones


def test_kana_table_uses_only_japanese_symbols():
    used = {p for phones in KANA_TO_PHONES.values() for p in phones}
    assert used <= set(JA_SYMBOLS)


@pytest.mark.parametrize("text, expected", [
    ("3時に", "三時に"),
    ("50%です", "五十パーセントです"),
    ("12:30に", "十二時三十分に"),
    ("2023/12/26", "二千二十三年十二月二十六日"),
    ("$5", "五ドル"),
    ("3/4", "四分の三"),
    ("5kg", "五キログラム"),
    ("-5度", "マイナス五度"),
    ("3.5", "三点五"),
    ("１２３", "百二十三"),
    ("090-1234-5678", "ゼロキュウゼロ,イチニサンヨン,ゴロクナナハチ"),
    ("「はい」…", "'はい'…"),
])
def test_normalisation_rules(text, expected):
    assert normalize(text)[0] == expected


def test_invariants_on_awkward_text():
    # text -> number of segments (0: nothing to read; the loop below must not pass by checking nothing)
    cases = {"ー": 0, "ーーー": 0, "っ": 1, "ゔ": 1, "ヶ月": 1, "々": 0, "、、、。": 0, "ﾃｽﾄ": 1, "〆切": 1, "ゑ": 1}
    for text, count in cases.items():
        segs = clean_text(text, "JP")
        assert len(segs) == count, text
        for seg in segs:
            assert sum(seg.word2ph) == len(seg.phones)
            assert len(seg.tones) == len(seg.phones)
            assert set(seg.phones) <= set(JA_SYMBOLS) | set(PUNCTUATION) | {"_", "UNK"}
            assert set(seg.tones) <= {0, 1}
