"""SLURM's commands, asked and explained: what the SLURM launcher (beft.submitit_launcher) needs of the cluster.

- `test_request`: `sbatch --test-only` on the very script that would be submitted, before anything is
  submitted; a refusal (no GPUs, too many CPUs or too much memory for any node, an unknown partition, a time
  limit above the partition's) becomes one line naming the hydra.launcher field to change.
- `queue`: squeue's view of the jobs still queued or running (a job it no longer lists has ended), with the
  reason a job waits; `NEVER_STARTS` are the reasons that will not go away by waiting.
- `final_states`: sacct's word on how ended jobs ended (COMPLETED, CANCELLED, TIMEOUT, OUT_OF_MEMORY,
  NODE_FAIL, ...); without accounting it cannot be told.
Nothing here imports torch.
"""
from __future__ import annotations

import re
import subprocess

from beft.errors import BeftError

# sbatch's refusals and the hydra.launcher fields that cause them (fields set to null are not named).
REFUSALS = [
    ("generic resource", ["gpus_per_node", "gpus_per_task", "gres"]),
    ("invalid partition", ["partition"]),
    ("invalid account", ["account", "partition"]),
    ("invalid qos", ["qos", "account"]),
    ("invalid feature", ["constraint"]),
    ("time limit", ["timeout_min", "partition"]),
    ("memory", ["mem_gb", "mem_per_cpu", "mem_per_gpu"]),
    ("more processors requested", ["cpus_per_task", "tasks_per_node"]),
    ("node count", ["nodes"]),
    ("node configuration is not available", ["gpus_per_node", "cpus_per_task", "mem_gb", "constraint", "nodes"]),
    ("policy", ["account", "qos", "timeout_min", "cpus_per_task", "mem_gb", "gpus_per_node"]),
]
HINTS = {"gpus_per_node": "hydra/launcher=slurm_cpu for CPU jobs", "partition": "sinfo lists the partitions"}
# Pending reasons that waiting will not cure: the request exceeds what the partition, QOS or account allow.
NEVER_STARTS = re.compile(r"^(PartitionConfig|PartitionNodeLimit|PartitionTimeLimit|BadConstraints|InvalidAccount|"
                          r"InvalidQOS|AccountNotAllowed|QOSNotAllowed|(QOS|Assoc)Max\w*PerJob\w*)$")
UNFINISHED = {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "SUSPENDED", "RESIZING",
              "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED", "PREEMPTED"}
ENDINGS = {"TIMEOUT": "past its time limit, hydra.launcher.timeout_min={timeout_min}",
           "OUT_OF_MEMORY": "out of memory, hydra.launcher.mem_gb={mem_gb}",
           "NODE_FAIL": "its node was lost", "BOOT_FAIL": "its node failed to boot",
           "DEADLINE": "past its deadline", "PREEMPTED": "preempted",
           "CANCELLED": "cancelled by scancel or an administrator"}


