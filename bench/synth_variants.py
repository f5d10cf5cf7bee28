"""One synthesis variant timed in a fresh interpreter (run by bench/synthesize.py; prints `RESULT {json}`).

    .venv/bin/python bench/synth_variants.py plain|voice|onnx --mode synth|bert|first --phones 40 \
        --seconds 3.6 --threads 2 --repeat 3 [--audio out.npy]

Variants (same random weights, same inputs, same seed, so the same audio):
  plain  Bert-VITS2's infer path: SynthesizerTrn.infer in eval mode under torch.no_grad, weight norm
         recomputed on every call, 1-D convolutions, the C library's default malloc; its BERT is the full
         24-layer model run with output_hidden_states under no_grad, as Bert-VITS2's get_bert_feature.
  voice  vits.synthesis.Voice (folded weight norm, inference_mode, fused channels-last decoder, malloc
         kept); BERT as vits.text.bert.BertFeatures runs it (layers after 22 dropped, inference_mode).
  onnx   vits.onnx_runtime.OnnxSynthesizer on graphs exported here (BERT as for voice).
Modes: synth = phones -> audio; bert = one BERT forward for the sentence's characters + synth (BERT is the
real chinese-roberta-wwm-ext-large config with random weights, built from transformers.BertConfig, never
downloaded); first = time to the first audio of a 10-sentence text (a short first sentence): Bert-VITS2
returns after all sentences, Voice.stream yields after the first (frontend excluded: phones level).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# chinese-roberta-wwm-ext-large's config.json (the fields that set the compute)
BERT_LARGE = dict(vocab_size=21128, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  intermediate_size=4096, max_position_embeddings=512, type_vocab_size=2)
SEED = 7


def _inputs(torch, n: int, seed: int):
    from vits.symbols import intersperse

    gen = torch.Generator().manual_seed(seed)
    ids = intersperse(torch.randint(1, 103, (n,), generator=gen).tolist())
    t = len(ids)
    return ids, [0] * t, [0] * t, [torch.randn(1024, t, generator=gen) for _ in range(3)]


def _length_scale(torch, cfg, n: int, seconds: float) -> float:
    """The length_scale that gives about `seconds` of audio (durations only, no decoding)."""
    from vits.models import build_generator
    from vits.synthesis import Voice

    torch.manual_seed(0)
    hop = cfg.data.hop_length
    probe = Voice(build_generator(cfg), cfg, "cpu", decoder=lambda z, g: torch.zeros(z.shape[-1] * hop),
                  tune_malloc=False)
    ids, tones, langs, berts = _inputs(torch, n, 1)
    scale = 1.0
    for _ in range(4):
        samples = len(probe.synthesize_phones(ids, tones, langs, *berts, speaker=0, blanked=True,
                                              length_scale=scale, seed=SEED))
        scale *= seconds * cfg.data.sampling_rate / samples
    return scale


def _synthesizer(torch, variant: str, cfg, knobs: dict):
    """(fn(ids, tones, langs, berts, seed) -> float32 audio) for the variant."""
    import numpy as np

    from vits.models import build_generator, prepare_for_inference

    torch.manual_seed(0)
    model = build_generator(cfg)
    if variant == "plain":
        model.eval()

        def run(ids, tones, langs, berts, seed):
            with torch.no_grad():
                torch.manual_seed(seed)
                out = model.infer(torch.tensor([ids]), torch.tensor([len(ids)]), torch.tensor([0]),
                                  torch.tensor([tones]), torch.tensor([langs]), *(b[None] for b in berts), **knobs)
            return out[0].reshape(-1).numpy()
        return run
    if variant == "voice":
        from vits.synthesis import Voice

        del model.enc_q  # as Voice.load does
        voice = Voice(model, cfg, "cpu")
        return lambda ids, tones, langs, berts, seed: voice.synthesize_phones(
            ids, tones, langs, *berts, speaker=0, blanked=True, seed=seed, **knobs)
    from vits.onnx_export import export_onnx
    from vits.onnx_runtime import OnnxSynthesizer

    model = prepare_for_inference(model)
    del model.enc_q
    folder = tempfile.mkdtemp(prefix="koe-bench-onnx-")
    export_onnx(model, cfg, folder)
    synth = OnnxSynthesizer(folder, threads=torch.get_num_threads())
    frames: dict[tuple, int] = {}

    def run_onnx(ids, tones, langs, berts, seed):
        # The torch path's draws: randn(1, 2, T_x) for the SDP, then randn_like(m_p). m_p is a transposed
        # matmul ([1, C, T_y] view of [1, T_y, C] memory), and torch fills such a non-contiguous tensor with
        # its own per-element sampler, so the same values come from normal_() on the same transposed view
        # (randn on a contiguous tensor draws other numbers); T_y follows from the SDP noise.
        torch.manual_seed(seed)
        sdp = torch.randn(1, 2, len(ids))
        arrays = [np.asarray(v) for v in (ids, tones, langs)] + [b.numpy() for b in berts]
        key = (tuple(ids), seed)
        if key not in frames:  # found once (in the warm-up), outside the timed runs
            frames[key] = synth.infer(*arrays, speaker=0, sdp_noise=sdp[0].numpy(), seed=0, return_attn=True,
                                      **knobs)[1].shape[0]
        prior = torch.empty(1, frames[key], cfg.model.inter_channels).transpose(1, 2).normal_()
        return synth.infer(*arrays, speaker=0, sdp_noise=sdp[0].numpy(), prior_noise=prior[0].numpy(), **knobs)
    return run_onnx


def _bert(torch, variant: str):
    """(fn(n_tokens) -> [n_tokens, 1024] hidden state -3) as the variant runs BERT."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(**BERT_LARGE)).eval()
    if variant == "plain":
        def run(n):
            with torch.no_grad():
                out = model(input_ids=torch.arange(100, 100 + n)[None], output_hidden_states=True)
            return out.hidden_states[-3][0]
        return run
    model.encoder.layer = torch.nn.ModuleList(list(model.encoder.layer)[:22])  # as BertFeatures._load
    model.requires_grad_(False)

    def run_koe(n):
        with torch.inference_mode():
            out = model(input_ids=torch.arange(100, 100 + n)[None], output_hidden_states=True)
        return out.hidden_states[-1][0]
    return run_koe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variant", choices=("plain", "voice", "onnx"))
    parser.add_argument("--mode", choices=("synth", "bert", "first"), default="synth")
    parser.add_argument("--phones", type=int, default=40, help="phones per sentence (without blanks)")
    parser.add_argument("--seconds", type=float, default=3.6, help="audio per sentence (approx.)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs after one warm-up (best is reported)")
    parser.add_argument("--audio", help="save the synth mode's audio here (.npy) for the diff")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from vits.config import VoiceConfig
    from vits.defaults import SYNTHESIS

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    cfg = VoiceConfig()
    knobs = dict(sdp_ratio=SYNTHESIS.sdp_ratio, noise_scale=SYNTHESIS.noise_scale,
                 noise_scale_w=SYNTHESIS.noise_scale_w, length_scale=_length_scale(torch, cfg, args.phones,
                                                                                   args.seconds))
    synth = _synthesizer(torch, args.variant, cfg, knobs)
    sentence = _inputs(torch, args.phones, 1)
    if args.mode == "synth":
        def job():
            return synth(*sentence, SEED)
    elif args.mode == "bert":
        bert = _bert(torch, args.variant)

        def job():
            bert(args.phones // 2 + 2)  # ~2 phones per character, plus [CLS]/[SEP]
            return synth(*sentence, SEED)
    else:
        bert = _bert(torch, args.variant)
        short = max(6, args.phones // 4)
        text = [_inputs(torch, short, 2)] + [_inputs(torch, args.phones, 3 + i) for i in range(9)]

        def job():
            for i, (item, n) in enumerate(zip(text, [short] + [args.phones] * 9)):
                bert(n // 2 + 2)
                audio = synth(*item, SEED + i)
                if args.variant != "plain":
                    return audio  # Voice.stream yields here: the first audio
            return audio  # Bert-VITS2 answers once every sentence is done
    out = job()  # warm-up
    times, cpu = [], []
    for _ in range(args.repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = job()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    if args.audio:
        np.save(args.audio, np.asarray(out, dtype=np.float32))
    print("RESULT " + json.dumps({"best_s": min(times), "cpu_s": min(cpu), "audio_s": len(out) / cfg.data.sampling_rate}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
