"""The text frontend on the hand-written reading corpus (tests/data/frontend_corpus, notation in vits/text/corpus.py).

Every sentence is its own case: a wrong reading fails with the sentence, the expected and the got reading.
Per category, accuracy must not drop below the floor measured when the rules were written
(bench/frontend_accuracy.py prints the figures; KNOWN_WRONG lists the cases still read wrong).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vits.text.corpus import load_corpus, plain, score

CORPUS = Path(__file__).resolve().parent / "data" / "frontend_corpus"
FILES = sorted(CORPUS.glob("*.tsv")) + sorted((CORPUS / "heldout").glob("*.tsv"))
CASES = [(path.relative_to(CORPUS).as_posix(), case) for path in FILES for case in load_corpus(path)]

# "file:line" of cases the frontend still reads wrong (none today); they count against the floors below
KNOWN_WRONG: set[str] = set()
# fraction of sentences exactly right per corpus file (measured: every file 100 %)
FLOORS = {path.relative_to(CORPUS).as_posix(): 1.0 for path in FILES}


def test_corpus_is_large_enough():
    assert len(FILES) >= 16 and len(CASES) >= 380, (len(FILES), len(CASES))


@pytest.mark.parametrize("name, case", CASES, ids=[f"{name}:{c.line}" for name, c in CASES])
def test_reading(name, case):
    (result,) = score([case])
    where = f"{CORPUS.name}/{name}:{case.line}"
    got = f"{plain(result.got)}  (phones: {result.got})" if case.file.startswith("en") else result.got
    if f"{name}:{case.line}" in KNOWN_WRONG:
        pytest.xfail(f"known wrong: {where}")
    assert result.right, f"{where}: {case.text!r}\n  expected {case.expected}\n  got      {got}"


def test_accuracy_per_file_not_below_floor():
    for path in FILES:
        results = score(load_corpus(path))
        accuracy = sum(r.right for r in results) / len(results)
        key = path.relative_to(CORPUS).as_posix()
        wrong = [f"{r.case.line}: {r.case.text} -> {r.got}" for r in results if not r.right]
        assert accuracy >= FLOORS[key], f"{key}: {accuracy:.1%} < {FLOORS[key]:.1%}; wrong:\n" + "\n".join(wrong)


@pytest.mark.parametrize("word", ["Floccinaucinihilipilificationism", "Hippopotomonstrosesquippedaliophobia",
                                  "Pneumonoultramicroscopicsilicovolcanoconiosis"])
def test_long_rare_words_are_not_truncated(word):
    from vits.text import clean_text

    (seg,) = clean_text(word, "EN")
    sounds = len(seg.phones) - 2
    # English spelling runs about one phone per letter; the neural model alone gave ~0.5 (17 for 36 letters)
    assert sounds >= 0.75 * len(word), f"{word}: {sounds} phones for {len(word)} letters: {seg.phones}"
