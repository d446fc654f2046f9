"""The jobs an experiment config sweeps, as the table cells they fill: what `make tables` calls unmeasured.

An experiment (`conf/experiment/<name>.yaml`) writes its records into its `out_dir`; several configs may share one
folder (decoder-local and its long-passage and Qwen companions). Each job of a config's sweep (beft.jobs: expanded
and composed as `python run.py -m experiment=<name>` would) becomes a cell (model, task, regime, arm, seed), the
same cell a record of it fills in the store (beft.report.store.CELL minus the setting hash), so a cell without an
ok record is a job still to run, and `python run.py -m experiment=<name>` runs exactly those (a sweep skips the
jobs whose ok record exists).
"""
from __future__ import annotations

import functools
from pathlib import Path

from omegaconf import OmegaConf

from beft import jobs
from beft.checks import group_choices
from beft.record import method_label
from beft.report.store import regime_label, variant_of


def experiment_names() -> list[str]:
    return list(group_choices("experiment"))


@functools.lru_cache(maxsize=None)
def experiment_sweep(name: str) -> tuple[str, int]:
    """(out_dir, number of jobs) of `experiment=<name>`."""
    out_dir, _ = jobs.sweep_params([f"experiment={name}"])
    return out_dir, len(jobs.job_overrides([f"experiment={name}"]))


def job_cells(name: str) -> list[dict]:
    """One cell per job of `experiment=<name>`'s sweep: model, task, regime_label, variant, arm, seed (the variant:
    what else changes its numbers, e.g. a sweep over model.attention_dropout, as the store tells records apart)."""
    cells = []
    for job in jobs.compose_jobs([f"experiment={name}"]):
        config = OmegaConf.to_container(job.config, resolve=True)
        cells.append({"model": config["model"]["name"], "task": config["task"]["name"],
                      "regime_label": regime_label(config), "variant": variant_of(config), "arm": method_label(config),
                      "seed": int(config["seed"])})
    return cells


def experiments_writing(folder: str) -> list[str]:
    """The experiment configs whose records go to results/runs/<folder> (their out_dir's last two parts)."""
    names = []
    for name in experiment_names():
        try:
            out_dir = Path(experiment_sweep(name)[0])
        except Exception:   # a config that does not compose is not this report's to judge (beft.checks is)
            continue
        if out_dir.name == folder and out_dir.parent.name == "runs":
            names.append(name)
    return names

