"""Chinese polyphones read by a g2pW model (a BERT that picks one reading of a character from its context).

g2pW (Chen et al. 2022, "A Conditional Weighted Softmax BERT for Polyphone Disambiguation in Mandarin")
ships as an ONNX graph in the folder GPT-SoVITS and PaddleSpeech use (G2PWModel_1.1):

    g2pW.onnx                              inputs input_ids, token_type_ids, attention_masks [B,T] int64,
                                           phoneme_masks [B,L] float32, char_ids, position_ids [B] int64;
                                           output 0: probabilities over the L labels [B,L]
    POLYPHONIC_CHARS.txt                   "<char>\t<bopomofo><tone>" per line: the readings a char can take
    bopomofo_to_pinyin_wo_tune_dict.json   bopomofo (no tone) -> pinyin
    config.py                              training settings; we read `use_mask`, `use_char_phoneme`,
                                           `window_size` from its plain assignments (never executed)

Labels are the sorted distinct readings ("ㄏㄤ2"), or "<char> <reading>" when `use_char_phoneme`. One query
per polyphonic character: the sentence as BERT tokens ([CLS] + one token per character + [SEP]), the
index of the character in the sorted character list, its token position and the mask of its readings.
The model was trained on traditional characters; when `opencc` is installed the sentence is converted
(s2tw) for the model only, else characters are looked up as written (simplified forms that are absent
from POLYPHONIC_CHARS.txt are then left to the dictionary). The tokenizer is the Chinese BERT's (same
vocabulary as bert-base-chinese).

Used behind the dictionary: `vits.text.zh.g2p` takes the model's reading for polyphonic characters, then
the user dictionary and our phrase/part-of-speech rules (`vits.text.zh.polyphones`) still override it.
Enabled by `text.zh_polyphones: g2pw` in config.yml (settings.py); `python -m pipeline.download g2pw`
fetches the folder (with a mirror for users in China).
"""

from __future__ import annotations

import ast
import json
import os
import threading
from pathlib import Path

import numpy as np

from vits.errors import KoeError

ONNX_FILE = "g2pW.onnx"
CHARS_FILE = "POLYPHONIC_CHARS.txt"
PINYIN_FILE = "bopomofo_to_pinyin_wo_tune_dict.json"
CONFIG_FILE = "config.py"
INPUTS = ("input_ids", "token_type_ids", "attention_masks", "phoneme_masks", "char_ids", "position_ids")
# Read by tone sandhi rules, never by the model (一/不 change tone with the next syllable).
_SANDHI_CHARS = set("一不")
MODES = ("rules", "g2pw")
_LOCK = threading.Lock()
_MODEL: G2PW | None = None
_PENDING: tuple[Path, Path] | None = None  # (folder, bert_dir) of a configured model not loaded yet


def _missing(folder: Path, what: str) -> KoeError:
    return KoeError(f"the g2pW polyphone model is incomplete: {what}", where=str(folder),
                    fix="run `python -m pipeline.download g2pw` (add --endpoint for a mirror), or set "
                        "text.zh_polyphones: rules in config.yml")


def read_config(path: Path) -> dict:
    """The literal top-level assignments of g2pW's config.py (the file is parsed, never executed)."""
    out: dict = {}
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        raise KoeError(f"cannot read g2pW config ({type(exc).__name__}: {exc})", where=str(path),
                       fix="download the model folder again: python -m pipeline.download g2pw") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue  # computed values (paths, dicts of callables) are training-only
    return out


