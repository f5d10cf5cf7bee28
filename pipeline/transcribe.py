"""Transcribe the clips in Data/<voice>/wavs/ with Whisper into esd.list (wav|speaker|LANG|text).

    python -m pipeline.transcribe Data/myvoice --language zh --model large-v3
    python -m pipeline.transcribe Data/myvoice --model models/whisper/medium.pt --prompt "你好。"

Also writes esd.meta.json with each clip's confidence (avg_logprob, no_speech_prob, compression_ratio)
and flags. Clips with no speech or a hallucination signature are left out of esd.list (see the meta
file; --keep-flagged keeps them, also those an earlier run left out). An existing esd.list is backed up
before it changes. Running it again only transcribes clips not yet listed; --force redoes all, --clip WAV
redoes one clip (repeatable).
"""

from __future__ import annotations

import sys

from pipeline import cli
from prep.transcribe import TranscribeOptions, transcribe_voice


def result_message(summary: dict) -> str:
    """The closing line: what this run did, and how to redo work when it found nothing to do."""
    kept = f"{summary['kept']} flagged clip(s) put back into esd.list, " if summary["kept"] else ""
    if not summary["transcribed"] and not summary["failed"]:
        return (f"{kept}nothing new to transcribe: all {summary['skipped']} clips are already done "
                "(--force transcribes every clip again, --clip WAV one clip)")
    return (f"{kept}{summary['transcribed']} transcribed, {summary['skipped']} already done, "
            f"{len(summary['excluded'])} flagged and left out, {len(summary['failed'])} failed")


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("transcribe", __doc__)
    parser.add_argument("voice", help=cli.VOICE_HELP)
    parser.add_argument("--model", help="Whisper name (tiny ... large-v3) or .pt path (default: config.yml)")
    parser.add_argument("--language", default=TranscribeOptions.language, choices=["zh", "ja", "en", "ko", "auto"])
    parser.add_argument("--prompt", help="initial prompt (vocabulary, punctuation style)")
    parser.add_argument("--beam-size", type=int, default=TranscribeOptions.beam_size)
    parser.add_argument("--batch-size", type=int, default=TranscribeOptions.clips_per_decode,
                        help="clips Whisper decodes together with greedy decoding (default %(default)s; "
                             "not the training batch size)")
    parser.add_argument("--temperatures", default=",".join(f"{t:g}" for t in TranscribeOptions.temperatures),
                        help="fallback temperatures for unreliable results (comma-separated)")
    parser.add_argument("--max-tokens", type=int, help="most tokens per clip (default: Whisper's 224)")
    parser.add_argument("--device", help="cpu, cuda, cuda:0 ... (default: config.yml, auto = GPU when present)")
    parser.add_argument("--no-simplify", action="store_true", help="keep Traditional Chinese as Whisper wrote it")
    parser.add_argument("--keep-flagged", action="store_true", help="keep flagged clips in esd.list")
    parser.add_argument("--force", action="store_true", help="transcribe every clip again")
    parser.add_argument("--clip", action="append", default=[], metavar="WAV",
                        help="transcribe this clip again (its path as in esd.list, e.g. wavs/spk/a_0001.wav); "
                             "repeatable")
    a = parser.parse_args(argv)

    def body() -> int:
        from settings import load_settings

        cli.limit_threads()
        settings = load_settings()
        voice = cli.voice_path(a.voice)
        opts = TranscribeOptions(
            model=a.model or settings.whisper_model, language=a.language, initial_prompt=a.prompt,
            beam_size=a.beam_size, clips_per_decode=a.batch_size,
            temperatures=tuple(float(t) for t in a.temperatures.split(",") if t.strip()) or (0.0,),
            simplify_chinese=not a.no_simplify, keep_flagged=a.keep_flagged,
            device=a.device or settings.device, download_root=str(settings.whisper_root), max_tokens=a.max_tokens)
        summary = transcribe_voice(voice, opts, force=a.force, progress=cli.progress_printer("transcribe"),
                                   only=a.clip or None)
        for problem in summary["problems"]:
            cli.warn(f"esd.list {problem}")
        for wav, reason in summary["failed"]:
            cli.warn(f"{wav}: {reason}")
        for wav, flags in summary["excluded"]:
            cli.warn(f"{wav}: left out of esd.list ({', '.join(flags)}); review it in esd.meta.json")
        if summary["backup"]:
            print(f"transcribe: previous esd.list saved as {summary['backup']}")
        cli.finish("transcribe", result_message(summary), transcribed=summary["transcribed"],
                   flagged=len(summary["excluded"]), kept=summary["kept"], skipped=summary["skipped"])
        return 0

    return cli.run("transcribe", body)


if __name__ == "__main__":
    sys.exit(main())
