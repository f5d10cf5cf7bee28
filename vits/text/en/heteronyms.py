"""English words whose pronunciation depends on the sentence: heteronyms and acronyms.

There is no POS tagger offline (nltk's needs a download), so each heteronym has a small rule on the
words around it, written for the readings in tests/data/frontend_corpus/en_heteronyms.tsv. g2p_en's
homographs.en (via `neural.homograph`) still decides the words not listed here.
"""

from __future__ import annotations

from dataclasses import dataclass

_MODALS = set("to will would can could shall should may might must do does did don't doesn't didn't won't "
              "can't cannot please let's not never 'll".split())
_SUBJECTS = set("i we you they he she it who which that people".split())
_DETERMINERS = set("the a an this that these those my your his her our their its of no some any each every "
                   "what's".split())
_PAST_HINTS = set("yesterday ago last already once then earlier previously".split())
_OBJECT_START = set("the a an it them this that these those my your his her our their its up down off out "
                    "around apart open through".split())


@dataclass
class Context:
    """The words around a word: lower-case, None at a sentence edge; `words` is the whole sentence."""

    previous: str | None
    next: str | None
    initial: bool
    words: list[str]
    index: int  # of this word in `words`
    original: str  # the word as written (case matters for Polish)
    shouting: bool = False  # most words of the sentence are in capitals: no acronym spelling


def _verb_position(c: Context) -> bool:
    return c.previous in _MODALS or c.previous in _SUBJECTS


def _read(c: Context) -> str:
    if c.previous in ("have", "has", "had", "having", "was", "were", "been", "be", "is", "are", "i've", "we've",
                      "you've", "they've", "already", "just"):
        return "R EH1 D"
    if c.previous in _MODALS or c.previous in ("i'll", "we'll", "you'll", "to", "and", "or", "likes", "like",
                                                "love", "loves", "want", "wants"):
        return "R IY1 D"
    if c.previous in _SUBJECTS and any(w in _PAST_HINTS for w in c.words):
        return "R EH1 D"
    return "R IY1 D"


def _lead(c: Context) -> str:
    metal_next = {"poisoning", "pipe", "pipes", "paint", "pencil", "pencils", "weight", "weights", "levels",
                  "content", "exposure", "shot", "acetate", "balloon", "free"}
    if c.next in metal_next or c.previous in ("of", "with", "unleaded") or (c.initial and c.next in ("is", "was")):
        return "L EH1 D"
    return "L IY1 D"


def _live(c: Context) -> str:
    adjective_next = {"concert", "concerts", "music", "show", "shows", "broadcast", "performance", "wire", "stream",
                      "streams", "audience", "recording", "coverage", "event", "events", "animals", "bait", "tv",
                      "album", "version", "feed", "action", "ammunition", "band", "chat", "update", "updates"}
    if c.next in adjective_next or c.previous in ("a", "an", "the", "go", "goes", "went", "going", "gone"):
        return "L AY1 V"
    if c.next is None and c.previous in ("broadcast", "streamed", "aired", "performed", "played", "go", "goes",
                                         "went", "going", "is", "are", "was", "were", "be", "shown"):
        return "L AY1 V"
    return "L IH1 V"


def _wind(c: Context) -> str:
    if _verb_position(c) and c.previous not in ("the", "a") or (c.initial and c.next in _OBJECT_START) \
            or c.next in ("up", "down", "around"):
        return "W AY1 N D"
    return "W IH1 N D"


def _wound(c: Context) -> str:
    if c.previous in _DETERMINERS or c.previous in ("gunshot", "stab", "knife", "open", "deep", "fatal", "head"):
        return "W UW1 N D"
    if c.previous in _SUBJECTS or c.previous in ("had", "has", "have", "was", "were", "tightly") \
            or c.next in ("up", "down", "around", "through", "its", "the", "his", "her", "their", "it"):
        return "W AW1 N D"
    return "W UW1 N D"


def _does(c: Context) -> str:
    if c.previous in ("the", "these", "those", "many", "several", "some", "two", "three", "four", "five", "young"):
        return "D OW1 Z"
    return "D AH1 Z"


