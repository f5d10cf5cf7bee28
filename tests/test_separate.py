"""Vocal separation (prep/separate.py) on a random-weight MDX-Net of UVR's architecture and IO (helpers_mdx.py).

No separation weights ship in a package, so these tests build the network themselves: shapes and lengths
for mono and stereo, streaming equal to the whole-file result whatever the block sizes, chunk overlaps
that leave no seam (the chunked result equals one chunk spanning the whole file), true stereo read from
files, bounded memory on a long file, the CLI (voice and single-file forms, with the model at its default
place under the models folder) and the download from a stand-in hub mirror.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
from helpers_mdx import REAL, REAL_DIMS_SMALL, TINY, make_mdx_onnx
from onnx import TensorProto, helper

from pipeline import clean as clean_cli
from prep.audio import iter_audio, load_audio, resample
from prep.separate import DEFAULT_MODEL, SEPARATOR_REPO, MdxParams, Separator, missing_model_error, model_path
from vits.errors import KoeError
from vits.voice_folder import clean_path

ROOT = Path(__file__).resolve().parent.parent
ALL_BINS = MdxParams(n_fft=256, hop=64, dim_f=129, dim_t=32, sample_rate=44100, compensate=1.0, cut_bins=0)
SEAM = replace(TINY, dim_t=128)  # kept middles of 7872 samples: room for an interior far from the chunk edges
WHOLE = replace(TINY, dim_t=512)  # one chunk spanning the whole test signal


def _identity_model(path, p: MdxParams):
    shape = ["batch", 4, p.dim_f, p.dim_t]
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "mdx_identity",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def _stereo(n: int, seed: int = 0) -> np.ndarray:
    """Two different channels: tones plus a little noise, so every STFT bin carries something."""
    t = np.arange(n) / 44100
    rng = np.random.default_rng(seed)
    tones = np.stack([0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 530 * t + 1),
                      0.25 * np.sin(2 * np.pi * 330 * t) + 0.1 * np.sin(2 * np.pi * 1710 * t)])
    return (tones + 0.05 * rng.standard_normal((2, n))).astype(np.float32)


def _run(sep: Separator, x: np.ndarray, blocks: list[int] | None = None) -> np.ndarray:
    edges = np.cumsum([0, *(blocks or [x.shape[-1]])])
    return np.concatenate(list(sep.stream(x[..., a:b] for a, b in zip(edges[:-1], edges[1:]))), axis=-1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The random-weight MDX-Net exported at three chunk lengths (same weights) and at the real dims."""
    root = tmp_path_factory.mktemp("mdx")
    return {"tiny": make_mdx_onnx(root / "tiny.onnx", TINY), "seam": make_mdx_onnx(root / "seam.onnx", SEAM),
            "whole": make_mdx_onnx(root / "whole.onnx", WHOLE),
            "real": make_mdx_onnx(root / DEFAULT_MODEL, REAL, **REAL_DIMS_SMALL)}


# --- the chunking itself, on an identity graph -------------------------------------------------------------

@pytest.mark.parametrize("blocks", [[5000], [1, 999, 3000, 17, 983], [700] * 10])
def test_identity_model_gives_the_input_back_without_seams(tmp_path, blocks):
    sep = Separator(_identity_model(tmp_path / "id.onnx", ALL_BINS), ALL_BINS)
    x = _stereo(sum(blocks))
    out = _run(sep, x, blocks)
    assert out.shape == x.shape
    assert np.max(np.abs(out - x)) < 1e-4


def test_lowest_bins_are_cut_before_the_model_as_uvr_does(tmp_path):
    p = replace(ALL_BINS, cut_bins=3)  # bins 0-2 at n_fft 256: below 517 Hz
    sep = Separator(_identity_model(tmp_path / "id.onnx", p), p)
    t = np.arange(20000) / 44100
    low, high = np.sin(2 * np.pi * 200 * t), np.sin(2 * np.pi * 3000 * t)
    out = sep.separate((0.4 * low + 0.3 * high + 0.2).astype(np.float32), 44100)  # DC + a low and a high tone
    mid = slice(2000, 18000)
    assert np.abs(out[mid] - 0.3 * high[mid]).max() < 0.02  # the high tone passes, the DC and 200 Hz do not


def test_mono_stays_mono_and_keeps_its_length(tmp_path):
    sep = Separator(_identity_model(tmp_path / "id.onnx", ALL_BINS), ALL_BINS)
    x = np.sin(np.arange(3333) / 7.0).astype(np.float32)
    out = sep.separate(x, 44100)
    assert out.shape == x.shape and np.max(np.abs(out - x)) < 1e-4


def test_default_overlap_keeps_chunks_on_one_frame_grid(models):
    for p, path in ((TINY, models["tiny"]), (REAL, models["real"])):
        sep = Separator(path, p)
        assert sep.step % p.hop == 0 and 0.2 * sep.keep <= sep.overlap <= 0.3 * sep.keep
    real = Separator(models["real"])  # parameters looked up by the file name
    assert (real.params, real.keep, real.step, real.overlap) == (REAL, 253440, 189440, 64000)


# --- the random-weight MDX-Net ----------------------------------------------------------------------------

def test_shapes_and_lengths_for_mono_stereo_and_more_channels(models):
    sep = Separator(models["tiny"], TINY)
    for n in (1, 1000, 1984, 12345):
        stereo = _stereo(n)
        assert _run(sep, stereo).shape == (2, n)
        assert _run(sep, stereo[0]).shape == (n,)
        assert _run(sep, np.concatenate([stereo, stereo[:1]])).shape == (2, n)  # 3 channels: the first two
    y = sep.separate(_stereo(22050)[0], 22050)  # other rates are resampled there and back
    assert y.shape == (22050,) and y.dtype == np.float32 and np.isfinite(y).all()
    x = _stereo(5000)
    out = _run(sep, x)
    assert np.std(out) > 1e-3 and np.abs(out - x).max() > 0.1  # a real network, not a pass-through


@pytest.mark.parametrize("blocks", [[1, 1983, 1, 5000, 17, 998], [1280] * 7, [64] * 140])
def test_streaming_in_any_blocks_equals_the_whole_file_result(models, blocks):
    sep = Separator(models["tiny"], TINY)
    x = _stereo(sum(blocks), seed=3)
    whole = _run(sep, x)
    assert np.array_equal(_run(sep, x, blocks), whole)
    assert np.array_equal(_run(sep, x[1], blocks), _run(sep, x[1]))


def test_chunk_overlaps_leave_no_seam_the_result_equals_one_chunk_over_the_whole_signal(models):
    x = _stereo(30000, seed=1)
    whole = _run(Separator(models["whole"], WHOLE), x)  # one 32448-sample middle: no chunk boundary at all
    sep = Separator(models["seam"], SEAM)
    assert sep.keep < 10000 and sep.overlap > 1000  # four chunks, three crossfades
    err = np.abs(_run(sep, x) - whole).max(axis=0) / np.sqrt(np.mean(whole ** 2))
    pos = np.arange(x.shape[1])
    in_fade = (pos % sep.step < sep.overlap) & (pos >= sep.step)
    joins = [j for s in range(sep.step, x.shape[1], sep.step) for j in (s, s + sep.overlap - 1) if j < len(pos)]
    assert err[~in_fade].max() < 1e-4  # away from the crossfades: identical to the one-chunk result
    assert err[joins].max() < 2e-3  # where a crossfade begins and ends: continuous, no step
    assert err[in_fade].max() < 0.1  # inside: both chunks' edges blend, within 10 % of the level
    # Chunks butted without a crossfade join two ends that saw padding: a seam this test does see.
    butted = Separator(models["seam"], SEAM, overlap=0)
    assert butted.overlap == 0 and np.abs(_run(butted, x) - whole).max() > 0.5 * np.sqrt(np.mean(whole ** 2))
    # An overlap that would put chunks off the hop grid is rounded up onto it.
    assert Separator(models["seam"], SEAM, overlap=500).step % SEAM.hop == 0


def test_stereo_files_are_separated_left_and_right(models, tmp_path):
    sep = Separator(models["tiny"], TINY)
    x = _stereo(9000, seed=2)
    sf.write(tmp_path / "st.wav", x.T, 44100, subtype="FLOAT")
    sf.write(tmp_path / "st22.wav", resample(x, 44100, 22050).T, 22050, subtype="FLOAT")
    both = np.concatenate(list(sep.stream_file(tmp_path / "st.wav", downmix=False, block_frames=777)), axis=1)
    assert np.array_equal(both, _run(sep, x))  # the model saw the real left and right channels
    mixed = np.concatenate(list(sep.stream_file(tmp_path / "st.wav", block_frames=777)))
    assert np.allclose(mixed, both.mean(axis=0), atol=1e-7)
    assert np.abs(mixed - _run(sep, x.mean(axis=0))).max() > 0.01  # not the same as separating the downmix
    at22 = np.concatenate(list(sep.stream_file(tmp_path / "st22.wav", downmix=False, block_frames=1000)), axis=1)
    src22, _, _ = load_audio(tmp_path / "st22.wav", sample_rate=44100, mono=False)
    assert at22.shape == (2, src22.shape[1]) and np.allclose(at22, _run(sep, src22), atol=1e-5)
    sf.write(tmp_path / "m.wav", x[0], 44100, subtype="FLOAT")
    mono = np.concatenate(list(sep.stream_file(tmp_path / "m.wav", downmix=False)))
    assert mono.ndim == 1 and np.array_equal(mono, _run(sep, x[0]))


def test_iter_audio_keeps_channels_when_asked_and_its_mono_default_is_unchanged(tmp_path):
    x = _stereo(23456, seed=4)
    sf.write(tmp_path / "st.wav", x.T, 22050, subtype="FLOAT")
    for rate in (None, 44100, 16000):
        whole, _, _ = load_audio(tmp_path / "st.wav", sample_rate=rate, mono=False)
        blocks = list(iter_audio(tmp_path / "st.wav", rate, block_frames=1000, mono=False))
        assert all(b.ndim == 2 and b.shape[0] == 2 for b in blocks)
        assert np.array_equal(np.concatenate(blocks, axis=1), whole)
        mono, _, _ = load_audio(tmp_path / "st.wav", sample_rate=rate)
        assert np.array_equal(np.concatenate(list(iter_audio(tmp_path / "st.wav", rate, block_frames=1000))), mono)


PEAK_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    sys.path.insert(0, "tests")
    from dataclasses import replace
    from helpers_mdx import TINY
    from prep.separate import Separator

    model, short, long = sys.argv[1:4]
    sep = Separator(model, replace(TINY, dim_t=128))
    frames = sum(b.shape[-1] for b in sep.stream_file(short, downmix=False))  # onnxruntime and soxr warm
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    frames = sum(b.shape[-1] for b in sep.stream_file(long, downmix=False))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_mb": (peak - base) / 1024, "frames": frames}))
""")


def test_separating_a_long_stereo_file_keeps_memory_flat(models, tmp_path):
    sound = (np.clip(_stereo(44100).T, -1, 1) * 32767).astype("<i2")
    sf.write(tmp_path / "short.wav", sound, 44100, subtype="PCM_16")
    # Three minutes of 44.1 kHz stereo 16-bit, written sparsely (a second of sound, then silence). Held whole as
    # float32 it is 64 MB, its vocals another 64 MB; streamed, memory holds a chunk and a decoded block.
    frames, width = 3 * 60 * 44100, 4
    with open(tmp_path / "long.wav", "wb") as f:
        f.write(b"RIFF" + (36 + width * frames).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little"))
        f.write((1).to_bytes(2, "little") + (2).to_bytes(2, "little") + (44100).to_bytes(4, "little")
                + (44100 * width).to_bytes(4, "little") + width.to_bytes(2, "little") + (16).to_bytes(2, "little"))
        f.write(b"data" + (width * frames).to_bytes(4, "little") + sound.tobytes())
        f.truncate(44 + width * frames)
    proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(models["seam"]), str(tmp_path / "short.wav"),
                           str(tmp_path / "long.wav")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["frames"] == frames
    assert report["growth_mb"] < 40, report


# --- the CLI ----------------------------------------------------------------------------------------------

def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "config.yml"
    cfg.write_text(f"models_dir: {tmp_path / 'models'}\n", encoding="utf-8")
    return cfg


def _expected_clean(sep: Separator, src: Path) -> np.ndarray:
    """What the clean stage must write for `src`: its vocals (real channels, then downmixed), at 48 kHz, 16-bit."""
    import soxr

    back = soxr.ResampleStream(44100, 48000, 1, dtype="float32", quality="VHQ")
    parts = [back.resample_chunk(b) for b in sep.stream_file(src)]
    y = np.concatenate([*parts, back.resample_chunk(np.zeros(0, np.float32), last=True)])
    return np.clip(np.round(y.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def test_cli_separates_a_voice_with_the_model_at_its_default_place(models, tmp_path):
    cfg = _config(tmp_path)
    target = model_path(tmp_path / "models")
    target.parent.mkdir(parents=True)
    target.write_bytes(models["real"].read_bytes())  # real dims and name: the MODELS entry's parameters apply
    voice = tmp_path / "Data" / "v"
    (voice / "raw" / "alice").mkdir(parents=True)
    sf.write(voice / "raw" / "alice" / "a.wav", _stereo(2 * 44100).T, 44100, subtype="PCM_16")
    sf.write(voice / "raw" / "alice" / "b.flac", resample(_stereo(30000)[1], 44100, 22050), 22050)
    env = {**os.environ, "KOE_CONFIG": str(cfg)}
    proc = subprocess.run([sys.executable, "-m", "pipeline.clean", str(voice), "--separate", "--config", str(cfg)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    manifest = json.loads((voice / "clean.json").read_text(encoding="utf-8"))
    assert {k: (v["steps"], v["error"]) for k, v in manifest.items()} == {
        "raw/alice/a.wav": (["separate"], None), "raw/alice/b.flac": (["separate"], None)}
    sep = Separator(target)
    for name, seconds in (("a.wav", 2.0), ("b.flac", 30000 / 44100)):
        raw = voice / "raw" / "alice" / name
        out, rate = sf.read(clean_path(voice, raw), dtype="int16")
        assert rate == 48000 and out.ndim == 1 and abs(len(out) / 48000 - seconds) < 2e-3
        assert np.abs(out.astype(np.int32) - _expected_clean(sep, raw)).max() <= 1
    again = subprocess.run([sys.executable, "-m", "pipeline.clean", str(voice), "--separate", "--config", str(cfg)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "2 recordings cleaned" in again.stdout + again.stderr


def test_cli_single_file_form_and_the_missing_model_error(models, tmp_path, capsys):
    cfg = _config(tmp_path)
    src = tmp_path / "in.wav"
    sf.write(src, _stereo(50000).T, 44100, subtype="PCM_16")
    assert clean_cli.main(["--input", str(src), "--output", str(tmp_path / "out.wav"), "--separate",
                           "--config", str(cfg)]) == 1  # no model yet
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(model_path(tmp_path / "models")) in err
    assert "python -m pipeline.download separator" in err and not (tmp_path / "out.wav").exists()
    assert clean_cli.main(["--input", str(src), "--output", str(tmp_path / "o" / "out.wav"), "--separate",
                           "--separator-model", str(models["real"])]) == 0
    out, rate = sf.read(tmp_path / "o" / "out.wav", dtype="int16")
    assert rate == 48000 and len(out) == round(50000 * 48000 / 44100)
    assert np.abs(out.astype(np.int32) - _expected_clean(Separator(models["real"]), src)).max() <= 1


def test_missing_model_names_the_file_and_the_download_command(tmp_path):
    with pytest.raises(KoeError) as exc:
        Separator(tmp_path / "separator" / "UVR-MDX-NET-Voc_FT.onnx")
    text = str(exc.value)
    assert "UVR-MDX-NET-Voc_FT.onnx" in text and "python -m pipeline.download separator" in text
    assert str(missing_model_error(tmp_path / "x.onnx")).startswith(str(tmp_path / "x.onnx"))


def test_a_model_of_other_dims_is_refused_with_its_shape(models, tmp_path):
    with pytest.raises(KoeError) as exc:
        Separator(models["tiny"], REAL)
    assert "[batch, 4, 3072, 256]" in str(exc.value) and str(models["tiny"]) in str(exc.value)


# --- the download, from a stand-in hub mirror -------------------------------------------------------------

def _download(tmp_path: Path, endpoint: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_ENDPOINT", "KOE_CONFIG")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")
    return subprocess.run([sys.executable, "-m", "pipeline.download", "separator", "--endpoint", endpoint,
                           "--config", str(_config(tmp_path))], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_download_from_a_mirror_lands_the_model_where_clean_looks(models, tmp_path):
    from test_download_mirror import StandInHub

    served = models["real"].read_bytes()
    hub = StandInHub({SEPARATOR_REPO: {DEFAULT_MODEL: served, "Kim_Vocal_2.onnx": b"not wanted",
                                       "README.md": b"not wanted"}})
    try:
        proc = _download(tmp_path, hub.url)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        target = model_path(tmp_path / "models")
        assert target.read_bytes() == served and sorted(p.name for p in target.parent.iterdir()) == [DEFAULT_MODEL]
        fetched = hub.downloads()
        assert fetched and all(p.startswith(f"/{SEPARATOR_REPO}/resolve/") and p.endswith(f"/{DEFAULT_MODEL}")
                               for p in fetched)  # only the model file
        Separator(target)  # loads with the default model's parameters
        before = len(hub.requests)
        again = _download(tmp_path, hub.url)
        assert again.returncode == 0 and "already there" in again.stdout and len(hub.requests) == before
    finally:
        hub.httpd.shutdown()


def test_download_of_an_unusable_file_fails_and_leaves_nothing_in_place(tmp_path):
    from test_download_mirror import StandInHub

    hub = StandInHub({SEPARATOR_REPO: {DEFAULT_MODEL: b"an html error page, not a model"}})
    try:
        proc = _download(tmp_path, hub.url)
    finally:
        hub.httpd.shutdown()
    assert proc.returncode == 1
    [error] = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]  # the rest: hub progress
    assert f"the downloaded {DEFAULT_MODEL} is not usable" in error and "InvalidProtobuf" in error
    assert "run the command again" in error and not model_path(tmp_path / "models").exists()
    assert not (model_path(tmp_path / "models").parent / ".download").exists()  # the bad file is removed too
