"""Building what a run trains: G, D (MPD), DUR, WD and the WavLM loss; the data loader; optimizers; DDP."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vits.config import VoiceConfig
from vits.data import DistributedBucketSampler, TextAudioDataset, collate, loader_settings
from vits.errors import KoeError
from vits.train.options import TrainOptions
from vits.train.runtime import Runtime


class PairedMPD(nn.Module):
    """The MPD run once per sub-discriminator on [real; fake] stacked along the batch axis.

    Same outputs as `MultiPeriodDiscriminator.forward(y, y_hat)` (convolutions are per item), with half
    the weight-norm work and kernel launches. Holds the MPD as `.mpd`; checkpoints save that.
    """

    def __init__(self, mpd: nn.Module):
        super().__init__()
        self.mpd = mpd

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor):
        b = y.shape[0]
        both = torch.cat([y, y_hat.to(y.dtype)], dim=0)
        real, fake, fmap_real, fmap_fake = [], [], [], []
        for disc in self.mpd.discriminators:
            out, fmaps = disc(both)
            real.append(out[:b])
            fake.append(out[b:])
            fmap_real.append([f[:b] for f in fmaps])
            fmap_fake.append([f[b:] for f in fmaps])
        return real, fake, fmap_real, fmap_fake


def unwrap(module):
    """The network inside a DDP wrapper (or the module itself)."""
    return module.module if hasattr(module, "module") else module


@dataclass
class Networks:
    """The networks of a run, their optimizers, LR schedules and the GradScaler.

    `g`, `mpd`, `dur`, `wd` are what a training step calls (DDP-wrapped under torchrun); `by_kind` holds the
    bare networks by checkpoint kind ("G", "D", "DUR", "WD"; None when off): what is saved and loaded.
    """

    g: nn.Module
    mpd: nn.Module
    dur: nn.Module | None
    wd: nn.Module | None
    wavlm: object | None  # vits.wavlm.WavLMLoss, or None with --no-wavlm
    by_kind: dict[str, nn.Module | None]
    g_names: list[str] = field(default_factory=list)  # the trainable generator parameters, by name
    g_params: list[torch.Tensor] = field(default_factory=list)
    optims: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    schedulers: dict[str, torch.optim.lr_scheduler.ExponentialLR] = field(default_factory=dict)
    scaler: torch.amp.GradScaler | None = None

    def param_names(self, kind: str) -> list[str]:
        """Names of the parameters the `kind` optimizer holds, in its order (saved as ``param_names``)."""
        return self.g_names if kind == "G" else [n for n, _ in unwrap(self.by_kind[kind]).named_parameters()]

    def params(self, kind: str) -> list[torch.Tensor]:
        return self.g_params if kind == "G" else list(self.by_kind[kind].parameters())


def build_networks(cfg: VoiceConfig, opts: TrainOptions, device: torch.device,
                   log: Callable[[str], None]) -> Networks:
    """G, the discriminators and (unless --no-wavlm) the WavLM loss on `device`, freeze_* applied.

    A 2.2 voice (config architecture "2.2") gets the 2.2 generator and duration discriminator and never
    WavLM (2.2 has none). Raises KoeError when the WavLM folder is not given or its model does not match
    config.json.
    """
    from vits.discriminators import build_discriminators
    from vits.models import build_generator

    net_g = build_generator(cfg).to(device)
    v22 = cfg.architecture == "2.2"
    use_wavlm = opts.use_wavlm and not v22
    if v22:
        log("Bert-VITS2 2.2 voice (CLAP emotion): 2.2 generator and duration discriminator, no WavLM discriminator")
    if getattr(cfg.train, "fp16_run", False):  # a 2.2 config key (float16 autocast), not implemented here
        log("warning: train.fp16_run is not supported; training in float32 (set train.bf16_run for mixed precision)")
    wavlm = None
    if use_wavlm:
        from vits.wavlm import WavLMFeatures, WavLMLoss

        if opts.wavlm is None:
            raise KoeError("no WavLM folder given", fix="pass --wavlm DIR, set wavlm in config.yml, "
                           "or train without the WavLM discriminator (--no-wavlm, or "
                           "train.use_wavlm: false in config.json: the Train tab's checkbox)")
        wavlm = WavLMLoss(WavLMFeatures(opts.wavlm, device, cfg.data.sampling_rate, cfg.model.slm.sr))
        feats = wavlm.features
        if feats.channels != cfg.model.slm.hidden * cfg.model.slm.nlayers:
            raise KoeError(f"the WavLM model gives {feats.num_states} states of {feats.hidden_size} channels, "
                           f"config.json says slm.nlayers={cfg.model.slm.nlayers}, "
                           f"slm.hidden={cfg.model.slm.hidden}", where=str(opts.wavlm),
                           fix="use microsoft/wavlm-base-plus or set model.slm.hidden/nlayers to match")
        log(f"WavLM discriminator on ({opts.wavlm})")
    elif not v22:
        log("WavLM discriminator off (--no-wavlm or train.use_wavlm false): no WavLM losses, no WD_*.pth written")
    mpd, dur, wd = build_discriminators(cfg)
    mpd = mpd.to(device)
    dur = dur.to(device) if dur is not None else None
    wd = wd.to(device) if use_wavlm else None
    t = cfg.train
    frozen = []
    for flag, prefix in ((t.freeze_ZH_bert, "enc_p.bert_proj"), (t.freeze_JP_bert, "enc_p.ja_bert_proj"),
                         (t.freeze_EN_bert, "enc_p.en_bert_proj"), (t.freeze_decoder, "dec.")):
        if flag:
            frozen.append(prefix.rstrip("."))
            for name, p in net_g.named_parameters():
                if name.startswith(prefix):
                    p.requires_grad_(False)
    if frozen:
        log(f"frozen: {', '.join(frozen)}")
    return Networks(g=net_g, mpd=PairedMPD(mpd), dur=dur, wd=wd, wavlm=wavlm,
                    by_kind={"G": net_g, "D": mpd, "DUR": dur, "WD": wd})


def _make_optimizer(params: list[torch.Tensor], cfg: VoiceConfig) -> torch.optim.AdamW:
    t = cfg.train
    # fused: one kernel per step and, with the GradScaler, a skipped step needs no host sync.
    return torch.optim.AdamW(params, t.learning_rate, betas=tuple(t.betas), eps=t.eps, weight_decay=0.01,
                             fused=True)


def build_optimizers(nets: Networks, cfg: VoiceConfig, device: torch.device) -> None:
    """AdamW + per-epoch ExponentialLR for each network present, and the GradScaler; set on `nets`."""
    named = [(n, p) for n, p in nets.g.named_parameters() if p.requires_grad]
    nets.g_names, nets.g_params = [n for n, _ in named], [p for _, p in named]
    nets.optims = {"G": _make_optimizer(nets.g_params, cfg)}
    for kind in ("D", "DUR", "WD"):
        if nets.by_kind[kind] is not None:
            nets.optims[kind] = _make_optimizer(list(nets.by_kind[kind].parameters()), cfg)
    nets.schedulers = {k: torch.optim.lr_scheduler.ExponentialLR(o, cfg.train.lr_decay)
                       for k, o in nets.optims.items()}
    # Scale stays 1.0 (it only halves after a non-finite step); the scaler is our sync-free step skipper.
    nets.scaler = torch.amp.GradScaler(device.type, init_scale=1.0, growth_interval=1 << 30)


def wrap_ddp(nets: Networks, device: torch.device) -> None:
    """Wrap the networks a step calls in DistributedDataParallel (`by_kind` keeps the bare ones)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    nets.g = DDP(nets.g, device_ids=ids)
    nets.mpd = DDP(nets.mpd, device_ids=ids)
    if nets.dur is not None:
        nets.dur = DDP(nets.dur, device_ids=ids)
    if nets.wd is not None:
        nets.wd = DDP(nets.wd, device_ids=ids)


