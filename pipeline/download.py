"""Download the models the stages need (explicit only; nothing downloads at import or in tests).

    python -m pipeline.download {base,base22,bert,wavlm,clap,whisper,g2pw,separator,models,all} [--endpoint https://hf-mirror.com] [--config config.yml] [--source openai|hub] [--model NAME]

base: the Bert-VITS2 2.3 base model; base22: the Bert-VITS2 2.2-CLAP base model; bert: the three BERTs;
wavlm: the WavLM discriminator; clap: laion/clap-htsat-fused (emotion of 2.2 voices); whisper: the
config.yml Whisper model; g2pw: the optional Chinese polyphone model (text.zh_polyphones: g2pw; from
PaddleSpeech, or ModelScope when a hub mirror is set, or config.yml text.g2pw_url); separator: the UVR
MDX-Net vocal separation model (pipeline.clean --separate); models = bert + wavlm; all = everything. The endpoint (a Hugging Face mirror)
comes from --endpoint, else config.yml `hub.endpoint`, else HF_ENDPOINT. Files land where config.yml
says, so the stages find them without further settings. Whisper's source (--source): `openai` (the .pt
from OpenAI's server, which a mirror does not reach) or `hub` (openai/whisper-<name> from the hub or the
mirror, converted to the same .pt); default: `hub` when a mirror is set (--endpoint, hub.endpoint or
HF_ENDPOINT), else `openai`. The downloads themselves: prep/download.py.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from pipeline import cli
from prep.download import CHOICES, TARGETS, WHISPER_SOURCES, expand, whisper_source
from settings import load_settings
from vits.errors import KoeError
from vits.progress import format_progress

STAGE = "download"


def main(argv: list[str] | None = None) -> int:
    """Download the named models; returns 0 on success, 1 on a failed download, 2 on bad arguments."""
    parser = cli.parser(STAGE, __doc__)
    parser.add_argument("what", choices=CHOICES)
    parser.add_argument("--endpoint", default=None, help="Hugging Face mirror, e.g. https://hf-mirror.com")
    parser.add_argument("--config", default=None, help="config.yml with the model folders")
    parser.add_argument("--source", choices=WHISPER_SOURCES, default=None,
                        help="where Whisper comes from: openai (OpenAI's server) or hub (openai/whisper-<name> "
                             "from the hub or the mirror, converted); default: hub when a mirror is set "
                             "(--endpoint, hub.endpoint, HF_ENDPOINT), else openai")
    parser.add_argument("--model", default=None, help="the Whisper model to download, e.g. large-v3 "
                                                       "(default: config.yml whisper.model)")
    args = parser.parse_args(argv)

    def body() -> int:
        settings = load_settings(args.config)
        if args.model:
            settings = dataclasses.replace(settings, whisper_model=args.model)
        endpoint = settings.use_hub_endpoint(args.endpoint)
        for offline in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # huggingface_hub obeys either
            os.environ.pop(offline, None)
        names = expand(args.what)
        failed: list[tuple[str, KoeError]] = []
        for i, name in enumerate(names):
            extra = {"source": whisper_source(args.source, endpoint)} if name == "whisper" else {}
            origin = "OpenAI's server" if extra.get("source") == "openai" else endpoint or "hub"
            print(format_progress(STAGE, step=i, total=len(names), message=f"{name} from {origin}"), flush=True)
            try:
                TARGETS[name](settings, log=lambda m: print(m, flush=True), **extra)
            except KoeError as exc:
                if len(names) == 1:
                    raise
                failed.append((name, exc))  # one failure does not stop the other downloads
                cli.warn(f"{name}: {exc}")
        if failed:
            done = ", ".join(n for n in names if n not in dict(failed)) or "none"
            raise KoeError(f"{len(failed)} of {len(names)} downloads failed: {', '.join(n for n, _ in failed)} "
                           f"(done: {done})", fix="see the WARNING line of each above, then run the command again")
        cli.finish(STAGE, "done", step=len(names), total=len(names))
        return 0

    return cli.run(STAGE, body)


if __name__ == "__main__":
    sys.exit(main())
