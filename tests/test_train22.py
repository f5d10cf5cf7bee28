"""Training a Bert-VITS2 2.2 (CLAP emotion) voice: data with `.emo.npy`, the 2.2 step, fine-tune, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_data import make_voice, tiny_config
from vits import checkpoints as ck
from vits.config import VoiceConfig
from vits.data import EMPTY_EMO, TextAudioDataset, collate, load_emo, validate_lists
from vits.lists import emo_path, read_cleaned_list
from vits.progress import parse_progress
from vits.voice_folder import resolve_path

pytestmark = pytest.mark.torch_threads(1)  # tests/conftest.py sets and restores it per test


def tiny_22_config(n_speakers: int = 2) -> VoiceConfig:
    """tiny_config() as a 2.2 config.json: "version": "2.2", no slm block (2.2 spec §1)."""
    raw = tiny_config(n_speakers).to_dict()
    raw["version"] = "2.2"
    raw["model"].pop("slm")
    cfg = VoiceConfig.model_validate(raw)
    assert cfg.architecture == "2.2"
    return cfg


def write_emo_files(voice: Path, cfg: VoiceConfig) -> list[Path]:
    """A random unit-norm CLAP-like [512, 1] embedding per clip, saved as 2.2's clap_gen.py does."""
    gen = torch.Generator().manual_seed(7)
    paths = []
    for name in (cfg.data.training_files, cfg.data.validation_files):
        for _where, line in read_cleaned_list(resolve_path(voice, name)):
            e = torch.randn(512, 1, generator=gen)
            path = emo_path(resolve_path(voice, line.wav))
            torch.save(e / e.norm(), path)
            paths.append(path)
    return paths


def make_22_voice(root: Path, n_clips: int = 3, cfg: VoiceConfig | None = None) -> Path:
    cfg = cfg or tiny_22_config()
    voice = make_voice(root, n_clips=n_clips, n_val=1, cfg=cfg)
    write_emo_files(voice, cfg)
    return voice


def test_dataset_reads_emo_files_or_the_empty_vector_and_collates_them(tmp_path):
    voice = make_22_voice(tmp_path, n_clips=3)
    cfg = VoiceConfig.load(voice / "configs" / "config.json")
    assert cfg.architecture == "2.2" and "slm" not in (voice / "configs" / "config.json").read_text()
    ds = TextAudioDataset(voice, cfg.data.training_files, cfg, shuffle=False)
    empty = load_emo(EMPTY_EMO)
    assert empty.shape == (512,) and abs(float(empty.norm()) - 1) < 1e-4
    own = load_emo(emo_path(ds.items[0].wav))
    np.random.seed(0)
    draws = np.random.rand(40) > 0.1  # the loader's own draw (2.2 spec §8.2), one per item
    np.random.seed(0)
    for keep in draws:
        item = ds[0]
        assert len(item) == 10
        assert torch.equal(item[9], own if keep else empty)
    # Empty BERT slots of a 2.2 item are uniform noise (ZH clip: ja/en slots).
    assert float(item[7].min()) >= 0.0 and float(item[8].max()) < 1.0
    batch = collate([ds[0], ds[1], ds[2]])
    assert len(batch) == 13 and batch[12].shape == (3, 512)


def test_missing_emo_file_is_a_list_problem_with_the_fix(tmp_path):
    voice = make_22_voice(tmp_path, n_clips=2)
    cfg = VoiceConfig.load(voice / "configs" / "config.json")
    assert validate_lists(voice, cfg) == []
    missing = sorted((voice / "wavs").rglob("*.emo.npy"))[0]
    missing.unlink()
    problems = validate_lists(voice, cfg)
    assert len(problems) == 1 and missing.name in problems[0] and "pipeline.features" in problems[0]
    assert "train.list:" in problems[0] or "val.list:" in problems[0]


def test_22_duration_discriminator_is_called_with_predicted_then_mas_durations(tmp_path):
    """2.2 spec §5.3: one call per network update, (logw, logw_) order, G term on the MAS durations."""
    from vits.train.options import TrainOptions
    from vits.train.runtime import init_runtime
    from vits.train.setup import build_data, build_networks, build_optimizers
    from vits.train.step import TB_SCALARS, train_step

    voice = make_22_voice(tmp_path, n_clips=2)
    cfg = VoiceConfig.load(voice / "configs" / "config.json")
    device = torch.device("cpu")
    torch.manual_seed(0)
    log: list[str] = []
    nets = build_networks(cfg, TrainOptions(voice_dir=voice, use_wavlm=True), device, log.append)
    assert nets.wavlm is None and nets.wd is None and "no WavLM" in log[0]
    build_optimizers(nets, cfg, device)
    data = build_data(voice, cfg, init_runtime("cpu"), 0, log.append)
    calls = []
    forward = nets.dur.forward

    def spy(x, x_mask, d1, d2, g=None):
        calls.append((x.shape[0], d1.requires_grad, d2.requires_grad, d2.detach().clone()))
        return forward(x, x_mask, d1, d2, g)

    nets.dur.forward = spy
    codebook = nets.g.enc_p.emo_vq._codebook
    before = codebook.embed.detach().clone()
    values = train_step(nets, next(iter(data.loader)), cfg, 0, device, bf16=False)
    b = cfg.train.batch_size
    assert [c[0] for c in calls] == [b, b]  # not the doubled 2.3 batch
    assert calls[0][1:3] == (False, False)  # discriminator update: everything detached
    assert calls[1][1:3] == (True, False)  # G update: live predicted logw first, MAS logw_ second
    w = calls[1][3].exp() - 1e-6  # the second argument is logw_ = log(w + 1e-6)·mask: whole frame counts
    assert torch.allclose(w, w.round(), atol=1e-3) and w.sum() > 0
    scalars = dict(zip(TB_SCALARS, values.tolist()))
    assert scalars["loss/g/commit"] > 0 and scalars["loss/g/wavlm"] == 0 == scalars["loss/d/wavlm"]
    assert not torch.equal(before, codebook.embed)  # the EMA codebook trains (train mode)