def _run(args: list[str], input_text: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(args, input=input_text, capture_output=True, text=True, timeout=timeout)


def node_shapes(partition: str | None, every_partition: bool = False) -> list[dict]:
    """The nodes' shapes in the partition (the default one if None, or all), from sinfo; [] if sinfo fails."""
    args = ["sinfo", "-h", "-o", "%P|%c|%m|%G|%l"] + (["-p", partition] if partition else [])
    try:
        out = _run(args, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    shapes = []
    for line in out.stdout.splitlines():
        name, cpus, mem, gres, limit = (line.split("|") + [""] * 5)[:5]
        if partition or every_partition or name.endswith("*"):
            gpus = sum(int(n) for n in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres))
            shapes.append({"partition": name.rstrip("*"), "cpus": _number(cpus), "mem_mb": _number(mem),
                           "gpus": gpus, "gres": gres, "limit": limit})
    return shapes


def _number(text: str) -> int | None:
    digits = re.match(r"\d+", text.strip())
    return int(digits.group()) if digits else None


def describe_shapes(shapes: list[dict]) -> str:
    """`partition debug: 2 CPUs, 21694 MB, no GPUs, time limit infinite` per distinct node shape."""
    said = []
    for shape in shapes:
        gpus = f"{shape['gpus']} GPUs" if shape["gpus"] else "no GPUs"
        said.append(f"partition {shape['partition']}: {shape['cpus']} CPUs, {shape['mem_mb']} MB, {gpus}, "
                    f"time limit {shape['limit']}")
    return "; ".join(dict.fromkeys(said))


def exceeding(params: dict, shapes: list[dict]) -> list[str]:
    """The fields asking for more than the largest node of the partition has (CPUs, memory, GPUs)."""
    if not shapes:
        return []
    tasks = params.get("tasks_per_node") or 1
    most = {key: max((s[key] or 0) for s in shapes) for key in ("cpus", "mem_mb", "gpus")}
    over = []
    if params.get("cpus_per_task") and params["cpus_per_task"] * tasks > most["cpus"]:
        over.append("cpus_per_task")
    if params.get("mem_gb") and most["mem_mb"] and params["mem_gb"] * 1024 > most["mem_mb"]:
        over.append("mem_gb")
    if params.get("gpus_per_node") and params["gpus_per_node"] > most["gpus"]:
        over.append("gpus_per_node")
    return over


def explain_refusal(message: str, params: dict) -> str:
    """One line for an sbatch refusal: SLURM's own words, the fields that ask for it, and the cluster's shape."""
    said = []
    for line in message.splitlines():
        line = re.sub(r"^(sbatch: )?(error: )?(Batch job submission failed: |allocation failure: )?", "", line.strip())
        if line and not line.startswith("sbatch: Job") and line not in said:
            said.append(line)
    said = "; ".join(said) or "sbatch failed"
    shapes = node_shapes(params.get("partition"))
    over = exceeding(params, shapes)   # more than any node has: each of these must change
    fields = over or next((names for pattern, names in REFUSALS if pattern in said.lower()), [])
    named = [f"hydra.launcher.{name}={params[name]}" for name in fields if params.get(name) is not None]
    hints = [HINTS[name] for name in fields if name in HINTS and params.get(name) is not None]
    line = f"SLURM refuses the jobs: {said}"
    if named:
        line += (f"; lower {' and '.join(named)}" if over else f"; check {' or '.join(named)}")
        line += f" ({'; '.join(hints)})" if hints else ""
    if not shapes:   # an unknown partition: name the ones there are
        shapes = node_shapes(None, every_partition=True)
    return line + (f"; this cluster: {describe_shapes(shapes)}" if shapes else "")


def test_request(script: str, params: dict) -> None:
    """`sbatch --test-only` on the job script: a BeftError naming the field if SLURM would refuse or never run it."""
    try:
        out = _run(["sbatch", "--test-only"], input_text=script)
    except (OSError, subprocess.SubprocessError):
        return   # the real submission will say what is wrong
    if out.returncode != 0:
        raise BeftError(explain_refusal(out.stderr or out.stdout, params))


def check_times(params: dict) -> None:
    """submitit asks SLURM for its warning signal `signal_delay_s` before the time limit: a limit not longer than
    that delay would warn (and stop) every job the moment it starts."""
    timeout_min, delay = params.get("timeout_min"), params.get("signal_delay_s")
    if timeout_min is not None and delay is not None and timeout_min * 60 <= delay:
        raise BeftError(f"hydra.launcher.timeout_min={timeout_min} leaves no time: SLURM warns the job "
                        f"signal_delay_s={delay} s before its limit, which stops it; give timeout_min > "
                        f"{delay / 60:g} (or a smaller hydra.launcher.signal_delay_s)")


def queue(job_ids: list[str]) -> dict[str, tuple[str, str]] | None:
    """{job id: (state, reason)} for the jobs squeue still lists (one line per array task); None if squeue
    failed (the controller busy or restarting: ask again later)."""
    if not job_ids:
        return {}
    try:
        out = _run(["squeue", "-h", "-r", "-j", ",".join(sorted(set(job_ids))), "-o", "%i|%T|%r"], timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        # Jobs that ended long ago (after MinJobAge) are unknown to squeue: they have ended.
        return {} if "invalid job id" in out.stderr.lower() else None
    listed = {}
    for line in out.stdout.splitlines():
        job_id, state, reason = (line.strip().split("|") + ["", ""])[:3]
        listed[job_id] = (state, reason)
    return listed


def final_states(job_ids: list[str]) -> dict[str, str]:
    """{job id: state} from sacct for jobs that have ended (`CANCELLED by 0` -> CANCELLED); jobs sacct does not
    know, or knows only as still running (accounting lags a little), are left out."""
    if not job_ids:
        return {}
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    try:
        out = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(arrays)], timeout=60)
    except (OSError, subprocess.SubprocessError):
        return {}
    states = {}
    for line in out.stdout.splitlines():
        job_id, state = (line.strip().split("|") + [""])[:2]
        state = state.split(" ")[0]
        if job_id in job_ids and state and state not in UNFINISHED:
            states[job_id] = state
    return states


def ending(state: str, params: dict) -> str | None:
    """What a SLURM end state means for a job with these parameters (None for the plain ones)."""
    text = ENDINGS.get(state)
    return text.format(timeout_min=params.get("timeout_min"), mem_gb=params.get("mem_gb")) if text else None


def cancel(job_ids: list[str]) -> None:
    """scancel the jobs (whole arrays by their id); a failure is SLURM's to report, not a reason to stop."""
    if job_ids:
        try:
            _run(["scancel", *sorted(set(job_ids))], timeout=60)
        except (OSError, subprocess.SubprocessError):
            pass
