"""Synthesize tab: pick a checkpoint (or load an outside Bert-VITS2 model) and turn text into speech.

Synthesis is inference, so it runs in the studio's process, through the same model registry as the HTTP
API on the studio's port (server/registry.py): a voice and the BERT models are in memory once, and the
tab's jobs queue with the API's. Long text is spoken sentence by sentence as each one is ready.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import gradio as gr
import numpy as np
import soundfile as sf

from prep import voice_version
from server.bert_precision import int8_bert_error
from server.errors import ApiError
from server.registry import LoadedModel, ModelRegistry
from studio.tabs import Context, error_text
from studio.voices import speakers
from vits.clap import DEFAULT_TEXT_PROMPT, emotion_vector, takes_emotion
from vits.config import VoiceConfig
from vits.defaults import STUDIO_LANGUAGE, SYNTHESIS
from vits.errors import KoeError
from vits.scores import generator_choices
from vits.voice_folder import (
    ONNX,
    ONNX_BERT,
    ONNX_BERT_METADATA,
    ONNX_METADATA,
    config_for_checkpoint,
    generator_files,
    generator_step,
    safe_name,
)

LANGS = ["ZH", "JP", "EN", "KO", "AUTO", "MIX"]
TORCH, ONNX_ENGINE = "torch", "onnx"  # the Engine choice: the checkpoint on torch, or the voice's ONNX export
FP32, INT8 = "fp32", "int8"  # the BERT precision of an ONNX export (int8: export_onnx --bert --int8)
MODEL_LINE = "synth-model-line"  # the concurrency queue of the events that write the "Speaking with" line
REGISTRY = "model_registry"  # ctx.caches key of the studio's ModelRegistry (studio/app.py puts it there)


def registry(ctx: Context) -> ModelRegistry:
    """The studio's model registry, shared with the API on the studio's port."""
    return ctx.caches[REGISTRY]


def outside_dir(ctx: Context) -> Path:
    return ctx.settings.data_root / ".studio" / "outside"


def checkpoint_choices(ctx: Context, voice: str | None) -> list[tuple[str, str]]:
    """(label, G path) pairs: the voice's checkpoints newest first, then loaded outside models."""
    choices = []
    if voice:
        try:
            listed, _best = generator_choices(ctx.voice_dir(voice))  # the best-scored one is labelled
            choices += [(label, str(path)) for label, path in listed]
        except KoeError:
            pass
    root = outside_dir(ctx)
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            for _, path in generator_files(folder):
                choices.append((f"outside {folder.name}: {path.name}", str(path)))
    return choices


def speaker_names(g_path: str | None) -> list[str]:
    """Speakers of the voice a G file belongs to, from its config (without loading the model)."""
    if not g_path:
        return []
    try:
        config = config_for_checkpoint(g_path)
    except KoeError:
        return []
    return speakers(Path(g_path).parent.parent, config)


def load_checkpoint(ctx: Context, g_path: str) -> LoadedModel:
    """The registry's entry for a G checkpoint, loaded now if needed (and again when the file changed).

    Raises KoeError when the file is gone or cannot be loaded.
    """
    path = Path(g_path)
    if not path.is_file():
        raise KoeError("checkpoint not found", where=g_path, fix="refresh the checkpoint list")
    try:
        return registry(ctx).load_now(str(path), reload_changed=True)
    except ApiError as exc:
        raise KoeError(exc.error, fix=exc.detail) from None


def onnx_export(ctx: Context, voice: str | None) -> Path | None:
    """The voice's ONNX export folder (Data/<voice>/onnx, written by the Export tab), or None without one."""
    if not voice:
        return None
    folder = ctx.voice_dir(voice) / ONNX
    return folder if (folder / ONNX_METADATA).is_file() else None


def load_engine(ctx: Context, engine: str | None, voice: str | None, g_path: str | None) -> LoadedModel:
    """The registry entry that speaks: the G checkpoint (torch), or the voice's ONNX export. Raises KoeError."""
    if engine != ONNX_ENGINE:
        return load_checkpoint(ctx, g_path)
    folder = onnx_export(ctx, voice)
    if folder is None:
        raise KoeError(f"voice {voice!r} has no ONNX export", where=str(ctx.voice_dir(voice) / ONNX) if voice else None,
                       fix="export it in the Export tab (or python -m pipeline.export_onnx Data/<voice> --bert), "
                           "or choose the PyTorch engine")
    try:
        return registry(ctx).load_now(str(folder), backend="onnx")
    except ApiError as exc:
        raise KoeError(exc.error, fix=exc.detail) from None


