"""The trainer's hold on its voice: one run per voice (`vits.voice_lock`), and the clean-up only a holder may do.

Rank 0 takes the voice lock; under torchrun it tells the other ranks the outcome in one broadcast, so a run
refused because the voice is already training ends on every rank at once (none waits in a collective).
Once the lock is held, temp files of checkpoint saves that a kill interrupted are deleted (nobody else
writes checkpoints of this voice now) and a stale lock that was taken over is reported.

    with StopRequest() as stop, TrainingLock(voice_dir, log) as lock:
        rt = init_runtime(device)
        lock.take(rt)        # raises VoiceBusy on every rank when another run holds the voice
        ...                  # released when the block ends, however it ends
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from vits import voice_folder
from vits.checkpoints import clean_leftover_saves
from vits.errors import KoeError
from vits.train.runtime import Runtime, shutdown_runtime
from vits.voice_lock import VoiceBusy, VoiceLock


class TrainingLock:
    """The voice lock as a run holds it: taken by rank 0 in `take`, released on leaving the `with` block."""

    def __init__(self, voice_dir: str | os.PathLike, log: Callable[[str], None]):
        self.voice_dir = Path(voice_dir)
        self.log = log
        self.lock: VoiceLock | None = None

    def take(self, rt: Runtime) -> None:
        """Rank 0 takes the lock (then cleans leftovers); every rank raises VoiceBusy if it could not.

        Raises VoiceBusy (the voice is training elsewhere) or KoeError (the lock file cannot be written).
        """
        refused: KoeError | None = None
        if rt.is_main:
            lock = VoiceLock(self.voice_dir)
            try:
                if not self.voice_dir.is_dir():
                    raise KoeError("voice folder not found", where=str(self.voice_dir),
                                   fix="check the path, or ingest recordings first")
                note = lock.acquire()
            except KoeError as exc:
                refused = exc
            except OSError as exc:
                refused = KoeError(f"cannot create the training lock ({exc.strerror or exc})", where=str(lock.path),
                                   fix="make the voice folder writable for this user")
            else:
                self.lock = lock
                if note:
                    self.log(f"warning: {note}")
                self._clean_leftovers()
        if rt.distributed:
            import torch.distributed as dist

            box = [str(refused) if refused is not None else None]
            dist.broadcast_object_list(box, src=0, group=rt.control_group)
            if box[0] is not None and refused is None:
                refused = VoiceBusy(box[0])  # the other ranks: same message (rank 0 prints it)
        if refused is not None:
            # Every rank knows by now: leave the process group before exiting (a rank that exits with a live gloo
            # group while its peer has gone aborts with "terminate called without an active exception", exit -6).
            shutdown_runtime(rt)
            raise refused

    def _clean_leftovers(self) -> None:
        models = voice_folder.models_dir(self.voice_dir)
        try:
            removed = clean_leftover_saves(models)
        except OSError as exc:
            self.log(f"warning: could not remove temp files of interrupted saves in {models}: {exc}")
            return
        if removed:
            total = sum(size for _path, size in removed)
            names = ", ".join(path.name for path, _size in removed[:4]) + (" …" if len(removed) > 4 else "")
            self.log(f"removed {len(removed)} temp file(s) of a checkpoint save that was interrupted "
                     f"({total / 1e6:.1f} MB): {names}")

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> TrainingLock:
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
