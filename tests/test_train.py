"""Training runs end to end on a tiny config: torchrun DDP, resume after kill -9, SIGTERM, batch-size change,
fine-tuning from a base model, freeze toggles and overfitting one clip (issue 3)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.test_data import make_voice, tiny_config
from vits.config import VoiceConfig
from vits.progress import parse_progress

REPO = Path(__file__).resolve().parent.parent
SCALARS = ["loss/g/total", "loss/g/mel", "loss/g/kl", "loss/g/dur", "loss/g/fm", "loss/g/gen", "loss/g/wavlm",
           "loss/d/total", "loss/d/dur", "loss/d/wavlm", "loss/g/commit", "learning_rate", "grad_norm/g",
           "grad_norm/d", "perf/steps_per_second", "perf/gpu_mem_gb"]


pytestmark = pytest.mark.torch_threads(1)  # tests/conftest.py sets and restores it per test


def make_wavlm(folder: Path) -> Path:
    """A tiny random WavLM (hidden 32, 2 layers -> 3 hidden states) saved like a hub download."""
    from transformers import WavLMConfig, WavLMModel

    torch.manual_seed(0)
    config = WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                         num_buckets=32, max_bucket_distance=64)
    WavLMModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A voice, a tiny WavLM and a config.yml pointing at it; environment for subprocess runs."""
    root = tmp_path_factory.mktemp("train")
    voice = make_voice(root, n_clips=4, n_val=1)
    wavlm = make_wavlm(root / "wavlm")
    settings = root / "config.yml"
    settings.write_text(f"wavlm: {wavlm}\nbase_model:\n  folder: {root / 'no_base'}\ndevice: cpu\n",
                        encoding="utf-8")
    run_env = dict(os.environ, KOE_CONFIG=str(settings), OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return {"root": root, "voice": voice, "wavlm": wavlm, "env": run_env}


def set_train(voice: Path, **values) -> None:
    cfg = VoiceConfig.load(voice / "configs" / "config.json")
    for key, value in values.items():
        setattr(cfg.train, key, value)
    cfg.save(voice / "configs" / "config.json")


def steps_of(voice: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (voice / "models").glob("G_*.pth"))


def progress_lines(text: str) -> list[dict]:
    return [p for p in (parse_progress(line) for line in text.splitlines()) if p]


def tb_scalars(log_dir: Path) -> dict[str, list[int]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_torchrun_two_processes_then_batch_change_kill9_resume_sigterm(env):
    """One voice through a sequence of runs, each resuming from the previous one."""
    voice = env["voice"]
    set_train(voice, log_interval=2, eval_interval=4, batch_size=1, keep_ckpts=1)

    # 1. Two-process torchrun (gloo): checkpoints, TensorBoard scalars, eval audio.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pipeline.train", str(voice), "--device", "cpu", "--max-steps", "8"]
    out = subprocess.run(cmd, cwd=REPO, env=env["env"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "2 process(es)" in out.stdout and "WavLM discriminator on" in out.stdout
    assert steps_of(voice) == [8]  # G_4 was written, then rotated away (keep_ckpts=1)
    lines = progress_lines(out.stdout)
    losses = [p for p in lines if "losses" in p]
    assert [p["step"] for p in losses] == [2, 4, 6, 8]  # rank 0 only: one line per log step
    assert set(losses[-1]["losses"]) == {s[len("loss/"):] for s in SCALARS if s.startswith("loss/")}
    assert losses[-1]["losses"]["g/wavlm"] > 0 and losses[-1]["total"] == 8 and "eta_s" in losses[-1]
    scalars = tb_scalars(voice / "logs" / "tensorboard")
    for tag in SCALARS:
        assert scalars.get(tag) == [2, 4, 6, 8], tag
    eval_dir = voice / "logs" / "eval" / "step_00000008"
    index = json.loads((eval_dir / "index.json").read_text(encoding="utf-8"))
    assert index["step"] == 8 and set(index["items"][0]["files"]) == {"gt", "sdp0", "sdp1"}
    for name in index["items"][0]["files"].values():
        assert (eval_dir / name).stat().st_size > 1000
    ckpt = torch.load(voice / "models" / "G_8.pth", weights_only=True)
    assert ckpt["koe_step"] == 8 and "module." not in next(iter(ckpt["model"]))

    # 2. Resume in one process with a different batch size (the step count goes on), kill -9 right after
    #    the next checkpoint appears.
    log_file = env["root"] / "run2.log"
    with open(log_file, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.train", str(voice), "--device", "cpu",
                                 "--max-steps", "100", "--batch-size", "2"], cwd=REPO, env=env["env"],
                                stdout=fh, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 200
            while 12 not in steps_of(voice):
                assert proc.poll() is None and time.monotonic() < deadline, log_file.read_text()[-3000:]
                time.sleep(0.2)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert "resumed from G_8.pth: step 8" in log_file.read_text()
    assert steps_of(voice) == [12]  # G_8 rotated away (keep_ckpts=1)
    assert not list((voice / "models").glob(".*tmp"))

    # 3. Resume from the killed run's last checkpoint, then SIGTERM: the step in flight finishes,
    #    a checkpoint at the current step, exit 0.
    set_train(voice, log_interval=1, eval_interval=1000)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.train", str(voice), "--device", "cpu",
                             "--max-steps", "100"], cwd=REPO, env=env["env"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    head = []
    try:
        for line in proc.stdout:
            head.append(line)
            p = parse_progress(line)
            if p and p.get("step", 0) >= 14 and "losses" in p:
                proc.send_signal(signal.SIGTERM)
                break
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert any("resumed from G_12.pth: step 12" in line for line in head)
    final = [p for p in progress_lines(rest) if p.get("message") == "stopped by signal"]
    assert final, rest
    stopped = final[0]["step"]
    assert stopped >= 14 and steps_of(voice) == [stopped]
    assert f"training finished at step {stopped}" in rest and "signal" in rest
    # TensorBoard: no step twice (purge_step dropped what the killed run logged after step 12).
    logged = tb_scalars(voice / "logs" / "tensorboard")["loss/g/total"]
    assert logged == sorted(set(logged)) and {2, 4, 6, 8, 10, 12, 13, 14} <= set(logged)


def test_finetune_from_base_with_other_speaker_count_and_freeze(env, tmp_path):
    from vits.checkpoints import save_checkpoint
    from vits.discriminators import build_discriminators
    from vits.models import build_generator
    from vits.train import TrainOptions, train

    # A base model for 2 speakers; no WD_0.pth (allowed: WD then trains from scratch).
    base_cfg = tiny_config(n_speakers=2)
    mpd, dur, _ = build_discriminators(base_cfg)
    base = tmp_path / "base"
    for kind, net in (("G", build_generator(base_cfg)), ("D", mpd), ("DUR", dur)):
        save_checkpoint(base / f"{kind}_0.pth", net, epoch=0, step=0, learning_rate=2e-4)

    cfg = tiny_config(n_speakers=3)
    cfg.train.batch_size, cfg.train.log_interval, cfg.train.eval_interval = 2, 1, 1000
    voice = make_voice(tmp_path / "new", n_clips=3, n_val=1, n_speakers=3, cfg=cfg)
    lines: list[str] = []
    result = train(TrainOptions(voice_dir=voice, max_steps=2, base=base, wavlm=env["wavlm"], device="cpu"),
                   log=lines.append)
    text = "\n".join(lines)
    head = next(line for line in lines if line.startswith("base model: loaded"))
    assert head.startswith("base model: loaded ") and " tensors for G, " in head
    n, m = (int(v) for v in head.split("base model: loaded ")[1].split(" tensors")[0].split(" of "))
    assert 0 < n <= m
    assert "for D" in head and "for DUR" in head and "0 of 15 for WD" in head
    assert "no WD file in the base model" in text and "emb_g.weight" in text
    assert text.index("base model: loaded") < text.index('"losses"')  # before the first step
    assert result.step == 2 and (voice / "models" / "G_2.pth").is_file()

    # Toggling a freeze option between runs: the optimizer state moves by name, no crash.
    set_train(voice, freeze_ZH_bert=True, freeze_decoder=True)
    lines.clear()
    result = train(TrainOptions(voice_dir=voice, max_steps=3, use_wavlm=False, device="cpu"), log=lines.append)
    assert result.step == 3 and "frozen: enc_p.bert_proj, dec" in "\n".join(lines)
    before = torch.load(voice / "models" / "G_2.pth", weights_only=True)["model"]
    after = torch.load(voice / "models" / "G_3.pth", weights_only=True)["model"]
    assert torch.equal(before["enc_p.bert_proj.weight"], after["enc_p.bert_proj.weight"])
    assert torch.equal(before["dec.conv_pre.weight"], after["dec.conv_pre.weight"])
    assert not torch.equal(before["enc_p.emb.weight"], after["enc_p.emb.weight"])
    # Unfreezing again: the new parameters start with fresh optimizer state, with a warning.
    set_train(voice, freeze_ZH_bert=False, freeze_decoder=False)
    lines.clear()
    train(TrainOptions(voice_dir=voice, max_steps=4, use_wavlm=False, device="cpu"), log=lines.append)
    assert any("warning" in line and "start fresh" in line for line in lines)
    unfrozen = torch.load(voice / "models" / "G_4.pth", weights_only=True)["model"]
    for name in ("enc_p.bert_proj.weight", "dec.conv_pre.weight", "dec.ups.0.weight_v"):
        assert not torch.equal(after[name], unfrozen[name]), f"{name} did not train after unfreezing"


def test_missing_wavlm_folder_says_where_and_how(env, tmp_path):
    from vits.errors import KoeError
    from vits.train import TrainOptions, train

    with pytest.raises(KoeError) as err:
        train(TrainOptions(voice_dir=env["voice"], max_steps=1, wavlm=tmp_path / "nowhere", device="cpu"))
    assert str(tmp_path / "nowhere") in str(err.value) and "download" in str(err.value)


def test_overfitting_one_clip_halves_the_mel_loss(tmp_path):
    from vits.train import TrainOptions, train

    cfg = tiny_config(n_speakers=1)
    cfg.train.batch_size, cfg.train.log_interval, cfg.train.eval_interval = 1, 1, 100000
    cfg.train.learning_rate = 1e-3
    voice = make_voice(tmp_path, n_clips=1, n_val=1, n_speakers=1, cfg=cfg, seconds=(1.5, 1.5))
    mel = []

    def log(line):
        p = parse_progress(line)
        if p and "losses" in p:
            mel.append(p["losses"]["g/mel"])

    train(TrainOptions(voice_dir=voice, max_steps=30, use_wavlm=False, device="cpu"), log=log)
    assert len(mel) == 30
    assert sum(mel[-5:]) / 5 < 0.5 * mel[0], mel


def test_ten_nonfinite_steps_in_a_row_stop_with_a_clear_message(tmp_path):
    from vits.errors import KoeError
    from vits.train import TrainOptions, train

    cfg = tiny_config(n_speakers=1)
    cfg.train.batch_size, cfg.train.log_interval, cfg.train.eval_interval = 1, 5, 100000
    cfg.train.segment_size = 1024
    cfg.train.c_kl = 1e39  # the KL term overflows float32: an infinite generator loss on every step
    voice = make_voice(tmp_path, n_clips=1, n_val=1, n_speakers=1, cfg=cfg, seconds=(1.0, 1.0))
    lines: list[str] = []
    with pytest.raises(KoeError) as err:
        train(TrainOptions(voice_dir=voice, max_steps=30, use_wavlm=False, device="cpu"), log=lines.append)
    assert "10 training steps in a row had NaN/inf" in str(err.value) and "step 10" in str(err.value)
    assert any("5 step(s) skipped" in line for line in lines)
    assert not list((voice / "models").glob("G_*.pth"))  # nothing saved from a broken run