@dataclass
class Data:
    """The training set with its bucket sampler and loader, and the validation set (eval samples)."""

    train_set: TextAudioDataset
    val_set: TextAudioDataset
    sampler: DistributedBucketSampler
    loader: torch.utils.data.DataLoader

    @property
    def batches_per_epoch(self) -> int:
        return self.sampler.num_batches


def build_data(voice_dir: Path, cfg: VoiceConfig, rt: Runtime, num_workers: int | None,
               log: Callable[[str], None]) -> Data:
    """The datasets of the config's train/val lists and a loader of this rank's share of the batches."""
    train_set = TextAudioDataset(voice_dir, cfg.data.training_files, cfg)
    val_set = TextAudioDataset(voice_dir, cfg.data.validation_files, cfg, shuffle=False)
    sampler = DistributedBucketSampler(train_set.lengths, cfg.train.batch_size, num_replicas=rt.world_size,
                                       rank=rt.rank)
    if sampler.dropped:
        log(f"{sampler.dropped} clip(s) outside 0.4-11.6 s left out of training")
    requested = num_workers
    if requested is None:
        requested = getattr(cfg.train, "num_workers", None)
    kwargs = loader_settings(rt.device, rt.local_world_size, requested)
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, collate_fn=collate, **kwargs)
    log(f"data: {len(train_set)} training clips, {sampler.num_batches} batches of "
        f"{cfg.train.batch_size} per epoch per process, {rt.world_size} process(es), "
        f"{kwargs['num_workers']} loader worker(s)")
    return Data(train_set, val_set, sampler, loader)
