"""A tiny random CLAP model folder (laion/clap-htsat-fused's layout) that loads offline, and a tiny voice.

`write_tiny_voice(root)` writes Data/<name>/ with a random tiny 2.2 (or 2.3) generator. `make_tiny_clap(folder)` saves a ClapModel (HTSAT audio tower with fusion, RoBERTa text tower, 512-d
projection), its ClapFeatureExtractor (48 kHz, fusion/repeatpad as the real preprocessor_config.json) and a
byte-level BPE tokenizer whose vocabulary is the 256 byte symbols (no merges), so any text tokenizes.
"""

from __future__ import annotations

import json
from pathlib import Path


def _byte_symbols() -> list[str]:
    # GPT-2 / RoBERTa's byte-to-unicode table: every byte gets a printable symbol
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def make_tiny_clap(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random CLAP model to `folder`; returns it. Takes about a second."""
    import torch
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
        RobertaTokenizer,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + _byte_symbols() + ["<mask>"])}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = RobertaTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=64)
    tokenizer.save_pretrained(folder)

    text = ClapTextConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=80, projection_dim=512,
                          pad_token_id=1, bos_token_id=0, eos_token_id=2)
    audio = ClapAudioConfig(depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1], patch_embeds_hidden_size=8,
                            hidden_size=64, enable_fusion=True, fusion_type="aff_2d", projection_dim=512,
                            num_classes=4)
    config = ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=512)
    torch.manual_seed(seed)
    ClapModel(config).save_pretrained(folder)
    ClapFeatureExtractor(feature_size=64, sampling_rate=48000, hop_length=480, max_length_s=10, fft_window_size=1024,
                         padding_value=0.0, frequency_min=50, frequency_max=14000, truncation="fusion",
                         padding="repeatpad").save_pretrained(folder)
    return folder


TINY_MODEL = {
    "inter_channels": 16, "hidden_channels": 16, "filter_channels": 32, "n_heads": 2, "n_layers": 3,
    "upsample_initial_channel": 32, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]],
    "gin_channels": 8, "n_flow_layer": 2, "n_layers_trans_flow": 3,
}


def write_tiny_voice(root: str | Path, name: str = "emo", version: str = "2.2") -> Path:
    """Data/<name> under `root`: a random tiny G_100.pth of `version` (speakers alice, bob) and its config.

    In a 2.2 voice the emotion projection is scaled up, so that different prompts give audibly different audio.
    """
    import torch

    from vits.checkpoints import save_checkpoint
    from vits.config import VoiceConfig
    from vits.models import build_generator
    from vits.voice_folder import config_path, models_dir

    voice = Path(root) / "Data" / name
    cfg = VoiceConfig.model_validate({"version": version, "data": {"n_speakers": 2, "spk2id": {"alice": 0, "bob": 1}},
                                      "model": TINY_MODEL})
    cfg.save(config_path(voice))
    torch.manual_seed(0)
    g = build_generator(cfg)
    if version == "2.2":
        with torch.no_grad():
            g.enc_p.out_feature_net.weight.mul_(50)
    save_checkpoint(models_dir(voice) / "G_100.pth", g, epoch=1, step=100, learning_rate=2e-4)
    return voice
