"""Training losses of Bert-VITS2 2.3 (spec §5.3): LSGAN, feature matching, KL, duration discriminator.

All losses are computed in float32 even under autocast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def feature_loss(fmap_r: Sequence[Sequence[torch.Tensor]], fmap_g: Sequence[Sequence[torch.Tensor]]
                 ) -> torch.Tensor:
    """Feature matching: 2 · Σ_k Σ_l mean|f_r - f_g| (real maps detached).

    Args:
        fmap_r, fmap_g: per sub-discriminator, its list of feature maps for real / generated audio.
    Returns:
        scalar tensor.
    """
    loss = 0.0
    for maps_r, maps_g in zip(fmap_r, fmap_g):
        for r, g in zip(maps_r, maps_g):
            loss = loss + torch.mean(torch.abs(r.float().detach() - g.float()))
    return loss * 2


def discriminator_loss(real_outputs: Sequence[torch.Tensor], fake_outputs: Sequence[torch.Tensor]):
    """LSGAN discriminator loss Σ_k mean((1 - D_k(y))²) + mean(D_k(ŷ)²).

    Iterates over the first axis, so a single [B, ...] tensor is treated per batch item (that is how the
    reference scores the duration discriminator).

    Returns:
        (loss, r_losses, g_losses): scalar tensor and per-entry detached scalar tensors.
    """
    loss = 0.0
    r_losses, g_losses = [], []
    for dr, dg in zip(real_outputs, fake_outputs):
        r_loss = torch.mean((1 - dr.float()) ** 2)
        g_loss = torch.mean(dg.float() ** 2)
        loss = loss + r_loss + g_loss
        r_losses.append(r_loss.detach())
        g_losses.append(g_loss.detach())
    return loss, r_losses, g_losses


def generator_loss(fake_outputs: Sequence[torch.Tensor]):
    """LSGAN generator loss Σ_k mean((1 - D_k(ŷ))²).

    Returns:
        (loss, per): scalar tensor and the per-entry scalar tensors (with grad).
    """
    loss = 0.0
    per = []
    for dg in fake_outputs:
        g_loss = torch.mean((1 - dg.float()) ** 2)
        per.append(g_loss)
        loss = loss + g_loss
    return loss, per


def kl_loss(z_p: torch.Tensor, logs_q: torch.Tensor, m_p: torch.Tensor, logs_p: torch.Tensor,
            z_mask: torch.Tensor) -> torch.Tensor:
    """KL term Σ[(logs_p - logs_q - ½) + ½(z_p - m_p)² e^{-2 logs_p}]·mask / Σ mask.

    Args:
        z_p: [B, C, T_y] flowed posterior sample; logs_q: posterior log-std;
        m_p, logs_p: prior mean/log-std expanded to frames; z_mask: [B, 1, T_y].
    Returns:
        scalar tensor.
    """
    z_p, logs_q, m_p, logs_p, z_mask = (t.float() for t in (z_p, logs_q, m_p, logs_p, z_mask))
    kl = logs_p - logs_q - 0.5
    kl = kl + 0.5 * ((z_p - m_p) ** 2) * torch.exp(-2.0 * logs_p)
    # Mask broadcasts over channels, but the denominator counts frames only, as in the reference.
    return torch.sum(kl * z_mask) / torch.sum(z_mask)


def duration_discriminator_loss(prob_real: torch.Tensor, prob_fake: torch.Tensor):
    """Duration-discriminator loss over the batch axis: Σ_b mean((1 - p_r[b])²) + mean(p_g[b]²).

    Args:
        prob_real, prob_fake: [B, T_x, 1] probabilities; in 2.3 each is the elementwise sum of the
            (logw_, logw) and (logw_, logw_sdp) runs. Padded positions are included, as in the reference.
    Returns:
        (loss, r_losses, g_losses) as `discriminator_loss`.
    """
    return discriminator_loss(list(prob_real.unbind(0)), list(prob_fake.unbind(0)))


def duration_generator_loss(prob_fake: torch.Tensor):
    """Adversarial duration loss for G: Σ_b mean((1 - p_g[b])²). Returns (loss, per-item losses)."""
    return generator_loss(list(prob_fake.unbind(0)))
