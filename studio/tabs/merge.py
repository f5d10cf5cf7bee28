"""Merge tab: blend voices A, B (and C) per component, listen to the result before saving, save it as a voice.

"Listen" merges in the studio's process (the weights stay in memory; nothing is written) and speaks the test
sentence through the same BERT models and torch lock as the Synthesize tab. "Save as voice" runs
`python -m pipeline.merge` as a job, like the other stages; the new voice then shows up in the voice menu.
The method, weights and speaker rule are `vits.merge`'s (its docstring states the rules).
"""

from __future__ import annotations

import re

import gradio as gr
import numpy as np

from studio import stages
from studio.jobs import FINISHED, RUNNING
from studio.tabs import Context, error_text
from studio.voices import list_voices, speakers
from vits.errors import KoeError
from vits.merge import GROUP_LABELS, GROUPS, METHODS, SPEAKER_RULES, Recipe
from vits.voice_folder import generator_files

STAGE = "merge"
ROLES = ("a", "b", "c")
METHOD_LABELS = {"weighted": "weighted: (1−w)·A + w·B", "add_difference": "add difference: A + w·(B − C)",
                 "weighted_sum": "weighted sum: a·A + b·B + c·C"}
SPEAKER_LABELS = {"match": "blend speakers of the same name (else B's/C's first speaker)",
                  "a": "keep A's speaker embeddings", "id": "blend row by row (same speaker table size)"}
DEFAULT_TEXT = "你好，这是合并后的声音。"
VOICE_NAME = r"[\w][\w.-]{0,63}"  # as "Create voice" accepts (studio.voices.create_voice)


def checkpoints(ctx: Context, voice: str | None) -> list[tuple[str, str]]:
    """(label, G path) of a voice's generator files, newest first ([] for none)."""
    try:
        return [(f"{p.name} — step {s}", str(p)) for s, p in generator_files(ctx.voice_dir(voice))]
    except KoeError:
        return []


def recipe_of(method, weight, groups, triple, slerp, rule) -> Recipe:
    """The Recipe the controls describe (the group sliders for the two-voice methods, a,b,c for weighted_sum)."""
    if method == "weighted_sum":
        return Recipe(method, tuple(float(v or 0) for v in triple), {}, slerp=False, speakers=rule)
    return Recipe(method, float(weight), {g: float(v) for g, v in zip(GROUPS, groups)}, slerp=bool(slerp),
                  speakers=rule)


def chosen_sources(ctx: Context, method: str, picks: list) -> list[tuple[str, str, str | None]]:
    """(role, voice folder, G file) for A, B and, when the method takes it, C. Raises KoeError for a gap."""
    need = ROLES if method in ("add_difference", "weighted_sum") else ROLES[:2]
    out = []
    for role, (voice, g_path) in zip(ROLES, zip(picks[::2], picks[1::2])):
        if role not in need:
            continue
        if not voice:
            raise KoeError(f"no voice {role.upper()} selected", fix=f"pick voice {role.upper()} ({method} merges "
                                                                   f"{len(need)} voices)")
        out.append((role, str(ctx.voice_dir(voice)), g_path or None))
    return out


def merged_voice(ctx: Context, method: str, picks: list, recipe: Recipe):
    """A `vits.synthesis.Voice` built from the merged weights in memory, and the sources. Raises KoeError."""
    from vits import merge
    from vits.checkpoints import load_weights
    from vits.models import build_generator
    from vits.synthesis import Voice

    sources = [merge.load_source(role, folder, g) for role, folder, g in chosen_sources(ctx, method, picks)]
    state = merge.merge(sources, recipe)
    a = sources[0]
    model = build_generator(a.config, version=a.version)
    load_weights(model, {"model": state}, kind="G", where="the merged weights")
    del model.enc_q  # not used for synthesis
    return Voice(model, a.config, ctx.settings.resolved_device(), checkpoint=a.g_path), sources


