"""One training step in the spec §5.4 order, top to bottom:

MAS noise update → G forward → duration discriminator step → MPD step → WavLM discriminator step →
G step (discriminators frozen) → GradScaler update. Returns the step's loss values without a host sync.

A 2.2 voice (2.2 spec §5.3) differs in three places: the batch carries `emo`, G's forward returns the
quantiser's commitment loss (added with weight 1) and no SDP sample, and the duration discriminator is
called once with (logw, logw_) — predicted durations first, MAS durations second, the reverse of 2.3 —
its G term scoring the MAS durations (so, as in 2.2, it gives the generator no gradient). No WavLM.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from vits.commons import slice_segments
from vits.config import VoiceConfig
from vits.errors import KoeError
from vits.losses import (
    discriminator_loss,
    duration_discriminator_loss,
    duration_generator_loss,
    feature_loss,
    generator_loss,
    kl_loss,
)
from vits.mel import mel_spectrogram, spec_to_mel
from vits.train.setup import Networks, unwrap

# The values `train_step` returns, in order; also the TensorBoard scalar names.
TB_SCALARS = (
    "loss/g/total", "loss/g/mel", "loss/g/kl", "loss/g/dur", "loss/g/fm", "loss/g/gen", "loss/g/wavlm",
    "loss/d/total", "loss/d/dur", "loss/d/wavlm", "grad_norm/g", "grad_norm/d", "loss/g/commit",
)
# bf16 runs clip as Bert-VITS2 does (D 200, G 500); fp32 only measures the norm.
CLIP_D, CLIP_G = 200.0, 500.0


def _duration_probabilities(dur_disc, hidden_x, x_mask, logw_, logw, logw_sdp, g):
    """(p_real, p_fake) [B,T_x,1]: the (logw_, logw) and (logw_, logw_sdp) runs added, done as one batch."""
    b = hidden_x.shape[0]
    p_r, p_g = dur_disc(torch.cat([hidden_x, hidden_x]), torch.cat([x_mask, x_mask]), torch.cat([logw_, logw_]),
                        torch.cat([logw, logw_sdp]), torch.cat([g, g]))
    p_r, p_g = p_r.float(), p_g.float()
    return p_r[:b] + p_r[b:], p_g[:b] + p_g[b:]


def _duration_probabilities_22(dur_disc, hidden_x, x_mask, logw, logw_, g):
    """(p_first, p_second) [B,T_x,1] of 2.2's single call with (logw, logw_) (2.2 spec §5.3)."""
    p_first, p_second = dur_disc(hidden_x, x_mask, logw, logw_, g)
    return p_first.float(), p_second.float()


def _set_requires_grad(module: torch.nn.Module | None, flag: bool) -> None:
    if module is not None:
        for p in module.parameters():
            p.requires_grad_(flag)


