"""Builds and launches the Gradio studio (placeholder until the studio issue lands)."""

from __future__ import annotations

import os

from pipeline.settings import load_settings


def build(settings):
    import gradio as gr

    with gr.Blocks(title="Koe Studio") as demo:
        gr.Markdown("# Koe Studio")
        for name in ["Dataset", "Preprocess", "Train", "Synthesize", "Export"]:
            with gr.Tab(name):
                gr.Markdown(f"{name}: coming soon. Data folder: `{settings.data_root}`")
    return demo


def launch(args) -> int:
    if args.root:
        os.environ["KOE_DATA_ROOT"] = args.root
    settings = load_settings(args.config)
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    if args.share and not auth and not args.insecure_share:
        print("error: --share makes the studio public; add --auth user:pass (or --insecure-share)")
        return 2
    demo = build(settings)
    demo.queue().launch(server_name=args.host or settings.host, server_port=args.port or settings.port,
                        share=args.share, auth=auth, show_error=True)
    return 0
