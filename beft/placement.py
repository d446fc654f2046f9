"""Where a job runs, for its record and its threads: the SLURM job (id, array index, node, CPUs, log file) from
the environment SLURM gives every job, and what a local parallel launcher assigned it (beft.launch fills
`assigned`: the joblib job number, its GPU and GPU slot, its threads). Reads the environment only: no torch.
"""
from __future__ import annotations

import os
import signal

# Set by beft.launch.job_resources for the job running now under joblib; empty otherwise.
assigned: dict = {}


def slurm_job() -> dict | None:
    """The SLURM job this process runs in (None outside SLURM): what a failed record needs to find its log."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return None
    array, index = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    job = {"job_id": f"{array}_{index}" if array and index else env["SLURM_JOB_ID"],
           "array_index": int(index) if index else None, "node": env.get("SLURMD_NODENAME"),
           "cpus_per_task": cpus_per_task(), "log": submitit_log()}
    return {k: v for k, v in job.items() if v is not None}


def cpus_per_task() -> int | None:
    """The CPUs SLURM gave each task of this job (SLURM_CPUS_PER_TASK), if it said."""
    value = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def submitit_log() -> str | None:
    """The job's log when submitit started it (hydra/launcher=slurm): `<sweep dir>/.submitit/<id>/<id>_0_log.err`."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm" or "SUBMITIT_FOLDER" not in os.environ:
        return None
    try:
        import submitit

        return str(submitit.JobEnvironment().paths.stderr)
    except Exception:   # an unexpected environment: the record goes without the path
        return None


def describe() -> dict:
    """The record's `env.placement`: the SLURM job and what a local launcher assigned (empty for a plain run)."""
    out = dict(assigned)
    slurm = slurm_job()
    if slurm:
        out["slurm"] = slurm
    return out


def signal_reason(signum: int) -> str:
    """Why a job got this signal, as far as can be told: SLURM's meaning inside a SLURM job."""
    if "SLURM_JOB_ID" not in os.environ:
        return "sent by kill, timeout or a scheduler" if signum == signal.SIGTERM else ""
    if signum == signal.SIGTERM:
        return "SLURM cancelled or preempted the job, or it reached its time limit"
    warning = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and signal.Signals(signum).name == warning:
        return (f"SLURM's warning: the time limit ({_launcher_field('timeout_min')}) is near, or the job is "
                f"preempted; {_launcher_field('max_num_timeout')} (> 0 requeues the job)")
    return ""


def _launcher_field(name: str) -> str:
    """`hydra.launcher.<name>=<value>` as this job was launched (the bare name if Hydra cannot tell)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return f"hydra.launcher.{name}={HydraConfig.get().launcher.get(name)}"
    except Exception:
        return f"hydra.launcher.{name}"
