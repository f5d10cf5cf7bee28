"""What a failed job's log says went wrong, in plain words: the error line and a hint that names the fix.

The hint is derived from the error itself. Our own errors (`vits.errors.KoeError`) end with "→ fix": that
fix is the hint. Failures that are not ours (out of memory, a full disk, a missing package, a tool's
"not found") are recognised by their own wording; a keyword guess never overrides our error's fix.
"""

from __future__ import annotations

import re

from settings import Settings
from vits.progress import parse_progress

# Where a traceback or a stage names what failed, newest last.
_ERROR = re.compile(r"^(error: |[\w.]*(Error|Exception)\b[^\n]*: |KoeError|Traceback)", re.IGNORECASE)


def error_line(lines: list[str]) -> str | None:
    """The line of a log that says what failed: the newest `error: …` line (the stages' one-line error),
    else the newest `SomethingError: …` line of a traceback; None when there is none."""
    lines = [line for line in lines if parse_progress(line) is None]
    for line in reversed(lines):
        if line.startswith("error: "):
            return line
    for line in reversed(lines):
        stripped = line.strip()
        if _ERROR.match(stripped) and not stripped.startswith("Traceback"):
            return stripped
    return None


def _own_fix(line: str | None) -> str | None:
    if line and "→" in line:
        return line.split("→", 1)[1].strip() or None
    return None


def failure_hint(lines: list[str], settings: Settings | None = None) -> str | None:
    """A plain-words hint for the failure in the log `lines`, or None.

    Takes the last lines of a job log (and the settings, to name the model folders); returns a hint.
    """
    lines = [line for line in lines if parse_progress(line) is None]
    text = "\n".join(lines)

    def folder(path, default):
        return str(path) if path else default

    bert = ", ".join(f"{k}: {v}" for k, v in (settings.bert.items() if settings else []))
    # Failures of the machine, not of a file: their wording is unambiguous.
    resources = [
        (r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory|HIP out of memory",
         "The GPU ran out of memory: lower the batch size in the Train tab (halve it) or turn on bf16, "
         "then Resume."),
        (r"DefaultCPUAllocator: can't allocate memory|\bMemoryError\b|Cannot allocate memory",
         "The machine ran out of RAM: lower the batch size (or the number of GPUs/workers)."),
        (r"No space left on device",
         "The disk is full: delete old checkpoints in Data/<voice>/models or move Data to a larger disk "
         "(--root)."),
        (r"this voice is already training: (pid \d+ on [^,(]+)",
         "This voice is already being trained by another run ({0}); wait for it or stop it, then press Resume."),
        (r"Address already in use|EADDRINUSE",
         "The torchrun port is busy: another training is running; stop it first."),
        (r"ModuleNotFoundError: No module named '([\w.]+)'",
         "A Python package is missing: run `bash scripts/setup.sh` again."),
    ]
    # A model folder that is not there, as a foreign library words it (our own errors carry their fix).
    folders = [
        (r"(bert|roberta|deberta)[^\n]*(folder|model|directory)[^\n]*(not found|missing|does not exist|"
         r"no such file|is not a folder)",
         "A BERT model folder is missing: put the three BERT models where config.yml says "
         f"({bert or 'models/bert/<name>'}), press 'Download BERT + WavLM' in the Train tab, or run "
         "python -m pipeline.download bert."),
        (r"wavlm[^\n]*(not found|missing|does not exist|no such file)|(not found|missing)[^\n]*wavlm",
         "The WavLM model folder is missing: put microsoft/wavlm-base-plus at "
         f"{folder(settings.wavlm if settings else None, 'models/slm/wavlm-base-plus')}, "
         "press 'Download BERT + WavLM' in the Train tab, or run python -m pipeline.download wavlm."),
        (r"base model[^\n]*(not found|missing|does not exist)|(not found|missing)[^\n]*base model",
         "The base model is missing: press 'Download base model' in the Train tab (a mirror can be chosen), "
         "run python -m pipeline.download base, or put "
         f"G_0.pth/D_0.pth/DUR_0.pth/WD_0.pth in "
         f"{folder(settings.base_model_folder if settings else None, 'models/base/bert-vits2-2.3')}."),
        (r"whisper[^\n]*(not found|missing|does not exist)",
         "The Whisper model is missing: put the .pt file in "
         f"{folder(settings.whisper_root if settings else None, 'models/whisper')}, run "
         "python -m pipeline.download whisper, or pick a smaller model."),
    ]

    def match(rules):
        for pattern, hint in rules:
            if found := re.search(pattern, text, re.IGNORECASE):
                return hint.format(*(g.strip() for g in found.groups() if g)) if "{0}" in hint else hint
        return None

    if hint := match(resources):
        return hint
    if hint := _own_fix(error_line(lines)):
        return hint
    if hint := match(folders):
        return hint
    # Another of our errors earlier in the log (a warning, a clip): its fix.
    for line in reversed(lines):
        if hint := _own_fix(line):
            return hint
    return None
