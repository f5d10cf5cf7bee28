"""Synthesis facade: load a trained voice and turn phones or text into audio (spec §6, §7.6, §7.8).

    voice = Voice.load("Data/myvoice")                       # newest models/G_*.pth + its config.json
    audio = voice.synthesize("你好。", "ZH", speaker="spk0", bert=BertFeatures(dirs))
    audio = voice.synthesize_phones(["_", "n", "i", "_"], [0, 3, 3, 0], "ZH", speaker=0, seed=1)

Input contract of `Voice.synthesize_phones` (the "cleaned" form of Bert-VITS2's list files):
  * phones as symbol strings: tones are the *raw* per-language values (spec §7.3), `languages` is one
    code ("ZH"/"JP"/"EN", "KO" for a Korean-enabled voice with its `ko_bert` slot, docs/korean.md) or one code per phone, and the sequences are *without* blanks: the voice
    converts them to ids and inserts blanks itself when config.json says `add_blank` (spec §7.6).
  * `blanked=True`: the sequences are model-ready ids (phone ids, tone ids with the language offset,
    language ids), blanks already inserted, e.g. straight from a dataset item.
  * BERT features, when given, always have the model's final length T (2N+1 with add_blank), one
    column per phone, as `BertFeatures.features(cleaned, add_blank=True)` returns them. Missing slots
    are filled with standard normal noise `randn(1024, T)`, drawn in slot order bert, ja_bert, en_bert,
    which is exactly Bert-VITS2's order for the two "other language" slots (spec §7.8); a 2.2 voice
    fills them with uniform noise `rand(1024, T)` as 2.2 does (2.2 spec §6.1).

Bert-VITS2 2.2 (CLAP) voices are detected from the G file's keys and need an emotion vector: pass
`emo=` a CLAP embedding ([512], [512, 1] or [1, 512], numpy or torch; `vits.clap` makes one from a text
prompt such as "Happy" or from a reference clip). `Voice.needs_emotion` tells which kind a voice is.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vits import checkpoints as ck
from vits import inference
from vits import voice_folder as vf
from vits.audio import join_with_pauses
from vits.config import VoiceConfig
from vits.defaults import SYNTHESIS
from vits.emotion import check_emotion
from vits.errors import KoeError
from vits.inference import Decoder
from vits.symbols import LANGUAGE_ID, LANGUAGE_TONE_START, SYMBOL_TO_ID, intersperse, table_sizes
from vits.text.style import styled

BERT_DIM = 1024
_SLOTS = ("bert", "ja_bert", "en_bert")
_SLOT_OF_LANGUAGE = {"ZH": "bert", "JP": "ja_bert", "EN": "en_bert", "KO": "ko_bert"}
_NO_KOREAN_FIX = "this voice was trained without Korean; train a Korean-enabled voice (docs/korean.md)"

def find_voice_files(path: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                     config: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(G file, config.json) of a voice: the one lookup synthesis, ONNX export and the CLIs share.

    `path` is a voice folder (``Data/<voice>``, or a folder of G files), or a G file (``.pth`` or release
    ``.safetensors``). In a folder, the G file is `checkpoint` (a path, or a name inside models/) or
    else the newest complete ``models/G_<step>.pth`` (else the newest release file there). The config is
    `config` when given, else the folder's ``configs/config.json`` or ``config.json``, else the one
    that belongs to the G file (`vits.voice_folder.config_for_checkpoint`).
    Raises KoeError for a missing folder, file, checkpoint or config.
    """
    path = Path(path)
    if path.is_dir():
        g_path = _checkpoint_in(path, checkpoint) if checkpoint is not None else newest_generator(path)
        folder_candidates = [vf.config_path(path), path / "config.json"]
    elif path.is_file() or checkpoint:
        g_path = Path(checkpoint) if checkpoint else path
        folder_candidates = []
    else:
        raise KoeError("voice folder or checkpoint file not found", where=str(path),
                       fix="pass Data/<voice> or a G_<step>.pth file")
    if not g_path.is_file():
        raise KoeError("checkpoint file not found", where=str(g_path), fix="pass an existing G_<step>.pth")
    if config is not None:
        return g_path, Path(config)
    for candidate in folder_candidates:
        if candidate.is_file():
            return g_path, candidate
    return g_path, vf.config_for_checkpoint(g_path)


