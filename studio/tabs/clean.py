"""The Dataset tab's Clean step: denoise / separate the recordings in raw/ into clean/ before slicing.

`layout()` places the controls (between adding recordings and slicing); `wire()` connects them once the
tab's job panel exists. Runs `python -m pipeline.clean` as a job like every stage, and plays a sample
recording before (raw/) and after (clean/) so the user hears what cleaning did before slicing from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from prep.audio import is_audio_file
from studio import stages
from studio.tabs import Context, error_text
from vits.errors import KoeError
from vits.voice_folder import RAW, clean_path


@dataclass
class CleanUI:
    denoise: gr.Checkbox
    separate: gr.Checkbox
    run: gr.Button
    sample: gr.Dropdown
    before: gr.Audio
    after: gr.Audio
    info: gr.Markdown


def layout() -> CleanUI:
    gr.Markdown("**Clean** (optional, before slicing): remove noise and/or music from the recordings. The "
                "originals in raw/ stay as they are; slicing then uses the cleaned copies in clean/.")
    with gr.Row():
        denoise = gr.Checkbox(label="Denoise (DeepFilterNet3, ships with Koe)", value=True, elem_id="clean-denoise")
        separate = gr.Checkbox(label="Separate vocals from music (UVR MDX-Net: python -m pipeline.download "
                                     "separator)", value=False, elem_id="clean-separate")
        run = gr.Button("Clean recordings", elem_id="clean-btn")
    with gr.Row():
        sample = gr.Dropdown([], label="Listen to a recording", elem_id="clean-sample", scale=2,
                             allow_custom_value=True)  # a tick may carry the previous voice's file
        before = gr.Audio(label="Before (raw/)", type="filepath", interactive=False, elem_id="clean-before")
        after = gr.Audio(label="After (clean/)", type="filepath", interactive=False, elem_id="clean-after")
    info = gr.Markdown(elem_id="clean-info")
    return CleanUI(denoise, separate, run, sample, before, after, info)


def recordings(voice_dir: Path) -> list[str]:
    """The audio files under raw/, relative to it (the sample choices)."""
    raw = voice_dir / RAW
    if not raw.is_dir():
        return []
    return sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*") if p.is_file() and is_audio_file(p))


def wire(ctx: Context, ui: CleanUI, start, job_md: gr.Markdown, message_md: gr.Markdown) -> None:
    """`start(voice, stage, make_command)` is the Dataset tab's job starter (job panel, message)."""

    def run(voice, denoise, separate):
        if not denoise and not separate:
            return gr.skip(), error_text(KoeError("nothing to do: neither Denoise nor Separate is ticked",
                                                  fix="tick Denoise and/or Separate vocals"))
        return start(voice, "clean", lambda d: stages.clean(d, bool(denoise), bool(separate)))

    def samples(voice, current=None):
        try:
            names = recordings(ctx.voice_dir(voice))
        except KoeError:
            names = []
        return gr.update(choices=names, value=current if current in names else (names[0] if names else None))

    def listen(voice, name):
        if not voice or not name:
            return None, None, "Add recordings to hear them here."
        try:
            voice_dir = ctx.voice_dir(voice)
        except KoeError as exc:
            return None, None, error_text(exc)
        raw = voice_dir / RAW / name
        if not raw.is_file():
            return None, None, f"`raw/{name}` is gone: pick another recording."
        cleaned = clean_path(voice_dir, raw)
        if not cleaned.is_file():
            return str(raw), None, f"`raw/{name}` has no cleaned copy yet: **Clean recordings** makes one."
        return str(raw), str(cleaned), f"Before: `raw/{name}` · after: `{cleaned.relative_to(voice_dir)}`."

    ui.run.click(run, [ctx.voice, ui.denoise, ui.separate], [job_md, message_md])
    ctx.voice.change(samples, ctx.voice, ui.sample)
    ctx.timer.tick(samples, [ctx.voice, ui.sample], ui.sample, show_progress="hidden", trigger_mode="once")
    ui.sample.change(listen, [ctx.voice, ui.sample], [ui.before, ui.after, ui.info])
    ui.run.click(listen, [ctx.voice, ui.sample], [ui.before, ui.after, ui.info])
