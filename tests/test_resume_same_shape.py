"""Resume and fine-tune semantics a user relies on (README "Training resumes by itself", docs/training.md):

* a same-shape resume skips exactly the batches of the half-done epoch and continues the optimizer,
  the LR schedule and the batch order of an uninterrupted run;
* a plain Bert-VITS2 checkpoint set (no `koe_*` fields) resumes at the step in its file name;
* fine-tuning starts from `models/G_0.pth` ... (README) and from `pipeline.train --base DIR`.

In-process runs of the real loop on the tiny config; the only addition is a spy on the batches it trains.
"""

from __future__ import annotations

import pytest
import torch

from tests.test_data import make_voice, tiny_config
from vits.progress import parse_progress

LR0, DECAY = 1e-3, 0.5  # a visible per-epoch LR decay


pytestmark = pytest.mark.torch_threads(1)  # tests/conftest.py sets and restores it per test


@pytest.fixture
def batches(monkeypatch):
    """Each trained batch as its clip lengths (clips have distinct lengths), in training order."""
    import vits.train.loop as loop

    seen: list[tuple[int, ...]] = []
    real = loop.train_step

    def spy(nets, batch, *args, **kwargs):
        seen.append(tuple(sorted(batch[5].tolist())))
        return real(nets, batch, *args, **kwargs)

    monkeypatch.setattr(loop, "train_step", spy)
    return seen


def _voice(root):
    cfg = tiny_config(n_speakers=2)
    t = cfg.train
    t.batch_size, t.log_interval, t.eval_interval, t.keep_ckpts = 1, 1, 100000, 20
    t.learning_rate, t.lr_decay = LR0, DECAY
    return make_voice(root, n_clips=3, n_val=1, cfg=cfg)


def _train(voice, max_steps, **opts):
    from vits.train import TrainOptions, train

    lines: list[str] = []
    result = train(TrainOptions(voice_dir=voice, max_steps=max_steps, use_wavlm=False, device="cpu", **opts),
                   log=lines.append)
    return result, lines


def _lrs(lines) -> dict[int, float]:
    return {p["step"]: p["lr"] for p in map(parse_progress, lines) if p and "losses" in p}


def _adam_steps(path) -> set[float]:
    state = torch.load(path, weights_only=True)["optimizer"]["state"]
    return {float(s["step"]) for s in state.values()}