def _checkpoint_in(folder: Path, checkpoint: str | os.PathLike) -> Path:
    """A checkpoint given as a path, or as a file name inside the voice's models/."""
    given = Path(checkpoint)
    if given.is_file() or given.is_absolute():
        return given
    inside = vf.models_dir(folder) / given
    if inside.is_file():
        return inside
    raise KoeError("checkpoint file not found", where=str(checkpoint),
                   fix=f"use a file in {vf.models_dir(folder)} or a full path")


def newest_generator(folder: str | os.PathLike) -> Path:
    """The G file to synthesize with in a voice folder (its models/) or a folder of G files.

    The newest complete training checkpoint ``G_<step>.pth``; without one, the release file with the
    newest step (``G_<step>_fp16.pth``, ``G_<step>.safetensors``), else the newest other release file
    (``*.safetensors``, ``*release*.pth``) by modification time. Raises KoeError when there is none.
    """
    folder = Path(folder)
    models = vf.models_dir(folder) if vf.models_dir(folder).is_dir() else folder
    latest = ck.latest_checkpoints(models)
    if latest is not None:
        newer = [p for step, p in vf.list_checkpoints(models)["G"].items() if step > latest[0]]
        if newer:
            # latest_checkpoints passed over them: say so instead of falling back silently.
            warnings.warn(ck.CheckpointWarning(
                f"{', '.join(str(p) for p in newer)}: incomplete or damaged (no complete torch archive); "
                f"synthesizing with the older {latest[1]['G'].name} instead. Delete the damaged file or "
                "resume training to write it again"), stacklevel=2)
        return latest[1]["G"]
    training = vf.list_checkpoints(models)["G"].values()  # all incomplete, or latest_checkpoints had one
    named = [p for _step, p in vf.generator_files(models) if p not in training]
    if named:
        return named[0]
    releases = [p for p in models.iterdir() if p.is_file() and (p.suffix == ".safetensors" or
                                                                 (p.suffix == ".pth" and "release" in p.name))]
    if releases:
        return max(releases, key=lambda p: p.stat().st_mtime)
    raise KoeError("no generator checkpoint (G_<step>.pth) found", where=str(models),
                   fix=f"train the voice first (python -m pipeline.train {folder}) or pass a G_*.pth file")


