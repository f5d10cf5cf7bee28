"""Run the dataset chain on one voice: ingest -> clean -> slice -> transcribe -> resample -> text -> features -> report.

    python -m pipeline.prepare Data/<voice> --source recordings.zip --language zh
    python -m pipeline.prepare Data/<voice> --stages transcribe,text --whisper-model large-v3
    python -m pipeline.prepare Data/<voice> --source recordings.zip --version 2.2   # a Bert-VITS2 2.2-CLAP voice
    python -m pipeline.prepare Data/<voice> --source rips/ --clean separate,denoise  # music and noise out first

Each stage runs as `python -m pipeline.<stage>` in a subprocess (or in this process with --in-process);
the chain stops at the first failed stage and says which and why. Every stage skips finished work, so
running the chain again continues where it stopped. (What the stage CLIs share is in pipeline/cli.py.)
--version 2.2 makes the voice a Bert-VITS2 2.2-CLAP voice (its config.json per the 2.2 defaults; the
features stage then also writes each clip's CLAP emotion file); the default is 2.3, or 2.2 by itself when a
2.2 base model is placed as models/G_0.pth (prep/voice_version.py).
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

from pipeline import cli
from prep.slicing import SliceOptions
from prep.transcribe import TranscribeOptions
from prep.voice_version import VERSIONS, base_model_version, set_voice_version
from vits.errors import KoeError
from vits.progress import format_progress

CLEAN_STEPS = ("separate", "denoise")  # pipeline.clean's flags, in the order it applies them
STAGES = ("ingest", "clean", "slice", "transcribe", "resample", "text", "features", "report")


# ---- the chain -----------------------------------------------------------------------------------

def stage_args(stage: str, voice: str, a: argparse.Namespace) -> list[str] | None:
    """Command-line arguments for one stage from prepare's options; None means skip the stage."""
    if stage == "ingest":
        if not a.source:
            return None
        return [a.source, voice] + (["--speaker", a.speaker] if a.speaker else [])
    if stage == "clean":  # only when asked: --clean denoise / separate / separate,denoise
        if not a.clean:
            return None
        return [voice, *(f"--{step}" for step in CLEAN_STEPS if step in a.clean)]
    args = [voice]
    if stage == "slice":
        args += ["--min", str(a.min), "--max", str(a.max), "--workers", str(a.workers)]
    elif stage == "transcribe":
        args += ["--language", a.language, "--beam-size", str(a.beam_size)]
        if a.whisper_model:
            args += ["--model", a.whisper_model]
        if a.prompt:
            args += ["--prompt", a.prompt]
        if a.device:
            args += ["--device", a.device]
    elif stage == "resample":
        args += ["--workers", str(a.workers)]
        if a.loudness is not None:
            args += ["--loudness", str(a.loudness)]
        if a.trim:
            args += ["--trim"]
    elif stage == "text" and a.batch_size:
        args += ["--batch-size", str(a.batch_size)]
    elif stage == "features" and a.device:
        args += ["--device", a.device]
    return args


def run_stage(stage: str, args: list[str], in_process: bool) -> int:
    """Run `pipeline.<stage>` with args; returns its exit code."""
    if in_process:
        try:
            module = importlib.import_module(f"pipeline.{stage}")
        except ImportError as exc:
            return cli.error("prepare", f"stage {stage} is not available ({exc})")
        return int(module.main(args) or 0)
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.call([sys.executable, "-m", f"pipeline.{stage}", *args], env=env)


