"""Synthesize tab: pick a checkpoint (or load an outside Bert-VITS2 model) and turn text into speech.

Synthesis is inference, so it runs in the studio's process through `vits.synthesis.Voice`; loaded voices
and BERT models are cached. Long text is spoken sentence by sentence as each one is ready.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
import soundfile as sf

from studio.tabs import Context, error_text
from studio.voices import checkpoints, speakers
from vits.errors import KoeError
from vits.voice_folder import safe_name

LANGS = ["ZH", "JP", "EN", "AUTO", "MIX"]
_LOCK = threading.Lock()


def outside_dir(ctx: Context) -> Path:
    return ctx.settings.data_root / ".studio" / "outside"


def checkpoint_choices(ctx: Context, voice: str | None) -> list[tuple[str, str]]:
    """(label, G path) pairs: the voice's checkpoints newest first, then loaded outside models."""
    choices = []
    if voice:
        try:
            for step, path in checkpoints(ctx.voice_dir(voice)):
                choices.append((f"{path.name} — step {step}", str(path)))
        except KoeError:
            pass
    root = outside_dir(ctx)
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            for path in sorted(folder.glob("G_*")):
                choices.append((f"outside {folder.name}: {path.name}", str(path)))
    return choices


def config_for(g_path: Path) -> Path | None:
    """config.json beside a G file, or in ../configs/ (the voice folder layout)."""
    for candidate in (g_path.parent / "config.json", g_path.parent.parent / "configs" / "config.json"):
        if candidate.is_file():
            return candidate
    return None


def load_voice(ctx: Context, g_path: str):
    """The cached `Voice` for a G checkpoint (reloaded when the file changes)."""
    from vits.synthesis import Voice

    path = Path(g_path)
    if not path.is_file():
        raise KoeError("checkpoint not found", where=g_path, fix="refresh the checkpoint list")
    key = ("voice", str(path), path.stat().st_mtime_ns)
    with _LOCK:
        if key not in ctx.caches:
            for old in [k for k in ctx.caches if k[0] == "voice"]:
                del ctx.caches[old]  # one voice in memory at a time
            ctx.caches[key] = Voice.load(path, device=ctx.settings.resolved_device(), config_path=config_for(path))
        return ctx.caches[key]


def load_bert(ctx: Context):
    """BertFeatures over the configured folders that exist, or None (synthesis then uses zero features)."""
    dirs = {lang: path for lang, path in ctx.settings.bert.items() if Path(path).is_dir()}
    if not dirs:
        return None
    key = ("bert", tuple(sorted((k, str(v)) for k, v in dirs.items())))
    with _LOCK:
        if key not in ctx.caches:
            from vits.text.bert import BertFeatures

            ctx.caches[key] = BertFeatures(dirs, device=ctx.settings.resolved_device())
        return ctx.caches[key]


def user_dict(g_path: str):
    """The pronunciation dictionary of the voice a checkpoint belongs to, or None."""
    path = Path(g_path).parent.parent / "userdict.txt"
    if not path.is_file():
        return None
    from vits.text import UserDict

    return UserDict.load(path)


