"""A small on-disk cache of finished trainings, so identical trainings run once per machine.

The probe of the selection methods is the BitFit run of the same seed, and a selection method that picks b_v
trains exactly what `method=fixed method.terms=[v]` trains: both are looked up here by a key over everything
that determines the training (model, data, seed, schedule, and the set of trained parameters).
Jobs running side by side (joblib, several processes, SLURM jobs on a shared disk) take a per-key lock around
"look up, else train and store", so the second job asking for a training waits for the first and reuses it.

The cache may sit on a disk other users write, so nothing in it is trusted: an entry is one safetensors file
(`<kind>/<key>.safetensors`: tensors, which load as plain numbers, never as code) whose header holds JSON stating
the entry's key and everything that determined it. An entry is used only if that statement equals the request;
anything else (another training under this name, a torn, foreign or oversized file, a symlink) is a miss, with
one warning, and the training runs again. Entries of older beft versions (`<key>.pt`, pickles) are never opened.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import safetensors.torch

from beft import files
from beft.file_lock import UnsafeLock, exclusive

log = logging.getLogger("beft")
FORMAT = "beft-cache/2"
MAX_ENTRY_BYTES = 1 << 30   # far above any entry beft writes (fit.STATE_LIMIT numbers, three snapshots)

# Entries a refreshing cache (force=true) wrote in this process. It reads only these: every training a forced
# job depends on is recomputed, once per process, and a forced sweep's later jobs reuse what it recomputed.
_REFRESHED: set[tuple[str, str, str]] = set()


def canonical(obj):
    """`obj` as it reads back from JSON (tuples become lists, keys strings): how a stored statement compares."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


class Cache:
    def __init__(self, root: str | os.PathLike | None, refresh: bool = False, lock_timeout: float | None = None):
        self.root = Path(root) if root else None
        self.refresh = refresh
        self.lock_timeout = lock_timeout

    def _path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.safetensors"

    def get(self, kind: str, key: str, determined_by: dict) -> tuple[dict, dict] | None:
        """(entry, tensors) stored under `key`, if the entry states this key and exactly `determined_by`."""
        if self.root is None or (self.refresh and (str(self.root), kind, key) not in _REFRESHED):
            return None
        path = self._path(kind, key)
        try:
            data = files.read_bytes(path, MAX_ENTRY_BYTES)
        except FileNotFoundError:
            return None
        except OSError as err:
            log.warning("cache entry %s cannot be read (%s): training it again", path, err)
            return None
        try:
            statement = _statement(data)
            differs = [what for what, mine in (("format", FORMAT), ("kind", kind), ("key", key))
                       if statement.get(what) != mine]
            stated, asked = statement.get("determined_by") or {}, canonical(determined_by)
            differs += [f"determined_by.{k}" for k in sorted({*stated, *asked}) if stated.get(k) != asked.get(k)]
            if differs:
                log.warning("cache entry %s is not the training asked for (its %s differ%s): training it again",
                            path, ", ".join(differs), "s" if len(differs) == 1 else "")
                return None
            return statement["entry"], safetensors.torch.load(data)
        except Exception as err:  # a torn or foreign file is a miss, never a crash
            log.warning("cache entry %s is not a beft cache entry (%s: %s): training it again", path,
                        type(err).__name__, (str(err).splitlines() or [""])[0][:200])
            return None

    @contextlib.contextmanager
    def claim(self, kind: str, key: str):
        """Hold `key`'s lock for the block: one job at a time computes a missing entry (no-op without a root)."""
        if self.root is None:
            yield
            return
        lock = self.root / kind / f"{key}.lock"
        with contextlib.ExitStack() as held:
            try:
                if lock.parent.is_symlink():
                    raise UnsafeLock(f"{lock.parent} is a symbolic link")
                held.enter_context(exclusive(lock, f"another job is computing {kind} {key}; waiting to reuse it",
                                             self.lock_timeout))
            except UnsafeLock as err:   # a planted link: never opened; the entry is still checked when read
                log.warning("%s; computing %s %s without the lock", err, kind, key)
            except OSError as err:      # a cache disk that is full or read-only: no lock, nor (later) an entry
                log.warning("cannot lock %s (%s); computing %s %s without the lock", lock, err.strerror or err,
                            kind, key)
            yield

    def put(self, kind: str, key: str, determined_by: dict, entry: dict, tensors: dict) -> None:
        """Store `entry` (JSON-able) and `tensors` (name -> CPU tensor) under `key`, with what determined them."""
        if self.root is None:
            return
        statement = {"format": FORMAT, "kind": kind, "key": key, "determined_by": canonical(determined_by),
                     "entry": entry}
        data = safetensors.torch.save(tensors, metadata={"beft": json.dumps(statement, default=_plain)})
        try:
            files.write_bytes(self._path(kind, key), data)
        except files.UnsafePath as err:   # a planted link at the kind's folder: nothing is written through it
            log.warning("not caching %s %s: %s", kind, key, err)
            return
        except OSError as err:   # a full or read-only cache disk: the run and its record go on without the entry
            log.warning("not caching %s %s (the run goes on; its record is written): %s", kind, key,
                        err if isinstance(err, files.DiskFull) else f"{self._path(kind, key)}: {err.strerror or err}")
            return
        if self.refresh:
            _REFRESHED.add((str(self.root), kind, key))


def _plain(value):
    return value.tolist() if hasattr(value, "tolist") else str(value)   # numpy / torch scalars; paths


def _statement(data: bytes) -> dict:
    """The JSON statement in a safetensors file's header (read here, before any tensor is)."""
    size = int.from_bytes(data[:8], "little")
    if not 0 < size <= len(data) - 8:
        raise ValueError("no safetensors header")
    statement = json.loads(json.loads(data[8:8 + size])["__metadata__"]["beft"])
    if not isinstance(statement, dict) or not isinstance(statement.get("entry"), dict):
        raise ValueError("no beft statement in its header")
    return statement
