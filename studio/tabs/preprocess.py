"""Preprocess tab: the chain (resample → text → features → report) in one go or stage by stage, and the report."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from studio import stages
from studio.tabs import Context, error_text, unchanged_skip
from studio.voices import clip_durations, read_text
from vits.config import VoiceConfig
from vits.errors import KoeError
from vits.voice_folder import config_path

STAGES = {"prepare", "resample", "text", "features", "report", "fix"}


def read_report(voice_dir: Path) -> dict | None:
    try:
        data = json.loads((voice_dir / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


BIN_LABELS = [f"{i}-{i + 1} s" for i in range(12)] + ["12+ s"]


def histogram(voice_dir: Path, report: dict | None = None) -> pd.DataFrame:
    """Clip-length histogram rows {seconds, clips} in 1-second bins (the report's, else from wavs/)."""
    bins = (report or {}).get("clip_length_histogram")
    if isinstance(bins, list) and len(bins) == len(BIN_LABELS):
        counts = [int(b.get("clips", 0)) for b in bins]
    else:
        lengths = clip_durations(voice_dir)
        counts = np.histogram(np.minimum(lengths, 12.5), bins=list(range(13)) + [np.inf])[0].tolist() \
            if lengths else [0] * len(BIN_LABELS)
    return pd.DataFrame({"seconds": BIN_LABELS, "clips": counts})


def config_batch_size(voice_dir: Path) -> int | None:
    """train.batch_size in the voice's config.json now (the file owns it; the report may be older)."""
    try:
        return VoiceConfig.load(config_path(voice_dir)).train.batch_size
    except KoeError:
        return None


def fixes(report: dict | None, batch_size: int | None = None) -> dict[str, tuple[str, str]]:
    """Automatic fixes the report allows: label → (kind, argument). `batch_size`: config.json's now
    (default: the one the report saw)."""
    if not report:
        return {}
    found = {}
    if report.get("wrong_format"):
        found[f"Resample the {len(report['wrong_format'])} clips in the wrong format"] = ("chain", "resample,report")
    if not report.get("train_lines"):
        found["Build the training lists and features"] = ("chain", "text,features,report")
    suggested = report.get("suggested_batch_size")
    if suggested and suggested != (batch_size or report.get("batch_size")):
        found[f"Use the suggested batch size {suggested}"] = ("batch", str(suggested))
    return found


def report_markdown(voice_dir: Path, report: dict | None) -> str:
    """The health report as markdown (report.txt verbatim under a headline)."""
    text = read_text(voice_dir / "report.txt")
    if report is None and not text:
        lengths = clip_durations(voice_dir)
        head = f"**{len(lengths)} clips, {sum(lengths) / 60:.1f} minutes**" if lengths else "**no clips yet**"
        return head + "\n\nNo report yet: press **Run everything** or **Report**."
    head = ""
    if report:
        problems = report.get("problems") or []
        head = (f"**{report.get('clips', 0)} clips, {float(report.get('minutes', 0)):.1f} minutes**, "
                f"train.list {report.get('train_lines', 0)} lines, val.list {report.get('val_lines', 0)} lines. "
                + ("✅ no problems" if not problems else "⚠️ " + "; ".join(map(str, problems))))
    return head + ("\n\n```\n" + text.strip() + "\n```" if text else "")


def build(ctx: Context) -> None:
    gr.Markdown("Turn the reviewed clips into training data: 44.1 kHz audio, cleaned text lists, BERT features "
                "and a health report. **Run everything** is the usual button; the stage buttons redo one step.")
    with gr.Row():
        all_btn = gr.Button("Run everything", variant="primary", elem_id="prepare-all")
        buttons = {name: gr.Button(label, elem_id=f"stage-{name}") for name, label in
                   [("resample", "Resample"), ("text", "Text → filelists"), ("features", "BERT features"),
                    ("report", "Report")]}
        stop_btn = gr.Button("Stop job", variant="stop", elem_id="prepare-stop")
    with gr.Row():
        loudness = gr.Number(label="Normalise loudness to (LUFS; empty: keep as recorded)", value=None,
                             elem_id="prep-loudness")
        trim = gr.Checkbox(label="Trim leading/trailing silence of each clip", value=False, elem_id="prep-trim")
    job_md = gr.Markdown("No job yet.", elem_id="prepare-job")
    with gr.Row():
        fix_choice = gr.Dropdown([], label="Suggested fixes", visible=False, elem_id="fix-choice")
        fix_btn = gr.Button("Apply fix", visible=False, elem_id="report-fix")
    with gr.Row():
        report_md = gr.Markdown(elem_id="report")
        hist = gr.BarPlot(x="seconds", y="clips", title="Clip lengths", height=260, elem_id="length-hist",
                          sort=BIN_LABELS)
    refresh_btn = gr.Button("Refresh report", size="sm", elem_id="report-refresh")

    def run(voice, name, lufs=None, trim_silence=False):
        try:
            voice_dir = ctx.voice_dir(voice)
            command = {
                "prepare": lambda: stages.prepare(voice_dir, loudness=lufs, trim=bool(trim_silence)),
                "resample": lambda: stages.resample(voice_dir, lufs, bool(trim_silence)),
                "text": lambda: stages.text(voice_dir),
                "features": lambda: stages.features(voice_dir),
                "report": lambda: stages.report(voice_dir),
            }[name]()
            return ctx.runner.status_text(ctx.start(voice, name, command))
        except KoeError as exc:
            return error_text(exc)

    def refresh(voice):
        try:
            voice_dir = ctx.voice_dir(voice)
        except KoeError as exc:
            return error_text(exc), gr.update(visible=False), gr.update(visible=False), None
        report = read_report(voice_dir)
        available = list(fixes(report, config_batch_size(voice_dir)))
        return (report_markdown(voice_dir, report),
                gr.update(choices=available, value=available[0] if available else None, visible=bool(available)),
                gr.update(visible=bool(available)), histogram(voice_dir, report))

    def apply_fix(voice, label):
        try:
            voice_dir = ctx.voice_dir(voice)
            kind, arg = fixes(read_report(voice_dir), config_batch_size(voice_dir)).get(label, (None, None))
            if kind == "chain":
                return ctx.runner.status_text(ctx.start(voice, "fix", stages.prepare(voice_dir, arg)))
            if kind == "batch":
                path = config_path(voice_dir)
                cfg = VoiceConfig.load(path)
                cfg.train.batch_size = int(arg)
                cfg.save(path)
                return ctx.runner.status_text(ctx.start(voice, "report", stages.report(voice_dir)))
            return "That fix no longer applies: refresh the report."
        except KoeError as exc:
            return error_text(exc)

    def status(voice, seen):
        seen = dict(seen or {})
        job = ctx.latest(voice, STAGES)
        text = unchanged_skip(seen, "job", ctx.runner.status_text(job) if voice else "No voice selected.")
        # When a job has just ended, the report changed: re-render it once.
        done_id = job.id if job and job.done else None
        if done_id and done_id != seen.get("done"):
            seen["done"] = done_id
            return (text, seen, *refresh(voice))
        return text, seen, gr.skip(), gr.skip(), gr.skip(), gr.skip()

    def stop(voice):
        job = ctx.latest(voice, STAGES)
        if job and not job.done:
            ctx.runner.cancel(job.id)
        return "⏹ stopping…"

    last_done = gr.State({})
    report_outputs = [report_md, fix_choice, fix_btn, hist]
    all_btn.click(lambda v, lufs, t: run(v, "prepare", lufs, t), [ctx.voice, loudness, trim], job_md)
    for name, button in buttons.items():
        button.click(lambda v, lufs, t, n=name: run(v, n, lufs, t), [ctx.voice, loudness, trim], job_md)
    fix_btn.click(apply_fix, [ctx.voice, fix_choice], job_md)
    stop_btn.click(stop, ctx.voice, job_md)
    refresh_btn.click(refresh, ctx.voice, report_outputs)
    ctx.voice.change(refresh, ctx.voice, report_outputs)
    ctx.timer.tick(status, [ctx.voice, last_done], [job_md, last_done, *report_outputs], show_progress="hidden",
                   trigger_mode="once")
