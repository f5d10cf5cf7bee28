"""The HTTP API (hiyoriUI-compatible `/voice`, model registry, status): `python -m server --help`.

    params.py    request parameters, defaults, limits, parsing of query/JSON/form/text bodies
    audio.py     wav/flac/ogg/mp3 encoding and streamed pieces
    registry.py  loaded voices with their queues, loading, the shared BERT models
    routes.py    `create_app(...)`: the FastAPI app built from small route functions
    hiyori.py    hiyoriUI's other routes (/models/info, /models/add, /models/get_local, /tools/...), as it answers
    mount.py     the same API on the studio's port, behind the studio's login
    __main__.py  the command line (`python -m server`; `python -m pipeline.serve` is its old name)

Importing `server` is light; `from server import create_app` imports FastAPI and the routes.
"""


def __getattr__(name: str):
    if name == "create_app":
        from server.routes import create_app

        return create_app
    raise AttributeError(f"module 'server' has no attribute {name!r}")
