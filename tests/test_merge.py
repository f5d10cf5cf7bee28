"""Model merging (vits/merge.py, python -m pipeline.merge): the formulas per component, slerp's properties, the
speaker rule, refusals naming the key, and the output folder as a normal voice (Voice.load, synthesis, CLI)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_serve import TINY_MODEL

from vits import merge as m
from vits.checkpoints import read_checkpoint, save_checkpoint
from vits.config import VoiceConfig
from vits.errors import KoeError
from vits.models import build_generator
from vits.synthesis import Voice
from vits.voice_folder import MERGE_RECIPE, config_path, models_dir

REPO = Path(__file__).resolve().parent.parent


def _voice(folder: Path, spk2id: dict, seed: int, model: dict | None = None, step: int = 10) -> Path:
    cfg = VoiceConfig.model_validate({"data": {"n_speakers": max(spk2id.values()) + 1, "spk2id": spk2id},
                                      "model": model or TINY_MODEL})
    cfg.save(config_path(folder))
    torch.manual_seed(seed)
    save_checkpoint(models_dir(folder) / f"G_{step}.pth", build_generator(cfg), epoch=1, step=step,
                    learning_rate=2e-4)
    return folder


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    return {"a": _voice(root / "va", {"alice": 0, "bob": 1}, 0), "b": _voice(root / "vb", {"bob": 0, "eve": 1}, 1),
            "c": _voice(root / "vc", {"carl": 0}, 2), "root": root}


@pytest.fixture(scope="module")
def sources(voices):
    return [m.load_source(r, voices[r]) for r in "abc"]


def _effective(state: dict) -> dict:
    """Every weight-normed layer as its effective weight (what the network computes), computed here."""
    out = {}
    for key, value in state.items():
        if key.endswith(".weight_g"):
            continue
        if key.endswith(".weight_v"):
            g = state[key[:-2] + "_g"]
            out[key[:-9] + ".weight"] = g * value / value.norm(dim=tuple(range(1, value.dim())), keepdim=True)
        else:
            out[key] = value
    return out


def _raw(folder: Path) -> dict:
    return _effective(read_checkpoint(next(models_dir(folder).glob("G_*.pth")))["model"])


GROUP_W = {"timbre": 0.9, "pitch": 0.1, "style": 0.3, "rhythm": 0.7}


def test_weighted_and_add_difference_follow_the_formula_per_component(voices, sources):
    a, b, c = (_raw(voices[r]) for r in "abc")
    merged = _effective(m.merge(sources[:2], m.Recipe("weighted", 0.4, dict(GROUP_W), speakers="a")))
    seen = set()
    for key, value in merged.items():
        group = m.group_of(key)
        w = GROUP_W[group] if group else 0.4
        if key == "emb_g.weight":
            torch.testing.assert_close(value, a[key])  # rule "a": A's rows unchanged
            continue
        torch.testing.assert_close(value, (1 - w) * a[key] + w * b[key], atol=2e-6, rtol=1e-5, msg=key)
        seen.add(group)
    assert seen == {"timbre", "pitch", "style", "rhythm", None}  # enc_q (None) takes the overall weight
    assert any(k.startswith("dec.ups.") and k.endswith("weight_g") for k in m.merge(sources[:2], m.Recipe()))

    merged = _effective(m.merge(sources, m.Recipe("add_difference", 0.8, {"pitch": 0.2}, speakers="a")))
    for key in ("dec.conv_pre.weight", "flow.flows.0.pre.weight", "dec.ups.0.weight", "enc_q.proj.bias"):
        w = 0.2 if key.startswith("flow.") else 0.8
        torch.testing.assert_close(merged[key], a[key] + w * (b[key] - c[key]), atol=2e-6, rtol=1e-5)


def test_weighted_sum_and_speaker_rows_by_name(voices, sources):
    a, b, c = (_raw(voices[r]) for r in "abc")
    recipe = m.Recipe("weighted_sum", (0.5, 0.3, 0.2), {"rhythm": (1.0, 0.0, 0.0)})
    merged = _effective(m.merge(sources, recipe))
    for key in ("dec.conv_pre.weight", "enc_p.emb.weight", "sdp.pre.weight"):
        wa, wb, wc = (1.0, 0.0, 0.0) if key.startswith("sdp.") else (0.5, 0.3, 0.2)
        torch.testing.assert_close(merged[key], wa * a[key] + wb * b[key] + wc * c[key], atol=2e-6, rtol=1e-5)
    # match: A's bob with B's bob (row 0 of B) and C's first speaker carl; A's alice (not in B) with B's first (bob)
    table = merged["emb_g.weight"]
    g = "emb_g.weight"
    torch.testing.assert_close(table[1], 0.5 * a[g][1] + 0.3 * b[g][0] + 0.2 * c[g][0])
    torch.testing.assert_close(table[0], 0.5 * a[g][0] + 0.3 * b[g][0] + 0.2 * c[g][0])
    pairs = m.speaker_pairs(sources, "match")
    assert pairs == {"alice": {"b": "bob", "c": "carl"}, "bob": {"b": "bob", "c": "carl"}}


def test_slerp_properties():
    torch.manual_seed(0)
    a, b = torch.randn(8, 5), torch.randn(8, 5)
    b = b * a.norm() / b.norm()
    torch.testing.assert_close(m.slerp(a, b, 0.0), a)
    torch.testing.assert_close(m.slerp(a, b, 1.0), b)
    mid = m.slerp(a, b, 0.5)
    assert math.isclose(float(mid.norm()), float(a.norm()), rel_tol=1e-5)  # keeps the norm
    assert float(((a + b) / 2).norm()) < float(a.norm()) - 1e-3  # which a plain average loses
    angle = lambda x, y: math.acos(float(x.flatten().dot(y.flatten()) / (x.norm() * y.norm())))  # noqa: E731
    assert math.isclose(angle(a, m.slerp(a, b, 0.25)), 0.25 * angle(a, b), rel_tol=1e-4)
    torch.testing.assert_close(m.slerp(a, 2 * a, 0.3), 0.7 * a + 0.6 * a)  # parallel: the linear formula
    zero = torch.zeros(3)
    torch.testing.assert_close(m.slerp(zero, torch.ones(3), 0.5), torch.full((3,), 0.5))


def test_refusals_name_the_voice_and_the_key(voices, sources, tmp_path):
    other = _voice(tmp_path / "wide", {"x": 0}, 3, {**TINY_MODEL, "hidden_channels": 24})
    with pytest.raises(KoeError) as err:
        m.merge([sources[0], m.load_source("b", other)], m.Recipe())
    text = str(err.value)
    assert "enc_p.emb.weight is [112, 24] in voice B" in text and "[112, 16] in voice A" in text, text
    assert "hidden size is 24 in the file of voice B, 16 in voice A" in text and "same Bert-VITS2 version" in text

    b = m.load_source("b", voices["b"])
    b.state["enc_p.emb.weight"] = torch.randn(113, b.state["enc_p.emb.weight"].shape[1])
    with pytest.raises(KoeError, match=r"enc_p\.emb\.weight is \[113, 16\] in voice B .* 113 phone symbols"):
        m.merge([sources[0], b], m.Recipe())
    with pytest.raises(KoeError, match=r"emb_g\.weight is \[1, 8\] in voice C .*'id' blends row by row"):
        m.merge(sources, m.Recipe("add_difference", 1.0, speakers="id"))
    b22 = m.load_source("b", voices["b"])
    b22.version = "2.2"
    with pytest.raises(KoeError, match="voice B .* is Bert-VITS2 2.2, voice A is 2.3"):
        m.merge([sources[0], b22], m.Recipe())
    with pytest.raises(KoeError, match="slerp works between two voices"):
        m.merge(sources, m.Recipe("add_difference", 1.0, slerp=True))
    with pytest.raises(KoeError, match="merges 3 voices, 2 given"):
        m.merge(sources[:2], m.Recipe("weighted_sum", (0.3, 0.3, 0.4)))


def test_cli_writes_a_voice_that_loads_synthesizes_and_records_the_recipe(voices, sources):
    out = voices["root"] / "merged"
    argv = [sys.executable, "-m", "pipeline.merge", "--a", str(voices["a"]), "--b", str(voices["b"]),
            "--weight", "0.25", "--timbre", "0.75", "--slerp", "--out", str(out)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "KOE_PROGRESS" in done.stdout and "speaker alice: B's bob" in done.stdout
    recipe = json.loads((out / MERGE_RECIPE).read_text())
    assert recipe["method"] == "weighted" and recipe["slerp"] and recipe["groups"]["timbre"] == 0.75
    assert recipe["groups"]["pitch"] == 0.25 and recipe["sources"]["a"]["step"] == 10
    assert recipe["sources"]["b"]["sha256"] == m.file_sha256(next(models_dir(voices["b"]).glob("G_*.pth")))
    # the file is the library's merge, byte for byte in its numbers
    expected = m.merge(sources[:2], m.Recipe("weighted", 0.25, {"timbre": 0.75}, slerp=True))
    saved = read_checkpoint(models_dir(out) / "G_0.pth")["model"]
    assert saved.keys() == expected.keys()
    for key in ("dec.ups.0.weight_v", "flow.flows.0.pre.weight", "emb_g.weight"):
        torch.testing.assert_close(saved[key], expected[key])
    voice = Voice.load(out)
    assert voice.speakers == ["alice", "bob"]
    audio = voice.synthesize_phones(["_", "n", "i", "_"], [0, 3, 3, 0], "ZH", speaker="bob", seed=1)
    assert audio.size > 0 and float(abs(audio).max()) > 0
    # a second run refuses to overwrite without --overwrite, and says how
    again = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "--overwrite" in again.stderr, again.stderr
    # a usage error in the weights is named
    bad = subprocess.run(argv[:-2] + ["--method", "weighted_sum", "--weights", "0.5,0.5", "--out", str(out) + "2"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "three weights" in bad.stderr, bad.stderr


def test_22_voices_merge_and_keep_a_buffers(tmp_path):
    """Bert-VITS2 2.2 (CLAP) voices merge too; the VQ codebook buffers are A's, not averaged."""
    folders = []
    for i, name in enumerate(("a22", "b22")):
        cfg = VoiceConfig.model_validate({"version": "2.2", "data": {"n_speakers": 1, "spk2id": {"s": 0}},
                                          "model": TINY_MODEL})
        cfg.save(config_path(tmp_path / name))
        torch.manual_seed(10 + i)
        model = build_generator(cfg)
        state = {k: v + (i + 1) if k.endswith("_codebook.embed_avg") else v for k, v in model.state_dict().items()}
        save_checkpoint(models_dir(tmp_path / name) / "G_5.pth", state, epoch=1, step=5, learning_rate=2e-4)
        folders.append(tmp_path / name)
    srcs = [m.load_source(r, f) for r, f in zip("ab", folders)]
    assert srcs[0].version == "2.2"
    merged = m.merge(srcs, m.Recipe())
    key = next(k for k in merged if k.endswith("_codebook.embed_avg"))
    torch.testing.assert_close(merged[key], srcs[0].state[key])
    assert not torch.equal(merged[key], srcs[1].state[key])
    torch.testing.assert_close(merged["enc_p.emb.weight"], 0.5 * srcs[0].state["enc_p.emb.weight"]
                               + 0.5 * srcs[1].state["enc_p.emb.weight"])
