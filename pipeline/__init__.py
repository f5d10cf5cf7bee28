"""One command-line module per stage: `python -m pipeline.<stage> --help`. Thin `main(argv) -> int`
wrappers over the `vits` library, idempotent, printing `vits.progress` lines the studio parses."""
