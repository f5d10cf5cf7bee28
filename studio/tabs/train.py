"""Train tab: hyperparameters, base model, Start/Stop/Resume, and the live view of a running training."""

from __future__ import annotations

import html
import re
from pathlib import Path

import gradio as gr
import pandas as pd

from studio import stages
from studio.jobs import RUNNING, format_progress_text
from studio.scalars import ScalarReader
from studio.tabs import Context, error_text, unchanged_skip
from studio.voices import newest_eval_audio
from vits.config import TrainConfig, VoiceConfig
from vits.errors import KoeError
from vits.voice_folder import CONFIG, LOGS, config_path, generator_files

STAGES = {"train", "download"}
BASE_AUTO = "automatic: the base model if downloaded, else from scratch"
BASE_COMMUNITY = "Bert-VITS2 2.3 base model (config.yml folder)"
BASE_FOLDER = "a folder on the server…"
MIRRORS = {"official (huggingface.co)": "", "hf-mirror.com (China)": "https://hf-mirror.com"}


def memory_hint(batch_size: int, bf16: bool, gpus: int) -> str:
    """A rough GPU-memory estimate for Bert-VITS2 2.3 at the default segment size, with the GPU's size."""
    per_item = 1.1 if bf16 else 1.6  # GB per batch item, measured order of magnitude; WavLM disc included
    need = 3.0 + per_item * max(int(batch_size or 1), 1)
    have = ""
    try:
        import torch

        if torch.cuda.is_available():
            total = torch.cuda.get_device_properties(0).total_memory / 2**30
            have = f"; this GPU has {total:.0f} GB" + (" — lower the batch size" if need > total * 0.95 else "")
    except Exception:  # noqa: BLE001 - the hint is advisory only
        pass
    per = " per GPU" if gpus and gpus > 1 else ""
    return f"≈ {need:.0f} GB of GPU memory{per} (rough estimate){have}. Out of memory? halve the batch size."


def progress_html(progress: dict | None, status: str | None) -> str:
    """The progress bar: percent of steps done, with step, epoch, it/s and ETA written beside it."""
    if not progress:
        label = {"finished": "finished", "failed": "failed", "cancelled": "stopped"}.get(status or "", "not running")
        return f'<div id="train-progress-text">{html.escape(label)}</div>'
    step, total = progress.get("step") or 0, progress.get("total")
    percent = 100.0 * step / total if total else 0.0
    return (
        '<div style="border:1px solid #999;border-radius:4px;height:18px;width:100%">'
        f'<div id="train-progress-bar" style="background:#4a8;height:100%;width:{min(percent, 100):.1f}%"></div>'
        f'</div><div id="train-progress-text">{html.escape(format_progress_text(progress))}</div>'
    )


