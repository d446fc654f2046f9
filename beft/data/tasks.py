"""`load_task`: one task's training subset and labelled evaluation splits, from local files or the hub.

Examples are plain dicts: the hub schema's field names (e.g. sentence1/sentence2 for RTE, premise/hypothesis
for CB) plus "label", a class index in the order of the task's `label_names` (the hub's ClassLabel order) or a
float for regression. Local and hub data therefore look the same to everything downstream.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from beft.data import hub, readers
from beft.errors import BeftError, choices_error
from beft.metrics import METRICS as _METRIC_FUNCTIONS
from beft.run_spec import plain

REQUIRED_KEYS = ("name", "kind", "text_fields", "label_names", "metrics", "main_metric", "lr", "epochs",
                 "sizes", "hub", "local")
KINDS = ("classification", "regression")
METRICS = tuple(_METRIC_FUNCTIONS)   # the metrics beft.metrics can compute, and only those
LOCAL_KEYS = ("reader", "dir", "train", "eval", "fields")  # required; label_map and reader options are optional
LAYOUT = "the GLUE/SuperGLUE task folders, e.g. SST-2/train.tsv, RTE/dev.tsv, CB/train.jsonl"


@dataclass
class TaskData:
    train: list[dict]                 # the training subset (all of the split when n_train is None)
    eval: dict[str, list[dict]]       # labelled evaluation splits by name, e.g. {"validation": [...]}
    n_train_total: int                # size of the full training split, before subsetting
    source: dict                      # provenance for the run record: files + sha256, or hub fingerprints


def load_task(task_cfg, data_dir: str | None, n_train: int | None, seed: int) -> TaskData:
    """Load a task. data_dir None: from the hub (task_cfg.hub); else from files under data_dir (task_cfg.local).

    n_train None keeps the whole training split; otherwise exactly n_train examples drawn by `seed`, the same
    subset as the authors' `np.random.seed(seed); np.random.permutation(len(train))[:n]`.
    """
    cfg = validate_task_config(task_cfg)
    name = cfg["name"]
    _check_n(n_train, name)
    if data_dir is None:
        if not cfg["hub"].get("eval"):
            raise BeftError(f"task {name} has no labelled evaluation split: hub.eval is empty; "
                            "expected e.g. [validation]")
        train, evals, source = hub.load_hub(cfg["hub"], cfg["label_names"])
        for split, examples in {cfg["hub"]["train"]: train, **evals}.items():
            _check_hub_labels(cfg, split, examples)
    else:
        train, evals, source = _load_local(cfg, data_dir)
    if n_train is not None and n_train > len(train):
        raise BeftError(f"regime.n={n_train} is larger than the {name} training split ({len(train)} examples)")
    return TaskData(train=subset(train, n_train, seed), eval=evals, n_train_total=len(train), source=source)


def load_prompted(spec: dict, data_dir: str | None, n_train: int | None, n_eval: int | None, seed: int,
                  exact: bool = False) -> TaskData:
    """The examples of a task's prompted (decoder) form, docs/paper.md §C.5: `spec` has name, label_names (the hub's
    class order, or [] where examples carry their answers), hub, and local (null: the task is read from the hub
    even when a data_dir is given). n_train / n_eval examples are drawn by seed, all of a split where it has fewer;
    exact=True makes a larger n_train an error (an explicit regime.n)."""
    name = spec["name"]
    _check_n(n_train, name)
    cfg = {"name": name, "label_names": list(spec.get("label_names") or []), "hub": spec["hub"],
           "local": spec.get("local"),
           "kind": "classification" if spec.get("label_names") else "answers"}
    if data_dir is not None and cfg["local"]:
        train, evals, source = _load_local(cfg, data_dir)
    else:
        try:
            train, evals, source = hub.load_hub(cfg["hub"], cfg["label_names"])
        except BeftError as err:
            if cfg["local"]:
                raise
            raise BeftError(f"task {name} is read from the hub only (no local files are configured for it): "
                            f"{str(err).split('; give data_dir')[0]}") from None
        for split, examples in {cfg["hub"]["train"]: train, **evals}.items():
            _check_hub_labels(cfg, split, examples)
    if exact and n_train is not None and n_train > len(train):
        raise BeftError(f"regime.n={n_train} is larger than the {name} training split ({len(train)} examples)")
    evals = {split: subset(rows, n_eval if n_eval is not None and n_eval < len(rows) else None, seed)
             for split, rows in evals.items()}
    n = n_train if n_train is not None and n_train < len(train) else None
    return TaskData(train=subset(train, n, seed), eval=evals, n_train_total=len(train), source=source)


def subset(examples: list, n: int | None, seed: int) -> list:
    """The first n of a seeded permutation: identical to the authors' global-seed np.random.permutation."""
    if n is None:
        return list(examples)
    order = np.random.RandomState(seed).permutation(len(examples))[:n]
    return [examples[i] for i in order]


