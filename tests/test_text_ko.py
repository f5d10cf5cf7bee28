"""Korean text frontend: numbers by counter, pronunciation rules, phones after the 2.3 table, AUTO and MIX.

The sentence corpus (tests/data/frontend_corpus/ko.tsv) is scored by tests/test_frontend_corpus.py.
"""

from __future__ import annotations

import warnings

import pytest

from vits.symbols import (
    KO_SYMBOLS,
    LANGUAGE_ID,
    LANGUAGE_TONE_START,
    SYMBOL_TO_ID,
    SYMBOLS,
    cleaned_text_to_sequence,
)
from vits.text import clean_single, clean_text, detect_language
from vits.text.ko.g2p import pronounce
from vits.text.ko.normalizer import native, normalize, sino


@pytest.mark.parametrize("n, reading", [(0, "영"), (1, "일"), (10, "십"), (11, "십일"), (100, "백"), (1000, "천"),
                                        (10000, "만"), (2024, "이천이십사"), (35000, "삼만오천"),
                                        (100000000, "일억"), (12345, "만이천삼백사십오")])
def test_sino_korean_numbers(n, reading):
    assert sino(n) == reading


@pytest.mark.parametrize("n, reading", [(1, "한"), (2, "두"), (3, "세"), (4, "네"), (10, "열"), (20, "스무"),
                                        (21, "스물한"), (99, "아흔아홉"), (101, "백한")])
def test_native_korean_numbers_before_a_counter(n, reading):
    assert native(n) == reading


@pytest.mark.parametrize("text, norm", [
    ("사과 3개", "사과 세개"), ("2명", "두명"), ("20살", "스무살"), ("3시", "세시"), ("고양이 4마리", "고양이 네마리"),
    ("2024년", "이천이십사년"), ("3월", "삼월"), ("6월", "유월"), ("10월", "시월"), ("5일", "오일"), ("30분", "삼십분"),
    ("1,500원", "천오백원"), ("15층", "십오층"), ("3번", "삼번"), ("1번째", "첫번째"), ("2번째", "두번째"),
    ("3시간", "세시간"), ("2개월", "이개월"), ("25%", "이십오퍼센트"), ("-5℃", "영하 오도"), ("3.14", "삼 점 일사"),
    ("2024-06-10", "이천이십사년 유월 십일"), ("10:15", "열시 십오분"), ("010-1234-5678", "공일공 일이삼사 오육칠팔"),
    ("₩5000", "오천원"), ("42", "사십이"),
])
def test_numbers_take_the_system_of_their_counter(text, norm):
    assert normalize(text)[0] == norm


@pytest.mark.parametrize("word, said", [
    ("값이", "갑씨"), ("앉아", "안자"), ("있어", "이써"), ("닭이", "달기"),           # 연음
    ("국물", "궁물"), ("합니다", "함니다"), ("받는", "반는"), ("심리", "심니"), ("국립", "궁닙"),  # 비음화
    ("신라", "실라"), ("설날", "설랄"),                                            # 유음화
    ("학교", "학꾜"), ("국밥", "국빱"), ("맑게", "말께"),                           # 경음화
    ("축하", "추카"), ("좋다", "조타"), ("입학", "이팍"), ("밝히다", "발키다"),        # 격음화
    ("좋아", "조아"), ("싫어", "시러"), ("않아", "아나"), ("놓는", "논는"),            # ㅎ 탈락
    ("같이", "가치"), ("굳이", "구지"),                                            # 구개음화
    ("닭", "닥"), ("밟다", "밥따"), ("옷", "옫"), ("희망", "히망"), ("의사", "의사"),
])
def test_pronunciation_rules(word, said):
    assert pronounce(word) == said


def test_korean_phones_come_after_the_112_symbols():
    assert len(SYMBOLS) == 112 and SYMBOLS[0] == "_" and SYMBOLS[-1] == "UNK"
    assert [SYMBOL_TO_ID[s] for s in KO_SYMBOLS] == list(range(112, 112 + len(KO_SYMBOLS)))
    assert not set(KO_SYMBOLS) & set(SYMBOLS)
    assert LANGUAGE_ID == {"ZH": 0, "JP": 1, "EN": 2, "KO": 3} and LANGUAGE_TONE_START["KO"] == 12
    (seg,) = clean_text("학교에 가요.", "KO")
    ids, tones, langs = cleaned_text_to_sequence(seg.phones, seg.tones, "KO")
    assert set(tones) == {12} and set(langs) == {3}
    assert all(i >= 112 for p, i in zip(seg.phones, ids) if p not in ("_", "."))


def test_segment_shape_word2ph_and_phones():
    (seg,) = clean_text("학교에 가요!", "KO")
    assert seg.language == "KO" and seg.norm_text == "학교에 가요!"
    assert "".join(seg.phones[1:4]) == "\u1112\u1161\u11a8"  # 학 = ᄒ ᅡ ᆨ
    assert seg.phones[4] == "\u1101"  # 교 → 꾜: the tensed onset ᄁ
    # one entry per syllable and punctuation mark (spaces are not tokens), plus [CLS]/[SEP]
    assert len(seg.word2ph) == 2 + 5 + 1 and sum(seg.word2ph) == len(seg.phones) == len(seg.tones)
    assert set(seg.tones) == {0} and seg.phones[0] == seg.phones[-1] == "_"


def test_auto_detects_hangul_and_mix_markup():
    assert detect_language("안녕하세요, 반갑습니다.") == "KO"
    assert detect_language("今天天气很好") == "ZH"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Hangul is no longer deleted with a warning
        segs = clean_text("안녕하세요. 사과 3개 주세요!", "AUTO")
    assert [s.language for s in segs] == ["KO"] and "세개" in segs[0].norm_text
    segs = clean_text("[KO]감사합니다[KO][ZH]谢谢[ZH]", "MIX")
    assert [s.language for s in segs] == ["KO", "ZH"]
    segs = clean_text("<ko>좋아요<en>good", "MIX")
    assert [s.language for s in segs] == ["KO", "EN"]
    # Latin words inside Korean text are read in English, Hangul inside Chinese in Korean
    assert [s.language for s in clean_text("저는 Python을 좋아해요", "KO")] == ["KO", "EN", "KO"]
    assert [s.language for s in clean_text("我喜欢김치", "ZH")] == ["ZH", "KO"]


def test_training_line_in_korean():
    seg = clean_single("오늘은 날씨가 좋아요.", "KO")
    line = seg.to_line("wavs/a.wav", "spk")
    assert line.split("|")[2] == "KO"
    with pytest.warns(Warning, match="cannot read"):
        assert clean_single("좋아요 ☺", "KO").norm_text == "좋아요"
