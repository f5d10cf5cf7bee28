"""Resample stage: make every clip in wavs/ 44.1 kHz mono 16-bit (soxr), optionally -23 LUFS and trimmed.

Works in place, atomically, in parallel processes. `resample.json` remembers each clip's size/mtime
and the settings it was processed with, so re-runs only touch new or changed clips. Clips already in
the target format are not rewritten unless loudness/trim were asked for.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from prep.audio import TARGET_RATE, conform_clip, probe_audio
from vits.errors import KoeError
from vits.fileio import read_json, write_json
from vits.voice_folder import RESAMPLE, WAVS, file_stamp, list_clips


def _needs_work(path: Path, settings: dict) -> bool:
    if settings["loudness"] is not None or settings["trim_db"] is not None:
        return True
    info = probe_audio(path)
    return not (info.sample_rate == settings["sample_rate"] and info.channels == 1 and info.subtype == "PCM_16")


def _process(args) -> dict:
    path, settings = args
    try:
        if not _needs_work(path, settings):
            return {"fixes": [], "clipped": 0}
        fix = conform_clip(path, sample_rate=settings["sample_rate"], quality=settings["quality"],
                           loudness=settings["loudness"], trim_db=settings["trim_db"])
        return {"fixes": fix.fixes, "clipped": fix.clipped}
    except KoeError as exc:
        return {"error": exc.problem}


def resample_voice(voice_dir: str | os.PathLike, *, sample_rate: int = TARGET_RATE, quality: str = "VHQ",
                   loudness: float | None = None, trim_db: float | None = None, workers: int = 1,
                   force: bool = False, progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Conform every clip under wavs/ that is new, changed, or was processed with other settings.

    Takes: voice folder; target rate; soxr quality HQ/VHQ; loudness target in LUFS (None = off);
    trim threshold in dB below peak (None = off); worker processes; `force` redoes every clip.
    Returns: {"processed": n, "skipped": n, "errors": [(clip, reason)], "fixes": {clip: [...]}}.
    Raises: KoeError when wavs/ has no clips or `quality` is unknown.
    """
    voice_dir = Path(voice_dir)
    if quality not in ("HQ", "VHQ"):
        raise KoeError(f"unknown resampling quality {quality!r}", fix="use HQ or VHQ")
    clips = list_clips(voice_dir)
    if not clips:
        raise KoeError("no clips in wavs/", where=str(voice_dir / WAVS),
                       fix="run the slice stage first, or put 44.1 kHz wav clips in wavs/<speaker>/")
    settings = {"sample_rate": sample_rate, "quality": quality, "loudness": loudness, "trim_db": trim_db}
    manifest_path = voice_dir / RESAMPLE
    manifest = {} if force else read_json(manifest_path, {})
    todo = []
    for clip, _ in clips:
        old = manifest.get(clip)
        if not (old and old.get("stamp") == file_stamp(voice_dir / clip) and old.get("settings") == settings):
            todo.append(clip)
    summary = {"processed": 0, "skipped": len(clips) - len(todo), "errors": [], "fixes": {}}
    total, done = len(clips), len(clips) - len(todo)
    if progress:
        progress(done, total, "")
    jobs = [(voice_dir / c, settings) for c in todo]
    workers = min(workers, max(1, len(jobs) // 8))  # a process pool only pays off beyond a few clips
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        import pyloudnorm  # noqa: F401 - imported once here so forked workers inherit it
        import soxr  # noqa: F401

        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_process, jobs, chunksize=8)
    else:
        pool, results = None, map(_process, jobs)
    try:
        for clip, res in zip(todo, results):
            done += 1
            if "error" in res:
                summary["errors"].append((clip, res["error"]))
                manifest.pop(clip, None)
            else:
                summary["processed"] += 1
                if res["fixes"]:
                    summary["fixes"][clip] = res["fixes"]
                manifest[clip] = {"stamp": file_stamp(voice_dir / clip), "settings": settings,
                                  "fixes": res["fixes"] or manifest.get(clip, {}).get("fixes", []),
                                  "clipped": res["clipped"]}
            if progress:
                progress(done, total, clip)
            if done % 200 == 0:
                write_json(manifest_path, manifest)
    finally:
        if pool:
            pool.shutdown()
        write_json(manifest_path, manifest)
    return summary
