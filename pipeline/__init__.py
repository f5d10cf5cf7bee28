"""One command-line module per stage: `python -m pipeline.<stage> --help`. Thin `main(argv) -> int`
wrappers over the `prep` (dataset) and `vits` (model) libraries, sharing `pipeline.cli` (exit codes,
`error:` lines, KOE_PROGRESS lines the studio parses); idempotent. The HTTP API is `python -m server`."""
