"""Voice folders as the studio sees them: list, create, import uploads safely, checkpoints, export.

Every path that comes from the browser (voice names, speaker names, uploaded file names, zip members)
goes through `Settings.voice_dir` / `safe_name` and a final "is it still inside Data/<voice>/" check.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import time
import zipfile
import zlib
from pathlib import Path

from prep.audio import probe_audio
from prep.ingest import check_free_space, extract_member, file_digest, member_size_problem, zip_members
from settings import Settings
from vits.config import write_text_atomic
from vits.errors import KoeError
from vits.lists import read_esd_list
from vits.voice_folder import (
    CONFIGS,
    ESD_LIST,
    EXPORT,
    LOGS,
    MODELS,
    RAW,
    WAVS,
    config_path,
    safe_name,
)

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus", ".wma", ".aiff", ".aif"}


def list_voices(settings: Settings) -> list[str]:
    """Names of the voice folders under the data root (hidden folders left out), sorted."""
    root = settings.data_root
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def create_voice(settings: Settings, name: str, version: str = "2.3") -> Path:
    """Create ``Data/<name>/`` with its sub-folders for Bert-VITS2 `version` ("2.3", or "2.2" = CLAP emotion,
    whose config.json is written now: prep/voice_version.py); returns it. An existing voice is switched to
    `version` when it differs. Raises KoeError for unsafe names, or a switch its checkpoints forbid."""
    from prep.voice_version import set_voice_version, voice_version

    name = (name or "").strip()
    if not re.fullmatch(r"[\w][\w.-]{0,63}", name):
        raise KoeError(f"invalid voice name {name!r}",
                       fix="use 1-64 letters, digits, '-', '_' or '.', not starting with '.' or '-'")
    voice_dir = settings.voice_dir(name)
    existed = voice_dir.is_dir()
    for sub in (RAW, WAVS, LOGS, MODELS, CONFIGS):
        (voice_dir / sub).mkdir(parents=True, exist_ok=True)
    if version != "2.3" or (existed and _is_22(voice_dir, voice_version)):
        set_voice_version(voice_dir, version)
    return voice_dir


def _is_22(voice_dir: Path, voice_version) -> bool:
    try:
        return voice_version(voice_dir) == "2.2"
    except KoeError:  # a broken config.json: the text stage reports it, creating the folder again does not
        return False


def _inside(base: Path, path: Path) -> Path:
    resolved = path.resolve()
    if not resolved.is_relative_to(base.resolve()):
        raise KoeError(f"{path.name!r} would be written outside {base}", fix="rename the file")
    return resolved


def _unique(path: Path) -> Path:
    if not path.exists():
        return path
    for i in range(1, 10000):
        candidate = path.with_name(f"{path.stem}_{i}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise KoeError(f"too many files named {path.name}")


def import_uploads(settings: Settings, voice: str, files: list[str | Path], speaker: str | None = None,
                   refused: list[tuple[str, str]] | None = None) -> list[str]:
    """Copy uploaded audio files and zips into ``raw/<speaker>/``; returns the paths added (relative).

    Zip members keep one sub-folder level as their speaker when no speaker is given. Members that are
    not audio, or whose names would escape the folder, are skipped. Members refused by the limits of
    `prep.ingest` (size, compression ratio, links, broken data) are appended to `refused` as (name, reason).
    Raises KoeError if nothing usable came or the disk is too full.
    """
    voice_dir = settings.voice_dir(voice)
    raw = voice_dir / RAW
    default_speaker = safe_name(speaker or voice)
    added: list[str] = []
    refused = [] if refused is None else refused
    for item in files or []:
        src = Path(item)
        if src.suffix.lower() == ".zip":
            added += _import_zip(voice_dir, src, speaker, refused)
            continue
        if src.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        if problem := _upload_problem(raw, src):
            refused.append((src.name, problem))
            continue
        target = _inside(raw, _unique(raw / default_speaker / safe_name(src.name)))
        check_free_space(raw, src.stat().st_size, src.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        added.append(target.relative_to(voice_dir.resolve()).as_posix())
    if not added:
        why = "; ".join(f"{name}: {reason}" for name, reason in refused)
        raise KoeError("no audio files in the upload" + (f" (refused {why})" if why else ""),
                       fix=f"upload {', '.join(sorted(AUDIO_SUFFIXES))} files or a zip of them")
    return added


def _import_zip(voice_dir: Path, src: Path, speaker: str | None, refused: list[tuple[str, str]]) -> list[str]:
    raw = voice_dir / RAW
    added = []
    try:
        archive = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError):
        raise KoeError("not a valid zip file", where=src.name, fix="re-create the zip") from None
    with archive:
        for info, name in zip_members(archive):  # names decoded with one encoding per archive
            parts = [p for p in name.replace("\\", "/").split("/") if p not in {"", ".", ".."}]
            if not parts or Path(parts[-1]).suffix.lower() not in AUDIO_SUFFIXES or parts[-1].startswith("."):
                continue
            problem = member_size_problem(info) or (
                "symbolic link in zip (refused)" if stat.S_ISLNK(info.external_attr >> 16) else None)
            if problem:
                refused.append((name, problem))
                continue
            spk = safe_name(speaker) if speaker else (safe_name(parts[-2]) if len(parts) > 1 else voice_dir.name)
            target = _inside(raw, _unique(raw / spk / safe_name(parts[-1])))
            check_free_space(raw, info.file_size, f"{src.name}: {name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                extract_member(archive, info, target, f"{src.name}: {name}")
            except KoeError:
                target.unlink(missing_ok=True)
                raise
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, zlib.error) as exc:
                target.unlink(missing_ok=True)
                refused.append((name, f"cannot unpack from zip ({exc})"))
                continue
            if problem := _upload_problem(raw, target, parts[-1]):
                target.unlink(missing_ok=True)
                refused.append((name, problem))
                continue
            added.append(target.relative_to(voice_dir.resolve()).as_posix())
    return added


def _upload_problem(raw: Path, src: Path, name: str | None = None) -> str | None:
    """Why an uploaded file is not added: empty, undecodable, or uploaded before (a file of the same name,
    or that name with the `_1`/` (2)` a clash adds, holding the same bytes is already in raw/)."""
    try:
        probe_audio(src)
    except KoeError as exc:
        return exc.problem
    base = Path(safe_name(name or src.name))
    same_name = re.compile(re.escape(base.stem) + r"(_\d+| \(\d+\))?" + re.escape(base.suffix), re.IGNORECASE)
    size, digest = src.stat().st_size, None
    for other in raw.rglob("*") if raw.is_dir() else []:
        if other == src or not same_name.fullmatch(other.name) or not other.is_file() or other.stat().st_size != size:
            continue
        digest = digest or file_digest(src)
        if file_digest(other) == digest:
            return f"already added as {other.relative_to(raw.parent).as_posix()} (same audio)"
    return None


def speakers(voice_dir: Path, config: Path | None = None) -> list[str]:
    """Speaker names from the voice's config.json (spk2id), in id order; [] when there is none."""
    path = config or config_path(voice_dir)
    try:
        spk2id = json.loads(Path(path).read_text(encoding="utf-8")).get("data", {}).get("spk2id", {})
    except (OSError, ValueError):
        return []
    return [name for name, _ in sorted(spk2id.items(), key=lambda kv: kv[1])]


