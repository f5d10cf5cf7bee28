"""The Bert-VITS2 2.3 training loop: one process or torchrun DDP, resume, fine-tuning, graceful stop.

Reads a prepared voice folder ``Data/<voice>/`` (configs/config.json, filelists/train.list + val.list,
wavs with ``.bert.pt`` next to them) and writes:

* ``models/G_<step>.pth``, ``D_<step>.pth``, ``DUR_<step>.pth``, ``WD_<step>.pth`` every ``eval_interval``
  steps, at ``--max-steps``, at the last epoch and when stopped by SIGTERM/SIGINT (Bert-VITS2 format plus
  our ``koe_*`` resume fields; the step in the name is the number of optimizer steps done). ``keep_ckpts``
  newest are kept; ``*_0.pth`` (the base model) is never deleted. No checkpoint is written at step 0.
* ``logs/tensorboard/``: TensorBoard events, scalars named in `TB_SCALARS`, eval audio and mel images.
* ``logs/eval/step_<step>/``: the eval clips as 16-bit wav files (``<i>_sdp0.wav``, ``<i>_sdp1.wav``,
  ``<i>_gt.wav``) and ``index.json`` (step, items with text, speaker and file names), for the studio.

Progress: one line per ``log_interval`` steps on stdout (rank 0), format of `vits.progress`::

    KOE_PROGRESS {"stage":"train","step":200,"total":10000,"it_s":3.1,"eta_s":3161.3,"epoch":4,
                  "losses":{"g/total":..,"g/mel":..,"g/kl":..,"g/dur":..,"g/fm":..,"g/gen":..,"g/wavlm":..,
                            "d/total":..,"d/dur":..,"d/wavlm":..},"lr":0.0002,"skipped":0}

``losses`` are means over the steps since the previous line (non-finite steps left out, counted in
``skipped``). ``g/gen`` = MPD + duration-discriminator adversarial terms, ``g/wavlm`` = WavLM feature +
adversarial terms, ``d/total`` = MPD + duration + WavLM discriminator losses. Other events print one
progress line with a ``message`` (``"checkpoint saved"`` with ``checkpoint``, ``"eval"`` with ``eval_dir``).

Step order per batch follows spec §5.4: MAS noise update → G forward → duration discriminator step →
MPD step → WavLM discriminator step → G step → scaler update. Non-finite steps are skipped by the
GradScaler (which also carries the bf16 path) without a per-step host sync; ten in a row stop training.

Modules: `runtime` (device, process group, stop signals), `setup` (networks, data, optimizers, DDP),
`start` (resume / base model / scratch: the one start-point logic), `step` (one batch), `loop` (the
Trainer and `train`), `eval_samples` (eval audio and mel images), `lock` (one run per voice: rank 0 holds
``Data/<voice>/train.lock``, see `vits.voice_lock`).
"""

from vits.train.eval_samples import EVAL_ITEMS, KEEP_EVAL_DIRS
from vits.train.loop import EXTRA_SCALARS, NONFINITE_LIMIT, Trainer, train
from vits.train.options import DataProblems, TrainOptions, TrainResult
from vits.train.runtime import Runtime, StopRequest, init_runtime, shutdown_runtime
from vits.train.start import StartPoint, load_optimizer_state
from vits.train.step import CLIP_D, CLIP_G, TB_SCALARS, train_step

__all__ = [
    "CLIP_D", "CLIP_G", "EVAL_ITEMS", "EXTRA_SCALARS", "KEEP_EVAL_DIRS", "NONFINITE_LIMIT", "TB_SCALARS",
    "DataProblems", "Runtime", "StartPoint", "StopRequest", "TrainOptions", "TrainResult", "Trainer",
    "init_runtime", "load_optimizer_state", "shutdown_runtime", "train", "train_step",
]
