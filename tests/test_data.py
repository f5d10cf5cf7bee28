"""Dataset, bucket sampler, collate and list validation (spec §7.4, §7.6, §7.8, §10)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from vits.config import VoiceConfig
from vits.data import (
    DistributedBucketSampler,
    TextAudioDataset,
    collate,
    validate_lists,
)
from vits.lists import spec_path

SR = 16000
# (phones, raw tones, word2ph) of short ZH / JP / EN utterances, before blank insertion.
SENTENCES = [
    ("ZH", "你好.", "_ n i h ao . _", "0 3 3 3 3 0 0", "1 2 2 1 1"),
    ("ZH", "大家.", "_ d a j ia . _", "0 4 4 1 1 0 0", "1 2 2 1 1"),
    ("JP", "はい.", "_ h a i . _", "0 0 1 1 0 0", "1 2 1 1 1"),
    ("EN", "hi.", "_ hh ay . _", "0 3 2 0 0", "1 2 1 1"),
]


def tiny_config(n_speakers: int = 2) -> VoiceConfig:
    """A config small enough to train on a CPU in seconds (16 kHz, hop 128, 32-channel networks)."""
    cfg = VoiceConfig()
    cfg.data.sampling_rate = SR
    cfg.data.filter_length = 512
    cfg.data.win_length = 512
    cfg.data.hop_length = 128
    cfg.data.n_mel_channels = 40
    cfg.data.n_speakers = n_speakers
    cfg.data.spk2id = {f"spk{i}": i for i in range(n_speakers)}
    t = cfg.train
    t.segment_size = 2048  # 16 frames
    t.batch_size = 2
    t.log_interval = 5
    t.eval_interval = 10
    t.epochs = 10000
    m = cfg.model
    m.inter_channels = m.hidden_channels = 32
    m.filter_channels = 64
    m.n_heads = 2
    m.n_layers = 3
    m.resblock_kernel_sizes = [3]
    m.resblock_dilation_sizes = [[1, 3, 5]]
    m.upsample_rates = [4, 4, 4, 2]
    m.upsample_kernel_sizes = [8, 8, 8, 4]
    m.upsample_initial_channel = 32
    m.gin_channels = 16
    m.slm.hidden = 32
    m.slm.nlayers = 3
    m.slm.initial_channel = 8
    return cfg


def write_clip(path: Path, seconds: float, seed: int, sr: int = SR, channels: int = 1) -> None:
    """A sine chord plus noise, 16-bit."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 40 * seed % 200
    audio = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(2 * np.pi * 2.5 * f0 * t) + 0.02 * rng.standard_normal(len(t))
    audio = (audio * np.hanning(len(t)) ** 0.2).astype(np.float32)
    if channels > 1:
        audio = np.stack([audio] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, audio, sr, subtype="PCM_16")


def list_line(wav_rel: str, speaker: str, sentence) -> str:
    lang, text, phones, tones, w2p = sentence
    return f"{wav_rel}|{speaker}|{lang}|{text}|{phones}|{tones}|{w2p}"


def make_voice(root: Path, n_clips: int = 6, n_val: int = 1, n_speakers: int = 2, cfg: VoiceConfig | None = None,
               seconds=(1.0, 2.0)) -> Path:
    """A complete tiny voice folder: wavs, .bert.pt, filelists, configs/config.json."""
    voice = root / "voice"
    cfg = cfg or tiny_config(n_speakers)
    lines = []
    gen = torch.Generator().manual_seed(0)
    for i in range(n_clips + n_val):
        sentence = SENTENCES[i % len(SENTENCES)]
        speaker = f"spk{i % n_speakers}"
        rel = f"wavs/{speaker}/clip_{i:03d}.wav"
        secs = seconds[0] + (seconds[1] - seconds[0]) * (i / max(1, n_clips + n_val - 1))
        write_clip(voice / rel, secs, seed=i, sr=cfg.data.sampling_rate)
        n_phones = len(sentence[2].split())
        torch.save(torch.randn(1024, 2 * n_phones + 1, generator=gen), voice / rel.replace(".wav", ".bert.pt"))
        lines.append(list_line(rel, speaker, sentence))
    (voice / "filelists").mkdir(parents=True)
    (voice / "filelists" / "train.list").write_text("\n".join(lines[:n_clips]) + "\n", encoding="utf-8")
    (voice / "filelists" / "val.list").write_text("\n".join(lines[n_clips:]) + "\n", encoding="utf-8")
    cfg.save(voice / "configs" / "config.json")
    return voice


