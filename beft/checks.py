"""Checks of the command line and of a composed config that need no model code, so a typo comes back at once.

This module imports only omegaconf, hydra and beft's bottom modules (errors, files, file_lock, bias_types): run.py calls it
before torch, transformers, scikit-learn and scipy are imported (those take seconds). Every check raises a
one-line BeftError that names what is wrong and what is valid. beft.config.validate calls `check_values` too,
so a sweep's job and a direct `beft.pipeline.run(cfg)` get the same checks.
"""
from __future__ import annotations

import glob
import math
import netrc
import os
import re
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from omegaconf import OmegaConf

from beft import method_table
from beft.bias_types import TYPES, canonical_type
from beft.errors import BeftError, choices_error
from beft.file_lock import HEARTBEAT
from beft.files import DISK_FULL, plain_name

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# Nodes whose keys are data, not settings (a tiny model's transformers config, a task's splits and sizes):
# `+task.sizes.tiny=50` may add a key there.
OPEN_NODES = {"model.tiny", "task.sizes", "task.local.eval", "task.local.fields", "task.local.label_map",
              "task.hub.eval"}


def group_choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if not p.stem.startswith("_"))


def hydra_group_choices(group: str) -> list[str]:
    """Options of a group under hydra/ (launchers, sweepers): ours in conf/hydra/ and the installed plugins'."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.plugins import Plugins

    Plugins.instance()  # registers the plugins' configs (joblib, submitit_local, submitit_slurm)
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF_DIR)))
    return sorted(loader.get_group_options(group))


def load_yaml(path: Path) -> dict:
    """A config file's content; a file that is not valid YAML (a config of the user's own, edited) is one line
    naming the file, the line and the problem, not a parser's traceback."""
    import yaml

    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    except (yaml.YAMLError, ValueError) as err:   # (OmegaConf's own errors are ValueErrors)
        raise yaml_error(err, path) from None
    if not isinstance(data, dict):
        raise BeftError(f"config file {path} holds a {type(data).__name__}, not a mapping of keys to values")
    return data


def yaml_error(err: Exception, path=None) -> BeftError:
    """The one line for a config file the YAML parser refused (`path`: the file, where the error does not say)."""
    mark = getattr(err, "problem_mark", None)
    path = path or getattr(mark, "name", None) or "?"
    where = f" line {mark.line + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or (str(err).strip().splitlines() or [type(err).__name__])[0]
    return BeftError(f"config file {path}{where} is not valid YAML ({problem}): fix it, or remove it")


@lru_cache(maxsize=None)
def _option(path: Path) -> dict:
    """One option file's content, after the files of its own group that its `defaults` list includes."""
    data = load_yaml(path)
    content: dict = {}
    for entry in data.pop("defaults", None) or []:
        if isinstance(entry, str) and entry != "_self_" and (path.parent / f"{entry}.yaml").is_file():
            content = _union(content, _option(path.parent / f"{entry}.yaml"))
    return _union(content, data)


