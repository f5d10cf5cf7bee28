"""Builds and launches the Gradio studio: a voice picker on top and one tab per step of the user's path.

The studio's port also answers the HTTP API (`/voice`, `/models...`, `/status`, `/docs`; server/mount.py),
behind the studio's login, with the same model registry as the Synthesize tab.
"""

from __future__ import annotations

import os
import sys

from prep.ingest import MAX_MEMBER_BYTES
from prep.voice_version import VERSION_LABELS
from settings import Settings, load_settings
from studio.jobs import JobRunner
from studio.tabs import Context, error_text
from studio.voices import create_voice, list_voices
from vits.errors import KoeError

TABS = ["Dataset", "Preprocess", "Train", "Synthesize", "Export", "Merge"]
LOADING_VOICES = "⏳ Loading voices…"
# The studio trains on the same GPU: keep one voice in memory, for the tab and the API together.
STUDIO_MAX_MODELS = 1


def new_registry(settings: Settings):
    """The model registry the Synthesize tab and the API on the studio's port share."""
    from server.registry import ModelRegistry

    return ModelRegistry(settings, settings.resolved_device(), max_models=STUDIO_MAX_MODELS)


def build(settings: Settings, runner: JobRunner | None = None, config_path: str | None = None,
          refresh_s: float | None = None, allow_parallel_gpu: bool = False, registry=None):
    """The studio's Blocks. Takes settings (and a runner, a model registry for tests); returns an unlaunched
    gr.Blocks."""
    import gradio as gr

    from studio.tabs import dataset, export, merge, preprocess, synthesize, train

    runner = runner or JobRunner(settings)
    refresh_s = refresh_s or float(os.environ.get("KOE_STUDIO_REFRESH_S", "2"))
    ctx = Context(settings=settings, runner=runner, config_path=config_path,
                  allow_parallel_gpu=allow_parallel_gpu)
    ctx.caches[synthesize.REGISTRY] = registry or new_registry(settings)
    with gr.Blocks(title="Koe Studio") as demo:
        gr.Markdown("# Koe Studio\nFrom recordings to a voice you can type into. "
                    f"Data folder: `{settings.data_root}`")
        with gr.Row():
            ctx.voice = gr.Dropdown(list_voices(settings), label="Voice", value=None, elem_id="voice", scale=2)
            new_name = gr.Textbox(label="New voice name", placeholder="e.g. alice", elem_id="new-voice", scale=2)
            new_version = gr.Dropdown([(label, v) for v, label in VERSION_LABELS.items()], value="2.3",
                                      label="Version (2.2-CLAP: to fine-tune a 2.2 base model)",
                                      elem_id="new-voice-version", scale=2)
            create_btn = gr.Button("Create voice", elem_id="create-voice", scale=1)
        # Shown until the page load (initial_voice) has filled the voice menu: a Create pressed before that races it
        # (seen: the two menu updates left the page re-firing its voice.change events).
        voice_md = gr.Markdown(LOADING_VOICES, elem_id="voice-status")
        ctx.timer = gr.Timer(refresh_s)
        for name, module in zip(TABS, (dataset, preprocess, train, synthesize, export, merge)):
            with gr.Tab(name, id=name.lower(), elem_id=f"tab-{name.lower()}"):
                module.build(ctx)

        def create(name, version):
            existed = bool(name) and name in list_voices(settings)
            try:
                voice_dir = create_voice(settings, name, version or "2.3")
            except KoeError as exc:
                return gr.skip(), error_text(exc)
            done = f"`{voice_dir.name}` already exists: selected it" if existed else f"created `{voice_dir}`"
            return (gr.update(choices=list_voices(settings), value=voice_dir.name),
                    f"✅ {done} (Bert-VITS2 {version or '2.3'})")

        def initial_voice():
            # Re-attach: a reloaded page opens on the voice whose job is still running.
            running = [j.voice for j in runner.running() if j.voice]
            voices = list_voices(settings)
            value = running[0] if running else (voices[0] if voices else None)
            return gr.update(choices=voices, value=value), runner.reattach_note()

        def stale_note(shown):
            # The re-attached note goes once its job has ended (JobRunner.note_update); other text stays.
            new = runner.note_update(shown)
            return gr.skip() if new is None else new

        create_btn.click(create, [new_name, new_version], [ctx.voice, voice_md])
        demo.load(initial_voice, None, [ctx.voice, voice_md])
        ctx.timer.tick(stale_note, voice_md, voice_md, show_progress="hidden", trigger_mode="once")
    return demo


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """`user:pass` → (user, pass). Raises KoeError when either part is empty."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise KoeError("--auth must look like user:password", fix="e.g. --auth me:a-long-password")
    return user, password


def launch(args) -> int:
    """Start the studio from parsed app.py arguments; returns the exit code."""
    try:
        auth = parse_auth(args.auth)
    except KoeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.share and not auth and not args.insecure_share:
        print("error: --share makes the studio reachable from the internet; add --auth user:pass "
              "(or --insecure-share if you really mean it)", file=sys.stderr)
        return 2
    # Only once the arguments are accepted: the stage subprocesses inherit the data root from here.
    if args.root:
        os.environ["KOE_DATA_ROOT"] = os.path.abspath(args.root)
    try:
        settings = load_settings(args.config)
        settings.use_text_frontend()  # the review table's phone preview reads like the text stage
    except KoeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings.data_root.mkdir(parents=True, exist_ok=True)
    from server.mount import api_middleware, open_host_warning
    from server.routes import create_app

    host = args.host or settings.host
    warning = None if auth else open_host_warning(host, args.port or settings.port, "the studio and its API",
                                                   "add --auth user:password")
    if warning:
        print(f"WARNING: {warning}", file=sys.stderr, flush=True)
    registry = new_registry(settings)
    demo = build(settings, config_path=args.config, allow_parallel_gpu=getattr(args, "allow_parallel_gpu", False),
                 registry=registry)
    api = create_app(settings, registry=registry)
    # Gradio makes its web app inside launch(); the API goes in as a middleware, so --share works as before.
    demo.queue(default_concurrency_limit=4).launch(
        server_name=host, server_port=args.port or settings.port, share=args.share, auth=auth,
        show_error=True, allowed_paths=[str(settings.data_root)], footer_links=[],
        # Bounded like ingest: Gradio writes a raw upload to its temp folder before any handler sees it.
        max_file_size=MAX_MEMBER_BYTES,
        app_kwargs={"middleware": [api_middleware(api, auth)]})
    return 0
