"""Per-category accuracy of the text frontend on the hand-written corpus (sentences exactly right).

    .venv/bin/python bench/frontend_accuracy.py            # one line per category
    .venv/bin/python bench/frontend_accuracy.py --errors   # also every wrong sentence, expected vs got
    .venv/bin/python bench/frontend_accuracy.py --zh-polyphones g2pw   # the g2pW model, then our rules

"Which helps more" for Chinese polyphones: run it once with `rules` (the default: pypinyin's dictionary +
our phrases and part-of-speech rules) and once with `g2pw` (python -m pipeline.download g2pw first; the
model reads every polyphone, our phrases and rules still override it), and compare the zh categories.

The corpus is tests/data/frontend_corpus/*.tsv and heldout/*.tsv (format: vits/text/corpus.py; heldout/ was
written after the rules and never tuned on); tests/test_frontend_corpus.py holds the floors.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vits.text.corpus import load_corpus, score  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "frontend_corpus"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--errors", action="store_true", help="print every wrong sentence")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="folder of .tsv files")
    parser.add_argument("--zh-polyphones", choices=("rules", "g2pw"), default=None,
                        help="override config.yml text.zh_polyphones (g2pw needs python -m pipeline.download g2pw)")
    args = parser.parse_args(argv)
    import dataclasses

    from settings import load_settings

    settings = load_settings()
    if args.zh_polyphones:
        settings = dataclasses.replace(settings, zh_polyphones=args.zh_polyphones)
    settings.use_text_frontend()
    print(f"chinese polyphones: {settings.zh_polyphones}")
    start = time.perf_counter()
    total = right_total = 0
    for path in sorted(args.corpus.glob("*.tsv")) + sorted(args.corpus.glob("heldout/*.tsv")):
        results = score(load_corpus(path))
        right = sum(r.right for r in results)
        total += len(results)
        right_total += right
        name = path.relative_to(args.corpus).with_suffix("").as_posix()
        print(f"{name:24s} {right:3d}/{len(results):3d}  {100 * right / max(1, len(results)):5.1f}%")
        if args.errors:
            for r in results:
                if not r.right:
                    print(f"    {r.case.file}:{r.case.line} {r.case.text}\n      want {r.case.expected}\n      got  {r.got}")
    print(f"{'all':24s} {right_total:3d}/{total:3d}  {100 * right_total / max(1, total):5.1f}%  "
          f"({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
