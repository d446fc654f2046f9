"""Whether a job's run is already done: one answer, told without torch, for everyone who asks. The run itself asks
before it starts (beft.pipeline), the sweep's job list asks for `make status` (beft.jobs), and a launcher that
submits jobs elsewhere (SLURM: beft.submitit_launcher) asks before submitting, so a rerun allocates nothing for
finished work and nobody skips a job that its run would redo.

The record is read where the run writes it (beft.record.run_id under out_dir, from the key of its config and
fingerprint: file hashes, package versions) and checked as every record is checked (beft.record_check): one that
fails the checks is `invalid`, and the run redoes it. A record from before fingerprints, under a legacy key,
counts as done when its fingerprint rebuilt from its env equals the job's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from beft import fingerprint
from beft.record import RECORD, legacy_keys, read_record, record_key, run_id
from beft.record_check import distrust

STATES = ("done", "failed", "invalid", "missing")


def data_dir(cfg) -> str | None:
    """As beft.config.data_dir (which imports torch): `data_dir`, else $BEFT_DATA_DIR, else None (the hub)."""
    value = cfg.get("data_dir") or os.environ.get("BEFT_DATA_DIR") or None
    return str(Path(value).expanduser().resolve()) if value else None


@dataclass(frozen=True)
class Found:
    """What is where a job's run would write its record."""
    state: str                 # one of STATES
    run_id: str                # the folder under out_dir (the legacy key's, when a legacy record decided)
    reason: str = ""           # why failed or invalid
    record: dict | None = None

    @property
    def path(self) -> str:
        return f"{self.run_id}/{RECORD}"


def prints_of(config: dict) -> dict:
    """The job's fingerprint, as the run computes it."""
    return fingerprint.of_run(config["model"], config["task"], data_dir(config))


def look_up(config: dict, key: str | None = None, prints: dict | None = None) -> Found:
    """The state of the job whose config (as data, resolved) is `config`; `key` and `prints` when known."""
    prints = prints if prints is not None else prints_of(config)
    key = key or record_key(config, prints)
    out_dir = Path(str(config["out_dir"]))
    found = _look(out_dir, run_id(config, key), key)
    if found.state != "missing":
        return found
    for old_key in legacy_keys(config):   # a record from before fingerprints: done where the fingerprints agree
        old = _look(out_dir, run_id(config, old_key), old_key, prints)
        if old.state in ("done", "invalid"):
            return old
    return found


def _look(out_dir: Path, name: str, key: str, legacy_prints: dict | None = None) -> Found:
    path = out_dir / name / RECORD
    if not path.exists() and not path.is_symlink():
        return Found("missing", name)
    record = read_record(path)
    if record is None:
        return Found("invalid", name, f"{RECORD} is not a readable JSON record (a plain file of at most 64 MB)")
    reason = distrust(record, name)
    if reason is None and record.get("key") != key:
        reason = f"its key {record.get('key')} is another run's"
    if reason is not None:
        return Found("invalid", name, reason)
    if legacy_prints is not None:   # only an ok record without a fingerprint, rebuilt equal to the job's
        if record["status"] != "ok" or record.get("fingerprint") or fingerprint.of_record(record) != legacy_prints:
            return Found("missing", name)
    if record["status"] == "ok":
        return Found("done", name, record=record)
    first = (str(record.get("error")).strip().splitlines() or [""])[0]
    return Found("failed", name, first if record["status"] == "failed" else f"interrupted: {first}", record)


class DoneRecords:
    """For a launcher: the ok record that makes a job's run unnecessary (the job's config without its hydra node)."""

    def find(self, cfg) -> dict | None:
        """The job's ok record if it checks out, else None (also with force set: the run reruns)."""
        config = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
        if config.get("force"):
            return None
        found = look_up(config)
        return found.record if found.state == "done" else None
