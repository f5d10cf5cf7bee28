"""Korean g2p: Hangul syllables -> jamo phones, with the standard pronunciation rules (표준 발음법).

Syllables are split into onset / vowel / coda with the `jamo` library; the phones are the conjoining
jamo themselves (onsets U+1100.., vowels U+1161.., the 7 coda sounds U+11A8..), listed in
`vits.symbols.KO_SYMBOLS`. The silent onset ㅇ has no phone. Within a word (a space-separated eojeol)
these rules apply, in this order:

  * ㅎ: coda ㅎ before ㄱ/ㄷ/ㅈ aspirates them (좋다 → 조타), before ㅅ tenses it (좋소 → 조쏘), before ㄴ
    becomes ㄴ (놓는 → 논는), before a vowel is dropped (좋아 → 조아, 싫어 → 시러); onset ㅎ after coda
    ㄱ/ㄷ/ㅂ/ㅈ aspirates (축하 → 추카, 입학 → 이팍) — 격음화 and ㅎ 탈락.
  * palatalisation: coda ㄷ/ㅌ before 이 → ㅈ/ㅊ (굳이 → 구지, 같이 → 가치) — 구개음화.
  * liaison: a coda moves onto a following silent onset; of a cluster the second consonant moves
    (값이 → 갑시, 앉아 → 안자, 있어 → 이써) — 연음.
  * coda neutralisation to ㄱ ㄴ ㄷ ㄹ ㅁ ㅂ ㅇ (밖 → 박, 옷 → 옫, 닭 → 닥, 밟 → 밥).
  * tensing: ㄱ/ㄷ/ㅂ codas tense a following ㄱ/ㄷ/ㅂ/ㅅ/ㅈ (학교 → 학꾜, 국밥 → 국빱) — 경음화.
  * nasalisation: ㄱ/ㄷ/ㅂ before ㄴ/ㅁ → ㅇ/ㄴ/ㅁ (국물 → 궁물, 합니다 → 함니다); ㄹ after ㅁ/ㅇ → ㄴ
    (심리 → 심니), after ㄱ/ㅂ → ㄴ with the coda nasalised (국립 →궁닙) — 비음화.
  * lateralisation: ㄴ+ㄹ and ㄹ+ㄴ → ㄹ+ㄹ (신라 → 실라, 설날 → 설랄) — 유음화.
  * ㅢ after a consonant onset is read ㅣ (희망 → 히망, 띄어 → 띠어); 의 itself stays (the standard allows
    주의 [주의/주이] and the particle 우리의 [우리의/우리에]; we keep the spelled form).

Not modelled (they need a dictionary or morphology): ㄴ-insertion (솜이불 → 솜니불), tensing after
adnominal -ㄹ and in compounds (갈 곳 → 갈 꼿, 물고기 → 물꼬기), and exceptions such as 맛있다.
Tones: Korean has none; every phone gets tone 0 (the one Korean tone id, `vits.symbols`).
"""

from __future__ import annotations

from jamo import h2j

from vits.symbols import PUNCTUATION

# onset/coda letters as compatibility names (ㄱ...) for the rules; converted to conjoining jamo at the end
_ONSETS = "ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ"
_VOWELS = "ㅏㅐㅑㅒㅓㅔㅕㅖㅗㅘㅙㅚㅛㅜㅝㅞㅟㅠㅡㅢㅣ"
_CODAS = ["", "ㄱ", "ㄲ", "ㄳ", "ㄴ", "ㄵ", "ㄶ", "ㄷ", "ㄹ", "ㄺ", "ㄻ", "ㄼ", "ㄽ", "ㄾ", "ㄿ", "ㅀ", "ㅁ", "ㅂ",
          "ㅄ", "ㅅ", "ㅆ", "ㅇ", "ㅈ", "ㅊ", "ㅋ", "ㅌ", "ㅍ", "ㅎ"]
_ONSET_JAMO = {c: chr(0x1100 + i) for i, c in enumerate(_ONSETS)}
_VOWEL_JAMO = {c: chr(0x1161 + i) for i, c in enumerate(_VOWELS)}
_CODA_JAMO = {"ㄱ": "\u11a8", "ㄴ": "\u11ab", "ㄷ": "\u11ae", "ㄹ": "\u11af", "ㅁ": "\u11b7", "ㅂ": "\u11b8",
              "ㅇ": "\u11bc"}
_FROM_ONSET_JAMO = {v: k for k, v in _ONSET_JAMO.items()}
_FROM_VOWEL_JAMO = {v: k for k, v in _VOWEL_JAMO.items()}
_FROM_CODA_JAMO = {chr(0x11A7 + i): c for i, c in enumerate(_CODAS) if c}