class Voice:
    """A loaded generator ready for synthesis (eval mode, weight norm folded, inference mode).

    Args:
        model: a SynthesizerTrn with weights loaded (it is prepared for inference here).
        config: the voice's VoiceConfig.
        device: where to run ("cpu", "cuda", "cuda:1", ...).
        checkpoint: the file the weights came from (for display).
        decoder: optional replacement for the waveform decoder (e.g. onnxruntime); called with
            (z, g) and returning the waveform.
        fast_decoder: with no `decoder`, run the model's decoder as 2-D channels-last convolutions
            (on CPU `vits.fast_infer.FusedDecoder`, residual adds fused into oneDNN's convs, else
            `ChannelsLastDecoder`: same math, faster than 1-D convs); default on for CPU devices.
        tune_malloc: call `keep_freed_memory()` (a process-wide malloc setting, Linux) so the
            decoder's large activations reuse memory instead of page-faulting; default on for CPU.
    """

    def __init__(self, model, config: VoiceConfig, device: str | torch.device = "cpu", *,
                 checkpoint: Path | None = None, decoder: Decoder | None = None, fast_decoder: bool | None = None,
                 tune_malloc: bool | None = None):
        from vits.models import prepare_for_inference

        self.config = config
        self.device = torch.device(device)
        self.checkpoint = checkpoint
        self.model = prepare_for_inference(model).to(self.device)
        on_cpu = self.device.type == "cpu"
        if decoder is None and (fast_decoder if fast_decoder is not None else on_cpu):
            from vits.fast_infer import fused_decoder  # oneDNN post-op fusions: CPU only

            decoder = (fused_decoder(self.model.dec) if on_cpu else None) or ChannelsLastDecoder(self.model.dec)
        self.decoder = decoder
        if tune_malloc if tune_malloc is not None else on_cpu:
            keep_freed_memory()
        spk2id = dict(config.data.spk2id)
        if not spk2id:
            spk2id = {str(i): i for i in range(config.data.n_speakers)}
        self._spk2id = spk2id
        self.version = getattr(model, "version", "2.3")

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
             config_path: str | os.PathLike | None = None, *, checkpoint: str | os.PathLike | None = None,
             decoder: Decoder | None = None) -> Voice:
        """Load a voice.

        Takes a voice folder (``Data/<voice>``: newest complete ``models/G_<step>.pth`` and
        ``configs/config.json``; a folder holding ``G_*.pth`` and ``config.json`` works too) or a G file
        (``.pth`` or release ``.safetensors``, config.json beside it or in ``../configs/``), the device,
        optionally an explicit config path and, for a folder, a `checkpoint` (path or name in models/);
        the lookup is `find_voice_files`. float16 release files are cast to float32; files without
        ``enc_q`` load (it is not used for synthesis). The version (2.3, or 2.2 with the CLAP emotion
        input) comes from the G file's keys, not from config.json's "version" (2.2 spec §0, §9.3).
        Returns a Voice.
        Raises KoeError for a missing folder/file/config, a file that is not a 2.3 or 2.2 generator, or
        a checkpoint that does not match the config.
        """
        from vits.models import build_generator

        g_path, config_path = find_voice_files(path, checkpoint=checkpoint, config=config_path)
        config = VoiceConfig.load(config_path)
        ckpt = ck.read_checkpoint(g_path)
        model = build_generator(config, version=ck.generator_version(ckpt))
        ck.load_weights(model, ckpt, kind="G", where=str(g_path))
        del model.enc_q  # training-only posterior encoder: frees memory (10M parameters by default)
        return cls(model, config, device, checkpoint=g_path, decoder=decoder)

    # ------------------------------------------------------------------------------------------------

    @property
    def speakers(self) -> list[str]:
        """Speaker names in id order."""
        return [name for name, _ in sorted(self._spk2id.items(), key=lambda item: item[1])]

    @property
    def sampling_rate(self) -> int:
        return int(self.config.data.sampling_rate)

    @property
    def needs_emotion(self) -> bool:
        """True for a Bert-VITS2 2.2 (CLAP) voice: synthesis then needs `emo=`."""
        return self.version == "2.2"

    def emotion_tensor(self, emo) -> torch.Tensor | None:
        """`emo` checked for this voice as float32 [1, 512] on its device (None for a 2.3 voice).

        Raises KoeError when a 2.2 voice gets none, a 2.3 voice gets one, or the vector is malformed.
        """
        where = str(self.checkpoint or "voice")
        if not self.needs_emotion:
            if emo is not None:
                raise KoeError("this is a Bert-VITS2 2.3 voice: it has no emotion input", where=where,
                               fix="leave the emotion prompt empty (only 2.2 CLAP voices take one)")
            return None
        if emo is None:
            raise KoeError("this is a Bert-VITS2 2.2 (CLAP) voice: it needs an emotion prompt", where=where,
                           fix="give a text prompt (e.g. 'Happy'; CLI --emotion-text, API emotion=) or a reference "
                               "clip (CLI --emotion-audio, API reference_audio); in Python pass emo= a CLAP "
                               "embedding from vits.clap")
        return check_emotion(emo, 1, "emotion vector").to(self.device)

    @property
    def korean(self) -> bool:
        """True for a Korean-enabled voice (it reads KO text; a fourth BERT slot, ko_bert)."""
        return bool(getattr(self.model, "korean", False))

    @property
    def _slots(self) -> tuple[str, ...]:
        return (*_SLOTS, "ko_bert") if self.korean else _SLOTS

    def _filler(self, length: int) -> torch.Tensor:
        """Noise for an empty BERT slot: randn (2.3) or rand (2.2), [1024, length]."""
        return (torch.rand if self.needs_emotion else torch.randn)(BERT_DIM, length)

    def speaker_id(self, speaker: str | int | None) -> int:
        """Resolve a speaker name or id (None = the first speaker). Raises KoeError for unknown ones."""
        if speaker is None:
            return min(self._spk2id.values())
        if isinstance(speaker, (int, np.integer)) and not isinstance(speaker, bool):
            if 0 <= int(speaker) < self.model.n_speakers:
                return int(speaker)
            raise KoeError(f"speaker id {speaker} is out of range (this voice has {self.model.n_speakers})",
                           fix=f"use an id from 0 to {self.model.n_speakers - 1} or a name: {self._speaker_list()}")
        if speaker in self._spk2id:
            return int(self._spk2id[speaker])
        if isinstance(speaker, str) and speaker.isdigit() and int(speaker) < self.model.n_speakers:
            return int(speaker)
        raise KoeError(f"unknown speaker {speaker!r}", where=str(self.checkpoint or "voice"),
                       fix=f"use one of: {self._speaker_list()}")

    def _speaker_list(self) -> str:
        names = self.speakers
        shown = ", ".join(names[:20])
        return shown + (f", … ({len(names)} in all)" if len(names) > 20 else "")

    # ------------------------------------------------------------------------------------------------

    def prepare_phones(self, phones, tones, languages, *, blanked: bool = False):
        """Turn phones/tones/languages into model-ready id lists (see the module docstring).

        Returns (phone_ids, tone_ids, language_ids), blanks inserted when the config says so.
        Raises KoeError for unknown phones/languages, bad tones or differing lengths.
        """
        phones, tones = list(_as_list(phones)), list(_as_list(tones))
        n = len(phones)
        if n == 0:
            raise KoeError("no phones to synthesize", fix="pass at least one phone")
        if isinstance(languages, str):
            languages = [languages] * n
        languages = list(_as_list(languages))
        if len(tones) != n or len(languages) != n:
            raise KoeError(f"phones, tones and languages must have the same length (got {n}, {len(tones)}, "
                           f"{len(languages)})", fix="give one tone and one language per phone")
        if all(isinstance(p, str) for p in phones):
            if blanked:
                raise KoeError("blanked=True needs phone ids, not phone strings",
                               fix="pass ids, or pass strings without blanks and blanked=False")
            ids, tone_ids, lang_ids = [], [], []
            for i, (phone, tone, lang) in enumerate(zip(phones, tones, languages)):
                lang = str(lang).upper()
                if phone not in SYMBOL_TO_ID:
                    raise KoeError(f"unknown phone {phone!r} at position {i} (not in the 112-symbol table)",
                                   fix="use phones from our text frontend (python -m pipeline.text)")
                if lang not in LANGUAGE_ID:
                    raise KoeError(f"unknown language {lang!r} at position {i}", fix="use ZH, JP, EN or KO")
                if lang == "KO" and not self.korean:
                    raise KoeError(f"Korean phones at position {i}", where=str(self.checkpoint or "voice"),
                                   fix=_NO_KOREAN_FIX)
                ids.append(SYMBOL_TO_ID[phone])
                tone_ids.append(int(tone) + LANGUAGE_TONE_START[lang])
                lang_ids.append(LANGUAGE_ID[lang])
        else:
            try:
                ids, tone_ids = [int(p) for p in phones], [int(t) for t in tones]
                lang_ids = [LANGUAGE_ID[str(x).upper()] if isinstance(x, str) else int(x) for x in languages]
            except (TypeError, ValueError, KeyError) as exc:
                raise KoeError(f"phone ids, tone ids and language ids must be integers ({exc})",
                               fix="pass all ids as integers or all phones as symbol strings") from None
        n_symbols, n_tones, n_languages = table_sizes(getattr(self.model, "num_languages", 3))
        _check_range("phone id", ids, n_symbols)
        _check_range("tone id", tone_ids, n_tones)
        _check_range("language id", lang_ids, n_languages)
        if self.config.data.add_blank and not blanked:
            ids, tone_ids, lang_ids = intersperse(ids), intersperse(tone_ids), intersperse(lang_ids)
        return ids, tone_ids, lang_ids

    def synthesize_phones(self, phones, tones, languages, bert=None, ja_bert=None, en_bert=None, *,
                          speaker: str | int | None = None, sdp_ratio: float = SYNTHESIS.sdp_ratio,
                          noise_scale: float = SYNTHESIS.noise_scale, noise_scale_w: float = SYNTHESIS.noise_scale_w,
                          length_scale: float = SYNTHESIS.length_scale, seed: int | None = None,
                          blanked: bool = False, emo=None, ko_bert=None) -> np.ndarray:
        """Synthesize one utterance from phones (contract in the module docstring).

        Takes phones, tones, languages, optional BERT features ([1024, T] or [1, 1024, T], tensor or
        numpy), the speaker (name or id), the Bert-VITS2 sampling knobs, a seed (same seed, same
        audio; the caller's random state is left untouched) and, for a 2.2 voice, the emotion vector
        `emo` ([512]). Returns float32 mono audio at `sampling_rate`. Raises KoeError for wrong
        phones/shapes/dtypes, an unknown speaker or a missing/unexpected emotion vector.
        """
        ids, tone_ids, lang_ids = self.prepare_phones(phones, tones, languages, blanked=blanked)
        sid = self.speaker_id(speaker)
        emo = self.emotion_tensor(emo)
        feats = {"bert": bert, "ja_bert": ja_bert, "en_bert": en_bert, "ko_bert": ko_bert}
        if ko_bert is not None and not self.korean:
            raise KoeError("ko_bert given, but this voice has no Korean BERT slot", fix=_NO_KOREAN_FIX)
        for name in self._slots:
            if feats[name] is not None:
                feats[name] = _check_bert(name, feats[name], len(ids))
        with _seeded(seed, self.device):
            for name in self._slots:  # filler noise in Bert-VITS2's order (spec §7.8), ko_bert last
                if feats[name] is None:
                    feats[name] = self._filler(len(ids))
            audio = self._infer(ids, tone_ids, lang_ids, feats, sid, sdp_ratio=sdp_ratio, noise_scale=noise_scale,
                                noise_scale_w=noise_scale_w, length_scale=length_scale, emo=emo)
        return audio

    @torch.inference_mode()
    def _infer(self, ids, tone_ids, lang_ids, feats, sid: int, *, sdp_ratio: float = SYNTHESIS.sdp_ratio,
               noise_scale: float = SYNTHESIS.noise_scale, noise_scale_w: float = SYNTHESIS.noise_scale_w,
               length_scale: float = SYNTHESIS.length_scale, emo: torch.Tensor | None = None) -> np.ndarray:
        """`vits.inference.infer` for B = 1: SynthesizerTrn.infer's output and random draws, in order.

        Skips a duration predictor whose share is 0 (output unchanged) and decodes with `decoder`.
        `emo` is the checked [1, 512] emotion vector of a 2.2 voice (`emotion_tensor`).
        """
        dev = self.device
        x, tone, language, sid_t = (torch.tensor(v, dtype=torch.long, device=dev)
                                    for v in ([ids], [tone_ids], [lang_ids], [sid]))
        x_lengths = torch.tensor([len(ids)], dtype=torch.long, device=dev)
        bert, ja_bert, en_bert = (feats[n].to(dev, torch.float32).unsqueeze(0) for n in _SLOTS)
        ko = {"ko_bert": feats["ko_bert"].to(dev, torch.float32).unsqueeze(0)} if self.korean else {}
        audio = inference.infer(self.model, x, x_lengths, sid_t, tone, language, bert, ja_bert, en_bert, **ko,
                                noise_scale=noise_scale, length_scale=length_scale, noise_scale_w=noise_scale_w,
                                sdp_ratio=sdp_ratio, skip_unused=True, decoder=self.decoder, emo=emo)[0]
        return audio.reshape(-1).float().cpu().numpy()

    # ------------------------------------------------------------------------------------------------

    def stream(self, text: str, language: str = SYNTHESIS.language, *, speaker: str | int | None = None,
               bert=None, sdp_ratio: float = SYNTHESIS.sdp_ratio, noise_scale: float = SYNTHESIS.noise_scale,
               noise_scale_w: float = SYNTHESIS.noise_scale_w, length_scale: float = SYNTHESIS.length_scale,
               seed: int | None = None, user_dict=None, emo=None, style_text: str | None = None,
               style_weight: float = SYNTHESIS.style_weight) -> Iterator[tuple[str, np.ndarray]]:
        """Synthesize text sentence by sentence; yields (sentence, float32 audio) as each one is ready.

        Takes the text, its language (ZH/JP/EN/AUTO, or MIX markup, which is synthesized as one
        utterance), the speaker, a `vits.text.bert.BertFeatures` for the BERT features (required), the
        sampling knobs, a seed (sentence i uses seed + i), an optional user pronunciation dictionary and,
        for a 2.2 voice, the emotion vector `emo` ([512]; one for all sentences, as 2.2 does), and a style text
        mixed into every segment's BERT features at `style_weight` (spec §7.7, `vits.text.style`).
        Segments of one sentence in different languages are joined as Bert-VITS2's infer_multilang does
        (spec §6: later segments drop their leading blank/_/blank, all but the last their trailing _/blank).
        Raises KoeError when the text frontend or BERT models are unavailable, the text has no speech or the
        style weight is outside [0, 1].
        """
        emo = self.emotion_tensor(emo)
        text_mod = _text_module()
        if bert is None:
            raise KoeError("text synthesis needs BERT features (the model was trained with them)",
                           fix="pass bert=BertFeatures(model_dirs) (download the models with "
                               "python -m pipeline.download bert), or use synthesize_phones")
        bert = styled(bert, style_text, style_weight)  # the style vectors: once per language, here
        sid = self.speaker_id(speaker)
        language = language.upper()
        sentences = [text] if language == "MIX" else [s for s in text_mod.split_sentences(text) if s.strip()]
        if not sentences:
            raise KoeError("no text to synthesize", fix="type some text")
        for i, sentence in enumerate(sentences):
            segments = text_mod.clean_text(sentence, language, user_dict=user_dict)
            if not segments:
                continue
            # BERT first, outside the seeded block: loading a BERT model draws random numbers, and a
            # seeded request must give the same audio whether or not the model was loaded already.
            blank = bool(self.config.data.add_blank)
            reals = [bert.features(seg, add_blank=blank) for seg in segments]
            with _seeded(None if seed is None else seed + i, self.device):
                ids, tones, langs, feats = self._join_segments(segments, reals)
                audio = self._infer(ids, tones, langs, feats, sid, sdp_ratio=sdp_ratio, noise_scale=noise_scale,
                                    noise_scale_w=noise_scale_w, length_scale=length_scale, emo=emo)
            yield sentence, audio

    def synthesize(self, text: str, language: str = SYNTHESIS.language, *, speaker: str | int | None = None,
                   bert=None, pause: float = SYNTHESIS.pause, sdp_ratio: float = SYNTHESIS.sdp_ratio,
                   noise_scale: float = SYNTHESIS.noise_scale, noise_scale_w: float = SYNTHESIS.noise_scale_w,
                   length_scale: float = SYNTHESIS.length_scale, seed: int | None = None, user_dict=None,
                   emo=None, style_text: str | None = None, style_weight: float = SYNTHESIS.style_weight) -> np.ndarray:
        """Synthesize text: every sentence of `stream`, joined with `pause` seconds of silence.

        Same arguments as `stream` (a 2.2 voice needs `emo`). Returns float32 mono audio at `sampling_rate`.
        Raises KoeError as `stream` does, or when no sentence produced speech.
        """
        pieces = (audio for _sentence, audio in self.stream(
            text, language, speaker=speaker, bert=bert, sdp_ratio=sdp_ratio, noise_scale=noise_scale,
            noise_scale_w=noise_scale_w, length_scale=length_scale, seed=seed, user_dict=user_dict, emo=emo,
            style_text=style_text, style_weight=style_weight))
        return join_with_pauses(pieces, self.sampling_rate, pause)

    def _join_segments(self, segments, reals):
        """Per-segment ids, blanks and BERT (`reals`, + filler noise), joined with Bert-VITS2's skips."""
        blank = bool(self.config.data.add_blank)
        head, tail = (3, 2) if blank else (1, 1)
        ids, tones, langs = [], [], []
        slots = self._slots
        feats: dict[str, list[torch.Tensor]] = {n: [] for n in slots}
        for k, seg in enumerate(segments):
            if seg.language == "KO" and not self.korean:
                raise KoeError(f"Korean text {seg.norm_text[:30]!r}", where=str(self.checkpoint or "voice"),
                               fix=_NO_KOREAN_FIX)
            p, t, la = self.prepare_phones(seg.phones, seg.tones, seg.language)
            real = _check_bert("bert", reals[k], len(p))
            slot = _SLOT_OF_LANGUAGE[seg.language]
            cols = {n: real if n == slot else self._filler(len(p)) for n in slots}
            start = head if k > 0 else 0
            stop = len(p) - tail if k < len(segments) - 1 else len(p)
            ids += p[start:stop]
            tones += t[start:stop]
            langs += la[start:stop]
            for n in slots:
                feats[n].append(cols[n][:, start:stop])
        return ids, tones, langs, {n: torch.cat(feats[n], dim=1) for n in slots}


