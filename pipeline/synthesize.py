"""Synthesize speech with a trained voice and write a WAV file.

    python -m pipeline.synthesize Data/myvoice --text "你好。今天天气很好。" --language ZH --speaker spk0 --out out.wav
    python -m pipeline.synthesize Data/myvoice --phones "_ n i h ao . _" --tones "0 3 3 3 3 0 0" --out out.wav

The voice is a folder (newest complete models/G_<step>.pth + configs/config.json), a voice name under the
data root of config.yml, or use --checkpoint for a particular G file. --phones/--tones take the cleaned
form (as in filelists/*.list: phones with the leading/trailing "_", raw tones, no blanks); that path needs
no BERT models (their slots get Bert-VITS2's filler noise, so expect lower quality). --text needs the
BERT models named in config.yml.
Exit status: 0 written, 2 a problem you can fix (message on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from vits.errors import KoeError
from vits.fileio import atomic_path
from vits.progress import format_progress


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.synthesize", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("voice", help="voice folder (Data/<voice>) or voice name under the data root")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help="text to speak (sentences are synthesized one by one)")
    what.add_argument("--phones", help='cleaned phones, space-separated, e.g. "_ n i h ao . _"')
    parser.add_argument("--tones", help="raw tones for --phones, space-separated (one per phone)")
    parser.add_argument("--language", default="ZH",
                        help="ZH, JP, EN; for --text also AUTO or MIX ([ZH]..[ZH] markup) (default ZH)")
    parser.add_argument("--speaker", help="speaker name or id (default: the first speaker)")
    parser.add_argument("--out", required=True, help="output .wav file")
    parser.add_argument("--checkpoint", help="a particular G_<step>.pth (name inside models/ or a path)")
    parser.add_argument("--config", help="config.json to use (default: the voice's configs/config.json)")
    parser.add_argument("--sdp-ratio", type=float, default=0.5, help="share of the stochastic duration predictor")
    parser.add_argument("--noise-scale", type=float, default=0.6, help="prior noise (expressiveness)")
    parser.add_argument("--noise-scale-w", type=float, default=0.9, help="duration noise")
    parser.add_argument("--length-scale", type=float, default=1.0, help="speaking slowness (>1 slower)")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds of silence between sentences")
    parser.add_argument("--seed", type=int, help="random seed for reproducible output")
    parser.add_argument("--float", action="store_true", help="write 32-bit float samples (default 16-bit PCM)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: config.yml's device)")
    return parser


def _resolve_voice(arg: str, settings) -> Path:
    path = Path(arg)
    if path.exists() or os.sep in arg or "/" in arg:
        return path
    return settings.voice_dir(arg)


def _resolve_checkpoint(arg: str, voice_dir: Path) -> Path:
    path = Path(arg)
    if path.is_file():
        return path
    inside = voice_dir / "models" / arg
    if inside.is_file():
        return inside
    raise KoeError("checkpoint not found", where=arg, fix=f"use a file in {voice_dir / 'models'} or a full path")


def write_wav_atomic(path: Path, audio, sampling_rate: int, float32: bool = False) -> None:
    """Write mono audio as WAV (16-bit PCM or 32-bit float) via a temp file and rename."""
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(tmp, audio, sampling_rate, subtype="FLOAT" if float32 else "PCM_16", format="WAV")


def run(args) -> Path:
    """Load the voice, synthesize, write the file; returns the output path. Raises KoeError."""
    import numpy as np

    from settings import load_settings
    from vits.synthesis import Voice

    settings = load_settings()
    voice_dir = _resolve_voice(args.voice, settings)
    device = args.device or settings.resolved_device()
    print(format_progress("synthesize", step=0, total=None, message=f"loading {voice_dir}"), flush=True)
    target = _resolve_checkpoint(args.checkpoint, voice_dir) if args.checkpoint else voice_dir
    config = args.config
    if config is None and args.checkpoint and (voice_dir / "configs" / "config.json").is_file():
        config = voice_dir / "configs" / "config.json"
    voice = Voice.load(target, device=device, config_path=config)
    speaker = args.speaker
    if speaker is not None and speaker not in voice.speakers and speaker.isdigit():
        speaker = int(speaker)
    voice.speaker_id(speaker)  # fail early on an unknown speaker
    knobs = dict(speaker=speaker, sdp_ratio=args.sdp_ratio, noise_scale=args.noise_scale,
                 noise_scale_w=args.noise_scale_w, length_scale=args.length_scale, seed=args.seed)
    start = time.monotonic()
    if args.phones is not None:
        if args.tones is None:
            raise KoeError("--phones needs --tones (one raw tone per phone)", fix='add e.g. --tones "0 3 3 0"')
        audio = voice.synthesize_phones(args.phones.split(), [int(t) for t in args.tones.split()],
                                        args.language.upper(), **knobs)
        print(format_progress("synthesize", step=1, total=1, message="synthesized phones"), flush=True)
    else:
        from vits.text.bert import BertFeatures

        user_dict = None
        if (voice_dir / "userdict.txt").is_file():
            from vits.text import UserDict

            user_dict = UserDict.load(voice_dir / "userdict.txt")
        bert = BertFeatures({k: v for k, v in settings.bert.items()}, device=device)
        gap = np.zeros(int(round(max(args.pause, 0.0) * voice.sampling_rate)), dtype=np.float32)
        parts = []
        for i, (sentence, piece) in enumerate(voice.stream(args.text, args.language, bert=bert, user_dict=user_dict,
                                                          **knobs)):
            parts += [gap, piece] if parts else [piece]
            print(format_progress("synthesize", step=i + 1, total=None, item=sentence), flush=True)
        if not parts:
            raise KoeError("the text has nothing to pronounce", fix="type words in the chosen language")
        audio = np.concatenate(parts)
    out = Path(args.out)
    write_wav_atomic(out, audio, voice.sampling_rate, float32=args.float)
    seconds = len(audio) / voice.sampling_rate
    took = time.monotonic() - start
    print(format_progress("synthesize", step=1, total=1, message=f"wrote {out} ({seconds:.2f} s of audio in "
                          f"{took:.2f} s)", item=str(out)), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except KoeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
