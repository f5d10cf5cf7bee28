"""The Bert-VITS2 generator network (SynthesizerTrn) and its parts (spec §3.2, §4.6-4.12, §5.2, §6).

One network for both versions: `version="2.3"` (default) or `"2.2"`, the CLAP-emotion generator, whose
text encoder adds an emotion path (`vits.emotion`, 2.2 spec §4) and whose training pass differs in the
SDP loss (2.2 spec §5.2). Parameter names, order and shapes match Bert-VITS2 2.3 and 2.2 checkpoints
(`G_*.pth`) exactly, so they load with `strict=True`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from vits import commons, inference
from vits import emotion as emotion_path
from vits.attentions import Encoder
from vits.defaults import SYNTHESIS
from vits.errors import KoeError
from vits.flows import (
    ConvFlow,
    DDSConv,
    ElementwiseAffine,
    Flip,
    Log,
    ResidualCouplingBlock,
    TransformerCouplingBlock,
)
from vits.modules import WN, LayerNorm, remove_weight_norm, weight_norm
from vits.symbols import NUM_LANGUAGES, table_sizes

VERSIONS = ("2.3", "2.2")

__all__ = [
    "VERSIONS", "TextEncoder", "WN", "PosteriorEncoder", "StochasticDurationPredictor", "DurationPredictor", "ResBlock1",
    "ResBlock2", "Generator", "SynthesizerTrn", "build_generator", "prepare_for_inference",
]

LRELU_SLOPE = 0.1
BERT_DIM = 1024


class TextEncoder(nn.Module):
    """Phones + tones + languages + three BERT streams -> hidden_x and prior statistics (enc_p, spec §4.6).

    With `emotion=True` (Bert-VITS2 2.2) it also takes a CLAP vector `emo` [B, 512], quantises it and adds
    its projection to every token (2.2 spec §4.4).
    """

    def __init__(self, n_vocab: int, out_channels: int, hidden_channels: int, filter_channels: int, n_heads: int,
                 n_layers: int, kernel_size: int, p_dropout: float, gin_channels: int = 0, emotion: bool = False,
                 num_languages: int = NUM_LANGUAGES):
        super().__init__()
        self.emotion = emotion
        # 3 languages: exactly the 2.3 tables; 4: Korean-enabled (158 symbols, 13 tones, ko_bert_proj)
        self.korean = num_languages > NUM_LANGUAGES
        n_symbols, n_tones, n_languages = table_sizes(num_languages)
        self.n_vocab = n_vocab
        self.out_channels = out_channels
        self.hidden_channels = hidden_channels
        # Bert-VITS2 sizes the table from the symbol list, not from n_vocab.
        self.emb = nn.Embedding(n_symbols, hidden_channels)
        nn.init.normal_(self.emb.weight, 0.0, hidden_channels**-0.5)
        self.tone_emb = nn.Embedding(n_tones, hidden_channels)
        nn.init.normal_(self.tone_emb.weight, 0.0, hidden_channels**-0.5)
        self.language_emb = nn.Embedding(n_languages, hidden_channels)
        nn.init.normal_(self.language_emb.weight, 0.0, hidden_channels**-0.5)
        self.bert_proj = nn.Conv1d(BERT_DIM, hidden_channels, 1)
        self.ja_bert_proj = nn.Conv1d(BERT_DIM, hidden_channels, 1)
        self.en_bert_proj = nn.Conv1d(BERT_DIM, hidden_channels, 1)
        if self.korean:  # klue/roberta-large features (1024-d), listed after the 2.3 projections
            self.ko_bert_proj = nn.Conv1d(BERT_DIM, hidden_channels, 1)
        if emotion:  # registered here: 2.2 files list these keys between en_bert_proj and encoder
            self.in_feature_net = emotion_path.in_feature_net()
            self.emo_vq = emotion_path.emotion_quantizer()
            self.out_feature_net = nn.Linear(emotion_path.EMO_DIM, hidden_channels)
        self.encoder = Encoder(hidden_channels, filter_channels, n_heads, n_layers, kernel_size, p_dropout,
                               gin_channels=gin_channels)
        self.proj = nn.Conv1d(hidden_channels, out_channels * 2, 1)

    def forward(self, x, x_lengths, tone, language, bert, ja_bert, en_bert, g=None, *, emo=None,
                plain_vq: bool = False, ko_bert=None):
        """Returns (hidden_x [B,H,T], m_p [B,C,T], logs_p [B,C,T], x_mask [B,1,T]); a 2.2 encoder also
        returns loss_commit (0-d; 0 in eval mode) and needs `emo` [B, 512]. `plain_vq`: eval-mode quantiser
        in plain tensor ops (`vits.emotion.quantize_eval`, for ONNX tracing). A Korean-enabled encoder adds
        `ko_bert` [B, 1024, T] (None: zeros, i.e. no Korean BERT signal)."""
        bert_emb = self.bert_proj(bert).transpose(1, 2)
        ja_bert_emb = self.ja_bert_proj(ja_bert).transpose(1, 2)
        en_bert_emb = self.en_bert_proj(en_bert).transpose(1, 2)
        h = self.emb(x) + self.tone_emb(tone) + self.language_emb(language) + bert_emb + ja_bert_emb + en_bert_emb
        if self.korean:
            ko_bert = torch.zeros_like(bert) if ko_bert is None else ko_bert
            h = h + self.ko_bert_proj(ko_bert).transpose(1, 2)
        if self.emotion:
            if emo is None:
                raise KoeError("this Bert-VITS2 2.2 text encoder needs the emotion vector emo [B, 512]",
                               where="TextEncoder input 'emo'",
                               fix="pass emo= a CLAP embedding (vits.clap: text prompt or reference audio)")
            e_h, loss_commit = emotion_path.emotion_embedding(self, emo, plain_eval=plain_vq)[:2]
            h = h + e_h.to(h.dtype)
        h = (h * math.sqrt(self.hidden_channels)).transpose(1, 2)
        x_mask = commons.sequence_mask(x_lengths, h.size(2)).unsqueeze(1).to(h.dtype)
        h = self.encoder(h * x_mask, x_mask, g=g)
        stats = self.proj(h) * x_mask
        m, logs = torch.split(stats, self.out_channels, dim=1)
        if self.emotion:
            return h, m, logs, x_mask, loss_commit
        return h, m, logs, x_mask


class PosteriorEncoder(nn.Module):
    """Linear spectrogram -> z ~ N(m_q, exp(logs_q)) (enc_q, training only, spec §4.8)."""

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, kernel_size: int,
                 dilation_rate: int, n_layers: int, gin_channels: int = 0):
        super().__init__()
        self.out_channels = out_channels
        self.pre = nn.Conv1d(in_channels, hidden_channels, 1)
        self.enc = WN(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels=gin_channels)
        self.proj = nn.Conv1d(hidden_channels, out_channels * 2, 1)

    def forward(self, x, x_lengths, g=None):
        """x [B, spec, T]; returns (z, m_q, logs_q, y_mask); draws one randn_like(m_q)."""
        x_mask = commons.sequence_mask(x_lengths, x.size(2)).unsqueeze(1).to(x.dtype)
        h = self.enc(self.pre(x) * x_mask, x_mask, g=g)
        stats = self.proj(h) * x_mask
        m, logs = torch.split(stats, self.out_channels, dim=1)
        z = (m + torch.randn_like(m) * torch.exp(logs)) * x_mask
        return z, m, logs, x_mask


class StochasticDurationPredictor(nn.Module):
    """Flow-based duration model (sdp, spec §4.10). filter_channels is forced to in_channels, as upstream."""

    def __init__(self, in_channels: int, filter_channels: int, kernel_size: int, p_dropout: float,
                 n_flows: int = 4, gin_channels: int = 0):
        super().__init__()
        filter_channels = in_channels
        self.log_flow = Log()
        self.flows = nn.ModuleList([ElementwiseAffine(2)])
        for _ in range(n_flows):
            self.flows.append(ConvFlow(2, filter_channels, kernel_size, n_layers=3))
            self.flows.append(Flip())
        self.post_pre = nn.Conv1d(1, filter_channels, 1)
        self.post_proj = nn.Conv1d(filter_channels, filter_channels, 1)
        self.post_convs = DDSConv(filter_channels, kernel_size, n_layers=3, p_dropout=p_dropout)
        self.post_flows = nn.ModuleList([ElementwiseAffine(2)])
        for _ in range(n_flows):
            self.post_flows.append(ConvFlow(2, filter_channels, kernel_size, n_layers=3))
            self.post_flows.append(Flip())
        self.pre = nn.Conv1d(in_channels, filter_channels, 1)
        self.proj = nn.Conv1d(filter_channels, filter_channels, 1)
        self.convs = DDSConv(filter_channels, kernel_size, n_layers=3, p_dropout=p_dropout)
        if gin_channels != 0:
            self.cond = nn.Conv1d(gin_channels, filter_channels, 1)

    def forward(self, x, x_mask, w=None, g=None, reverse: bool = False, noise_scale: float = 1.0):
        """Forward: NLL [B] of durations w [B,1,T]. Reverse: sampled logw [B,1,T].

        Each call draws one randn(B, 2, T) on the CPU default generator (as upstream), then moves it.
        Always computed in float32, also under bf16 autocast: the rational-quadratic splines diverge in bf16.
        """
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._forward_fp32(x.float(), x_mask.float(), None if w is None else w.float(),
                                      None if g is None else g.float(), reverse, noise_scale)

    def _forward_fp32(self, x, x_mask, w, g, reverse, noise_scale):
        x = self.pre(torch.detach(x))
        if g is not None:
            x = x + self.cond(torch.detach(g))
        x = self.proj(self.convs(x, x_mask)) * x_mask
        if reverse:
            # Upstream drops the second-to-last flow of the reversed list (sdp.flows.1) when sampling.
            flows = list(reversed(self.flows))
            flows = flows[:-2] + [flows[-1]]
            z = torch.randn(x.size(0), 2, x.size(2)).to(device=x.device, dtype=x.dtype) * noise_scale
            for flow in flows:
                z = flow(z, x_mask, g=x, reverse=True)
            return z[:, :1]
        if w is None:
            raise ValueError("durations w are required in forward (training) mode")
        h_w = self.post_proj(self.post_convs(self.post_pre(w), x_mask)) * x_mask
        e_q = torch.randn(w.size(0), 2, w.size(2)).to(device=x.device, dtype=x.dtype) * x_mask
        z_q = e_q
        logdet_tot_q = 0
        for flow in self.post_flows:
            z_q, logdet_q = flow(z_q, x_mask, g=x + h_w)
            logdet_tot_q = logdet_tot_q + logdet_q
        z_u, z1 = torch.split(z_q, [1, 1], 1)
        u = torch.sigmoid(z_u) * x_mask
        z0 = (w - u) * x_mask
        logdet_tot_q = logdet_tot_q + torch.sum((F.logsigmoid(z_u) + F.logsigmoid(-z_u)) * x_mask, [1, 2])
        logq = torch.sum(-0.5 * (math.log(2 * math.pi) + e_q**2) * x_mask, [1, 2]) - logdet_tot_q
        z0, logdet_tot = self.log_flow(z0, x_mask)
        z = torch.cat([z0, z1], 1)
        for flow in self.flows:
            z, logdet = flow(z, x_mask, g=x)
            logdet_tot = logdet_tot + logdet
        nll = torch.sum(0.5 * (math.log(2 * math.pi) + z**2) * x_mask, [1, 2]) - logdet_tot
        return nll + logq


class DurationPredictor(nn.Module):
    """Deterministic log-duration predictor (dp, spec §4.11)."""

    def __init__(self, in_channels: int, filter_channels: int, kernel_size: int, p_dropout: float,
                 gin_channels: int = 0):
        super().__init__()
        self.drop = nn.Dropout(p_dropout)
        self.conv_1 = nn.Conv1d(in_channels, filter_channels, kernel_size, padding=kernel_size // 2)
        self.norm_1 = LayerNorm(filter_channels)
        self.conv_2 = nn.Conv1d(filter_channels, filter_channels, kernel_size, padding=kernel_size // 2)
        self.norm_2 = LayerNorm(filter_channels)
        self.proj = nn.Conv1d(filter_channels, 1, 1)
        if gin_channels != 0:
            self.cond = nn.Conv1d(gin_channels, in_channels, 1)

    def forward(self, x, x_mask, g=None):
        """hidden_x [B,H,T] (detached) -> logw [B,1,T]."""
        x = torch.detach(x)
        if g is not None:
            x = x + self.cond(torch.detach(g))
        x = self.drop(self.norm_1(torch.relu(self.conv_1(x * x_mask))))
        x = self.drop(self.norm_2(torch.relu(self.conv_2(x * x_mask))))
        return self.proj(x * x_mask) * x_mask


class ResBlock1(nn.Module):
    """HiFi-GAN residual block: three (dilated conv, conv) pairs with leaky ReLU 0.1."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation=(1, 3, 5)):
        super().__init__()
        self.convs1 = nn.ModuleList([
            weight_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=d,
                                  padding=commons.get_padding(kernel_size, d)))
            for d in dilation[:3]
        ])
        self.convs2 = nn.ModuleList([
            weight_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=1,
                                  padding=commons.get_padding(kernel_size, 1)))
            for _ in range(3)
        ])

    def forward(self, x):
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = c1(F.leaky_relu(x, LRELU_SLOPE))
            xt = c2(F.leaky_relu(xt, LRELU_SLOPE))
            x = xt + x
        return x


