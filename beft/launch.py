"""Per-job resources under Hydra's launchers, set at the start of each job (beft.cli.run_job).

With `hydra/launcher=joblib` several jobs run at once on one machine. Each then gets a GPU slot where there are
GPUs: `jobs_per_gpu` slots per GPU (default 1), so k small jobs can share one large GPU, each in its own worker
process. Job j prefers GPU j mod n_gpus and slot (j div n_gpus) mod k, and holds that slot's lock file for its
duration, taking any free slot first, so no more than k jobs ever share a GPU even when joblib hands jobs to
workers out of order. Its torch threads are a share of the CPUs: max(1, cpus // n_jobs). A SLURM job (one
allocation per job) uses the CPUs SLURM gave it (SLURM_CPUS_PER_TASK). After every job, the CUDA cache is
emptied: a worker that runs the next job keeps no memory of the last one's tensors.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import tempfile
from pathlib import Path

import torch

from beft import placement
from beft.errors import BeftError
from beft.file_lock import exclusive

log = logging.getLogger("beft")
LOCK_DIR = Path(tempfile.gettempdir()) / f"beft-gpu-locks-{os.getuid()}"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parallel_jobs(n_jobs: int, cpus: int) -> int:
    """joblib's meaning of n_jobs: -1 is every CPU, -2 all but one, and so on."""
    return max(1, n_jobs if n_jobs > 0 else cpus + 1 + n_jobs)


def plan(job_num: int, n_jobs: int, n_gpus: int, cpus: int, jobs_per_gpu: int = 1) -> dict:
    """The preferred GPU and slot on it (None without GPUs) and the torch threads for one of n_jobs parallel
    jobs, `jobs_per_gpu` of which may share a GPU."""
    jobs = parallel_jobs(n_jobs, cpus)
    threads = max(1, cpus // jobs)
    if not n_gpus:
        return {"gpu": None, "slot": None, "threads": threads}
    return {"gpu": job_num % n_gpus, "slot": (job_num // n_gpus) % jobs_per_gpu, "threads": threads}


def joblib_settings() -> tuple[int, int] | None:
    """(job number, n_jobs) when this job runs under the joblib launcher, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra = HydraConfig.get()
    except (ImportError, ValueError):
        return None
    if "joblib" not in str(hydra.launcher.get("_target_", "")).lower():
        return None
    return int(hydra.job.num), int(hydra.launcher.get("n_jobs") or -1)


@contextlib.contextmanager
def claim_gpu(preferred: int, n_gpus: int, slot: int = 0, jobs_per_gpu: int = 1):
    """Hold a free GPU slot's lock file (the preferred one first, then the other slots of every GPU, the least
    shared GPUs first) and yield its GPU; wait for the preferred slot if all are busy."""
    order = [((preferred + g) % n_gpus, (slot + s) % jobs_per_gpu) for s in range(jobs_per_gpu) for g in range(n_gpus)]
    for gpu, gpu_slot in order:
        with exclusive(_slot_lock(gpu, gpu_slot, jobs_per_gpu)) as held:
            if held:
                yield gpu
                return
    with exclusive(_slot_lock(preferred, slot, jobs_per_gpu), f"every GPU slot is busy; waiting for GPU {preferred}"):
        yield preferred


def _slot_lock(gpu: int, slot: int, jobs_per_gpu: int) -> Path:
    # One GPU alone keeps the lock name it always had, so jobs of an older beft and this one still exclude each other.
    return LOCK_DIR / (f"gpu{gpu}.lock" if jobs_per_gpu == 1 else f"gpu{gpu}-slot{slot}.lock")


def jobs_per_gpu(cfg) -> int:
    value = cfg.get("jobs_per_gpu", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BeftError(f"jobs_per_gpu={value!r} is not valid: a whole number >= 1 (jobs sharing one GPU "
                        "under hydra/launcher=joblib)")
    return value


@contextlib.contextmanager
def job_resources(cfg):
    """Pin this job's device and threads when it runs beside others (joblib) or in a SLURM allocation; free the
    CUDA cache afterwards."""
    try:
        with _placed(cfg):
            yield
    finally:
        placement.assigned.clear()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            gc.collect()   # the job's tensors are unreachable now; drop them before emptying the cache
            torch.cuda.empty_cache()


@contextlib.contextmanager
def _placed(cfg):
    settings = joblib_settings()
    if settings is None:
        slurm_cpus = placement.cpus_per_task() if "SLURM_JOB_ID" in os.environ else None
        if slurm_cpus:
            torch.set_num_threads(slurm_cpus)   # torch would count the node's cores, not the job's share
        yield
        return
    job_num, n_jobs = settings
    per_gpu = jobs_per_gpu(cfg)
    n_gpus = torch.cuda.device_count() if cfg.trainer.device in ("auto", "cuda") else 0
    chosen = plan(job_num, n_jobs, n_gpus, cpu_count(), per_gpu)
    torch.set_num_threads(chosen["threads"])
    placement.assigned.update(launcher="joblib", job=job_num, threads=chosen["threads"])
    if chosen["gpu"] is None:
        log.info("job %d: %d CPU threads", job_num, chosen["threads"])
        yield
        return
    with claim_gpu(chosen["gpu"], n_gpus, chosen["slot"], per_gpu) as gpu:
        # Not CUDA_VISIBLE_DEVICES: joblib reuses worker processes, and CUDA reads it only once per process.
        torch.cuda.set_device(gpu)
        cfg.trainer.device = f"cuda:{gpu}"   # not part of the record key
        placement.assigned.update(gpu=gpu, jobs_per_gpu=per_gpu)
        log.info("job %d: GPU %d (shared by up to %d jobs), %d CPU threads", job_num, gpu, per_gpu, chosen["threads"])
        yield