def build(ctx: Context) -> None:
    with gr.Row():
        checkpoint = gr.Dropdown([], label="Checkpoint (newest first)", elem_id="checkpoint")
        speaker = gr.Dropdown([], label="Speaker", elem_id="speaker")
        refresh_btn = gr.Button("Refresh", size="sm", elem_id="synth-refresh")
    text = gr.Textbox(label="Text", lines=4, elem_id="synth-text",
                      placeholder="Type what the voice should say. Long text is spoken sentence by sentence.")
    with gr.Row():
        language = gr.Dropdown(LANGS, value="ZH", label="Language", elem_id="synth-lang")
        sdp = gr.Slider(0, 1, value=0.5, step=0.05, label="sdp_ratio", elem_id="sdp-ratio")
        noise = gr.Slider(0, 1.5, value=0.6, step=0.05, label="noise", elem_id="noise")
        noise_w = gr.Slider(0, 1.5, value=0.9, step=0.05, label="noise_w", elem_id="noise-w")
        length = gr.Slider(0.3, 2.5, value=1.0, step=0.05, label="length (slower →)", elem_id="length")
        pause = gr.Slider(0, 2, value=0.2, step=0.05, label="pause between sentences (s)", elem_id="pause")
        seed = gr.Number(label="seed (-1 random)", value=-1, precision=0, elem_id="seed")
    synth_btn = gr.Button("Synthesize", variant="primary", elem_id="synth-btn")
    stream = gr.Audio(label="Live (sentence by sentence)", streaming=True, autoplay=True, interactive=False,
                      elem_id="synth-stream")
    full = gr.Audio(label="Result (play / download)", type="filepath", interactive=False, elem_id="synth-audio")
    status = gr.Markdown(elem_id="synth-status")
    with gr.Accordion("Load a Bert-VITS2 model from elsewhere (G_*.pth + config.json)", open=False):
        with gr.Row():
            g_file = gr.File(label="G_*.pth", file_types=[".pth", ".safetensors"], elem_id="outside-g")
            cfg_file = gr.File(label="config.json", file_types=[".json"], elem_id="outside-config")
        outside_name = gr.Textbox(label="Name", elem_id="outside-name")
        outside_btn = gr.Button("Load model", elem_id="outside-load")

    def refresh(voice, current=None):
        choices = checkpoint_choices(ctx, voice)
        values = [v for _, v in choices]
        value = current if current in values else (values[0] if values else None)
        return gr.update(choices=choices, value=value), speaker_update(value)

    def speaker_update(g_path):
        names = []
        if g_path:
            cfg = config_for(Path(g_path))
            names = speakers(Path(g_path).parent.parent, cfg) if cfg else []
        return gr.update(choices=names, value=names[0] if names else None)

    def synthesize(g_path, spk, txt, lang, sdp_ratio, noise_scale, noise_scale_w, length_scale, gap, seed_value):
        if not g_path:
            raise gr.Error("No checkpoint: train the voice first, or load an outside model.")
        if not (txt or "").strip():
            raise gr.Error("Type some text first.")
        try:
            voice = load_voice(ctx, g_path)
            bert = load_bert(ctx)
        except KoeError as exc:
            raise gr.Error(str(exc)) from None
        rate = voice.sampling_rate
        spk = spk or (voice.speakers[0] if voice.speakers else None)
        seed_arg = None if seed_value is None or int(seed_value) < 0 else int(seed_value)
        pieces: list[np.ndarray] = []
        silence = np.zeros(int(round(max(float(gap), 0.0) * rate)), dtype=np.float32)
        t0 = time.time()
        try:
            for number, (sentence, audio) in enumerate(voice.stream(
                    txt, language=lang, speaker=spk, bert=bert, sdp_ratio=float(sdp_ratio),
                    noise_scale=float(noise_scale), noise_scale_w=float(noise_scale_w),
                    length_scale=float(length_scale), seed=seed_arg, user_dict=user_dict(g_path)), 1):
                audio = np.asarray(audio, dtype=np.float32)
                if pieces:
                    audio = np.concatenate([silence, audio])
                pieces.append(audio)
                yield (rate, audio), gr.skip(), f"⏳ sentence {number}: {sentence}"
        except KoeError as exc:
            yield None, None, error_text(exc)
            return
        if not pieces:
            yield None, None, "Nothing to say: the text frontend produced no sentences."
            return
        whole = np.concatenate(pieces)
        out_dir = ctx.settings.data_root / ".studio" / "synth"
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{safe_name(Path(g_path).stem)}.wav"
        sf.write(out, whole, rate, subtype="PCM_16")
        seconds = len(whole) / rate
        yield gr.skip(), str(out), (f"✅ {seconds:.1f} s of audio from `{Path(g_path).name}` in "
                                    f"{time.time() - t0:.1f} s ({len(pieces)} sentence(s)).")

    def load_outside(voice, g, cfg, name):
        try:
            if not g or not cfg:
                raise KoeError("upload both the G_*.pth file and its config.json")
            g_src = Path(g if isinstance(g, str) else g.name)
            folder = outside_dir(ctx) / safe_name(name or g_src.stem, "model")
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / safe_name(g_src.name)
            if not target.name.startswith("G_"):
                target = folder / f"G_{target.name}"
            shutil.copyfile(g_src, target)
            shutil.copyfile(Path(cfg if isinstance(cfg, str) else cfg.name), folder / "config.json")
            load_voice(ctx, str(target))  # fail now, with the loader's message, not at first synthesis
        except KoeError as exc:
            return gr.skip(), gr.skip(), error_text(exc)
        choices = checkpoint_choices(ctx, voice)
        return (gr.update(choices=choices, value=str(target)), speaker_update(str(target)),
                f"✅ loaded `{target.name}` as an outside model")

    refresh_btn.click(refresh, [ctx.voice, checkpoint], [checkpoint, speaker])
    ctx.voice.change(refresh, ctx.voice, [checkpoint, speaker])
    checkpoint.change(speaker_update, checkpoint, speaker)
    synth_btn.click(synthesize, [checkpoint, speaker, text, language, sdp, noise, noise_w, length, pause, seed],
                    [stream, full, status])
    outside_btn.click(load_outside, [ctx.voice, g_file, cfg_file, outside_name], [checkpoint, speaker, status])