class ResBlock2(nn.Module):
    """Smaller HiFi-GAN residual block: two dilated convs (resblock "2")."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation=(1, 3)):
        super().__init__()
        self.convs = nn.ModuleList([
            weight_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=d,
                                  padding=commons.get_padding(kernel_size, d)))
            for d in dilation[:2]
        ])

    def forward(self, x):
        for c in self.convs:
            x = c(F.leaky_relu(x, LRELU_SLOPE)) + x
        return x


class Generator(nn.Module):
    """HiFi-GAN decoder z [B,C,T] -> waveform [B,1,T·Πupsample_rates] (dec, spec §4.12)."""

    def __init__(self, initial_channel: int, resblock: str, resblock_kernel_sizes, resblock_dilation_sizes,
                 upsample_rates, upsample_initial_channel: int, upsample_kernel_sizes, gin_channels: int = 0):
        super().__init__()
        self.num_kernels = len(resblock_kernel_sizes)
        self.num_upsamples = len(upsample_rates)
        self.conv_pre = nn.Conv1d(initial_channel, upsample_initial_channel, 7, 1, padding=3)
        block = ResBlock1 if str(resblock) == "1" else ResBlock2
        self.ups = nn.ModuleList()
        for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
            self.ups.append(weight_norm(nn.ConvTranspose1d(upsample_initial_channel // (2**i),
                                                           upsample_initial_channel // (2 ** (i + 1)),
                                                           k, u, padding=(k - u) // 2)))
        self.resblocks = nn.ModuleList()
        ch = upsample_initial_channel
        for i in range(len(self.ups)):
            ch = upsample_initial_channel // (2 ** (i + 1))
            for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes):
                self.resblocks.append(block(ch, k, d))
        self.conv_post = nn.Conv1d(ch, 1, 7, 1, padding=3, bias=False)
        if gin_channels != 0:
            self.cond = nn.Conv1d(gin_channels, upsample_initial_channel, 1)

    def forward(self, x, g=None):
        x = self.conv_pre(x)
        if g is not None:
            x = x + self.cond(g)
        for i in range(self.num_upsamples):
            x = self.ups[i](F.leaky_relu(x, LRELU_SLOPE))
            xs = self.resblocks[i * self.num_kernels](x)
            for j in range(1, self.num_kernels):
                xs = xs + self.resblocks[i * self.num_kernels + j](x)
            x = xs / self.num_kernels
        x = self.conv_post(F.leaky_relu(x))  # default slope 0.01 here, as upstream
        return torch.tanh(x)


def _describe(t) -> str:
    return f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__


def _check_int(name: str, t, shape: tuple, expected: str) -> None:
    """Raise KoeError unless t is an int64/int32 tensor of `shape` (None entries match anything)."""
    ok = (isinstance(t, torch.Tensor) and t.dtype in (torch.int64, torch.int32) and t.dim() == len(shape)
          and all(want is None or got == want for got, want in zip(t.shape, shape)))
    if not ok:
        raise KoeError(f"{name} must be an integer tensor of shape {expected}, got {_describe(t)}",
                       where=f"SynthesizerTrn input '{name}'",
                       fix="pass phone/tone/language ids as LongTensor [B, T] and lengths/speaker ids as [B]")


def _check_float(name: str, t, shape: tuple) -> None:
    """Raise KoeError unless t is a floating tensor of exactly `shape`."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or tuple(t.shape) != tuple(shape):
        raise KoeError(f"{name} must be a float tensor of shape {tuple(shape)}, got {_describe(t)}",
                       where=f"SynthesizerTrn input '{name}'",
                       fix=f"pass BERT features as [B, {BERT_DIM}, T] (one column per phone, blanks included) "
                           "and spectrograms as [B, spec_channels, T_y]")


