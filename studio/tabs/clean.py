"""The Dataset tab's Clean step: denoise / separate the recordings in raw/ into clean/ before slicing.

`layout()` places the controls (between adding recordings and slicing); `wire()` connects them once the
tab's job panel exists. Runs `python -m pipeline.clean` as a job like every stage, and plays a sample
recording before (raw/) and after (clean/) so the user hears what cleaning did before slicing from it.
The players and the "what is cleaned" line follow the disk on the refresh timer: when a clean job writes
the sample's copy, the after player shows it without a click.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from prep.audio import is_audio_file
from studio import stages
from studio.tabs import Context, error_text
from vits.errors import KoeError
from vits.fileio import read_json
from vits.voice_folder import CLEAN_MANIFEST, RAW, clean_path, file_stamp


@dataclass
class CleanUI:
    denoise: gr.Checkbox
    separate: gr.Checkbox
    run: gr.Button
    sample: gr.Dropdown
    before: gr.Audio
    after: gr.Audio
    info: gr.Markdown
    shown: gr.State  # what the players and the info line show, so the timer only sends what changed


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
    return CleanUI(denoise, separate, run, sample, before, after, info, gr.State({}))


def recordings(voice_dir: Path) -> list[str]:
    """The audio files under raw/, relative to it (the sample choices)."""
    raw = voice_dir / RAW
    if not raw.is_dir():
        return []
    return sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*") if p.is_file() and is_audio_file(p))


def cleaned_summary(voice_dir: Path, names: list[str], manifest: dict) -> str:
    """One line on what clean/ holds for the recordings `names` (relative to raw/), read from disk.

    Counts the recordings with a cleaned copy and names those whose cleaning failed (`manifest`: clean.json).
    """
    if not names:
        return ""
    done = sum(clean_path(voice_dir, voice_dir / RAW / n).is_file() for n in names)
    failed = [n for n in names if (manifest.get(f"{RAW}/{n}") or {}).get("error")]
    line = f"clean/: {done} of {len(names)} recording(s) cleaned."
    if failed:
        shown = ", ".join(f"`raw/{n}`" for n in failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        line += f" Failed: {shown} (the reason is in the job's log and in {CLEAN_MANIFEST})."
    return line


def sample_view(voice_dir: Path, name: str | None) -> tuple[str | None, str | None, str]:
    """(before path, after path, info markdown) of recording `name` as the disk has it now."""
    manifest = read_json(voice_dir / CLEAN_MANIFEST, {})
    summary = cleaned_summary(voice_dir, recordings(voice_dir), manifest)
    if not name:
        return None, None, "Add recordings to hear them here."
    raw = voice_dir / RAW / name
    if not raw.is_file():
        return None, None, f"`raw/{name}` is gone: pick another recording."
    cleaned = clean_path(voice_dir, raw)
    error = (manifest.get(f"{RAW}/{name}") or {}).get("error")
    if error:
        text = f"Cleaning `raw/{name}` failed: {error}"
    elif not cleaned.is_file():
        text = f"`raw/{name}` has no cleaned copy yet: **Clean recordings** makes one."
    else:
        text = f"Before: `raw/{name}` · after: `{cleaned.relative_to(voice_dir).as_posix()}`."
    return str(raw), (str(cleaned) if cleaned.is_file() else None), f"{text}\n\n{summary}".strip()


def _changed(shown: dict, key: str, mark, value):
    """`value` when `mark` differs from what the page shows under `key` (and remember it), else gr.skip()."""
    if key in shown and shown[key] == mark:
        return gr.skip()
    shown[key] = mark
    return value


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

    def listen(voice, name, shown):
        """(before, after, info, shown): the sample as on disk; gr.skip() for what the page already shows."""
        shown = dict(shown or {})
        try:
            before, after, info = sample_view(ctx.voice_dir(voice), name) if voice else (
                None, None, "Add recordings to hear them here.")
        except KoeError as exc:
            before, after, info = None, None, error_text(exc)
        # A file rewritten in place (cleaned again with other steps) has a new stamp: the player reloads it.
        return (_changed(shown, "before", [before, file_stamp(Path(before))] if before else None, before),
                _changed(shown, "after", [after, file_stamp(Path(after))] if after else None, after),
                _changed(shown, "info", info, info), shown)

    players = [ui.before, ui.after, ui.info, ui.shown]
    ui.run.click(run, [ctx.voice, ui.denoise, ui.separate], [job_md, message_md])
    ctx.voice.change(samples, ctx.voice, ui.sample)
    ctx.timer.tick(samples, [ctx.voice, ui.sample], ui.sample, show_progress="hidden", trigger_mode="once")
    ui.sample.change(listen, [ctx.voice, ui.sample, ui.shown], players)
    # The clean job writes clean/ while the page waits: the timer brings the after player to what is there.
    ctx.timer.tick(listen, [ctx.voice, ui.sample, ui.shown], players, show_progress="hidden", trigger_mode="once")