@pytest.fixture
def voice(tmp_path) -> Path:
    return make_voice(tmp_path)


def test_dataset_item_shapes_blanks_and_filler_noise(voice):
    cfg = VoiceConfig.load(voice / "configs" / "config.json")
    ds = TextAudioDataset(voice, cfg.data.training_files, cfg, shuffle=False)
    assert len(ds) == 6
    phones, spec, wav, sid, tone, lang, bert, ja_bert, en_bert = ds[0]
    # "_ n i h ao . _": 7 phones -> 15 with blanks; blanks are id 0 with tone 0 and language 0.
    assert phones.shape == (15,) and phones[0::2].eq(0).all() and tone[0::2].eq(0).all()
    assert spec.shape[0] == 257 and wav.shape[0] == 1
    assert spec.shape[1] == wav.shape[1] // 128
    assert sid.tolist() == [0]
    assert bert.shape == ja_bert.shape == en_bert.shape == (1024, 15)
    assert torch.equal(bert, torch.load(voice / "wavs/spk0/clip_000.bert.pt"))
    # The other-language slots are standard normal noise, not zeros (2.3).
    assert 0.8 < float(ja_bert.std()) < 1.2 and abs(float(en_bert.mean())) < 0.1
    # EN clip: real features in the en slot.
    en_item = ds[3]
    assert torch.equal(en_item[8], torch.load(voice / "wavs/spk1/clip_003.bert.pt"))
    assert en_item[5][1::2].eq(2).all()  # language id EN on phones


def test_spec_cache_written_atomically_and_reused(voice):
    cfg = VoiceConfig.load(voice / "configs" / "config.json")
    ds = TextAudioDataset(voice, cfg.data.training_files, cfg, shuffle=False)
    spec = ds[0][1]
    cache = spec_path(ds.items[0].wav)
    assert cache.is_file()
    assert not list(cache.parent.glob(".*.tmp"))
    torch.testing.assert_close(torch.load(cache), spec)
    # Reused: a cache of the right shape is what the next read returns (marked here so it shows), untouched.
    torch.save(spec + 1.0, cache)
    stamp = cache.stat().st_mtime_ns
    torch.testing.assert_close(ds[0][1], spec + 1.0)
    assert cache.stat().st_mtime_ns == stamp
    # A cache that does not fit (e.g. from another STFT size) is recomputed, not trusted, and rewritten.
    torch.save(torch.zeros(3, 3), cache)
    torch.testing.assert_close(ds[0][1], spec)
    torch.testing.assert_close(torch.load(cache), spec)


def test_collate_sorts_and_pads(voice):
    cfg = VoiceConfig.load(voice / "configs" / "config.json")
    ds = TextAudioDataset(voice, cfg.data.training_files, cfg, shuffle=False)
    batch = collate([ds[0], ds[5], ds[2]])
    text, text_len, spec, spec_len, wav, wav_len, sid, tone, lang, bert, ja, en = batch
    assert spec_len.tolist() == sorted(spec_len.tolist(), reverse=True)
    assert spec.shape == (3, 257, int(spec_len[0])) and wav.shape == (3, 1, int(wav_len.max()))
    assert text.dtype == torch.long and bert.shape == (3, 1024, int(text_len.max()))
    shortest = int(spec_len.argmin())
    assert spec[shortest, :, int(spec_len[shortest]):].abs().sum() == 0


@pytest.mark.parametrize("world", [1, 2, 3])
def test_bucket_sampler_same_batches_on_every_rank(world):
    lengths = [40, 50, 60, 310, 320, 999, 10, 2000, 45, 46, 47]
    samplers = [DistributedBucketSampler(lengths, 2, num_replicas=world, rank=r) for r in range(world)]
    assert samplers[0].dropped == 2  # 10 and 2000 are outside the buckets
    for epoch in (0, 1):
        per_rank = []
        for s in samplers:
            s.set_epoch(epoch)
            per_rank.append(list(s))
        assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) == len(samplers[0])
        for batches in per_rank:
            assert all(len(b) == 2 for b in batches)
            for b in batches:  # one bucket per batch
                assert len({min(k for k, edge in enumerate([32, 300, 400, 1000]) if lengths[i] <= edge)
                             for i in b}) == 1
        seen = {i for batches in per_rank for b in batches for i in b}
        assert seen == {i for i, n in enumerate(lengths) if 32 < n <= 1000}
    # Deterministic per epoch, different across epochs; skipping resumes mid-epoch.
    s = samplers[0]
    s.set_epoch(5)
    first = list(s)
    s.set_epoch(5, skip_batches=1)
    assert list(s) == first[1:]