def clip_durations(voice_dir: Path) -> list[float]:
    """Lengths in seconds of every clip under wavs/ (header read only)."""
    import soundfile as sf

    lengths = []
    for path in sorted((Path(voice_dir) / WAVS).rglob("*.wav")):
        try:
            info = sf.info(str(path))
        except RuntimeError:
            continue
        lengths.append(info.frames / max(info.samplerate, 1))
    return lengths


def newest_eval_audio(voice_dir: Path) -> tuple[Path, int | None] | None:
    """The newest wav under ``logs/eval/`` and the training step in its name (or folder), or None."""
    root = Path(voice_dir) / LOGS / "eval"
    wavs = [p for p in root.rglob("*.wav") if p.is_file()] if root.is_dir() else []
    # The trainer writes logs/eval/step_<step>/<i>_sdp0.wav, _sdp1.wav and the ground truth _gt.wav.
    generated = [p for p in wavs if not p.stem.endswith("_gt")] or wavs
    if not generated:
        return None

    def step_of(path: Path) -> int | None:
        match = re.search(r"step_(\d+)", path.relative_to(root).as_posix())
        if match:
            return int(match.group(1))
        numbers = re.findall(r"\d+", path.relative_to(root).as_posix())
        return int(max(numbers, key=int)) if numbers else None

    newest = max(generated, key=lambda p: (step_of(p) or -1, p.stat().st_mtime, -len(p.name), p.name))
    first = sorted(p for p in generated if p.parent == newest.parent)[0]
    return first, step_of(first)


def model_card(voice_dir: Path, step: int | None) -> str:
    """A README for an exported voice: data minutes, steps, languages, speakers, date."""
    voice_dir = Path(voice_dir)
    minutes = sum(clip_durations(voice_dir)) / 60
    languages, speaker_names = set(), set()
    for entry in read_esd_list(voice_dir / ESD_LIST)[0]:
        speaker_names.add(entry.speaker)
        languages.add(entry.language)
    speaker_names = speakers(voice_dir) or sorted(speaker_names)
    return "\n".join([
        f"# {voice_dir.name}",
        "",
        "A Bert-VITS2 2.3-compatible voice trained with Koe Studio.",
        "",
        "| | |",
        "|---|---|",
        f"| training data | {minutes:.1f} minutes |",
        f"| steps | {step if step is not None else 'unknown'} |",
        f"| languages | {', '.join(sorted(languages)) or 'unknown'} |",
        f"| speakers | {', '.join(speaker_names) or 'unknown'} |",
        f"| exported | {time.strftime('%Y-%m-%d')} |",
        "",
        "Files: `G_<step>.pth` (generator weights), `config.json`. Load with Bert-VITS2 2.3 or "
        "`vits.synthesis.Voice.load(folder)`.",
        "",
    ])


def zip_voice(voice_dir: Path, release: Path, step: int | None) -> Path:
    """Zip a release generator, config.json and a model card into ``export/<voice>-<date>.zip``; returns it."""
    voice_dir = Path(voice_dir)
    out_dir = voice_dir / EXPORT
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{voice_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}.zip"
    tmp = target.with_suffix(".zip.tmp")
    config = config_path(voice_dir)
    if not config.is_file():
        raise KoeError("the voice has no configs/config.json", where=str(voice_dir),
                       fix="run Preprocess first")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(release, f"{voice_dir.name}/{release.name}")
        archive.write(config, f"{voice_dir.name}/config.json")
        archive.writestr(f"{voice_dir.name}/README.md", model_card(voice_dir, step))
    tmp.replace(target)
    return target


def read_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""


def save_text_with_backup(path: Path, text: str) -> None:
    """Write a user-edited text file atomically, keeping the previous version as ``<name>.bak``."""
    path = Path(path)
    if path.is_file():
        shutil.copy2(path, path.with_name(path.name + ".bak"))
    write_text_atomic(path, text if text.endswith("\n") or not text else text + "\n")
