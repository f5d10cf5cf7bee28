"""Checkpoint files: Bert-VITS2 format compatibility, strict/partial loading, rotation, release export."""

from __future__ import annotations

import io
import os
import re

import pytest
import torch
from torch import nn

from vits import checkpoints as ck
from vits.config import VoiceConfig
from vits.errors import KoeError
from vits.modules import weight_norm
from vits.train.start import restore_optimizer, restore_scaler

pytestmark = pytest.mark.torch_threads(1)  # tests/conftest.py sets and restores it per test


class TinyEncoder(nn.Module):
    def __init__(self, n_vocab: int, hidden: int = 8, gin: int = 4):
        super().__init__()
        self.emb = nn.Embedding(n_vocab, hidden)
        self.tone_emb = nn.Embedding(12, hidden)
        self.language_emb = nn.Embedding(3, hidden)
        self.bert_proj = nn.Conv1d(16, hidden, 1)
        self.ja_bert_proj = nn.Conv1d(16, hidden, 1)
        self.en_bert_proj = nn.Conv1d(16, hidden, 1)
        self.spk_emb_linear = nn.Linear(gin, hidden)


class TinyG(nn.Module):
    """Same top-level names as the real generator, a few tensors each."""

    def __init__(self, n_vocab: int = 112, n_speakers: int = 3, gin: int = 4):
        super().__init__()
        self.enc_p = TinyEncoder(n_vocab, gin=gin)
        self.dec = nn.Module()
        self.dec.conv_pre = nn.Conv1d(8, 6, 3)
        self.dec.ups = nn.ModuleList([weight_norm(nn.ConvTranspose1d(6, 3, 4, 2))])
        self.dec.cond = nn.Conv1d(gin, 6, 1)
        self.enc_q = nn.Module()
        self.enc_q.pre = nn.Conv1d(5, 8, 1)
        self.enc_q.enc = nn.Module()
        self.enc_q.enc.in_layers = nn.ModuleList([weight_norm(nn.Conv1d(8, 16, 3))])
        self.emb_g = nn.Embedding(n_speakers, gin)


def _perturb(model: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return model


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- Bert-VITS2 format --------------------------------------------------------------------------


def test_save_writes_bert_vits2_format_and_our_resume_fields(tmp_path):
    model = _perturb(TinyG(), 0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, betas=(0.8, 0.99), eps=1e-9)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.99995)
    loss = sum(p.sum() for p in model.parameters())
    loss.backward()
    opt.step()
    sched.step()
    scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    path = ck.save_checkpoint(tmp_path / "models" / "G_1200.pth", model, opt, epoch=5, step=1200,
                              learning_rate=2e-4, scheduler=sched, scaler=scaler, extra={"note": "x", "n": [1, 2]})
    # What Bert-VITS2's utils.load_checkpoint does (torch >= 2.6 loads weights_only by default).
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert {"model", "iteration", "optimizer", "learning_rate"} <= set(raw)
    assert raw["iteration"] == 5 and raw["learning_rate"] == 2e-4
    assert int(re.findall(r"\d+", path.name)[-1]) == 1200  # step only in the name for Bert-VITS2
    assert "dec.ups.0.weight_g" in raw["model"] and "dec.ups.0.weight_v" in raw["model"]
    assert raw["koe_step"] == 1200 and raw["koe_epoch"] == 5 and raw["koe_extra"] == {"note": "x", "n": [1, 2]}

    model2 = TinyG()
    opt2 = torch.optim.AdamW(model2.parameters(), lr=2e-4, betas=(0.8, 0.99), eps=1e-9)
    sched2 = torch.optim.lr_scheduler.ExponentialLR(opt2, gamma=0.99995)
    scaler2 = torch.amp.GradScaler("cpu", enabled=True)
    report = ck.load_weights(model2, path, kind="G")
    assert report.loaded == report.total and report.messages == []
    assert _same(model, model2)
    # The trainer's start point restores optimizer, LR schedule and GradScaler (vits.train.start).
    saved = ck.read_checkpoint(path)
    names = [n for n, _ in model2.named_parameters()]
    assert restore_optimizer(opt2, sched2, saved, names, list(model2.parameters())) == []
    assert restore_scaler(scaler2, saved) == []
    epoch, step = ck.checkpoint_epoch_step(saved, path)
    assert (epoch, step) == (5, 1200)
    assert sched2.last_epoch == 1 and scaler2.get_scale() == 1024.0
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert all(torch.equal(s1[i]["exp_avg_sq"], s2[i]["exp_avg_sq"]) for i in s1)