def _union(a, b):
    """The keys of two config trees together (a node that is a mapping in either one stays a mapping)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _union(a.get(k), b.get(k)) if k in a and k in b else a.get(k, b.get(k)) for k in {*a, *b}}
    return a if isinstance(a, dict) else b


@lru_cache(maxsize=None)
def known_keys(group: str | None) -> dict:
    """Every key any option of `group` sets (None: the top level, conf/config.yaml and the group names)."""
    if group is None:
        top = _option(CONF_DIR / "config.yaml")
        top = {k: v for k, v in top.items() if k != "hydra"}   # hydra.* keys are Hydra's to check
        return {**top, **{p.name: None for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra"}}
    tree: dict = {}
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        try:
            tree = _union(tree, _option(path))
        except BeftError:   # a broken option file: refused when it is chosen (check_option), not when another is
            continue
    return tree


def check_key(key: str, verb: str = "") -> None:
    """Refuse a config key that no option of its group knows (`trainer.epoch`, `+method.term`), listing the
    valid ones. Hydra refuses some of these with a message that names no valid key, and silently keeps a
    misspelled `+key` that nothing reads."""
    parts = key.split(".")
    if parts[0] == "hydra":
        return
    group = parts[0] if (CONF_DIR / parts[0]).is_dir() and len(parts) > 1 else None
    node, path = known_keys(group), parts[1:] if group else parts
    seen = [group] if group else []
    for part in path:
        if not isinstance(node, dict) or ".".join(seen) in OPEN_NODES:
            return
        if part not in node:
            where = f"of {'.'.join(seen)}" if seen else "at the top level"
            raise BeftError(f"unknown config key {key!r}{verb}; valid keys {where}: {', '.join(sorted(node))}")
        node, seen = node[part], seen + [part]


def check_overrides(overrides: list[str], multirun: bool | None = None) -> None:
    """Group options (`model=foo`, `method=a,b`, `hydra/launcher=x`) and config keys, before Hydra composes.

    With `multirun` given (True or False: the command would run jobs), an experiment's own sweep is checked
    too, and an experiment that sweeps must be run with -m.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as err:
        bad = next((o for o in overrides if not _parses(o)), None)
        raise BeftError(f"cannot parse the override {bad!r}: {str(err).splitlines()[0]} (the grammar: key=value, "
                        "+key=value, group=option, and with -m key=a,b)") from None
    check_given_once(parsed)
    for override in parsed:
        key = override.key_or_group
        if override.is_delete() or override.package is not None:
            continue
        values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        if key.startswith("hydra/"):
            choices = hydra_group_choices(key)
            for value in values:
                if isinstance(value, str) and value not in choices:
                    raise choices_error(key, value, choices)
        elif "/" in key or (CONF_DIR / key).is_dir():
            for value in values:
                check_option(key, value)
                if key == "experiment" and value is not None and multirun is not None:
                    check_experiment(str(value), multirun)
        else:
            check_key(key, " (a '+' adds a key, but nothing would read this one)" if override.is_add() else "")


def check_given_once(parsed) -> None:
    """A config group given twice (`method=fixed-v method=fixed-q`): Hydra silently keeps the last, so one of the
    two arms asked for would never run. (A key given twice keeps Hydra's last-wins: `run.py out_dir=x "$@"` in a
    script is how defaults are overridden.)"""
    first: dict = {}
    for override in parsed:
        key = override.key_or_group
        if override.is_delete() or not ("/" in key or (CONF_DIR / key).is_dir()):
            continue
        if (key, override.package) in first:
            earlier = first[(key, override.package)]
            values = ",".join(o.input_line.split("=", 1)[-1] for o in (earlier, override))
            both = "" if key.startswith("hydra/") else f"; to run both, sweep them with -m {key}={values}"
            raise BeftError(f"{key} is given twice ({earlier.input_line} and {override.input_line}): give one "
                            f"option{both}")
        first[(key, override.package)] = override