def validate_task_config(task_cfg) -> dict:
    """The task config as a plain dict, after checking the keys everything else relies on."""
    cfg = OmegaConf.to_container(task_cfg, resolve=True) if OmegaConf.is_config(task_cfg) else plain(task_cfg)
    name = cfg.get("name", "?")
    missing = [k for k in REQUIRED_KEYS if k not in cfg]
    if missing:
        raise BeftError(f"task config {name} lacks {', '.join(missing)}; a task config needs {', '.join(REQUIRED_KEYS)}")
    if cfg["kind"] not in KINDS:
        raise choices_error(f"kind for task {name}:", cfg["kind"], KINDS)
    for metric in cfg["metrics"]:
        if metric not in METRICS:
            raise choices_error(f"metric for task {name}:", metric, METRICS)
    if cfg["main_metric"] not in cfg["metrics"]:
        raise BeftError(f"task {name}: main_metric {cfg['main_metric']!r} is not among its metrics "
                        f"{', '.join(cfg['metrics'])}")
    if (cfg["kind"] == "classification") != bool(cfg["label_names"]):
        raise BeftError(f"task {name}: label_names must list the classes for classification and be [] for "
                        f"regression (kind {cfg['kind']}, label_names {cfg['label_names']})")
    stray = [v for v in (cfg["local"].get("label_map") or {}).values() if v not in cfg["label_names"]]
    if stray:
        raise BeftError(f"task {name}: local.label_map maps to {', '.join(map(str, stray))}, not in label_names "
                        f"{', '.join(cfg['label_names'])}")
    return cfg


def _check_n(n_train, name: str) -> None:
    if n_train is None:
        return
    if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or n_train <= 0:
        raise BeftError(f"regime.n={n_train} must be a positive whole number of training examples "
                        f"(or null for the whole {name} training split)")


def _label_fn(cfg: dict):
    """Raw local label -> canonical label; ValueError (the reader adds file and line) on a bad value."""
    if cfg["kind"] == "regression":
        def to_float(value):
            try:
                return float(value)
            except (TypeError, ValueError):
                raise ValueError(f"label {value!r} is not a number (task {cfg['name']} is a regression)") from None
        return to_float
    names = list(cfg["label_names"])
    if not names:  # prompted tasks whose examples carry their answers (ReCoRD, SQuAD): nothing to convert
        return lambda value: value
    # label_map covers files whose labels are not the class names: "0"/"1" (SST-2, CoLA), "T"/"F" (WiC).
    label_map = {str(k): v for k, v in (cfg["local"].get("label_map") or {}).items()}
    valid = list(label_map) or names

    def to_index(value):
        label = label_map.get(str(value), value)
        if label not in names:
            raise ValueError(f"unknown label {value!r}; valid: {', '.join(valid)}")
        return names.index(label)
    return to_index


def _check_hub_labels(cfg: dict, split: str, examples: list[dict]) -> None:
    if cfg["kind"] != "classification":
        return
    n_classes = len(cfg["label_names"])
    for example in examples:
        if not 0 <= example["label"] < n_classes:
            hint = " (-1: an unlabelled split, e.g. test; use a labelled one such as validation)" \
                if example["label"] == -1 else ""
            raise BeftError(f"hub split {split!r} of {cfg['hub']['path']} ({cfg['hub'].get('name')}) has label "
                            f"{example['label']}{hint}; valid labels are 0..{n_classes - 1} "
                            f"({', '.join(cfg['label_names'])})")


def local_paths(local: dict, root: Path) -> dict[str, Path]:
    """{"train": path, <eval split>: path} of a task's local section under the data root."""
    task_dir = root / local["dir"]
    return {"train": task_dir / local["train"], **{s: task_dir / f for s, f in local["eval"].items()}}


def local_files(local: dict, root: Path) -> list[Path]:
    """Every file a task's local section reads (WiC's gold files too), once each: what a record fingerprints."""
    files = [f for p in local_paths(local, root).values() for f in readers.reader_files(local["reader"], p)]
    return list(dict.fromkeys(files))


