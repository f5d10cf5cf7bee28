"""Synthesis from an ONNX export with onnxruntime and numpy only: this module never imports torch.

`OnnxSynthesizer(folder)` reads `koe_onnx.json` and the six graphs written by `vits.onnx_export`
(emb, enc_p, sdp, dp, flow, dec) and runs spec §6 with the durations, the alignment path and the noise
computed here in numpy. `OnnxDecoder(path)` runs only the decoder graph, callable like `dec(z, g)`.
A 2.2 (CLAP) export (metadata `"version": "2.2"`) needs the emotion vector `emo` ([512]) at every call.

Sessions run sequentially with every graph optimisation, only the decoder's threads spinning (`_options`);
on the CPU each graph is loaded from its optimised copy in `<export>/ort_cache/` (written on first load,
see `_optimized_copy`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from vits.defaults import SYNTHESIS
from vits.errors import KoeError
from vits.fileio import atomic_path
from vits.voice_folder import ONNX_METADATA as METADATA_NAME

GRAPHS = ("emb", "enc_p", "sdp", "dp", "flow", "dec")
BERT_DIM = 1024
EMO_DIM = 512


CACHE_DIR = "ort_cache"  # beside the graphs: each graph after onnxruntime's portable optimisations, per version


def _options(threads: int | None, level=None, spin: bool = False):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers are noise for users
    options.graph_optimization_level = level or ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # one request runs its graphs one after another
    # Each graph has its own thread pool. Threads spinning after their graph ended took the cores from the next
    # graph (3.6 s sentence, 2 threads, busy box: 2.1 s -> 1.4 s of CPU time with no graph spinning), while
    # the decoder's ~100 large ops finish sooner with their threads kept spinning: only the decoder spins.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def _optimized_copy(path: Path) -> Path | None:
    """`path` after onnxruntime's graph optimisations up to the extended level (CPU), saved once in CACHE_DIR.

    Loading the saved copy skips the fusions and constant folding that take most of a session's start (the
    flow graph: ~1.3 s -> ~0.3 s). The layout step (NCHWc) is hardware specific, so it is left to load time.
    The copy is keyed by onnxruntime's version and the source file's size and mtime; a folder that cannot be
    written gives None (the source is used as it is).
    """
    import onnxruntime as ort

    stat = path.stat()
    key = f"{ort.__version__}-{stat.st_size}-{stat.st_mtime_ns}"
    cached = path.parent / CACHE_DIR / f"{path.stem}.{key}.onnx"
    if cached.is_file():
        return cached
    try:
        cached.parent.mkdir(exist_ok=True)
        for old in cached.parent.glob(f"{path.stem}.*.onnx"):  # copies of an earlier export or onnxruntime
            old.unlink()
        with atomic_path(cached) as tmp:
            options = _options(1, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
            options.optimized_model_filepath = str(tmp)
            ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except OSError:  # read-only export folder: optimise at every load instead
        return None
    return cached


def _session(path: Path, providers: list[str] | None, threads: int | None, spin: bool = False):
    import onnxruntime as ort

    if not path.is_file():
        raise KoeError("ONNX graph missing", where=str(path),
                       fix="export the voice again: python -m pipeline.export_onnx Data/<voice>")
    providers = providers or ["CPUExecutionProvider"]
    try:
        source = (_optimized_copy(path) if providers == ["CPUExecutionProvider"] else None) or path
        return ort.InferenceSession(str(source), sess_options=_options(threads, spin=spin), providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors for corrupt files
        raise KoeError(f"onnxruntime cannot read this graph ({type(exc).__name__}: {exc})", where=str(path),
                       fix="export the voice again: python -m pipeline.export_onnx Data/<voice>") from None


# The numpy mirror of vits.inference (the torch math of SynthesizerTrn.infer and Voice), step by step:
# log_durations -> the SDP/DP mix in `OnnxSynthesizer.infer`, alignment -> `alignment`, expand -> `expand`.


def generate_path(durations: np.ndarray, t_y: int) -> np.ndarray:
    """Hard alignment [T_y, T_x] from integer-valued durations [T_x]: 1 iff cum[x-1] <= y < cum[x]."""
    cum = np.cumsum(durations)
    lower = np.concatenate([[0.0], cum[:-1]])
    frames = np.arange(t_y, dtype=cum.dtype)[:, None]
    return ((frames < cum[None, :]) & (frames >= lower[None, :])).astype(np.float32)


def alignment(logw: np.ndarray, x_mask: np.ndarray, length_scale: float) -> np.ndarray:
    """Log-durations [1,1,T_x] -> hard path [T_y, T_x], at least one frame (mirrors vits.inference.alignment)."""
    w_ceil = np.ceil(np.exp(logw) * x_mask * np.float32(length_scale))[0, 0]
    return generate_path(w_ceil, max(int(w_ceil.sum()), 1))


def expand(attn: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """Prior statistics [1,C,T_x] along the path -> [1,C,T_y] (mirrors vits.inference.expand).

    A 0/1 selection, so exact in float32.
    """
    return (attn @ stats[0].T).T[None]


def _to_numpy(value, dtype) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, handled without importing torch
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(value, dtype=dtype))


class OnnxDecoder:
    """The decoder graph alone: `dec(z [1,C,T], g [1,gin,1]) -> audio [1,1,hop·T]`.

    Accepts numpy arrays or torch tensors and answers in the same kind, so it can stand in for
    `SynthesizerTrn.dec` (see `vits.onnx_export.attach_onnx_decoder`).
    """

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None):
        self.path = Path(path)
        self.session = _session(self.path, providers, threads, spin=True)

    def __call__(self, z, g):
        out = self.session.run(["audio"], {"z": _to_numpy(z, np.float32), "g": _to_numpy(g, np.float32)})[0]
        if hasattr(z, "detach"):
            torch = sys.modules["torch"]  # z is a torch tensor, so torch is already imported
            return torch.from_numpy(out).to(device=z.device, dtype=z.dtype)
        return out


class OnnxSynthesizer:
    """A voice exported with `python -m pipeline.export_onnx`, run by onnxruntime.

    Args:
        folder: the export folder holding koe_onnx.json and the graphs.
        providers: onnxruntime execution providers (default CPU).
        threads: intra-op threads per graph (default: onnxruntime's choice).
    Raises:
        KoeError when the folder or a graph is missing or unreadable.
    """

    def __init__(self, folder: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None):
        self.folder = Path(folder)
        meta_path = self.folder / METADATA_NAME
        if not meta_path.is_file():
            raise KoeError(f"no {METADATA_NAME} in this folder", where=str(self.folder),
                           fix="export the voice first: python -m pipeline.export_onnx Data/<voice>")
        try:
            self.metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise KoeError(f"metadata is not valid JSON ({exc.msg})", where=f"{meta_path}:{exc.lineno}",
                           fix="export the voice again") from None
        graphs = self.metadata.get("graphs", {})
        self.sessions = {name: _session(self.folder / graphs.get(name, f"{name}.onnx"), providers, threads,
                                        spin=name == "dec") for name in GRAPHS}
        self.spk2id: dict[str, int] = {str(k): int(v) for k, v in self.metadata.get("spk2id", {}).items()}
        self.speakers: list[str] = list(self.metadata.get("speakers") or self.spk2id)
        self.sampling_rate: int = int(self.metadata.get("sampling_rate", 44100))
        self.hop_length: int = int(self.metadata.get("hop_length", 512))
        self.add_blank: bool = bool(self.metadata.get("add_blank", True))
        self.symbols: list[str] = list(self.metadata.get("symbols", []))
        self.version: str = str(self.metadata.get("version", "2.3"))

    @property
    def needs_emotion(self) -> bool:
        """True for a 2.2 (CLAP) export: `infer` then needs `emo`."""
        return self.version == "2.2"

    def _emotion(self, emo) -> np.ndarray | None:
        if not self.needs_emotion:
            if emo is not None:
                raise KoeError("this is a Bert-VITS2 2.3 export: it has no emotion input", where=str(self.folder),
                               fix="leave the emotion prompt empty (only 2.2 CLAP voices take one)")
            return None
        if emo is None:
            raise KoeError("this is a Bert-VITS2 2.2 (CLAP) export: it needs an emotion vector", where=str(self.folder),
                           fix="pass emo= a 512-d CLAP embedding (vits.clap: a text prompt such as 'Happy' or a "
                               "reference clip)")
        arr = _to_numpy(emo, np.float32)
        if arr.size != EMO_DIM or not np.isfinite(arr).all():
            raise KoeError(f"the emotion vector has shape {list(arr.shape)} (or non-finite values), expected "
                           f"[{EMO_DIM}]", where="OnnxSynthesizer.infer", fix="pass one 512-d CLAP embedding")
        return arr.reshape(1, EMO_DIM)

    @classmethod
    def load(cls, folder: str | os.PathLike, **kwargs) -> OnnxSynthesizer:
        """Same as the constructor (mirrors `Voice.load`)."""
        return cls(folder, **kwargs)

    def speaker_id(self, speaker: str | int) -> int:
        """Speaker name or id -> id. Raises KoeError listing the speakers."""
        if isinstance(speaker, (int, np.integer)) and int(speaker) in self.spk2id.values():
            return int(speaker)
        if isinstance(speaker, str) and speaker in self.spk2id:
            return self.spk2id[speaker]
        raise KoeError(f"unknown speaker {speaker!r}", where=str(self.folder),
                       fix=f"use one of: {', '.join(self.speakers)}")

    def _run(self, name: str, **feeds) -> list[np.ndarray]:
        return self.sessions[name].run(None, feeds)

    def infer(self, phones, tones, languages, bert=None, ja_bert=None, en_bert=None, *, speaker: str | int = 0,
              sdp_ratio: float = SYNTHESIS.sdp_ratio, noise_scale: float = SYNTHESIS.noise_scale,
              noise_scale_w: float = SYNTHESIS.noise_scale_w, length_scale: float = SYNTHESIS.length_scale,
              sdp_noise: np.ndarray | None = None,
              prior_noise: np.ndarray | None = None, seed: int | None = None, return_attn: bool = False,
              emo=None):
        """Synthesize one utterance from model-ready ids (blanks and tone offsets already applied).

        The numpy/onnxruntime version of `vits.inference.infer`; fed the same noise, the same audio.

        Args:
            phones, tones, languages: [T] integer ids.
            bert, ja_bert, en_bert: [1024, T] float features (None = zeros).
            speaker: name or id.
            sdp_noise: [2, T] standard normal draw for the SDP (default: drawn from `seed`).
            prior_noise: [C, >=T_y] standard normal draw for z_p (default: drawn from `seed`); extra
                frames are ignored.
            return_attn: also return the alignment path [T_y, T_x].
            emo: the [512] CLAP emotion vector of a 2.2 export (required there, refused for 2.3).
        Returns:
            float32 audio [hop·T_y] (and the path when asked).
        Raises:
            KoeError on inputs of the wrong shape.
        """
        emo = self._emotion(emo)
        x = _to_numpy(phones, np.int64).reshape(1, -1)
        t_x = x.shape[1]
        tone = _to_numpy(tones, np.int64).reshape(1, -1)
        language = _to_numpy(languages, np.int64).reshape(1, -1)
        if t_x == 0 or tone.shape[1] != t_x or language.shape[1] != t_x:
            raise KoeError(f"phones/tones/languages lengths differ or are empty ({t_x}, {tone.shape[1]}, "
                           f"{language.shape[1]})", where="OnnxSynthesizer.infer",
                           fix="pass one tone and one language id per phone")
        feats = []
        for name, value in (("bert", bert), ("ja_bert", ja_bert), ("en_bert", en_bert)):
            arr = np.zeros((BERT_DIM, t_x), np.float32) if value is None else _to_numpy(value, np.float32)
            arr = arr.reshape(-1, arr.shape[-1]) if arr.ndim == 3 else arr
            if arr.shape != (BERT_DIM, t_x):
                raise KoeError(f"{name} has shape {arr.shape}, expected ({BERT_DIM}, {t_x})",
                               where="OnnxSynthesizer.infer", fix="pass one 1024-d BERT column per phone")
            feats.append(arr[None])
        rng = np.random.default_rng(seed)
        sid = np.array([self.speaker_id(speaker)], dtype=np.int64)

        (g,) = self._run("emb", sid=sid)
        extra = {} if emo is None else {"emo": emo}
        hidden, m_p, logs_p, x_mask = self._run(
            "enc_p", x=x, x_lengths=np.array([t_x], np.int64), tone=tone, language=language,
            bert=feats[0], ja_bert=feats[1], en_bert=feats[2], g=g, **extra)
        if sdp_noise is None:
            sdp_noise = rng.standard_normal((2, t_x)).astype(np.float32)
        zin = (_to_numpy(sdp_noise, np.float32).reshape(1, 2, t_x) * np.float32(noise_scale_w)).astype(np.float32)
        (logw_sdp,) = self._run("sdp", hidden=hidden, x_mask=x_mask, zin=zin, g=g)
        (logw_dp,) = self._run("dp", hidden=hidden, x_mask=x_mask, g=g)
        logw = logw_sdp * np.float32(sdp_ratio) + logw_dp * np.float32(1 - sdp_ratio)

        attn = alignment(logw, x_mask, length_scale)  # [T_y, T_x]
        t_y = attn.shape[0]
        m_p_y, logs_p_y = expand(attn, m_p), expand(attn, logs_p)
        channels = m_p.shape[1]
        if prior_noise is None:
            prior_noise = rng.standard_normal((channels, t_y)).astype(np.float32)
        prior_noise = _to_numpy(prior_noise, np.float32).reshape(channels, -1)
        if prior_noise.shape[1] < t_y:
            raise KoeError(f"prior_noise has {prior_noise.shape[1]} frames, {t_y} needed",
                           where="OnnxSynthesizer.infer", fix="pass at least as many noise frames as the output has")
        z_p = (m_p_y + prior_noise[None, :, :t_y] * np.exp(logs_p_y) * np.float32(noise_scale)).astype(np.float32)
        y_mask = np.ones((1, 1, t_y), np.float32)
        (z,) = self._run("flow", z_p=z_p, y_mask=y_mask, g=g)
        (audio,) = self._run("dec", z=(z * y_mask).astype(np.float32), g=g)
        audio = audio[0, 0].astype(np.float32)
        return (audio, attn) if return_attn else audio


class OnnxVoice:
    """Text-to-speech on an ONNX export, with the same calls as `vits.synthesis.Voice` (no torch model).

    `stream`/`synthesize` use the text frontend (`vits.text`, imported when first needed) and, for the BERT
    columns, the export's own BERT graphs (`OnnxBertFeatures`, when exported with `--bert`: no torch at all)
    or the `bert=` passed in (a `BertFeatures`); the "other language" slots get standard normal noise from
    numpy (uniform for a 2.2 export, as 2.2 draws it), so a seed reproduces ONNX audio but not the torch
    Voice's audio. A 2.2 export needs `emo=` ([512] CLAP embedding).
    """

    def __init__(self, synthesizer: OnnxSynthesizer, bert=None):
        self.synthesizer = synthesizer
        self.folder = synthesizer.folder
        self.bert = bert  # the export's own BERT graphs (OnnxBertFeatures), used when stream() gets no bert=

    @classmethod
    def load(cls, folder: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None,
             bert_int8: bool = False) -> OnnxVoice:
        """Open an export folder (koe_onnx.json + graphs) with its BERT graphs when it has them (`bert/`, written by
        `export_onnx --bert`): fp32, or the int8 copy with `bert_int8`. Then text -> audio imports no torch.

        Raises KoeError when the folder is incomplete, or `bert_int8` is asked of an export without int8 graphs.
        """
        from vits.voice_folder import ONNX_BERT, ONNX_BERT_METADATA

        synthesizer = OnnxSynthesizer(folder, providers=providers, threads=threads)
        bert_dir = synthesizer.folder / ONNX_BERT
        bert = None
        if (bert_dir / ONNX_BERT_METADATA).is_file():
            from vits.text.bert_onnx import OnnxBertFeatures

            bert = OnnxBertFeatures(bert_dir, int8=bert_int8, providers=providers, threads=threads)
        elif bert_int8:
            raise KoeError("this export has no BERT graphs", where=str(bert_dir),
                           fix="export them: python -m pipeline.export_onnx Data/<voice> --bert --int8")
        return cls(synthesizer, bert=bert)

    @property
    def speakers(self) -> list[str]:
        return list(self.synthesizer.speakers)

    @property
    def sampling_rate(self) -> int:
        return self.synthesizer.sampling_rate

    @property
    def needs_emotion(self) -> bool:
        return self.synthesizer.needs_emotion

    def speaker_id(self, speaker: str | int | None) -> int:
        """Speaker name or id (None = the first). Raises KoeError listing the speakers."""
        if speaker is None:
            return min(self.synthesizer.spk2id.values(), default=0)
        if isinstance(speaker, str) and speaker.isdigit() and speaker not in self.synthesizer.spk2id:
            speaker = int(speaker)
        return self.synthesizer.speaker_id(speaker)

    def _segment_ids(self, seg) -> tuple[list[int], list[int], list[int]]:
        from vits.symbols import LANGUAGE_ID, LANGUAGE_TONE_START, SYMBOL_TO_ID, intersperse

        unknown = [p for p in seg.phones if p not in SYMBOL_TO_ID]
        if unknown:
            raise KoeError(f"unknown phone {unknown[0]!r}", where=repr(seg.norm_text[:40]),
                           fix="use phones from our text frontend")
        ids = [SYMBOL_TO_ID[p] for p in seg.phones]
        tones = [int(t) + LANGUAGE_TONE_START[seg.language] for t in seg.tones]
        langs = [LANGUAGE_ID[seg.language]] * len(ids)
        if self.synthesizer.add_blank:
            ids, tones, langs = intersperse(ids), intersperse(tones), intersperse(langs)
        return ids, tones, langs

    def _join_segments(self, segments, bert, rng):
        """Concatenate segments as Bert-VITS2's infer_multilang (drop blank/_/blank heads, _/blank tails)."""
        head, tail = (3, 2) if self.synthesizer.add_blank else (1, 1)
        slots = {"ZH": 0, "JP": 1, "EN": 2}
        ids, tones, langs, cols = [], [], [], [[], [], []]
        for k, seg in enumerate(segments):
            p, t, la = self._segment_ids(seg)
            real = _to_numpy(bert.features(seg, add_blank=self.synthesizer.add_blank), np.float32)
            if real.shape != (BERT_DIM, len(p)):
                raise KoeError(f"BERT features have shape {real.shape}, expected ({BERT_DIM}, {len(p)})",
                               where=repr(seg.norm_text[:40]), fix="use the real 1024-d BERT models")
            start = head if k > 0 else 0
            stop = len(p) - tail if k < len(segments) - 1 else len(p)
            ids += p[start:stop]
            tones += t[start:stop]
            langs += la[start:stop]
            for slot in range(3):
                noise = rng.random if self.synthesizer.needs_emotion else rng.standard_normal
                block = real if slot == slots[seg.language] else noise((BERT_DIM, len(p)))
                cols[slot].append(np.asarray(block, np.float32)[:, start:stop])
        return ids, tones, langs, [np.concatenate(c, axis=1) for c in cols]

    def stream(self, text: str, language: str = SYNTHESIS.language, *, speaker: str | int | None = None,
               bert=None, sdp_ratio: float = SYNTHESIS.sdp_ratio, noise_scale: float = SYNTHESIS.noise_scale,
               noise_scale_w: float = SYNTHESIS.noise_scale_w, length_scale: float = SYNTHESIS.length_scale,
               seed: int | None = None, user_dict=None, emo=None, style_text: str | None = None,
               style_weight: float = SYNTHESIS.style_weight):
        """Yield (sentence, float32 audio) per sentence, like `Voice.stream` (sentence i uses seed + i).

        `bert`: BERT features to use instead of the export's own. `emo`: the CLAP emotion vector of a 2.2
        export (one for all sentences). `style_text`/`style_weight`:
        a text whose BERT features are mixed into every segment's (spec §7.7, `vits.text.style`).
        Raises KoeError without BERT features or text frontend, a missing/unexpected emotion vector,
        a style weight outside [0, 1], or for text with nothing to read.
        """
        self.synthesizer._emotion(emo)  # fail before any text work
        bert = bert if bert is not None else self.bert
        if bert is None:
            raise KoeError("text synthesis needs BERT features (the model was trained with them)",
                           where=str(self.folder),
                           fix="export the BERT models with the voice (python -m pipeline.export_onnx Data/<voice> "
                               "--bert), or pass bert=BertFeatures(model_dirs) (python -m pipeline.download bert)")
        import vits.text as text_mod
        from vits.text.style import styled

        bert = styled(bert, style_text, style_weight)  # the style vectors: once per language, here
        sid = self.speaker_id(speaker)
        language = language.upper()
        sentences = [text] if language == "MIX" else [s for s in text_mod.split_sentences(text) if s.strip()]
        for i, sentence in enumerate(sentences):
            segments = text_mod.clean_text(sentence, language, user_dict=user_dict)
            if not segments:
                continue
            rng = np.random.default_rng(None if seed is None else seed + i)
            ids, tones, langs, feats = self._join_segments(segments, bert, rng)
            audio = self.synthesizer.infer(
                ids, tones, langs, *feats, speaker=sid, sdp_ratio=sdp_ratio, noise_scale=noise_scale,
                noise_scale_w=noise_scale_w, length_scale=length_scale,
                sdp_noise=rng.standard_normal((2, len(ids))).astype(np.float32), seed=int(rng.integers(2**31)),
                emo=emo)
            yield sentence, audio

    def synthesize(self, text: str, language: str = SYNTHESIS.language, *, pause: float = SYNTHESIS.pause,
                   **kwargs) -> np.ndarray:
        """All sentences of `stream` joined with `pause` seconds of silence (keywords as `stream`, style_text and
        style_weight included). Raises KoeError as `stream`."""
        from vits.audio import join_with_pauses

        pieces = (audio for _sentence, audio in self.stream(text, language, **kwargs))
        return join_with_pauses(pieces, self.sampling_rate, pause)
