"""Export tab: a release checkpoint (no optimizer, fp16/safetensors), a zip with a model card, ONNX."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from studio import stages
from studio.tabs import Context, error_text
from studio.voices import zip_voice
from vits.errors import KoeError
from vits.voice_folder import EXPORT, generator_files


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

    def refresh(voice):
        try:
            found = generator_files(ctx.voice_dir(voice))
        except KoeError:
            found = []
        choices = [(f"{p.name} — step {s}", str(p)) for s, p in found]
        return gr.update(choices=choices, value=choices[0][1] if choices else None)

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
            return None, ctx.runner.status_text(ctx.start(voice, "export_onnx", command))
        except KoeError as exc:
            return None, error_text(exc)

    refresh_btn.click(refresh, ctx.voice, checkpoint)
    ctx.voice.change(refresh, ctx.voice, checkpoint)
    release_btn.click(do_release, [ctx.voice, checkpoint, fp16, safetensors], [files, status])
    zip_btn.click(do_zip, [ctx.voice, checkpoint, fp16, safetensors], [files, status])
    onnx_btn.click(do_onnx, [ctx.voice, checkpoint], [files, status])
