"""Tiny random BERT/DeBERTa model folders with the real tokenizers, for tests and benchmarks.

The folders load exactly like the real models (`BertFeatures`), only smaller: `hidden` features
instead of 1024, `layers` instead of 24. ZH/JP use the real tokenizer files (shared/golden/tokenizers);
EN gets a small sentencepiece-style BPE tokenizer trained here, since deberta-v3's spm.model is not
available offline; KO a WordPiece tokenizer over the Hangul syllables of a short built-in text (KLUE's
tokenizer is a BERT WordPiece too, and none ships offline) with a RoBERTa model like klue/roberta-large.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

_EN_CORPUS = (
    "hello world this is a small english corpus for a tiny tokenizer . the quick brown fox jumps over the lazy "
    "dog , and then it runs away ! do not worry , it will come back tomorrow ? we are testing word pieces like "
    "unbelievable , wonderful , beautifully , information , international , pronunciation , don't , it's , "
    "i'm , they're , speaking , reading , writing , numbers one two three four five six seven eight nine ten"
)


_KO_CORPUS = (
    "안녕하세요 감사합니다 저는 한국어를 공부하는 학생입니다 오늘은 날씨가 좋아요 사과 세 개 주세요 "
    "학교에 가요 국물이 맛있어요 같이 가요 값이 너무 비싸요 시간이 없어요 이천이십사년 유월 십일 "
    "하나 둘 셋 넷 다섯 여섯 일곱 여덟 아홉 열 일 이 삼 사 오 육 칠 팔 구 십 백 천 만 원 명 살 시 분"
)


def _korean_tokenizer(folder: Path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    syllables = sorted({c for c in _KO_CORPUS if not c.isspace()})
    vocab = specials + list("!?…,.'-") + syllables + ["##" + c for c in syllables]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                   unk_token="[UNK]", mask_token="[MASK]")
    fast.save_pretrained(str(folder))
    return fast


def _english_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
        pre_tokenizers.Punctuation(behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    trainer = trainers.BpeTrainer(vocab_size=220, special_tokens=specials, initial_alphabet=letters + list(",.!?'-…▁"),
                                  show_progress=False)
    tok.train_from_iterator([_EN_CORPUS] * 20, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                   unk_token="[UNK]", mask_token="[MASK]")
    fast.save_pretrained(str(folder))
    return fast


def build_tiny_models(root: str | Path, tokenizers_dir: str | Path | None, hidden: int = 32, layers: int = 4,
                      languages=("ZH", "JP", "EN"), seed: int = 0) -> dict[str, Path]:
    """Write tiny random model folders under `root`; returns {language: folder}.

    Args:
        root: where to create `zh/`, `jp/`, `en/`, `ko/`.
        tokenizers_dir: shared/golden/tokenizers (needed for ZH and JP).
        languages: any of ZH, JP, EN, KO.
        hidden, layers: model size (real models: 1024, 24).
    """
    import torch
    import transformers as tf
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    root = Path(root)
    out: dict[str, Path] = {}
    torch.manual_seed(seed)
    common = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=2 * hidden,
                  max_position_embeddings=512)
    deberta = dict(relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=256,
                   norm_rel_ebd="layer_norm", share_att_key=True, position_biased_input=False,
                   max_relative_positions=-1, type_vocab_size=0, layer_norm_eps=1e-7)
    for lang in languages:
        folder = root / lang.lower()
        folder.mkdir(parents=True, exist_ok=True)
        if lang in ("ZH", "JP"):
            name = "chinese-roberta-wwm-ext-large" if lang == "ZH" else "deberta-v2-large-japanese-char-wwm"
            src = Path(tokenizers_dir) / name
            for f in src.iterdir():
                if f.name != "config.json":
                    shutil.copy(f, folder / f.name)
            vocab = sum(1 for _ in open(src / "vocab.txt", encoding="utf-8"))
            if lang == "ZH":
                model = tf.BertForMaskedLM(tf.BertConfig(vocab_size=vocab, **common))
            else:
                model = tf.DebertaV2ForMaskedLM(tf.DebertaV2Config(vocab_size=vocab, **common, **deberta))
        elif lang == "KO":
            tok = _korean_tokenizer(folder)
            model = tf.RobertaModel(tf.RobertaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                                                     **{**common, "max_position_embeddings": 514}))
        else:
            tok = _english_tokenizer(folder)
            model = tf.DebertaV2Model(tf.DebertaV2Config(vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                                                   **common, **deberta))
        model.save_pretrained(str(folder))
        out[lang] = folder
    return out


@lru_cache(maxsize=4)
def shared_tiny_models(tokenizers_dir: str, hidden: int = 32, layers: int = 4) -> dict[str, Path]:
    """`build_tiny_models` once per process into a temporary folder (removed at exit)."""
    root = Path(tempfile.mkdtemp(prefix="koe-tiny-bert-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return build_tiny_models(root, tokenizers_dir, hidden=hidden, layers=layers)
