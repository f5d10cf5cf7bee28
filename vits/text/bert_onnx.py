"""Per-phone BERT features from ONNX graphs (`python -m pipeline.export_onnx --bert`), without torch.

`OnnxBertFeatures(folder)` reads `koe_bert.json` and, per language on first use, the graph (fp32, or the
int8-quantised copy with `int8=True`) and its `tokenizer.json` (the `tokenizers` package: neither torch nor
transformers is imported). It answers like `vits.text.bert.BertFeatures` (`features`, `features_batch`,
`style_vector`, `token_ids`, `aligned_word2ph`, `hidden_size`) with numpy arrays; the ids and the word2ph
alignment come from the same code (`vits.text.bert_align`), so the features equal BertFeatures' to float
rounding (fp32) or to the int8 error recorded in koe_bert.json.
"""

from __future__ import annotations

import json
import os
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vits.errors import KoeError
from vits.text.bert_align import align_word2ph, batches, blank_word2ph, char_token_ids, join_windows, windows
from vits.text.common import Cleaned
from vits.voice_folder import ONNX_BERT_METADATA

EXPORT_FIX = "export them: python -m pipeline.export_onnx Data/<voice> --bert (add --int8 for the int8 copy)"


@dataclass
class _Loaded:
    session: object
    tokenizer: object
    meta: dict
    char_ids: dict = field(default_factory=dict)  # character -> token id cache


