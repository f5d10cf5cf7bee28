"""Train tab: the voice's config.json settings (studio/train_state.py), where and how the next run starts,
Start/Stop/Resume, and the live view of a running training."""

from __future__ import annotations

import html
import re
from pathlib import Path

import gradio as gr
import pandas as pd

from prep.voice_version import voice_version
from studio import stages
from studio.jobs import RUNNING, format_progress_text
from studio.scalars import ScalarReader
from studio.tabs import Context, error_text, unchanged_skip
from studio.train_state import (
    FIELDS,
    FREEZE,
    LABELS,
    MODEL_SIZES,
    changed_fields,
    check_changes,
    device_line,
    fields_of,
    load_fields,
    normalize,
    plan_line,
    resume_gpus,
    stamp,
    start_plan,
    write_changes,
)
from studio.voices import newest_eval_audio
from vits.config import VoiceConfig
from vits.errors import KoeError
from vits.scores import best_generator
from vits.train.plan import RESUME, base_generator
from vits.voice_folder import CONFIG, LOGS, config_path

STAGES = {"train", "download", "score"}
BASE_AUTO = "automatic: the base model if downloaded, else from scratch"
BASE_COMMUNITY = "Bert-VITS2 2.3 base model (config.yml folder)"
BASE_FOLDER = "a folder on the server…"
BASE_SCRATCH = "from scratch (no base model)"
MIRRORS = {"official (huggingface.co)": "", "hf-mirror.com (China)": "https://hf-mirror.com"}


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


def widget_value(name: str, value):
    """A config value as its widget shows it (the model size by its label)."""
    return MODEL_SIZES.get(value, value) if name == "model_size" else value


def same_value(name: str, shown, loaded) -> bool:
    """Whether a widget still shows the loaded value (an empty or unreadable field counts as edited)."""
    try:
        return normalize(name, shown) == normalize(name, loaded)
    except KoeError:
        return False


def shown_text(name: str, value) -> str:
    if name == "model_size":
        return MODEL_SIZES.get(value, value).split(":")[0]
    if name == "freeze":
        return ", ".join(value) or "nothing"
    return "on" if value is True else "off" if value is False else str(value)


START_LINE = re.compile(r"loaded \d+ of \d+|^no base model|^resumed from", re.IGNORECASE)