def _grad_norm(params: list[torch.Tensor], clip: float | None) -> torch.Tensor:
    """Total L2 grad norm (a device tensor, no sync); clips to `clip` when given."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
    return torch.nn.utils.get_total_norm(grads, foreach=True)


def _optimizer_step(nets: Networks, kind: str, loss: torch.Tensor, params, clip: float | None) -> torch.Tensor:
    """Backward through the GradScaler, measure (and with `clip`, clip) the grad norm, step; returns the norm."""
    opt = nets.optims[kind]
    opt.zero_grad(set_to_none=True)
    nets.scaler.scale(loss).backward()
    nets.scaler.unscale_(opt)
    norm = _grad_norm(params, clip)
    nets.scaler.step(opt)
    return norm


def train_step(nets: Networks, batch, cfg: VoiceConfig, global_step: int, device: torch.device,
               bf16: bool) -> torch.Tensor:
    """One batch in the spec §5.4 order; returns the `TB_SCALARS` values as one detached tensor (no sync).

    `global_step` is the number of optimizer steps done before this one (it sets the MAS noise).
    """
    d = cfg.data

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    (x, x_len, spec, spec_len, wav, _wav_len, sid, tone, lang, bert, ja_bert, en_bert, *emo) = (
        t.to(device, non_blocking=True) for t in batch)
    g_model = unwrap(nets.g)
    v22 = g_model.emotion
    # the extra tensor of a batch: emo for a 2.2 voice, ko_bert for a Korean-enabled one
    extra = {"ko_bert": emo.pop()} if getattr(g_model, "korean", False) and emo else {}
    if v22 and not emo:
        raise KoeError("this 2.2 voice's batches carry no emotion vectors", where=cfg.data.training_files,
                       fix='the config must say "version": "2.2" (no model.slm) so the loader reads the .emo.npy files')
    if g_model.use_noise_scaled_mas:
        g_model.current_mas_noise_scale = max(
            g_model.mas_noise_scale_initial - g_model.noise_scale_delta * global_step, 0.0)
    zero = torch.zeros((), device=device)
    loss_commit, logw_sdp = zero, None
    with autocast():
        out = nets.g(x, x_len, spec, spec_len, sid, tone, lang, bert, ja_bert, en_bert, *emo, **extra)
    if v22:
        (y_hat, l_length, _attn, ids_slice, x_mask, z_mask, (_z, z_p, m_p, logs_p, _m_q, logs_q),
         (hidden_x, logw, logw_), g, loss_commit) = out
    else:
        (y_hat, l_length, _attn, ids_slice, x_mask, z_mask, (_z, z_p, m_p, logs_p, _m_q, logs_q),
         (hidden_x, logw, logw_, logw_sdp), g) = out

    frames = cfg.segment_frames
    # The mel is frame-wise, so slicing the spectrogram first gives the same y_mel for less work.
    y_mel = spec_to_mel(slice_segments(spec, ids_slice, frames), d.filter_length, d.n_mel_channels,
                        d.sampling_rate, d.mel_fmin, d.mel_fmax)
    y_hat = y_hat.float()
    y_hat_mel = mel_spectrogram(y_hat.squeeze(1), d.filter_length, d.n_mel_channels, d.sampling_rate,
                                d.hop_length, d.win_length, d.mel_fmin, d.mel_fmax)
    y = slice_segments(wav, ids_slice * d.hop_length, cfg.train.segment_size)
    clip_d, clip_g = (CLIP_D, CLIP_G) if bf16 else (None, None)

    h_real = h_fake = None
    if nets.wavlm is not None:
        with autocast():
            h_real = nets.wavlm.hidden_real(y)
            h_fake = nets.wavlm.hidden_fake(y_hat)

    # Discriminators: duration, MPD, WavLM (each on detached generator outputs).
    loss_dur_disc = zero
    if nets.dur is not None:
        with autocast():
            if v22:
                p_r, p_g = _duration_probabilities_22(nets.dur, hidden_x.detach(), x_mask.detach(), logw.detach(),
                                                      logw_.detach(), g.detach())
            else:
                p_r, p_g = _duration_probabilities(nets.dur, hidden_x.detach(), x_mask.detach(), logw_.detach(),
                                                   logw.detach(), logw_sdp.detach(), g.detach())
        loss_dur_disc = duration_discriminator_loss(p_r, p_g)[0]
        _optimizer_step(nets, "DUR", loss_dur_disc, list(nets.dur.parameters()), clip_d)
    with autocast():
        y_d_r, y_d_g, _, _ = nets.mpd(y, y_hat.detach())
    loss_disc = discriminator_loss(y_d_r, y_d_g)[0]
    grad_norm_d = _optimizer_step(nets, "D", loss_disc, list(nets.mpd.parameters()), clip_d)
    loss_wd = zero
    if nets.wavlm is not None:
        with autocast():
            loss_wd = nets.wavlm.discriminator(nets.wd, h_real, h_fake)
        _optimizer_step(nets, "WD", loss_wd.float(), list(nets.wd.parameters()), clip_d)

    # Generator: discriminators frozen (their grads are not needed) and called without DDP hooks.
    mpd, dur_disc, wd = unwrap(nets.mpd), unwrap(nets.dur), unwrap(nets.wd)
    for net in (mpd, dur_disc, wd):
        _set_requires_grad(net, False)
    try:
        with autocast():
            _, y_d_g, fmap_r, fmap_g = mpd(y, y_hat)
            loss_dur_gen = zero
            if dur_disc is not None and v22:
                _, p_g = _duration_probabilities_22(dur_disc, hidden_x, x_mask, logw, logw_, g)
            elif dur_disc is not None:
                _, p_g = _duration_probabilities(dur_disc, hidden_x, x_mask, logw_, logw, logw_sdp, g)
            loss_lm = loss_lm_gen = zero
            if nets.wavlm is not None:
                loss_lm, loss_lm_gen = nets.wavlm.generator(wd, h_real, h_fake)
        if dur_disc is not None:
            loss_dur_gen = duration_generator_loss(p_g)[0]
        t = cfg.train
        loss_dur = torch.sum(l_length.float())
        loss_mel = F.l1_loss(y_mel, y_hat_mel) * t.c_mel
        loss_kl = kl_loss(z_p, logs_q, m_p, logs_p, z_mask) * t.c_kl
        loss_fm = feature_loss(fmap_r, fmap_g)
        loss_gen = generator_loss(y_d_g)[0]
        loss_commit = loss_commit.float()  # weight 1: the 0.1 is inside the quantiser (2.2 spec §5.3)
        loss_g = (loss_gen + loss_fm + loss_mel + loss_dur + loss_kl + loss_lm + loss_lm_gen + loss_dur_gen
                  + loss_commit)
        grad_norm_g = _optimizer_step(nets, "G", loss_g, nets.g_params, clip_g)
    finally:
        for net in (mpd, dur_disc, wd):
            _set_requires_grad(net, True)
    nets.scaler.update()

    loss_d = loss_disc + loss_dur_disc + loss_wd
    return torch.stack([loss_g, loss_mel, loss_kl, loss_dur, loss_fm, loss_gen + loss_dur_gen,
                        loss_lm + loss_lm_gen, loss_d, loss_dur_disc, loss_wd,
                        grad_norm_g.to(device), grad_norm_d.to(device), loss_commit]).detach().float()
