"""Per-phone BERT features for Bert-VITS2 2.3 (spec §7.6-7.8).

Per language one pretrained model read from a local folder with transformers:
ZH hfl/chinese-roberta-wwm-ext-large (BERT), JP ku-nlp/deberta-v2-large-japanese-char-wwm and
EN microsoft/deberta-v3-large (DeBERTa-v2 architecture), and for Korean-enabled voices KO klue/roberta-large
(RoBERTa, 1024-d, read one token per syllable like ZH/JP). The feature of a token is the output of
transformer layer 22 of 24 (`hidden_states[-3]`); each token row is repeated word2ph[i] times
(blank-adjusted) -> [hidden, len(phones with blanks)]. The real models have hidden = 1024; any
folder with the same architecture works (tests use tiny random ones, hidden = their hidden_size).

Models load lazily per language on first use. Many utterances run in one padded, masked forward
(`features_batch`), which gives the same numbers as one at a time.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vits.errors import HUB, KoeError, hub_download_fix, one_line_reason
from vits.text.bert_align import align_word2ph, batches, blank_word2ph, char_token_ids, join_windows, windows
from vits.text.common import Cleaned

HUB_REPOS = {
    "ZH": "hfl/chinese-roberta-wwm-ext-large",
    "JP": "ku-nlp/deberta-v2-large-japanese-char-wwm",
    "EN": "microsoft/deberta-v3-large",
    "KO": "klue/roberta-large",
}
DEFAULT_DIRS = {
    "ZH": "models/bert/chinese-roberta-wwm-ext-large",
    "JP": "models/bert/deberta-v2-large-japanese-char-wwm",
    "EN": "models/bert/deberta-v3-large",
    "KO": "models/bert/klue-roberta-large",
}
_WEIGHT_FILES = ("pytorch_model.bin", "model.safetensors", "pytorch_model.bin.index.json",
                 "model.safetensors.index.json")


def _missing_model_error(lang: str, folder: Path, what: str) -> KoeError:
    return KoeError(
        f"the {lang} BERT model ({HUB_REPOS.get(lang, '?')}) is not there: {what}",
        where=str(folder),
        fix=(f"download it: `{'KOE_KOREAN=1 ' if lang == 'KO' else ''}python -m pipeline.download bert` "
             f"(or vits.text.bert.download_bert_models()), "
             f"set HF_ENDPOINT=https://hf-mirror.com if the hub is blocked, or copy the model files into "
             f"this folder / point `bert: {lang}:` in config.yml at it"),
    )


def check_model_dir(lang: str, folder: str | os.PathLike) -> Path:
    """Return `folder` as a Path if it holds a model (config.json + weights); raise KoeError otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise _missing_model_error(lang, folder, "the folder does not exist")
    if not (folder / "config.json").is_file():
        raise _missing_model_error(lang, folder, "config.json is missing")
    if not any((folder / name).is_file() for name in _WEIGHT_FILES):
        raise _missing_model_error(lang, folder, "no weights (pytorch_model.bin or model.safetensors)")
    return folder


@dataclass
class _Loaded:
    tokenizer: object
    model: torch.nn.Module
    hidden_size: int
    max_tokens: int
    char_ids: dict = field(default_factory=dict)  # ZH/JP: character -> token id cache


