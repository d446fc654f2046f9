"""The jobs an experiment config sweeps, as the table cells they fill: what `make tables` calls unmeasured.

An experiment (`conf/experiment/<name>.yaml`) writes its records into its `out_dir`; several configs may share one
folder (decoder-local and its long-passage and Qwen companions). Each job of a config's sweep becomes a cell
(model, task, regime, arm, seed), the same cell a record of it fills in the store (beft.report.store.CELL minus
the setting hash), so a cell without an ok record is a job still to run, and `python run.py -m experiment=<name>`
runs exactly those (a sweep skips the jobs whose ok record exists). The jobs are expanded as Hydra's basic
sweeper expands them; only the method's part of a job is composed (its arm label needs the method's config),
once per distinct method, since composing each of a 216-job sweep's jobs takes minutes.
"""
from __future__ import annotations

import functools
from pathlib import Path

from beft import method_table

CONF_DIR = Path(__file__).resolve().parent.parent.parent / "conf"
METHOD_KEYS = ("method", "budget")   # the overrides that change a job's arm label


def experiment_names(conf_dir: Path = CONF_DIR) -> list[str]:
    return sorted(p.stem for p in (Path(conf_dir) / "experiment").glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def _composer(conf_dir: str):
    """A compose function bound to one config folder (Hydra's global state initialised once per call)."""
    from hydra import compose, initialize_config_dir

    def run(overrides: tuple[str, ...], hydra_config: bool = False):
        with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra_config)
    return run


@functools.lru_cache(maxsize=None)
def experiment_sweep(name: str, conf_dir: Path = CONF_DIR) -> tuple[str, tuple[tuple[str, ...], ...], dict]:
    """(out_dir, the overrides of each job, the base config as data) of `experiment=<name>`."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    cfg = _composer(str(conf_dir))((f"experiment={name}",), True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params or {}, resolve=False) or {}
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    jobs = BasicSweeper.split_arguments(overrides, None)[0] if overrides else [[]]
    with_hydra = OmegaConf.to_container(cfg, resolve=False)
    base = {k: v for k, v in with_hydra.items() if k != "hydra"}
    return str(cfg.out_dir), tuple(tuple(job) for job in jobs), base


@functools.lru_cache(maxsize=None)
def _arm(name: str, method_overrides: tuple[str, ...], conf_dir: Path) -> str:
    from omegaconf import OmegaConf

    cfg = _composer(str(conf_dir))((f"experiment={name}", *method_overrides))
    method = OmegaConf.to_container(cfg.method, resolve=True)
    budget = OmegaConf.to_container(cfg.budget, resolve=True) if cfg.get("budget") is not None else {}
    return method_table.label(method["name"], method, budget)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def job_cells(name: str, conf_dir: Path = CONF_DIR) -> list[dict]:
    """One cell per job of `experiment=<name>`'s sweep: model, task, regime_label, arm, seed."""
    _, jobs, base = experiment_sweep(name, conf_dir)
    cells = []
    for job in jobs:
        given = {_key(o): o.split("=", 1)[1] for o in job}
        method_part = tuple(o for o in job if _key(o).split(".")[0].split("/")[0] in METHOD_KEYS)
        regime = given.get("regime", (base.get("regime") or {}).get("name"))
        n = given.get("regime.n", (base.get("regime") or {}).get("n") if "regime" not in given else None)
        cells.append({"model": given.get("model", base["model"]["name"]),
                      "task": given.get("task", base["task"]["name"]),
                      "regime_label": f"n{int(n)}" if n not in (None, "null") else str(regime),
                      "arm": _arm(name, method_part, conf_dir), "seed": int(given.get("seed", base["seed"]))})
    return cells


def experiments_writing(folder: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """The experiment configs whose records go to results/runs/<folder> (their out_dir's last two parts)."""
    names = []
    for name in experiment_names(conf_dir):
        try:
            out_dir = Path(experiment_sweep(name, conf_dir)[0])
        except Exception:   # a config that does not compose is not this report's to judge (beft.checks is)
            continue
        if out_dir.name == folder and out_dir.parent.name == "runs":
            names.append(name)
    return names