def listen(ctx: Context, method, picks, recipe: Recipe, text: str, language: str, speaker: str | None = None):
    """(sampling rate, audio) of `text` spoken by the merged weights as `speaker` (one of A's; None: the first),
    and a status line. Raises KoeError."""
    from server.registry import TORCH_LOCK
    from studio.tabs.synthesize import registry
    from vits import merge
    from vits.text import UserDict
    from vits.voice_folder import userdict_for

    if not (text or "").strip():
        raise KoeError("no test sentence", fix="type a sentence to listen to")
    bert = registry(ctx).bert()
    if bert is None:
        raise KoeError("no BERT models to read the test sentence with", where="config.yml bert:",
                       fix="python -m pipeline.download bert (or set the folders in config.yml)")
    with TORCH_LOCK:  # the Synthesize tab and the API run torch under the same lock
        voice, sources = merged_voice(ctx, method, picks, recipe)
        dict_path = userdict_for(sources[0].g_path)
        speaker = speaker if speaker in voice.speakers else None
        audio = voice.synthesize(text, language, bert=bert, seed=0, speaker=speaker,
                                 user_dict=UserDict.load(dict_path) if dict_path else None)
    pairs = merge.speaker_pairs(sources, recipe.speakers)
    who = "; ".join(f"{n} ← " + ", ".join(f"{r.upper()}'s {p}" for r, p in ps.items()) for n, ps in pairs.items())
    status = (f"🔊 {len(audio) / voice.sampling_rate:.1f} s from the merged weights (not saved) — "
              f"{recipe.method}{', slerp' if recipe.slerp else ''}; speaker {speaker or voice.speakers[0]}"
              + (f"; speakers: {who}" if who else "; speaker embeddings: A's"))
    return (voice.sampling_rate, np.asarray(audio, dtype=np.float32)), status


