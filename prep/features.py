"""BERT features of a voice: one `<clip>.bert.pt` per list line (spec §7.8); for a 2.2-CLAP voice also
one `<clip>.emo.npy` (the clip's CLAP audio embedding, 2.2 spec §8.1).

Reads filelists/train.list and val.list (the cleaned 7-field lines, via `vits.lists`), leaves files that
are already valid ([hidden, 2N+1] float32; emo: float32 [512, 1]), computes the rest in batches and saves
each atomically next to its wav. A line that cannot be used becomes a `file:line: problem` string; the
other lines are still done. With several GPUs, `run_shards` runs one worker process per GPU and merges
their progress.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vits.errors import KoeError
from vits.lists import LANGUAGES, bert_path, emo_path, parse_cleaned_line, read_cleaned_lines
from vits.progress import parse_progress
from vits.voice_folder import TRAIN_LIST, VAL_LIST, resolve_path

DEFAULT_LISTS = (TRAIN_LIST, VAL_LIST)
UTTERANCES_PER_BATCH = 32  # BERT forward batch (not the training batch size)
MAX_BATCH_TOKENS = 8192  # padded tokens per BERT forward
CLIPS_PER_CLAP_BATCH = 16  # clips per CLAP forward (each is [4, 1001, 64] mel frames)


@dataclass
class Item:
    """One list line to featurise."""

    where: str  # list file:line
    out: Path
    language: str
    norm_text: str
    phones: list[str]
    tones: list[int]
    word2ph: list[int]
    wav: Path | None = None  # the clip (the CLAP embedding is made from it)


@dataclass
class FeatureResult:
    """What `compute_features` did: files written, and `file:line: problem` for lines that failed."""

    written: int = 0
    failed: list[str] | None = None


def read_lists(voice_dir: Path, lists=DEFAULT_LISTS) -> tuple[list[Item], list[str]]:
    """Parse the list files (paths relative to the voice folder); returns (items, problems).

    A missing default list is a problem (run the text stage); a missing extra list is skipped. Duplicate
    wav paths are kept once.
    """
    voice_dir = Path(voice_dir)
    items: list[Item] = []
    problems: list[str] = []
    seen: set[Path] = set()
    for name in lists:
        path = resolve_path(voice_dir, str(name))
        if not path.is_file():
            if name in DEFAULT_LISTS:
                problems.append(f"{path}: missing (run python -m pipeline.text {voice_dir} first)")
            continue
        for where, line in read_cleaned_lines(path):
            try:
                cl = parse_cleaned_line(line, where, voice_dir)
            except KoeError as exc:
                problems.append(str(exc))
                continue
            if cl.language not in LANGUAGES:
                problems.append(f"{where}: unknown language {cl.language!r} (use ZH, JP, EN or KO)")
                continue
            if len(cl.tones) != len(cl.phones) or sum(cl.word2ph) != len(cl.phones):
                problems.append(f"{where}: {len(cl.phones)} phones, {len(cl.tones)} tones, word2ph sums to "
                                f"{sum(cl.word2ph)} (re-run python -m pipeline.text)")
                continue
            wav = resolve_path(voice_dir, cl.wav)
            out = bert_path(wav)
            if out in seen:
                continue
            seen.add(out)
            items.append(Item(where, out, cl.language, cl.text, cl.phones, cl.tones, cl.word2ph, wav))
    return items, problems


def hidden_size(model_dir: Path) -> int | None:
    """The hidden size a BERT folder's config.json declares, or None when it cannot be read."""
    try:
        return int(json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))["hidden_size"])
    except (OSError, ValueError, KeyError):
        return None


def is_valid(path: Path, hidden: int | None, n_phones: int) -> bool:
    """True if `path` holds a float32 tensor [hidden, 2*n_phones+1] (any hidden when unknown)."""
    import torch

    if not path.is_file():
        return False
    try:
        t = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # truncated or foreign file: regenerate it
        return False
    return (isinstance(t, torch.Tensor) and t.dim() == 2 and t.dtype == torch.float32
            and t.shape[1] == 2 * n_phones + 1 and (hidden is None or t.shape[0] == hidden))


def pending(items: list[Item], model_dirs: dict[str, Path], force: bool = False) -> list[Item]:
    """The items whose feature file is missing or not valid for the configured models (all with `force`)."""
    hidden = {lang: hidden_size(folder) for lang, folder in model_dirs.items()}
    return [it for it in items if force or not is_valid(it.out, hidden.get(it.language), len(it.phones))]


def save_features(tensor, path: Path) -> None:
    """torch.save atomically: a failed write leaves no temp file and no half tensor."""
    import torch

    from vits.fileio import atomic_path

    with atomic_path(path) as tmp:
        torch.save(tensor, tmp)