def test_bert_vits2_file_without_our_fields(tmp_path):
    model = _perturb(TinyG(), 1)
    path = tmp_path / "G_800.pth"
    torch.save({"model": model.state_dict(), "iteration": 3, "optimizer": None, "learning_rate": 2e-4}, path)
    assert ck.checkpoint_epoch_step(ck.read_checkpoint(path), path) == (3, 800)
    opt = torch.optim.AdamW(model.parameters())
    names = [n for n, _ in model.named_parameters()]
    assert restore_optimizer(opt, None, ck.read_checkpoint(path), names, list(model.parameters())) == [
        "no optimizer state in the checkpoint: the optimizer starts fresh"]
    assert ck.checkpoint_step("/data/run2/models/DUR_42.pth") == 42


def test_save_refuses_inconsistent_name_and_unsafe_extra(tmp_path):
    with pytest.raises(ValueError, match="step 5"):
        ck.save_checkpoint(tmp_path / "G_5.pth", TinyG(), epoch=1, step=6, learning_rate=1e-4)
    with pytest.raises(ValueError, match="plain values"):
        ck.save_checkpoint(tmp_path / "G_6.pth", TinyG(), epoch=1, step=6, learning_rate=1e-4, extra={"o": object()})
    assert not list(tmp_path.iterdir())


