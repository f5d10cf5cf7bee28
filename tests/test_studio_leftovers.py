"""Issue 11 leftovers: a base folder holding only a release G file, the stale "re-attached" note, and the
slice summary naming the recordings that gave no clip."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers_audio import espeak_audio, have_espeak, with_silence

from settings import Settings
from studio.jobs import JobRunner
from studio.train_state import start_plan
from vits import checkpoints as ck
from vits.config import VoiceConfig
from vits.errors import KoeError
from vits.progress import parse_progress
from vits.train.plan import BASE, base_files, base_generator, default_base, plan_start

REPO = Path(__file__).resolve().parents[1]


def _g_file(path: Path, step: int) -> Path:
    """A small but complete torch zip file named like a G checkpoint (the plan reads names and zip directories)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"w": torch.zeros(2)}, "iteration": 1, "koe_step": step}, path)
    return path


# --- 1. a base folder holding only a release file --------------------------------------------------------------


@pytest.mark.parametrize("name", ["G_60_fp16.pth", "G_60.safetensors"])
def test_a_base_folder_with_only_a_release_file_is_a_base_model(tmp_path, name):
    voice_models, base = tmp_path / "voice" / "models", tmp_path / "base"
    voice_models.mkdir(parents=True)
    base.mkdir()
    with pytest.raises(KoeError, match="no base generator in this folder") as err:
        base_files(voice_models, base)
    assert "G_<step>_fp16.pth" in str(err.value)
    release = _g_file(base / name, 60)  # only its name matters to the plan
    assert base_generator(base) == (60, release)
    plan = plan_start(voice_models, base)  # pipeline.train --base DIR
    assert plan.kind == BASE and plan.files == {"G": release, "D": None, "DUR": None, "WD": None}
    assert plan.describe() == f"fine-tune from base model {base} ({name}); D, DUR, WD start fresh"
    assert plan_start(voice_models, release).files["G"] == release  # --base G_FILE
    assert default_base(voice_models, base) == base  # config.yml base_model.folder
    # The Train tab's "automatic" choice goes through the same rule.
    settings = Settings(root=tmp_path, data_root=tmp_path, base_model_folder=base)
    assert start_plan(tmp_path / "voice", settings, None).files["G"] == release


def test_a_training_g_file_wins_over_a_release_file_and_brings_its_step_s_networks(tmp_path):
    base = tmp_path / "base"
    _g_file(base / "G_900_fp16.pth", 900)
    g0 = _g_file(base / "G_0.pth", 0)
    d0 = _g_file(base / "D_0.pth", 0)
    folder, files = base_files(tmp_path / "models", base)
    assert folder == base and files == {"G": g0, "D": d0, "DUR": None, "WD": None}
    assert plan_start(tmp_path / "models", base).describe().endswith("(G_0.pth); DUR, WD start fresh")
    # A release file with a D file of its step takes that D file too.
    other = tmp_path / "other"
    release = _g_file(other / "G_60.safetensors", 60)
    d60 = _g_file(other / "D_60.pth", 60)
    assert base_files(tmp_path / "models", other)[1] == {"G": release, "D": d60, "DUR": None, "WD": None}


@pytest.mark.parametrize("fp16,use_st", [(True, False), (False, True)])
def test_the_trainer_fine_tunes_from_a_release_file(golden_dir, tmp_path, fp16, use_st):
    from vits.discriminators import DurationDiscriminator
    from vits.models import build_generator
    from vits.train.start import find_start

    cfg = VoiceConfig.load(golden_dir / "model-small" / "config.json")
    base = tmp_path / "base"
    base.mkdir()
    out = ck.export_release(golden_dir / "model-small" / "G_1000.pth",
                            base / ("G_1000_fp16.pth" if fp16 else "G_1000.pth"), fp16=fp16, safetensors=use_st)
    assert out.name == ("G_1000_fp16.pth" if fp16 else "G_1000.safetensors")
    torch.manual_seed(0)
    g = build_generator(cfg)
    hidden, gin = cfg.model.hidden_channels, cfg.model.gin_channels
    dur = DurationDiscriminator(hidden, hidden, 3, 0.1, gin_channels=gin)
    nets = SimpleNamespace(by_kind={"G": g, "D": None, "DUR": dur, "WD": None})
    lines: list[str] = []
    start = find_start(nets, tmp_path / "voice" / "models", base, cfg, 1, lines.append)
    assert (start.step, start.epoch) == (0, 1)
    text = "\n".join(lines)
    assert f"tensors for G, 0 of {len(dur.state_dict())} for DUR (from {base})" in text
    assert "no DUR file in the base model: DUR trained from scratch" in text
    saved = ck.read_checkpoint(out)["model"]
    state = g.state_dict()
    assert saved and all(torch.equal(state[k], v.to(state[k].dtype)) for k, v in saved.items())


# --- 2. the "re-attached" note goes once its job has ended -----------------------------------------------------


def test_the_reattached_note_goes_once_the_job_has_ended(tmp_path):
    settings = Settings(root=tmp_path, data_root=tmp_path / "Data")
    go = tmp_path / "go"
    first = JobRunner(settings)
    job = first.start("alice", "train", [sys.executable, "-c", textwrap.dedent(f"""
        import pathlib, time
        while not pathlib.Path({str(go)!r}).exists():
            time.sleep(0.02)
    """)])
    restarted = JobRunner(settings)  # a new studio process finds the job on disk
    note = restarted.reattach_note()
    assert note == "⏳ `alice` has a train job running: re-attached."
    assert restarted.note_update(note) is None  # still true: left as it is
    assert restarted.note_update("✅ created `bob` (Bert-VITS2 2.3)") is None  # the user's action stays
    assert restarted.note_update("") is None
    go.write_text("")
    first.wait(job.id, timeout=20)
    deadline = time.time() + 10
    while restarted.note_update(note) is None and time.time() < deadline:
        time.sleep(0.05)
    assert restarted.note_update(note) == ""  # the ended job's note is cleared
    assert restarted.reattach_note() == ""


# --- 3. the slice summary names the recordings that gave no clip -----------------------------------------------


@pytest.mark.skipif(not have_espeak(), reason="espeak-ng not installed")
def test_pipeline_slice_closing_line_names_the_recordings_without_clips(tmp_path):
    import numpy as np
    import soundfile as sf

    voice = tmp_path / "Data" / "v"
    (voice / "raw" / "alice").mkdir(parents=True)
    speech, sr = espeak_audio("Hello there, this is a test of the speech pipeline. We will slice it into clips.")
    sf.write(voice / "raw" / "alice" / "speech.wav", with_silence(speech, sr), sr)
    quiet = (np.random.default_rng(1).standard_normal(3 * sr) * 1e-4).astype(np.float32)
    sf.write(voice / "raw" / "alice" / "quiet.wav", quiet, sr)
    proc = subprocess.run([sys.executable, "-m", "pipeline.slice", str(voice)], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = parse_progress(proc.stdout.strip().splitlines()[-1])
    manifest = json.loads((voice / "slices.json").read_text())
    clips = len(manifest["raw/alice/speech.wav"]["clips"])
    assert clips >= 1 and last["clips"] == clips
    assert last["message"] == f"{clips} clips from 2 recordings; 1 gave none: alice/quiet.wav"