def bert_precision_update(ctx: Context, voice: str | None, engine: str | None, current: str | None = FP32) -> dict:
    """The BERT precision control: shown for the ONNX engine, int8 offered only when the voice's export has int8
    graphs, with the feature error koe_bert.json records as its info line."""
    folder = onnx_export(ctx, voice) if engine == ONNX_ENGINE else None
    if folder is None:
        return gr.update(visible=False, value=FP32, interactive=False)
    error = int8_bert_error(folder)
    if error is None:
        has_bert = (folder / ONNX_BERT / ONNX_BERT_METADATA).is_file()
        why = ("this export has no int8 BERT graphs" if has_bert else
               "this export has no BERT graphs (the studio's torch BERT reads the text)")
        return gr.update(visible=True, value=FP32, interactive=False,
                         info=f"fp32 only: {why}; export with --bert --int8 to offer int8.")
    return gr.update(visible=True, value=current if current in (FP32, INT8) else FP32, interactive=True,
                     info="int8 vs fp32 feature error (koe_bert.json): " + describe_int8_error(error))


def describe_int8_error(error: dict[str, dict]) -> str:
    """"ZH mean cosine 0.99812, lowest 0.99100, max abs 0.031 (1.20% of the feature scale); JP …" per language."""
    parts = []
    for lang, err in error.items():
        if not err:
            parts.append(f"{lang} not measured")
            continue
        part = f"{lang} mean cosine {err['mean_cosine']:.5f}, lowest {err['min_cosine']:.5f}, max abs {err['max_abs']:.3g}"
        if "max_abs_relative" in err:
            part += f" ({err['max_abs_relative']:.2%} of the feature scale)"
        parts.append(part)
    return "; ".join(parts)


def _outside_target(folder: Path, upload: Path) -> Path:
    """Where an uploaded G file goes: its own name when it reads as a generator file, else G_0<suffix>."""
    target = folder / safe_name(upload.name)
    if generator_step(target) is None:
        suffix = upload.suffix.lower() if upload.suffix.lower() in (".pth", ".safetensors") else ".pth"
        target = folder / f"G_0{suffix}"
    return target


def add_outside_model(ctx: Context, g, cfg, name: str | None) -> Path:
    """Copy an uploaded G file and its config.json to Data/.studio/outside/<name>/ and load it.

    Returns the G path. Raises KoeError (missing upload, a model that does not load).
    """
    if not g or not cfg:
        raise KoeError("upload both the G_*.pth file and its config.json")
    g_src = Path(g if isinstance(g, str) else g.name)
    folder = outside_dir(ctx) / safe_name(name or g_src.stem, "model")
    folder.mkdir(parents=True, exist_ok=True)
    target = _outside_target(folder, g_src)
    shutil.copyfile(g_src, target)
    shutil.copyfile(Path(cfg if isinstance(cfg, str) else cfg.name), folder / "config.json")
    load_checkpoint(ctx, str(target))  # fail now, with the loader's message, not at first synthesis
    return target


def checkpoint_version(g_path: str | None) -> str | None:
    """"2.2" or "2.3" for a G file (its keys; for a release .safetensors its config.json), or None."""
    if not g_path:
        return None
    found = voice_version.checkpoint_version(g_path)
    if found is not None:
        return found
    try:
        return VoiceConfig.load(config_for_checkpoint(g_path)).architecture
    except KoeError:
        return None


def emotion_for(ctx: Context, entry: LoadedModel, mode: str | None, text: str | None, audio: str | None) -> dict:
    """{"emo": [512] vector} from the tab's emotion prompt for a 2.2 voice, {} for a 2.3 one. Raises KoeError."""
    if not takes_emotion(entry.voice):
        return {}
    clap = registry(ctx).clap()
    try:
        return {"emo": entry.call(lambda: emotion_vector(clap, text=text, audio=audio or None, mode=mode or "text",
                                                         where="the emotion reference clip"))}
    except ApiError as exc:
        raise KoeError(exc.error, fix=exc.detail) from None


