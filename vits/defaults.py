"""The synthesis knobs and their defaults, written once; every caller (Voice, the ONNX runtime, the CLI,
the studio, the API) takes its defaults from here.

Training knobs (batch size, learning rate, intervals ...) have their defaults in one place too: the typed
config (vits/config.py), which a voice's `configs/config.json` overrides.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SynthesisDefaults:
    """Bert-VITS2's own inference defaults (webui / infer.py), except where noted."""

    sdp_ratio: float = 0.5      # share of the stochastic duration predictor (0 = deterministic DP only)
    noise_scale: float = 0.6    # prior noise: variety of intonation
    noise_scale_w: float = 0.9  # SDP noise: variety of rhythm
    length_scale: float = 1.0   # speaking rate (>1 slower)
    pause: float = 0.2          # seconds of silence between sentences
    language: str = "ZH"
    style_weight: float = 0.7   # spec 2.3 §7.7, for style text


SYNTHESIS = SynthesisDefaults()

# The hiyoriUI-compatible HTTP API keeps hiyoriUI's documented default sdp_ratio (0.2) so bots that call
# /voice without the parameter hear what they heard from Bert-VITS2's server; docs/api.md says so.
HIYORI_SDP_RATIO = 0.2
HIYORI_NOISE = 0.2  # hiyoriUI's `noise` (noise_scale) default, for the same reason

# The Synthesize tab starts on AUTO (the language told per sentence), so whatever a new user types is read
# in its own language the first time; the library, the CLI and the API default to SYNTHESIS.language.
STUDIO_LANGUAGE = "AUTO"
