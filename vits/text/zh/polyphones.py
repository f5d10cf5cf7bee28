"""Readings pypinyin's word dictionary gets wrong, fixed from the sentence around the character.

Two passes over one sentence, both measured on tests/data/frontend_corpus (bench/frontend_accuracy.py):
  * `fix_polyphones`, before tone sandhi: phrase readings (温差 wen1 cha1), then rules on jieba's words
    and part-of-speech tags (得 dei3/de2, 地 de5, 长 chang2, 为 wei2, 数 shu3, 只 zhi1, 落 la4).
  * `fix_number_yi`, after tone sandhi: 一 inside numbers, years, dates and scores keeps tone 1
    (一九九七, 十一点, 一百零一, 一月一号, 一楼, 一比零) while 一千, 一万, 一个 keep their sandhi.
"""

from __future__ import annotations

import re

from vits.text.zh.opencpop import split_pinyin

# Phrases whose reading pypinyin gets wrong in common sentences: text -> TONE3 syllables per character.
PHRASES = {
    "温差": "wen1 cha1", "时差": "shi2 cha1", "色差": "se4 cha1", "落差": "luo4 cha1", "偏差": "pian1 cha1",
    "不亦说乎": "bu4 yi4 yue4 hu1", "转转": "zhuan4 zhuan4", "转一转": "zhuan4 yi1 zhuan4",
    "数一数": "shu3 yi1 shu3", "数数": "shu3 shu3", "数了数": "shu3 le5 shu3",
    "行长": "hang2 zhang3", "长得": "zhang3 de5",
    "调大": "tiao2 da4", "调小": "tiao2 xiao3", "调高": "tiao2 gao1", "调低": "tiao2 di1", "调快": "tiao2 kuai4",
    "调慢": "tiao2 man4", "重来": "chong2 lai2", "重做": "chong2 zuo4", "重写": "chong2 xie3",
    "重装": "chong2 zhuang1", "重播": "chong2 bo1", "重读": "chong2 du2",
    "着实": "zhuo2 shi2", "着装": "zhuo2 zhuang1", "着想": "zhuo2 xiang3", "着重": "zhuo2 zhong4",
    "着凉": "zhao2 liang2", "着迷": "zhao2 mi2",
}
_PHRASE_RX = re.compile("|".join(sorted(map(re.escape, PHRASES), key=len, reverse=True)))
_NUMERAL = set("零〇幺一二三四五六七八九十两")
_UNIT = set("百千万亿")
# 为 after these verbs means "as / to be" (选为班长, 称为): wei2
_WEI2_AFTER = set("选评称成作视改分变定列认转译封立推奉誉划化")
_DEGREE = {"很", "太", "真", "好", "挺", "更", "最", "较", "比较", "非常", "特别", "那么", "这么", "多", "不", "又", "极"}


def _split_final(syllable: str) -> tuple[str, str]:
    parts = split_pinyin(syllable)
    if parts is None:
        raise ValueError(f"bad pinyin {syllable!r} in vits/text/zh/polyphones.py PHRASES")
    initial, final, tone = parts
    return initial, final + tone


def _set(pairs: list[tuple[str, str]], i: int, syllable: str) -> None:
    pairs[i] = _split_final(syllable)


def apply_readings(words: list[list], readings: dict[int, str]) -> None:
    """Set the readings of a polyphone model ({char index in the joined words: TONE3 syllable}) in place;
    `fix_polyphones` runs after it, so our phrases and rules still have the last word."""
    index = 0
    for _word, _pos, pairs in words:
        for j in range(len(pairs)):
            syllable = readings.get(index + j)
            if syllable and split_pinyin(syllable) is not None:
                _set(pairs, j, syllable)
        index += len(pairs)


