"""One module per studio tab; each has `build(ctx)` and wires its events inside the open Blocks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from settings import Settings
from studio.jobs import Job, JobRunner
from vits.errors import KoeError


@dataclass
class Context:
    """What every tab needs: settings, the job runner, the shared voice picker and the refresh timer."""

    settings: Settings
    runner: JobRunner
    config_path: str | None
    voice: object = None  # gr.Dropdown
    timer: object = None  # gr.Timer
    allow_parallel_gpu: bool = False
    caches: dict = field(default_factory=dict)

    def voice_dir(self, voice: str | None) -> Path:
        """The selected voice's folder; raises KoeError when none is selected."""
        if not voice:
            raise KoeError("no voice selected", fix="create or pick a voice at the top of the page")
        path = self.settings.voice_dir(voice)
        if not path.is_dir():
            raise KoeError(f"voice {voice!r} does not exist", fix="create it at the top of the page")
        return path

    def env(self) -> dict[str, str]:
        """Environment for stage subprocesses: the studio's own config.yml and data root."""
        env = {"KOE_DATA_ROOT": str(self.settings.data_root)}
        if self.config_path:
            env["KOE_CONFIG"] = str(Path(self.config_path).resolve())
        return env

    def start(self, voice: str | None, stage: str, command) -> Job:
        """Start a stage command as a job of `voice` (raises KoeError when busy)."""
        return self.runner.start(voice, stage, command.argv, expected=command.expected, gpu=command.gpu,
                                 allow_parallel=self.allow_parallel_gpu, env=self.env())

    def latest(self, voice: str | None, stages: set[str]) -> Job | None:
        """The newest job of `voice` among `stages`."""
        if not voice:
            return None
        try:
            jobs = self.runner.jobs(voice)
        except KoeError:
            return None
        for job in jobs:
            if job.stage in stages:
                return job
        return None


def error_text(exc: Exception) -> str:
    """An error as UI markdown."""
    return f"❌ {exc}"


def unchanged_skip(seen: dict, key: str, value):
    """`value`, or gr.skip() when the page already shows it (keeps polling from re-rendering the page)."""
    import gradio as gr

    if seen.get(key) == value:
        return gr.skip()
    seen[key] = value
    return value
