"""Dataset tab: bring audio in, slice and transcribe it, review every clip, edit the pronunciation dictionary."""

from __future__ import annotations

import gradio as gr

from prep.slicing import SliceOptions
from prep.transcribe import TranscribeOptions
from studio import review, stages
from studio.tabs import Context, error_text
from studio.tabs import clean as clean_step
from studio.voices import import_uploads, read_text, save_text_with_backup
from vits.errors import HUB, KoeError
from vits.voice_folder import RAW, USERDICT

STAGES = {"ingest", "clean", "slice", "transcribe"}
# "Download Whisper from" -> (source, hub endpoint): OpenAI's .pt files, or openai/whisper-<name> from the
# hub or its mirror, converted into the same .pt (prep/whisper_convert.py).
WHISPER_FROM = {"OpenAI's server": ("openai", ""),
                "huggingface.co (openai/whisper-*, converted)": ("hub", HUB),  # named: config.yml's mirror must not win
                "hf-mirror.com (openai/whisper-*, converted)": ("hub", "https://hf-mirror.com")}


def whisper_choices(endpoint: str) -> tuple[dict[str, tuple[str, str]], str]:
    """The "Download Whisper from" choices (config.yml's own mirror added) and the one config.yml's mirror
    implies (the `pipeline.download` rule: the hub source when a mirror is set, else OpenAI's server)."""
    choices = dict(WHISPER_FROM)
    if endpoint and endpoint not in {e for _, e in choices.values()}:
        choices[f"{endpoint} (openai/whisper-*, converted)"] = ("hub", endpoint)
    default = next(label for label, (source, e) in choices.items() if (source == "hub") == bool(endpoint)
                   and e == endpoint)
    return choices, default