def loaded_line(log_path: str) -> str | None:
    """The trainer's base-model line ("loaded N of M tensors ..." or "no base model ..."), if printed."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f):
                if re.search(r"loaded \d+ of \d+|^no base model|^resumed from", line, re.IGNORECASE):
                    return line.strip()
                if number > 2000:
                    break
    except OSError:
        pass
    return None


def build(ctx: Context) -> None:
    defaults = TrainConfig()  # the one place training defaults live (a voice's config.json overrides them)
    with gr.Row():
        with gr.Column():
            batch = gr.Slider(1, 64, value=defaults.batch_size, step=1, label="Batch size", elem_id="batch-size")
            hint = gr.Markdown(memory_hint(defaults.batch_size, defaults.bf16_run, 1), elem_id="memory-hint")
            epochs = gr.Number(label="Epochs", value=defaults.epochs, precision=0, elem_id="epochs")
            max_steps = gr.Number(label="Stop after steps (0 = epochs decide)", value=0, precision=0,
                                  elem_id="max-steps")
            eval_interval = gr.Number(label="Eval + save every N steps", value=defaults.eval_interval, precision=0,
                                      elem_id="eval-interval")
            log_interval = gr.Number(label="Log every N steps", value=defaults.log_interval, precision=0,
                                     elem_id="log-interval")
        with gr.Column():
            lr = gr.Number(label="Learning rate", value=defaults.learning_rate, elem_id="learning-rate")
            bf16 = gr.Checkbox(label="bf16 (Ampere or newer GPUs)", value=defaults.bf16_run, elem_id="bf16")
            freeze = gr.CheckboxGroup(["ZH BERT projection", "JP BERT projection", "EN BERT projection",
                                       "decoder"], label="Freeze", elem_id="freeze")
            gpus = gr.Slider(1, 8, value=1, step=1, label="GPUs (torchrun when > 1)", elem_id="gpus")
            wavlm = gr.Checkbox(label="WavLM discriminator (needs the WavLM model; off saves GPU memory)",
                                value=True, elem_id="use-wavlm")
        with gr.Column():
            base = gr.Dropdown([BASE_AUTO, BASE_COMMUNITY, BASE_FOLDER], value=BASE_AUTO,
                               label="Start from", elem_id="base-model")
            base_folder = gr.Textbox(label="Base model folder (G_0.pth, D_0.pth, …)", visible=False,
                                     elem_id="base-folder")
            mirror = gr.Dropdown(list(MIRRORS), value=next(k for k, v in MIRRORS.items()
                                                           if v == ctx.settings.hub_endpoint)
                                 if ctx.settings.hub_endpoint in MIRRORS.values() else list(MIRRORS)[0],
                                 label="Download from", elem_id="mirror")
            with gr.Row():
                dl_base = gr.Button("Download base model", size="sm", elem_id="download-base")
                dl_models = gr.Button("Download BERT + WavLM", size="sm", elem_id="download-models")
    with gr.Row():
        start_btn = gr.Button("Start", variant="primary", elem_id="train-start")
        resume_btn = gr.Button("Resume", elem_id="train-resume")
        stop_btn = gr.Button("Stop (saves a checkpoint)", variant="stop", elem_id="train-stop")
    progress = gr.HTML(progress_html(None, None), elem_id="train-progress")
    status = gr.Markdown("No training yet.", elem_id="train-status")
    with gr.Row():
        with gr.Column():
            losses = gr.LinePlot(x="step", y="value", color="curve", title="Losses", height=300,
                                 elem_id="loss-plot")
            loss_latest = gr.Markdown(elem_id="loss-latest")
        with gr.Column():
            eval_audio = gr.Audio(label="Newest eval sample", type="filepath", interactive=False,
                                  elem_id="eval-audio")
            eval_label = gr.Markdown(elem_id="eval-label")
    log = gr.Textbox(label="Log (last lines)", lines=12, max_lines=12, interactive=False, autoscroll=True,
                     elem_id="train-log")
    seen = gr.State({})

    def update_hint(b, use_bf16, n):
        return memory_hint(b, use_bf16, n)

    def base_arg(choice, folder):
        if choice == BASE_AUTO:
            return None
        if choice == BASE_FOLDER:
            path = Path((folder or "").strip()).expanduser()
            if not path.is_dir():
                raise KoeError(f"base model folder {str(path)!r} does not exist",
                               fix="type the folder holding G_0.pth/D_0.pth, or pick another option")
            return str(path)
        folder = ctx.settings.base_model_folder
        if not (folder / "G_0.pth").is_file():
            raise KoeError(f"the base model is not in {folder}",
                           fix="press 'Download base model', put G_0.pth/D_0.pth/DUR_0.pth/WD_0.pth there, "
                               "or choose 'automatic'")
        return str(folder)

    def write_config(voice_dir, b, ep, steps, ev, lg, rate, use_bf16, frozen):
        path = config_path(voice_dir)
        if not path.is_file():
            raise KoeError(f"the voice has no {CONFIG}", where=str(voice_dir),
                           fix="run the Preprocess tab first")
        cfg = VoiceConfig.load(path)
        t = cfg.train
        t.batch_size, t.epochs = int(b), int(ep or 1)
        t.eval_interval, t.log_interval = max(int(ev or 1), 1), max(int(lg or 1), 1)
        t.learning_rate, t.bf16_run = float(rate), bool(use_bf16)
        t.max_steps = int(steps) if steps and int(steps) > 0 else None
        frozen = set(frozen or [])
        t.freeze_ZH_bert = "ZH BERT projection" in frozen
        t.freeze_JP_bert = "JP BERT projection" in frozen
        t.freeze_EN_bert = "EN BERT projection" in frozen
        t.freeze_decoder = "decoder" in frozen
        cfg.save(path)

    def start(voice, resume, b, ep, steps, ev, lg, rate, use_bf16, frozen, n, use_wavlm, choice, folder):
        try:
            voice_dir = ctx.voice_dir(voice)
            write_config(voice_dir, b, ep, steps, ev, lg, rate, use_bf16, frozen)
            if resume and not generator_files(voice_dir):
                raise KoeError("nothing to resume: the voice has no checkpoint yet", fix="press Start")
            # Resuming continues from the voice's own checkpoints; the base model only seeds a fresh run.
            base_model = None if resume or generator_files(voice_dir) else base_arg(choice, folder)
            command = stages.train(voice_dir, int(n), base_model, no_wavlm=not use_wavlm)
            job = ctx.start(voice, "train", command)
            return ctx.runner.status_text(job)
        except KoeError as exc:
            return error_text(exc)

    def stop(voice):
        job = ctx.latest(voice, {"train"})
        if job and job.status == RUNNING:
            ctx.runner.cancel(job.id, grace_s=120)
            return "⏹ stopping: the trainer saves a checkpoint, then exits…"
        return "No training is running."

    def download(what, mirror_label):
        try:
            command = stages.download(what, MIRRORS.get(mirror_label) or None)
            job = ctx.runner.start(None, "download", command.argv, expected=command.expected, env=ctx.env())
            return ctx.runner.status_text(job)
        except KoeError as exc:
            return error_text(exc)

    def tick(voice, seen_state):
        """Live view: progress bar, status, log tail, loss curves, newest eval audio (only what changed)."""
        seen_state = dict(seen_state or {})
        if not voice:
            return (progress_html(None, None), "No voice selected.", "", gr.skip(), gr.skip(), gr.skip(),
                    gr.skip(), seen_state)
        job = ctx.latest(voice, {"train"})
        download_job = ctx.runner.latest(None, "download")
        try:
            voice_dir = ctx.voice_dir(voice)
        except KoeError as exc:
            return (progress_html(None, None), error_text(exc), "", gr.skip(), gr.skip(), gr.skip(), gr.skip(),
                    seen_state)
        text = ctx.runner.status_text(job) if job else "No training yet."
        if job:
            loaded = loaded_line(job.log_path)
            if loaded:
                text += f"  \nStarting point: `{loaded}`"
        if download_job and (download_job.status == RUNNING or seen_state.get("dl") != download_job.id):
            text += "\n\nDownload: " + ctx.runner.status_text(download_job)
        prog = ctx.runner.progress(job) if job else None
        bar = progress_html(prog if job and job.status == RUNNING else None, job.status if job else None)
        if job and job.status != RUNNING and prog:
            bar = progress_html(None, job.status) + f'<div>{html.escape(format_progress_text(prog))}</div>'
        tail = "\n".join(ctx.runner.tail(job, 30)) if job else ""

        reader = ctx.caches.setdefault(("scalars", voice), ScalarReader(voice_dir / LOGS / "tensorboard"))
        plot, latest = gr.skip(), gr.skip()
        if reader.refresh() or seen_state.get("voice") != voice:
            rows = reader.loss_rows()
            # An empty frame would fix the colour scale as numeric for good: send nothing instead.
            plot = pd.DataFrame(rows) if rows else None
            newest = {}
            for row in rows:
                if row["step"] >= newest.get(row["curve"], {"step": -1})["step"]:
                    newest[row["curve"]] = row
            latest = ("Latest losses: " + " · ".join(f"{c} {r['value']:.3g} (step {r['step']})"
                                                      for c, r in newest.items())) if newest else ""
        audio, label = gr.skip(), gr.skip()
        newest = newest_eval_audio(voice_dir)
        key = f"{newest[0]}:{newest[0].stat().st_mtime_ns}" if newest else None
        if key != seen_state.get("eval") or seen_state.get("voice") != voice:
            audio = str(newest[0]) if newest else None
            label = f"Eval sample from step **{newest[1]}**: `{newest[0].name}`" if newest else "No eval sample yet."
            seen_state["eval"] = key
        seen_state["voice"] = voice
        bar, text, tail = (unchanged_skip(seen_state, k, v) for k, v in (("bar", bar), ("text", text), ("tail", tail)))
        return bar, text, tail, plot, latest, audio, label, seen_state

    for component in (batch, bf16, gpus):
        component.change(update_hint, [batch, bf16, gpus], hint)
    base.change(lambda c: gr.update(visible=c == BASE_FOLDER), base, base_folder)
    inputs = [batch, epochs, max_steps, eval_interval, log_interval, lr, bf16, freeze, gpus, wavlm, base,
              base_folder]
    start_btn.click(lambda v, *a: start(v, False, *a), [ctx.voice, *inputs], status)
    resume_btn.click(lambda v, *a: start(v, True, *a), [ctx.voice, *inputs], status)
    stop_btn.click(stop, ctx.voice, status)
    dl_base.click(lambda m: download("base", m), mirror, status)
    dl_models.click(lambda m: download("models", m), mirror, status)
    outputs = [progress, status, log, losses, loss_latest, eval_audio, eval_label, seen]
    ctx.timer.tick(tick, [ctx.voice, seen], outputs, show_progress="hidden", trigger_mode="once")
    ctx.voice.change(tick, [ctx.voice, seen], outputs)