def log_notes(log_path: str, cache: dict) -> list[str]:
    """The trainer's starting-point line ("resumed from …", "base model: loaded N of M …", "no base model …")
    and its out-of-memory retries, read incrementally (`cache` keeps the offset between calls)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(cache.get("offset", 0))
            chunk = f.read()
    except OSError:
        return []
    complete = chunk[: chunk.rfind(b"\n") + 1]
    cache["offset"] = cache.get("offset", 0) + len(complete)
    for line in complete.decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if START_LINE.search(line):
            cache["start"] = f"Starting point: `{line}`"  # a retry after out of memory starts again: the newest
        elif line.startswith("warning:") and "out of memory" in line:
            cache.setdefault("oom", []).append(f"⚠️ {line[len('warning:'):].strip()}")
    return ([cache["start"]] if "start" in cache else []) + cache.get("oom", [])[-3:]


SCORE_CURVES = {"score": "score/score", "CER": "score/cer", "speaker similarity": "score/speaker_similarity"}


def score_curve_rows(reader: ScalarReader) -> list[dict]:
    """Rows {"step", "value", "curve"} of the checkpoint score curves (TensorBoard score/*), for a line plot."""
    rows = []
    for label, tag in SCORE_CURVES.items():
        steps, values = reader.series(tag)
        rows.extend({"step": s, "value": v, "curve": label} for s, v in zip(steps, values))
    return rows


def best_line(voice_dir: Path) -> str:
    """"Best so far: step N (score …)" from logs/scores.json (a best step whose G file is gone is passed over)."""
    best = best_generator(voice_dir)
    if best is None:
        return "No checkpoint scored yet (Score checkpoints now, or train.score_at_eval in config.json)."
    path, step, row = best
    cer = "n/a" if row.get("cer") is None else f"{row['cer']:.3f}"
    return (f"Best so far: step **{step}** (score {row['score']:.3f}; CER {cer}, speaker similarity "
            f"{row['speaker_similarity']:.3f}) — `{path.name}`")


def build(ctx: Context) -> None:
    # Shown until the voice's config.json is loaded (TrainConfig is the one place training defaults live).
    defaults = fields_of(VoiceConfig())
    source = gr.Markdown("Pick a voice: its `configs/config.json` fills these settings.", elem_id="train-source")
    with gr.Row():
        with gr.Column():
            batch = gr.Slider(1, 64, value=defaults["batch_size"], step=1, label="Batch size", elem_id="batch-size")
            epochs = gr.Number(label="Epochs", value=defaults["epochs"], precision=0, elem_id="epochs")
            max_steps = gr.Number(label="Stop after steps (0 = epochs decide)", value=0, precision=0,
                                  elem_id="max-steps")
            eval_interval = gr.Number(label="Eval + save every N steps", value=defaults["eval_interval"],
                                      precision=0, elem_id="eval-interval")
            log_interval = gr.Number(label="Log every N steps", value=defaults["log_interval"], precision=0,
                                     elem_id="log-interval")
        with gr.Column():
            lr = gr.Number(label="Learning rate", value=defaults["learning_rate"], elem_id="learning-rate")
            bf16 = gr.Checkbox(label="bf16 (Ampere or newer GPUs)", value=defaults["bf16_run"], elem_id="bf16")
            freeze = gr.CheckboxGroup(list(FREEZE), label="Freeze", elem_id="freeze")
            wavlm = gr.Checkbox(label="WavLM discriminator (needs the WavLM model; off saves GPU memory)",
                                value=defaults["use_wavlm"], elem_id="use-wavlm")
            model_size = gr.Dropdown(list(MODEL_SIZES.values()), value=MODEL_SIZES[defaults["model_size"]],
                                     label="Model size", elem_id="model-size")
            gpus = gr.Slider(1, 8, value=1, step=1, label="GPUs (torchrun when > 1)", elem_id="gpus")
        with gr.Column():
            base = gr.Dropdown([BASE_AUTO, BASE_COMMUNITY, BASE_FOLDER, BASE_SCRATCH], value=BASE_AUTO,
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
    device_md = gr.Markdown(elem_id="train-device")
    plan_md = gr.Markdown(elem_id="train-plan")
    with gr.Row():
        start_btn = gr.Button("Start", variant="primary", elem_id="train-start")
        resume_btn = gr.Button("Resume", elem_id="train-resume")
        stop_btn = gr.Button("Stop (saves a checkpoint)", variant="stop", elem_id="train-stop")
    started = gr.Markdown(elem_id="train-started")
    progress = gr.HTML(progress_html(None, None), elem_id="train-progress")
    status = gr.Markdown("No training yet.", elem_id="train-status")
    with gr.Row():
        with gr.Column():
            losses = gr.LinePlot(x="step", y="value", color="curve", title="Losses", height=300,
                                 elem_id="loss-plot")
            loss_latest = gr.Markdown(elem_id="loss-latest")
            scores_plot = gr.LinePlot(x="step", y="value", color="curve", title="Checkpoint scores", height=240,
                                      elem_id="score-plot")
            with gr.Row():
                best_md = gr.Markdown("No checkpoint scored yet.", elem_id="train-best")
                score_btn = gr.Button("Score checkpoints now", size="sm", elem_id="train-score")
        with gr.Column():
            eval_audio = gr.Audio(label="Newest eval sample", type="filepath", interactive=False,
                                  elem_id="eval-audio")
            eval_label = gr.Markdown(elem_id="eval-label")
    log = gr.Textbox(label="Log (last lines)", lines=12, max_lines=12, interactive=False, autoscroll=True,
                     elem_id="train-log")
    seen = gr.State({})
    loaded = gr.State({})  # {"voice", "stamp", "values"}: what the fields showed when loaded from config.json
    fields = [batch, epochs, max_steps, eval_interval, log_interval, lr, bf16, freeze, wavlm, model_size]

    def base_arg(choice, folder, voice_dir):
        """The --base argument of the choice (None: automatic or from scratch). Raises KoeError."""
        if choice in (BASE_AUTO, BASE_SCRATCH):
            return None
        if choice == BASE_FOLDER:
            path = Path((folder or "").strip()).expanduser()
            if not path.is_dir():
                raise KoeError(f"base model folder {str(path)!r} does not exist",
                               fix="type the folder holding G_0.pth/D_0.pth, or pick another option")
            return str(path)
        folder = ctx.settings.base_model_folder_for(voice_version(voice_dir))  # 2.2-CLAP voices: base_model_22
        if base_generator(folder) is None:  # the trainer's rule: G_0.pth, or a release G file
            raise KoeError(f"the base model is not in {folder}",
                           fix="press 'Download base model', put G_0.pth/D_0.pth/DUR_0.pth/WD_0.pth there, "
                               "or choose 'automatic'")
        return str(folder)

    def plan_of(voice_dir, choice, folder):
        own = start_plan(voice_dir, ctx.settings, None, no_base=True)
        if own.kind == RESUME:  # the base choice does not matter (and need not be valid) for a resume
            return own
        chosen = base_arg(choice, folder, voice_dir)
        return start_plan(voice_dir, ctx.settings, Path(chosen) if chosen else None, choice == BASE_SCRATCH)

    def last_s_per_step(voice):
        reader = ctx.caches.setdefault(("scalars", voice), ScalarReader(ctx.voice_dir(voice) / LOGS / "tensorboard"))
        reader.refresh()
        values = reader.series("perf/steps_per_second")[1]
        return 1.0 / values[-1] if values and values[-1] > 0 else None

    def running_job(voice):
        job = ctx.latest(voice, {"train"})
        return job if job and job.status == RUNNING else None

    def view_stamp(voice, voice_dir):
        """What the tab's view depends on: config.json, the checkpoints, and whether a training runs."""
        job = running_job(voice)
        return [*stamp(voice_dir), job.id if job else None]

    def describe(voice, choice, folder, b, use_bf16, n, size, steps):
        """The device line and the plan line for what the page shows now."""
        if not voice:
            return "", ""
        try:
            voice_dir = ctx.voice_dir(voice)
            size = normalize("model_size", size)
            device = device_line(ctx.settings.resolved_device(), n, b, use_bf16, size, last_s_per_step(voice))
        except KoeError as exc:
            return error_text(exc), ""
        if running_job(voice):
            return device, ("**Training now.** Stop it to change settings; Resume then continues from the "
                            "checkpoint it saves.")
        try:
            limit = normalize("max_steps", steps)
        except KoeError:
            limit = 0  # an empty field: Start will say so
        try:
            plan = plan_line(plan_of(voice_dir, choice, folder), size, limit)
        except KoeError as exc:
            plan = error_text(exc)
        return device, plan

    def load(voice, state, choice, folder, n, *shown):
        """Fill the fields from config.json when the voice is (re)opened, and the fields the file changed when it
        changes (another tab, a job); a field the user edited since the last load keeps the edit."""
        keep = [gr.skip()] * (len(fields) + 5)
        if not voice:
            return *keep, {}
        try:
            voice_dir = ctx.voice_dir(voice)
            now = view_stamp(voice, voice_dir)
            if state and state.get("voice") == voice and state.get("stamp") == now:
                return *keep, state
            values = load_fields(voice_dir)
        except KoeError as exc:
            return *keep[:-4], error_text(exc), gr.skip(), gr.skip(), gr.skip(), {}
        same_voice = bool(state) and state.get("voice") == voice and state.get("values") is not None
        updates, now_shown = [], {}
        for name, value in zip(FIELDS, shown):
            new = (values or defaults)[name]
            if same_voice:
                old = state["values"][name]
                # Only what the file changed, and only where the page still shows the old value: a request
                # in flight while the user types must not undo the typing.
                if same_value(name, new, old) or not same_value(name, value, old):
                    updates.append(gr.skip())
                    now_shown[name] = value
                    continue
            updates.append(widget_value(name, new))
            now_shown[name] = new
        where = config_path(voice_dir)
        note = (f"Settings from `{where}` (Start/Resume writes back only what you change)." if values else
                f"No `{where.name}` yet: run the Preprocess tab first (the fields show the defaults).")
        try:
            plan = plan_of(voice_dir, choice, folder)
            world = resume_gpus(plan)
        except KoeError:
            world = None
        device, plan_text = describe(voice, choice, folder, now_shown["batch_size"], now_shown["bf16_run"],
                                     world if world and not same_voice else n, now_shown["model_size"],
                                     now_shown["max_steps"])
        # The GPU count a resume continues with, when the voice is (re)opened; later the user's choice stays.
        return (*updates, gr.update(value=world) if world and not same_voice else gr.skip(), note, device, plan_text,
                gr.skip() if same_voice else "", {"voice": voice, "stamp": now, "values": values})

    def start(voice, resume, state, choice, folder, n, *shown):
        try:
            voice_dir = ctx.voice_dir(voice)
            if running_job(voice):
                raise KoeError("this voice is training now", fix="wait for it, or press Stop and then Resume")
            if not config_path(voice_dir).is_file():
                raise KoeError(f"the voice has no {CONFIG}", where=str(voice_dir), fix="run the Preprocess tab first")
            if not state or state.get("voice") != voice or not state.get("values"):
                raise KoeError("the page has not loaded this voice's config.json yet",
                               fix="wait a moment (the fields fill in), then press again")
            changes = changed_fields(state["values"], dict(zip(FIELDS, shown)))
            check_changes(voice_dir, changes)
            plan = plan_of(voice_dir, choice, folder)
            if resume and plan.kind != RESUME:
                raise KoeError("nothing to resume: the voice has no checkpoint yet",
                               fix=f"press Start (it will {plan.describe()})")
            write_changes(voice_dir, changes)
            fresh = plan.kind != RESUME  # a resume continues the voice's own checkpoints: no base model
            command = stages.train(voice_dir, int(n), base_arg(choice, folder, voice_dir) if fresh else None,
                                   no_base=fresh and choice == BASE_SCRATCH)
            job = ctx.start(voice, "train", command)
            wrote = ("wrote " + ", ".join(f"{LABELS[k]} = {shown_text(k, v)}" for k, v in changes.items())
                     + f" to `{CONFIG}`") if changes else f"`{CONFIG}` unchanged"
            # No stamp: the next refresh redraws the plan line ("Training now").
            state = {"voice": voice, "stamp": None, "values": load_fields(voice_dir)}
            return ctx.runner.status_text(job), f"▶ {plan.describe()}; {wrote}.", state
        except KoeError as exc:
            return error_text(exc), error_text(exc), gr.skip()

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

    def download_base(voice, mirror_label):
        """The base model of the selected voice's version: `pipeline.download base22` for 2.2-CLAP, else `base`."""
        folder = ctx.settings.voice_dir(voice) if voice else None
        two_two = folder is not None and folder.is_dir() and voice_version(folder) == "2.2"
        return download("base22" if two_two else "base", mirror_label)

    def score_now(voice):
        """`pipeline.score` on the voice's checkpoints not scored yet, as a job."""
        if not voice:
            return "Pick a voice first."
        try:
            command = stages.score(ctx.voice_dir(voice))
            job = ctx.runner.start(voice, "score", command.argv, expected=command.expected, gpu=command.gpu,
                                   env=ctx.env())
            return ctx.runner.status_text(job)
        except KoeError as exc:
            return error_text(exc)

    def tick(voice, seen_state):
        """Live view: progress bar, status, log tail, loss curves, newest eval audio (only what changed)."""
        seen_state = dict(seen_state or {})
        if not voice:
            return (progress_html(None, None), "No voice selected.", "", gr.skip(), gr.skip(), gr.skip(),
                    gr.skip(), gr.skip(), gr.skip(), seen_state)
        job = ctx.latest(voice, {"train"})
        download_job = ctx.runner.latest(None, "download")
        try:
            voice_dir = ctx.voice_dir(voice)
        except KoeError as exc:
            return (progress_html(None, None), error_text(exc), "", gr.skip(), gr.skip(), gr.skip(), gr.skip(),
                    gr.skip(), gr.skip(), seen_state)
        text = ctx.runner.status_text(job) if job else "No training yet."
        if job:
            for note in log_notes(job.log_path, ctx.caches.setdefault(("train-log", job.id), {})):
                text += f"  \n{note}"
        score_job = ctx.latest(voice, {"score"})
        if score_job:
            text += "\n\nScoring: " + ctx.runner.status_text(score_job)
        if download_job and (download_job.status == RUNNING or seen_state.get("dl") != download_job.id):
            text += "\n\nDownload: " + ctx.runner.status_text(download_job)
        prog = ctx.runner.progress(job) if job else None
        bar = progress_html(prog if job and job.status == RUNNING else None, job.status if job else None)
        if job and job.status != RUNNING and prog:
            bar = progress_html(None, job.status) + f'<div>{html.escape(format_progress_text(prog))}</div>'
        tail = "\n".join(ctx.runner.tail(job, 30)) if job else ""

        reader = ctx.caches.setdefault(("scalars", voice), ScalarReader(voice_dir / LOGS / "tensorboard"))
        plot, latest, score_plot = gr.skip(), gr.skip(), gr.skip()
        if reader.refresh() or seen_state.get("voice") != voice:
            score_rows = score_curve_rows(reader)
            score_plot = pd.DataFrame(score_rows) if score_rows else None
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
        bar, text, tail, best = (unchanged_skip(seen_state, k, v) for k, v in (
            ("bar", bar), ("text", text), ("tail", tail), ("best", best_line(voice_dir))))
        return bar, text, tail, plot, latest, audio, label, score_plot, best, seen_state

    base.change(lambda c: gr.update(visible=c == BASE_FOLDER), base, base_folder)
    view = [ctx.voice, base, base_folder, batch, bf16, gpus, model_size, max_steps]
    for component in (batch, bf16, gpus, model_size, base, base_folder, max_steps):
        component.change(describe, view, [device_md, plan_md], show_progress="hidden")
    # The fields follow config.json: on a voice change, and on the timer whenever the file or the checkpoints
    # changed (another tab's fix, a finished job, a reload or restart of the studio).
    watch = [ctx.voice, loaded, base, base_folder, gpus, *fields]
    watched = [*fields, gpus, source, device_md, plan_md, started, loaded]
    ctx.voice.change(load, watch, watched)
    ctx.timer.tick(load, watch, watched, show_progress="hidden", trigger_mode="once")
    inputs = [ctx.voice, loaded, base, base_folder, gpus, *fields]
    start_btn.click(lambda v, *a: start(v, False, *a), inputs, [status, started, loaded])
    resume_btn.click(lambda v, *a: start(v, True, *a), inputs, [status, started, loaded])
    stop_btn.click(stop, ctx.voice, status)
    dl_base.click(download_base, [ctx.voice, mirror], status)
    dl_models.click(lambda m: download("models", m), mirror, status)
    score_btn.click(score_now, ctx.voice, status)
    outputs = [progress, status, log, losses, loss_latest, eval_audio, eval_label, scores_plot, best_md, seen]
    ctx.timer.tick(tick, [ctx.voice, seen], outputs, show_progress="hidden", trigger_mode="once")
    ctx.voice.change(tick, [ctx.voice, seen], outputs)