def fix_polyphones(words: list[list]) -> None:
    """Correct readings in place; `words` is [[word, pos, pairs]] of one sentence, pairs being
    (initial, TONE3 final) per character. 得 and 着 read as verbs (dei3, de2, zhao2) get pos "v", so the
    neutral-tone rule for particles leaves them alone."""
    text = "".join(w for w, _, _ in words)
    owner: list[tuple[int, int]] = [(k, j) for k, (w, _, _) in enumerate(words) for j in range(len(w))]
    for k, (word, pos, pairs) in enumerate(words):
        prev_word, prev_pos = (words[k - 1][0], words[k - 1][1]) if k else ("", "")
        next_word, next_pos = (words[k + 1][0], words[k + 1][1]) if k + 1 < len(words) else ("", "")
        if word == "得" and pos == "ud" and prev_pos[:1] in ("r", "n", "d"):
            # 你得去 (must): dei3; 他得了第一名 (got): de2; after a verb or adjective it stays the particle
            _set(pairs, 0, "de2" if next_word.startswith("了") or next_pos[:1] == "n" else "dei3")
            words[k][1] = "v"
        elif word == "地" and pos == "uv":
            _set(pairs, 0, "de5")  # 慢慢地走: the adverbial particle
        elif word == "长" and pos == "a" and next_word[:1] not in ("着", "大", "出", "满", "高"):
            _set(pairs, 0, "chang2")  # 很长: long (zhang3 is the verb "grow": 长着, 长大)
        elif word == "还" and next_pos[:1] == "r" and (k + 2 >= len(words) or not words[k + 2][0][0].isalnum()
                                                      or words[k + 2][0] == "了" or words[k + 2][0][0] in _NUMERAL):
            _set(pairs, 0, "huan2")  # 明天还你, 还他一本书: give back (还 before a verb is hai2)
        elif word == "着" and next_word.startswith("了"):
            _set(pairs, 0, "zhao2")  # 着了凉, 着了火: catch, burn (the aspect particle takes no 了)
            words[k][1] = "v"
        elif word == "弹" and pos == "v":
            _set(pairs, 0, "tan2")  # the verb: play, flick (dan4 is the noun "bullet")
        elif word == "数" and pos == "v":
            _set(pairs, 0, "shu3")  # the verb "count"
        for j, char in enumerate(word):
            before = word[j - 1] if j else (prev_word[-1:] if prev_word else "")
            after = word[j + 1] if j + 1 < len(word) else next_word[:1]
            if char == "为" and (before in _WEI2_AFTER or (pos == "p" and (after in _NUMERAL or after == "负"))):
                _set(pairs, j, "wei2")  # 选为班长, 编号为零五七
            elif char == "只" and before in _NUMERAL | set("几每这那") and after not in "是有要能会好不在":
                _set(pairs, j, "zhi1")  # 十二只猫: the measure word
            elif char == "落" and "把" in text[:text.find(word)] and after in "在了下":
                _set(pairs, j, "la4")  # 把钥匙落在家里: left behind
            elif char == "行" and after in "字泪诗句行" and (before in _NUMERAL | set("几数")
                                                       or (before == "行" and j >= 2 and word[j - 2] in _NUMERAL)):
                _set(pairs, j, "hang2")  # 一行字, 两行泪: the measure word "row"
            elif char == "行" and before == "行" and pairs[j - 1] == ("h", "ang2"):
                _set(pairs, j, "hang2")
            elif char == "地" and ((j >= 2 and word[j - 1] == word[j - 2])
                                   or (j == 0 and len(prev_word) == 2 and prev_word[0] == prev_word[1])):
                _set(pairs, j, "de5")  # 静静地, 悄悄地: the particle after a reduplicated adverb
            elif char == "长" and ((len(word) == 1 and prev_word in _DEGREE) or (j and before in _DEGREE)):
                _set(pairs, j, "chang2")  # 很长, 多长 (jieba may have joined 很长 into one word)
    for m in _PHRASE_RX.finditer(text):  # phrases last: they win over the rules
        (k0, j0), (k1, j1) = owner[m.start()], owner[m.end() - 1]
        if k0 != k1 and (j0 != 0 or j1 != len(words[k1][0]) - 1):
            continue  # the phrase would cut a jieba word (进行/长期 is not 行长)
        for offset, syllable in enumerate(PHRASES[m.group()].split()):
            k, j = owner[m.start() + offset]
            _set(words[k][2], j, syllable)


def fix_number_yi(chars: list[str], finals: list[str]) -> None:
    """Give 一 tone 1 where it is a digit or ends a number (after sandhi); `finals` change in place."""
    for i, char in enumerate(chars):
        if char != "一" or not finals[i][-1:].isdigit():
            continue
        before = chars[i - 1] if i else ""
        after = chars[i + 1] if i + 1 < len(chars) else ""
        keep = (
            after in _NUMERAL - {"十", "两"}  # digit strings: 一九九七, 一二三
            or before in _NUMERAL  # 十一, 二十一, 零一, 万一 is lexical and yi1 anyway
            or (before in _UNIT and after not in _UNIT)  # 一百零一 ... 一百一十 (but 一万一千: yi4 qian1)
            or (after in "月号楼" and before not in _UNIT)  # 一月一号, 一楼
            or (after == "日" and before == "月")  # 一月一日
            or (after == "比" and i + 2 < len(chars) and chars[i + 2] in _NUMERAL)  # 一比零
            or (before == "比" and i >= 2 and chars[i - 2] in _NUMERAL)  # 二比一
        )
        if keep:
            finals[i] = finals[i][:-1] + "1"
    for i in range(1, len(chars) - 1):  # 两户人家: households (人家 "others" is ren2 jia5)
        if "".join(chars[i - 1:i + 2]) == "户人家" and finals[i + 1][-1:].isdigit():
            finals[i + 1] = finals[i + 1][:-1] + "1"
