"""Synthesize speech with a trained voice and write a WAV file.

    python -m pipeline.synthesize Data/myvoice --text "你好。今天天气很好。" --language ZH --speaker spk0 --out out.wav
    python -m pipeline.synthesize Data/myvoice --phones "_ n i h ao . _" --tones "0 3 3 3 3 0 0" --out out.wav

The voice is a folder (newest complete models/G_<step>.pth + configs/config.json), a voice name under the
data root of config.yml, or a G file; use --checkpoint for a particular G file of the voice. --phones/--tones
take the cleaned form (as in filelists/*.list: phones with the leading/trailing "_", raw tones, no blanks);
that path needs no BERT models (their slots get Bert-VITS2's filler noise, so expect lower quality). --text
needs the BERT models named in config.yml (python -m pipeline.download bert).
A Bert-VITS2 2.2 (CLAP) voice also takes an emotion: --emotion-text "Happy" / "悲伤" (the default is "Happy")
or --emotion-audio clip.wav (a reference clip whose emotion it takes); they need the CLAP model named in
config.yml (python -m pipeline.download clap). 2.3 voices have no emotion input (the options are ignored,
with a warning). --style-text "..." --style-weight 0.7 mixes the BERT features of a second text into the text's
(Bert-VITS2's style text; 0 = none, 1 = only the style text's features).
--engine onnx reads the voice's ONNX export (<voice>/onnx, or an export folder given as the voice; python -m
pipeline.export_onnx) with onnxruntime; with an export made with --bert the text needs no torch at all, and
--bert-precision int8 picks its int8-quantised BERT graphs (--bert --int8; faster, error in koe_bert.json).
Exit status: 0 written, 1 failed (message on stderr), 2 usage.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pipeline import cli
from vits.defaults import SYNTHESIS
from vits.errors import KoeError
from vits.fileio import atomic_path
from vits.progress import format_progress

STAGE = "synthesize"


def build_parser():
    d = SYNTHESIS
    parser = cli.parser(STAGE, __doc__)
    parser.add_argument("voice", help=cli.VOICE_HELP + ", or a G_<step>.pth file")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help="text to speak (sentences are synthesized one by one)")
    what.add_argument("--phones", help='cleaned phones, space-separated, e.g. "_ n i h ao . _"')
    parser.add_argument("--tones", help="raw tones for --phones, space-separated (one per phone)")
    parser.add_argument("--language", default=d.language,
                        help=f"ZH, JP, EN, KO (Korean-enabled voices); for --text also AUTO or MIX ([ZH]..[ZH] "
                             f"markup) (default {d.language})")
    parser.add_argument("--speaker", help="speaker name or id (default: the first speaker)")
    parser.add_argument("--out", required=True, help="output .wav file")
    parser.add_argument("--checkpoint", help="a particular G_<step>.pth (name inside models/ or a path)")
    parser.add_argument("--config", help="config.json to use (default: the voice's configs/config.json)")
    parser.add_argument("--sdp-ratio", type=float, default=d.sdp_ratio,
                        help=f"share of the stochastic duration predictor (default {d.sdp_ratio})")
    parser.add_argument("--noise-scale", type=float, default=d.noise_scale,
                        help=f"prior noise (expressiveness) (default {d.noise_scale})")
    parser.add_argument("--noise-scale-w", type=float, default=d.noise_scale_w,
                        help=f"duration noise (default {d.noise_scale_w})")
    parser.add_argument("--length-scale", type=float, default=d.length_scale,
                        help=f"speaking slowness (>1 slower) (default {d.length_scale})")
    parser.add_argument("--pause", type=float, default=d.pause,
                        help=f"seconds of silence between sentences (default {d.pause})")
    parser.add_argument("--seed", type=int, help="random seed for reproducible output")
    parser.add_argument("--style-text", help="--text only: a text whose BERT features are mixed into the text's "
                                             "(Bert-VITS2's style text, spec §7.7), e.g. a sentence in the mood wanted")
    parser.add_argument("--style-weight", type=float, default=d.style_weight,
                        help=f"0-1: how much of the style text's features (default {d.style_weight})")
    emotion = parser.add_mutually_exclusive_group()
    emotion.add_argument("--emotion-text", help='2.2 voices: emotion text prompt, e.g. "Happy" or "悲伤" (default Happy)')
    emotion.add_argument("--emotion-audio", help="2.2 voices: reference clip (wav/flac/ogg/mp3) whose emotion to take")
    parser.add_argument("--clap-model", help="CLAP model folder for the emotion (default: clap: in config.yml)")
    parser.add_argument("--float", action="store_true", help="write 32-bit float samples (default 16-bit PCM)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: config.yml's device)")
    parser.add_argument("--engine", choices=("torch", "onnx"), default="torch",
                        help="torch (the G file) or onnx (the voice's ONNX export, onnxruntime)")
    parser.add_argument("--bert-precision", choices=("fp32", "int8"), default="fp32",
                        help="--engine onnx: which BERT graphs of the export read the text")
    return parser


def write_wav_atomic(path: Path, audio, sampling_rate: int, float32: bool = False) -> None:
    """Write mono audio as WAV (16-bit PCM or 32-bit float) via a temp file and rename."""
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(tmp, audio, sampling_rate, subtype="FLOAT" if float32 else "PCM_16", format="WAV")


def _progress(step: int, total: int | None, **fields) -> None:
    print(format_progress(STAGE, step=step, total=total, **fields), flush=True)


def _emotion(args, voice, settings, device: str) -> dict:
    """{"emo": [512] vector} for a 2.2 voice (from --emotion-audio, else --emotion-text), {} for a 2.3 one."""
    from vits.clap import ClapEmbedder, emotion_vector, takes_emotion

    if not takes_emotion(voice):
        if args.emotion_text is not None or args.emotion_audio is not None:
            cli.warn("this is a Bert-VITS2 2.3 voice: it has no emotion input, --emotion-text/--emotion-audio ignored")
        return {}
    clap = ClapEmbedder(Path(args.clap_model) if args.clap_model else settings.clap, device=device)
    mode = "audio" if args.emotion_audio is not None else "text"
    prompt = args.emotion_audio if mode == "audio" else (args.emotion_text or "Happy")
    _progress(0, None, message=f"emotion from the {mode} prompt {prompt}")
    return {"emo": emotion_vector(clap, text=args.emotion_text, audio=args.emotion_audio, mode=mode,
                                  where=args.emotion_audio)}


def run(args) -> Path:
    """Load the voice, synthesize, write the file; returns the output path. Raises KoeError."""
    from settings import load_settings
    from vits.text.style import check_style_weight

    check_style_weight(args.style_weight)  # fail before loading anything
    if args.style_text and args.phones is not None:
        raise KoeError("--style-text mixes BERT features, and --phones synthesis has none",
                       fix="use --text for a style text, or leave --style-text out")
    settings = load_settings()
    settings.use_text_frontend()
    voice_dir = cli.voice_path(args.voice, must_exist=False)  # a folder, a name, or a G file
    if args.engine == "onnx":
        return _run_onnx(args, settings, voice_dir)
    if args.bert_precision != "fp32":
        raise KoeError("--bert-precision int8 picks the int8 BERT graphs of an ONNX export",
                       fix="add --engine onnx (after python -m pipeline.export_onnx <voice> --bert --int8)")
    from vits.synthesis import Voice

    device = args.device or settings.resolved_device()
    _progress(0, None, message=f"loading {voice_dir}")
    voice = Voice.load(voice_dir, device=device, config_path=args.config, checkpoint=args.checkpoint)
    speaker = args.speaker
    if speaker is not None and speaker not in voice.speakers and speaker.isdigit():
        speaker = int(speaker)
    voice.speaker_id(speaker)  # fail early on an unknown speaker
    knobs = dict(speaker=speaker, sdp_ratio=args.sdp_ratio, noise_scale=args.noise_scale,
                 noise_scale_w=args.noise_scale_w, length_scale=args.length_scale, seed=args.seed)
    knobs.update(_emotion(args, voice, settings, device))
    start = time.monotonic()
    if args.phones is not None:
        if args.tones is None:
            raise KoeError("--phones needs --tones (one raw tone per phone)", fix='add e.g. --tones "0 3 3 0"')
        audio = voice.synthesize_phones(args.phones.split(), [int(t) for t in args.tones.split()],
                                        args.language.upper(), **knobs)
        _progress(1, 1, message="synthesized phones")
    else:
        from vits.text.bert import BertFeatures

        bert = BertFeatures(dict(settings.bert), device=device)
        audio = _speak_text(args, voice, bert, voice_dir, knobs)
    return _write(args, audio, voice.sampling_rate, start)


def _write(args, audio, sampling_rate: int, start: float, engine: str = "") -> Path:
    """Write --out and print its last progress line (`engine`: what spoke, when worth naming)."""
    out = Path(args.out)
    write_wav_atomic(out, audio, sampling_rate, float32=args.float)
    took = time.monotonic() - start
    _progress(1, 1, message=f"wrote {out} ({len(audio) / sampling_rate:.2f} s of audio in {took:.2f} s"
                            f"{'; ' + engine if engine else ''})", item=str(out))
    return out


def _speak_text(args, voice, bert, voice_dir: Path, knobs: dict):
    """--text through `voice.stream` (a Voice or an OnnxVoice) with the voice's dictionary, one progress line per
    sentence, joined with --pause. `bert`: the features to read with (None: an ONNX export's own graphs)."""
    from vits.audio import join_with_pauses
    from vits.voice_folder import userdict_for

    user_dict = None
    if (dict_path := userdict_for(voice_dir)) is not None:  # a voice folder's, its export's, or a G file's voice's
        from vits.text import UserDict

        user_dict = UserDict.load(dict_path)

    def pieces():
        for i, (sentence, piece) in enumerate(voice.stream(args.text, args.language, bert=bert, user_dict=user_dict,
                                                          style_text=args.style_text, style_weight=args.style_weight,
                                                          **knobs)):
            _progress(i + 1, None, item=sentence)
            yield piece

    return join_with_pauses(pieces(), voice.sampling_rate, args.pause)


def _run_onnx(args, settings, voice_dir: Path) -> Path:
    """--engine onnx: the voice's ONNX export through onnxruntime (no torch import when the export has its BERT
    graphs); text only (2.3 exports). Raises KoeError."""
    import numpy as np

    from vits.onnx_runtime import OnnxVoice
    from vits.voice_folder import ONNX, ONNX_METADATA

    for flag, value in (("--checkpoint", args.checkpoint), ("--config", args.config), ("--phones", args.phones),
                        ("--emotion-audio", args.emotion_audio), ("--emotion-text", args.emotion_text)):
        if value:
            raise KoeError(f"{flag} is not used with --engine onnx (the export holds its own graphs and config)",
                           fix=f"leave {flag} out, or use --engine torch")
    folder = voice_dir if (voice_dir / ONNX_METADATA).is_file() else voice_dir / ONNX
    if not (folder / ONNX_METADATA).is_file():
        raise KoeError("no complete ONNX export here", where=str(folder),
                       fix=f"run python -m pipeline.export_onnx {voice_dir} --bert (or use --engine torch)")
    _progress(0, None, message=f"loading {folder} (onnxruntime)")
    voice = OnnxVoice.load(folder, bert_int8=args.bert_precision == "int8")
    if voice.needs_emotion:
        raise KoeError("this is a Bert-VITS2 2.2 (CLAP) export: its emotion prompt needs the CLAP model (torch)",
                       where=str(folder), fix="use --engine torch for 2.2 voices")
    voice.speaker_id(args.speaker)  # fail early on an unknown speaker (None: the first; "3": id 3)
    knobs = dict(speaker=args.speaker, sdp_ratio=args.sdp_ratio, noise_scale=args.noise_scale,
                 noise_scale_w=args.noise_scale_w, length_scale=args.length_scale, seed=args.seed)
    start = time.monotonic()
    bert = None
    if voice.bert is None:  # an export without its BERT graphs: torch BERT from config.yml
        from vits.text.bert import BertFeatures

        bert = BertFeatures(dict(settings.bert), device=args.device or settings.resolved_device())
    audio = _speak_text(args, voice, bert, voice_dir, knobs)
    engine = "onnxruntime, " + (f"ONNX BERT ({voice.bert.kind})" if voice.bert is not None else "torch BERT")
    return _write(args, np.asarray(audio, np.float32), voice.sampling_rate, start, engine)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        run(args)
        return 0

    return cli.run(STAGE, body)


if __name__ == "__main__":
    sys.exit(main())