def speak(entry: LoadedModel, bert, text: str, *, language: str, speaker: str | None, gap: float,
          seed: int | None, **knobs):
    """Yield (sentence, audio) one sentence at a time, the pause before every later one. Raises KoeError."""
    voice, rate = entry.voice, entry.sampling_rate
    speaker = speaker or (voice.speakers[0] if voice.speakers else None)
    silence = np.zeros(int(round(max(float(gap), 0.0) * rate)), dtype=np.float32)
    sentences = voice.stream(text, language=language, speaker=speaker, bert=bert, seed=seed,
                             user_dict=entry.user_dict, **knobs)
    first = True
    while True:
        try:
            item = entry.call(lambda: next(sentences, None))  # one sentence at a time, in the model's queue
        except ApiError as exc:
            raise KoeError(exc.error, fix=exc.detail) from None
        if item is None:
            return
        sentence, audio = item
        audio = np.asarray(audio, dtype=np.float32)
        yield sentence, (audio if first else np.concatenate([silence, audio]))
        first = False


def build(ctx: Context) -> None:
    with gr.Row():
        checkpoint = gr.Dropdown([], label="Checkpoint (newest first; the best-scored one is selected)", elem_id="checkpoint")
        speaker = gr.Dropdown([], label="Speaker", elem_id="speaker")
        refresh_btn = gr.Button("Refresh", size="sm", elem_id="synth-refresh")
    with gr.Row():
        engine = gr.Radio([("PyTorch checkpoint", TORCH), ("ONNX export (onnxruntime)", ONNX_ENGINE)], value=TORCH,
                          label="Engine", visible=False, elem_id="synth-engine")  # shown when the voice has an export
        bert_precision = gr.Radio([("fp32", FP32), ("int8 (about 4× smaller)", INT8)], value=FP32, interactive=False,
                                  label="BERT precision (ONNX export)", visible=False, elem_id="synth-bert")
    model_md = gr.Markdown(elem_id="synth-model")  # the file that will speak, in full
    text = gr.Textbox(label="Text", lines=4, elem_id="synth-text",
                      placeholder="Type what the voice should say. Long text is spoken sentence by sentence.")
    with gr.Row():
        # AUTO: the text frontend tells the language per sentence, so any typed text works first time.
        language = gr.Dropdown(LANGS, value=STUDIO_LANGUAGE, label="Language", elem_id="synth-lang")
        sdp = gr.Slider(0, 1, value=SYNTHESIS.sdp_ratio, step=0.05, label="sdp_ratio", elem_id="sdp-ratio")
        noise = gr.Slider(0, 1.5, value=SYNTHESIS.noise_scale, step=0.05, label="noise", elem_id="noise")
        noise_w = gr.Slider(0, 1.5, value=SYNTHESIS.noise_scale_w, step=0.05, label="noise_w", elem_id="noise-w")
        length = gr.Slider(0.3, 2.5, value=SYNTHESIS.length_scale, step=0.05, label="length (slower →)",
                           elem_id="length")
        pause = gr.Slider(0, 2, value=SYNTHESIS.pause, step=0.05, label="pause between sentences (s)",
                          elem_id="pause")
        seed = gr.Number(label="seed (-1 random)", value=-1, precision=0, elem_id="seed")
    with gr.Row():  # Bert-VITS2's style text (spec §7.7): its BERT features are mixed into the text's
        style_text = gr.Textbox(label="Style text (optional: a sentence in the mood you want)", elem_id="style-text",
                                scale=3)
        style_weight = gr.Slider(0, 1, value=SYNTHESIS.style_weight, step=0.05, label="Style weight",
                                 elem_id="style-weight")
    with gr.Row(visible=False, elem_id="emotion-row") as emotion_row:  # shown for 2.2 (CLAP) voices only
        prompt_mode = gr.Radio([("Text prompt", "text"), ("Audio prompt", "audio")], value="text",
                               label="Emotion (Bert-VITS2 2.2-CLAP voice)", elem_id="prompt-mode")
        emotion_text = gr.Textbox(value=DEFAULT_TEXT_PROMPT, label="Emotion text prompt (e.g. Happy, 悲伤)",
                                  elem_id="emotion-text")
        emotion_audio = gr.Audio(type="filepath", sources=["upload"], label="Emotion reference clip (audio prompt)",
                                 elem_id="emotion-audio")
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
        value = pick_checkpoint(choices, ctx.settings.voice_dir(voice) if voice else None, current)
        return gr.update(choices=choices, value=value), speaker_update(value)

    def watch(voice, current, shown):
        """On the refresh timer: re-list when the voice's checkpoints changed (a new one from training)."""
        now = [v for _, v in checkpoint_choices(ctx, voice)]
        if now == shown:
            return gr.skip(), gr.skip(), shown
        update, speakers_update = refresh(voice, current)
        return update, speakers_update, now

    def checkpoint_update(g_path):
        return (speaker_update(g_path), gr.update(visible=checkpoint_version(g_path) == "2.2"),
                model_text(g_path))

    def model_text(g_path):
        if not g_path:
            return "No checkpoint selected: train this voice first, or load a model from elsewhere below."
        where = "outside model" if Path(g_path).is_relative_to(outside_dir(ctx)) else "this voice"
        return f"Speaking with `{g_path}` ({where})."

    def speaker_update(g_path):
        names = speaker_names(g_path)
        return gr.update(choices=names, value=names[0] if names else None)

    def engine_update(voice, chosen_engine=TORCH):
        has = onnx_export(ctx, voice) is not None
        return gr.update(visible=has, value=chosen_engine if has else TORCH)

    def engine_text(voice, g_path, chosen_engine, precision=FP32):
        if chosen_engine != ONNX_ENGINE:
            return model_text(g_path) + " Engine: PyTorch."
        folder = onnx_export(ctx, voice)
        if folder is None:
            return "This voice has no ONNX export: export it in the Export tab, or choose the PyTorch engine."
        try:
            entry = load_engine(ctx, ONNX_ENGINE, voice, g_path)
        except KoeError as exc:
            return error_text(exc)
        reader = registry(ctx).bert_engine(entry, precision)
        return f"Speaking with the ONNX export `{folder}`. Engine: onnxruntime, text read by {reader}."

    def synthesize(g_path, spk, txt, lang, sdp_ratio, noise_scale, noise_scale_w, length_scale, gap, seed_value,
                   mode, emo_text, emo_audio, style_txt, style_w, chosen_engine=TORCH, voice=None, precision=FP32):
        if not g_path and chosen_engine != ONNX_ENGINE:
            raise gr.Error("No checkpoint: train the voice first, or load an outside model.")
        if not (txt or "").strip():
            raise gr.Error("Type some text first.")
        precision = precision if chosen_engine == ONNX_ENGINE else FP32  # int8 is an ONNX export's choice only
        try:
            entry = load_engine(ctx, chosen_engine, voice, g_path)
            # an ONNX export's own BERT graphs when it has them (int8: opened on first use, kept with the voice)
            bert = registry(ctx).bert_for(entry, precision or FP32)
            emotion = emotion_for(ctx, entry, mode, emo_text, emo_audio)
        except (ApiError, KoeError) as exc:  # ApiError: int8 asked of an export without int8 graphs
            raise gr.Error(str(exc)) from None
        seed_arg = None if seed_value is None or int(seed_value) < 0 else int(seed_value)
        sentences = speak(entry, bert, txt, language=lang, speaker=spk, gap=gap, seed=seed_arg,
                          sdp_ratio=float(sdp_ratio), noise_scale=float(noise_scale),
                          noise_scale_w=float(noise_scale_w), length_scale=float(length_scale), **emotion,
                          style_text=style_txt or None, style_weight=float(style_w))
        pieces: list[np.ndarray] = []
        rate, t0 = entry.sampling_rate, time.time()
        try:
            for number, (sentence, audio) in enumerate(sentences, 1):
                pieces.append(audio)
                yield (rate, audio), gr.skip(), f"⏳ sentence {number}: {sentence}"
        except KoeError as exc:
            yield None, None, error_text(exc)
            return
        if not pieces:
            yield None, None, "Nothing to say: the text frontend produced no sentences."
            return
        source = g_path if chosen_engine != ONNX_ENGINE else str(entry.path)
        done = _done(pieces, rate, source, t0)
        if chosen_engine == ONNX_ENGINE:
            done += f" Text read by {registry(ctx).bert_engine(entry, precision)}."
        yield gr.skip(), str(_save(ctx, source, np.concatenate(pieces), rate)), done

    def load_outside(voice, g, cfg, name):
        try:
            target = add_outside_model(ctx, g, cfg, name)
        except KoeError as exc:
            return gr.skip(), gr.skip(), error_text(exc)
        choices = checkpoint_choices(ctx, voice)
        return (gr.update(choices=choices, value=str(target)), speaker_update(str(target)),
                f"✅ loaded `{target.name}` as an outside model")

    listed = gr.State([])
    # The timer reads the selection from a State: a tick sent just before a voice change carried the old voice's
    # checkpoint, which Gradio refused against the new voice's choices ("not in the list of choices").
    chosen = gr.State(None)
    refresh_btn.click(refresh, [ctx.voice, checkpoint], [checkpoint, speaker])
    refresh_btn.click(engine_update, [ctx.voice, engine], engine).then(
        lambda v, e, b: bert_precision_update(ctx, v, e, b), [ctx.voice, engine, bert_precision], bert_precision)
    ctx.voice.change(refresh, ctx.voice, [checkpoint, speaker])
    # The engine and precision chosen stay while the next voice offers them (a re-fired voice.change then keeps them).
    ctx.voice.change(engine_update, [ctx.voice, engine], engine).then(
        lambda v, e, b: bert_precision_update(ctx, v, e, b), [ctx.voice, engine, bert_precision], bert_precision)
    engine.change(lambda v, e, b: bert_precision_update(ctx, v, e, b), [ctx.voice, engine, bert_precision],
                  bert_precision)
    # One queue for the model line: a slow first load answering late must not overwrite a newer choice's line.
    engine.change(engine_text, [ctx.voice, checkpoint, engine, bert_precision], model_md,
                  concurrency_id=MODEL_LINE)
    bert_precision.change(engine_text, [ctx.voice, checkpoint, engine, bert_precision], model_md,
                          concurrency_id=MODEL_LINE)
    ctx.timer.tick(watch, [ctx.voice, chosen, listed], [checkpoint, speaker, listed], show_progress="hidden",
                   trigger_mode="once")
    checkpoint.change(lambda g: (*checkpoint_update(g), g), checkpoint, [speaker, emotion_row, model_md, chosen]).then(
        engine_text, [ctx.voice, checkpoint, engine, bert_precision], model_md,  # the line also names the engine
        concurrency_id=MODEL_LINE)
    synth_btn.click(synthesize, [checkpoint, speaker, text, language, sdp, noise, noise_w, length, pause, seed,
                                 prompt_mode, emotion_text, emotion_audio, style_text, style_weight, engine, ctx.voice,
                                 bert_precision],
                    [stream, full, status])
    outside_btn.click(load_outside, [ctx.voice, g_file, cfg_file, outside_name], [checkpoint, speaker, status])