def _bass(c: Context) -> str:
    fish = {"caught", "catch", "catching", "fish", "fishing", "sea", "striped", "largemouth", "smallmouth", "grilled",
            "fried", "lake"}
    window = c.words[max(0, c.index - 3):c.index + 3]
    if any(w in fish for w in window) and c.next not in ("guitar", "player", "line", "drum", "clef", "solo"):
        return "B AE1 S"
    return "B EY1 S"


def _tears(c: Context) -> str:
    if c.previous in _DETERMINERS or c.previous in ("in", "into", "with", "to", "of", "no", "her", "his", "crocodile"):
        return "T IH1 R Z"
    if c.previous in _SUBJECTS or (not c.initial and c.next in _OBJECT_START):
        return "T EH1 R Z"
    return "T IH1 R Z"


def _object(c: Context) -> str:
    if c.previous in _DETERMINERS or c.previous in ("an", "direct", "indirect", "foreign", "flying"):
        return "AA1 B JH EH0 K T"
    if _verb_position(c) or c.next in ("to", "that"):
        return "AH0 B JH EH1 K T"
    return "AA1 B JH EH0 K T"


def _polish(c: Context) -> str:
    if c.original[:1].isupper() and not c.initial:
        return "P OW1 L IH0 SH"  # the language, the nationality
    if c.initial and c.next in _OBJECT_START or _verb_position(c) or c.previous in _DETERMINERS | {"nail", "shoe"}:
        return "P AA1 L IH0 SH"
    return "P OW1 L IH0 SH" if c.original[:1].isupper() else "P AA1 L IH0 SH"


def _dove(c: Context) -> str:
    if c.previous in _SUBJECTS or c.next in ("into", "in", "under", "off", "for", "down", "deep", "headfirst",
                                             "through", "toward", "towards", "onto", "after", "behind", "out"):
        return "D OW1 V"
    return "D AH1 V"


def _close(c: Context) -> str:
    if c.next in ("to", "by", "friend", "friends", "call", "enough", "attention", "relative", "relatives", "contact") \
            or c.previous in ("very", "so", "too", "pretty", "quite", "really", "as", "is", "are", "was", "were", "be",
                              "get", "got", "stay", "up"):
        return "K L OW1 S"
    if _verb_position(c) or c.initial or c.next in _OBJECT_START:
        return "K L OW1 Z"
    return "K L OW1 S"


def _use(c: Context) -> str:
    if c.previous in _DETERMINERS or c.previous in ("in", "for", "into", "out", "much", "good", "common", "daily"):
        return "Y UW1 S"
    return "Y UW1 Z"


def _letter_a(c: Context) -> str:
    return "EY1" if c.next == "m" else "AH0"  # "nine a m" (a.m.) names the letter


_RULES = {"a": _letter_a, "read": _read, "lead": _lead, "live": _live, "wind": _wind, "wound": _wound, "does": _does, "bass": _bass,
          "tears": _tears, "object": _object, "polish": _polish, "dove": _dove, "close": _close, "use": _use}

# Words the CMU dictionary lacks or spells by the letters, read as people say them.
LEXICON = {
    "wifi": "W AY1 F AY2", "hifi": "HH AY1 F AY2", "scifi": "S AY1 F AY2", "ebook": "IY1 B UH2 K",
    "tbsp": "T EY1 B AH0 L S P UW2 N", "tsp": "T IY1 S P UW2 N",
}

# Upper-case words read as words, not spelled (NASA, NATO) ...
ACRONYM_WORDS = set("nasa nato unesco unicef opec fifa laser radar scuba covid aids sars nasdaq ikea lego gif jpeg "
                    "pin sim asap yolo wasp awol navy".split())
# ... and short common words that stay words when written in capitals for emphasis ("say NO")
EMPHASIS_WORDS = set("no ok yes oh go so do we me he be my up on in at to of or if an as by is hi and the you not "
                     "but for are was can get now how why who out big new old one two ten her his him its our she "
                     "all any may off own too yet let see set run top win hot own".split())


def pronunciation(word: str, c: Context) -> list[str] | None:
    """ARPAbet of `word` decided by its sentence, or None if the word does not depend on context."""
    rule = _RULES.get(word.lower())
    return rule(c).split() if rule else None
