"""What the studio tells the user: hints derived from the error itself, the error line before the log, a
stage's result on the page, redo/keep of transcriptions, the review table's flagged-clip round trip."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.transcribe import result_message
from prep.transcribe import TranscribeOptions, transcribe_voice
from settings import Settings
from studio import review
from studio.hints import error_line, failure_hint
from studio.jobs import JobRunner
from vits.errors import KoeError
from vits.progress import format_progress

BERT_FOLDER_HINT = "A BERT model folder is missing"


def _settings(tmp_path) -> Settings:
    return Settings(root=tmp_path, data_root=tmp_path / "Data", bert={"ZH": tmp_path / "models" / "bert" / "zh"})


def test_missing_features_are_not_a_missing_bert_folder(tmp_path):
    from vits.data import load_bert

    with pytest.raises(KoeError) as err:
        load_bert(tmp_path / "Data" / "alice" / "wavs" / "alice" / "a_0001.bert.pt")
    log = ["Traceback (most recent call last):", "  ...", f"error: {err.value}"]
    hint = failure_hint(log, _settings(tmp_path))
    assert BERT_FOLDER_HINT not in hint
    assert "pipeline.features" in hint and "pipeline.text" not in hint


def test_a_bert_with_too_few_layers_is_not_a_missing_folder(tmp_path):
    folder = tmp_path / "models" / "bert" / "zh"
    error = KoeError("this BERT has 2 layers; Bert-VITS2 reads its hidden layer -3", where=str(folder),
                     fix="use the full pretrained model (python -m pipeline.download bert), not a truncated copy")
    hint = failure_hint([f"error: {error}"], _settings(tmp_path))
    assert BERT_FOLDER_HINT not in hint and "full pretrained model" in hint
    # A foreign library's "folder not found" still gets the folder hint, with the configured path.
    assert str(folder) in failure_hint(["OSError: BERT model folder not found: /x"], _settings(tmp_path))
    # Out of memory wins over any fix printed earlier.
    assert "batch size" in failure_hint(["x → y", "RuntimeError: CUDA out of memory. Tried"], _settings(tmp_path))


def test_failed_job_shows_the_error_first_and_no_progress_lines(tmp_path):
    settings = _settings(tmp_path)
    (settings.data_root / "alice").mkdir(parents=True)
    runner = JobRunner(settings)
    script = ("import sys\n"
              f"print({format_progress('features', step=1, total=9)!r})\n"
              "print('working on clip 1')\n"
              "print('error: wavs/a.bert.pt: BERT feature file missing → run the features stage', file=sys.stderr)\n"
              f"print({format_progress('features', message='failed: x')!r})\n"
              "sys.exit(1)\n")
    (tmp_path / "stage.py").write_text(script, encoding="utf-8")
    job = runner.wait(runner.start("alice", "features", [sys.executable, str(tmp_path / "stage.py")]).id, timeout=30)
    text = runner.status_text(job)
    assert not any("KOE_PROGRESS" in line for line in job.tail), job.tail
    assert "KOE_PROGRESS" not in text
    error_at, log_at = text.index("**Error:**"), text.index("Last log lines")
    assert error_at < log_at and "BERT feature file missing" in text[error_at:log_at]
    assert "run the features stage" in job.hint
    assert error_line(job.tail).startswith("error: wavs/a.bert.pt")


def test_finished_job_shows_its_result_line(tmp_path):
    settings = _settings(tmp_path)
    (settings.data_root / "alice").mkdir(parents=True)
    runner = JobRunner(settings)
    line = format_progress("slice", message="89 clips from 10 recordings; 2 gave none: a.wav, b.wav")
    job = runner.wait(runner.start("alice", "slice", [sys.executable, "-c", f"print({line!r})"]).id, timeout=30)
    assert "Result: 89 clips from 10 recordings; 2 gave none: a.wav, b.wav" in runner.status_text(job)


# ------------------------------------------------------------------------------------------ transcription
@pytest.fixture
def voice(tmp_path) -> Path:
    """Three clips: a.wav in esd.list, b.wav left out by transcription (flagged), c.wav left out with no text."""
    voice_dir = tmp_path / "Data" / "alice"
    for name in ("a", "b", "c"):
        path = voice_dir / "wavs" / "alice" / f"{name}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (np.random.default_rng(0).standard_normal(16000) * 0.01).astype(np.float32), 16000)
    (voice_dir / "esd.list").write_text("wavs/alice/a.wav|alice|EN|Hello there.\n", encoding="utf-8")

    def item(wav, text, language, flags, excluded):
        return {"wav": wav, "speaker": "alice", "language": language, "text": text, "avg_logprob": -0.2,
                "flags": flags, "excluded": excluded}

    (voice_dir / "esd.meta.json").write_text(json.dumps({"clips": {
        "wavs/alice/a.wav": item("wavs/alice/a.wav", "Hello there.", "EN", [], False),
        "wavs/alice/b.wav": item("wavs/alice/b.wav", "la la la la la", "yo", ["repetition", "unsupported_language"],
                                 True),
        "wavs/alice/c.wav": item("wavs/alice/c.wav", "", "EN", ["empty", "no_speech"], True),
    }}), encoding="utf-8")
    return voice_dir


def test_keep_flagged_puts_back_clips_an_earlier_run_left_out(voice):
    summary = transcribe_voice(voice, TranscribeOptions(model="tiny", keep_flagged=True))
    assert summary["transcribed"] == 0 and summary["kept"] == 1
    lines = (voice / "esd.list").read_text(encoding="utf-8").splitlines()
    assert lines == ["wavs/alice/a.wav|alice|EN|Hello there.", "wavs/alice/b.wav|alice|yo|la la la la la"]
    meta = json.loads((voice / "esd.meta.json").read_text(encoding="utf-8"))
    assert meta["clips"]["wavs/alice/b.wav"]["excluded"] is False
    assert meta["clips"]["wavs/alice/c.wav"]["excluded"] is True  # nothing to keep: no text
    assert result_message(summary).startswith("1 flagged clip(s) put back into esd.list")


def test_nothing_to_do_says_so_and_how_to_redo(voice):
    summary = transcribe_voice(voice, TranscribeOptions(model="tiny"))
    assert summary == {**summary, "transcribed": 0, "skipped": 3, "kept": 0}
    message = result_message(summary)
    assert "nothing new to transcribe: all 3 clips are already done" in message and "--force" in message
    with pytest.raises(KoeError, match="no such clip in wavs/: wavs/alice/zzz.wav"):
        transcribe_voice(voice, TranscribeOptions(model="tiny"), only=["wavs/alice/zzz.wav"])


def test_redo_one_clip_transcribes_just_that_clip(voice, tmp_path):
    from helpers_audio import make_tiny_whisper

    from prep.transcribe import load_whisper

    model = load_whisper(str(make_tiny_whisper(tmp_path / "tiny.pt")), device="cpu")
    opts = TranscribeOptions(model="tiny", language="en", beam_size=1, temperatures=(0.0,), max_tokens=4,
                             keep_flagged=True)
    summary = transcribe_voice(voice, opts, model=model, only=["wavs/alice/a.wav"])
    assert summary["transcribed"] == 1 and summary["skipped"] == 2
    meta = json.loads((voice / "esd.meta.json").read_text(encoding="utf-8"))
    assert meta["clips"]["wavs/alice/a.wav"]["text"] != "Hello there."  # decoded again (random Whisper)
    assert meta["clips"]["wavs/alice/b.wav"]["text"] == "la la la la la"  # untouched
    assert list((voice / "backups").glob("esd.list.*.bak"))


# ----------------------------------------------------------------------------------------------- review
def test_review_round_trip_of_a_left_out_clip(voice):
    rows = review.to_rows(review.table(voice))
    assert [r[1] for r in rows] == ["wavs/alice/b.wav", "wavs/alice/c.wav", "wavs/alice/a.wav"]
    assert rows[0][0].startswith(review.LEFT_OUT) and "repetition" in rows[0][0]
    loaded = [list(r) for r in rows]
    # Saved unchanged: the left-out clips stay out.
    backup, written, still_out = review.save_review(voice, rows, loaded)
    assert (written, still_out) == (1, 2)
    # One action fixes the unknown language ('yo'); the corrected row is kept and its flags cleared.
    rows, changed = review.bulk_edit(rows, language="EN", scope="unknown")
    assert changed == 1 and rows[0][3] == "EN" and rows[2][3] == "EN"
    rows[0][4] = "Lovely weather today."
    _, written, still_out = review.save_review(voice, rows, loaded)
    assert (written, still_out) == (2, 1)
    assert "wavs/alice/b.wav|alice|EN|Lovely weather today." in (voice / "esd.list").read_text(encoding="utf-8")
    meta = json.loads((voice / "esd.meta.json").read_text(encoding="utf-8"))["clips"]["wavs/alice/b.wav"]
    assert meta["flags"] == [] and meta["excluded"] is False and meta["reviewed"] is True
    again = {r[1]: r for r in review.to_rows(review.table(voice))}
    assert again["wavs/alice/b.wav"][0] == ""
    # Emptying the flag cell keeps a clip as it is, but an empty text is refused with the row named.
    rows = review.to_rows(review.table(voice))
    loaded = [list(r) for r in rows]
    rows[0][0] = ""
    with pytest.raises(KoeError, match=r"row 1 \(wavs/alice/c.wav\).*the text is empty"):
        review.save_review(voice, rows, loaded)
    assert "wavs/alice/c.wav" not in (voice / "esd.list").read_text(encoding="utf-8")


def test_health_report_says_when_bert_features_are_missing(voice):
    from prep.report import build_report, format_report
    from vits.lists import bert_path
    from vits.voice_folder import TRAIN_LIST, VAL_LIST

    line = "wavs/alice/{}.wav|alice|EN|Hello.|_ HH AH0 _|0 0 0 0|2 2"
    (voice / TRAIN_LIST).parent.mkdir(parents=True, exist_ok=True)
    (voice / TRAIN_LIST).write_text(line.format("a") + "\n" + line.format("b") + "\n", encoding="utf-8")
    (voice / VAL_LIST).write_text(line.format("c") + "\n", encoding="utf-8")
    bert_path(voice / "wavs" / "alice" / "a.wav").write_bytes(b"")  # a has its features
    report = build_report(voice)
    assert [d["wav"] for d in report["missing_bert_features"]] == ["wavs/alice/b.wav", "wavs/alice/c.wav"]
    assert any(p.startswith("2 list lines without BERT features") and "features stage" in p
               for p in report["problems"]), report["problems"]
    assert "Lines without BERT features (2)" in format_report(report)


def test_download_advice_fits_the_endpoint_in_use(monkeypatch, tmp_path):
    from prep.download import download_fix, one_line_reason, whisper_fix
    from prep.transcribe import load_whisper

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert "hf-mirror.com" in download_fix(None) and "hf-mirror.com" in download_fix("https://huggingface.co/")
    mirrored = download_fix("https://hf-mirror.com")
    assert "mirror https://hf-mirror.com may be down" in mirrored and "use --endpoint https://hf-mirror" not in mirrored
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE=1" in download_fix("https://hf-mirror.com")
    reason = one_line_reason(OSError("line one\n  line two\n" + "x" * 400))
    assert "\n" not in reason and reason.startswith("OSError: line one line two") and len(reason) == 300
    assert str(tmp_path / "medium.pt") in whisper_fix("medium", tmp_path)
    damaged = tmp_path / "broken.pt"
    damaged.write_bytes(b"not a checkpoint")
    with pytest.raises(KoeError) as err:
        load_whisper(str(damaged), device="cpu")
    assert "\n" not in str(err.value) and "damaged or not a Whisper checkpoint" in str(err.value)


def test_uploads_refuse_empty_undecodable_and_duplicate_files_by_name(tmp_path):
    from studio.voices import create_voice, import_uploads

    settings = Settings(root=tmp_path, data_root=tmp_path / "Data")
    create_voice(settings, "alice")
    up = tmp_path / "up"
    up.mkdir()
    (up / "empty.wav").write_bytes(b"")
    (up / "broken.mp3").write_bytes(b"this is not audio at all" * 10)
    sf.write(up / "good.wav", np.full(8000, 0.1, dtype=np.float32), 16000)
    refused: list[tuple[str, str]] = []
    added = import_uploads(settings, "alice", [up / "empty.wav", up / "broken.mp3", up / "good.wav",
                                               up / "good.wav"], refused=refused)
    assert added == ["raw/alice/good.wav"]
    assert [name for name, _ in refused] == ["empty.wav", "broken.mp3", "good.wav"], refused
    assert "already added as raw/alice/good.wav" in refused[2][1]
    assert sorted(p.name for p in (settings.data_root / "alice" / "raw").rglob("*") if p.is_file()) == ["good.wav"]


def test_preprocess_loudness_and_trim_reach_the_resample_stage(tmp_path):
    import os
    import subprocess

    from studio import stages

    voice = tmp_path / "Data" / "alice"
    clip = voice / "wavs" / "alice" / "a.wav"
    clip.parent.mkdir(parents=True)
    sr = 44100
    t = np.arange(sr) / sr
    tone = 0.05 * np.sin(2 * np.pi * 220 * t)
    sf.write(clip, np.concatenate([np.zeros(sr), tone, np.zeros(sr)]).astype(np.float32), sr, subtype="PCM_16")
    command = stages.resample(voice, loudness=-20, trim=True)
    assert command.argv[-3:] == ["--loudness", "-20", "--trim"]
    assert stages.prepare(voice, loudness=-20, trim=True).argv[-3:] == ["--loudness", "-20", "--trim"]
    assert "--loudness" not in stages.prepare(voice).argv and "--trim" not in stages.resample(voice).argv
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent), OMP_NUM_THREADS="1",
               KOE_CONFIG=str(tmp_path / "none.yml"))
    out = subprocess.run(command.argv, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    audio, _ = sf.read(clip)
    assert len(audio) < 1.5 * sr  # the two seconds of silence are gone
    assert np.abs(audio).max() > 0.1  # louder than the 0.05 tone it was


@pytest.mark.parametrize("command", [["app.py"], ["-m", "server"]], ids=["studio", "api"])
def test_a_busy_port_is_one_clear_line(tmp_path, command):
    import os
    import socket
    import subprocess

    repo = Path(__file__).resolve().parent.parent
    (tmp_path / "config.yml").write_text(f"data_root: {tmp_path / 'Data'}\ndevice: cpu\n", encoding="utf-8")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "KOE_API_KEY"}
        env.update(PYTHONPATH=str(repo), GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
        out = subprocess.run([sys.executable, *command, "--port", str(port), "--config", str(tmp_path / "config.yml")],
                             cwd=repo, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 1, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"port {port} on 127.0.0.1 is already in use" in errors[0], out.stderr[-3000:]
    assert f"--port {port + 1}" in errors[0] and "Traceback" not in out.stderr


def test_api_docs_need_no_cdn(tmp_path):
    from fastapi.testclient import TestClient
    from starlette.responses import PlainTextResponse

    from server.mount import OfflineDocs, StudioApi
    from server.routes import create_app
    from settings import load_settings

    (tmp_path / "config.yml").write_text(f"data_root: {tmp_path / 'Data'}\n", encoding="utf-8")
    api = create_app(load_settings(tmp_path / "config.yml"))
    client = TestClient(OfflineDocs(api))
    page = client.get("/docs")
    assert page.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower() and "https://" not in page.text.replace("https://swagger.io", "")
    js = client.get("/docs-assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200
    assert client.get("/docs-assets/..%2Fsettings.py").status_code == 404
    spec = client.get("/openapi.json").json()
    # The bundled Swagger UI 4 renders only OpenAPI 3.0 documents (a 3.1 one shows "Unable to render").
    assert spec["paths"] and spec["openapi"].startswith("3.0.")
    # On the studio's port the assets sit behind the studio's login like the rest of the API.
    studio = TestClient(StudioApi(PlainTextResponse("studio page"), api, auth=("u", "p")))
    assert studio.get("/docs-assets/swagger-ui.css").status_code == 401
    assert studio.get("/docs-assets/swagger-ui.css", auth=("u", "p")).status_code == 200
    assert studio.get("/", auth=("u", "p")).text == "studio page"


def test_sentences_do_not_end_at_abbreviations():
    from vits.text import split_sentences

    assert split_sentences("Dr. Smith arrived. He said hi, e.g. hello. J. R. R. Tolkien wrote it. Pi is 3.14. End.") \
        == ["Dr. Smith arrived.", "He said hi, e.g. hello.", "J. R. R. Tolkien wrote it.", "Pi is 3.14.", "End."]
    assert split_sentences("It rained, etc. Then it stopped.") == ["It rained, etc.", "Then it stopped."]


def test_synthesize_never_picks_an_outside_model_by_itself(tmp_path):
    from studio.tabs.synthesize import pick_checkpoint

    alice, outside = tmp_path / "Data" / "alice", tmp_path / "Data" / ".studio" / "outside" / "m"
    own = [("G_20", str(alice / "models" / "G_20.pth")), ("G_10", str(alice / "models" / "G_10.pth"))]
    other = [("outside m: G_7.pth", str(outside / "G_7.pth"))]
    assert pick_checkpoint(own + other, alice, None) == str(alice / "models" / "G_20.pth")
    assert pick_checkpoint(other, alice, None) is None  # no checkpoint of its own: nothing, not the outside one
    assert pick_checkpoint(own + other, alice, str(outside / "G_7.pth")) == str(outside / "G_7.pth")  # picked
    assert pick_checkpoint(own + other, alice, str(tmp_path / "Data" / "bob" / "models" / "G_5.pth")) == own[0][1]


def test_download_all_tries_every_target_and_sums_up(tmp_path):
    import os
    import subprocess

    repo = Path(__file__).resolve().parent.parent
    (tmp_path / "config.yml").write_text(f"bert:\n  ZH: {tmp_path / 'zh'}\n  JP: {tmp_path / 'jp'}\n  EN: {tmp_path / 'en'}\n"
                                         f"wavlm: {tmp_path / 'wavlm'}\n", encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(repo), KOE_CONFIG=str(tmp_path / "config.yml"))
    out = subprocess.run([sys.executable, "-m", "pipeline.download", "models", "--endpoint", "http://127.0.0.1:9"],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 3, out.stderr[-3000:]
    assert lines[0].startswith("WARNING: bert: ") and lines[1].startswith("WARNING: wavlm: "), lines
    assert lines[2].startswith("error: 2 of 2 downloads failed: bert, wavlm (done: none)"), lines
    assert all("the mirror http://127.0.0.1:9 may be down" in line for line in lines[:2]), lines