class SynthesizerTrn(nn.Module):
    """The Bert-VITS2 generator (G): text encoder, posterior encoder, flow, SDP + DP, decoder.

    Constructor arguments follow Bert-VITS2 (`SynthesizerTrn(n_vocab, spec_channels, segment_size, **model)`);
    unknown config keys are ignored. `version` is "2.3" or "2.2" (CLAP emotion input; see the module
    docstring). `current_mas_noise_scale` is set by the trainer each step.
    """

    def __init__(self, n_vocab: int, spec_channels: int, segment_size: int, inter_channels: int,
                 hidden_channels: int, filter_channels: int, n_heads: int, n_layers: int, kernel_size: int,
                 p_dropout: float, resblock: str, resblock_kernel_sizes, resblock_dilation_sizes, upsample_rates,
                 upsample_initial_channel: int, upsample_kernel_sizes, n_speakers: int = 256,
                 gin_channels: int = 256, use_sdp: bool = True, n_flow_layer: int = 4, n_layers_trans_flow: int = 4,
                 flow_share_parameter: bool = False, use_transformer_flow: bool = True, version: str = "2.3",
                 num_languages: int = NUM_LANGUAGES, **kwargs):
        super().__init__()
        if version not in VERSIONS:
            raise KoeError(f"unknown generator version {version!r}", where="SynthesizerTrn",
                           fix=f"use one of {', '.join(VERSIONS)}")
        self.version = version
        self.emotion = version == "2.2"
        if n_speakers < 1 or gin_channels < 1:
            raise KoeError(f"n_speakers={n_speakers}, gin_channels={gin_channels}: Bert-VITS2 2.3 voices need at "
                           "least one speaker and a speaker embedding", where="config.json",
                           fix="set data.n_speakers >= 1 and model.gin_channels > 0")
        if n_layers <= 2:
            raise KoeError(f"model.n_layers={n_layers}: the speaker-conditioned text encoder needs at least 3 layers",
                           where="config.json", fix="set model.n_layers to 3 or more (default 6)")
        self.n_vocab = n_vocab
        self.spec_channels = spec_channels
        self.inter_channels = inter_channels
        self.hidden_channels = hidden_channels
        self.segment_size = segment_size
        self.n_speakers = n_speakers
        self.gin_channels = gin_channels
        self.use_sdp = use_sdp
        self.use_noise_scaled_mas = bool(kwargs.get("use_noise_scaled_mas", False))
        self.mas_noise_scale_initial = float(kwargs.get("mas_noise_scale_initial", 0.01))
        self.noise_scale_delta = float(kwargs.get("noise_scale_delta", 2e-6))
        self.current_mas_noise_scale = self.mas_noise_scale_initial
        if num_languages > NUM_LANGUAGES and self.emotion:
            raise KoeError("Korean needs the 2.3 network; this config describes a 2.2 (CLAP) one",
                           where="config.json", fix="drop model.num_languages or train a 2.3 voice")
        self.num_languages = num_languages
        self.korean = num_languages > NUM_LANGUAGES
        self.enc_p = TextEncoder(n_vocab, inter_channels, hidden_channels, filter_channels, n_heads, n_layers,
                                 kernel_size, p_dropout, gin_channels=gin_channels, emotion=self.emotion,
                                 num_languages=num_languages)
        self.dec = Generator(inter_channels, resblock, resblock_kernel_sizes, resblock_dilation_sizes,
                             upsample_rates, upsample_initial_channel, upsample_kernel_sizes,
                             gin_channels=gin_channels)
        self.enc_q = PosteriorEncoder(spec_channels, inter_channels, hidden_channels, 5, 1, 16,
                                      gin_channels=gin_channels)
        if use_transformer_flow:
            self.flow = TransformerCouplingBlock(inter_channels, hidden_channels, filter_channels, n_heads,
                                                 n_layers_trans_flow, 5, p_dropout, n_flow_layer,
                                                 gin_channels=gin_channels, share_parameter=flow_share_parameter)
        else:
            self.flow = ResidualCouplingBlock(inter_channels, hidden_channels, 5, 1, n_flow_layer,
                                              gin_channels=gin_channels)
        self.sdp = StochasticDurationPredictor(hidden_channels, 192, 3, 0.5, 4, gin_channels=gin_channels)
        self.dp = DurationPredictor(hidden_channels, 256, 3, 0.5, gin_channels=gin_channels)
        self.emb_g = nn.Embedding(n_speakers, gin_channels)

    def _check_text_inputs(self, x, x_lengths, sid, tone, language, bert, ja_bert, en_bert) -> None:
        _check_int("x", x, (None, None), "[B, T]")
        b, t = x.shape
        _check_int("x_lengths", x_lengths, (b,), f"[B] = ({b},)")
        _check_int("sid", sid, (b,), f"[B] = ({b},)")
        _check_int("tone", tone, (b, t), f"[B, T] = ({b}, {t}) like x")
        _check_int("language", language, (b, t), f"[B, T] = ({b}, {t}) like x")
        for name, feats in (("bert", bert), ("ja_bert", ja_bert), ("en_bert", en_bert)):
            _check_float(name, feats, (b, BERT_DIM, t))

    def _check_id_ranges(self, x, sid, tone, language) -> None:
        """Ids outside the embedding tables would raise a bare IndexError; say which input is wrong."""
        if x.numel() == 0:
            raise KoeError("empty phone sequence", where="SynthesizerTrn input 'x'", fix="pass at least one phone")
        n_symbols, n_tones, n_languages = table_sizes(self.num_languages)
        limits = (("x", x, n_symbols), ("tone", tone, n_tones), ("language", language, n_languages),
                  ("sid", sid, self.n_speakers))
        # One device sync for all eight numbers.
        bounds = torch.stack([torch.stack([t.min(), t.max()]).long() for _, t, _ in limits]).tolist()
        for (name, _, limit), (low, high) in zip(limits, bounds):
            if low < 0 or high >= limit:
                raise KoeError(f"{name} holds ids in [{low}, {high}], but only 0..{limit - 1} exist",
                               where=f"SynthesizerTrn input '{name}'",
                               fix="use speaker ids from config.json spk2id" if name == "sid"
                               else "build ids with vits.symbols.cleaned_text_to_sequence")

    def _check_emotion(self, emo, batch: int):
        if not self.emotion:
            if emo is not None:
                raise KoeError("this Bert-VITS2 2.3 generator has no emotion input", where="SynthesizerTrn input 'emo'",
                               fix="leave emo out (only 2.2 CLAP voices take an emotion prompt)")
            return None
        if emo is None:
            raise KoeError("this Bert-VITS2 2.2 generator needs the emotion vector emo [B, 512]",
                           where="SynthesizerTrn input 'emo'",
                           fix="pass emo= a CLAP embedding (vits.clap: a text prompt such as 'Happy' or a reference clip)")
        return emotion_path.check_emotion(emo, batch, "SynthesizerTrn input 'emo'")

    def forward(self, x, x_lengths, y, y_lengths, sid, tone, language, bert, ja_bert, en_bert, emo=None, *,
                ko_bert=None):
        """Training pass (spec §5.2; 2.2 spec §5.2 for a 2.2 generator).

        Takes x/tone/language [B,T_x] int64, x_lengths [B], y linear spectrogram [B,spec,T_y], y_lengths [B],
        sid [B], bert/ja_bert/en_bert [B,1024,T_x], for 2.2 emo [B,512], for a Korean-enabled one ko_bert.
        Returns (o [B,1,segment·hop], l_length [B], attn [B,1,T_y,T_x], ids_slice [B], x_mask, y_mask,
        (z, z_p, m_p, logs_p, m_q, logs_q), (hidden_x, logw, logw_, logw_sdp), g); a 2.2 generator returns
        (hidden_x, logw, logw_) as the 8th item (no SDP sampling in training) and loss_commit as a 10th.
        Raises KoeError on wrongly shaped inputs.
        """
        self._check_text_inputs(x, x_lengths, sid, tone, language, bert, ja_bert, en_bert)
        b = x.shape[0]
        emo = self._check_emotion(emo, b)
        _check_int("y_lengths", y_lengths, (b,), f"[B] = ({b},)")
        _check_float("y", y, (b, self.spec_channels, y.shape[-1] if isinstance(y, torch.Tensor) and y.dim() else 0))
        g = self.emb_g(sid).unsqueeze(-1)
        if self.emotion:  # the quantiser's random draws come first, as in 2.2 (2.2 spec §4.5)
            hidden_x, m_p, logs_p, x_mask, loss_commit = self.enc_p(x, x_lengths, tone, language, bert, ja_bert,
                                                                    en_bert, g=g, emo=emo)
        else:
            hidden_x, m_p, logs_p, x_mask = self.enc_p(x, x_lengths, tone, language, bert, ja_bert, en_bert, g=g,
                                                       **self._ko_bert(ko_bert, bert))
        z, m_q, logs_q, y_mask = self.enc_q(y, y_lengths, g=g)
        z_p = self.flow(z, y_mask, g=g)

        # Alignment search inputs in float32 even under bf16 autocast (the log-likelihoods are large sums).
        with torch.no_grad(), torch.autocast(device_type=z_p.device.type, enabled=False):
            z_p32, m_p32, logs_p32 = z_p.float(), m_p.float(), logs_p.float()
            # log N(z_p | m_p, exp(logs_p)) for every (frame, token), as four terms (matmuls over channels).
            s_p_sq_r = torch.exp(-2 * logs_p32)
            neg_cent1 = torch.sum(-0.5 * math.log(2 * math.pi) - logs_p32, [1], keepdim=True)
            neg_cent2 = torch.matmul(-0.5 * (z_p32**2).transpose(1, 2), s_p_sq_r)
            neg_cent3 = torch.matmul(z_p32.transpose(1, 2), m_p32 * s_p_sq_r)
            neg_cent4 = torch.sum(-0.5 * (m_p32**2) * s_p_sq_r, [1], keepdim=True)
            neg_cent = neg_cent1 + neg_cent2 + neg_cent3 + neg_cent4
            if self.use_noise_scaled_mas:
                epsilon = torch.std(neg_cent) * torch.randn_like(neg_cent) * self.current_mas_noise_scale
                neg_cent = neg_cent + epsilon
            attn_mask = x_mask.unsqueeze(2) * y_mask.unsqueeze(-1)
            attn = _maximum_path(neg_cent, attn_mask.squeeze(1)).unsqueeze(1).detach()

        w = attn.sum(2)
        l_length_sdp = self.sdp(hidden_x, x_mask, w, g=g) / torch.sum(x_mask)
        logw_ = torch.log(w + 1e-6) * x_mask
        logw = self.dp(hidden_x, x_mask, g=g)
        l_length_dp = torch.sum((logw - logw_) ** 2, [1, 2]) / torch.sum(x_mask)
        if not self.emotion:  # 2.3 also samples the SDP and adds its squared error; 2.2 keeps the NLL only
            logw_sdp = self.sdp(hidden_x, x_mask, g=g, reverse=True, noise_scale=1.0)
            l_length_sdp = l_length_sdp + torch.sum((logw_sdp - logw_) ** 2, [1, 2]) / torch.sum(x_mask)
        l_length = l_length_dp + l_length_sdp

        m_p = torch.matmul(attn.squeeze(1), m_p.transpose(1, 2)).transpose(1, 2)
        logs_p = torch.matmul(attn.squeeze(1), logs_p.transpose(1, 2)).transpose(1, 2)
        z_slice, ids_slice = commons.rand_slice_segments(z, y_lengths, self.segment_size)
        o = self.dec(z_slice, g=g)
        if self.emotion:
            return (o, l_length, attn, ids_slice, x_mask, y_mask, (z, z_p, m_p, logs_p, m_q, logs_q),
                    (hidden_x, logw, logw_), g, loss_commit)
        return (o, l_length, attn, ids_slice, x_mask, y_mask, (z, z_p, m_p, logs_p, m_q, logs_q),
                (hidden_x, logw, logw_, logw_sdp), g)

    def infer(self, x, x_lengths, sid, tone, language, bert, ja_bert, en_bert,
              noise_scale: float = SYNTHESIS.noise_scale, length_scale: float = SYNTHESIS.length_scale,
              noise_scale_w: float = SYNTHESIS.noise_scale_w, max_len: int | None = None,
              sdp_ratio: float = SYNTHESIS.sdp_ratio, y=None, *, emo=None, ko_bert=None):
        """Synthesis (spec §6; the math is `vits.inference.infer`, shared with `vits.synthesis.Voice`).

        Takes the same text inputs as forward (B usually 1), for a 2.2 generator the emotion vector `emo`
        ([B, 512], or [512]); `y` is accepted for Bert-VITS2 call compatibility and unused. Knob defaults are `vits.defaults.SYNTHESIS`. Returns (o [B,1,hop·T_y],
        attn [B,1,T_y,T_x], y_mask [B,1,T_y], (z, z_p, m_p, logs_p)). Draws randn(B,2,T_x) on the CPU
        generator (SDP, always) and randn_like(m_p) on the model device. Raises KoeError on wrongly
        shaped inputs.
        """
        self._check_text_inputs(x, x_lengths, sid, tone, language, bert, ja_bert, en_bert)
        self._check_id_ranges(x, sid, tone, language)
        emo = self._check_emotion(emo, x.shape[0])
        return inference.infer(self, x, x_lengths, sid, tone, language, bert, ja_bert, en_bert,
                               noise_scale=noise_scale, length_scale=length_scale, noise_scale_w=noise_scale_w,
                               sdp_ratio=sdp_ratio, max_len=max_len, emo=emo, **self._ko_bert(ko_bert, bert))

    def _ko_bert(self, ko_bert, bert) -> dict:
        """{"ko_bert": features} for a Korean-enabled G (checked [B,1024,T]), {} for a 2.3 one."""
        if not self.korean:
            if ko_bert is not None:
                raise KoeError("this voice has no Korean BERT slot", where="SynthesizerTrn input 'ko_bert'",
                               fix="leave ko_bert out, or train a Korean-enabled voice (docs/korean.md)")
            return {}
        if ko_bert is not None:
            _check_float("ko_bert", ko_bert, tuple(bert.shape))
        return {"ko_bert": ko_bert}