# cluster -> (what stays, what moves on liaison)
_CLUSTERS = {"ㄳ": ("ㄱ", "ㅅ"), "ㄵ": ("ㄴ", "ㅈ"), "ㄶ": ("ㄴ", "ㅎ"), "ㄺ": ("ㄹ", "ㄱ"), "ㄻ": ("ㄹ", "ㅁ"),
             "ㄼ": ("ㄹ", "ㅂ"), "ㄽ": ("ㄹ", "ㅅ"), "ㄾ": ("ㄹ", "ㅌ"), "ㄿ": ("ㄹ", "ㅍ"), "ㅀ": ("ㄹ", "ㅎ"),
             "ㅄ": ("ㅂ", "ㅅ")}
# the sound a coda keeps before a consonant or at the end of a word
_NEUTRAL = {"ㄱ": "ㄱ", "ㄲ": "ㄱ", "ㅋ": "ㄱ", "ㄳ": "ㄱ", "ㄺ": "ㄱ", "ㄴ": "ㄴ", "ㄵ": "ㄴ", "ㄶ": "ㄴ",
            "ㄷ": "ㄷ", "ㅅ": "ㄷ", "ㅆ": "ㄷ", "ㅈ": "ㄷ", "ㅊ": "ㄷ", "ㅌ": "ㄷ", "ㅎ": "ㄷ", "ㄹ": "ㄹ",
            "ㄼ": "ㄹ", "ㄽ": "ㄹ", "ㄾ": "ㄹ", "ㅀ": "ㄹ", "ㅁ": "ㅁ", "ㄻ": "ㅁ", "ㅂ": "ㅂ", "ㅍ": "ㅂ",
            "ㅄ": "ㅂ", "ㄿ": "ㅂ", "ㅇ": "ㅇ"}
_ASPIRATE = {"ㄱ": "ㅋ", "ㄷ": "ㅌ", "ㅈ": "ㅊ", "ㅂ": "ㅍ"}
_TENSE = {"ㄱ": "ㄲ", "ㄷ": "ㄸ", "ㅂ": "ㅃ", "ㅅ": "ㅆ", "ㅈ": "ㅉ"}
_NASAL = {"ㄱ": "ㅇ", "ㄷ": "ㄴ", "ㅂ": "ㅁ"}
# codas that aspirate a following onset ㅎ (as their neutral sound: 축하, 맏형, 입학, 꽂히다 → ㄷ → ㅌ... ㅈ → ㅊ)
_ASPIRATING_CODAS = {"ㄱ": "ㅋ", "ㄲ": "ㅋ", "ㄺ": "ㅋ", "ㄷ": "ㅌ", "ㅅ": "ㅌ", "ㅈ": "ㅊ", "ㅊ": "ㅊ", "ㅂ": "ㅍ",
                     "ㄼ": "ㅍ"}


def is_hangul_syllable(c: str) -> bool:
    return "\uac00" <= c <= "\ud7a3"


def _split(syllable: str) -> list[str]:
    """[onset, vowel, coda] as compatibility letters ("" for no coda)."""
    j = h2j(syllable)
    return [_FROM_ONSET_JAMO[j[0]], _FROM_VOWEL_JAMO[j[1]], _FROM_CODA_JAMO[j[2]] if len(j) > 2 else ""]


def _h_rules(sy: list[list[str]]) -> None:
    for a, b in zip(sy, sy[1:]):
        coda, onset = a[2], b[0]
        if coda in ("ㅎ", "ㄶ", "ㅀ"):
            rest = _CLUSTERS[coda][0] if coda != "ㅎ" else ""
            if onset in ("ㄱ", "ㄷ", "ㅈ"):
                a[2], b[0] = rest, _ASPIRATE[onset]
            elif onset == "ㅅ":
                a[2], b[0] = rest, "ㅆ"
            elif onset == "ㄴ":
                a[2] = rest or "ㄴ"  # 놓는 → 논는; 않네 → 안네; 싫네 → 실네 (→ 실레 below)
            elif onset == "ㅇ":
                a[2] = rest  # 좋아 → 조아; 않아 → 안아 (→ 아나 by liaison)
        elif onset == "ㅎ" and coda in _ASPIRATING_CODAS:
            if coda in _CLUSTERS:  # 밝히다 → 발키다
                a[2], b[0] = _CLUSTERS[coda][0], _ASPIRATING_CODAS[coda]
            else:
                a[2], b[0] = "", _ASPIRATING_CODAS[coda]


def _liaison(sy: list[list[str]]) -> None:
    for a, b in zip(sy, sy[1:]):
        coda = a[2]
        if b[0] != "ㅇ" or not coda or coda == "ㅇ":
            continue
        if b[1] == "ㅣ" and coda in ("ㄷ", "ㅌ", "ㄾ"):  # 구개음화: 굳이 → 구지, 같이 → 가치, 핥이다 → 할치다
            a[2], b[0] = ("ㄹ", "ㅊ") if coda == "ㄾ" else ("", "ㅈ" if coda == "ㄷ" else "ㅊ")
        elif coda in _CLUSTERS:
            stay, move = _CLUSTERS[coda]
            a[2], b[0] = stay, ("ㅆ" if move == "ㅅ" else move)  # 값이 → 갑씨, 넋이 → 넉씨
        else:
            a[2], b[0] = "", coda