class BertFeatures:
    """Phone-level BERT features from local model folders.

    Args:
        model_dirs: {"ZH": folder, "JP": folder, "EN": folder}; languages left out cannot be used.
        device: torch device for the models ("cpu", "cuda", "cuda:1").
        dtype: model dtype (float32 default; float16/bfloat16 on GPU are faster, outputs are float32).
        layer: which hidden state to take (-3 = output of layer 22 of 24, as Bert-VITS2).
        max_batch_tokens: padded tokens per forward in `features_batch`.
    """

    def __init__(self, model_dirs: dict[str, str | os.PathLike], device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, layer: int = -3, max_batch_tokens: int = 8192):
        self.model_dirs = {str(k).upper().replace("JA", "JP"): Path(v) for k, v in model_dirs.items()}
        self.device = torch.device(device)
        self.dtype = dtype
        self.layer = layer
        self.max_batch_tokens = max_batch_tokens
        self._loaded: dict[str, _Loaded] = {}
        self._lock = threading.Lock()

    # --- loading ------------------------------------------------------------------------------------

    def _get(self, lang: str) -> _Loaded:
        lang = lang.upper()
        with self._lock:
            if lang not in self._loaded:
                self._loaded[lang] = self._load(lang)
            return self._loaded[lang]

    def _load(self, lang: str) -> _Loaded:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        if lang not in self.model_dirs:
            raise KoeError(f"no BERT model folder configured for {lang}",
                           fix=f"add `bert: {lang}: <folder>` to config.yml")
        folder = check_model_dir(lang, self.model_dirs[lang])
        verbosity = hf_logging.get_verbosity()
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()  # "unused weights (MLM head)" notices are expected here
        hf_logging.disable_progress_bar()  # the library never prints
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            model = AutoModel.from_pretrained(str(folder))
        except (OSError, ValueError, RuntimeError, ImportError) as exc:
            raise KoeError(f"cannot load the {lang} BERT model ({exc})", where=str(folder),
                           fix="re-download it (python -m pipeline.download bert)") from None
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
        layers = model.encoder.layer
        keep = len(layers) + self.layer + 1 if self.layer < 0 else self.layer
        if not 0 < keep <= len(layers):
            raise KoeError(f"this BERT has {len(layers)} layers; Bert-VITS2 reads its hidden layer {self.layer}",
                           where=str(folder), fix="use the full pretrained model (python -m pipeline.download bert), "
                           "not a truncated or test copy")
        # layers after the one we read never influence it: drop them (2 of 24 saved per forward)
        model.encoder.layer = torch.nn.ModuleList(list(layers)[:keep])
        model.eval().requires_grad_(False).to(self.device, self.dtype)
        max_tokens = int(getattr(model.config, "max_position_embeddings", 512) or 512)
        if model.config.model_type in ("roberta", "xlm-roberta"):  # KO: positions start after the pad index
            max_tokens -= int(model.config.pad_token_id or 0) + 1
        return _Loaded(tokenizer, model, int(model.config.hidden_size), max_tokens)

    def hidden_size(self, language: str) -> int:
        """Feature size of `language` (1024 for the real models); loads the model."""
        return self._get(language).hidden_size

    def tokenizer(self, language: str):
        """The transformers tokenizer of `language` (e.g. to register with vits.text.en.g2p.set_tokenizer)."""
        return self._get(language).tokenizer

    # --- alignment ----------------------------------------------------------------------------------

    def token_ids(self, cleaned: Cleaned) -> list[int]:
        """Input ids (with [CLS]/[SEP]) of a segment's normalised text.

        ZH/JP/KO: one token per character, as the reference assumes; a character the tokenizer would split
        (the Japanese one turns "…" into "...") keeps its first piece.
        """
        loaded = self._get(cleaned.language)
        tok = loaded.tokenizer
        if cleaned.language == "EN":
            return list(tok(cleaned.norm_text, add_special_tokens=True)["input_ids"])

        def piece_id(char: str) -> int:
            if char not in loaded.char_ids:
                pieces = tok.tokenize(char)
                loaded.char_ids[char] = tok.convert_tokens_to_ids(pieces[0]) if pieces else tok.unk_token_id
            return loaded.char_ids[char]

        return char_token_ids(cleaned.norm_text, piece_id, tok.cls_token_id, tok.sep_token_id)

    def aligned_word2ph(self, cleaned: Cleaned, n_tokens: int | None = None) -> list[int]:
        """word2ph matching this tokenizer (before blanks); EN per-word lists are re-aligned.

        Raises KoeError when the counts cannot be matched (text stage used another tokenizer).
        """
        from vits.text.en.g2p import token_offsets

        n_tokens = n_tokens if n_tokens is not None else len(self.token_ids(cleaned))
        return align_word2ph(cleaned, n_tokens, lambda text: token_offsets(self._get("EN").tokenizer, text))

    # --- features -----------------------------------------------------------------------------------

    def style_vector(self, text: str, language: str):
        """The style vector of a style text (spec §7.7): `hidden_states[-3]` of `language`'s model averaged over
        all tokens of the text ([CLS]/[SEP] included), as a [hidden] float32 numpy array.

        The text is normalised by that language's frontend first (`vits.text.style.normalize_style_text`) and
        tokenised as the main text is. Raises KoeError when the model folder is missing.
        """
        from vits.text.style import normalize_style_text

        lang = str(language).upper()
        ids = self.token_ids(Cleaned(lang, normalize_style_text(text, lang), [], [], []))
        return self._hidden_states(self._get(lang), [ids])[0].mean(dim=0).numpy()

    def features(self, cleaned: Cleaned, add_blank: bool = True) -> torch.Tensor:
        """[hidden, T] float32 CPU features of one segment; T = 2*len(phones)+1 with add_blank.

        Raises KoeError if the model folder is missing or word2ph does not match the tokenizer.
        """
        return self.features_batch([cleaned], add_blank=add_blank)[0]

    def features_batch(self, cleaned: list[Cleaned], add_blank: bool = True) -> list[torch.Tensor]:
        """Features of many segments (any languages), batched per language in padded forwards.

        Returns one [hidden, T] float32 CPU tensor per input, in input order.
        """
        out: list[torch.Tensor | None] = [None] * len(cleaned)
        by_lang: dict[str, list[int]] = {}
        for i, c in enumerate(cleaned):
            by_lang.setdefault(c.language, []).append(i)
        for lang, indices in by_lang.items():
            loaded = self._get(lang)
            ids = [self.token_ids(cleaned[i]) for i in indices]
            word2phs = [self.aligned_word2ph(cleaned[i], len(t)) for i, t in zip(indices, ids)]
            hidden = self._hidden_states(loaded, ids)
            for i, h, w in zip(indices, hidden, word2phs):
                w = blank_word2ph(w) if add_blank else w
                counts = torch.tensor(w, dtype=torch.long)
                out[i] = torch.repeat_interleave(h, counts, dim=0).T.contiguous()
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def _hidden_states(self, loaded: _Loaded, ids: list[list[int]]) -> list[torch.Tensor]:
        """Token features [n_tokens, hidden] (float32, CPU) per id list; long inputs run in windows."""
        spans = windows(ids, loaded.max_tokens)  # (utterance, window ids)
        results: list[torch.Tensor | None] = [None] * len(spans)
        pad_id = loaded.tokenizer.pad_token_id or 0
        for batch in batches([len(seq) for _, seq in spans], self.max_batch_tokens):  # shortest first
            self._forward(loaded, [spans[j][1] for j in batch], pad_id, batch, results)
        return join_windows(len(ids), spans, results, lambda parts: torch.cat(parts, dim=0))

    def _forward(self, loaded: _Loaded, seqs: list[list[int]], pad_id: int, keys: list[int], results) -> None:
        longest = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), longest), dtype=torch.long)
        for b, s in enumerate(seqs):
            input_ids[b, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[b, :len(s)] = 1
        output = loaded.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                              output_hidden_states=True)
        hidden = output.hidden_states[-1].float().cpu()
        for b, (s, k) in enumerate(zip(seqs, keys)):
            results[k] = hidden[b, :len(s)]