def test_same_shape_resume_skips_the_done_batches_and_continues_optimizer_and_lr(tmp_path, batches):
    straight = _voice(tmp_path / "a")
    _, lines = _train(straight, 7)
    order, lrs = list(batches), _lrs(lines)
    assert len(set(order[:3])) == 3 and sorted(order[:3]) == sorted(order[3:6])  # 3 batches an epoch
    assert lrs == pytest.approx({s: LR0 * DECAY ** ((s - 1) // 3) for s in range(1, 8)})

    voice = _voice(tmp_path / "b")
    batches.clear()
    _, first = _train(voice, 2)  # stops inside epoch 1
    assert batches == order[:2]
    batches.clear()
    result, second = _train(voice, 7)
    text = "\n".join(second)
    assert "resumed from G_2.pth: step 2, epoch 1, 2 batch(es) of this epoch already done" in text
    assert batches == order[2:7]  # the last batch of epoch 1, then epochs 2 and 3 in the same order
    assert result.step == 7 and result.epoch == 3
    assert "warning" not in text, text
    assert _lrs(first) | _lrs(second) == pytest.approx(lrs)
    # AdamW's step count goes on from the file (a fresh optimizer would count 5, not 7) ...
    for kind in ("G", "D", "DUR"):
        assert _adam_steps(voice / "models" / f"{kind}_7.pth") == {7.0}, kind
    # ... and the LR schedule ends where the uninterrupted run's does.
    sched = torch.load(voice / "models" / "G_7.pth", weights_only=True)["koe_scheduler"]
    assert sched == torch.load(straight / "models" / "G_7.pth", weights_only=True)["koe_scheduler"]


BV2_KEYS = ("model", "iteration", "optimizer", "learning_rate")  # what Bert-VITS2's save_checkpoint writes


@pytest.mark.parametrize("skip_optimizer", [True, False])
def test_resume_from_plain_bert_vits2_checkpoints(tmp_path, batches, skip_optimizer):
    voice = _voice(tmp_path)
    _train(voice, 2)
    for path in (voice / "models").glob("*_2.pth"):
        ckpt = torch.load(path, weights_only=True)
        torch.save({k: ckpt[k] for k in BV2_KEYS}, path)  # no koe_step, koe_scheduler, koe_extra
    cfg_path = voice / "configs" / "config.json"
    cfg_path.write_text(cfg_path.read_text().replace('"skip_optimizer": true',
                                                     f'"skip_optimizer": {str(skip_optimizer).lower()}'))
    batches.clear()
    result, lines = _train(voice, 4)
    text = "\n".join(lines)
    # The step comes from the file name, the epoch from "iteration"; without koe_extra nothing says how
    # much of epoch 1 was done, so the epoch starts over.
    assert "resumed from G_2.pth: step 2, epoch 1\n" in text + "\n" and "already done" not in text
    assert result.step == 4 and len(batches) == 2
    assert _lrs(lines) == pytest.approx({3: LR0, 4: LR0})
    # train.skip_optimizer (Bert-VITS2's switch): a fresh AdamW (2 steps), or its state by index (4 steps)
    assert _adam_steps(voice / "models" / "G_4.pth") == ({2.0} if skip_optimizer else {4.0})
    assert "warning" not in text, text


def _base_model(folder):
    """G_0/D_0/DUR_0.pth of a random 2-speaker tiny model; returns its G state."""
    from vits.checkpoints import save_checkpoint
    from vits.discriminators import build_discriminators
    from vits.models import build_generator

    torch.manual_seed(123)
    cfg = tiny_config(n_speakers=2)
    g = build_generator(cfg)
    mpd, dur, _ = build_discriminators(cfg)
    for kind, net in (("G", g), ("D", mpd), ("DUR", dur)):
        save_checkpoint(folder / f"{kind}_0.pth", net, epoch=0, step=0, learning_rate=LR0)
    return {k: v.clone() for k, v in g.state_dict().items()}


@pytest.mark.parametrize("where", ["models", "--base"])
def test_finetune_starts_from_the_base_model(tmp_path, monkeypatch, capsys, where):
    """README: a base model placed as models/G_0.pth ... or given with --base is where training starts."""
    from pipeline.train import main

    voice = _voice(tmp_path / "v")
    settings = tmp_path / "config.yml"
    settings.write_text(f"base_model:\n  folder: {tmp_path / 'no_base'}\ndevice: cpu\n", encoding="utf-8")
    monkeypatch.setenv("KOE_CONFIG", str(settings))
    folder = voice / "models" if where == "models" else tmp_path / "base"
    base = _base_model(folder)
    cfg_path = voice / "configs" / "config.json"
    cfg_path.write_text(cfg_path.read_text().replace('"freeze_decoder": false', '"freeze_decoder": true'))
    argv = [str(voice), "--max-steps", "1", "--no-wavlm", "--device", "cpu"]
    assert main(argv + (["--base", str(folder)] if where == "--base" else [])) == 0
    out = capsys.readouterr().out
    assert f"(from {folder})" in out and "base model: loaded" in out and "from scratch" not in out
    tuned = torch.load(voice / "models" / "G_1.pth", weights_only=True)["model"]
    # The frozen decoder is the base model's, tensor for tensor; the rest moved one step away from it.
    dec = [k for k in base if k.startswith("dec.")]
    assert dec and all(torch.equal(tuned[k], base[k]) for k in dec)
    emb = tuned["enc_p.emb.weight"]
    assert not torch.equal(emb, base["enc_p.emb.weight"]) and torch.allclose(emb, base["enc_p.emb.weight"],
                                                                              atol=1e-2)
