"""English frontend: CMU stress -> tones, OOV words offline, contractions, homographs, numbers, word2ph."""

from __future__ import annotations

import pytest

from vits.symbols import EN_SYMBOLS, PUNCTUATION
from vits.text import clean_text
from vits.text.en import neural
from vits.text.en.g2p import align_word2ph, g2p, split_words, token_offsets
from vits.text.en.normalizer import normalize


def _phones(text):
    (seg,) = clean_text(text, "EN")
    return list(zip(seg.phones[1:-1], seg.tones[1:-1]))


def test_cmu_stress_becomes_tones():
    # HH AH0 L OW1: unstressed vowel 0 -> 1, primary 1 -> 2, consonants 3
    assert _phones("hello") == [("hh", 3), ("ah", 1), ("l", 3), ("ow", 2)]
    # secondary stress 2 -> 3 and English v uses the upper-case symbol
    assert ("V", 3) in _phones("very")
    assert _phones("information")[0] == ("ih", 3)  # IH2: secondary stress


def test_oov_words_use_the_offline_neural_model():
    assert neural.available()
    phones = _phones("zorblaxian")
    assert phones and all(p in EN_SYMBOLS for p, _ in phones)
    assert neural.predict("activationist") == ("AE2", "K", "T", "IH0", "V", "EY1", "SH", "AH0", "N", "IH0", "S", "T")


def test_contractions_and_possessives():
    assert [p for p, _ in _phones("don't")] == ["d", "ow", "n", "t"]
    assert [p for p, _ in _phones("Zorblax's")][-1] == "z"  # OOV stem + 's
    assert [p for p, _ in _phones("Mike's")][-1] == "s"  # CMU-less possessive after a voiceless stop


def test_homographs_follow_context():
    (seg,) = clean_text("I refuse to collect the refuse.", "EN")
    words = split_words(seg.norm_text)
    assert [w for w, _, _ in words][:2] == ["I", "refuse"]
    starts = [i for i, (w, _, _) in enumerate(words) if w == "refuse"]
    spans, pos = [], 1
    for n in seg.word_phones:
        spans.append(seg.phones[pos:pos + n])
        pos += n
    tones, pos = [], 1
    for n in seg.word_phones:
        tones.append(seg.tones[pos:pos + n])
        pos += n
    # verb rih-FYUWZ (R IH0 F Y UW1 Z), then noun REH-fyuwz (R EH1 F Y UW2 Z)
    assert spans[starts[0]] == ["r", "ih", "f", "y", "uw", "z"] and tones[starts[0]] == [3, 1, 3, 3, 2, 3]
    assert spans[starts[1]] == ["r", "eh", "f", "y", "uw", "z"] and tones[starts[1]] == [3, 2, 3, 3, 3, 3]


def test_acronyms_are_spelled():
    assert [p for p, _ in _phones("QXZ")] == ["k", "y", "uw", "eh", "k", "s", "z", "iy"]


@pytest.mark.parametrize("text, expected", [
    ("I have 3 apples", "I have three apples"),
    ("pi is 3.14", "pi is three point one four"),
    ("it is -5 outside", "it is minus five outside"),
    ("50% off", "fifty percent off"),
    ("3/4 of them", "three quarters of them"),
    ("born on 2023-12-26", "born on December twenty sixth, twenty twenty three"),
    ("at 3:05 pm", "at three oh five p m"),
    ("costs $5.50", "costs five dollars and fifty cents"),
    ("call 555-123-4567", "call five five five, one two three, four five six seven"),
    ("the 21st century", "the twenty first century"),
    ("weighs 5kg", "weighs five kilograms"),
    ("ＡＢＣ１２", "ABC twelve"),
    ("wait...", "wait…"),
    ("“quoted”", "'quoted'"),
    ("Mr. Smith & co", "Mister Smith and co"),
    ("in 1999", "in nineteen ninety nine"),
    ("1,000,000 people", "one million people"),
])
def test_normalisation_rules(text, expected):
    assert normalize(text)[0] == expected


def test_word2ph_aligned_to_a_subword_tokenizer(tmp_path):
    from vits.text.testing import _english_tokenizer

    tok = _english_tokenizer(tmp_path)
    text = normalize("Hello, unbelievable world! I don't know.")[0]
    phones, tones, word2ph, word_phones, _ = g2p(text, tokenizer=tok)
    n_tokens = len(tok(text)["input_ids"])
    assert len(word2ph) == n_tokens
    assert sum(word2ph) == len(phones) == sum(word_phones) + 2
    # without a tokenizer: one entry per word, and re-aligning gives the same counts
    _, _, per_word, _, _ = g2p(text)
    assert len(per_word) == len(split_words(text)) + 2
    assert [1] + align_word2ph(split_words(text), per_word[1:-1], token_offsets(tok, text), text) + [1] == word2ph


def test_invariants_on_awkward_text():
    # text -> number of segments (0: nothing to read; the loop below must not pass by checking nothing)
    cases = {"'": 0, "a": 1, "I": 1, "x-ray": 1, "rock'n'roll": 1, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa": 1, "Ω": 0,
             "naïve café": 1, "'''": 0}
    for text, count in cases.items():
        segs = clean_text(text, "EN")
        assert len(segs) == count, text
        for seg in segs:
            assert sum(seg.word2ph) == len(seg.phones)
            assert len(seg.tones) == len(seg.phones)
            assert set(seg.phones) <= set(EN_SYMBOLS) | set(PUNCTUATION) | {"_", "UNK"}
            assert set(seg.tones) <= {0, 1, 2, 3}
