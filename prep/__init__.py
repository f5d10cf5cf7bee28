"""Dataset preparation library: ingest, slice, transcribe, conform audio, build lists, health report.

The `pipeline.<stage>` CLIs are thin wrappers over these modules; nothing here prints or parses argv.
"""