def _read_chars(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or len(parts[0]) != 1 or not parts[1][-1:].isdigit():
            raise KoeError(f"bad line {line!r} (expected <char><TAB><bopomofo><tone>)", where=f"{path}:{number}",
                           fix="download the model folder again: python -m pipeline.download g2pw")
        pairs.append((parts[0], parts[1]))
    return pairs


class G2PW:
    """A loaded g2pW folder; `readings(sentence)` gives {index: TONE3 pinyin} for its polyphonic characters."""

    def __init__(self, folder: str | os.PathLike, tokenizer, threads: int | None = 1):
        folder = Path(folder)
        for name in (ONNX_FILE, CHARS_FILE, PINYIN_FILE):
            if not (folder / name).is_file():
                raise _missing(folder, f"{name} is missing")
        config = read_config(folder / CONFIG_FILE) if (folder / CONFIG_FILE).is_file() else {}
        self.folder = folder
        self.use_mask = bool(config.get("use_mask", True))
        self.window_size = config.get("window_size")
        pairs = _read_chars(folder / CHARS_FILE)
        if config.get("use_char_phoneme", False):
            names = [f"{c} {p}" for c, p in pairs]
        else:
            names = [p for _c, p in pairs]
        self.labels = sorted(set(names))
        index = {label: i for i, label in enumerate(self.labels)}
        self.char_readings: dict[str, list[int]] = {}
        for (char, _p), name in zip(pairs, names):
            self.char_readings.setdefault(char, []).append(index[name])
        self.chars = sorted(self.char_readings)
        self._char_id = {c: i for i, c in enumerate(self.chars)}
        self.bopomofo = json.loads((folder / PINYIN_FILE).read_text(encoding="utf-8"))
        self.tokenizer = tokenizer
        self._converter = _opencc()
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(folder / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise _missing(folder, f"{ONNX_FILE} cannot be loaded ({type(exc).__name__}: {exc})") from None
        names = {i.name for i in self.session.get_inputs()}
        if not set(INPUTS) <= names:
            raise _missing(folder, f"{ONNX_FILE} has inputs {sorted(names)}, expected {list(INPUTS)}")

    @classmethod
    def load(cls, folder: str | os.PathLike, bert_dir: str | os.PathLike) -> G2PW:
        """Open a g2pW folder with the tokenizer of the Chinese BERT folder. Raises KoeError naming the gap."""
        from vits.text.bert import load_tokenizer

        return cls(folder, load_tokenizer("ZH", bert_dir))

    def _model_text(self, sentence: str) -> str:
        if self._converter is None:
            return sentence
        converted = self._converter.convert(sentence)
        if len(converted) != len(sentence):  # phrase conversion changed the length: convert per character
            converted = "".join(self._converter.convert(c) or c for c in sentence)
        return converted if len(converted) == len(sentence) else sentence

    def queries(self, sentence: str) -> list[int]:
        """Indexes of `sentence` the model decides (characters with two or more readings, not 一/不)."""
        text = self._model_text(sentence)
        return [i for i, c in enumerate(text)
                if c in self.char_readings and len(self.char_readings[c]) > 1 and sentence[i] not in _SANDHI_CHARS]

    def _window(self, text: str, index: int) -> tuple[str, int]:
        if not self.window_size:
            return text, index
        half = int(self.window_size) // 2
        start = max(0, index - half)
        return text[start:min(len(text), index + half)], index - start

    def _token_ids(self, text: str) -> list[int]:
        unk = self.tokenizer.unk_token_id
        ids = self.tokenizer.convert_tokens_to_ids(list(text.lower()))
        return [unk if i is None else int(i) for i in ids]

    def readings(self, sentence: str) -> dict[int, str]:
        """{index in sentence: TONE3 pinyin ("hang2")} for each polyphonic character, in one batch."""
        text = self._model_text(sentence)
        positions = self.queries(sentence)
        if not positions:
            return {}
        rows = []
        for index in positions:
            window, local = self._window(text, index)
            ids = [self.tokenizer.cls_token_id] + self._token_ids(window) + [self.tokenizer.sep_token_id]
            rows.append((ids, local, text[index]))
        width = max(len(ids) for ids, _l, _c in rows)
        batch = len(rows)
        input_ids = np.zeros((batch, width), np.int64)
        attention = np.zeros((batch, width), np.int64)
        masks = np.zeros((batch, len(self.labels)), np.float32)
        for b, (ids, _local, char) in enumerate(rows):
            input_ids[b, :len(ids)] = ids
            attention[b, :len(ids)] = 1
            if self.use_mask:
                masks[b, self.char_readings[char]] = 1.0
            else:
                masks[b] = 1.0
        feeds = {"input_ids": input_ids, "token_type_ids": np.zeros_like(input_ids), "attention_masks": attention,
                 "phoneme_masks": masks,
                 "char_ids": np.array([self._char_id[c] for _i, _l, c in rows], np.int64),
                 "position_ids": np.array([local + 1 for _i, local, _c in rows], np.int64)}  # +1: [CLS]
        with _LOCK:
            probs = self.session.run(None, feeds)[0]
        out = {}
        for b, index in enumerate(positions):
            allowed = self.char_readings[rows[b][2]]
            best = max(allowed, key=lambda k: probs[b, k])  # never a reading the character cannot take
            pinyin = self.to_pinyin(self.labels[best].split(" ")[-1])
            if pinyin:
                out[index] = pinyin
        return out

    def to_pinyin(self, reading: str) -> str | None:
        """"ㄏㄤ2" -> "hang2" (None when the bopomofo is unknown to the folder's table)."""
        body, tone = reading[:-1], reading[-1]
        pinyin = self.bopomofo.get(body)
        return f"{pinyin}{tone}" if pinyin else None


def _opencc():
    try:
        from opencc import OpenCC
    except ImportError:
        return None
    try:
        return OpenCC("s2tw")
    except Exception:  # a broken install: read characters as written
        return None


def set_model(model: G2PW | None) -> None:
    """Register the process's polyphone model for `vits.text.zh.g2p` (None = dictionary and rules only)."""
    global _MODEL, _PENDING
    _MODEL, _PENDING = model, None


def configure(mode: str, folder: str | os.PathLike, bert_dir: str | os.PathLike) -> None:
    """Apply config.yml's `text.zh_polyphones` ("rules" or "g2pw") for this process.

    "g2pw" checks the folder now (KoeError naming the missing file and the download command) and loads the
    model when the first Chinese sentence needs it, so stages that read no Chinese pay nothing.
    """
    global _PENDING
    if mode not in MODES:
        raise KoeError(f"unknown text.zh_polyphones {mode!r}", where="config.yml",
                       fix=f"use one of {', '.join(MODES)}")
    set_model(None)
    if mode == "g2pw":
        folder = Path(folder)
        for name in (ONNX_FILE, CHARS_FILE, PINYIN_FILE):
            if not (folder / name).is_file():
                raise _missing(folder, f"{name} is missing")
        _PENDING = (folder, Path(bert_dir))


def describe() -> str:
    """What reads Chinese polyphones in this process ("rules", or "g2pw <onnx size> <mtime>"), for stages
    that skip work when nothing changed: switching the model must rebuild the phones."""
    folder = _MODEL.folder if _MODEL is not None else (_PENDING[0] if _PENDING is not None else None)
    if folder is None:
        return "rules"
    stat = (folder / ONNX_FILE).stat()
    return f"g2pw {stat.st_size} {stat.st_mtime_ns}"


def current_model() -> G2PW | None:
    """The registered model (loading a configured one on first use), or None."""
    global _MODEL, _PENDING
    if _MODEL is None and _PENDING is not None:
        with _LOCK:
            if _MODEL is None and _PENDING is not None:
                _MODEL = G2PW.load(*_PENDING)
                _PENDING = None
    return _MODEL