def pick_checkpoint(choices: list[tuple[str, str]], voice_dir: Path | None, current: str | None) -> str | None:
    """The checkpoint to select: the user's `current` one while it is listed, else the voice's best-scored one
    (logs/scores.json), else its newest; never another voice's or an outside model the user did not pick
    (None when the voice has no checkpoint)."""
    values = [v for _, v in choices]
    if current in values:
        return current
    own = [v for v in values if voice_dir and Path(v).resolve().is_relative_to(voice_dir.resolve())]
    default = generator_choices(voice_dir)[1] if own else None
    return str(default) if default is not None and str(default) in own else (own[0] if own else None)


def _save(ctx: Context, g_path: str, audio: np.ndarray, rate: int) -> Path:
    """Write the whole result under Data/.studio/synth/ (what the Result player plays and downloads)."""
    out_dir = ctx.settings.data_root / ".studio" / "synth"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{safe_name(Path(g_path).stem)}.wav"
    sf.write(out, audio, rate, subtype="PCM_16")
    return out


def _done(pieces: list[np.ndarray], rate: int, g_path: str, t0: float) -> str:
    seconds = sum(len(p) for p in pieces) / rate
    return (f"✅ {seconds:.1f} s of audio from `{Path(g_path).name}` in {time.time() - t0:.1f} s "
            f"({len(pieces)} sentence(s)).")

