"""A small on-disk cache of finished trainings, so identical trainings run once per machine.

The probe of the selection methods is the BitFit run of the same seed, and a selection method that picks b_v
trains exactly what `method=fixed method.terms=[v]` trains: both are looked up here by a key over everything
that determines the training (model, data, seed, schedule, and the set of trained parameters).
Jobs running side by side (joblib, several processes, SLURM jobs on a shared disk) take a per-key lock around
"look up, else train and store", so the second job asking for a training waits for the first and reuses it.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import torch

from beft.file_lock import exclusive
from beft.record import umask


# Entries a refreshing cache (force=true) wrote in this process. It reads only these: every training a forced
# job depends on is recomputed, once per process, and a forced sweep's later jobs reuse what it recomputed.
_REFRESHED: set[tuple[str, str, str]] = set()


class Cache:
    def __init__(self, root: str | os.PathLike | None, refresh: bool = False):
        self.root = Path(root) if root else None
        self.refresh = refresh

    def _path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.pt"

    def get(self, kind: str, key: str):
        if self.root is None or not self._path(kind, key).exists():
            return None
        if self.refresh and (str(self.root), kind, key) not in _REFRESHED:
            return None
        try:
            return torch.load(self._path(kind, key), map_location="cpu", weights_only=False)
        except Exception:  # a torn or foreign file is a miss, never a crash
            return None

    @contextlib.contextmanager
    def claim(self, kind: str, key: str):
        """Hold `key`'s lock for the block: one job at a time computes a missing entry (no-op without a root)."""
        if self.root is None:
            yield
            return
        lock = self._path(kind, key).with_suffix(".lock")
        with exclusive(lock, f"another job is computing {kind} {key}; waiting to reuse it"):
            yield

    def put(self, kind: str, key: str, value) -> None:
        if self.root is None:
            return
        path = self._path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.fchmod(fd, 0o666 & ~umask())   # like any file the user writes (mkstemp makes 0600)
        os.close(fd)
        try:
            torch.save(value, tmp)
            os.replace(tmp, path)
            if self.refresh:
                _REFRESHED.add((str(self.root), kind, key))
        finally:
            Path(tmp).unlink(missing_ok=True)