# ----------------------------------------------------------------------------------------------------


class _Conv1dAs2d(nn.Module):
    """A (folded) Conv1d / ConvTranspose1d computed as a 2-D convolution over [B, C, 1, T] channels-last."""

    def __init__(self, conv: nn.Conv1d | nn.ConvTranspose1d):
        super().__init__()
        self.transposed = isinstance(conv, nn.ConvTranspose1d)
        weight = conv.weight.detach().unsqueeze(2).contiguous(memory_format=torch.channels_last)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())
        self.stride, self.padding = (1, conv.stride[0]), (0, conv.padding[0])
        self.dilation, self.groups = (1, conv.dilation[0]), conv.groups
        self.output_padding = (0, conv.output_padding[0]) if self.transposed else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                      self.groups, self.dilation)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ChannelsLastDecoder(nn.Module):
    """The model's decoder (HiFi-GAN) with every conv run as a channels-last 2-D convolution.

    oneDNN's channels-last kernels are much faster on CPU than its 1-D ones, most of all for the
    dilated kernel-11 convolutions and the 16/32-channel stages. The Generator's own forward runs
    unchanged on [B, C, 1, T] tensors (its ops are elementwise or convs), so the math is the same
    (differences ~1e-7). Takes a weight-norm-folded Generator (it is copied, not changed).
    Called as `decoder(z [B, C, T], g [B, gin, 1]) -> audio [B, 1, L]`.
    """

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = copy.deepcopy(generator)
        self._convert(self.generator)

    @classmethod
    def _convert(cls, module: nn.Module) -> None:
        for name, child in list(module.named_children()):
            if isinstance(child, (nn.Conv1d, nn.ConvTranspose1d)):
                if hasattr(child, "weight_g"):
                    raise ValueError("fold weight norm first (vits.models.prepare_for_inference)")
                setattr(module, name, _Conv1dAs2d(child))
            else:
                cls._convert(child)

    def forward(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        z4 = z.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        audio = self.generator(z4, g=g.unsqueeze(2))
        return audio.reshape(z.shape[0], 1, -1)


_MALLOC_TUNED = False


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory in the process for reuse (Linux; no-op elsewhere).

    CPU synthesis allocates activations of tens of MB per decoder layer; by default glibc hands such
    blocks back to the OS when freed, so every layer page-faults them in again (~10% of CPU synthesis
    time for 10 s of audio). This raises the trim and mmap thresholds to 1 GiB for the whole process,
    so the memory stays mapped at its peak size and is reused. Returns True when the setting was applied.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-1, 1 << 30) == 1 and libc.mallopt(-3, 1 << 30) == 1  # M_TRIM_ / M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    _MALLOC_TUNED = ok
    return ok