def _neutralise(sy: list[list[str]]) -> None:
    for i, s in enumerate(sy):
        coda = s[2]
        if not coda:
            continue
        nxt = sy[i + 1][0] if i + 1 < len(sy) else ""
        if coda == "ㄺ" and nxt == "ㄱ":
            s[2], sy[i + 1][0] = "ㄹ", "ㄲ"  # 맑게 → 말께 (a verb stem's ㄺ before ㄱ)
        elif coda == "ㄼ" and s[0] == "ㅂ" and s[1] == "ㅏ":
            s[2] = "ㅂ"  # 밟다 → 밥따
        else:
            s[2] = _NEUTRAL[coda]


def _assimilate(sy: list[list[str]]) -> None:
    for a, b in zip(sy, sy[1:]):
        coda, onset = a[2], b[0]
        if coda in ("ㄱ", "ㄷ", "ㅂ") and onset in _TENSE:
            b[0] = _TENSE[onset]
        elif coda in ("ㄱ", "ㄷ", "ㅂ") and onset in ("ㄴ", "ㅁ"):
            a[2] = _NASAL[coda]
        elif onset == "ㄹ" and coda in ("ㅁ", "ㅇ"):
            b[0] = "ㄴ"
        elif onset == "ㄹ" and coda in ("ㄱ", "ㅂ"):
            a[2], b[0] = _NASAL[coda], "ㄴ"
        elif (coda, onset) in (("ㄴ", "ㄹ"), ("ㄹ", "ㄴ")):
            a[2], b[0] = "ㄹ", "ㄹ"


def _vowels(sy: list[list[str]]) -> None:
    for s in sy:
        if s[1] == "ㅢ" and s[0] != "ㅇ":
            s[1] = "ㅣ"


def word_phones(word: str) -> list[list[str]]:
    """Phones per syllable of one Hangul word (jamo symbols of `vits.symbols.KO_SYMBOLS`)."""
    sy = [_split(c) for c in word]
    _h_rules(sy)
    _liaison(sy)
    _neutralise(sy)
    _assimilate(sy)
    _vowels(sy)
    out = []
    for onset, vowel, coda in sy:
        phones = [] if onset == "ㅇ" else [_ONSET_JAMO[onset]]
        phones.append(_VOWEL_JAMO[vowel])
        if coda:
            phones.append(_CODA_JAMO[coda])
        out.append(phones)
    return out


def phones_to_hangul(phones: list[str]) -> str:
    """Rebuild Hangul syllables from Korean phones (others dropped): the pronunciation, e.g. "학꾜"."""
    from jamo import j2h

    out: list[list[str]] = []
    for p in phones:
        if p in _FROM_ONSET_JAMO:
            out.append([p])
        elif p in _FROM_VOWEL_JAMO:
            if not out or len(out[-1]) != 1 or out[-1][0] not in _FROM_ONSET_JAMO:
                out.append([_ONSET_JAMO["ㅇ"]])
            out[-1].append(p)
        elif p in _CODA_JAMO.values() and out and len(out[-1]) == 2:
            out[-1].append(p)
    return "".join(j2h(*s) for s in out if len(s) >= 2)


def pronounce(text: str) -> str:
    """The text as it is pronounced, rebuilt as Hangul syllables per word (좋다 → 조타); non-Hangul words stay."""
    return " ".join(phones_to_hangul([p for s in word_phones(w) for p in s])
                    if w and all(is_hangul_syllable(c) for c in w) else w for w in text.split(" "))


def g2p(norm_text: str) -> tuple[list[str], list[int], list[int], list[str]]:
    """Phones, tones, word2ph and unknown characters of normalised Korean text.

    word2ph counts phones per character of norm_text (spaces excluded, as the BERT reads one token per
    character) plus [CLS]/[SEP], each of which covers one boundary phone "_".
    """
    phones, word2ph, unknown = ["_"], [1], []
    word = ""

    def flush():
        for syllable in word_phones(word) if word else ():
            phones.extend(syllable)
            word2ph.append(len(syllable))

    for c in norm_text + " ":
        if is_hangul_syllable(c):
            word += c
            continue
        flush()
        word = ""
        if c in PUNCTUATION:
            phones.append(c)
            word2ph.append(1)
        elif not c.isspace():
            phones.append("UNK")
            word2ph.append(1)
            unknown.append(c)
    phones.append("_")
    word2ph.append(1)
    return phones, [0] * len(phones), word2ph, unknown
