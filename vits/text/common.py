"""Pieces shared by the language frontends: the Cleaned record, distribute_phone, warnings."""

from __future__ import annotations

from dataclasses import dataclass, field


class TextWarning(UserWarning):
    """Something in the input was dropped or guessed (removed characters, nothing to read)."""


@dataclass
class Cleaned:
    """One single-language segment ready for the model (spec §7.4, before blanks).

    language: "ZH", "JP" or "EN". norm_text: the normalised text the BERT model reads.
    phones/tones: symbol strings and raw per-language tones, with the boundary "_"/0 at both ends.
    word2ph: phones per BERT token incl. [CLS]/[SEP]; sum(word2ph) == len(phones).
    word_phones: EN only, phones per word of `en.split_words(norm_text)` (lets BertFeatures re-align
    word2ph to any English tokenizer). unknown: characters/words read as UNK or guessed.
    """

    language: str
    norm_text: str
    phones: list[str]
    tones: list[int]
    word2ph: list[int]
    word_phones: list[int] | None = None
    unknown: list[str] = field(default_factory=list)

    def to_line(self, wav_path: str, speaker: str) -> str:
        """The 7-field train.list line `wav|speaker|LANG|norm_text|phones|tones|word2ph` (spec §7.4)."""
        return "|".join([wav_path, speaker, self.language, self.norm_text, " ".join(self.phones),
                         " ".join(str(t) for t in self.tones), " ".join(str(w) for w in self.word2ph)])

    def readable(self) -> bool:
        """True if at least one phone is a sound (not a boundary, punctuation or UNK)."""
        from vits.symbols import PUNCTUATION_SYMBOLS

        return any(p != "_" and p not in PUNCTUATION_SYMBOLS for p in self.phones)


def distribute_phone(n_phone: int, n_word: int) -> list[int]:
    """Split n_phone phones over n_word tokens as evenly as possible, earlier tokens first (spec §7.5)."""
    if n_word <= 0:
        return []
    counts = [0] * n_word
    for _ in range(n_phone):
        counts[counts.index(min(counts))] += 1
    return counts
