"""Training data: the dataset over the 7-field list files, the DDP bucket sampler and the collate (spec §10).

A voice folder holds the train and val lists (spec §7.4; read by `vits.lists`), with wav paths relative to
the voice folder (absolute paths are accepted too), a `*.bert.pt` next to every wav (spec §7.8) and, after
first use, a `*.spec.pt` spectrogram cache (spec §8), written atomically. A Bert-VITS2 2.2 voice (config
`architecture` "2.2") also has a `*.emo.npy` CLAP embedding beside every wav (2.2 spec §8.1); its items
and batches end with the emotion vector.

`validate_lists` checks every line before training starts, so a bad line never crashes a DataLoader worker.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
from torch.utils.data import Dataset, Sampler

from vits.config import VoiceConfig
from vits.errors import KoeError
from vits.fileio import atomic_path
from vits.lists import (
    CleanedLine,
    bert_path,
    emo_path,
    parse_cleaned_line,
    read_cleaned_lines,
    read_cleaned_list,
    spec_path,
)
from vits.symbols import LANGUAGE_ID, SYMBOL_TO_ID, cleaned_text_to_sequence, intersperse
from vits.voice_folder import CONFIG, resolve_path

BUCKET_BOUNDARIES = [32, 300, 400, 500, 600, 700, 800, 900, 1000]
BERT_DIM = 1024
EMO_DIM = 512
# Bert-VITS2 2.2's fallback emotion vector (its `empty_emo.npy`, same format), used for ~10% of items.
EMPTY_EMO = Path(__file__).with_name("empty_emo.npy")
EMPTY_EMO_SHARE = 0.1


@dataclass
class Utterance:
    """One cleaned list line (spec §7.4), wav path resolved against the voice folder."""

    wav: Path
    speaker: str
    language: str
    text: str
    phones: list[str]
    tones: list[int]
    word2ph: list[int]
    where: str  # "file:line", for error messages


def _utterance(line: CleanedLine, voice_dir: Path, where: str) -> Utterance:
    return Utterance(resolve_path(voice_dir, line.wav), line.speaker, line.language, line.text,
                     line.phones, line.tones, line.word2ph, where)


def parse_line(line: str, voice_dir: Path, where: str) -> Utterance:
    """One cleaned list line (parsed by `vits.lists.parse_cleaned_line`) as an Utterance. Raises KoeError."""
    return _utterance(parse_cleaned_line(line, where, voice_dir), voice_dir, where)


def read_list(list_file: Path, voice_dir: Path) -> list[Utterance]:
    """All lines of a list file (blank lines skipped). Raises KoeError for a missing file or bad line."""
    return [_utterance(line, voice_dir, where) for where, line in read_cleaned_list(list_file, voice_dir)]


def text_to_ids(utt: Utterance, add_blank: bool = True):
    """Phone, tone and language id tensors (int64) with blanks interspersed (spec §7.6)."""
    phones, tones, langs = cleaned_text_to_sequence(utt.phones, utt.tones, utt.language)
    if add_blank:
        phones, tones, langs = intersperse(phones, 0), intersperse(tones, 0), intersperse(langs, 0)
    return torch.LongTensor(phones), torch.LongTensor(tones), torch.LongTensor(langs)


def load_wav(path: Path, cfg: VoiceConfig) -> torch.Tensor:
    """Read a mono 16-bit wav as float32 [1, L] in [-1, 1]. Raises KoeError on rate/channel mismatch."""
    audio, sr = soundfile.read(str(path), dtype="int16", always_2d=True)
    if sr != cfg.data.sampling_rate:
        raise KoeError(f"sample rate is {sr} Hz, the voice uses {cfg.data.sampling_rate} Hz", where=str(path),
                       fix="re-run the resample stage (python -m pipeline.resample)")
    if audio.shape[1] != 1:
        raise KoeError(f"{audio.shape[1]} channels, expected mono", where=str(path),
                       fix="re-run the resample stage (python -m pipeline.resample)")
    wav = torch.from_numpy(audio[:, 0].astype(np.float32) / cfg.data.max_wav_value)
    return wav.unsqueeze(0)


def compute_spec(wav: torch.Tensor, cfg: VoiceConfig) -> torch.Tensor:
    """Linear magnitude spectrogram [n_fft//2+1, T] of a [1, L] wav (spec §8)."""
    from vits.mel import spectrogram

    d = cfg.data
    return spectrogram(wav, d.filter_length, d.hop_length, d.win_length).squeeze(0)


def save_tensor_atomic(tensor: torch.Tensor, path: Path) -> None:
    """torch.save via a temp file in the same folder + rename, so readers never see half a file."""
    with atomic_path(path) as tmp:
        torch.save(tensor, tmp)


def load_bert(path: Path, mmap: bool = False) -> torch.Tensor:
    """Load a `.bert.pt` tensor ([1024, T]). Raises KoeError when missing or not a tensor."""
    try:
        value = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise KoeError("BERT feature file missing", where=str(path),
                       fix="run the BERT feature stage (python -m pipeline.features, or Preprocess → Features) for this voice") from None
    except Exception as exc:  # a truncated or foreign file: say which one
        raise KoeError(f"cannot read BERT features ({type(exc).__name__}: {exc})", where=str(path),
                       fix="delete the file and re-run the BERT feature stage") from None
    if not isinstance(value, torch.Tensor) or value.dim() != 2:
        raise KoeError("BERT features must be one [1024, T] tensor", where=str(path),
                       fix="delete the file and re-run the BERT feature stage")
    return value


def load_emo(path: Path) -> torch.Tensor:
    """Load a 2.2 `.emo.npy` (a torch-saved float32 [512, 1] CLAP embedding) as [512].

    Raises KoeError when the file is missing, unreadable or not 512 values.
    """
    rerun = "run the features stage (python -m pipeline.features), which writes CLAP embeddings for 2.2 voices"
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise KoeError("CLAP emotion embedding missing (2.2 voices need one per clip)", where=str(path),
                       fix=rerun) from None
    except Exception as exc:  # a truncated file, or a real NumPy file from another tool
        raise KoeError(f"cannot read the CLAP embedding ({type(exc).__name__}: {exc})", where=str(path),
                       fix=f"delete the file and {rerun}") from None
    if not isinstance(value, torch.Tensor) or value.numel() != EMO_DIM or not value.is_floating_point():
        got = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise KoeError(f"a CLAP embedding must be {EMO_DIM} float values ([512, 1]), got {got}", where=str(path),
                       fix=f"delete the file and {rerun}")
    return value.reshape(EMO_DIM).float()


class TextAudioDataset(Dataset):
    """Items `(phones, spec, wav, sid, tone, language, bert, ja_bert, en_bert)` for one list file (spec §10.1).

    For a Korean-enabled voice (config `model.num_languages: 4`) each item ends with `ko_bert` [1024, T]:
    the clip's features for a KO clip, N(0,1) noise otherwise (like the other "other language" slots).
    For a 2.2 voice each item ends with `emo` [512]: the clip's `.emo.npy`, or with probability 0.1
    (NumPy's global generator, as 2.2) the fallback vector `EMPTY_EMO` (2.2 spec §8.2).

    Args:
        voice_dir: the voice folder (list wav paths are relative to it).
        list_file: the cleaned list (train.list / val.list).
        cfg: the voice config (sampling rate, STFT parameters, spk2id, add_blank).
        shuffle: shuffle the lines once with seed 1234, as Bert-VITS2 does.
        cache_spec: write `.spec.pt` next to each wav the first time it is computed.
    Raises:
        KoeError: for a missing list file or an unparsable line.
    """

    def __init__(self, voice_dir, list_file, cfg: VoiceConfig, shuffle: bool = True, cache_spec: bool = True):
        self.voice_dir = Path(voice_dir)
        self.cfg = cfg
        self.cache_spec = cache_spec
        self.emotion = cfg.architecture == "2.2"
        self.korean = cfg.korean
        self.empty_emo = load_emo(EMPTY_EMO) if self.emotion else None
        items = read_list(resolve_path(self.voice_dir, str(list_file)), self.voice_dir)
        if shuffle:
            random.Random(1234).shuffle(items)
        lo, hi = cfg.data.min_text_len, cfg.data.max_text_len
        # Bert-VITS2 filters on the length of the raw phone *string* (spaces included).
        self.items = [u for u in items if lo <= len(" ".join(u.phones)) <= hi]
        self.lengths = [self._approx_frames(u.wav) for u in self.items]

    def _approx_frames(self, wav: Path) -> int:
        # Bucketing unit: bytes // (2 * hop) ~ frames of 16-bit mono audio (spec §10.1).
        try:
            return os.path.getsize(wav) // (2 * self.cfg.data.hop_length)
        except OSError:
            return 0

    def __len__(self) -> int:
        return len(self.items)

    def speaker_id(self, utt: Utterance) -> int:
        spk2id = self.cfg.data.spk2id
        if utt.speaker not in spk2id:
            raise KoeError(f"speaker {utt.speaker!r} is not in spk2id", where=utt.where,
                           fix=f"add the speaker to data.spk2id in {CONFIG} or re-run pipeline.text")
        return spk2id[utt.speaker]

    def get_spec(self, wav: torch.Tensor, wav_path: Path) -> torch.Tensor:
        """The cached `.spec.pt` when it matches this wav, else computed (and cached)."""
        d = self.cfg.data
        n_bins = d.filter_length // 2 + 1
        frames = (wav.shape[-1] + (d.filter_length - d.hop_length) - d.filter_length) // d.hop_length + 1
        cache = spec_path(wav_path)
        if cache.is_file():
            try:
                spec = torch.load(cache, map_location="cpu", weights_only=True)
                if isinstance(spec, torch.Tensor) and tuple(spec.shape) == (n_bins, frames):
                    return spec
            except Exception:  # unreadable cache: recompute and overwrite it below
                pass
        spec = compute_spec(wav, self.cfg)
        if self.cache_spec:
            try:
                save_tensor_atomic(spec.contiguous(), cache)
            except OSError:  # a read-only dataset still trains, just without the cache
                pass
        return spec

    def __getitem__(self, index: int):
        utt = self.items[index]
        phones, tones, langs = text_to_ids(utt, self.cfg.data.add_blank)
        bert = load_bert(bert_path(utt.wav)).float()
        if bert.shape[-1] != phones.shape[0]:
            raise KoeError(f"BERT length {bert.shape[-1]} != phone length {phones.shape[0]}", where=utt.where,
                           fix="re-run the BERT feature stage for this clip")
        wav = load_wav(utt.wav, self.cfg)
        spec = self.get_spec(wav, utt.wav)
        sid = torch.LongTensor([self.speaker_id(utt)])
        if self.korean:
            return (phones, spec, wav, sid, tones, langs, *_bert_slots(bert, utt.language, korean=True))
        if utt.language == "KO":
            raise KoeError("a Korean clip in a voice without the Korean slot", where=utt.where,
                           fix="re-run the text stage (python -m pipeline.text): it enables Korean in config.json")
        if not self.emotion:
            return (phones, spec, wav, sid, tones, langs, *_bert_slots(bert, utt.language))
        zh, ja, en = _bert_slots(bert, utt.language, noise=torch.rand)  # 2.2 fills with uniform noise
        emo = load_emo(emo_path(utt.wav)) if np.random.rand() > EMPTY_EMO_SHARE else self.empty_emo
        return phones, spec, wav, sid, tones, langs, zh, ja, en, emo


def _bert_slots(bert: torch.Tensor, language: str, noise=torch.randn, korean: bool = False):
    """Real features in the utterance language's slot, noise (N(0,1); 2.2: uniform) in the other two.

    Draw order as spec §7.8; a Korean-enabled voice gets a fourth slot (ko_bert), drawn last.
    """
    t = bert.shape[-1]
    if korean:
        if language == "KO":
            return noise(BERT_DIM, t), noise(BERT_DIM, t), noise(BERT_DIM, t), bert
        return (*_bert_slots(bert, language, noise), noise(BERT_DIM, t))
    if language == "ZH":
        ja = noise(BERT_DIM, t)
        en = noise(BERT_DIM, t)
        return bert, ja, en
    if language == "JP":
        zh = noise(BERT_DIM, t)
        en = noise(BERT_DIM, t)
        return zh, bert, en
    zh = noise(BERT_DIM, t)
    ja = noise(BERT_DIM, t)
    return zh, ja, bert


def collate(batch):
    """Sort by spec length (descending) and zero-pad (spec §10.3).

    Returns (text, text_lengths, spec, spec_lengths, wav, wav_lengths, sid, tone, language, bert, ja_bert,
    en_bert) with shapes [B,T_x], [B], [B,C,T_y], [B], [B,1,L], [B], [B], [B,T_x] x2, [B,1024,T_x] x3;
    items of a 2.2 voice add `emo` [B,512] as a 13th element (2.2 spec §8.3), items of a Korean-enabled
    voice `ko_bert` [B,1024,T_x].
    """
    order = sorted(range(len(batch)), key=lambda i: batch[i][1].shape[1], reverse=True)
    b = len(batch)
    max_text = max(item[0].shape[0] for item in batch)
    max_spec = max(item[1].shape[1] for item in batch)
    max_wav = max(item[2].shape[1] for item in batch)
    n_bins = batch[0][1].shape[0]
    text = torch.zeros(b, max_text, dtype=torch.long)
    tone = torch.zeros(b, max_text, dtype=torch.long)
    language = torch.zeros(b, max_text, dtype=torch.long)
    bert = torch.zeros(b, BERT_DIM, max_text)
    ja_bert = torch.zeros(b, BERT_DIM, max_text)
    en_bert = torch.zeros(b, BERT_DIM, max_text)
    spec = torch.zeros(b, n_bins, max_spec)
    wav = torch.zeros(b, 1, max_wav)
    text_lengths = torch.zeros(b, dtype=torch.long)
    spec_lengths = torch.zeros(b, dtype=torch.long)
    wav_lengths = torch.zeros(b, dtype=torch.long)
    sid = torch.zeros(b, dtype=torch.long)
    with_emo = len(batch[0]) == 10 and batch[0][9].dim() == 1
    with_ko = len(batch[0]) == 10 and batch[0][9].dim() == 2
    emo = torch.zeros(b, EMO_DIM)
    ko_bert = torch.zeros(b, BERT_DIM, max_text) if with_ko else None
    for row, i in enumerate(order):
        ph, sp, wv, s, tn, lg, zh, ja, en = batch[i][:9]
        if with_emo:
            emo[row] = batch[i][9]
        if with_ko:
            ko_bert[row, :, :ph.shape[0]] = batch[i][9]
        n, f, ln = ph.shape[0], sp.shape[1], wv.shape[1]
        text[row, :n], tone[row, :n], language[row, :n] = ph, tn, lg
        bert[row, :, :n], ja_bert[row, :, :n], en_bert[row, :, :n] = zh, ja, en
        spec[row, :, :f] = sp
        wav[row, :, :ln] = wv
        text_lengths[row], spec_lengths[row], wav_lengths[row] = n, f, ln
        sid[row] = s.reshape(-1)[0]
    out = (text, text_lengths, spec, spec_lengths, wav, wav_lengths, sid, tone, language, bert, ja_bert, en_bert)
    if with_ko:
        return (*out, ko_bert)
    return (*out, emo) if with_emo else out


class DistributedBucketSampler(Sampler):
    """Batches of similar length; every replica gets the same number of batches (spec §10.2).

    Each bucket is padded (repeating its own indices) to a multiple of `num_replicas * batch_size`, so no
    rank can run out of batches before another and hang a collective. Shuffling is seeded by the epoch.

    Args:
        lengths: the bucketing length of every dataset item.
        batch_size: per-replica batch size.
        boundaries: bucket edges; items outside (first, last] are dropped.
        num_replicas, rank: the DDP world size and this process's rank.
    Raises:
        KoeError: when no item falls into any bucket.
    """

    def __init__(self, lengths, batch_size: int, boundaries=None, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True):
        super().__init__()
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.epoch = 0
        self.skip_batches = 0
        bounds = list(boundaries or BUCKET_BOUNDARIES)
        buckets: list[list[int]] = [[] for _ in range(len(bounds) - 1)]
        for i, length in enumerate(self.lengths):
            for k in range(len(bounds) - 1):
                if bounds[k] < length <= bounds[k + 1]:
                    buckets[k].append(i)
                    break
        self.buckets = [b for b in buckets if b]
        self.dropped = len(self.lengths) - sum(len(b) for b in self.buckets)
        if not self.buckets:
            raise KoeError("no clip has a usable length for training (all shorter than ~0.4 s or longer "
                           "than ~11.6 s)", fix="re-slice the audio into 1-10 s clips (python -m pipeline.slice)")
        unit = num_replicas * batch_size
        self.padded_sizes = [math.ceil(len(b) / unit) * unit for b in self.buckets]
        self.num_batches = sum(self.padded_sizes) // unit

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Select the epoch's shuffle; `skip_batches` leaves out the first batches (resuming mid-epoch)."""
        self.epoch = epoch
        self.skip_batches = max(0, min(skip_batches, self.num_batches))

    def batches(self) -> list[list[int]]:
        """This replica's batches for the current epoch, in order (before skipping)."""
        g = torch.Generator()
        g.manual_seed(self.epoch)
        out = []
        for bucket, padded in zip(self.buckets, self.padded_sizes):
            if self.shuffle:
                ids = [bucket[i] for i in torch.randperm(len(bucket), generator=g).tolist()]
            else:
                ids = list(bucket)
            rem = padded - len(ids)
            ids = ids + ids * (rem // len(ids)) + ids[: rem % len(ids)]
            mine = ids[self.rank::self.num_replicas]
            out.extend(mine[j:j + self.batch_size] for j in range(0, len(mine), self.batch_size))
        if self.shuffle:
            out = [out[i] for i in torch.randperm(len(out), generator=g).tolist()]
        return out

    def __iter__(self):
        return iter(self.batches()[self.skip_batches:])

    def __len__(self) -> int:
        return self.num_batches - self.skip_batches


def validate_lists(voice_dir, cfg: VoiceConfig, list_files=None) -> list[str]:
    """Check every line of the train and val lists before training; never raises for bad lines.

    Checks: field count, tones/word2ph counts, language, unknown phones, speaker in spk2id (and id below
    n_speakers), wav present with the right sample rate and mono, `.bert.pt` present with 1024 rows and
    as many columns as phones after blank insertion.

    Args:
        voice_dir: the voice folder.
        cfg: its config.
        list_files: list paths to check (default: data.training_files and data.validation_files).
    Returns:
        one `file:line: problem → fix` string per problem (empty when all is well).
    """
    voice_dir = Path(voice_dir)
    files = list_files or [cfg.data.training_files, cfg.data.validation_files]
    problems: list[str] = []
    for name in files:
        path = resolve_path(voice_dir, str(name))
        try:
            lines = read_cleaned_lines(path)
        except KoeError as exc:  # a missing list
            problems.append(str(exc))
            continue
        if not lines:
            problems.append(str(KoeError("list file is empty", where=str(path),
                                         fix="add clips (python -m pipeline.text writes the lists)")))
        for where, line in lines:
            problems.extend(_check_line(line, voice_dir, cfg, where))
    return problems


def _check_line(line: str, voice_dir: Path, cfg: VoiceConfig, where: str) -> list[str]:
    out: list[str] = []

    def bad(problem: str, fix: str) -> None:
        out.append(str(KoeError(problem, where=where, fix=fix)))

    try:
        utt = parse_line(line, voice_dir, where)
    except KoeError as exc:
        return [str(exc)]
    rerun = "re-run the text stage (python -m pipeline.text)"
    if utt.language not in LANGUAGE_ID:
        bad(f"unknown language {utt.language!r}", "use ZH, JP or EN")
    unknown = sorted({p for p in utt.phones if p not in SYMBOL_TO_ID})
    if unknown:
        bad(f"unknown phone(s) {', '.join(repr(p) for p in unknown)}", rerun)
    if not utt.phones:
        bad("no phones", rerun)
    if len(utt.tones) != len(utt.phones):
        bad(f"{len(utt.tones)} tones for {len(utt.phones)} phones", rerun)
    if sum(utt.word2ph) != len(utt.phones):
        bad(f"word2ph sums to {sum(utt.word2ph)}, expected {len(utt.phones)} (the phone count)", rerun)
    spk2id = cfg.data.spk2id
    if utt.speaker not in spk2id:
        bad(f"speaker {utt.speaker!r} is not in spk2id", f"add it to data.spk2id in {CONFIG} "
            "(or re-run python -m pipeline.text, which rewrites spk2id)")
    elif not 0 <= spk2id[utt.speaker] < cfg.data.n_speakers:
        bad(f"speaker id {spk2id[utt.speaker]} is outside 0..{cfg.data.n_speakers - 1} (n_speakers)",
            "set data.n_speakers to at least the number of speakers in spk2id")
    if not utt.wav.is_file():
        bad(f"wav file not found: {utt.wav}", "check the path (relative to the voice folder) or re-run "
            "python -m pipeline.resample")
    else:
        try:
            info = soundfile.info(str(utt.wav))
            if info.samplerate != cfg.data.sampling_rate:
                bad(f"{utt.wav.name} is {info.samplerate} Hz, expected {cfg.data.sampling_rate} Hz",
                    "re-run python -m pipeline.resample")
            if info.channels != 1:
                bad(f"{utt.wav.name} has {info.channels} channels, expected mono",
                    "re-run python -m pipeline.resample")
        except Exception as exc:  # soundfile raises its own error types for unreadable files
            bad(f"cannot read {utt.wav.name} ({exc})", "re-export the clip as 16-bit mono wav")
    bp = bert_path(utt.wav)
    if not bp.is_file():
        bad(f"BERT features not found: {bp}", "run the BERT feature stage (python -m pipeline.text)")
    elif not unknown and utt.phones:
        expected = 2 * len(utt.phones) + 1 if cfg.data.add_blank else len(utt.phones)
        try:
            # mmap reads only the header, so validating thousands of clips stays fast.
            shape = tuple(load_bert(bp, mmap=True).shape)
        except KoeError:
            try:
                shape = tuple(load_bert(bp).shape)
            except KoeError as exc:
                bad(exc.problem, exc.fix or "")
                shape = None
        if shape is not None and (shape[0] != BERT_DIM or shape[1] != expected):
            bad(f"BERT features are {list(shape)}, expected [{BERT_DIM}, {expected}] (phones after blanks)",
                "re-run the BERT feature stage for this clip (delete its .bert.pt first)")
    if cfg.architecture == "2.2" and utt.wav.is_file():
        try:
            load_emo(emo_path(utt.wav))
        except KoeError as exc:
            bad(f"{exc.problem}: {emo_path(utt.wav).name}", exc.fix or "")
    return out


def loader_settings(device: torch.device, local_world_size: int = 1, requested: int | None = None) -> dict:
    """DataLoader keyword arguments suited to this machine.

    Workers: a share of the CPU cores per local process (at most 8), none on tiny machines, where worker
    start-up costs more than it saves. pin_memory only for CUDA.
    """
    cores = os.cpu_count() or 1
    if requested is None:
        share = cores // max(1, local_world_size)
        # On CPU training the workers would compete with the model for the same cores.
        workers = 0 if share <= 2 else min(8, share - 1 if device.type == "cuda" else share // 4)
    else:
        workers = max(0, int(requested))
    kwargs = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=4, worker_init_fn=_worker_init)
    return kwargs


def _worker_init(_worker_id: int) -> None:
    # Ctrl-C / SIGTERM go to the trainer, which finishes its step and saves; workers must not die first.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)
