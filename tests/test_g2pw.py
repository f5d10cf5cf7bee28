"""The g2pW polyphone model behind the Chinese dictionary, on a stand-in graph with g2pW's inputs and outputs.

No real g2pW weights can be fetched here, so the test builds a tiny ONNX graph with the same six inputs and
the same output (probabilities over the labels, masked by the character's readings). Its weights are set
by hand so that the reading depends on the token after the character: 行 before 业/长 is hang2, else
xing2 (the model sees the s2tw text, hence 業 in the rule) (and, wrongly on purpose, before 人: so the test sees the model win over pypinyin); 地 before 走/跑 is de5, else di4. That checks what our runtime must get right for the real model:
label order, the char id, the token position (+1 for [CLS]), the reading mask, traditional conversion,
bopomofo to pinyin, and that our phrase rules and the user dictionary still override the model.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from vits.text import clean_text  # noqa: E402
from vits.text.userdict import UserDict  # noqa: E402
from vits.text.zh import g2pw  # noqa: E402

READINGS = [("行", "ㄒㄧㄥ2"), ("行", "ㄏㄤ2"), ("地", "ㄉㄧ4"), ("地", "ㄉㄜ5"), ("長", "ㄔㄤ2"), ("長", "ㄓㄤ3")]
BOPOMOFO = {"ㄒㄧㄥ": "xing", "ㄏㄤ": "hang", "ㄉㄧ": "di", "ㄉㄜ": "de", "ㄔㄤ": "chang", "ㄓㄤ": "zhang"}


class _StandIn(torch.nn.Module):
    """logits = bias[label] + rule[next token, label]; probs = softmax restricted to the mask (as g2pW)."""

    def __init__(self, rule: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.register_buffer("rule", rule)
        self.register_buffer("bias", bias)

    def forward(self, input_ids, token_type_ids, attention_masks, phoneme_masks, char_ids, position_ids):
        rows = torch.arange(input_ids.shape[0])
        following = input_ids[rows, position_ids + 1]
        logits = self.bias.unsqueeze(0) + self.rule[following] + (token_type_ids.sum() + attention_masks.sum()
                                                                    + char_ids.sum()) * 0.0
        weights = torch.exp(logits - logits.max(dim=1, keepdim=True).values) * phoneme_masks
        return weights / weights.sum(dim=1, keepdim=True)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, golden_dir):
    from vits.text.bert import load_tokenizer

    tokenizer = load_tokenizer("ZH", golden_dir / "tokenizers" / "chinese-roberta-wwm-ext-large")
    folder = tmp_path_factory.mktemp("g2pw")
    (folder / g2pw.CHARS_FILE).write_text("".join(f"{c}\t{r}\n" for c, r in READINGS), encoding="utf-8")
    (folder / g2pw.PINYIN_FILE).write_text(json.dumps(BOPOMOFO, ensure_ascii=False), encoding="utf-8")
    (folder / g2pw.CONFIG_FILE).write_text("use_mask = True\nuse_char_phoneme = False\nwindow_size = 32\n"
                                           "model_source = 'bert-base-chinese'\npath = os.path.join('a')\n")
    labels = sorted({r for _c, r in READINGS})
    vocab = len(tokenizer)
    rule = torch.zeros(vocab, len(labels))
    bias = torch.zeros(len(labels))
    bias[labels.index("ㄒㄧㄥ2")] = 1.0
    bias[labels.index("ㄉㄧ4")] = 1.0
    bias[labels.index("ㄔㄤ2")] = 1.0
    for after, label in (("業", "ㄏㄤ2"), ("長", "ㄏㄤ2"), ("走", "ㄉㄜ5"), ("跑", "ㄉㄜ5"), ("大", "ㄓㄤ3"), ("人", "ㄏㄤ2")):
        rule[tokenizer.convert_tokens_to_ids(after), labels.index(label)] = 5.0
    names = list(g2pw.INPUTS)
    example = (torch.tensor([[101, 1, 2, 102]]), torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.long),
               torch.ones(1, len(labels)), torch.tensor([0]), torch.tensor([1]))
    torch.onnx.export(_StandIn(rule, bias), example, str(folder / g2pw.ONNX_FILE), input_names=names,
                      output_names=["probs"], dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names[:3]}
                      | {"phoneme_masks": {0: "batch"}, "char_ids": {0: "batch"}, "position_ids": {0: "batch"}},
                      opset_version=17, dynamo=False)
    return folder, golden_dir / "tokenizers" / "chinese-roberta-wwm-ext-large"


@pytest.fixture
def model(model_dir):
    folder, bert_dir = model_dir
    loaded = g2pw.G2PW.load(folder, bert_dir)
    g2pw.set_model(loaded)
    yield loaded
    g2pw.set_model(None)


def _pinyin(text: str, user_dict=None) -> list[str]:
    (seg,) = clean_text(text, "ZH", user_dict=user_dict)
    phones, tones = seg.phones[1:-1], seg.tones[1:-1]
    return [f"{phones[i]}{phones[i + 1]}{tones[i]}" for i in range(0, len(phones), 2) if phones[i] not in "，。！？、,.!?"]


def test_the_model_decides_by_context(model):
    # labels sorted, the char ids of the sorted chars, the token right after the query (position + 1)
    assert model.labels == sorted({r for _c, r in READINGS})
    assert model.chars == ["地", "行", "長"]
    assert model.readings("银行业") == {1: "hang2"}
    assert model.readings("行走") == {0: "xing2"}
    assert model.readings("慢慢地走") == {2: "de5"}
    assert model.readings("土地") == {1: "di4"}
    # 长 is only listed in traditional form: found through the s2tw conversion (opencc is a dependency)
    assert model.readings("长大") == {0: "zhang3"}
    assert model.readings("长久") == {0: "chang2"}


def test_readings_reach_the_phones(model):
    assert _pinyin("他在银行业工作")[2:4] == ["yin2", "hang2"]
    assert _pinyin("他慢慢地走")[3] == "de5"
    assert _pinyin("行人")[0] == "hang2"  # the stand-in's deliberate misreading wins over pypinyin's xing2
    without = g2pw.current_model()
    g2pw.set_model(None)
    try:
        assert _pinyin("他慢慢地走")[3] == "de5"  # the particle rule gets this one without the model too
        assert _pinyin("行人")[0] == "xing2"
    finally:
        g2pw.set_model(without)


def test_dictionary_and_rules_override_the_model(model):
    # the stand-in reads 行 before 长 as hang2 and 长 as chang2 (no 大 after it); our phrase 行长 = hang2 zhang3
    assert model.readings("行长")[1] == "chang2"
    assert _pinyin("行长") == ["hang2", "zhang3"]
    user = UserDict.parse("地走\tdi4 zou3\n")
    assert _pinyin("慢慢地走", user)[2] == "di4"


def test_missing_files_say_how_to_get_them(tmp_path, golden_dir):
    with pytest.raises(g2pw.KoeError) as err:
        g2pw.G2PW.load(tmp_path, golden_dir / "tokenizers" / "chinese-roberta-wwm-ext-large")
    assert "g2pW.onnx is missing" in str(err.value) and "pipeline.download g2pw" in str(err.value)
    (tmp_path / g2pw.CHARS_FILE).write_text("行 xing2\n", encoding="utf-8")
    with pytest.raises(g2pw.KoeError, match=r"POLYPHONIC_CHARS.txt:1"):
        g2pw._read_chars(tmp_path / g2pw.CHARS_FILE)


def test_config_is_parsed_not_executed(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "config.py").write_text(f"import os\nos.mkdir({str(marker)!r})\nwindow_size = 16\n")
    assert g2pw.read_config(tmp_path / "config.py") == {"window_size": 16}
    assert not marker.exists()


def test_download_unpacks_the_zip_and_the_text_setting_uses_it(model_dir, tmp_path, monkeypatch):
    import dataclasses
    import functools
    import http.server
    import threading
    import zipfile

    from prep.g2pw_download import SOURCES, download_g2pw, g2pw_url
    from settings import load_settings

    folder, bert_dir = model_dir
    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "G2PWModel_1.1.zip", "w") as archive:
        for f in folder.iterdir():
            archive.write(f, f"G2PWModel_1.1/{f.name}")
    (served / "not-a-zip.zip").write_text("<html>proxy login</html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = tmp_path / "config.yml"
        url = f"http://127.0.0.1:{server.server_port}/G2PWModel_1.1.zip"
        config.write_text(f"text:\n  zh_polyphones: g2pw\n  g2pw_dir: models/g2pw/G2PWModel\n  g2pw_url: {url}\n"
                          f"bert:\n  ZH: {bert_dir}\n")
        settings = load_settings(config)
        with pytest.raises(g2pw.KoeError, match="pipeline.download g2pw"):
            settings.use_text_frontend()  # chosen but not downloaded: says how to get it
        from pipeline.download import main as download_cli

        assert download_cli(["g2pw", "--config", str(config)]) == 0  # the user's command
        assert (settings.g2pw_dir / g2pw.ONNX_FILE).is_file()
        lines: list[str] = []
        download_g2pw(settings, lines.append)
        assert "already there" in lines[-1]
        settings.use_text_frontend()
        try:
            assert g2pw.describe().startswith("g2pw ")
            assert _pinyin("行人")[0] == "hang2"  # the downloaded stand-in reads the text
        finally:
            g2pw.set_model(None)
        bad = dataclasses.replace(settings, g2pw_dir=tmp_path / "other", g2pw_url=url.replace("G2PWModel_1.1", "not-a-zip"))
        with pytest.raises(g2pw.KoeError, match="not a zip"):
            download_g2pw(bad)
    finally:
        server.shutdown()
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    plain = dataclasses.replace(settings, g2pw_url="", hub_endpoint="")
    assert g2pw_url(plain) == SOURCES["paddle"]
    assert g2pw_url(dataclasses.replace(plain, hub_endpoint="https://hf-mirror.com")) == SOURCES["modelscope"]
    with pytest.raises(g2pw.KoeError, match="unknown text.zh_polyphones"):
        dataclasses.replace(plain, zh_polyphones="neural").use_text_frontend()
