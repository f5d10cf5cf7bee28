"""Runs one job command and records its exit code in a file, so a restarted studio still learns it.

Usage (the job runner builds this argument list; users never call it):
    python -m studio.jobwrap EXIT_FILE -- COMMAND [ARGS...]

The wrapper is the leader of the job's process group. On SIGTERM it forwards the signal to the command
(which shares the group anyway) and keeps waiting, so a graceful stop (training saves a checkpoint)
still ends with a recorded exit code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def _write_exit(path: str, code: int) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{code}\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    """Run the command after `--`, write its exit code to EXIT_FILE, return it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m studio.jobwrap EXIT_FILE -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    exit_file, command = argv[0], argv[2:]
    # The group-wide SIGTERM reaches the child directly; the wrapper only has to outlive it.
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    try:
        child = subprocess.Popen(command)
    except OSError as exc:
        print(f"could not start {command[0]!r}: {exc}", flush=True)
        _write_exit(exit_file, 127)
        return 127
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:
            continue
    # A child killed by a signal reports -N; shells use 128+N.
    code = 128 - code if code < 0 else code
    _write_exit(exit_file, code)
    return code


if __name__ == "__main__":
    sys.exit(main())