def _base_model(folder: Path, cfg: VoiceConfig) -> Path:
    from vits.discriminators import build_discriminators
    from vits.models import build_generator

    torch.manual_seed(3)
    mpd, dur, _ = build_discriminators(cfg)
    for kind, net in (("G", build_generator(cfg)), ("D", mpd), ("DUR", dur)):
        ck.save_checkpoint(folder / f"{kind}_0.pth", net, epoch=0, step=0, learning_rate=2e-4)
    return folder


def test_finetune_from_22_base_resume_and_synthesize(tmp_path):
    from vits.synthesis import Voice
    from vits.train import TrainOptions, train

    base_cfg = tiny_22_config(n_speakers=2)
    base = _base_model(tmp_path / "base", base_cfg)
    cfg = tiny_22_config(n_speakers=3)
    cfg.train.batch_size, cfg.train.log_interval, cfg.train.eval_interval = 2, 1, 2
    voice = make_voice(tmp_path / "new", n_clips=2, n_val=1, n_speakers=3, cfg=cfg)
    write_emo_files(voice, cfg)

    lines: list[str] = []
    result = train(TrainOptions(voice_dir=voice, max_steps=2, base=base, device="cpu"), log=lines.append)
    text = "\n".join(lines)
    head = next(line for line in lines if line.startswith("base model: loaded"))
    n, m = (int(x) for x in head.split("base model: loaded ")[1].split(" tensors")[0].split(" of "))
    assert 0 < n <= m and "for D" in head and "for DUR" in head and "WD" not in head
    assert "emb_g.weight" in text and "2.2 voice" in text
    losses = [p["losses"] for p in map(parse_progress, lines) if p and "losses" in p]
    assert len(losses) == 2 and all(v["g/commit"] > 0 for v in losses)
    models = voice / "models"
    assert result.step == 2 and sorted(p.name for p in models.glob("*_2.pth")) == ["DUR_2.pth", "D_2.pth", "G_2.pth"]
    g2 = ck.read_checkpoint(models / "G_2.pth")
    assert ck.identify_checkpoint(g2) == "G-2.2"
    assert ck.identify_checkpoint(ck.read_checkpoint(models / "DUR_2.pth")) == "DUR-2.2"
    initted = g2["model"]["enc_p.emo_vq._codebook.initted"]
    assert initted.dtype == torch.float32 and tuple(initted.shape) == (1,)
    assert (voice / "logs" / "eval" / "step_00000002" / "index.json").is_file()  # eval used the val emo

    lines.clear()
    result = train(TrainOptions(voice_dir=voice, max_steps=3, device="cpu"), log=lines.append)
    assert result.step == 3 and "resumed from G_2.pth: step 2" in "\n".join(lines)
    g3 = ck.read_checkpoint(models / "G_3.pth")["model"]
    assert not torch.equal(g2["model"]["enc_p.emo_vq._codebook.embed"], g3["enc_p.emo_vq._codebook.embed"])

    voice_obj = Voice.load(voice)
    assert voice_obj.needs_emotion
    emo = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    audio = voice_obj.synthesize_phones(["_", "n", "i", "_"], [0, 3, 3, 0], "ZH", speaker="spk1", seed=1,
                                        emo=emo / np.linalg.norm(emo))
    assert audio.dtype == np.float32 and audio.size > 0 and np.isfinite(audio).all()


def test_quantiser_trains_like_the_1_12_release_2_2_used():
    """Straight-through gradient, commitment loss 0.1·MSE, every dead code refilled (2.2 spec §4.5, §10)."""
    from vits.emotion import emotion_quantizer

    torch.manual_seed(0)
    vq = emotion_quantizer().train()
    codebook = vq._codebook
    assert codebook.cluster_size.sum() == 0 and codebook.initted.tolist() == [1.0]
    x = torch.randn(3, 1, 512, requires_grad=True)
    quantized, codes, loss = vq(x)
    assert loss.numel() == 1 and float(loss.detach()) > 0  # 0-d here; 1.12.0 returned [1] (we take the mean)
    # 3 items, 64 dead codes per head: 1.12.0 refills all of them (with replacement) from this batch.
    assert torch.all(codebook.cluster_size == 2)
    projected = vq.project_in(x.detach()).detach().reshape(3, 32, 32).transpose(0, 1)  # [heads, items, 32]
    sq = ((codebook.embed[:, :, None] - projected[:, None]) ** 2).sum(-1)  # [heads, codes, items]
    assert float(sq.min(-1).values.max()) < 1e-10  # every code is one of the batch's projected inputs
    assert torch.allclose(codebook.embed_avg, 2 * codebook.embed)
    # Straight-through: d quantized / d x flows through project_out and project_in only.
    quantized.sum().backward()
    expected = (vq.project_out.weight.sum(0) @ vq.project_in.weight).expand(3, 1, 512)
    assert torch.allclose(x.grad, expected, atol=1e-5)
