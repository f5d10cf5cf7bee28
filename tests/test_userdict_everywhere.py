"""A voice's pronunciation dictionary (Data/<voice>/userdict.txt) is applied the same way by the text stage,
the synthesize CLI and the studio's Synthesize tab: the same phones, the same audio. The HTTP server's use of
it is checked in tests/test_server_params.py (test_voice_dictionary_applies), on its running server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_server_params import DICT_ENTRY, DICT_TEXT, same_audio, write_voices

from vits.voice_folder import ESD_LIST, TRAIN_LIST, USERDICT

REPO = Path(__file__).resolve().parent.parent
TEXT, ENTRY = DICT_TEXT, DICT_ENTRY
KNOBS = dict(seed=2, sdp_ratio=0.5, noise_scale=0.6, noise_scale_w=0.9, length_scale=1.0)


@pytest.fixture(scope="module")
def env(tmp_path_factory, golden_dir):
    from settings import load_settings
    from vits.synthesis import Voice
    from vits.text import UserDict
    from vits.text.bert import BertFeatures

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("userdict")
    config = write_voices(root, golden_dir / "tokenizers", names=("tiny",), languages=("ZH",))
    settings = load_settings(config)
    voice_dir = settings.data_root / "tiny"
    (voice_dir / USERDICT).write_text(ENTRY, encoding="utf-8")
    bert = BertFeatures({k: v for k, v in settings.bert.items() if Path(v).is_dir()})
    voice = Voice.load(voice_dir)
    user_dict = UserDict.load(voice_dir / USERDICT)

    def library(user_dict) -> np.ndarray:
        from server.audio import to_int16

        return to_int16(voice.synthesize(TEXT, "ZH", bert=bert, user_dict=user_dict, **KNOBS)).astype(np.int32)

    with_dict, without = library(user_dict), library(None)
    assert not same_audio(with_dict, without)  # the entry changes the audio, so each check below can fail
    return {"root": root, "config": config, "settings": settings, "voice_dir": voice_dir, "bert": bert,
            "user_dict": user_dict, "with_dict": with_dict}


def test_the_entry_changes_the_phones(env):
    from vits.text import clean_text

    assert clean_text(TEXT, "ZH")[0].phones == ["_", "n", "i", "h", "ao", ".", "_"]
    assert clean_text(TEXT, "ZH", user_dict=env["user_dict"])[0].phones == ["_", "w", "o", "m", "en", ".", "_"]


def test_text_stage_writes_the_dictionary_phones(env):
    from pipeline.text import main as text_main
    from vits.lists import read_cleaned_list

    voice = env["root"] / "Data" / "texted"
    (voice / "wavs").mkdir(parents=True)
    sf.write(voice / "wavs" / "a.wav", np.zeros(44100, dtype=np.float32), 44100)
    (voice / ESD_LIST).write_text(f"wavs/a.wav|alice|ZH|{TEXT}\n", encoding="utf-8")
    (voice / USERDICT).write_text(ENTRY, encoding="utf-8")
    assert text_main([str(voice)]) == 0
    [(_, line)] = read_cleaned_list(voice / TRAIN_LIST)
    assert line.phones == ["_", "w", "o", "m", "en", ".", "_"] and line.tones == [0, 3, 3, 2, 2, 0, 0]
    # Editing the dictionary makes the stage run again (not "up to date").
    (voice / USERDICT).write_text("", encoding="utf-8")
    assert text_main([str(voice)]) == 0
    [(_, line)] = read_cleaned_list(voice / TRAIN_LIST)
    assert line.phones == ["_", "n", "i", "h", "ao", ".", "_"]


def test_synthesize_cli_uses_the_voice_dictionary(env, tmp_path):
    out = tmp_path / "cli.wav"
    cmd = [sys.executable, "-m", "pipeline.synthesize", str(env["voice_dir"]), "--text", TEXT, "--language", "ZH",
           "--out", str(out), "--seed", "2", "--sdp-ratio", "0.5", "--noise-scale", "0.6", "--noise-scale-w", "0.9"]
    run_env = dict(os.environ, KOE_CONFIG=str(env["config"]), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    audio, sr = sf.read(out, dtype="int16")
    assert sr == 44100 and same_audio(audio.astype(np.int32), env["with_dict"])


def test_studio_synthesize_tab_uses_the_voice_dictionary(env):
    from server.audio import to_int16
    from studio.app import new_registry
    from studio.tabs import Context, synthesize

    ctx = Context(settings=env["settings"], runner=None, config_path=None)
    registry = new_registry(env["settings"])
    ctx.caches[synthesize.REGISTRY] = registry
    [(_, g_path)] = synthesize.checkpoint_choices(ctx, "tiny")
    entry = synthesize.load_checkpoint(ctx, g_path)
    assert entry.user_dict is not None and len(entry.user_dict) == 1
    knobs = {k: v for k, v in KNOBS.items() if k != "seed"}
    [(_, audio)] = list(synthesize.speak(entry, registry.bert(), TEXT, language="ZH", speaker=None, gap=0.2,
                                         seed=2, **knobs))
    assert same_audio(to_int16(audio).astype(np.int32), env["with_dict"])
