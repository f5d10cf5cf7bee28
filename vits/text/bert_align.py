"""Token ids and word2ph alignment for the BERT features, in pure Python (no torch, no transformers).

Both feature readers use these: `vits.text.bert.BertFeatures` (torch + transformers) and
`vits.text.bert_onnx.OnnxBertFeatures` (onnxruntime + the `tokenizers` package), so their ids and their
phone-to-token alignment are the same by construction (spec §7.6-7.8).
"""

from __future__ import annotations

from collections.abc import Callable

from vits.errors import KoeError
from vits.text.common import Cleaned


def blank_word2ph(word2ph: list[int]) -> list[int]:
    """word2ph after add_blank (spec §7.6): every count doubled, the first token covers one more."""
    out = [2 * w for w in word2ph]
    if out:
        out[0] += 1
    return out


def char_token_ids(norm_text: str, piece_id: Callable[[str], int], cls_id: int, sep_id: int) -> list[int]:
    """ZH/JP (any per-character language): [CLS], one id per non-space character, [SEP].

    `piece_id(char)` is the id of the first piece the tokenizer makes of that character (its unknown id
    when it makes none), as the reference assumes one token per character.
    """
    return [cls_id] + [piece_id(char) for char in norm_text if not char.isspace()] + [sep_id]


def align_word2ph(cleaned: Cleaned, n_tokens: int, en_offsets: Callable[[str], list[tuple[int, int]]]) -> list[int]:
    """word2ph matching a tokenizer that gives `n_tokens` ids (before blanks); EN per-word lists are re-aligned.

    `en_offsets(text)` gives the character span of each English token (special tokens excluded).
    Raises KoeError when the counts cannot be matched (the text stage used another tokenizer).
    """
    word2ph = list(cleaned.word2ph)
    if sum(word2ph) != len(cleaned.phones):
        raise KoeError(f"word2ph sums to {sum(word2ph)} but there are {len(cleaned.phones)} phones",
                       where=repr(cleaned.norm_text[:40]), fix="re-run the text stage (pipeline.text)")
    if len(word2ph) == n_tokens:
        return word2ph
    if cleaned.language == "EN":
        from vits.text.en.g2p import align_word2ph as align_words
        from vits.text.en.g2p import split_words

        words = split_words(cleaned.norm_text)
        word_phones = cleaned.word_phones
        if word_phones is None and len(word2ph) == len(words) + 2:
            word_phones = word2ph[1:-1]
        if word_phones is not None and len(word_phones) == len(words):
            offsets = en_offsets(cleaned.norm_text)
            if len(offsets) + 2 == n_tokens:
                return [1] + align_words(words, word_phones, offsets, cleaned.norm_text) + [1]
    raise KoeError(
        f"word2ph has {len(word2ph)} entries but the {cleaned.language} tokenizer gives {n_tokens} tokens",
        where=repr(cleaned.norm_text[:40]),
        fix="re-run the text stage (python -m pipeline.text) with the same BERT models")


def windows(ids: list[list[int]], max_tokens: int) -> list[tuple[int, list[int]]]:
    """(utterance, window ids) for each id list: whole when it fits the position table, else in windows of
    `max_tokens`, each with its own [CLS]/[SEP] (joined back by `join_windows`)."""
    out: list[tuple[int, list[int]]] = []
    step = max_tokens - 2
    for u, seq in enumerate(ids):
        if len(seq) <= max_tokens:
            out.append((u, seq))
        else:
            body = seq[1:-1]
            for start in range(0, len(body), step):
                out.append((u, [seq[0]] + body[start:start + step] + [seq[-1]]))
    return out


def batches(lengths: list[int], max_batch_tokens: int) -> list[list[int]]:
    """Indices grouped shortest first so that no padded batch exceeds `max_batch_tokens` (one item always fits)."""
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for k in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        size = lengths[k]
        if current and max(longest, size) * (len(current) + 1) > max_batch_tokens:
            groups.append(current)
            current, longest = [], 0
        current.append(k)
        longest = max(longest, size)
    if current:
        groups.append(current)
    return groups


def join_windows(n_utterances: int, spans: list[tuple[int, list[int]]], results: list, concat) -> list:
    """Per utterance, its window results [n, hidden] joined: the first [CLS] row, every window's body, the last
    [SEP] row. `concat(list of arrays)` joins along rows (torch.cat or numpy.concatenate)."""
    per_utt: list[list] = [[] for _ in range(n_utterances)]
    for (u, _), r in zip(spans, results):
        per_utt[u].append(r)
    return [parts[0] if len(parts) == 1 else concat([parts[0][:1]] + [p[1:-1] for p in parts] + [parts[-1][-1:]])
            for parts in per_utt]