def load_models(model_dirs: dict[str, Path], languages, device: str, fp16: bool = False,
                max_batch_tokens: int = MAX_BATCH_TOKENS):
    """A BertFeatures with every model `languages` need loaded up front (a missing folder raises now).

    Raises KoeError naming the folder and `python -m pipeline.download bert`.
    """
    import torch

    from vits.text.bert import BertFeatures

    dtype = torch.float16 if fp16 and device.startswith("cuda") else torch.float32
    bert = BertFeatures(model_dirs, device=device, dtype=dtype, max_batch_tokens=max_batch_tokens)
    for lang in sorted(set(languages)):
        bert.hidden_size(lang)
    return bert


def compute_features(bert, todo: list[Item], batch_size: int = UTTERANCES_PER_BATCH,
                     progress: Callable[[int, str], None] | None = None) -> FeatureResult:
    """Compute and save the features of `todo` in batches; a batch that fails is retried line by line.

    Takes a loaded BertFeatures (`load_models`); progress(done, item name) after each batch.
    Returns FeatureResult (written count, `file:line: problem` per failed line).
    """
    from vits.text import Cleaned

    result = FeatureResult(failed=[])
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        cleaned = [Cleaned(it.language, it.norm_text, it.phones, it.tones, it.word2ph) for it in chunk]
        try:
            pairs = list(zip(chunk, bert.features_batch(cleaned)))
        except KoeError:
            pairs = []
            for it, c in zip(chunk, cleaned):  # find the offending lines one by one
                try:
                    pairs.append((it, bert.features(c)))
                except KoeError as one:
                    result.failed.append(f"{it.where}: {one}")
        for it, feat in pairs:
            if not it.out.parent.is_dir():
                result.failed.append(f"{it.where}: folder {it.out.parent} does not exist (is the wav path right?)")
                continue
            save_features(feat, it.out)
            result.written += 1
        if progress:
            progress(start + len(chunk), chunk[-1].out.name)
    return result


# ---- CLAP emotion features (2.2 voices) ---------------------------------------------------------------

def pending_emo(items: list[Item], force: bool = False) -> list[Item]:
    """The items whose `<clip>.emo.npy` is missing or not a float32 [512, 1] tensor (all with `force`)."""
    from vits.clap import is_emo_file

    return [it for it in items if force or not is_emo_file(emo_path(it.wav))]


def load_clap(model_dir: Path, device: str):
    """A loaded `vits.clap.ClapEmbedder`. Raises KoeError naming the folder and `python -m pipeline.download clap`."""
    from vits.clap import ClapEmbedder

    return ClapEmbedder(model_dir, device=device)


def compute_emo_features(clap, todo: list[Item], batch_size: int = CLIPS_PER_CLAP_BATCH,
                         progress: Callable[[int, str], None] | None = None) -> FeatureResult:
    """Write each item's CLAP audio embedding (torch-saved float32 [512, 1]) as `<clip>.emo.npy`.

    The wavs are read at 48 kHz (soxr) and embedded in batches of `batch_size` clips; a clip that cannot be
    read becomes a `file:line: problem` and the others are still done. progress(done, item name) after
    each batch. Returns FeatureResult.
    """
    from prep.audio import load_audio
    from vits.clap import CLAP_RATE, EMBED_DIM

    result = FeatureResult(failed=[])
    for start in range(0, len(todo), batch_size):
        chunk, waves = [], []
        for it in todo[start:start + batch_size]:
            try:
                wave, _rate, _info = load_audio(it.wav, CLAP_RATE)
            except KoeError as exc:
                result.failed.append(f"{it.where}: {exc}")
                continue
            chunk.append(it)
            waves.append(wave)
        if chunk:
            embeddings = clap.audio_features(waves, CLAP_RATE, names=[it.where for it in chunk])
            for it, emb in zip(chunk, embeddings):
                save_features(emb.reshape(EMBED_DIM, 1).contiguous(), emo_path(it.wav))
                result.written += 1
        if progress:
            progress(min(start + batch_size, len(todo)), todo[min(start + batch_size, len(todo)) - 1].wav.name)
    return result


def run_shards(commands: list[list[str]], echo: Callable[[int, str], None],
               progress: Callable[[int], None]) -> int:
    """Run one worker command per GPU, merging their KOE_PROGRESS lines; returns the worst exit status.

    `echo(gpu, line)` gets every other output line; `progress(done)` the summed step of all workers.
    """
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
             for cmd in commands]
    done = [0] * len(procs)
    lock = threading.Lock()

    def pump(i: int, proc) -> None:
        for line in proc.stdout:
            fields = parse_progress(line)
            with lock:
                if fields is None:
                    echo(i, line.rstrip())
                elif fields.get("step") is not None:
                    done[i] = int(fields["step"])
                    progress(sum(done))

    threads = [threading.Thread(target=pump, args=(i, p), daemon=True) for i, p in enumerate(procs)]
    for t in threads:
        t.start()
    codes = [p.wait() for p in procs]
    for t in threads:
        t.join()
    return max(codes)
