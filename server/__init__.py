"""The HTTP API (hiyoriUI-compatible `/voice`, model registry, status): `python -m server --help`."""