def _text_module():
    try:
        import vits.text as text_mod

        text_mod.clean_text, text_mod.split_sentences  # noqa: B018 (both must exist)
    except (ImportError, AttributeError) as exc:
        raise KoeError(f"the text frontend (vits.text) is not available ({exc})",
                       fix="synthesize from phones (synthesize_phones / --phones) instead") from None
    return text_mod


def _as_list(values) -> Sequence:
    if isinstance(values, str):
        return values.split()
    if isinstance(values, (torch.Tensor, np.ndarray)):
        return values.reshape(-1).tolist()
    return values


def _check_range(what: str, values: list[int], limit: int) -> None:
    bad = [v for v in values if not 0 <= v < limit]
    if bad:
        raise KoeError(f"{what} {bad[0]} is out of range (0..{limit - 1})",
                       fix="check that ids come from the Bert-VITS2 2.3 tables (vits.symbols)")


def _check_bert(name: str, feats, length: int) -> torch.Tensor:
    if isinstance(feats, np.ndarray):
        feats = torch.from_numpy(feats)
    if not isinstance(feats, torch.Tensor) or not feats.is_floating_point():
        got = f"{feats.dtype}" if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise KoeError(f"{name} must be a float tensor, got {got}", fix="pass BERT features as float32 [1024, T]")
    if feats.dim() == 3 and feats.shape[0] == 1:
        feats = feats[0]
    if tuple(feats.shape) != (BERT_DIM, length):
        raise KoeError(f"{name} has shape {list(feats.shape)}, expected [{BERT_DIM}, {length}] (one column per "
                       "phone, blanks included)",
                       fix="compute the features for this exact phone sequence (BertFeatures.features(..., "
                           "add_blank=True))")
    return feats.float()


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device):
    """Seed torch's generators for the block and restore the caller's random state afterwards."""
    if seed is None:
        yield
        return
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield
