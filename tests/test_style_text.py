"""Style text + weight (spec 2.3 §7.7) on every path, and one default per synthesis knob.

Per phone column the BERT features become `feat·(1−w) + mean_over_tokens(style)·w`, where `style` is
hidden_states[-3] of the style text through the BERT of the segment's language. Checked against the formula
computed here from the full transformers models, then through Voice, OnnxVoice, the CLI, a real HTTP request
and the Synthesize tab's handler, each against the library's own audio.
"""

from __future__ import annotations

import inspect
import io
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from vits.defaults import HIYORI_NOISE, HIYORI_SDP_RATIO, STUDIO_LANGUAGE, SYNTHESIS
from vits.errors import KoeError
from vits.text import clean_text
from vits.text.style import StyledBert, mix_style, normalize_style_text, styled

pytestmark = pytest.mark.torch_threads(1)  # tests/conftest.py sets and restores it per test

STYLE = "我好难过啊, 真的3次了!"   # digits: the ZH frontend spells them out before BERT reads the text
TEXT = "你好。今天很好。"
KNOBS = dict(speaker="bob", seed=3)


@pytest.fixture(scope="module")
def dirs(golden_dir):
    """Tiny random ZH/JP/EN models (hidden 32) with the real ZH/JP tokenizers."""
    from vits.text.testing import shared_tiny_models

    return shared_tiny_models(str(golden_dir / "tokenizers"), hidden=32, layers=4)


@pytest.fixture(scope="module")
def bert32(dirs):
    from vits.text.bert import BertFeatures

    return BertFeatures(dirs)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, golden_dir):
    """Voice 'tiny' (speakers alice, bob) with a 1024-wide tiny Chinese BERT; (config.yml, settings, voice, bert)."""
    from test_serve import write_tiny_voice

    from settings import load_settings
    from vits.synthesis import Voice
    from vits.text.bert import BertFeatures

    config = write_tiny_voice(tmp_path_factory.mktemp("style"), golden_dir)
    settings = load_settings(config)
    voice = Voice.load(settings.data_root / "tiny")
    return config, settings, voice, BertFeatures({"ZH": settings.bert["ZH"]})


def _reference_vector(folder, cls_name: str, text: str) -> np.ndarray:
    """hidden_states[-3] of the FULL model (all layers), averaged over every token incl. [CLS]/[SEP]."""
    import transformers

    from vits.text.bert import load_tokenizer

    model = getattr(transformers, cls_name).from_pretrained(str(folder)).eval()
    ids = load_tokenizer("XX", folder)(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-3][0]
    return hidden.mean(dim=0).double().numpy()


def test_features_equal_the_formula_per_language(bert32, dirs):
    style = "我很开心 happy"  # read as 我很开心 by the ZH frontend and as "happy" by the EN one
    assert normalize_style_text(style, "ZH") == "我很开心"
    assert normalize_style_text(style, "EN") == "happy"
    assert normalize_style_text(STYLE, "ZH") == "我好难过啊,真的三次了!"
    expected = {"ZH": _reference_vector(dirs["ZH"], "BertForMaskedLM", "我很开心"),
                "EN": _reference_vector(dirs["EN"], "DebertaV2Model", "happy")}
    for lang in ("ZH", "EN"):
        got = bert32.style_vector(style, lang)
        assert got.dtype == np.float32 and got.shape == (32,)
        assert np.abs(got - expected[lang]).max() < 1e-5, lang

    segments = clean_text("你好,Hello world!", "ZH")
    assert [s.language for s in segments] == ["ZH", "EN"]
    mixer = StyledBert(bert32, style, 0.7)
    for seg in segments:
        feat = bert32.features(seg).double().numpy()
        mixed = mixer.features(seg)
        assert mixed.dtype == torch.float32 and mixed.shape == feat.shape
        formula = feat * (1 - 0.7) + expected[seg.language][:, None] * 0.7
        assert np.abs(mixed.double().numpy() - formula).max() < 1e-5, seg.language
    assert set(mixer.vectors) == {"ZH", "EN"}  # one style vector per language, computed once
    assert mixer.vector("ZH") is mixer.vector("ZH")


def test_mix_style_exact_in_torch_and_numpy():
    gen = torch.Generator().manual_seed(0)
    feat = torch.randn(1024, 7, generator=gen)
    vec = torch.randn(1024, generator=gen)
    for w in (0.0, 0.3, 0.7, 1.0):
        got = mix_style(feat, vec.numpy(), w)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
        assert torch.equal(got, feat * (1 - w) + vec[:, None] * w)
        as_numpy = mix_style(feat.numpy(), vec, w)
        assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == np.float32
        assert np.array_equal(as_numpy, got.numpy())
    assert torch.equal(mix_style(feat, vec, 0.0), feat)
    assert torch.equal(mix_style(feat, vec, 1.0), vec[:, None].expand(-1, 7))
    for bad in (1.5, -0.1, math.nan, "lots", None, True):
        with pytest.raises(KoeError, match="style weight must be a number from 0 to 1") as info:
            mix_style(feat, vec, bad)
        assert "between 0" in info.value.fix
    with pytest.raises(KoeError, match="the style vector has 32 values"):
        mix_style(feat, torch.zeros(32), 0.5)


def test_voice_weight_zero_is_no_style_and_only_the_real_slot_is_mixed(tiny):
    _, _, voice, bert = tiny
    plain = voice.synthesize(TEXT, "ZH", bert=bert, **KNOBS)
    assert np.array_equal(voice.synthesize(TEXT, "ZH", bert=bert, style_text=STYLE, style_weight=0.0, **KNOBS), plain)
    assert np.array_equal(voice.synthesize(TEXT, "ZH", bert=bert, style_text="  ", **KNOBS), plain)
    mixed = voice.synthesize(TEXT, "ZH", bert=bert, style_text=STYLE, style_weight=0.7, **KNOBS)
    assert mixed.shape != plain.shape or not np.array_equal(mixed, plain)
    assert not np.array_equal(voice.synthesize(TEXT, "ZH", bert=bert, style_text=STYLE, style_weight=0.3, **KNOBS),
                              mixed)
    # sentence 1 equals synthesize_phones with the formula's features in the ZH slot: the filler noise of the
    # JP/EN slots is drawn as without a style (the same seed gives the same noise)
    (first, audio), _ = list(voice.stream(TEXT, "ZH", bert=bert, style_text=STYLE, **KNOBS))
    (seg,) = clean_text(first, "ZH")
    feat = bert.features(seg)
    by_hand = feat * (1 - SYNTHESIS.style_weight) + torch.from_numpy(bert.style_vector(STYLE, "ZH"))[:, None] \
        * SYNTHESIS.style_weight
    again = voice.synthesize_phones(seg.phones, seg.tones, "ZH", bert=by_hand, **KNOBS)
    assert np.array_equal(again, audio)
    with pytest.raises(KoeError, match="style weight must be a number from 0 to 1"):
        voice.synthesize(TEXT, "ZH", bert=bert, style_text=STYLE, style_weight=1.2)
    assert styled(bert, STYLE, 0.0) is bert and styled(bert, None, 0.7) is bert


def test_onnx_voice_honours_style_text(tiny, tmp_path):
    from vits.onnx_export import export_voice
    from vits.onnx_runtime import OnnxVoice

    _, settings, _, bert = tiny
    folder, _ = export_voice(settings.data_root / "tiny", out_dir=tmp_path / "onnx", verify=False)
    voice = OnnxVoice.load(folder, threads=1)
    plain = voice.synthesize("你好。", "ZH", bert=bert, **KNOBS)
    assert np.array_equal(voice.synthesize("你好。", "ZH", bert=bert, style_text=STYLE, style_weight=0.0, **KNOBS),
                          plain)
    mixed = voice.synthesize("你好。", "ZH", bert=bert, style_text=STYLE, **KNOBS)
    assert mixed.shape != plain.shape or not np.array_equal(mixed, plain)
    with pytest.raises(KoeError, match="style weight"):
        list(voice.stream("你好。", "ZH", bert=bert, style_text=STYLE, style_weight=-1))


def test_cli_style_text(tiny, tmp_path, monkeypatch, capsys):
    from pipeline.synthesize import main

    config, settings, voice, bert = tiny
    monkeypatch.setenv("KOE_CONFIG", str(config))
    out = tmp_path / "styled.wav"
    args = [str(settings.data_root / "tiny"), "--text", TEXT, "--language", "ZH", "--speaker", "bob", "--seed", "3",
            "--float", "--out", str(out), "--style-text", STYLE]
    assert main(args) == 0, capsys.readouterr().err
    audio, _ = sf.read(out, dtype="float32")
    assert np.array_equal(audio, voice.synthesize(TEXT, "ZH", bert=bert, style_text=STYLE, **KNOBS))
    assert main(args + ["--style-weight", "0.25"]) == 0
    audio, _ = sf.read(out, dtype="float32")
    assert np.array_equal(audio, voice.synthesize(TEXT, "ZH", bert=bert, style_text=STYLE, style_weight=0.25,
                                                  **KNOBS))
    capsys.readouterr()
    assert main(args + ["--style-weight", "1.5"]) == 1
    assert "error: style weight must be a number from 0 to 1, got 1.5" in capsys.readouterr().err
    assert main([str(settings.data_root / "tiny"), "--phones", "_ a _", "--tones", "0 1 0", "--style-text", STYLE,
                 "--out", str(tmp_path / "x.wav")]) == 1
    assert "--phones synthesis has none" in capsys.readouterr().err


def test_http_voice_honours_style_text_and_weight(tiny):
    import httpx
    from test_api_compat import running

    from server.audio import to_int16
    from server.routes import create_app

    _, settings, voice, bert = tiny
    query = {"text": TEXT, "language": "ZH", "speaker_name": "bob", "seed": 3}
    hiyori = dict(sdp_ratio=HIYORI_SDP_RATIO, noise_scale=HIYORI_NOISE)
    with running(create_app(settings)) as url:
        styled_r = httpx.get(f"{url}/voice", params={**query, "style_text": STYLE, "style_weight": 0.4}, timeout=120)
        assert styled_r.status_code == 200, styled_r.text
        assert "x-ignored-parameters" not in styled_r.headers
        expected = voice.synthesize(TEXT, "ZH", bert=bert, style_text=STYLE, style_weight=0.4, **hiyori, **KNOBS)
        got, _ = sf.read(io.BytesIO(styled_r.content), dtype="int16")
        assert np.array_equal(got, to_int16(expected))
        # POST JSON, the default weight (0.7, hiyoriUI's too)
        posted = httpx.post(f"{url}/voice", json={**query, "style_text": STYLE}, timeout=120)
        got, _ = sf.read(io.BytesIO(posted.content), dtype="int16")
        assert np.array_equal(got, to_int16(voice.synthesize(TEXT, "ZH", bert=bert, style_text=STYLE, **hiyori,
                                                             **KNOBS)))
        plain = httpx.get(f"{url}/voice", params=query, timeout=120)
        zero = httpx.get(f"{url}/voice", params={**query, "style_text": STYLE, "style_weight": 0}, timeout=120)
        assert zero.content == plain.content != styled_r.content
        bad = httpx.get(f"{url}/voice", params={**query, "style_text": STYLE, "style_weight": 1.5}, timeout=30)
        assert bad.status_code == 422
        assert bad.json()["error"] == "invalid parameter 'style_weight': must be between 0 and 1, got 1.5"
        huge = httpx.post(f"{url}/voice", json={**query, "style_text": "好" * 2001}, timeout=30)
        assert huge.status_code == 413 and huge.json()["error"].startswith("style_text too long: 2001 characters")


def _tab(settings):
    """The Synthesize tab built in a Blocks: (the Synthesize button's handler and inputs, components by elem_id)."""
    import gradio as gr

    from studio.app import new_registry
    from studio.tabs import Context, synthesize

    ctx = Context(settings=settings, runner=None, config_path=None)
    ctx.caches[synthesize.REGISTRY] = new_registry(settings)
    with gr.Blocks() as demo:
        ctx.voice = gr.Dropdown(["tiny"], value="tiny")
        ctx.timer = gr.Timer(60)
        synthesize.build(ctx)
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    (handler,) = [f for f in demo.fns.values() if (by_id["synth-btn"]._id, "click") in f.targets]
    return ctx, handler, by_id


def test_synthesize_tab_style_controls_reach_synthesis(tiny):
    from studio.tabs import synthesize

    _, settings, voice, bert = tiny
    ctx, handler, by_id = _tab(settings)
    assert by_id["style-weight"].value == SYNTHESIS.style_weight and by_id["style-text"].value in ("", None)
    g_path = synthesize.checkpoint_choices(ctx, "tiny")[0][1]
    values = {"checkpoint": g_path, "speaker": "bob", "synth-text": TEXT, "synth-lang": "ZH",
              "sdp-ratio": SYNTHESIS.sdp_ratio, "noise": SYNTHESIS.noise_scale, "noise-w": SYNTHESIS.noise_scale_w,
              "length": SYNTHESIS.length_scale, "pause": SYNTHESIS.pause, "seed": 3, "prompt-mode": "text",
              "emotion-text": "Happy", "emotion-audio": None, "style-text": STYLE, "style-weight": 0.4}
    args = [values.get(c.elem_id, c.value) for c in handler.inputs]  # controls added later: their defaults
    outputs = list(handler.fn(*args))
    assert "s of audio" in outputs[-1][2], outputs[-1]
    heard, _ = sf.read(outputs[-1][1], dtype="int16")
    expected = voice.synthesize(TEXT, "ZH", bert=bert, style_text=STYLE, style_weight=0.4, **KNOBS)
    from server.audio import to_int16

    assert np.abs(heard.astype(np.int32) - to_int16(expected).astype(np.int32)).max() <= 1  # soundfile's rounding
    live = np.concatenate([o[0][1] for o in outputs[:-1]])
    assert np.array_equal(live, expected)


def test_one_default_per_knob(tiny):
    """The library's defaults (Bert-VITS2's web UI values) everywhere, except the API's documented hiyoriUI ones."""
    from fastapi.testclient import TestClient

    from pipeline.synthesize import build_parser
    from server.params import AddParams, VoiceParams
    from server.routes import create_app
    from vits.onnx_runtime import OnnxVoice
    from vits.synthesis import Voice

    assert (SYNTHESIS.sdp_ratio, SYNTHESIS.noise_scale, SYNTHESIS.noise_scale_w, SYNTHESIS.length_scale,
            SYNTHESIS.pause, SYNTHESIS.style_weight, SYNTHESIS.language) == (0.5, 0.6, 0.9, 1.0, 0.2, 0.7, "ZH")
    assert (HIYORI_SDP_RATIO, HIYORI_NOISE, STUDIO_LANGUAGE) == (0.2, 0.2, "AUTO")
    library = {"sdp_ratio": SYNTHESIS.sdp_ratio, "noise_scale": SYNTHESIS.noise_scale,
               "noise_scale_w": SYNTHESIS.noise_scale_w, "length_scale": SYNTHESIS.length_scale,
               "style_weight": SYNTHESIS.style_weight, "language": SYNTHESIS.language}
    for method in (Voice.stream, Voice.synthesize, OnnxVoice.stream):
        params = inspect.signature(method).parameters
        assert {k: params[k].default for k in library} == library, method.__qualname__
    for method in (Voice.synthesize, OnnxVoice.synthesize):
        assert inspect.signature(method).parameters["pause"].default == SYNTHESIS.pause
    cli = vars(build_parser().parse_args(["v", "--text", "x", "--out", "o.wav"]))
    assert {k: cli[k] for k in [*library, "pause"]} == {**library, "pause": SYNTHESIS.pause}
    api = VoiceParams(text="x")
    assert (api.sdp_ratio, api.noise) == (HIYORI_SDP_RATIO, HIYORI_NOISE)  # hiyoriUI's, docs/api.md
    assert (api.noisew, api.length, api.pause, api.style_weight) == (
        SYNTHESIS.noise_scale_w, SYNTHESIS.length_scale, SYNTHESIS.pause, SYNTHESIS.style_weight)
    assert api.language is None and AddParams(model_path="x").language == SYNTHESIS.language
    _, settings, _, _ = tiny
    with TestClient(create_app(settings)) as client:
        spec = client.get("/openapi.json").json()
    add = {p["name"]: p["schema"].get("default") for p in spec["paths"]["/models/add"]["get"]["parameters"]}
    assert add["language"] == SYNTHESIS.language
    _, _, by_id = _tab(settings)
    studio = {k: by_id[e].value for k, e in (("sdp_ratio", "sdp-ratio"), ("noise_scale", "noise"),
                                            ("noise_scale_w", "noise-w"), ("length_scale", "length"),
                                            ("style_weight", "style-weight"), ("pause", "pause"))}
    assert studio == {**{k: v for k, v in library.items() if k != "language"}, "pause": SYNTHESIS.pause}
    assert by_id["synth-lang"].value == STUDIO_LANGUAGE
