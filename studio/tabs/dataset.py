"""Dataset tab: bring audio in, slice and transcribe it, review every clip, edit the pronunciation dictionary."""

from __future__ import annotations

import gradio as gr

from prep.slicing import SliceOptions
from prep.transcribe import TranscribeOptions
from studio import review, stages
from studio.tabs import Context, error_text
from studio.voices import import_uploads, read_text, save_text_with_backup
from vits.errors import KoeError
from vits.voice_folder import RAW, USERDICT

STAGES = {"ingest", "slice", "transcribe"}


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
    with gr.Row():
        min_sec = gr.Number(label="Clip min seconds", value=SliceOptions.min_seconds, elem_id="slice-min")
        max_sec = gr.Number(label="Clip max seconds", value=SliceOptions.max_seconds, elem_id="slice-max")
        slice_btn = gr.Button("Slice", variant="primary", elem_id="slice-btn")
    with gr.Row():
        language = gr.Dropdown(["auto", "ZH", "JP", "EN"], value=TranscribeOptions.language, label="Transcription language",
                               elem_id="transcribe-lang")
        model = gr.Textbox(label="Whisper model (empty: config.yml)", elem_id="whisper-model")
        keep_flagged = gr.Checkbox(label="Keep flagged clips in esd.list (review them below)", value=False,
                                   elem_id="keep-flagged")
        transcribe_btn = gr.Button("Transcribe", variant="primary", elem_id="transcribe-btn")
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

    gr.Markdown("### Review clips\nDoubtful clips (low confidence, flagged) come first. Click a row to hear it "
                "and see its phones; edit cells, then **Save**.")
    with gr.Row():
        load_btn = gr.Button("Reload table", elem_id="review-load")
        save_btn = gr.Button("Save esd.list", variant="primary", elem_id="review-save")
        delete_btn = gr.Button("Delete selected clip", variant="stop", elem_id="review-delete")
    table = gr.Dataframe(headers=review.COLUMNS, datatype="str", type="array", interactive=True,
                         column_count=len(review.COLUMNS), wrap=True, elem_id="review-table")
    with gr.Row():
        clip_audio = gr.Audio(label="Selected clip", type="filepath", interactive=False, elem_id="clip-audio")
        g2p = gr.Textbox(label="Text frontend result (g2p)", lines=4, interactive=False, elem_id="g2p")
    review_md = gr.Markdown(elem_id="review-status")
    selected = gr.State(None)
    deleted = gr.State([])

    with gr.Accordion("Pronunciation dictionary (userdict.txt)", open=False):
        gr.Markdown("One entry per line: `word|LANG|phones` as the text frontend documents it.")
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
        try:
            ctx.voice_dir(voice)
            added = import_uploads(ctx.settings, voice, [f if isinstance(f, str) else f.name for f in files or []],
                                   spk or None)
        except KoeError as exc:
            return error_text(exc), None
        return f"Added {len(added)} file(s). " + raw_summary(voice), None

    def import_folder(voice, path, spk):
        try:
            if not (path or "").strip():
                raise KoeError("no folder given", fix="type a folder path on the server")
            command = stages.ingest(ctx.voice_dir(voice), path.strip(), spk or None)
            return ctx.runner.status_text(ctx.start(voice, "ingest", command))
        except KoeError as exc:
            return error_text(exc)

    def run_slice(voice, lo, hi):
        try:
            return ctx.runner.status_text(ctx.start(voice, "slice", stages.slice_audio(ctx.voice_dir(voice), lo, hi)))
        except KoeError as exc:
            return error_text(exc)

    def run_transcribe(voice, lang, whisper_model, keep, beam_size, tokens, temps):
        try:
            command = stages.transcribe(ctx.voice_dir(voice), lang, whisper_model or None, bool(keep),
                                        beam_size, tokens, temps)
            return ctx.runner.status_text(ctx.start(voice, "transcribe", command))
        except KoeError as exc:
            return error_text(exc)

    def job_status(voice):
        return ctx.runner.status_text(ctx.latest(voice, STAGES)) if voice else "No voice selected."

    def stop(voice):
        job = ctx.latest(voice, STAGES)
        if job and not job.done:
            ctx.runner.cancel(job.id)
            return "⏹ stopping…"
        return job_status(voice)

    def load_table(voice):
        try:
            clips = review.table(ctx.voice_dir(voice))
        except KoeError as exc:
            return [], error_text(exc), [], None
        flagged = sum(1 for c in clips if c.flags)
        return (review.to_rows(clips), f"{len(clips)} clips, {flagged} flagged.", [], None)

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

    def save_table(voice, rows, removed):
        try:
            voice_dir = ctx.voice_dir(voice)
            backup = review.save_esd(voice_dir, review.from_rows(rows), removed)
        except KoeError as exc:
            return error_text(exc), removed
        note = f" (previous version: `{backup.relative_to(voice_dir)}`)" if backup else ""
        return f"✅ Saved {len(review.from_rows(rows))} clips to esd.list{note}.", []

    def delete_row(rows, index, removed):
        if index is None or not rows or index >= len(rows):
            return rows, removed, "Select a row first."
        wav = str(rows[index][1])
        rows = [r for i, r in enumerate(rows) if i != index]
        return rows, [*removed, wav], f"Removed {wav} from the table; **Save** to apply (its audio goes to trash/)."

    def load_dict(voice):
        try:
            return read_text(ctx.voice_dir(voice) / USERDICT), ""
        except KoeError as exc:
            return "", error_text(exc)

    def save_dict(voice, text):
        try:
            path = ctx.voice_dir(voice) / USERDICT
            save_text_with_backup(path, text or "")
            try:
                from vits.text import UserDict

                UserDict.load(path)
            except ImportError:
                pass
            except Exception as exc:  # noqa: BLE001 - show the parser's complaint next to the editor
                return f"⚠️ saved, but the text frontend reports: {exc}"
            return "✅ saved userdict.txt (previous version: userdict.txt.bak)"
        except KoeError as exc:
            return error_text(exc)

    add_btn.click(add_uploads, [ctx.voice, uploads, speaker], [raw_info, uploads])
    folder_btn.click(import_folder, [ctx.voice, folder, speaker], job_md)
    slice_btn.click(run_slice, [ctx.voice, min_sec, max_sec], job_md)
    transcribe_btn.click(run_transcribe, [ctx.voice, language, model, keep_flagged, beam, max_tokens,
                                          temperatures], job_md)
    stop_btn.click(stop, ctx.voice, job_md)
    ctx.timer.tick(job_status, ctx.voice, job_md, show_progress="hidden", trigger_mode="once")
    load_btn.click(load_table, ctx.voice, [table, review_md, deleted, selected])
    table.select(select_row, [ctx.voice, table], [clip_audio, g2p, selected], show_progress="hidden")
    save_btn.click(save_table, [ctx.voice, table, deleted], [review_md, deleted])
    delete_btn.click(delete_row, [table, selected, deleted], [table, deleted, review_md])
    dict_load.click(load_dict, ctx.voice, [userdict, dict_md])
    dict_save.click(save_dict, [ctx.voice, userdict], dict_md)
    ctx.voice.change(raw_summary, ctx.voice, raw_info)
    ctx.voice.change(load_table, ctx.voice, [table, review_md, deleted, selected])
    ctx.voice.change(load_dict, ctx.voice, [userdict, dict_md])