def _parses(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        OverridesParser.create().parse_overrides([override])
        return True
    except OverrideParseException:
        return False


def check_option(group: str, value) -> None:
    choices = group_choices(group)
    if not (CONF_DIR / group).is_dir() or (value is not None and str(value) not in choices):
        raise choices_error(group, value, choices)
    if value is not None:
        _option(CONF_DIR / group / f"{value}.yaml")   # the chosen option's file is valid YAML


def check_experiment(name: str, multirun: bool) -> None:
    """An experiment's sweep names only options and keys that exist, and it runs with -m."""
    data = load_yaml(CONF_DIR / "experiment" / f"{name}.yaml")
    params = ((data.get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    sweep = [f"{k}={v}" for k, v in params.items()]
    for entry in data.get("defaults") or []:   # `override /model: bert-base-cased`
        for target, option in (entry.items() if isinstance(entry, dict) else []):
            sweep.append(f"{target.split()[-1].strip('/')}={option}")
    for override in sweep:
        try:
            check_overrides([override])
        except BeftError as err:
            raise BeftError(f"experiment={name} sets {override}: {err}") from None
    if params and not multirun:
        raise BeftError(f"experiment={name} is a sweep (over {', '.join(params)}): run it with -m, "
                        f"e.g. python run.py -m experiment={name}")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole(value, at_least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= at_least


def _bad(key: str, value, valid: str) -> BeftError:
    shown = str(value).lower() if isinstance(value, bool) or value is None else repr(value)  # as typed: true, null
    return BeftError(f"{key}={shown} is not valid: {valid}")


def check_values(cfg) -> None:
    """Values Hydra accepts but a run cannot use: zero epochs, a negative learning rate, seed=1.5, n=true."""
    t, seed = cfg.trainer, cfg.get("seed")
    if not _whole(seed, 0) or seed >= 2**32:
        raise _bad("seed", seed, "a whole number from 0 to 2**32-1 (sweep several with -m seed=0,1,2)")
    for name in ("epochs", "max_steps"):
        if t.get(name) is not None and not _whole(t.get(name), 1):
            raise _bad(f"trainer.{name}", t.get(name), "a whole number >= 1, or null for the task's own")
    for name in ("batch_size", "eval_batch_size", "grad_accum", "max_length"):
        if not _whole(t.get(name), 1):
            raise _bad(f"trainer.{name}", t.get(name), "a whole number >= 1")
    lr = t.get("lr")
    if lr is not None and not (_number(lr) and math.isfinite(lr) and lr > 0):
        raise _bad("trainer.lr", lr, "a finite number > 0 (e.g. 1e-3), or null for the task's paper value")
    for name, low in (("adam_eps", 0.0), ("max_grad_norm", 0.0)):
        if not (_number(t.get(name)) and math.isfinite(t.get(name)) and t.get(name) > low):
            raise _bad(f"trainer.{name}", t.get(name), "a finite number > 0")
    if not (_number(t.get("weight_decay")) and math.isfinite(t.weight_decay) and t.weight_decay >= 0):
        raise _bad("trainer.weight_decay", t.get("weight_decay"), "a finite number >= 0")
    for name, valid in (("precision", ("auto", "fp32", "bf16", "fp16")), ("schedule", ("constant", "linear")),
                        ("optimizer", ("adamw", "sgd")), ("frozen_dtype", ("auto", "fp32", "bf16"))):
        if t.get(name) not in valid:
            raise choices_error(f"trainer.{name}", t.get(name), valid)
    budget = t.get("memory_budget_gib")
    if budget is not None and not (_number(budget) and math.isfinite(budget) and budget > 0):
        raise _bad("trainer.memory_budget_gib", budget,
                   "the GiB a job may use (> 0), or null for what the GPU has free")
    if not isinstance(t.get("gradient_checkpointing", False), bool):
        raise _bad("trainer.gradient_checkpointing", t.get("gradient_checkpointing"), "true or false")
    if t.get("gradient_checkpointing") and method_table.checkpointing_refusal(cfg.method.name):
        raise BeftError(method_table.checkpointing_refusal(cfg.method.name))
    device_map = cfg.model.get("device_map")
    if device_map is not None and device_map not in ("auto", "balanced", "sequential") and \
            not OmegaConf.is_dict(device_map) and not isinstance(device_map, dict):
        raise _bad("model.device_map", device_map, "null (one device), auto, balanced, sequential, or a map "
                                                   "{module name: device}, e.g. '{\"\": cpu}'")
    if not isinstance(t.get("allow_emulated_bf16", False), bool):
        raise _bad("trainer.allow_emulated_bf16", t.get("allow_emulated_bf16"), "true or false")
    dropout = cfg.model.get("attention_dropout")
    if dropout is not None and not (_number(dropout) and 0 <= dropout < 1):
        raise _bad("model.attention_dropout", dropout, "a probability from 0 (off) to below 1, or null for the "
                                                       "checkpoint's own")
    n = cfg.regime.get("n")
    if n is not None and not _whole(n, 1):
        raise _bad("regime.n", n, "a positive number of training examples, or null for the regime's size "
                                  f"({dict(cfg.task.get('sizes') or {})})")
    if cfg.get("force") not in (False, True, "record"):
        raise _bad("force", cfg.get("force"), "false, true (recompute everything) or record (reuse trainings)")
    wait = cfg.get("lock_timeout")
    if wait is not None and not (_number(wait) and math.isfinite(wait) and wait >= 4 * HEARTBEAT):
        raise _bad("lock_timeout", wait, f"seconds to wait for a lock holder that shows no progress, at least "
                                         f"{4 * HEARTBEAT:.0f} (a live holder shows progress every {HEARTBEAT:.0f} s)")
    check_terms(cfg.method)
    check_budget(cfg.get("budget"))
    check_device(t.get("device"))
    check_logger(cfg.get("logger"))
    check_names(cfg)


def check_terms(method) -> None:
    """method.terms: known bias types (or their aliases), each once: [v,v] or [v,value] would train b_v alone
    under another arm's name (fixed-v+v)."""
    terms = method.get("terms")
    if terms is None:
        return
    if not (OmegaConf.is_list(terms) or isinstance(terms, (list, tuple))):
        raise _bad("method.terms", terms, f"a list of bias types, e.g. method.terms=[{terms}]")
    seen: dict[str, object] = {}
    for term in terms:
        name = canonical_type(term)
        if name in seen:
            both = f" ({seen[name]} and {term})" if seen[name] != term else ""
            once = ",".join(dict.fromkeys(canonical_type(t) for t in terms))
            raise BeftError(f"method.terms=[{','.join(map(str, terms))}] names {name} twice{both}: give each bias "
                            f"type once, e.g. method.terms=[{once}]")
        seen[name] = term


def check_budget(budget) -> None:
    """Budget values that no model can satisfy (the model's own bound is checked once it is known)."""
    if not budget:
        return
    if budget.get("name") == "types" and not (_whole(budget.get("k"), 1) and budget.get("k") <= len(TYPES)):
        raise _bad("budget.k", budget.get("k"), f"a whole number of bias types to train in every layer, from 1 to "
                                                f"{len(TYPES)} (at most the types the model has)")
    if budget.get("name") == "params" and not _whole(budget.get("max_params"), 1):
        raise _bad("budget.max_params", budget.get("max_params"), "a whole number of bias parameters >= 1 (at least "
                                                                  "one bias vector of the model)")


DEVICES = "auto, cpu, cuda, cuda:N"
# Device files a CUDA (or ROCm, or WSL2) GPU needs on Linux: without any of them, torch cannot see a GPU.
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia[0-9]*", "/proc/driver/nvidia/gpus/*", "/dev/kfd", "/dev/dxg")


def check_device(name) -> None:
    """trainer.device names a device beft runs on, and a GPU one only where a GPU can be visible: told in
    milliseconds instead of after torch and the model are loaded (beft.config.resolve_device checks with torch)."""
    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise BeftError(f"trainer.device={name!r} is not a device beft runs on; valid: {DEVICES}")
    if name.startswith("cuda"):
        why = gpu_absent()
        if why:
            raise BeftError(f"trainer.device={name} but no CUDA GPU is visible ({why}); use trainer.device=cpu or "
                            "auto")


def gpu_absent() -> str | None:
    """Why no GPU can be visible to this process, where that is certain without importing torch; None where one
    may be (torch then has the last word)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and (not visible.strip() or visible.strip().startswith("-1")):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
    if sys.platform != "linux" or any(glob.glob(pattern) for pattern in GPU_DEVICE_FILES):
        return None
    return "this machine has no NVIDIA, ROCm or WSL GPU device files"


WANDB_MODES = ("online", "offline", "disabled", "shared")


def check_logger(logger) -> None:
    """logger=wandb: a known mode, and for one that syncs (online, shared) an API key somewhere wandb looks, so
    a missing key is told before anything is loaded rather than by wandb once the model is."""
    if not logger or logger.get("name") != "wandb":
        return
    mode = logger.get("mode")
    if mode not in WANDB_MODES:
        raise choices_error("logger.mode", mode, WANDB_MODES)
    timeout = logger.get("init_timeout")
    if timeout is not None and not (_number(timeout) and math.isfinite(timeout) and timeout > 0):
        raise _bad("logger.init_timeout", timeout, "seconds to wait for the wandb server, a finite number > 0")
    if mode in ("online", "shared") and not wandb_key_found():
        raise BeftError(f"logger=wandb logger.mode={mode} needs a W&B API key and none is set (WANDB_API_KEY, "
                        "a netrc entry from `wandb login`, or api_key in wandb's settings file); log in, or log "
                        "offline with logger.mode=offline and upload later with `wandb sync`")


def wandb_key_found() -> bool:
    """Whether wandb would find an API key: in the environment, a netrc file (`wandb login` writes one; for the
    server WANDB_BASE_URL names, else for any server) or a settings file. Read without importing wandb (seconds);
    a key that is found but wrong is wandb's to refuse (beft.loggers makes that one line too)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    server = urlsplit(os.environ.get("WANDB_BASE_URL", "")).hostname
    for path in (os.environ.get("NETRC"), "~/.netrc", "~/_netrc"):
        try:
            entries = netrc.netrc(os.path.expanduser(path)).hosts if path else {}
        except (OSError, netrc.NetrcParseError):
            continue
        if any(auth[-1] for host, auth in entries.items() if server in (None, host)):
            return True
    config_dir = os.environ.get("WANDB_CONFIG_DIR") or os.path.expanduser("~/.config/wandb")
    for settings in (Path(config_dir) / "settings", Path("wandb") / "settings"):
        try:
            if re.search(r"^\s*api_key\s*=\s*\S", settings.read_text(errors="replace"), re.MULTILINE):
                return True
        except OSError:
            continue
    return False


# Config values that become part of a path (the run id: {model}-{task}-{regime}-{method label}-s{seed}-{key}).
PATH_NAMES = ("model.name", "task.name", "regime.name", "method.name", "budget.name", "method.num_params")


def check_names(cfg) -> None:
    """Names that become paths are plain names: `model.name=../../x` must not write outside out_dir."""
    check_out_dir(cfg.get("out_dir"))
    values = [(key, OmegaConf.select(cfg, key, default=None)) for key in PATH_NAMES]
    values += [(f"method.terms[{i}]", term) for i, term in enumerate(cfg.method.get("terms") or [])]
    for key, value in values:
        if value is not None and not plain_name(value):
            raise BeftError(f"{key}={value!r} cannot be part of a file name: names that become paths (the run id) "
                            "must not be empty, '.' or '..', nor hold '/' or '\\'; valid: plain names such as "
                            "minilm, sst2, v")


def check_out_dir(out_dir) -> None:
    if out_dir is None or not str(out_dir).strip():
        raise BeftError("out_dir is empty: give the folder records go to, e.g. out_dir=outputs/runs")


# Bytes the write check writes (and syncs) under out_dir: about what a run writes beside its record (the record,
# its plots, a bias adapter), so a disk that is full, or nearly, is told before any training, not after it.
WRITE_CHECK_BYTES = 1 << 20


def check_writable(out_dir) -> None:
    """Fail before any training if records could not be saved under out_dir; leave nothing behind. Real bytes
    are written and synced: creating an empty file succeeds on a full disk."""
    check_out_dir(out_dir)
    path = Path(str(out_dir)).expanduser().absolute()
    made, probe = [], path
    while not probe.exists() and probe != probe.parent:
        made.append(probe)   # deepest first: removed in this order afterwards
        probe = probe.parent
    tmp = None
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".beft-write-check-")
        try:
            block = b"\0" * (64 << 10)
            for _ in range(WRITE_CHECK_BYTES // len(block)):
                os.write(fd, block)
            os.fsync(fd)   # a network disk may tell of a full disk only here
        finally:
            os.close(fd)
    except OSError as err:
        if err.errno in DISK_FULL:
            raise BeftError(f"out_dir={out_dir} has no room for a run's files ({err.strerror}: "
                            f"{WRITE_CHECK_BYTES >> 20} MiB could not be written): free some space, or give "
                            "another out_dir=...") from None
        raise BeftError(f"out_dir={out_dir} is not writable ({err.strerror or err}): no record could be saved; "
                        f"give a writable out_dir=...") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        for folder in made:
            try:
                folder.rmdir()
            except OSError:
                pass