def build(ctx: Context) -> None:
    gr.Markdown("Blend voices **A**, **B** (and **C**) into a new voice, each component with its own weight. "
                "The merged voice keeps A's speakers and config. Voices must share one architecture "
                "(e.g. fine-tuned from the same base model).")
    picks = []
    with gr.Row():
        for role in ROLES:
            with gr.Column():
                label = f"Voice {role.upper()}" + (" (add difference / weighted sum)" if role == "c" else "")
                picks.append(gr.Dropdown(list_voices(ctx.settings), label=label, value=None, elem_id=f"merge-{role}"))
                picks.append(gr.Dropdown([], label=f"Checkpoint {role.upper()}", elem_id=f"merge-{role}-ckpt"))
        refresh_btn = gr.Button("Refresh", size="sm", elem_id="merge-refresh", scale=0)
    with gr.Row():
        method = gr.Radio([(METHOD_LABELS[m], m) for m in METHODS], value="weighted", label="Method",
                          elem_id="merge-method")
        rule = gr.Dropdown([(SPEAKER_LABELS[r], r) for r in SPEAKER_RULES], value="match",
                           label="Speaker embeddings", elem_id="merge-speakers")
    with gr.Row(visible=True) as two_row:
        weight = gr.Slider(0, 1, value=0.5, step=0.05, label="w, all components (sets the four below)",
                           elem_id="merge-weight")
        slerp = gr.Checkbox(label="slerp (spherical, weighted only)", value=False, elem_id="merge-slerp")
    with gr.Row(visible=True) as group_row:
        sliders = [gr.Slider(-1, 2, value=0.5, step=0.05, label=f"w: {GROUP_LABELS[g]}", elem_id=f"merge-{g}")
                   for g in GROUPS]
    with gr.Row(visible=False) as triple_row:
        triple = [gr.Number(value=v, label=f"weight of {r.upper()}", elem_id=f"merge-w{r}")
                  for r, v in zip(ROLES, (0.5, 0.3, 0.2))]
    with gr.Row():
        text = gr.Textbox(value=DEFAULT_TEXT, label="Test sentence", elem_id="merge-text", scale=3)
        language = gr.Dropdown(["ZH", "JP", "EN", "AUTO"], value="ZH", label="Language", elem_id="merge-lang")
        speaker = gr.Dropdown([], label="Speaker (the merged voice has A's)", elem_id="merge-speaker")
        listen_btn = gr.Button("Listen", variant="primary", elem_id="merge-listen")
    audio = gr.Audio(label="Merged (before saving)", interactive=False, elem_id="merge-audio")
    status = gr.Markdown(elem_id="merge-status")
    with gr.Row():
        name = gr.Textbox(label="New voice name", placeholder="e.g. alice_bob", elem_id="merge-name")
        save_btn = gr.Button("Save as voice", elem_id="merge-save")
    save_status = gr.Markdown(elem_id="merge-save-status")
    job_id = gr.State(None)
    shown = gr.State("")
    controls = [method, weight, *sliders, *triple, slerp, rule]

    def recipe(method_v, weight_v, *rest):
        groups, abc, (slerp_v, rule_v) = rest[:4], rest[4:7], rest[7:]
        return recipe_of(method_v, weight_v, groups, abc, slerp_v, rule_v)

    def do_listen(*values):
        chosen, rest = list(values[:6]), values[6:]
        try:
            sound, line = listen(ctx, rest[0], chosen, recipe(*rest[:-3]), *rest[-3:])
        except KoeError as exc:
            return None, error_text(exc)
        return sound, line

    def do_save(*values):
        chosen, rest = list(values[:6]), values[6:-1]
        new = (values[-1] or "").strip()
        try:
            rec = recipe(*rest)
            rec.check()
            sources = {role: (folder, g) for role, folder, g in chosen_sources(ctx, rec.method, chosen)}
            if not re.fullmatch(VOICE_NAME, new):
                raise KoeError(f"invalid voice name {new!r}" if new else "no name for the merged voice",
                               fix="type a new name: 1-64 letters, digits, '-', '_' or '.', not starting with '.' or '-'")
            out = ctx.settings.voice_dir(new)
            if out.exists():
                raise KoeError(f"voice {new!r} already exists", where=str(out), fix="pick a new name")
            command = stages.merge(out, sources, rec.method, rec.weight, rec.groups, rec.slerp, rec.speakers)
            job = ctx.runner.start(None, STAGE, command.argv, expected=command.expected, env=ctx.env())
        except KoeError as exc:
            return error_text(exc), None
        return ctx.runner.status_text(job), job.id

    def follow(job, seen):
        """On the timer: the save job's status; once it finished, the voice menus list the new voice."""
        if not job:
            return gr.skip(), seen, gr.skip(), *[gr.skip()] * 4
        current = ctx.runner.get(job)
        text = ctx.runner.status_text(current)
        if current.status == RUNNING:
            return (gr.skip() if text == seen else text), text, gr.skip(), *[gr.skip()] * 4
        voices = list_voices(ctx.settings)
        if current.status == FINISHED:
            text += "\n\nThe merged voice is in the Voice menu at the top."
        return (text, text, None, *[gr.update(choices=voices)] * 4)

    def a_speakers(voice):
        try:
            return speakers(ctx.voice_dir(voice))
        except KoeError:
            return []

    def method_update(method_v):
        sum_ = method_v == "weighted_sum"
        return gr.update(visible=not sum_), gr.update(visible=not sum_), gr.update(visible=sum_)

    def refresh_all():
        voices = list_voices(ctx.settings)
        return [gr.update(choices=voices)] * 3

    for i in range(3):
        picks[2 * i].change(lambda v: gr.update(choices=(c := checkpoints(ctx, v)), value=c[0][1] if c else None),
                            picks[2 * i], picks[2 * i + 1])
    picks[0].change(lambda v: gr.update(choices=(n := a_speakers(v)), value=n[0] if n else None), picks[0], speaker)
    refresh_btn.click(refresh_all, None, picks[::2])
    method.change(method_update, method, [two_row, group_row, triple_row])
    weight.release(lambda w: [w] * 4, weight, sliders)
    listen_btn.click(do_listen, [*picks, *controls, text, language, speaker], [audio, status])
    save_btn.click(do_save, [*picks, *controls, name], [save_status, job_id])
    ctx.timer.tick(follow, [job_id, shown], [save_status, shown, job_id, ctx.voice, *picks[::2]],
                   show_progress="hidden", trigger_mode="once")