class OnnxBertFeatures:
    """Phone-level BERT features from an exported BERT folder (`<onnx export>/bert`).

    Args:
        folder: the folder holding koe_bert.json and one sub-folder per language.
        int8: read the int8-quantised graphs (smaller and faster; error in koe_bert.json) instead of fp32.
        providers, threads: onnxruntime execution providers and intra-op threads.
        max_batch_tokens: padded tokens per forward in `features_batch`.
    Raises:
        KoeError when koe_bert.json is missing or unreadable, or int8 is asked of an export without it.
    """

    def __init__(self, folder: str | os.PathLike, int8: bool = False, providers: list[str] | None = None,
                 threads: int | None = None, max_batch_tokens: int = 8192):
        self.folder = Path(folder)
        meta_path = self.folder / ONNX_BERT_METADATA
        if not meta_path.is_file():
            raise KoeError(f"no exported BERT models here ({ONNX_BERT_METADATA} is missing)", where=str(self.folder),
                           fix=EXPORT_FIX)
        try:
            self.metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise KoeError(f"{ONNX_BERT_METADATA} is not valid JSON ({exc.msg})", where=f"{meta_path}:{exc.lineno}",
                           fix=EXPORT_FIX) from None
        self.int8 = bool(int8)
        self.languages: dict[str, dict] = {str(k).upper(): v for k, v in self.metadata.get("languages", {}).items()}
        if self.int8:
            missing = [lang for lang, entry in self.languages.items() if "int8" not in entry.get("graphs", {})]
            if missing:
                raise KoeError(f"this BERT export has no int8 graphs for {', '.join(missing)}", where=str(self.folder),
                               fix="export them again with --bert --int8, or use the fp32 graphs")
        self.providers = providers
        self.threads = threads
        self.max_batch_tokens = max_batch_tokens
        self._loaded: dict[str, _Loaded] = {}
        self._lock = threading.Lock()

    @property
    def kind(self) -> str:
        """"int8" or "fp32": which graphs are read."""
        return "int8" if self.int8 else "fp32"

    # --- loading ------------------------------------------------------------------------------------

    def _get(self, lang: str) -> _Loaded:
        lang = str(lang).upper().replace("JA", "JP")
        with self._lock:
            if lang not in self._loaded:
                self._loaded[lang] = self._load(lang)
            return self._loaded[lang]

    def _load(self, lang: str) -> _Loaded:
        from tokenizers import Tokenizer

        if lang not in self.languages:
            raise KoeError(f"no exported {lang} BERT model", where=str(self.folder),
                           fix=f"{EXPORT_FIX}; the export holds: {', '.join(self.languages) or 'none'}")
        meta = self.languages[lang]
        folder = self.folder / meta.get("folder", lang)
        tok_path = folder / meta.get("tokenizer", "tokenizer.json")
        try:
            tokenizer = Tokenizer.from_file(str(tok_path))
        except Exception as exc:  # tokenizers raises its own untyped errors for missing or corrupt files
            raise KoeError(f"cannot read the {lang} tokenizer ({exc})", where=str(tok_path), fix=EXPORT_FIX) from None
        graph = folder / meta["graphs"][self.kind]
        return _Loaded(self._session(graph), tokenizer, meta)

    def _session(self, graph: Path):
        import onnxruntime as ort

        if not graph.is_file():
            raise KoeError("BERT graph missing", where=str(graph), fix=EXPORT_FIX)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initializers are noise for users
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        try:
            return ort.InferenceSession(str(graph), sess_options=options,
                                        providers=self.providers or ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for corrupt files
            raise KoeError(f"onnxruntime cannot read this graph ({type(exc).__name__}: {exc})", where=str(graph),
                           fix=EXPORT_FIX) from None

    def hidden_size(self, language: str) -> int:
        """Feature size of `language` (1024 for the real models)."""
        return int(self._get(language).meta["hidden_size"])

    # --- alignment ----------------------------------------------------------------------------------

    def _piece_id(self, loaded: _Loaded, char: str) -> int:
        if char not in loaded.char_ids:
            meta, tok = loaded.meta, loaded.tokenizer
            if meta.get("mode") == "character":  # BertJapaneseTokenizer: basic tokenizer, then NFKC characters
                # its text cleaning drops what Python's unicodedata calls a control ("C*": also unassigned)
                dropped = char in "\x00\ufffd" or (unicodedata.category(char).startswith("C") and char not in "\t\n\r")
                words = [] if dropped else tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(char))
                word = words[0][0] if words else ""
                word = unicodedata.normalize("NFKC", word) if meta.get("nfkc") else word
                found = tok.token_to_id(word[0]) if word else None
                loaded.char_ids[char] = int(meta["unk_id"]) if found is None else int(found)
            else:
                ids = tok.encode(char, add_special_tokens=False).ids
                loaded.char_ids[char] = int(ids[0]) if ids else int(meta["unk_id"])
        return loaded.char_ids[char]

    def token_ids(self, cleaned: Cleaned) -> list[int]:
        """Input ids (with [CLS]/[SEP]) of a segment's normalised text, as `BertFeatures.token_ids`."""
        loaded = self._get(cleaned.language)
        if cleaned.language == "EN":
            return list(loaded.tokenizer.encode(cleaned.norm_text, add_special_tokens=True).ids)
        return char_token_ids(cleaned.norm_text, lambda c: self._piece_id(loaded, c), int(loaded.meta["cls_id"]),
                              int(loaded.meta["sep_id"]))

    def _en_offsets(self, text: str) -> list[tuple[int, int]]:
        return [tuple(o) for o in self._get("EN").tokenizer.encode(text, add_special_tokens=False).offsets]

    def aligned_word2ph(self, cleaned: Cleaned, n_tokens: int | None = None) -> list[int]:
        """word2ph matching this tokenizer (before blanks), as `BertFeatures.aligned_word2ph`. Raises KoeError."""
        n_tokens = n_tokens if n_tokens is not None else len(self.token_ids(cleaned))
        return align_word2ph(cleaned, n_tokens, self._en_offsets)

    # --- features -----------------------------------------------------------------------------------

    def style_vector(self, text: str, language: str) -> np.ndarray:
        """The style vector of a style text (spec §7.7), as `BertFeatures.style_vector`: the features of
        `language`'s model averaged over all tokens of the normalised text. A [hidden] float32 array."""
        from vits.text.style import normalize_style_text

        lang = str(language).upper()
        ids = self.token_ids(Cleaned(lang, normalize_style_text(text, lang), [], [], []))
        return self._hidden_states(self._get(lang), [ids])[0].mean(axis=0).astype(np.float32)

    def features(self, cleaned: Cleaned, add_blank: bool = True) -> np.ndarray:
        """[hidden, T] float32 features of one segment; T = 2*len(phones)+1 with add_blank. Raises KoeError."""
        return self.features_batch([cleaned], add_blank=add_blank)[0]

    def features_batch(self, cleaned: list[Cleaned], add_blank: bool = True) -> list[np.ndarray]:
        """Features of many segments (any languages), batched per language; one [hidden, T] array each."""
        out: list[np.ndarray | None] = [None] * len(cleaned)
        by_lang: dict[str, list[int]] = {}
        for i, c in enumerate(cleaned):
            by_lang.setdefault(c.language, []).append(i)
        for lang, indices in by_lang.items():
            loaded = self._get(lang)
            ids = [self.token_ids(cleaned[i]) for i in indices]
            word2phs = [self.aligned_word2ph(cleaned[i], len(t)) for i, t in zip(indices, ids)]
            for i, h, w in zip(indices, self._hidden_states(loaded, ids), word2phs):
                counts = np.asarray(blank_word2ph(w) if add_blank else w, dtype=np.int64)
                out[i] = np.ascontiguousarray(np.repeat(h, counts, axis=0).T, dtype=np.float32)
        return out  # type: ignore[return-value]

    def _hidden_states(self, loaded: _Loaded, ids: list[list[int]]) -> list[np.ndarray]:
        """Token features [n_tokens, hidden] per id list; long inputs run in windows (as BertFeatures)."""
        spans = windows(ids, int(loaded.meta["max_tokens"]))
        results: list[np.ndarray | None] = [None] * len(spans)
        pad_id = int(loaded.meta.get("pad_id", 0))
        for batch in batches([len(seq) for _, seq in spans], self.max_batch_tokens):
            seqs = [spans[j][1] for j in batch]
            longest = max(len(s) for s in seqs)
            input_ids = np.full((len(seqs), longest), pad_id, dtype=np.int64)
            mask = np.zeros((len(seqs), longest), dtype=np.int64)
            for b, s in enumerate(seqs):
                input_ids[b, :len(s)] = s
                mask[b, :len(s)] = 1
            hidden = loaded.session.run(["hidden"], {"input_ids": input_ids, "attention_mask": mask})[0]
            for b, (s, k) in enumerate(zip(seqs, batch)):
                results[k] = hidden[b, :len(s)].astype(np.float32)
        return join_windows(len(ids), spans, results, lambda parts: np.concatenate(parts, axis=0))
