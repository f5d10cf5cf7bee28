"""Linear and mel spectrograms exactly as Bert-VITS2 2.3 computes them (spec §8).

The Slaney mel filterbank is re-implemented here (same numbers as librosa's default `filters.mel`), so
librosa is not needed at run time. Hann windows and filterbanks are cached per (device, dtype).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

_windows: dict[tuple, torch.Tensor] = {}
_filterbanks: dict[tuple, torch.Tensor] = {}

# Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(freqs: torch.Tensor) -> torch.Tensor:
    """Hz -> Slaney mel (float64 tensor in, same shape out)."""
    linear = freqs / _F_SP
    log_part = _MIN_LOG_MEL + torch.log(torch.clamp(freqs, min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return torch.where(freqs >= _MIN_LOG_HZ, log_part, linear)


def mel_to_hz(mels: torch.Tensor) -> torch.Tensor:
    """Slaney mel -> Hz (inverse of `hz_to_mel`)."""
    linear = _F_SP * mels
    log_part = _MIN_LOG_HZ * torch.exp(_LOGSTEP * (mels - _MIN_LOG_MEL))
    return torch.where(mels >= _MIN_LOG_MEL, log_part, linear)


def _build_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> torch.Tensor:
    if fmax is None:
        fmax = sr / 2.0
    d = torch.float64
    fft_freqs = torch.linspace(0, sr / 2.0, 1 + n_fft // 2, dtype=d)
    mel_edges = torch.linspace(float(hz_to_mel(torch.tensor(float(fmin), dtype=d))),
                               float(hz_to_mel(torch.tensor(float(fmax), dtype=d))), n_mels + 2, dtype=d)
    hz_edges = mel_to_hz(mel_edges)
    widths = hz_edges[1:] - hz_edges[:-1]
    ramps = hz_edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:n_mels] / widths[:n_mels, None]
    upper = ramps[2:n_mels + 2] / widths[1:n_mels + 1, None]
    # Triangles are stored as float32 before the area normalisation, exactly like librosa does.
    weights = torch.clamp(torch.minimum(lower, upper), min=0).float().double()
    enorm = 2.0 / (hz_edges[2:n_mels + 2] - hz_edges[:n_mels])
    return (weights * enorm[:, None]).float()


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None,
                   *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
                   ) -> torch.Tensor:
    """Slaney-scale, Slaney-normalised mel filterbank (librosa's `filters.mel` defaults).

    Args:
        sr: sample rate; n_fft: FFT size; n_mels: number of bands; fmin/fmax: band edges in Hz
            (fmax None = sr/2). device/dtype: where the cached matrix lives.
    Returns:
        [n_mels, n_fft // 2 + 1] tensor (cached; do not modify in place).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    key = (sr, n_fft, n_mels, float(fmin), None if fmax is None else float(fmax), str(device), dtype)
    if key not in _filterbanks:
        _filterbanks[key] = _build_filterbank(sr, n_fft, n_mels, fmin, fmax).to(device=device, dtype=dtype)
    return _filterbanks[key]


def _hann(win: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    key = (win, str(device), dtype)
    if key not in _windows:
        _windows[key] = torch.hann_window(win, periodic=True, dtype=dtype, device=device)
    return _windows[key]


def spectrogram(wav: torch.Tensor, n_fft: int = 2048, hop: int = 512, win: int = 2048) -> torch.Tensor:
    """Linear magnitude spectrogram (the posterior-encoder input).

    Reflect-pads (n_fft - hop)/2 on both sides, STFT with a periodic Hann window and center=False,
    magnitude sqrt(re² + im² + 1e-6).

    Args:
        wav: [B, L] (or [L], or [B, 1, L]) float waveform in [-1, 1].
    Returns:
        [B, n_fft // 2 + 1, T] with T = (L + 2·pad - n_fft) // hop + 1 (unbatched input gives [F, T]).
    Raises:
        ValueError: if the waveform is shorter than the reflect padding allows.
    """
    squeeze = wav.dim() == 1
    if wav.dim() == 3:
        wav = wav.squeeze(1)
    if squeeze:
        wav = wav.unsqueeze(0)
    pad = (n_fft - hop) // 2
    if wav.shape[-1] <= pad:
        raise ValueError(f"waveform of {wav.shape[-1]} samples is too short for a {n_fft}-point spectrogram")
    wav = F.pad(wav.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    stft = torch.stft(wav, n_fft, hop_length=hop, win_length=win, window=_hann(win, wav.device, wav.dtype),
                      center=False, pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    spec = torch.sqrt(stft.real.pow(2) + stft.imag.pow(2) + 1e-6)
    return spec.squeeze(0) if squeeze else spec


def spec_to_mel(spec: torch.Tensor, n_fft: int = 2048, n_mels: int = 128, sr: int = 44100,
                fmin: float = 0.0, fmax: float | None = None) -> torch.Tensor:
    """Log-mel from a linear spectrogram: log(clamp(M·spec, 1e-5)).

    Args:
        spec: [B, n_fft//2+1, T] (or [n_fft//2+1, T]) linear magnitude.
    Returns:
        [B, n_mels, T] (or [n_mels, T]) natural-log mel.
    """
    basis = mel_filterbank(sr, n_fft, n_mels, fmin, fmax, device=spec.device, dtype=spec.dtype)
    mel = torch.matmul(basis, spec)
    return torch.log(torch.clamp(mel, min=1e-5))


def mel_spectrogram(wav: torch.Tensor, n_fft: int = 2048, n_mels: int = 128, sr: int = 44100,
                    hop: int = 512, win: int = 2048, fmin: float = 0.0, fmax: float | None = None
                    ) -> torch.Tensor:
    """Log-mel spectrogram of a waveform; equals spec_to_mel(spectrogram(wav)).

    Args:
        wav: [B, L] (or [L], or [B, 1, L]) waveform.
    Returns:
        [B, n_mels, T] log mel.
    """
    return spec_to_mel(spectrogram(wav, n_fft, hop, win), n_fft, n_mels, sr, fmin, fmax)
