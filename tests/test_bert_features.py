"""BertFeatures on tiny random BERT/DeBERTa models with the real ZH/JP tokenizers.

The tiny models have hidden size 32 (the real ones 1024); everything else follows spec §7.6-7.7.
"""

from __future__ import annotations

import json

import pytest
import torch

from vits.errors import KoeError
from vits.text import Cleaned, clean_text
from vits.text.bert import BertFeatures, blank_word2ph, download_bert_models, load_tokenizer

HIDDEN = 32


@pytest.fixture(scope="module")
def dirs(golden_dir):
    from vits.text.testing import shared_tiny_models

    torch.set_num_threads(2)
    return shared_tiny_models(str(golden_dir / "tokenizers"), hidden=HIDDEN, layers=4)


@pytest.fixture(scope="module")
def bert(dirs):
    return BertFeatures(dirs, device="cpu")


def _golden(golden_dir, name):
    cases = json.loads((golden_dir / "text" / name).read_text(encoding="utf-8"))
    lang = "ZH" if name.startswith("zh") else "JP"
    return [Cleaned(lang, c["norm_text"], c["phones"], c["tones"], c["word2ph"]) for c in cases]


def test_golden_word2ph_matches_real_tokenizers(bert, golden_dir):
    for cleaned in _golden(golden_dir, "zh_cases.json") + _golden(golden_dir, "ja_cases.json"):
        assert len(bert.token_ids(cleaned)) == len(cleaned.word2ph), cleaned.norm_text
        feats = bert.features(cleaned)
        assert feats.shape == (HIDDEN, 2 * len(cleaned.phones) + 1)
        assert feats.dtype == torch.float32


def test_layer_and_repetition_follow_the_spec(bert, dirs):
    from transformers import AutoModelForMaskedLM

    (seg,) = clean_text("大家好,我是派蒙.", "ZH")
    feats = bert.features(seg)
    full = AutoModelForMaskedLM.from_pretrained(str(dirs["ZH"])).eval()
    ids = torch.tensor([bert.token_ids(seg)])
    with torch.no_grad():
        hidden = full(input_ids=ids, output_hidden_states=True).hidden_states[-3][0]
    expected = torch.repeat_interleave(hidden, torch.tensor(blank_word2ph(seg.word2ph)), dim=0).T
    assert torch.allclose(feats, expected, atol=1e-5)
    # first token ([CLS]) covers blank, "_", blank; then each character 2*2 columns
    assert torch.equal(feats[:, 0], feats[:, 2]) and torch.equal(feats[:, 3], feats[:, 6])
    no_blank = bert.features(seg, add_blank=False)
    assert no_blank.shape == (HIDDEN, len(seg.phones))


def test_batched_equals_one_at_a_time(bert):
    texts = [("大家好,我是派蒙.", "ZH"), ("今天天气不错,我们一起去公园散步吧!", "ZH"), ("好.", "ZH"),
             ("こんにちは、世界。", "JP"), ("雨が降っているので、傘を持っていきます。", "JP"),
             ("Hello, unbelievable world!", "EN"), ("I don't know.", "EN"), ("Wow.", "EN")]
    segs = [s for text, lang in texts for s in clean_text(text, lang)]
    batched = bert.features_batch(segs)
    for seg, got in zip(segs, batched):
        single = bert.features(seg)
        assert got.shape == single.shape
        assert (got - single).abs().max().item() < 1e-4


def test_english_word2ph_realigned_to_the_tokenizer(bert):
    (seg,) = clean_text("Hello, unbelievable world! I don't know.", "EN")
    assert len(seg.word2ph) == len(seg.word_phones) + 2  # per word: no tokenizer registered
    n_tokens = len(bert.token_ids(seg))
    assert n_tokens > len(seg.word2ph)  # the tiny tokenizer splits words
    aligned = bert.aligned_word2ph(seg)
    assert len(aligned) == n_tokens and sum(aligned) == len(seg.phones)
    # with the tokenizer registered, clean_text writes reference-style per-token word2ph directly
    from vits.text.en import g2p as en_g2p

    en_g2p.set_tokenizer(load_tokenizer("EN", bert.model_dirs["EN"]))
    try:
        (direct,) = clean_text("Hello, unbelievable world! I don't know.", "EN")
    finally:
        en_g2p.set_tokenizer(None)
    assert direct.word2ph == aligned
    # the same line read back from a list file (no word_phones) still aligns
    bare = Cleaned("EN", seg.norm_text, seg.phones, seg.tones, seg.word2ph)
    assert bert.features(bare).shape == (HIDDEN, 2 * len(seg.phones) + 1)


def test_japanese_ellipsis_is_one_token(bert):
    (seg,) = clean_text("そうですね…", "JP")
    assert "…" in seg.norm_text
    assert len(bert.token_ids(seg)) == len(seg.word2ph)
    assert bert.features(seg).shape[1] == 2 * len(seg.phones) + 1


def test_text_longer_than_the_position_table(bert):
    (seg,) = clean_text("今天天气很好。" * 100, "ZH")
    assert len(seg.word2ph) > 512
    assert bert.features(seg).shape == (HIDDEN, 2 * len(seg.phones) + 1)


def test_mismatched_word2ph_is_a_clear_error(bert):
    bad = Cleaned("ZH", "你好", ["_", "n", "i", "_"], [0, 3, 3, 0], [1, 2, 1])
    with pytest.raises(KoeError, match="tokenizer gives 4 tokens"):
        bert.features(bad)


def test_missing_model_folder(tmp_path):
    bf = BertFeatures({"ZH": tmp_path / "nope"})
    seg = Cleaned("ZH", "好", ["_", "h", "ao", "_"], [0, 3, 3, 0], [1, 2, 1])
    with pytest.raises(KoeError, match="does not exist") as info:
        bf.features(seg)
    assert str(tmp_path / "nope") in str(info.value) and "HF_ENDPOINT" in str(info.value)
    with pytest.raises(KoeError, match="no BERT model folder configured for JP"):
        bf.features(Cleaned("JP", "あ", ["_", "a", "_"], [0, 0, 0], [1, 1, 1]))


def test_download_fails_clearly_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # tests never touch the network
    with pytest.raises(KoeError, match="could not download") as info:
        download_bert_models(["ZH"], {"ZH": tmp_path / "zh"}, endpoint="https://hf-mirror.com")
    assert "hf-mirror" in str(info.value)
