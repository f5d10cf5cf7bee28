"""Health report of a dataset: what the model will train on and what is wrong with it, as report.json + report.txt.

Reads the folder and the stages' state files (ingest.json, slices.json, resample.json, esd.meta.json,
filelists/text_state.json); never changes the data.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from prep.audio import TARGET_RATE, count_clipped, silence_ratio
from prep.speaker import check_voice
from vits.config import VoiceConfig
from vits.errors import KoeError
from vits.fileio import read_json, write_json, write_text_atomic
from vits.lists import (
    CleanedLine,
    bert_path,
    parse_cleaned_line,
    read_cleaned_lines,
    read_esd_list,
    wav_field,
)
from vits.voice_folder import (
    CONFIG,
    ESD_LIST,
    ESD_META,
    INGEST,
    REPORT_JSON,
    REPORT_TXT,
    RESAMPLE,
    SLICES,
    TEXT_STATE,
    TRAIN_LIST,
    VAL_LIST,
    list_clips,
    resolve_wav,
)

BUCKET_BOUNDARIES = [32, 300, 400, 500, 600, 700, 800, 900, 1000]  # spec §10.2, unit = file bytes // 1024
MAX_PHONE_STRING = 384  # spec §10.1 loader filter on the raw phone string length
FEW_CLIPS = 5
FEW_MINUTES = 1.0


def sampler_drop_reason(file_bytes: int) -> str | None:
    """Why the bucket sampler (spec §10.2) would drop a clip of this many bytes, or None when kept."""
    unit = file_bytes // 1024
    if unit <= BUCKET_BOUNDARIES[0]:
        return f"too short: length unit {unit} <= {BUCKET_BOUNDARIES[0]} (about 0.38 s)"
    if unit > BUCKET_BOUNDARIES[-1]:
        return f"too long: length unit {unit} > {BUCKET_BOUNDARIES[-1]} (about 11.6 s)"
    return None


def _read_list(path: Path, voice_dir: Path) -> list[tuple[str, CleanedLine | KoeError]]:
    """(wav field, parsed line or why it is unusable) per line of a cleaned list; [] when missing."""
    if not path.is_file():
        return []
    out = []
    for where, line in read_cleaned_lines(path):
        try:
            out.append((wav_field(line), parse_cleaned_line(line, where, voice_dir)))
        except KoeError as exc:
            out.append((wav_field(line), exc))
    return out


def _clip_stats(path: Path) -> dict:
    import soundfile as sf

    info = sf.info(str(path))
    stats = {"seconds": info.frames / info.samplerate, "rate": info.samplerate, "channels": info.channels,
             "subtype": info.subtype, "bytes": path.stat().st_size}
    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    stats["clipped"] = count_clipped(mono)
    stats["silence_ratio"] = round(silence_ratio(mono, sr), 3)
    return stats


def build_report(voice_dir: str | os.PathLike, progress=None) -> dict:
    """Collect the health report of a voice folder. Returns the report dict (see report.txt for the layout)."""
    voice_dir = Path(voice_dir)
    clips = list_clips(voice_dir)
    stats: dict[str, dict] = {}
    unreadable = []
    for i, (clip, _) in enumerate(clips, 1):
        try:
            stats[clip] = _clip_stats(voice_dir / clip)
        except (RuntimeError, OSError, ValueError) as exc:
            unreadable.append({"clip": clip, "reason": str(exc)})
        if progress:
            progress(i, len(clips), clip)
    speaker_of = dict(clips)
    try:  # same-speaker check (prep/speaker.py): GE2E similarity of each clip to its speaker
        outliers, speaker_check = check_voice(voice_dir, [(c, speaker_of[c]) for c in stats], progress=progress and (
            lambda done, total, wav: progress(done, total, f"speaker check: {wav}")))
    except KoeError as exc:
        outliers, speaker_check = [], {"error": str(exc)}

    cfg_path = voice_dir / CONFIG
    cfg = VoiceConfig.load(cfg_path) if cfg_path.is_file() else VoiceConfig()
    lists = {"train": _read_list(voice_dir / cfg.data.training_files, voice_dir),
             "val": _read_list(voice_dir / cfg.data.validation_files, voice_dir)}
    if not (voice_dir / cfg.data.training_files).is_file():
        lists["train"] = _read_list(voice_dir / TRAIN_LIST, voice_dir)
        lists["val"] = _read_list(voice_dir / VAL_LIST, voice_dir)

    # Per speaker: all clips in wavs/ and the ones in the training lists.
    speakers: dict[str, dict] = defaultdict(lambda: {"clips": 0, "minutes": 0.0, "train_clips": 0,
                                                     "train_minutes": 0.0, "val_clips": 0, "silence_ratio": 0.0,
                                                     "clipped_clips": 0})
    for clip, st in stats.items():
        sp = speakers[speaker_of[clip]]
        sp["clips"] += 1
        sp["minutes"] += st["seconds"] / 60
        sp["silence_ratio"] += st["silence_ratio"] * st["seconds"]  # duration-weighted, divided below
        sp["clipped_clips"] += bool(st["clipped"])
    sampler_drops, text_drops, wrong_format, missing_bert = [], [], [], []
    for split, rows in lists.items():
        for wav, row in rows:
            if isinstance(row, KoeError):
                text_drops.append({"wav": wav, "reason": f"{split}.list: {row.problem}"})
                continue
            speaker, phone_string = row.speaker, " ".join(row.phones)
            found = resolve_wav(voice_dir, wav)
            if found is None:
                sampler_drops.append({"wav": wav, "reason": "file missing"})
                continue
            if not bert_path(found[1]).is_file():
                missing_bert.append({"wav": wav, "fix": "run the features stage (Preprocess → Features)"})
            st = stats.get(found[0])
            if st is None:
                try:
                    st = _clip_stats(found[1])
                except (RuntimeError, OSError, ValueError) as exc:
                    sampler_drops.append({"wav": wav, "reason": f"unreadable: {exc}"})
                    continue
            sp = speakers[speaker]
            if split == "train":
                sp["train_clips"] += 1
                sp["train_minutes"] += st["seconds"] / 60
            else:
                sp["val_clips"] += 1
            why = sampler_drop_reason(st["bytes"])
            if why and split == "train":
                sampler_drops.append({"wav": wav, "seconds": round(st["seconds"], 2), "reason": why})
            if not 1 <= len(phone_string) <= MAX_PHONE_STRING:
                text_drops.append({"wav": wav, "reason": f"phone string is {len(phone_string)} characters; the loader "
                                                         f"keeps 1..{MAX_PHONE_STRING}"})
            if (st["rate"], st["channels"], st["subtype"]) != (cfg.data.sampling_rate, 1, "PCM_16"):
                wrong_format.append({"wav": wav, "format": f"{st['rate']} Hz, {st['channels']} ch, {st['subtype']}",
                                     "fix": "run the resample stage"})

    seconds = [st["seconds"] for st in stats.values()]
    edges = list(range(0, 13)) + [float("inf")]
    counts = np.histogram(seconds, bins=edges)[0].tolist() if seconds else [0] * 13
    histogram = [{"from_s": edges[i], "to_s": None if edges[i + 1] == float("inf") else edges[i + 1],
                  "clips": counts[i]} for i in range(len(counts))]

    slices = read_json(voice_dir / SLICES, {})
    resample_state = read_json(voice_dir / RESAMPLE, {})
    format_fixes = Counter()
    for entry in slices.values():
        if entry.get("error"):
            continue  # no clip came out of it, so nothing was converted
        for fix in (entry.get("info") or {}).get("fixes", []):
            format_fixes[_fix_kind(fix)] += 1
    for entry in resample_state.values():
        for fix in entry.get("fixes", []):
            format_fixes[_fix_kind(fix)] += 1
    source_problems = [{"source": k, "reason": v["error"]} for k, v in slices.items() if v.get("error")]
    dropped_speech = [{"source": k, "piece": d} for k, v in slices.items() for d in v.get("dropped", [])]
    ingest = read_json(voice_dir / INGEST, {})
    meta = read_json(voice_dir / ESD_META, {}).get("clips", {})
    listed = {e.wav for e in read_esd_list(voice_dir / ESD_LIST)[0]}
    # Flagged clips the user has since put back into esd.list are no longer left out.
    flagged = [{"wav": k, "flags": v.get("flags", []), "text": v.get("text", "")}
               for k, v in meta.items() if v.get("excluded") and k not in listed]
    low_conf = [k for k, v in meta.items() if "low_confidence" in v.get("flags", []) and not v.get("excluded")]
    text_state = read_json(voice_dir / TEXT_STATE, {})
    clipping = sorted(({"clip": c, "clipped_samples": st["clipped"]} for c, st in stats.items() if st["clipped"]),
                      key=lambda d: -d["clipped_samples"])
    silent = sorted(({"clip": c, "silence_ratio": st["silence_ratio"]} for c, st in stats.items()
                     if st["silence_ratio"] > 0.5), key=lambda d: -d["silence_ratio"])
    little = []
    for name, sp in speakers.items():
        used = sp["train_clips"] + sp["val_clips"]
        n, minutes = (used, sp["train_minutes"]) if lists["train"] else (sp["clips"], sp["minutes"])
        if n < FEW_CLIPS or minutes < FEW_MINUTES:
            little.append({"speaker": name, "clips": n, "minutes": round(minutes, 2),
                           "why": f"fewer than {FEW_CLIPS} clips" if n < FEW_CLIPS else
                           f"less than {FEW_MINUTES:g} minute of audio"})
    for sp in speakers.values():
        sp["silence_ratio"] = round(sp["silence_ratio"] / (sp["minutes"] * 60), 3) if sp["minutes"] else 0.0
        for key in ("minutes", "train_minutes"):
            sp[key] = round(sp[key], 2)

    report = {
        "voice": voice_dir.name,
        "clips": len(stats),
        "minutes": round(sum(seconds) / 60, 2),
        "train_lines": len(lists["train"]),
        "val_lines": len(lists["val"]),
        "speakers": dict(speakers),
        "clip_length_histogram": histogram,
        "sampler_drops": sampler_drops,
        "loader_text_drops": text_drops,
        "wrong_format": wrong_format,
        "missing_bert_features": missing_bert,
        "format_fixes": dict(format_fixes),
        "clipping": clipping,
        "mostly_silent": silent,
        "unreadable_clips": unreadable,
        "ingest_rejected": ingest.get("rejected", []),
        "source_problems": source_problems,
        "dropped_speech": dropped_speech,
        "transcription_flagged": flagged,
        "low_confidence": low_conf,
        "text_dropped": text_state.get("dropped", []),
        "text_notes": text_state.get("notes", {}),
        "text_messages": text_state.get("messages", []),
        "too_little_data": little,
        "speaker_outliers": [o.to_dict() for o in outliers],
        "speaker_check": speaker_check,
        "batch_size": cfg.train.batch_size,
        "suggested_batch_size": text_state.get("suggested_batch_size"),
        "sample_rate": TARGET_RATE,
    }
    report["problems"] = _headline(report)
    report["clip_problems"] = _clip_problems(report)
    return report


def _speaker_why(d: dict) -> str:
    """What set a same-speaker flag: the GE2E similarity and, when recorded, each cue's deviation."""
    parts = [f"GE2E similarity {d['similarity']:.2f}"] if isinstance(d.get("similarity"), int | float) else []
    if d.get("why"):
        parts.append(f"deviations: {d['why']}")
    return "; ".join(parts) or "no detail recorded"


