"""Koe Studio's model library: Bert-VITS2 2.3- and 2.2-compatible networks, data, text frontend and synthesis.

This package never imports gradio or argparse and never prints: the `pipeline` CLIs and the `studio`
UI sit on top of it.
"""

from vits.errors import KoeError

__all__ = ["KoeError", "Voice"]


def __getattr__(name):
    # Lazy: `import vits` must stay cheap (no torch import) for the CLIs' --help.
    if name == "Voice":
        from vits.synthesis import Voice

        return Voice
    raise AttributeError(name)
