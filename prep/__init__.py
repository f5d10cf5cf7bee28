"""Dataset preparation library: ingest, slice, transcribe, conform audio, build lists, BERT features,
health report, model downloads (`ingest`, `slicing`, `transcribe`, `resample`, `lists`, `features`,
`report`, `download`; `audio` holds the ffmpeg/soxr/loudness helpers).

The `pipeline.<stage>` CLIs are thin wrappers over these modules; nothing here prints or parses argv.
`prep` may import `vits`; `vits` never imports `prep`.
"""