def _clip_problems(r: dict) -> list[dict]:
    """Every per-clip finding as {"wav", "problem"} (wav relative to the voice folder), for review tables."""
    out = [{"wav": d["wav"], "problem": "BERT features missing (.bert.pt)"} for d in r["missing_bert_features"]]
    out += [{"wav": d["wav"], "problem": f"sampler drops it: {d['reason']}"} for d in r["sampler_drops"]]
    out += [{"wav": d["wav"], "problem": d["reason"]} for d in r["loader_text_drops"]]
    out += [{"wav": d["wav"], "problem": f"wrong format ({d['format']})"} for d in r["wrong_format"]]
    out += [{"wav": d["clip"], "problem": f"clipping ({d['clipped_samples']} samples)"} for d in r["clipping"]]
    out += [{"wav": d["clip"], "problem": f"{d['silence_ratio']:.0%} silence"} for d in r["mostly_silent"]]
    out += [{"wav": d["clip"], "problem": f"unreadable: {d['reason']}"} for d in r["unreadable_clips"]]
    out += [{"wav": d["wav"], "problem": f"{d['flag']} match {d['score']:.2f} to {d['speaker']} (its clips: above "
                                         f"{d['threshold']:.2f}; {_speaker_why(d)}); listen"} for d in r["speaker_outliers"]]
    out += [{"wav": d["wav"], "problem": f"left out after transcription: {', '.join(d['flags'])}"}
            for d in r["transcription_flagged"]]
    out += [{"wav": d["wav"], "problem": f"esd.list line {d['line_no']}: {d['kind']}: {d['reason']}"}
            for d in r["text_dropped"]]
    return out


