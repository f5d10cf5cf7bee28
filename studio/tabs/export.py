"""Export tab: a release checkpoint (no optimizer, fp16/safetensors), a zip with a model card, ONNX.

The ONNX export can take the voice's BERT models along (`export_onnx --bert`: text -> audio without torch)
and an int8 copy of them (`--int8`); once the job ends, the tab shows the int8 feature error measured by the
export, read from <voice>/onnx/bert/koe_bert.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from studio import stages
from studio.jobs import FINISHED
from studio.tabs import Context, error_text, unchanged_skip
from studio.voices import zip_voice
from vits.errors import KoeError
from vits.scores import generator_choices
from vits.voice_folder import EXPORT, ONNX, ONNX_BERT, ONNX_BERT_METADATA

ONNX_STAGE = "export_onnx"


def onnx_files(voice_dir: Path) -> list[str]:
    """The files of a voice's ONNX export folder (graphs and koe_onnx.json), sorted; [] when there is none."""
    folder = voice_dir / ONNX
    return sorted(str(p) for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def onnx_command(voice_dir: Path, checkpoint: str | None, bert: bool, int8: bool) -> stages.Command:
    """The ONNX export job's command: the VITS graphs, with `bert` the BERT graphs, with `int8` their int8 copy.

    Raises KoeError for int8 without BERT (it quantises the BERT graphs).
    """
    if int8 and not bert:
        raise KoeError("int8 quantises the BERT graphs, and BERT is not ticked", fix="tick BERT too, or untick int8")
    command = stages.export_onnx(voice_dir, checkpoint)
    if bert:
        command.argv += ["--bert", *(["--int8"] if int8 else [])]
        command.expected += [f"{ONNX}/{ONNX_BERT}/{ONNX_BERT_METADATA}"]
    return command


def bert_summary(voice_dir: Path) -> str:
    """Markdown on the BERT export in <voice>/onnx/bert, read from its koe_bert.json: per language the fp32
    check against torch and, when exported, the int8 copy's measured feature error. "" when there is none."""
    path = voice_dir / ONNX / ONNX_BERT / ONNX_BERT_METADATA
    try:
        languages = json.loads(path.read_text(encoding="utf-8")).get("languages", {})
    except (OSError, ValueError, AttributeError):
        return ""
    rows = []
    for lang, entry in sorted(languages.items()):
        check = (entry.get("fp32_vs_torch") or {}).get("max_abs")
        fp32 = f"{check:.2e}" if check is not None else "?"
        err = entry.get("int8_vs_fp32")
        int8 = (f"{err['max_abs']:.3g} ({err['max_abs_relative']:.2%} of the feature scale) | "
                f"{err['mean_cosine']:.5f} | {err['min_cosine']:.5f}") if err else "not exported | | "
        rows.append(f"| {lang} | {fp32} | {int8} |")
    if not rows:
        return ""
    where = path.relative_to(voice_dir).as_posix()
    return ("**BERT graphs** (torch-free text → audio), measured by the export (`" + where + "`):\n\n"
            "| language | fp32 vs torch, max abs | int8 vs fp32, max abs | int8 mean cosine | int8 lowest cosine |\n"
            "|---|---|---|---|---|\n" + "\n".join(rows))


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
    with gr.Row():
        bert = gr.Checkbox(label="BERT too (text → audio without torch; needs the voice's BERT models)", value=False,
                           elem_id="export-onnx-bert")
        int8 = gr.Checkbox(label="int8 BERT copy (smaller, faster; its feature error is shown) — needs BERT",
                           value=False, interactive=False, elem_id="export-onnx-int8")
    files = gr.File(label="Exported files", file_count="multiple", interactive=False, elem_id="export-files")
    status = gr.Markdown(elem_id="export-status")
    # The ONNX export is a job: its panel follows it on the refresh timer and lists the files when it ends.
    onnx_status = gr.Markdown(elem_id="export-onnx-status")
    onnx_list = gr.File(label="ONNX export (Data/<voice>/onnx)", file_count="multiple", interactive=False,
                        elem_id="export-onnx-files")
    bert_md = gr.Markdown(elem_id="export-onnx-bert-info")
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

    def do_onnx(voice, g_path, with_bert, with_int8):
        try:
            command = onnx_command(ctx.voice_dir(voice), g_path or None, bool(with_bert), bool(with_int8))
            job = ctx.start(voice, ONNX_STAGE, command)
        except KoeError as exc:
            return error_text(exc), gr.skip(), gr.skip(), {}
        text = ctx.runner.status_text(job)
        return text, None, "", {"status": text, "files": None, "bert": ""}

    def onnx_panel(voice, shown_state):
        """(status, files, BERT info, state) of the voice's newest ONNX job; gr.skip() for what the page shows."""
        shown_state = dict(shown_state or {})
        job = ctx.latest(voice, {ONNX_STAGE})
        text = ctx.runner.status_text(job) if job else ""
        listed, summary = [], ""
        if job is not None and job.status == FINISHED:
            try:
                voice_dir = ctx.voice_dir(voice)
                listed, summary = onnx_files(voice_dir), bert_summary(voice_dir)
            except KoeError:
                pass
        return (unchanged_skip(shown_state, "status", text), unchanged_skip(shown_state, "files", listed or None),
                unchanged_skip(shown_state, "bert", summary), shown_state)

    refresh_btn.click(refresh, ctx.voice, checkpoint)
    ctx.voice.change(refresh, ctx.voice, checkpoint)
    release_btn.click(do_release, [ctx.voice, checkpoint, fp16, safetensors], [files, status])
    zip_btn.click(do_zip, [ctx.voice, checkpoint, fp16, safetensors], [files, status])
    panel = [onnx_status, onnx_list, bert_md, seen]
    # int8 quantises the BERT graphs: it can only be ticked with BERT, and unticking BERT unticks it.
    bert.change(lambda b: gr.update(interactive=True) if b else gr.update(interactive=False, value=False), bert, int8)
    onnx_btn.click(do_onnx, [ctx.voice, checkpoint, bert, int8], panel)
    ctx.voice.change(lambda v: onnx_panel(v, {}), ctx.voice, panel)
    ctx.timer.tick(onnx_panel, [ctx.voice, seen], panel, show_progress="hidden", trigger_mode="once")