def _bad_voice(tmp_path) -> Path:
    voice = make_voice(tmp_path, n_clips=3, n_val=1)
    train = voice / "filelists" / "train.list"
    lines = train.read_text(encoding="utf-8").splitlines()
    write_clip(voice / "wavs/spk0/rate.wav", 1.0, 1, sr=22050)
    torch.save(torch.randn(1024, 15), voice / "wavs/spk0/rate.bert.pt")
    write_clip(voice / "wavs/spk0/stereo.wav", 1.0, 2, channels=2)
    torch.save(torch.randn(1024, 15), voice / "wavs/spk0/stereo.bert.pt")
    write_clip(voice / "wavs/spk0/nobert.wav", 1.0, 3)
    torch.save(torch.randn(1024, 9), voice / "wavs/spk0/clip_000.bert.pt")  # wrong length for line 1
    zh = SENTENCES[0]
    bad = [
        lines[0],                                                   # 1: BERT length != phones
        "wavs/spk0/clip_001.wav|spk0|ZH|only four|fields",          # 2: field count
        list_line("wavs/spk0/missing.wav", "spk0", zh),             # 3: wav missing (and .bert.pt)
        list_line("wavs/spk0/rate.wav", "spk0", zh),                # 4: sample rate
        list_line("wavs/spk0/stereo.wav", "spk0", zh),              # 5: channels
        list_line("wavs/spk0/nobert.wav", "spk0", zh),              # 6: no .bert.pt
        list_line("wavs/spk1/clip_001.wav", "spk1", ("ZH", "x", "_ n xx _", "0 3 3 0", "1 2 1")),  # 7: phone
        list_line("wavs/spk0/clip_002.wav", "nobody", SENTENCES[2]),  # 8: speaker
        lines[1],                                                   # 9: fine
    ]
    train.write_text("\n".join(bad) + "\n", encoding="utf-8")
    return voice


def test_validate_lists_reports_every_problem_with_file_and_line(tmp_path):
    voice = _bad_voice(tmp_path)
    cfg = VoiceConfig.load(voice / "configs" / "config.json")
    problems = validate_lists(voice, cfg)
    train = str(voice / "filelists" / "train.list")

    def at(line: int) -> list[str]:
        return [p for p in problems if p.startswith(f"{train}:{line}: ")]

    assert any("BERT features are [1024, 9], expected [1024, 15]" in p for p in at(1))
    assert any("expected 7 '|'-separated fields, found 5" in p for p in at(2))
    assert any("wav file not found" in p for p in at(3))
    assert any("22050 Hz, expected 16000 Hz" in p for p in at(4))
    assert any("2 channels, expected mono" in p for p in at(5))
    assert any("BERT features not found" in p for p in at(6))
    assert any("unknown phone(s) 'xx'" in p for p in at(7))
    assert any("speaker 'nobody' is not in spk2id" in p for p in at(8))
    assert at(9) == []
    assert all(" → " in p for p in problems)  # every problem says how to fix it


def test_validate_lists_clean_voice_and_missing_list(voice):
    cfg = VoiceConfig.load(voice / "configs" / "config.json")
    assert validate_lists(voice, cfg) == []
    (voice / "filelists" / "val.list").unlink()
    problems = validate_lists(voice, cfg)
    assert len(problems) == 1 and "val.list: list file not found" in problems[0]


def test_train_cli_lists_all_problems_and_exits_nonzero(tmp_path, capsys):
    from pipeline.train import main

    voice = _bad_voice(tmp_path)
    assert main([str(voice), "--no-wavlm", "--max-steps", "1", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    train = str(voice / "filelists" / "train.list")
    for line in range(1, 9):
        assert f"{train}:{line}: " in err, line
    assert f"{train}:9: " not in err
    assert not (voice / "models").exists()


def test_config_roundtrip_of_tiny_config(voice):
    raw = json.loads((voice / "configs" / "config.json").read_text())
    assert raw["data"]["sampling_rate"] == SR and raw["model"]["hidden_channels"] == 32