def _fix_kind(fix: str) -> str:
    """Group 'stereo -> mono', '48000 Hz -> 44100 Hz' etc. into countable kinds."""
    if "channels" in fix:
        return "channels -> mono"
    if " Hz -> " in fix:
        return "sample rate: " + fix
    if "16-bit" in fix:
        return "bit depth: " + fix
    if "loudness" in fix:
        return "loudness normalised"
    if "trimmed" in fix:
        return "silence trimmed"
    return fix


def _headline(r: dict) -> list[str]:
    out = []
    if not r["train_lines"]:
        out.append("no training list yet: run the text stage")
    for key, what in (("sampler_drops", "clips the bucket sampler will drop"),
                      ("loader_text_drops", "lines the loader will skip for their text length"),
                      ("wrong_format", "clips not 44.1 kHz mono 16-bit"),
                      ("missing_bert_features", "list lines without BERT features (.bert.pt): training fails "
                                                "on them; run the features stage"),
                      ("unreadable_clips", "unreadable clips"),
                      ("ingest_rejected", "files refused at ingest"),
                      ("source_problems", "source files that gave no clips"),
                      ("transcription_flagged", "clips left out after transcription"),
                      ("text_dropped", "esd.list lines dropped by the text stage"),
                      ("clipping", "clips with clipping"),
                      ("too_little_data", "speakers with too little data")):
        if r[key]:
            out.append(f"{len(r[key])} {what}")
    for flag, n in Counter(d["flag"] for d in r["speaker_outliers"]).items():
        out.append(f"{flag} {n} clip{'s' * (n != 1)}, listen (similarity below their speaker's; see below)")
    if r["speaker_check"].get("error"):
        out.append(f"same-speaker check not run: {r['speaker_check']['error']}")
    return out


