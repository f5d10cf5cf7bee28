"""Eval samples during training: the first validation clips synthesized at sdp_ratio 0 and 1.

Written to TensorBoard (audio ``eval/<i>/sdp0|sdp1|gt``, mel images ``eval/<i>/mel_*``) and, for the studio,
to ``logs/eval/step_<8-digit step>/`` (``<ii>_sdp0.wav``, ``<ii>_sdp1.wav``, ``<ii>_gt.wav``, ``index.json``),
each folder renamed into place when complete; the newest `KEEP_EVAL_DIRS` are kept.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from vits.config import VoiceConfig
from vits.data import TextAudioDataset, collate

EVAL_ITEMS = 4
KEEP_EVAL_DIRS = 10

# Bert-VITS2's evaluate() samples with these (its network's own defaults), not the synthesis defaults,
# so eval audio sounds like what Bert-VITS2 users compare against.
EVAL_NOISE_SCALE = 0.667
EVAL_NOISE_SCALE_W = 0.8


class EvalSamples:
    """Writes the eval clips of one run (the ground truth goes to TensorBoard once per run)."""

    def __init__(self, val_set: TextAudioDataset, cfg: VoiceConfig, device: torch.device, writer,
                 eval_root: Path):
        self.val_set, self.cfg, self.device, self.writer, self.eval_root = val_set, cfg, device, writer, eval_root
        self._gt_logged = False

    @torch.no_grad()
    def write(self, model: torch.nn.Module, step: int) -> Path | None:
        """Synthesize the eval clips with the bare generator `model`; returns the folder (None: no val clips).

        Leaves `model` in train mode. Raises what synthesis or the file system raise (the caller logs it).
        """
        if len(self.val_set) == 0:
            return None
        import soundfile

        from vits.mel import mel_spectrogram, spec_to_mel

        d = self.cfg.data
        model.eval()
        eval_root = self.eval_root
        eval_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=eval_root, prefix=f".step_{step:08d}."))
        index = {"step": step, "sampling_rate": d.sampling_rate, "items": []}
        try:
            for i in range(min(EVAL_ITEMS, len(self.val_set))):
                utt = self.val_set.items[i]
                (x, x_len, spec, _spec_len, wav, wav_len, sid, tone, lang, bert, ja_bert, en_bert, *emo) = (
                    t.to(self.device) for t in collate([self.val_set[i]]))  # emo: 2.2 voices; ko_bert: Korean
                ko = {"ko_bert": emo.pop()} if getattr(model, "korean", False) and emo else {}
                files = {}
                gt = wav[0, 0, : int(wav_len[0])].cpu().numpy()
                soundfile.write(tmp / f"{i:02d}_gt.wav", gt, d.sampling_rate, subtype="PCM_16")
                files["gt"] = f"{i:02d}_gt.wav"
                if not self._gt_logged:
                    self.writer.add_audio(f"eval/{i}/gt", torch.from_numpy(gt)[None], step, d.sampling_rate)
                    gt_mel = spec_to_mel(spec, d.filter_length, d.n_mel_channels, d.sampling_rate, d.mel_fmin,
                                         d.mel_fmax)[0]
                    self.writer.add_image(f"eval/{i}/mel_gt", mel_image(gt_mel), step, dataformats="HWC")
                for ratio in (0.0, 1.0):
                    o = model.infer(x, x_len, sid, tone, lang, bert, ja_bert, en_bert, y=spec, max_len=1000,
                                    sdp_ratio=ratio, noise_scale=EVAL_NOISE_SCALE,
                                    noise_scale_w=EVAL_NOISE_SCALE_W, emo=emo[0] if emo else None, **ko)[0]
                    audio = o[0, 0].float().clamp(-1, 1).cpu()
                    tag = f"sdp{int(ratio)}"
                    name = f"{i:02d}_{tag}.wav"
                    soundfile.write(tmp / name, audio.numpy(), d.sampling_rate, subtype="PCM_16")
                    files[tag] = name
                    self.writer.add_audio(f"eval/{i}/{tag}", audio[None], step, d.sampling_rate)
                    mel = mel_spectrogram(audio[None].to(self.device), d.filter_length, d.n_mel_channels,
                                          d.sampling_rate, d.hop_length, d.win_length, d.mel_fmin, d.mel_fmax)[0]
                    self.writer.add_image(f"eval/{i}/mel_{tag}", mel_image(mel), step, dataformats="HWC")
                index["items"].append({"speaker": utt.speaker, "language": utt.language, "text": utt.text,
                                       "files": files})
            self._gt_logged = True
            (tmp / "index.json").write_text(json.dumps(index, ensure_ascii=False, indent=1), encoding="utf-8")
            final = eval_root / f"step_{step:08d}"
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            model.train()
        old = sorted(p for p in eval_root.glob("step_*") if p.is_dir())
        for p in old[:-KEEP_EVAL_DIRS]:
            shutil.rmtree(p, ignore_errors=True)
        self.writer.flush()
        return final


def mel_image(mel: torch.Tensor) -> np.ndarray:
    """A log-mel [n_mels, T] as an RGB uint8 image (low frequencies at the bottom), no matplotlib needed."""
    m = mel.float().cpu().numpy()
    lo, hi = float(m.min()), float(m.max())
    v = (m - lo) / (hi - lo + 1e-9)
    v = v[::-1]
    # A small dark-blue -> yellow ramp.
    r = np.clip(1.5 * v - 0.25, 0, 1)
    g = np.clip(1.2 * v - 0.1, 0, 1) ** 1.2
    b = np.clip(0.6 - 0.8 * np.abs(v - 0.35), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)
