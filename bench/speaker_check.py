"""Same-speaker check precision/recall (prep/speaker.py) on datasets made here.

    python bench/speaker_check.py [--clips 72]

Dataset 1 (one speaker): `--clips` clips of one espeak-ng voice (Harvard sentences at three speeds) with
10% clips of other voices inserted under the same speaker: other espeak voices (female and male variants),
the CMU ARCTIC human voice (arctic_a0007.wav from the pysptk sdist, see bench/clean.py) and the OpenJTalk
voice (pyopenjtalk-plus). Dataset 2 (two speakers): the same plus a second speaker of the voice, some of
whose clips are filed under the first: they should come out as "belongs to <speaker>?".
Prints precision and recall of the flags and the cost per clip of the embedding.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

HARVARD = [
    "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.", "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.", "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.", "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.", "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.", "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.", "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.", "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.", "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.", "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.", "The swan dive was far short of perfect.",
]
MAIN = "en"
SECOND = "en+f2"
INTRUDERS = ["en+f3", "en+m7", "en-us+f4", "en+m3", "en+f5", "en+croak"]
JAPANESE = ["今日はとても良い天気ですね。", "明日の会議は十時から始まります。"]


def speech(n: int, voice: str, offset: int = 0) -> list[np.ndarray]:
    """n clips at 16 kHz of `voice` reading Harvard sentences at 150/175/200 words per minute."""
    from helpers_audio import espeak_audio

    from prep.audio import resample

    out = []
    for k in range(n):
        audio, sr = espeak_audio(HARVARD[(k + offset) % len(HARVARD)], voice, speed=(150, 175, 200)[k % 3])
        out.append(resample(audio, sr, 16000))
    return out


def intruders(n: int) -> list[tuple[str, np.ndarray]]:
    """n clips of voices other than MAIN: other espeak voices, ARCTIC, OpenJTalk (16 kHz)."""
    import soundfile as sf
    from clean import arctic_wav
    from helpers_audio import japanese_audio

    from prep.audio import resample

    audio, sr = sf.read(str(arctic_wav()), dtype="float32")
    pool = [("arctic", resample(audio, sr, 16000))]
    for text in JAPANESE:
        audio, sr = japanese_audio(text)
        pool.append(("openjtalk", resample(audio, sr, 16000)))
    k = 0
    while len(pool) < n:
        voice = INTRUDERS[k % len(INTRUDERS)]
        pool.append((voice, speech(1, voice, offset=7 + k)[0]))
        k += 1
    return pool[:n]


def score(flagged: set[str], truth: set[str]) -> tuple[float, float]:
    hits = len(flagged & truth)
    return (hits / len(flagged) if flagged else 1.0), (hits / len(truth) if truth else 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=72, help="clips of the main speaker (default 72)")
    a = ap.parse_args()
    from prep.speaker import SpeakerEncoder, find_outliers, robust_centroid

    encoder = SpeakerEncoder()
    main_clips = speech(a.clips, MAIN)
    others = intruders(max(1, round(a.clips / 9)))  # 10% of the total
    second = speech(a.clips // 2, SECOND, offset=3)
    encoder.embed(main_clips[0])  # load the model outside the timing
    t0 = time.perf_counter()
    emb = {f"wavs/a/main_{i:03d}.wav": encoder.embed(x) for i, x in enumerate(main_clips)}
    seconds = sum(len(x) for x in main_clips) / 16000
    per_clip = (time.perf_counter() - t0) / len(main_clips)
    emb.update({f"wavs/a/intruder_{i:02d}_{name}.wav": encoder.embed(x) for i, (name, x) in enumerate(others)})
    speaker_of = {w: "a" for w in emb}
    truth = {w for w in emb if "intruder" in w}

    print(f"embedding: {per_clip * 1000:.0f} ms per clip on CPU (clips of {seconds / len(main_clips):.1f} s, "
          f"model loaded once)")
    outliers, summary = find_outliers(emb, speaker_of)
    flagged = {o.wav for o in outliers}
    p, r = score(flagged, truth)
    print(f"dataset 1: {len(main_clips)} clips of espeak '{MAIN}' + {len(others)} intruders "
          f"({', '.join(sorted({n for n, _ in others}))}): precision {p:.2f}, recall {r:.2f} "
          f"(median score {summary['a']['median']:.3f}, threshold {summary['a']['threshold']:.3f})")
    for o in outliers:
        print(f"  {o.score:.3f} {o.flag:18} {o.wav}")
    centroid = robust_centroid(np.stack(list(emb.values())))
    for w in sorted(truth - flagged):
        print(f"  {float(emb[w] @ centroid):.3f} missed            {w}")
    lowest = sorted(float(emb[w] @ centroid) for w in emb if w not in truth)[:3]
    print(f"  lowest scores of the real speaker's clips: {', '.join(f'{x:.3f}' for x in lowest)}")

    sweep = []
    for z in (2.0, 2.5, 3.0, 3.5):
        pz, rz = score({o.wav for o in find_outliers(emb, speaker_of, z=z)[0]}, truth)
        sweep.append(f"z={z:g}: P {pz:.2f} R {rz:.2f}")
    print("  threshold sweep (median - z x robust spread): " + "; ".join(sweep))

    # dataset 2: a second speaker "b"; a few of b's clips filed under a
    emb2 = dict(emb)
    speaker_of2 = dict(speaker_of)
    misfiled = set()
    for i, x in enumerate(second):
        wav = f"wavs/{'a' if i < 4 else 'b'}/second_{i:03d}.wav"
        emb2[wav] = encoder.embed(x)
        speaker_of2[wav] = "a" if i < 4 else "b"
        if i < 4:
            misfiled.add(wav)
    outliers2, _ = find_outliers(emb2, speaker_of2)
    flagged2 = {o.wav for o in outliers2}
    p2, r2 = score(flagged2, truth | misfiled)
    belongs = {o.wav for o in outliers2 if o.flag == "belongs to b?"}
    print(f"dataset 2: + speaker b (espeak '{SECOND}', {len(second) - 4} clips), 4 of b's clips filed under a: "
          f"precision {p2:.2f}, recall {r2:.2f}; 'belongs to b?' found {len(belongs & misfiled)}/4 "
          f"(plus {len(belongs - misfiled)} of the {len(truth)} intruders, {len(belongs & truth)} of them "
          f"flagged that way, closer to b than to a)")


if __name__ == "__main__":
    main()