def format_report(r: dict) -> str:
    """The readable report.txt."""
    lines = [f"Health report for voice '{r['voice']}'", "",
             f"{r['clips']} clips, {r['minutes']:.1f} minutes; train.list {r['train_lines']} lines, "
             f"val.list {r['val_lines']} lines; batch size {r['batch_size']}"
             + (f" (suggested for this GPU: {r['suggested_batch_size']})" if r["suggested_batch_size"] else ""),
             ""]
    lines.append("Problems: none" if not r["problems"] else "Problems:")
    lines += [f"  - {p}" for p in r["problems"]]
    lines += ["", "Speakers (all clips / in train.list / in val.list; silence share; clips with clipping):"]
    for name, sp in r["speakers"].items():
        lines.append(f"  {name}: {sp['clips']} clips {sp['minutes']:.2f} min / {sp['train_clips']} clips "
                     f"{sp['train_minutes']:.2f} min / {sp['val_clips']} clips; {sp['silence_ratio']:.0%} silence; "
                     f"{sp['clipped_clips']} clipped")
    lines += ["", "Clip lengths:"]
    top = max((h["clips"] for h in r["clip_length_histogram"]), default=0) or 1
    for h in r["clip_length_histogram"]:
        label = f"{h['from_s']:>2}-{h['to_s']:<2} s" if h["to_s"] is not None else f"{h['from_s']:>2}+    s"
        lines.append(f"  {label} {h['clips']:5d} {'#' * round(40 * h['clips'] / top)}")

    def section(title, items, fmt):
        if items:
            lines.extend(["", f"{title} ({len(items)}):"] + [f"  {fmt(x)}" for x in items[:200]])
            if len(items) > 200:
                lines.append(f"  ... and {len(items) - 200} more (see report.json)")

    section("Clips the bucket sampler drops (spec §10.2)", r["sampler_drops"], lambda x: f"{x['wav']}: {x['reason']}")
    section("Lines the loader skips", r["loader_text_drops"], lambda x: f"{x['wav']}: {x['reason']}")
    section("Clips in the wrong format", r["wrong_format"], lambda x: f"{x['wav']}: {x['format']} -> {x['fix']}")
    section("Lines without BERT features", r["missing_bert_features"], lambda x: f"{x['wav']}: {x['fix']}")
    section("Format fixes applied", list(r["format_fixes"].items()), lambda x: f"{x[0]}: {x[1]} files")
    section("Clips with clipping", r["clipping"], lambda x: f"{x['clip']}: {x['clipped_samples']} samples")
    section("Mostly silent clips", r["mostly_silent"], lambda x: f"{x['clip']}: {x['silence_ratio']:.0%} silence")
    section("Unreadable clips", r["unreadable_clips"], lambda x: f"{x['clip']}: {x['reason']}")
    section("Files refused at ingest", r["ingest_rejected"], lambda x: f"{x[0]}: {x[1]}")
    section("Source files without clips", r["source_problems"], lambda x: f"{x['source']}: {x['reason']}")
    section("Speech pieces too short to keep", r["dropped_speech"], lambda x: f"{x['source']}: {x['piece']}")
    section("Clips left out after transcription", r["transcription_flagged"],
            lambda x: f"{x['wav']}: {', '.join(x['flags'])} {x['text'][:40]!r}")
    section("esd.list lines the text stage dropped", r["text_dropped"],
            lambda x: f"line {x['line_no']} {x['wav']}: {x['kind']}: {x['reason']}")
    section("Lines partly converted", list(r["text_notes"].items()), lambda x: f"{x[0]}: {'; '.join(x[1])}")
    section("Text stage notes", r["text_messages"], str)
    section("Clips that may be another speaker (match to their speaker's voice, timbre and pitch; listen, nothing "
            "was dropped)", r["speaker_outliers"],
            lambda x: f"{x['wav']}: {x['flag']} match {x['score']:.2f} < {x['threshold']:.2f} ({_speaker_why(x)})")
    section("Speakers with too little data", r["too_little_data"],
            lambda x: f"{x['speaker']}: {x['clips']} clips, {x['minutes']} min ({x['why']})")
    return "\n".join(lines) + "\n"


def write_report(voice_dir: str | os.PathLike, progress=None) -> dict:
    """Build the report and write report.json and report.txt into the voice folder. Returns the report."""
    voice_dir = Path(voice_dir)
    report = build_report(voice_dir, progress)
    write_json(voice_dir / REPORT_JSON, report)
    write_text_atomic(voice_dir / REPORT_TXT, format_report(report))
    return report