def test_atomic_save_leaves_no_temp_files(tmp_path, monkeypatch):
    ck.save_checkpoint(tmp_path / "G_1.pth", TinyG(), epoch=1, step=1, learning_rate=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ["G_1.pth"]

    def broken_save(obj, fh):
        fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(tmp_path / "G_1.pth", TinyG(), epoch=2, step=1, learning_rate=1e-4)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["G_1.pth"]  # old file intact, no temp left
    assert ck.read_checkpoint(tmp_path / "G_1.pth")["iteration"] == 1


# --- refusing bad files -----------------------------------------------------------------------------


class _NotAllowed:
    pass


def test_weights_only_refusal_names_file_and_fix(tmp_path):
    path = tmp_path / "G_10.pth"
    buf = io.BytesIO()
    torch.save({"model": TinyG().state_dict(), "iteration": 1, "optimizer": None, "learning_rate": 1e-4,
                "hps": _NotAllowed()}, buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(KoeError) as err:
        ck.read_checkpoint(path)
    text = str(err.value)
    assert str(path) in text and "_NotAllowed" in text and "convert_trusted_checkpoint" in text
    # the suggested conversion gives a file that loads safely
    safe = ck.convert_trusted_checkpoint(path, tmp_path / "G_10.safe.pth")
    model = TinyG()
    assert ck.load_weights(model, safe).loaded == len(model.state_dict())


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(KoeError, match="not found"):
        ck.read_checkpoint(tmp_path / "G_1.pth")
    ck.save_checkpoint(tmp_path / "G_2.pth", TinyG(), epoch=1, step=2, learning_rate=1e-4)
    data = (tmp_path / "G_2.pth").read_bytes()
    (tmp_path / "G_3.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(KoeError, match="truncated"):
        ck.read_checkpoint(tmp_path / "G_3.pth")
    torch.save([1, 2, 3], tmp_path / "G_4.pth")
    with pytest.raises(KoeError, match="not a model checkpoint"):
        ck.read_checkpoint(tmp_path / "G_4.pth")


# --- identification -----------------------------------------------------------------------------


def test_identify_other_versions_and_networks(tmp_path):
    g = TinyG().state_dict()
    assert ck.identify_checkpoint(g) == "G"
    assert ck.identify_checkpoint({k: v for k, v in g.items() if not k.startswith("enc_q")}) == "G"
    v22 = dict(g, **{"enc_p.emo_vq.project_in.weight": torch.zeros(4, 2),
                     "enc_p.in_feature_net.0.weight": torch.zeros(4, 2)})
    assert ck.identify_checkpoint(v22) == "G-2.2"
    plain = {k: v for k, v in g.items() if "bert_proj" not in k}
    assert ck.identify_checkpoint(plain) == "G-vits"
    dur22 = {"conv_1.weight": torch.zeros(1), "dur_proj.weight": torch.zeros(1), "pre_out_conv_1.weight": torch.zeros(1)}
    assert ck.identify_checkpoint(dur22) == "DUR-2.2"
    assert ck.identify_checkpoint({"discriminators.0.convs.0.weight_v": torch.zeros(1)}) == "D"

    path = tmp_path / "G_100.pth"
    torch.save({"model": v22, "iteration": 1, "optimizer": None, "learning_rate": 1e-4}, path)
    with pytest.raises(KoeError, match=r"2\.2 generator.*emo_vq.*2\.3 generator") as err:
        ck.load_weights(TinyG(), path)
    assert str(path) in str(err.value)
    with pytest.raises(KoeError, match="plain VITS"):
        ck.load_weights(TinyG(), {"model": plain})
    with pytest.raises(KoeError, match="multi-period discriminator.*generator"):
        ck.load_weights(TinyG(), {"discriminators.0.convs.0.weight_v": torch.zeros(1)}, kind="G")


def test_d_file_given_as_g_with_real_networks(golden_dir):
    torch.manual_seed(0)
    dur_state = ck.read_checkpoint(golden_dir / "model-small" / "DUR_1000.pth")
    assert ck.identify_checkpoint(dur_state) == "DUR"
    with pytest.raises(KoeError, match=r"DUR_1000\.pth: this file is a Bert-VITS2 2\.3 duration discriminator"):
        ck.load_weights(TinyG(), golden_dir / "model-small" / "DUR_1000.pth", kind="G")


# --- strict loading -----------------------------------------------------------------------------


def test_strict_load_lists_missing_unexpected_and_mismatched():
    state = _perturb(TinyG(), 2).state_dict()
    state = dict(state)
    del state["enc_p.tone_emb.weight"]
    state["enc_p.extra.weight"] = torch.zeros(2)
    state["emb_g.weight"] = torch.zeros(850, 4)
    model = TinyG()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(KoeError) as err:
        ck.load_weights(model, state)
    text = str(err.value)
    assert "missing 1: enc_p.tone_emb.weight" in text
    assert "unexpected 1: enc_p.extra.weight" in text
    assert "emb_g.weight [850, 4] in the file vs [3, 4] in the model (file has 850 speakers, the config has 3)" in text
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing half-loaded


def test_release_without_enc_q_and_fp16_loads_for_inference():
    src = _perturb(TinyG(), 3)
    state = {k: v.half() for k, v in src.state_dict().items() if "enc_q" not in k}
    model = TinyG()
    report = ck.load_weights(model, {"model": state, "iteration": 0})
    assert report.loaded == len(state) and report.total == len(src.state_dict())
    assert any("release checkpoint" in m for m in report.messages)
    assert any("float16" in m for m in report.messages)
    assert model.enc_p.emb.weight.dtype == torch.float32
    assert torch.equal(model.enc_p.emb.weight, src.enc_p.emb.weight.half().float())


def test_loads_into_folded_and_ddp_style_models():
    src = _perturb(TinyG(), 4)
    folded = TinyG()
    nn.utils.remove_weight_norm(folded.dec.ups[0])
    nn.utils.remove_weight_norm(folded.enc_q.enc.in_layers[0])
    ck.load_weights(folded, src.state_dict())
    src_w = src.dec.ups[0].weight_g * src.dec.ups[0].weight_v / src.dec.ups[0].weight_v.norm(dim=(1, 2), keepdim=True)
    assert torch.allclose(folded.dec.ups[0].weight, src_w, atol=1e-6)
    prefixed = {f"module.{k}": v for k, v in src.state_dict().items()}
    plain = TinyG()
    ck.load_weights(plain, prefixed)
    assert _same(plain, src)


# --- partial loading (fine-tuning) -------------------------------------------------------------------


def test_partial_fewer_speakers_and_bigger_symbol_table():
    base = _perturb(TinyG(n_vocab=112, n_speakers=850), 5)
    torch.manual_seed(1)
    voice = TinyG(n_vocab=120, n_speakers=2)
    init_emb = voice.enc_p.emb.weight.detach().clone()
    lines = []
    report = ck.load_weights(voice, base.state_dict(), partial=True, log=lines.append)
    assert report.loaded == report.total and lines == report.messages
    assert torch.equal(voice.enc_p.emb.weight[:112], base.enc_p.emb.weight)
    assert torch.equal(voice.enc_p.emb.weight[112:], init_emb[112:])  # new symbols keep their init
    assert torch.equal(voice.emb_g.weight, base.emb_g.weight[:2])
    assert torch.equal(voice.dec.ups[0].weight_v, base.dec.ups[0].weight_v)
    joined = "\n".join(report.messages)
    assert "emb_g.weight: [850, 4] in the base model, [2, 4] here: base model has 850 speakers, this voice has 2" in joined
    assert "enc_p.emb.weight: [112, 8] in the base model, [120, 8] here: base model has 112 phone symbols, this voice has 120" in joined
    assert "8 new symbol rows re-initialised" in joined
    assert len(report.messages) == 2


def test_partial_more_speakers_other_gin_and_release_base():
    base = _perturb(TinyG(n_speakers=3, gin=4), 6)
    state = {k: v for k, v in base.state_dict().items() if "enc_q" not in k}
    torch.manual_seed(2)
    voice = TinyG(n_speakers=5, gin=6)
    init = {k: v.clone() for k, v in voice.state_dict().items()}
    report = ck.load_weights(voice, state, partial=True)
    text = "\n".join(report.messages)
    assert "emb_g.weight: [3, 4] in the base model, [5, 6] here: speaker embedding size (gin_channels) is 4 in the base model, 6 in this voice: re-initialised" in text
    assert "enc_p.spk_emb_linear.weight: [8, 4] in the base model, [8, 6] here: speaker-conditioning size" in text
    assert "not in the base model, initialised fresh: 5 tensors (enc_q.pre.* (2), enc_q.enc.* (3))" in text
    assert torch.equal(voice.emb_g.weight, init["emb_g.weight"])  # re-initialised = kept its own init
    assert not torch.equal(voice.emb_g.weight, torch.zeros_like(voice.emb_g.weight))
    assert torch.equal(voice.enc_p.ja_bert_proj.weight, base.enc_p.ja_bert_proj.weight)  # never zeroed
    assert set(report.reinitialised) >= {"emb_g.weight", "dec.cond.weight", "enc_q.pre.weight"}


def test_partial_load_with_zero_matches_is_an_error():
    base = {k: torch.zeros(1, 1) for k in TinyG().state_dict()}
    with pytest.raises(KoeError, match="none of the .* tensors"):
        ck.load_weights(TinyG(), base, partial=True)


# --- finding and rotating -------------------------------------------------------------------------


def _touch_ckpt(folder, name):
    ck.save_checkpoint(folder / name, {"w": torch.zeros(1)}, epoch=1, step=ck.checkpoint_step(name),
                       learning_rate=1e-4)


def test_latest_checkpoints_skips_incomplete_g(tmp_path):
    assert ck.latest_checkpoints(tmp_path) is None
    for name in ["G_0.pth", "D_0.pth", "DUR_0.pth", "G_100.pth", "D_100.pth", "WD_100.pth", "DUR_100.pth",
                 "G_200.pth", "D_200.pth", "G_1000_release.pth"]:
        _touch_ckpt(tmp_path, name)
    (tmp_path / "G_300.pth").write_bytes(b"PK\x03\x04 truncated")
    step, files = ck.latest_checkpoints(tmp_path)
    assert step == 200
    assert files == {"G": tmp_path / "G_200.pth", "D": tmp_path / "D_200.pth", "DUR": None, "WD": None}
    assert ck.latest_checkpoints(tmp_path / "missing") is None


def test_rotate_keeps_newest_per_network_and_step_zero(tmp_path):
    for step in [0, 100, 200, 300, 400]:
        for kind in ck.KINDS:
            _touch_ckpt(tmp_path, f"{kind}_{step}.pth")
    # modification times in reverse order must not matter: we sort by step
    for i, p in enumerate(sorted(tmp_path.iterdir())):
        os.utime(p, (1000 - i, 1000 - i))
    deleted = ck.rotate_checkpoints(tmp_path, keep=2)
    left = sorted(p.name for p in tmp_path.iterdir())
    expected = sorted(f"{k}_{s}.pth" for k in ck.KINDS for s in (0, 300, 400))
    assert left == expected and len(deleted) == 8
    assert ck.rotate_checkpoints(tmp_path, keep=0) == []


# --- release export -------------------------------------------------------------------------------


@pytest.mark.parametrize("fp16,use_st", [(False, False), (True, False), (True, True)])
def test_export_release_loads_back(tmp_path, fp16, use_st):
    src = _perturb(TinyG(), 7)
    opt = torch.optim.AdamW(src.parameters())
    g = ck.save_checkpoint(tmp_path / "G_500.pth", src, opt, epoch=9, step=500, learning_rate=2e-4)
    out = ck.export_release(g, tmp_path / "voice_release.pth", fp16=fp16, safetensors=use_st)
    assert out.suffix == (".safetensors" if use_st else ".pth") and out.is_file()
    data = ck.read_checkpoint(out)
    assert not any("enc_q" in k for k in data["model"]) and data["optimizer"] is None
    dtype = torch.float16 if fp16 else torch.float32
    assert all(v.dtype == dtype for v in data["model"].values())
    if use_st:
        assert data["koe_format"] == "bert-vits2-2.3-G-release" and data["koe_step"] == 500
    else:
        raw = torch.load(out, weights_only=True)
        assert raw["iteration"] == 0 and raw["learning_rate"] == 0.0001
    model = TinyG()
    report = ck.load_weights(model, out)
    assert report.loaded == report.total - 5  # enc_q's 5 tensors stay as initialised
    assert torch.equal(model.dec.ups[0].weight_v, src.dec.ups[0].weight_v.to(dtype).float())
    assert out.stat().st_size < g.stat().st_size
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_export_release_refuses_non_generator(tmp_path, golden_dir):
    with pytest.raises(KoeError, match=r"WD_1000.pth: this file is a WavLM discriminator \(WD_\*.pth\), not a generator"):
        ck.export_release(golden_dir / "model-small" / "WD_1000.pth", tmp_path / "x.pth")


# --- golden Bert-VITS2 files into our networks ----------------------------------------------------


@pytest.fixture(scope="module")
def small_config(golden_dir):
    return VoiceConfig.load(golden_dir / "model-small" / "config.json")


def test_golden_files_read_and_identify(golden_dir):
    for kind in ("G", "DUR", "WD"):
        ckpt = ck.read_checkpoint(golden_dir / "model-small" / f"{kind}_1000.pth")
        assert ck.identify_checkpoint(ckpt) == kind
        assert ck.checkpoint_epoch_step(ckpt, golden_dir / f"{kind}_1000.pth") == (7, 1000)


def test_golden_g_strict_load(golden_dir, small_config, tmp_path):
    from vits.models import build_generator

    torch.manual_seed(0)
    g = build_generator(small_config)
    report = ck.load_weights(g, golden_dir / "model-small" / "G_1000.pth", kind="G")
    assert report.loaded == report.total == 1071 and report.messages == []
    # our re-save is byte-for-byte the same tensors under the same names
    ours = ck.save_checkpoint(tmp_path / "G_1000.pth", g, epoch=7, step=1000, learning_rate=2e-4)
    a = ck.read_checkpoint(ours)["model"]
    b = ck.read_checkpoint(golden_dir / "model-small" / "G_1000.pth")["model"]
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_golden_dur_wd_strict_load(golden_dir, small_config):
    from vits.discriminators import DurationDiscriminator, WavLMDiscriminator

    torch.manual_seed(0)
    hidden, gin = small_config.model.hidden_channels, small_config.model.gin_channels
    dur = DurationDiscriminator(hidden, hidden, 3, 0.1, gin_channels=gin)  # as train_ms.py builds it
    wd = WavLMDiscriminator(768, 13, 64)
    r1 = ck.load_weights(dur, golden_dir / "model-small" / "DUR_1000.pth", kind="DUR")
    r2 = ck.load_weights(wd, golden_dir / "model-small" / "WD_1000.pth", kind="WD")
    assert (r1.loaded, r1.total, r2.loaded, r2.total) == (22, 22, 15, 15)
