"""Every experiment is a sweep that runs: each of its jobs, expanded as Hydra's basic sweeper expands
hydra.sweeper.params, composes and passes the checks a run makes before it trains (no training here). And every
committed results folder is written by experiments whose jobs include each of its records."""
import json
from collections import defaultdict
from functools import lru_cache

import pytest
from omegaconf import OmegaConf

from beft import checks, config as C, jobs
from beft.fingerprint import digest
from beft.record import legacy_keys, record_key
from conftest import REPO

RUNS = REPO / "results" / "runs"
EXPERIMENTS = checks.group_choices("experiment")


@lru_cache(maxsize=None)
def sweep_of(name: str) -> tuple[str, dict]:
    """The experiment's out_dir and hydra.sweeper.params (its own and those of the experiments it builds on)."""
    return jobs.sweep_params([f"experiment={name}"])


def job_overrides(name: str) -> list[list[str]]:
    """The override list of every job of `python run.py -m experiment=<name>`, in Hydra's order."""
    return jobs.job_overrides([f"experiment={name}"])


def _compose(*overrides: str):
    from hydra import compose as hydra_compose

    return hydra_compose(config_name="config", overrides=list(overrides))


@lru_cache(maxsize=None)
def sweep_jobs(name: str) -> tuple:
    """Each job as its run composes it (beft.jobs.compose_jobs: the experiment once, each option once)."""
    return tuple(jobs.compose_jobs([f"experiment={name}"]))


def composed_jobs(name: str) -> tuple:
    """Each job's config (a DictConfig)."""
    return tuple(job.config for job in sweep_jobs(name))


@lru_cache(maxsize=None)
def jobs_of(name: str) -> tuple[dict, ...]:
    """Each job's resolved config, as plain data (what the record key is computed from)."""
    return tuple(OmegaConf.to_container(cfg, resolve=True) for cfg in composed_jobs(name))


def test_the_basic_sweeper_expansion_is_the_product_of_the_params():
    jobs = job_overrides("smoke")     # task: sst2,rte x 6 methods x seed: 0,1
    assert len(jobs) == 2 * 6 * 2 == len({tuple(job) for job in jobs})
    assert jobs[0] == ["task=sst2", "method=fixed-v", "seed=0", "experiment=smoke"]
    assert len(job_overrides("table1")) == 216 and len(job_overrides("table4")) == 18   # list-valued terms too


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_a_job_is_what_hydra_composes_for_it(name):
    from hydra import initialize_config_dir

    last, assembled = job_overrides(name)[-1], jobs_of(name)[-1]   # the last option of every swept group
    assert not sweep_jobs(name)[-1].whole, "the shortcut was not taken: composing a large sweep takes minutes"
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        assert OmegaConf.to_container(_compose(*last), resolve=True) == assembled, last


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_job_of_every_experiment_composes_and_passes_the_checks(name):
    checks.check_experiment(name, multirun=True)
    jobs = job_overrides(name)
    assert jobs, f"experiment={name} has no hydra.sweeper.params: it is not a sweep"
    for overrides, cfg in zip(jobs, composed_jobs(name)):
        checks.check_overrides(overrides)
        C.validate(cfg)                            # what the run checks before it loads anything
        assert cfg.out_dir == sweep_of(name)[0], overrides


def folders() -> dict[str, list[str]]:
    """results/runs/<folder> -> the experiments whose out_dir it is."""
    by_folder = defaultdict(list)
    for name in EXPERIMENTS:
        out_dir = sweep_of(name)[0]
        if out_dir.startswith("results/runs/"):
            by_folder[out_dir.removeprefix("results/runs/")].append(name)
    return by_folder


@lru_cache(maxsize=None)
def committed() -> dict[str, list[dict]]:
    out = defaultdict(list)
    for path in sorted(RUNS.glob("*/*/result.json")):
        out[path.parent.parent.name].append(json.loads(path.read_text()))
    return out


def test_every_committed_results_folder_has_the_experiments_that_write_it():
    missing = sorted(set(committed()) - set(folders()))
    assert not missing, f"results/runs/{missing[0]} has records but no conf/experiment/*.yaml writes there"
    assert sorted(folders()["decoder-local"]) == ["decoder-local", "decoder-local-long", "decoder-local-qwen",
                                                  "decoder-local-qwen-squad", "decoder-local-squad",
                                                  "why-bv-smollm2", "why-bv-smollm2-squad"]   # b_v: decoder-local's


@pytest.mark.parametrize("folder", sorted({path.parent.parent.name for path in RUNS.glob("*/*/result.json")}))
def test_every_committed_record_is_a_job_of_its_folders_experiments(folder):
    """A record's key is among the keys its experiments' jobs compose to: under the record's own fingerprint
    (its data files, weights and code, which test_record_keys checks against today's), or, for a record from
    before fingerprints, among the config-only keys of the job."""
    jobs = [job for name in folders()[folder] for job in jobs_of(name)]
    legacy = {key for job in jobs for key in legacy_keys(job)}
    by_fingerprint: dict[str, set] = {}
    for rec in committed()[folder]:
        fingerprint = rec.get("fingerprint")
        if not fingerprint:
            assert rec["key"] in legacy, f"{folder}/{rec['run_id']} is no job of {folders()[folder]}"
            continue
        seen = digest(fingerprint)
        if seen not in by_fingerprint:
            by_fingerprint[seen] = {record_key(job, fingerprint) for job in jobs}
        assert rec["key"] in by_fingerprint[seen], f"{folder}/{rec['run_id']} is no job of {folders()[folder]}"


def test_a_record_of_another_grid_is_not_taken_for_a_job():
    """The check above can fail: a decoder-local record with another validation size is no job of its folder."""
    rec = next(r for r in committed()["decoder-local"] if r.get("fingerprint"))
    jobs = [job for name in folders()["decoder-local"] for job in jobs_of(name)]
    keys = {record_key(job, rec["fingerprint"]) for job in jobs}
    assert rec["key"] in keys and record_key(rec["config"], rec["fingerprint"]) == rec["key"]
    changed = json.loads(json.dumps(rec["config"]))
    changed["task"]["decoder"]["n_eval"] = 321
    assert record_key(changed, rec["fingerprint"]) not in keys
