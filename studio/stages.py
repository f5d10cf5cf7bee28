"""The command line of every stage the studio runs, as argument lists (never shell strings).

The studio's config.yml and data root reach the stages through KOE_CONFIG / KOE_DATA_ROOT (see
`studio.tabs.Context.env`), so commands carry no settings of their own.

Each builder takes the voice folder and the options from the UI and returns a `Command`: the argv, the
outputs that must exist when it succeeds (relative to the voice folder), and whether it uses the GPU.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from vits.voice_folder import (
    CLEAN,
    CONFIG,
    ESD_LIST,
    ESD_META,
    MERGE_RECIPE,
    MODELS,
    RAW,
    REPORT_JSON,
    REPORT_TXT,
    SCORES,
    TRAIN_LIST,
    VAL_LIST,
    WAVS,
)

PY = sys.executable


@dataclass
class Command:
    argv: list[str]
    expected: list[str] = field(default_factory=list)
    gpu: bool = False


def _module(name: str, *args: str) -> list[str]:
    return [PY, "-m", f"pipeline.{name}", *args]


def _opt(args: list[str], flag: str, value) -> None:
    if value is not None and value != "":
        args += [flag, str(value)]


def ingest(voice_dir: Path, source: str, speaker: str | None = None) -> Command:
    """Copy recordings from a server folder, zip or file into raw/."""
    args = [source, str(voice_dir)]
    _opt(args, "--speaker", speaker)
    return Command(_module("ingest", *args), [RAW])


def clean(voice_dir: Path, denoise: bool = True, separate: bool = False) -> Command:
    """Clean raw/ recordings into clean/ (slicing then uses them): separate vocals, then denoise."""
    args = [str(voice_dir)]
    if separate:
        args.append("--separate")
    if denoise:
        args.append("--denoise")
    return Command(_module("clean", *args), [CLEAN])


def slice_audio(voice_dir: Path, min_sec: float | None = None, max_sec: float | None = None) -> Command:
    """Cut raw/ recordings into clips under wavs/."""
    args = [str(voice_dir)]
    _opt(args, "--min", min_sec)
    _opt(args, "--max", max_sec)
    return Command(_module("slice", *args), [f"{WAVS}/*/*.wav"])


WHISPER_LANG = {"ZH": "zh", "JP": "ja", "EN": "en", "KO": "ko", "auto": "auto"}


def transcribe(voice_dir: Path, language: str | None = None, model: str | None = None,
               keep_flagged: bool = False, beam_size: int | None = None, max_tokens: int | None = None,
               temperatures: str | None = None, force: bool = False, clips: list[str] = ()) -> Command:
    """Whisper transcription of the clips into esd.list (+ esd.meta.json); `force` redoes every clip,
    `clips` redoes those (wav paths as in esd.list)."""
    args = [str(voice_dir)]
    _opt(args, "--language", WHISPER_LANG.get(language or "auto", language))
    _opt(args, "--model", model)
    _opt(args, "--beam-size", int(beam_size) if beam_size else None)
    _opt(args, "--max-tokens", int(max_tokens) if max_tokens else None)
    _opt(args, "--temperatures", (temperatures or "").replace(" ", "") or None)
    if keep_flagged:
        args.append("--keep-flagged")
    if force:
        args.append("--force")
    for wav in clips:
        args += ["--clip", wav]
    return Command(_module("transcribe", *args), [ESD_LIST, ESD_META], gpu=True)


def _audio_options(loudness: float | None, trim: bool) -> list[str]:
    args = [] if loudness is None or loudness == "" else ["--loudness", f"{float(loudness):g}"]
    return args + (["--trim"] if trim else [])


def resample(voice_dir: Path, loudness: float | None = None, trim: bool = False) -> Command:
    """44.1 kHz mono 16-bit clips; `loudness` (LUFS) normalises them, `trim` cuts leading/trailing silence."""
    return Command(_module("resample", str(voice_dir), *_audio_options(loudness, trim)), [WAVS])


def text(voice_dir: Path) -> Command:
    """Clean esd.list into filelists/train.list + val.list and write configs/config.json."""
    return Command(_module("text", str(voice_dir)), [TRAIN_LIST, VAL_LIST, CONFIG])


def features(voice_dir: Path) -> Command:
    """BERT features (*.bert.pt next to each clip), and for a 2.2-CLAP voice the CLAP emotion files (*.emo.npy)."""
    return Command(_module("features", str(voice_dir)), [], gpu=True)


def report(voice_dir: Path) -> Command:
    return Command(_module("report", str(voice_dir), "--quiet"), [REPORT_JSON, REPORT_TXT])


def prepare(voice_dir: Path, chain: str = "resample,text,features,report", loudness: float | None = None,
            trim: bool = False) -> Command:
    """The preprocessing chain (by default the part after transcription) as one job; `loudness`/`trim` as
    for `resample`."""
    expected = [REPORT_JSON]
    if "text" in chain:
        expected += [TRAIN_LIST, CONFIG]
    argv = _module("prepare", str(voice_dir), "--stages", chain, *_audio_options(loudness, trim))
    return Command(argv, expected, gpu="features" in chain)


def train(voice_dir: Path, gpus: int = 1, base_model: str | None = None, max_steps: int | None = None,
          no_wavlm: bool = False, no_base: bool = False) -> Command:
    """Training: `python -m pipeline.train` on one device, torchrun for several GPUs."""
    args = [str(voice_dir)]
    _opt(args, "--base", base_model)
    if no_base:
        args.append("--no-base")
    if no_wavlm:
        args.append("--no-wavlm")
    _opt(args, "--max-steps", max_steps)
    if gpus and gpus > 1:
        argv = [PY, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(gpus)}",
                "-m", "pipeline.train", *args]
    else:
        argv = _module("train", *args)
    return Command(argv, [f"{MODELS}/G_*.pth"], gpu=True)


def export_onnx(voice_dir: Path, checkpoint: str | None = None) -> Command:
    args = [str(voice_dir)]
    _opt(args, "--checkpoint", checkpoint)
    return Command(_module("export_onnx", *args), ["onnx/*.onnx"])


def score(voice_dir: Path, force: bool = False) -> Command:
    """Checkpoint scoring (ASR CER + speaker similarity) into logs/scores.json: `pipeline.score`."""
    return Command(_module("score", str(voice_dir), *(["--force"] if force else [])), [SCORES], gpu=True)


def download(what: str, endpoint: str | None = None, source: str | None = None, model: str | None = None) -> Command:
    """Model downloads (base model, BERTs, WavLM, Whisper) through `pipeline.download`; for Whisper, `source`
    (openai/hub; None: hub when a mirror is set) and `model` (a name; None: config.yml's)."""
    args = [PY, "-m", "pipeline.download", what]
    _opt(args, "--endpoint", endpoint)
    _opt(args, "--source", source)
    _opt(args, "--model", model)
    return Command(args, [])


def merge(out_dir: Path, sources: dict[str, tuple[str, str | None]], method: str, weight, groups: dict,
          slerp: bool = False, speakers: str = "match") -> Command:
    """`pipeline.merge` into `out_dir`: `sources` maps "a"/"b"/"c" to (voice folder, G file or None); `weight`
    and each of `groups` (timbre/pitch/style/rhythm) are a number, or a,b,c for weighted_sum."""
    def spelled(value) -> str:
        return ",".join(f"{float(v):g}" for v in value) if isinstance(value, (tuple, list)) else f"{float(value):g}"

    args = []
    for role, (voice, checkpoint) in sources.items():
        args += [f"--{role}", str(voice)]
        _opt(args, f"--{role}-checkpoint", checkpoint)
    args += ["--method", method, "--weights" if method == "weighted_sum" else "--weight", spelled(weight)]
    for group, value in groups.items():
        args += [f"--{group}", spelled(value)]
    if slerp:
        args.append("--slerp")
    args += ["--speakers", speakers, "--out", str(out_dir)]
    return Command(_module("merge", *args), [f"{Path(out_dir).name}/{MERGE_RECIPE}"])