def _clean_steps(value: str) -> tuple[str, ...]:
    steps = tuple(s.strip() for s in value.split(",") if s.strip())
    unknown = [s for s in steps if s not in CLEAN_STEPS]
    if unknown or not steps:
        raise argparse.ArgumentTypeError(f"unknown clean step(s) {', '.join(unknown) or value!r}: use denoise, "
                                         "separate or separate,denoise")
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("prepare", __doc__)
    parser.add_argument("voice", help=cli.VOICE_HELP)
    parser.add_argument("--stages", default=",".join(STAGES),
                        help="comma-separated stages to run, in chain order (default: all; ingest only with --source)")
    parser.add_argument("--source", help="folder, zip or audio file to ingest")
    parser.add_argument("--speaker", help="speaker for files not in a sub-folder (default: the voice name)")
    parser.add_argument("--clean", type=_clean_steps, default=(),
                        help="clean the recordings before slicing: denoise, separate or separate,denoise "
                             "(default: no cleaning)")
    parser.add_argument("--min", type=float, default=SliceOptions.min_seconds,
                        help="shortest clip in seconds (default %(default)s)")
    parser.add_argument("--max", type=float, default=SliceOptions.max_seconds,
                        help="longest clip in seconds (default %(default)s)")
    parser.add_argument("--language", default=TranscribeOptions.language, choices=["zh", "ja", "en", "ko", "auto"])
    parser.add_argument("--whisper-model", help="Whisper name or .pt path (default: config.yml)")
    parser.add_argument("--prompt", help="initial prompt for Whisper (names, style of punctuation)")
    parser.add_argument("--beam-size", type=int, default=TranscribeOptions.beam_size)
    parser.add_argument("--loudness", type=float, default=None, help="normalise clips to this LUFS (e.g. -23)")
    parser.add_argument("--trim", action="store_true", help="trim leading/trailing silence of clips")
    parser.add_argument("--batch-size", type=int, help="training batch size written to config.json")
    parser.add_argument("--device", help="cpu, cuda, cuda:0 ... (default: config.yml)")
    parser.add_argument("--workers", type=int, default=max(1, min(4, (os.cpu_count() or 2) // 2)))
    parser.add_argument("--version", choices=list(VERSIONS), default=None,
                        help="Bert-VITS2 version of a new voice: 2.3 (default) or 2.2 (CLAP emotion; for a 2.2 base model)")
    parser.add_argument("--config", help="config.yml to use (model folders, data root); default: the repo's")
    parser.add_argument("--in-process", action="store_true", help="run stages in this process, not subprocesses")
    a = parser.parse_args(argv)

    def body() -> int:
        if a.config:
            if not Path(a.config).is_file():
                raise KoeError("config file not found", where=a.config, fix="check the --config path")
            os.environ["KOE_CONFIG"] = str(Path(a.config).resolve())  # every stage reads settings from here
        wanted = [s.strip() for s in a.stages.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in STAGES]
        if unknown:
            raise KoeError(f"unknown stage(s) {', '.join(unknown)}", fix="choose from " + ", ".join(STAGES))
        if "ingest" in wanted and not a.source and a.stages != parser.get_default("stages"):
            raise KoeError("the ingest stage needs --source", fix="pass --source FOLDER_OR_ZIP")
        voice = str(cli.voice_path(a.voice, must_exist=bool(not a.source)))
        version = a.version or base_model_version(voice)
        if version:
            print(f"prepare: Bert-VITS2 {version} voice ({set_voice_version(voice, version)})", flush=True)
        chain = [s for s in STAGES if s in wanted]
        for i, stage in enumerate(chain):
            args = stage_args(stage, voice, a)
            if args is None:
                continue
            print(format_progress("prepare", step=i, total=len(chain), item=stage,
                                  message=f"stage {stage}"), flush=True)
            t0 = time.monotonic()
            code = run_stage(stage, args, a.in_process)
            if code != 0:
                cli.error("prepare", f"stage '{stage}' failed (exit {code}); the messages above say why. "
                                     "Fix it and run again: finished work is kept.")
                return code
            print(f"prepare: {stage} done in {time.monotonic() - t0:.1f} s", flush=True)
        print(format_progress("prepare", step=len(chain), total=len(chain), message="done"), flush=True)
        return 0

    return cli.run("prepare", body)


if __name__ == "__main__":
    sys.exit(main())
