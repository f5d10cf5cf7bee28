"""Export tab: a release checkpoint (no optimizer, fp16/safetensors), a zip with a model card, ONNX."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from studio import stages
from studio.jobs import FINISHED
from studio.tabs import Context, error_text, unchanged_skip
from studio.voices import zip_voice
from vits.errors import KoeError
from vits.scores import generator_choices
from vits.voice_folder import EXPORT, ONNX

ONNX_STAGE = "export_onnx"


def onnx_files(voice_dir: Path) -> list[str]:
    """The files of a voice's ONNX export folder (graphs and koe_onnx.json), sorted; [] when there is none."""
    folder = voice_dir / ONNX
    return sorted(str(p) for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def build(ctx: Context) -> None:
    gr.Markdown("A **release** checkpoint keeps only the generator weights (no optimizer): small enough to "
                "share. The **zip** holds it with config.json and a model card.")
    with gr.Row():
        checkpoint = gr.Dropdown([], label="Checkpoint", elem_id="export-checkpoint")
        fp16 = gr.Checkbox(label="fp16 (half the size)", value=True, elem_id="export-fp16")
        safetensors = gr.Checkbox(label="safetensors", value=False, elem_id="export-safetensors")
        refresh_btn = gr.Button("Refresh", size="sm", elem_id="export-refresh")
    with gr.Row():
        release_btn = gr.Button("Export release checkpoint", elem_id="export-release")
        zip_btn = gr.Button("Zip the voice (release + config + model card)", variant="primary",
                            elem_id="export-zip")
        onnx_btn = gr.Button("Export ONNX", elem_id="export-onnx")
    files = gr.File(label="Exported files", file_count="multiple", interactive=False, elem_id="export-files")
    status = gr.Markdown(elem_id="export-status")
    # The ONNX export is a job: its panel follows it on the refresh timer and lists the files when it ends.
    onnx_status = gr.Markdown(elem_id="export-onnx-status")
    onnx_list = gr.File(label="ONNX export (Data/<voice>/onnx)", file_count="multiple", interactive=False,
                        elem_id="export-onnx-files")
    seen = gr.State({})  # what this page shows, so polling does not re-render it

    def refresh(voice):
        try:
            found, default = generator_choices(ctx.voice_dir(voice))  # default: the best-scored, else the newest
        except KoeError:
            found, default = [], None
        choices = [(label, str(p)) for label, p in found]
        return gr.update(choices=choices, value=str(default) if default is not None else None)

    def release(voice, g_path, half, st):
        from vits.checkpoints import checkpoint_step, export_release

        voice_dir = ctx.voice_dir(voice)
        if not g_path:
            raise KoeError("no checkpoint selected", fix="train first, then press Refresh")
        g = Path(g_path)
        if not g.resolve().is_relative_to(voice_dir.resolve()):
            raise KoeError("the checkpoint is not part of this voice", where=g_path)
        step = checkpoint_step(g)
        suffix = ".safetensors" if st else ".pth"
        out = voice_dir / EXPORT / f"G_{step}{'_fp16' if half else ''}{suffix}"
        out.parent.mkdir(parents=True, exist_ok=True)
        export_release(g, out, fp16=bool(half), safetensors=bool(st))
        return out, step

    def do_release(voice, g_path, half, st):
        try:
            out, _ = release(voice, g_path, half, st)
        except KoeError as exc:
            return None, error_text(exc)
        return [str(out)], f"✅ `{out.name}` ({out.stat().st_size / 2**20:.1f} MiB)"

    def do_zip(voice, g_path, half, st):
        try:
            out, step = release(voice, g_path, half, st)
            archive = zip_voice(ctx.voice_dir(voice), out, step)
        except KoeError as exc:
            return None, error_text(exc)
        return [str(archive)], f"✅ `{archive.name}` ({archive.stat().st_size / 2**20:.1f} MiB)"

    def do_onnx(voice, g_path):
        try:
            command = stages.export_onnx(ctx.voice_dir(voice), g_path or None)
            job = ctx.start(voice, ONNX_STAGE, command)
        except KoeError as exc:
            return error_text(exc), gr.skip(), {}
        text = ctx.runner.status_text(job)
        return text, None, {"status": text, "files": None}

    def onnx_panel(voice, shown_state):
        """(status, files, state) of the voice's newest ONNX job; gr.skip() for what the page already shows."""
        shown_state = dict(shown_state or {})
        job = ctx.latest(voice, {ONNX_STAGE})
        text = ctx.runner.status_text(job) if job else ""
        listed = []
        if job is not None and job.status == FINISHED:
            try:
                listed = onnx_files(ctx.voice_dir(voice))
            except KoeError:
                listed = []
        return (unchanged_skip(shown_state, "status", text), unchanged_skip(shown_state, "files", listed or None),
                shown_state)

    refresh_btn.click(refresh, ctx.voice, checkpoint)
    ctx.voice.change(refresh, ctx.voice, checkpoint)
    release_btn.click(do_release, [ctx.voice, checkpoint, fp16, safetensors], [files, status])
    zip_btn.click(do_zip, [ctx.voice, checkpoint, fp16, safetensors], [files, status])
    panel = [onnx_status, onnx_list, seen]
    onnx_btn.click(do_onnx, [ctx.voice, checkpoint], panel)
    ctx.voice.change(lambda v: onnx_panel(v, {}), ctx.voice, panel)
    ctx.timer.tick(onnx_panel, [ctx.voice, seen], panel, show_progress="hidden", trigger_mode="once")
