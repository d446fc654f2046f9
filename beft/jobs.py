"""The jobs of a sweep and their state: what `python run.py -m <overrides>` would run, and which of those runs
already have a record, told without torch and without running anything.

The jobs are Hydra's: the sweep's `hydra.sweeper.params` and the command line's overrides, expanded as Hydra's
basic sweeper expands them (the command line wins over a param of the same key; the order is Hydra's). Each job's
config is composed as its run composes it. Composing a job at a time costs ~0.1 s each (minutes for a large
table), so `compose_jobs` composes the common part once and each option a job selects once (a group's option
writes only its own node, the experiment's values included), then applies each job's value overrides as Hydra's
config loader does; the last job is checked against a whole composition, and on any difference every job is
composed whole.

A job's state is what the run itself is told before it starts (beft.resume): `done` (the run would skip),
`failed` (its record says failed or interrupted, and why), `invalid` (a record is there but fails its checks,
and why; the run would redo it), `missing`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from beft.checks import CONF_DIR
from beft.record import RECORD, method_label
from beft.resume import look_up


@dataclass
class Job:
    num: int                   # hydra.job.num
    overrides: list[str]       # the job's overrides, as Hydra's sweeper hands them to the job
    config: object             # its composed config (a DictConfig, without the hydra node)
    whole: bool = False        # composed whole, not by the shortcut (which a sweep of experiments cannot take)


@dataclass
class JobState:
    job: Job
    run_id: str
    state: str                 # one of beft.resume.STATES
    reason: str = ""           # why failed or invalid
    model: str = ""
    task: str = ""
    arm: str = ""              # the record's method_label: the arm in tables and cost tables


def _parse(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(overrides))


def _compose(config_name: str, overrides: list[str], hydra_node: bool = False):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra_node)


def fixed(overrides: list[str]) -> list[str]:
    """The command line's overrides without its swept ones (what composes one config)."""
    return [o.input_line for o in _parse(overrides) if not o.is_sweep_override()]


def sweep_params(overrides: list[str], config_name: str = "config") -> tuple[str, dict]:
    """The sweep's out_dir and hydra.sweeper.params (its experiment's, and those of the experiments it builds on)."""
    cfg = _compose(config_name, fixed(overrides), hydra_node=True)
    params = cfg.hydra.sweeper.get("params")
    return str(cfg.out_dir), OmegaConf.to_container(params) if params else {}


def job_overrides(overrides: list[str], config_name: str = "config") -> list[list[str]]:
    """The override list of every job of `python run.py -m <overrides>`, in Hydra's order."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    _, params = sweep_params(overrides, config_name)
    task = [o.input_line for o in _parse(overrides) if not o.is_hydra_override()]   # hydra/... is not the job's
    arguments = [f"{key}={value}" for key, value in params.items()] + task
    (lists,) = BasicSweeper.split_arguments(_parse(arguments), None)
    return lists


def _as_job_gets(override) -> str:
    """An override as Hydra's sweeper spells it in a job's list."""
    return f"{override.get_key_element()}={override.get_value_element_as_str()}"


def _group(override) -> str | None:
    """The config group an override selects an option of (model=, task=, method=, ...), else None."""
    key = override.key_or_group
    return key if (CONF_DIR / key).is_dir() and not key.startswith("hydra") else None


def compose_jobs(overrides: list[str], config_name: str = "config") -> list[Job]:
    """Every job of the sweep with its config, as its run composes it (see the module's note)."""
    lists = job_overrides(overrides, config_name)
    base_args = fixed([o for o in overrides if not _parse([o])[0].is_hydra_override()])
    common = {_as_job_gets(o) for o in _parse(base_args)}   # in every job: composed once, in the base
    own = [[o for o in _parse(job) if _as_job_gets(o) not in common] for job in lists]
    if any(o.key_or_group == "experiment" or o.package is not None for job in own for o in job):
        return _whole(lists, config_name)   # an option that writes outside its own node: no shortcut
    base = OmegaConf.to_container(_compose(config_name, base_args), resolve=False)
    nodes: dict[str, dict] = {}
    for job in own:
        for o in job:
            group = _group(o)
            if group and o.input_line not in nodes:
                others = [a for a in base_args if _parse([a])[0].key_or_group != group]
                node = _compose(config_name, others + [o.input_line])[group]
                nodes[o.input_line] = OmegaConf.to_container(node, resolve=False)
    out = []
    for num, (job, mine) in enumerate(zip(lists, own)):
        tree = dict(base)
        for o in mine:
            if _group(o):
                tree[_group(o)] = nodes[o.input_line]
        cfg = OmegaConf.create(json.loads(json.dumps(tree)))          # a fresh copy of the plain tree
        _apply([o for o in mine if not _group(o)], cfg)
        out.append(Job(num, job, cfg))
    if out and _plain(_compose(config_name, lists[-1])) != _plain(out[-1].config):
        return _whole(lists, config_name)
    return out


def _apply(overrides, cfg) -> None:
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    ConfigLoaderImpl._apply_overrides_to_config(overrides, cfg)


def _whole(jobs: list[list[str]], config_name: str) -> list[Job]:
    return [Job(num, job, _compose(config_name, job), whole=True) for num, job in enumerate(jobs)]


def _plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def state_of(job: Job) -> JobState:
    """Where the job's run would write its record, and what is there (checked as the run checks it)."""
    config = _plain(job.config)
    found = look_up(config)
    return JobState(job, found.run_id, found.state, found.reason, model=config["model"]["name"],
                    task=config["task"]["name"], arm=method_label(config))


def states(jobs: list[Job]) -> list[JobState]:
    return [state_of(job) for job in jobs]


def strays(out_dir, found: list[JobState]) -> int:
    """Run folders in out_dir that are no job of this sweep (another grid, other data or code, another sweep)."""
    out_dir = Path(str(out_dir))
    if not out_dir.is_dir():
        return 0
    mine = {s.run_id for s in found}
    return sum(1 for p in out_dir.iterdir() if p.name not in mine and (p / RECORD).is_file())
