"""Download the models the stages need (explicit only; nothing downloads at import or in tests).

    python -m pipeline.download {base,bert,wavlm,whisper,models,all} [--endpoint https://hf-mirror.com] [--config config.yml]

base: the Bert-VITS2 2.3 base model; bert: the three BERTs; wavlm: the WavLM discriminator; whisper: the
config.yml Whisper model; models = bert + wavlm; all = everything. The endpoint (a Hugging Face mirror)
comes from --endpoint, else config.yml `hub.endpoint`, else HF_ENDPOINT. Files land where config.yml
says, so the stages find them without further settings. The downloads themselves: prep/download.py.
"""

from __future__ import annotations

import os
import sys

from pipeline import cli
from prep.download import CHOICES, TARGETS, expand
from settings import load_settings
from vits.progress import format_progress

STAGE = "download"


def main(argv: list[str] | None = None) -> int:
    """Download the named models; returns 0 on success, 1 on a failed download, 2 on bad arguments."""
    parser = cli.parser(STAGE, __doc__)
    parser.add_argument("what", choices=CHOICES)
    parser.add_argument("--endpoint", default=None, help="Hugging Face mirror, e.g. https://hf-mirror.com")
    parser.add_argument("--config", default=None, help="config.yml with the model folders")
    args = parser.parse_args(argv)

    def body() -> int:
        settings = load_settings(args.config)
        endpoint = settings.use_hub_endpoint(args.endpoint)
        os.environ.pop("HF_HUB_OFFLINE", None)
        names = expand(args.what)
        for i, name in enumerate(names):
            print(format_progress(STAGE, step=i, total=len(names), message=f"{name} from {endpoint or 'hub'}"),
                  flush=True)
            TARGETS[name](settings, log=lambda m: print(m, flush=True))
        cli.finish(STAGE, "done", step=len(names), total=len(names))
        return 0

    return cli.run(STAGE, body)


if __name__ == "__main__":
    sys.exit(main())
