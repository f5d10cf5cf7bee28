"""Korean through the whole path: esd.list → text stage (enables the Korean network) → Korean BERT features →
one training step fine-tuned from a 2.3 base (new rows reported) → Korean synthesis; 2.3 stays 2.3."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_data import tiny_config, write_clip
from vits.errors import KoeError

KO_LINES = ["안녕하세요. 반갑습니다!", "사과 3개 주세요.", "학교에 같이 가요.", "오늘은 날씨가 좋아요.", "감사합니다."]

pytestmark = pytest.mark.torch_threads(1)


@pytest.fixture(scope="module")
def ko_bert(tmp_path_factory):
    """A real BertFeatures over a tiny random RoBERTa with a Korean WordPiece tokenizer, 1024 features."""
    from vits.text.bert import BertFeatures
    from vits.text.testing import build_tiny_models

    dirs = build_tiny_models(tmp_path_factory.mktemp("kobert"), None, hidden=1024, layers=3, languages=("KO",))
    return dirs["KO"], BertFeatures(dirs)


def _base_model(folder):
    """A 2.3 base model (G, D, DUR) of the tiny architecture: the 112-symbol, 3-language network."""
    from vits.checkpoints import save_checkpoint
    from vits.discriminators import build_discriminators
    from vits.models import build_generator

    cfg = tiny_config(n_speakers=2)
    mpd, dur, _ = build_discriminators(cfg)
    g = build_generator(cfg)
    assert g.enc_p.emb.num_embeddings == 112 and not hasattr(g.enc_p, "ko_bert_proj")
    for kind, net in (("G", g), ("D", mpd), ("DUR", dur)):
        save_checkpoint(folder / f"{kind}_0.pth", net, epoch=0, step=0, learning_rate=2e-4)
    return folder


def test_korean_voice_from_dataset_to_synthesis(tmp_path, ko_bert, monkeypatch):
    from pipeline.features import main as features_main
    from prep.lists import TextOptions, build_filelists
    from vits.config import VoiceConfig
    from vits.lists import bert_path, read_cleaned_lines
    from vits.synthesis import Voice
    from vits.text import clean_text
    from vits.train import TrainOptions, train

    ko_dir, bert = ko_bert
    settings = tmp_path / "config.yml"
    settings.write_text(f"base_model:\n  folder: {tmp_path / 'no_base'}\ndevice: cpu\n", encoding="utf-8")
    monkeypatch.setenv("KOE_CONFIG", str(settings))

    # dataset: a Korean esd.list; the text stage turns the voice into a Korean-enabled one
    voice = tmp_path / "Data" / "ko"
    cfg = tiny_config(n_speakers=1)
    cfg.train.batch_size, cfg.train.log_interval, cfg.train.eval_interval = 2, 1, 1000
    cfg.save(voice / "configs" / "config.json")
    esd = []
    for i, text in enumerate(KO_LINES):
        rel = f"wavs/clip_{i}.wav"
        write_clip(voice / rel, 1.0 + 0.1 * i, seed=i)
        esd.append(f"{rel}|spk|KO|{text}")
    (voice / "esd.list").write_text("\n".join(esd) + "\n", encoding="utf-8")
    result = build_filelists(voice, TextOptions())
    assert not result.dropped, result.dropped
    cfg = VoiceConfig.load(voice / "configs" / "config.json")
    assert cfg.korean and cfg.n_vocab == 158 and cfg.to_dict()["model"]["num_languages"] == 4
    lines = [line for _, line in read_cleaned_lines(voice / "filelists" / "train.list")]
    assert lines and all(line.split("|")[2] == "KO" for line in lines)

    # features: the Korean BERT file of every clip, one column per phone (with blanks)
    assert features_main([str(voice), "--bert-ko", str(ko_dir), "--device", "cpu"]) == 0
    for i in range(len(KO_LINES)):
        feats = torch.load(bert_path(voice / f"wavs/clip_{i}.wav"), weights_only=True)
        assert feats.shape[0] == 1024 and feats.shape[1] % 2 == 1

    # training: one step, fine-tuned from a 2.3 base; the Korean rows and projection are reported as new
    base = _base_model(tmp_path / "base")
    log: list[str] = []
    trained = train(TrainOptions(voice_dir=voice, max_steps=1, base=base, use_wavlm=False, device="cpu"),
                    log=log.append)
    text = "\n".join(log)
    assert trained.step == 1 and (voice / "models" / "G_1.pth").is_file()
    head = next(line for line in log if line.startswith("base model: loaded"))
    n, m = (int(v) for v in head.split("base model: loaded ")[1].split(" tensors")[0].split(" of "))
    assert 0 < n < m
    assert "46 new symbol rows re-initialised" in text and "1 new language rows re-initialised" in text
    assert "1 new tone rows re-initialised" in text and "enc_p.ko_bert_proj" in text
    state = torch.load(voice / "models" / "G_1.pth", weights_only=True)["model"]
    assert state["enc_p.emb.weight"].shape[0] == 158 and "enc_p.ko_bert_proj.weight" in state

    # synthesis: Korean text, AUTO-detected, with the Korean BERT slot
    v = Voice.load(voice)
    assert v.korean
    audio = v.synthesize("안녕하세요. 사과 2개 주세요!", "AUTO", bert=bert, seed=1)
    assert audio.dtype == np.float32 and audio.size > 0 and np.isfinite(audio).all()
    again = v.synthesize("안녕하세요. 사과 2개 주세요!", "KO", bert=bert, seed=1)
    assert np.array_equal(audio, again)
    # the Korean BERT features reach the model: other features, other audio
    (seg,) = clean_text("학교에 가요.", "KO")
    feats = bert.features(seg)
    a = v.synthesize_phones(seg.phones, seg.tones, "KO", ko_bert=feats, seed=3)
    b = v.synthesize_phones(seg.phones, seg.tones, "KO", ko_bert=torch.zeros_like(feats), seed=3)
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_a_23_voice_refuses_korean_with_the_fix(tmp_path):
    from vits.models import build_generator
    from vits.synthesis import Voice

    cfg = tiny_config(n_speakers=1)
    g = build_generator(cfg)
    assert not g.korean and g.enc_p.language_emb.num_embeddings == 3 and g.enc_p.tone_emb.num_embeddings == 12
    v = Voice(g, cfg)
    with pytest.raises(KoeError, match="trained without Korean"):
        v.synthesize_phones(["_", "\u1112", "\u1161", "_"], [0, 0, 0, 0], "KO", seed=0)


def test_korean_in_the_dataset_tab_whisper_and_api_parameters():
    from prep.transcribe import WHISPER_TO_LANG, TranscribeOptions, hallucination_flags
    from server.params import _language_value
    from studio.stages import WHISPER_LANG
    from studio.tabs.synthesize import LANGS
    from vits.lists import normalize_language

    assert WHISPER_TO_LANG["ko"] == "KO" and WHISPER_LANG["KO"] == "ko" and "KO" in LANGS
    flags = hallucination_flags("안녕하세요 반갑습니다", "KO", 2.0, -0.2, 0.01, 1.2, TranscribeOptions(language="ko"))
    assert "unsupported_language" not in flags and not flags
    assert _language_value("ko") == "KO" and _language_value("kr") == "KO" and normalize_language("ko-KR") == "KO"
    with pytest.raises(ValueError, match="KO"):
        _language_value("FR")