def build(ctx: Context) -> None:
    gr.Markdown("Add recordings (any length; they are cut into clips), then **Slice** and **Transcribe**, "
                "then check every clip in the review table.")
    with gr.Row():
        with gr.Column():
            uploads = gr.File(label="Upload audio files or a zip", file_count="multiple",
                              file_types=["audio", ".zip"], elem_id="uploads")
            speaker = gr.Textbox(label="Speaker (empty: the voice's name; a zip's sub-folders name speakers)",
                                 elem_id="upload-speaker")
            add_btn = gr.Button("Add uploads to the voice", elem_id="add-uploads")
        with gr.Column():
            folder = gr.Textbox(label="…or a folder on the server (Colab/AutoDL disk)",
                                placeholder="/root/autodl-tmp/recordings", elem_id="server-folder")
            folder_btn = gr.Button("Import folder", elem_id="import-folder")
            raw_info = gr.Markdown(elem_id="raw-info")
    clean_ui = clean_step.layout()
    with gr.Row():
        min_sec = gr.Number(label="Clip min seconds", value=SliceOptions.min_seconds, elem_id="slice-min")
        max_sec = gr.Number(label="Clip max seconds", value=SliceOptions.max_seconds, elem_id="slice-max")
        slice_btn = gr.Button("Slice", variant="primary", elem_id="slice-btn")
    with gr.Row():
        language = gr.Dropdown(["auto", "ZH", "JP", "EN", "KO"], value=TranscribeOptions.language, label="Transcription language",
                               elem_id="transcribe-lang")
        model = gr.Textbox(label="Whisper model (empty: config.yml)", elem_id="whisper-model")
        keep_flagged = gr.Checkbox(label="Keep flagged clips in esd.list (review them below)", value=False,
                                   elem_id="keep-flagged")
        transcribe_btn = gr.Button("Transcribe", variant="primary", elem_id="transcribe-btn")
        redo_all_btn = gr.Button("Transcribe all again", elem_id="transcribe-all-again")
    with gr.Row():
        sources, default_source = whisper_choices(ctx.settings.hub_endpoint)
        whisper_from = gr.Dropdown(list(sources), value=default_source, label="Download Whisper from",
                                   elem_id="whisper-from")
        whisper_dl_btn = gr.Button("Download Whisper", size="sm", elem_id="download-whisper")
        whisper_md = gr.Markdown(elem_id="whisper-download")
    with gr.Accordion("Transcription options", open=False):
        with gr.Row():
            beam = gr.Number(label="Beam size", value=TranscribeOptions.beam_size, precision=0, elem_id="beam-size")
            max_tokens = gr.Number(label="Most tokens per clip (0: Whisper's 224)", value=0, precision=0,
                                   elem_id="max-tokens")
            temperatures = gr.Textbox(label="Fallback temperatures", value=",".join(f"{t:g}" for t in TranscribeOptions.temperatures),
                                      elem_id="temperatures")
    with gr.Row():
        job_md = gr.Markdown("No job yet.", elem_id="dataset-job")
        stop_btn = gr.Button("Stop job", size="sm", elem_id="dataset-stop")
    # What a button said (a refusal, an error): the refresh timer never touches it, the next action replaces it.
    message_md = gr.Markdown(elem_id="dataset-message")

    gr.Markdown("### Review clips\nDoubtful clips (low confidence, flagged) come first. Click a row to hear it "
                "and see its phones; edit cells, then **Save**.")
    gr.Markdown(f"Rows marked *{review.LEFT_OUT}* were left out by transcription: correct the text (or empty "
                "the flag cell to keep it as it is) and **Save** to keep the clip; saving a changed row clears "
                "its flags.")
    with gr.Row():
        load_btn = gr.Button("Reload table", elem_id="review-load")
        save_btn = gr.Button("Save esd.list", variant="primary", elem_id="review-save")
        delete_btn = gr.Button("Delete selected clip", variant="stop", elem_id="review-delete")
        redo_clip_btn = gr.Button("Transcribe selected clip again", elem_id="transcribe-clip-again")
    with gr.Row():
        bulk_lang = gr.Dropdown(["", "ZH", "JP", "EN", "KO"], value="", label="Set language to", elem_id="bulk-language")
        bulk_speaker = gr.Textbox(label="Set speaker to (empty: unchanged)", elem_id="bulk-speaker")
        bulk_scope = gr.Radio([("every row", "all"), ("rows with an unknown language", "unknown")], value="all",
                              label="Rows", elem_id="bulk-scope")
        bulk_btn = gr.Button("Apply to the table", elem_id="bulk-apply")
    table = gr.Dataframe(headers=review.COLUMNS, datatype="str", type="array", interactive=True,
                         column_count=len(review.COLUMNS), wrap=True, column_widths=review.COLUMN_WIDTHS,
                         elem_id="review-table")
    with gr.Row():
        clip_audio = gr.Audio(label="Selected clip", type="filepath", interactive=False, elem_id="clip-audio")
        g2p = gr.Textbox(label="Text frontend result (g2p)", lines=4, interactive=False, elem_id="g2p")
    review_md = gr.Markdown(elem_id="review-status")
    selected = gr.State(None)
    deleted = gr.State([])
    loaded = gr.State([])  # the rows as loaded, to tell which ones the user changed

    with gr.Accordion("Pronunciation dictionary (userdict.txt)", open=False):
        gr.Markdown("One entry per line: the word, a **Tab**, its pronunciation; `#` starts a comment. The "
                    "pronunciation's form says the language:\n\n```\n重庆\tchong2 qing4\n東京\tトーキョー/0\n"
                    "Koe\tK OW1 EY0\n```\nChinese: toned pinyin, one syllable per character · Japanese: kana, "
                    "optional /accent (0 = flat) · English: ARPAbet with stress digits. A dictionary the text "
                    "frontend cannot read is not saved.")
        userdict = gr.Code(label="userdict.txt", lines=8, elem_id="userdict")
        with gr.Row():
            dict_load = gr.Button("Load", elem_id="userdict-load")
            dict_save = gr.Button("Save dictionary", elem_id="userdict-save")
        dict_md = gr.Markdown(elem_id="userdict-status")

    # ------------------------------------------------------------------------------------- handlers
    def raw_summary(voice):
        try:
            raw = ctx.voice_dir(voice) / RAW
        except KoeError:
            return ""
        files = [p for p in raw.rglob("*") if p.is_file()] if raw.is_dir() else []
        speakers = sorted({p.relative_to(raw).parts[0] for p in files if len(p.relative_to(raw).parts) > 1})
        return f"raw/: **{len(files)}** files" + (f", speakers: {', '.join(speakers)}" if speakers else "")

    def add_uploads(voice, files, spk):
        refused: list[tuple[str, str]] = []
        try:
            ctx.voice_dir(voice)
            added = import_uploads(ctx.settings, voice, [f if isinstance(f, str) else f.name for f in files or []],
                                   spk or None, refused=refused)
        except KoeError as exc:
            return error_text(exc), None
        notes = "".join(f"\n- refused **{name}**: {reason}" for name, reason in refused)
        return f"Added {len(added)} file(s). " + raw_summary(voice) + notes, None

    def start(voice, stage, make_command):
        """(job panel, message) for a button that starts a stage: the job's status, or the error that stays."""
        try:
            job = ctx.start(voice, stage, make_command(ctx.voice_dir(voice)))
        except KoeError as exc:
            return gr.skip(), error_text(exc)
        return ctx.runner.status_text(job), ""

    clean_step.wire(ctx, clean_ui, start, job_md, message_md)

    def import_folder(voice, path, spk):
        if not (path or "").strip():
            return gr.skip(), error_text(KoeError("no folder given", fix="type a folder path on the server"))
        return start(voice, "ingest", lambda d: stages.ingest(d, path.strip(), spk or None))

    def run_slice(voice, lo, hi):
        return start(voice, "slice", lambda d: stages.slice_audio(d, lo, hi))

    def run_transcribe(voice, lang, whisper_model, keep, beam_size, tokens, temps, force=False, clips=()):
        return start(voice, "transcribe", lambda d: stages.transcribe(
            d, lang, whisper_model or None, bool(keep), beam_size, tokens, temps, force=force, clips=list(clips)))

    def redo_all(*args):
        return run_transcribe(*args, force=True)

    def redo_clip(voice, rows, index, *args):
        if index is None or not rows or index >= len(rows):
            return gr.skip(), "Select a clip in the review table first (click its row)."
        return run_transcribe(voice, *args, clips=[str(rows[index][1])])

    def job_status(voice):
        if not voice:
            return "No voice selected."
        job = ctx.latest(voice, STAGES)
        text = ctx.runner.status_text(job)
        prog = ctx.runner.progress(job) if job is not None and job.done else None
        if job is not None and job.stage == "transcribe" and prog and prog.get("transcribed") == 0 \
                and not prog.get("kept"):
            text += ("\n\nNothing was transcribed: every clip already has a transcript. Press **Transcribe all "
                     "again** to redo them all, or select a clip below and press **Transcribe selected clip "
                     "again**.")
        return text

    def download_whisper(choice, whisper_model):
        source, endpoint = sources.get(choice, ("openai", ""))
        try:
            command = stages.download("whisper", endpoint or None, source, (whisper_model or "").strip() or None)
            return ctx.runner.status_text(ctx.runner.start(None, "download", command.argv, env=ctx.env()))
        except KoeError as exc:
            return error_text(exc)

    def whisper_download_status():
        jobs = [j for j in ctx.runner.jobs(None, "download") if "whisper" in j.command]
        return ctx.runner.status_text(jobs[0]) if jobs else gr.skip()

    def stop(voice):
        job = ctx.latest(voice, STAGES)
        if job and not job.done:
            ctx.runner.cancel(job.id)
            return "⏹ stopping…", ""
        return job_status(voice), "No job is running."

    def load_table(voice):
        try:
            clips = review.table(ctx.voice_dir(voice))
        except KoeError as exc:
            return [], error_text(exc), [], None, []
        flagged = sum(1 for c in clips if c.flags)
        left_out = sum(1 for c in clips if c.excluded)
        rows = review.to_rows(clips)
        note = f", {left_out} of them left out of esd.list (at the top)" if left_out else ""
        return rows, f"{len(clips)} clips, {flagged} flagged{note}.", [], None, rows

    def bulk(rows, lang, spk, scope):
        if not (lang or (spk or "").strip()):
            return gr.skip(), "Choose a language or type a speaker first."
        rows, changed = review.bulk_edit(rows, lang or None, spk or None, scope or "all")
        return rows, f"Changed {changed} row(s) in the table; **Save esd.list** to write them."

    def select_row(voice, rows, evt: gr.SelectData):
        try:
            row = rows[evt.index[0]]
            voice_dir = ctx.voice_dir(voice)
        except (KoeError, IndexError, TypeError):
            return None, "", None
        wav = str(row[1])
        try:
            path = review._safe_relative(voice_dir, wav)
        except KoeError as exc:
            return None, str(exc), None
        preview = review.g2p_preview(str(row[4]), str(row[3]).upper(), voice_dir / USERDICT)
        return (str(path) if path.is_file() else None), preview, evt.index[0]

    def save_table(voice, rows, removed, before):
        try:
            voice_dir = ctx.voice_dir(voice)
            backup, written, still_out = review.save_review(voice_dir, rows, before, removed)
        except KoeError as exc:
            return error_text(exc), removed, gr.skip(), gr.skip(), gr.skip()
        note = f" (previous version: `{backup.relative_to(voice_dir)}`)" if backup else ""
        out = f"; {still_out} left-out clip(s) unchanged, still left out" if still_out else ""
        rows, _, _, _, shown = load_table(voice)
        # The reloaded table has another order: no row stays selected.
        return f"✅ Saved {written} clips to esd.list{note}{out}.", [], rows, shown, None

    def delete_row(rows, index, removed):
        if index is None or not rows or index >= len(rows):
            return rows, removed, "Select a row first.", None
        wav = str(rows[index][1])
        rows = [r for i, r in enumerate(rows) if i != index]
        return (rows, [*removed, wav], f"Removed {wav} from the table; **Save** to apply (its audio goes to trash/).",
                None)

    def load_dict(voice):
        try:
            return read_text(ctx.voice_dir(voice) / USERDICT), ""
        except KoeError as exc:
            return "", error_text(exc)

    def save_dict(voice, text):
        from vits.text.userdict import UserDict

        try:
            path = ctx.voice_dir(voice) / USERDICT
            UserDict.parse(text or "", source=USERDICT)  # refuse before writing: file:line, problem, fix
            save_text_with_backup(path, text or "")
            return f"✅ saved {USERDICT} (previous version: {USERDICT}.bak)"
        except KoeError as exc:
            return error_text(exc) + " — not saved"

    add_btn.click(add_uploads, [ctx.voice, uploads, speaker], [raw_info, uploads])
    job_out = [job_md, message_md]
    folder_btn.click(import_folder, [ctx.voice, folder, speaker], job_out)
    slice_btn.click(run_slice, [ctx.voice, min_sec, max_sec], job_out)
    options = [language, model, keep_flagged, beam, max_tokens, temperatures]
    transcribe_btn.click(run_transcribe, [ctx.voice, *options], job_out)
    redo_all_btn.click(redo_all, [ctx.voice, *options], job_out)
    redo_clip_btn.click(redo_clip, [ctx.voice, table, selected, *options], job_out)
    bulk_btn.click(bulk, [table, bulk_lang, bulk_speaker, bulk_scope], [table, review_md])
    stop_btn.click(stop, ctx.voice, job_out)
    ctx.timer.tick(job_status, ctx.voice, job_md, show_progress="hidden", trigger_mode="once")
    whisper_dl_btn.click(download_whisper, [whisper_from, model], whisper_md)
    ctx.timer.tick(whisper_download_status, None, whisper_md, show_progress="hidden", trigger_mode="once")
    load_btn.click(load_table, ctx.voice, [table, review_md, deleted, selected, loaded])
    table.select(select_row, [ctx.voice, table], [clip_audio, g2p, selected], show_progress="hidden")
    save_btn.click(save_table, [ctx.voice, table, deleted, loaded], [review_md, deleted, table, loaded, selected])
    delete_btn.click(delete_row, [table, selected, deleted], [table, deleted, review_md, selected])
    dict_load.click(load_dict, ctx.voice, [userdict, dict_md])
    dict_save.click(save_dict, [ctx.voice, userdict], dict_md)
    ctx.voice.change(raw_summary, ctx.voice, raw_info)
    ctx.voice.change(load_table, ctx.voice, [table, review_md, deleted, selected, loaded])
    ctx.voice.change(load_dict, ctx.voice, [userdict, dict_md])
