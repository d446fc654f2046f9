"""Per-job resources under Hydra's launchers, set at the start of each job (run.py).

With `hydra/launcher=joblib` several jobs run at once on one machine. Each then gets its own GPU where there
are GPUs (job number modulo the GPU count, held by a lock file for the job's duration, so two jobs never share
one even when joblib hands jobs to workers out of order), and a share of the CPU threads:
max(1, cpus // n_jobs). The basic launcher (one job at a time) and SLURM (one allocation per job) need nothing.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

import torch

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


def plan(job_num: int, n_jobs: int, n_gpus: int, cpus: int) -> dict:
    """The preferred GPU (None without GPUs) and the torch threads for one of n_jobs parallel jobs."""
    jobs = parallel_jobs(n_jobs, cpus)
    return {"gpu": job_num % n_gpus if n_gpus else None, "threads": max(1, cpus // jobs)}


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
def claim_gpu(preferred: int, n_gpus: int):
    """Hold a free GPU's lock file (trying the preferred one first); wait for the preferred one if all are busy."""
    for gpu in [(preferred + i) % n_gpus for i in range(n_gpus)]:
        with exclusive(LOCK_DIR / f"gpu{gpu}.lock") as held:
            if held:
                yield gpu
                return
    with exclusive(LOCK_DIR / f"gpu{preferred}.lock", f"every GPU is busy; waiting for GPU {preferred}"):
        yield preferred


@contextlib.contextmanager
def job_resources(cfg):
    """Pin this job's device and threads when it runs beside others (joblib); a no-op otherwise."""
    settings = joblib_settings()
    if settings is None:
        yield
        return
    job_num, n_jobs = settings
    n_gpus = torch.cuda.device_count() if cfg.trainer.device in ("auto", "cuda") else 0
    chosen = plan(job_num, n_jobs, n_gpus, cpu_count())
    torch.set_num_threads(chosen["threads"])
    if chosen["gpu"] is None:
        log.info("job %d: %d CPU threads", job_num, chosen["threads"])
        yield
        return
    with claim_gpu(chosen["gpu"], n_gpus) as gpu:
        # Not CUDA_VISIBLE_DEVICES: joblib reuses worker processes, and CUDA reads it only once per process.
        torch.cuda.set_device(gpu)
        cfg.trainer.device = f"cuda:{gpu}"   # not part of the record key
        log.info("job %d: GPU %d, %d CPU threads", job_num, gpu, chosen["threads"])
        yield