def load_tokenizer(language: str, folder: str | os.PathLike):
    """Only the tokenizer of a model folder (no weights), e.g. for vits.text.en.g2p.set_tokenizer.

    Raises KoeError when the folder or its tokenizer files are missing.
    """
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise _missing_model_error(language, folder, "the folder does not exist")
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, ImportError) as exc:
        raise _missing_model_error(language, folder, f"its tokenizer cannot be loaded ({exc})") from None


def download_bert_models(languages=("ZH", "JP", "EN"), model_dirs: dict[str, str | os.PathLike] | None = None,
                         endpoint: str | None = None, force: bool = False, log=None) -> dict[str, Path]:
    """Fetch the BERT models from the Hugging Face hub (explicit call only; never at import or in tests).

    Args:
        languages: which of ZH/JP/EN to fetch.
        model_dirs: target folder per language (default `models/bert/<name>` under the working dir).
        endpoint: hub mirror, e.g. "https://hf-mirror.com"; default $HF_ENDPOINT, else the official hub.
        force: download even when the folder already holds a model.
        log: optional callable(str) for progress messages.
    Returns {language: folder}. Raises KoeError when a download fails (with the mirror hint).
    """
    from huggingface_hub import snapshot_download

    dirs = {k.upper(): Path(v) for k, v in (model_dirs or DEFAULT_DIRS).items()}
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    done: dict[str, Path] = {}
    for lang in languages:
        lang = lang.upper()
        folder = dirs.get(lang, Path(DEFAULT_DIRS[lang]))
        if not force:
            try:
                done[lang] = check_model_dir(lang, folder)
                continue
            except KoeError:
                pass
        if log:
            log(f"downloading {HUB_REPOS[lang]} to {folder} from {endpoint or 'https://huggingface.co'}")
        try:
            snapshot_download(repo_id=HUB_REPOS[lang], local_dir=str(folder), endpoint=endpoint,
                              allow_patterns=["*.json", "*.txt", "*.model", "pytorch_model.bin", "*.safetensors"],
                              ignore_patterns=["*.h5", "*.msgpack", "*.onnx", "tf_*", "flax_*", "rust_*"])
        except Exception as exc:  # network, auth and offline-mode errors all end here
            raise KoeError(f"could not download {HUB_REPOS[lang]} from {endpoint or HUB} ({one_line_reason(exc)})",
                           where=str(folder), fix=hub_download_fix(endpoint)) from None
        done[lang] = check_model_dir(lang, folder)
    return done
