"""The run record: one `result.json` per run, written atomically, keyed by what changes the result.

The key hashes the config sections that can change a number (model, task, regime, method, budget, trainer,
seed) minus the knobs that cannot (device, progress bars, output paths, logger), so a sweep run again finds
its finished jobs and a reader can group runs that should agree.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

KEY_SECTIONS = ("model", "task", "regime", "method", "budget", "trainer", "seed")
# Trainer fields that change speed or display, never the numbers (on one device).
KEY_IGNORED = {"trainer": {"device", "progress", "eval_batch_size", "eval_train", "cache_dir"},
               "model": {"path", "package"}}
RECORD = "result.json"


def key_fields(cfg) -> dict:
    container = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    fields = {}
    for section in KEY_SECTIONS:
        value = container.get(section)
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in KEY_IGNORED.get(section, ())}
        if section == "task" and isinstance(value, dict) and (container.get("model") or {}).get("kind") != "decoder":
            value = {k: v for k, v in value.items() if k != "decoder"}  # the prompted form cannot change an encoder run
        fields[section] = value
    return fields


def record_key(cfg) -> str:
    blob = json.dumps(key_fields(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_json_atomic(path: Path, obj) -> None:
    """Write to a temp file in the same directory, then rename: readers never see half a record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False, default=_jsonable)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value):
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return value.tolist()
    return str(value)


def read_record(path: Path) -> dict | None:
    """The record at path, or None if it is missing or not valid JSON (a crash mid-write never leaves one)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _git_commit() -> str | None:
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: str, model_source: dict, data_source: dict) -> dict:
    """Everything needed to trace a number back: versions, device, commit, weights and data provenance."""
    versions = {}
    for package in ("beft", "torch", "transformers", "datasets", "peft", "hydra-core", "numpy", "scikit-learn"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {"versions": versions, "python": platform.python_version(), "device": device,
            "git_commit": _git_commit(), "model": model_source, "data": data_source}


def summary_line(record: dict) -> str:
    """One line a user reads at the end of a run."""
    if record.get("status") != "ok":
        return f"[{record.get('status')}] {record.get('run_id')}: {record.get('error')}"
    main = record["metrics"]["main"]
    seconds = (record.get("timing") or {}).get("total", float("nan"))
    return (f"[ok] {record['run_id']}: {main['name']} = {main['value']:.4f} (final epoch), "
            f"trainable {record['trainable_params']:,}, {seconds:.1f} s")