def _load_local(cfg: dict, data_dir: str) -> tuple[list[dict], dict[str, list[dict]], dict]:
    name, local = cfg["name"], cfg["local"]
    root = Path(data_dir).expanduser().resolve()
    if not root.is_dir():
        state = "is a file, not a folder" if root.exists() else "does not exist"
        raise BeftError(f"data_dir {root} {state}; it should be a folder holding {LAYOUT}")
    missing = [k for k in LOCAL_KEYS if k not in local]
    if missing:
        raise BeftError(f"task config {name}: local lacks {', '.join(missing)}; it needs {', '.join(LOCAL_KEYS)}")
    if not local["eval"]:
        raise BeftError(f"task {name} has no labelled evaluation split: local.eval is empty; "
                        "expected e.g. {validation: dev.tsv}")
    reader = readers.get_reader(local["reader"])
    options = {k: v for k, v in local.items() if k not in LOCAL_KEYS + ("label_map", "split_pool")}
    allowed = [p for p in inspect.signature(reader).parameters if p not in ("path", "fields", "label_fn")]
    for key in options:
        if key not in allowed:
            raise choices_error(f"local option for reader {local['reader']}:", key, allowed or ["(none)"])

    paths = local_paths(local, root)
    files = local_files(local, root)
    for f in files:
        if not f.is_file():
            task_dir = root / local["dir"]
            expected = ", ".join(f.relative_to(task_dir).as_posix() for f in files)
            hub_cfg = cfg["hub"]
            raise BeftError(f"missing data file {f} for task {name}: expected {task_dir}/ to hold {expected} "
                            f"(GLUE/SuperGLUE layout); without data_dir, {name} loads from the hub "
                            f"({hub_cfg['path']}, {hub_cfg.get('name')})")

    label_fn = _label_fn(cfg)
    read: dict[Path, list[dict]] = {}   # a file named by two splits (a split pool) is read once
    for p in paths.values():
        if p not in read:
            read[p] = reader(p, local["fields"], label_fn, **options)
    data = {split: read[p] for split, p in paths.items()}
    for split, examples in data.items():
        if not examples:
            raise BeftError(f"{paths[split]} ({name} {split} split) holds no examples")
    source = {"kind": "local", "dir": str(root),
              "files": {f.relative_to(root).as_posix(): sha256_file(f) for f in files}}
    if local.get("split_pool"):
        data, source["split_pool"] = split_pool(data, local["split_pool"], name)
    train = data.pop("train")
    return train, data, source


def split_pool(data: dict[str, list[dict]], rule: dict, name: str) -> tuple[dict[str, list[dict]], dict]:
    """Training and evaluation examples from one file (SQuAD, DROP: only their dev sets are here), disjoint by
    group (article, passage): a group trains iff the first 8 hex digits of sha256(group) / 16^8 < train_share.
    The rule depends on nothing but the group's text, so every seed, model and method sees the same two pools."""
    by, share = rule.get("by"), rule.get("train_share")
    if not by or not isinstance(share, (int, float)) or not 0 < share < 1:
        raise BeftError(f"task {name}: local.split_pool needs by: <field> and train_share in (0, 1), got {rule}")

    def trains(example: dict) -> bool:
        if by not in example:
            raise BeftError(f"task {name}: local.split_pool.by={by!r} is not a field of its examples "
                            f"({', '.join(example)})")
        return int(hashlib.sha256(str(example[by]).encode()).hexdigest()[:8], 16) / 16 ** 8 < share

    out = {split: [ex for ex in rows if trains(ex) == (split == "train")] for split, rows in data.items()}
    groups = {split: len({str(ex[by]) for ex in rows}) for split, rows in out.items()}
    for split, rows in out.items():
        if not rows:
            raise BeftError(f"task {name}: local.split_pool leaves the {split} split empty; change train_share")
    note = {"by": by, "train_share": share, "groups": groups, "examples": {s: len(r) for s, r in out.items()},
            "rule": f"a {by} is in the training pool iff int(sha256({by})[:8], 16) / 16**8 < {share}; "
                    "the evaluation split holds only the other ones"}
    return out, note


_HASHED: dict[tuple, str] = {}


def sha256_file(path: Path) -> str:
    """The file's sha256, computed once per process for a given (path, size, modification time)."""
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHED:
        _HASHED[key] = _sha256(path)
    return _HASHED[key]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