def _maximum_path(neg_cent: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # Imported here so inference never pays for numba.
    from monotonic_align import maximum_path

    return maximum_path(neg_cent, mask)


def build_generator(cfg, version: str | None = None) -> SynthesizerTrn:
    """Build G from a VoiceConfig exactly as Bert-VITS2's train_ms.py does.

    Takes a `vits.config.VoiceConfig` and optionally the architecture ("2.3" or "2.2"; default: the
    config's `architecture`, and a checkpoint's keys overrule it: `vits.checkpoints.generator_version`);
    returns an untrained SynthesizerTrn (train mode).
    Raises KoeError for configs Bert-VITS2 could not build either (no speakers, < 3 encoder layers).
    """
    model = cfg.model.model_dump()
    model.pop("slm", None)
    model.pop("version", None)
    noise_scaled = bool(model.get("use_noise_scaled_mas", False))
    return SynthesizerTrn(
        cfg.n_vocab,
        cfg.spec_channels,
        cfg.segment_frames,
        n_speakers=cfg.data.n_speakers,
        mas_noise_scale_initial=0.01 if noise_scaled else 0.0,
        noise_scale_delta=2e-6 if noise_scaled else 0.0,
        version=version or cfg.architecture,
        **model,
    )


def prepare_for_inference(model: SynthesizerTrn) -> SynthesizerTrn:
    """Put G in eval mode and fold every weight norm into a plain weight (same output, less work per call).

    Returns the same module. The folded model's state_dict has `weight` instead of `weight_g`/`weight_v`,
    so save checkpoints from an unfolded model.
    """
    model.eval()
    for module in model.modules():
        if hasattr(module, "weight_g") and hasattr(module, "weight_v"):
            remove_weight_norm(module)
    return model
