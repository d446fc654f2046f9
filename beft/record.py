"""The run record: one `result.json` per run, written atomically, keyed by what changes the result.

The key hashes the config sections that can change a number (model, task, regime, method, budget, trainer,
seed) minus the knobs that cannot (device, progress bars, output paths, logger), together with the run's
fingerprint (beft.fingerprint: the data files' sha256, the weights' identity, the code's results version), so a
sweep run again finds its finished jobs, a record never stands for data, weights or code it did not measure,
and a reader can group runs that should agree. Records from before the fingerprint (keyed by the config alone)
are still found where their fingerprint, rebuilt from their env, equals the run's (`legacy_key`).
"""
from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from beft import files, method_table, placement
from beft.fingerprint import digest
from beft.workload import evaluates_every_epoch, other_task_forms

KEY_SECTIONS = ("model", "task", "regime", "method", "budget", "trainer", "seed")
# Trainer fields that change speed or display, never the numbers (on one device).
# Memory knobs (issue 39) change where and how a job runs, not its maths: gradient checkpointing recomputes the
# same activations, a memory budget only refuses or lowers the evaluation batch, a device map places layers.
# allow_emulated_bf16 only lets a run go where it would be refused (issue 41).
KEY_IGNORED = {"trainer": {"device", "progress", "eval_batch_size", "eval_train", "cache_dir",
                           "gradient_checkpointing", "memory_budget_gib", "allow_emulated_bf16"},
               "model": {"path", "package", "device_map", "max_memory"}}
RECORD = "result.json"
MAX_RECORD_BYTES = 64 << 20   # far above any record (a selection run's is ~50 kB)
# Fields added after records existed, at the value that does exactly what the code did before them: a field at
# that value is left out of the key, so a new knob never re-keys (and reruns) the records made without it.
# Add every new result-changing field of a key section here with its old behaviour's value.
NEUTRAL = {"trainer": {"optimizer": "adamw",            # AdamW, the paper's (trainer.optimizer=sgd: issue 43)
                       "frozen_dtype": "auto"},         # frozen weights as beft always kept them (issue 41)
           "model": {"attention_dropout": None},        # null: the checkpoint's own attention dropout
           "task": {}, "method": {}}


def key_fields(cfg) -> dict:
    """The key's config part, from a config as data (a record's `config`, or a composed config)."""
    container = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    fields = {}
    for section in KEY_SECTIONS:
        value = container.get(section)
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in KEY_IGNORED.get(section, ())}
        if section == "task" and isinstance(value, dict):   # another kind's form of the task cannot change this run
            value = {k: v for k, v in value.items() if k not in other_task_forms(container.get("model"))}
        if section == "trainer" and isinstance(value, dict) and value.get("eval_every_epoch", False) is None:
            value = {**value, "eval_every_epoch": evaluates_every_epoch(value, container.get("model"))}  # resolved
        if isinstance(value, dict):
            value = without_neutral(value, NEUTRAL.get(section, {}))
        fields[section] = value
    return fields


def without_neutral(values: dict, neutral: dict) -> dict:
    """`values` minus the fields that sit at their neutral (pre-existing behaviour) value."""
    return {k: v for k, v in values.items() if not (k in neutral and v == neutral[k])}


def record_key(cfg, fingerprint: dict) -> str:
    """The key of a run: its result-changing config fields and its fingerprint (beft.fingerprint.of_run)."""
    return digest({"config": key_fields(cfg), "fingerprint": fingerprint})


def method_label(config: dict) -> str:
    """The run's label (`fixed-v`, `beft-params`), from its config as data (beft.method_table says how)."""
    method = config["method"]
    return method_table.label(method["name"], method, config.get("budget") or {})


def run_id(config: dict, key: str) -> str:
    """The run's folder name under out_dir: readable, and ending with the key's first 8 characters."""
    regime = config["regime"]
    regime = regime["name"] if regime.get("n") is None else f"n{regime['n']}"
    return (f"{config['model']['name']}-{config['task']['name']}-{regime}-{method_label(config)}-s{config['seed']}"
            f"-{key[:8]}")


# Key sections added after records existed, with the value that does what the code did before they existed: a
# record made before a section existed matches a config that has the section at this value.
ADDED_LATER = {"budget": {"name": "one_type"}}


def legacy_keys(cfg) -> list[str]:
    """The keys records had before fingerprints entered the key (the config fields alone), for the config as it
    is and, where it holds a later-added section at its old behaviour, with that section absent (null)."""
    fields = key_fields(cfg)
    keys = [digest(fields)]
    older = {k: None if k in ADDED_LATER and v == ADDED_LATER[k] else v for k, v in fields.items()}
    if older != fields:
        keys.append(digest(older))
    return keys


def write_json_atomic(path: Path, obj) -> None:
    """Write to a temp file in the same directory, then rename: readers never see half a record, and a symlink
    planted at the record's name is replaced, never written through (beft.files)."""
    files.write_json(path, obj, default=_jsonable)


def save_record(path: Path, record: dict) -> None:
    """Write a run's record as it ends (pipeline.run's `finally`). A finished run whose record cannot be written
    raises (DiskFull names the file): its result is lost, and the user must hear it. A failed or interrupted run's
    record that cannot be written (a full disk, most often what failed) leaves the run's own error as the one
    raised, noting on it (`record_lost`) that no record was written, instead of a second traceback chained to it."""
    in_flight = sys.exc_info()[1] if record.get("status") != "ok" else None   # the error pipeline.run re-raises
    try:
        write_json_atomic(path, record)
    except OSError as lost:
        if in_flight is None:
            raise
        in_flight.record_lost = str(lost) if isinstance(lost, files.DiskFull) else f"{path}: {lost.strerror or lost}"


def _jsonable(value):
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return value.tolist()
    return str(value)


def read_record(path: Path) -> dict | None:
    """The record at path, or None if it is missing, not a plain file or not valid JSON (a crash mid-write never
    leaves one). Read, not yet trusted: beft.record_check says whether it is what it claims."""
    try:
        return json.loads(files.read_bytes(path, MAX_RECORD_BYTES))
    except (OSError, ValueError):   # missing, torn, or not a plain file (a symlink, a FIFO): not a record
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
    env = {"versions": versions, "python": platform.python_version(), "device": device, "host": _host(),
           "git_commit": _git_commit(), "model": model_source, "data": data_source}
    where = placement.describe()   # the SLURM job (id, array index, node, log) or the joblib job and its GPU
    if where:
        env["placement"] = where
    return env


def _host() -> dict:
    """The CPU kernels torch dispatched to. Float results repeat exactly on one host, not necessarily across hosts
    (two machines trained one MPNet key to numbers 6 examples apart), so a reader can tell such records apart."""
    import torch   # only here: the rest of this module reads and writes JSON and loads without torch

    return {"machine": platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads()}


def summary_line(record: dict) -> str:
    """One line a user reads at the end of a run."""
    if record.get("status") != "ok":
        return f"[{record.get('status')}] {record.get('run_id')}: {record.get('error')}"
    main = record["metrics"]["main"]
    seconds = (record.get("timing") or {}).get("total", float("nan"))
    return (f"[ok] {record['run_id']}: {main['name']} = {main['value']:.4f} (final epoch), "
            f"trainable {record['trainable_params']:,}, {seconds:.1f} s")
