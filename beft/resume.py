"""Which jobs of a sweep are already done, told without torch: a launcher that submits jobs elsewhere (SLURM)
asks here before submitting, so a rerun allocates nothing for finished work.

A job is done when an `ok` record carries its key (beft.record.record_key over the config and
beft.fingerprint.of_run: file hashes, package versions), or, for a record from before fingerprints, one of its
legacy keys with a fingerprint rebuilt from the record's env equal to the job's, exactly as beft.pipeline
decides in the job. A job this misses still skips itself when it runs; this never skips more than the job would.
"""
from __future__ import annotations

import os
from pathlib import Path

from beft import fingerprint
from beft.record import RECORD, legacy_keys, read_record, record_key


def data_dir(cfg) -> str | None:
    """As beft.config.data_dir (which imports torch): `data_dir`, else $BEFT_DATA_DIR, else None (the hub)."""
    value = cfg.get("data_dir") or os.environ.get("BEFT_DATA_DIR") or None
    return str(Path(value).expanduser().resolve()) if value else None


class DoneRecords:
    """The ok records under out_dirs, found by key; run folders are listed once per out_dir."""

    def __init__(self):
        self._folders: dict[Path, dict[str, list[Path]]] = {}

    def _by_short_key(self, out_dir: Path) -> dict[str, list[Path]]:
        if out_dir not in self._folders:
            index: dict[str, list[Path]] = {}
            if out_dir.is_dir():
                for folder in out_dir.iterdir():   # run ids end in -<the key's first 8 characters>
                    index.setdefault(folder.name.rsplit("-", 1)[-1], []).append(folder)
            self._folders[out_dir] = index
        return self._folders[out_dir]

    def _ok(self, out_dir: Path, key: str, accept) -> dict | None:
        for folder in self._by_short_key(out_dir).get(key[:8], []):
            record = read_record(folder / RECORD)
            if record and record.get("status") == "ok" and record.get("key") == key and accept(record):
                return record
        return None

    def find(self, cfg) -> dict | None:
        """The ok record that makes this job's run unnecessary, or None (also with force set)."""
        if cfg.get("force"):
            return None
        out_dir = Path(str(cfg.out_dir))
        prints = fingerprint.of_run(cfg.model, cfg.task, data_dir(cfg))
        mine = self._ok(out_dir, record_key(cfg, prints), lambda record: True)
        if mine is not None:
            return mine
        for old_key in legacy_keys(cfg):
            old = self._ok(out_dir, old_key,
                           lambda record: not record.get("fingerprint") and fingerprint.of_record(record) == prints)
            if old is not None:
                return old
        return None
