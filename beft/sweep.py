"""A sweep tells the truth about itself: every job's outcome, one summary line, and a non-zero exit on failure.

Each job of a multirun appends its outcome (ok, skipped, failed, interrupted) and run id to a jobs file in the
sweep directory, under a file lock, so jobs in joblib's worker processes (or SLURM jobs on a shared disk) can
write side by side. A launcher that submits jobs elsewhere (beft.submitit_launcher) writes there too: the jobs
it skips, the SLURM job each one became, and the jobs lost without an outcome (cancelled, out of time or memory,
their node lost). `SweepSummary`, a Hydra callback (conf/config.yaml, hydra.callbacks), empties that file when
the sweep starts and prints the summary line when it ends; run.py exits non-zero when a job failed.
`python -m beft.sweep <sweep dir>` prints the summary again later, from the file alone.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from beft.file_lock import exclusive

JOBS_FILE = "beft_jobs.jsonl"
OUTCOMES = ("ok", "skipped", "failed", "interrupted")
SUBMISSION = ("slurm_job", "log")   # what a `submitted` line says of a job, kept beside its outcome
log = logging.getLogger("beft")
# Outcomes of the last sweep this process ran (set by SweepSummary.on_multirun_end): run.py's exit code.
last_outcomes: list[dict] | None = None
# The sweep this process is running now, if any: an interrupted sweep still prints its summary.
_running_sweep: str | None = None


def _jobs_file(sweep_dir) -> Path:
    return Path(str(sweep_dir)) / JOBS_FILE


def append(sweep_dir, entry: dict) -> None:
    """Add one line to a sweep's jobs file, under its lock."""
    path = _jobs_file(sweep_dir)
    with exclusive(path.with_suffix(".lock"), "waiting for the sweep's jobs file"):
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")


def note_outcome(status: str, run_id: str) -> None:
    """Record one job's outcome in its sweep's jobs file (a no-op outside a multirun), with the job's number (a
    launcher that resubmits or loses a job names it by that) and the SLURM job it ran as, if any."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from beft.placement import slurm_job

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    entry = {"status": status, "run_id": run_id}
    num = HydraConfig.get().job.get("num")
    if num is not None:
        entry["job"] = int(num)
    slurm = slurm_job()
    if slurm:
        entry["slurm_job"] = slurm["job_id"]
    append(HydraConfig.get().sweep.dir, entry)


def read_outcomes(sweep_dir) -> list[dict]:
    """One entry per job: its last outcome (a requeued or lost job may have several lines). A job with no
    outcome yet keeps its `submitted` line (its SLURM job id), whatever order the lines were written in."""
    path = _jobs_file(sweep_dir)
    if not path.exists():
        return []
    by_job: dict = {}
    for number, line in enumerate(path.read_text().splitlines()):
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a job killed mid-write: its outcome is unknown, the others still count
        if not isinstance(entry, dict) or "status" not in entry:
            continue
        job = entry.get("job", f"line {number}")   # files from before job numbers: every line is a job
        earlier = by_job.get(job, {})
        if entry["status"] == "submitted":   # an outcome written before it (a fast job) wins
            by_job[job] = {**entry, **earlier}
        else:
            by_job[job] = {**{k: earlier[k] for k in SUBMISSION if k in earlier}, **entry}
    return list(by_job.values())


def _describe(outcome: dict) -> str:
    """A run id, with where to look when SLURM lost the job: `<run id> (SLURM job 12_3 CANCELLED, log: ...)`."""
    where = [f"SLURM job {outcome['slurm_job']} {outcome['state']}" if outcome.get("state") else None,
             outcome.get("reason"), f"log: {outcome['log']}" if outcome.get("log") else None]
    where = [w for w in where if w]
    return outcome.get("run_id", "?") + (f" ({'; '.join(where)})" if where else "")


def summary_line(outcomes: list[dict]) -> str:
    """`N ok, M skipped (already done), K failed: <run ids>` (and interrupted jobs, and jobs with no outcome yet,
    where there are any)."""
    def of(status):
        return [o for o in outcomes if o["status"] == status]

    line = f"{len(of('ok'))} ok, {len(of('skipped'))} skipped (already done), {len(of('failed'))} failed"
    if of("failed"):
        line += ": " + ", ".join(map(_describe, of("failed")))
    if of("interrupted"):
        line += f"; {len(of('interrupted'))} interrupted: " + ", ".join(map(_describe, of("interrupted")))
    unfinished = [o for o in outcomes if o["status"] not in OUTCOMES]
    if unfinished:
        line += (f"; {len(unfinished)} without an outcome (still running, or lost with their launcher): "
                 + ", ".join(o.get("slurm_job") or o.get("run_id") or "?" for o in unfinished))
    return line


def sweep_failed(outcomes: list[dict] | None) -> bool:
    return bool(outcomes) and any(o["status"] != "ok" and o["status"] != "skipped" for o in outcomes)


def summarize_interrupted() -> None:
    """Print the summary of the sweep this process was running when it was interrupted (nothing if none was)."""
    global last_outcomes, _running_sweep
    if _running_sweep is None:
        return
    last_outcomes = read_outcomes(_running_sweep)
    _running_sweep = None
    print(summary_line(last_outcomes), flush=True)


class SweepSummary(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        global last_outcomes, _running_sweep
        last_outcomes = None
        path = _jobs_file(config.hydra.sweep.dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(path.with_suffix(".lock"), "waiting for the sweep's jobs file"):
            path.write_text("")   # a sweep run again in the same directory counts its own jobs only
        _running_sweep = str(config.hydra.sweep.dir)

    def on_multirun_end(self, config, **kwargs) -> None:
        global last_outcomes, _running_sweep
        _running_sweep = None
        last_outcomes = read_outcomes(config.hydra.sweep.dir)
        print(summary_line(last_outcomes), flush=True)


def main(argv: list[str]) -> int:
    """`python -m beft.sweep <sweep dir>`: the summary line of a sweep, from its jobs file; exit 1 unless every job
    was ok or skipped."""
    if len(argv) != 1:
        print("usage: python -m beft.sweep <sweep dir>   (the folder holding beft_jobs.jsonl)", file=sys.stderr)
        return 2
    if not _jobs_file(argv[0]).is_file():
        print(f"error: no {JOBS_FILE} in {argv[0]}: give the sweep's folder (hydra.sweep.dir)", file=sys.stderr)
        return 2
    outcomes = read_outcomes(argv[0])
    print(summary_line(outcomes))
    return 1 if sweep_failed(outcomes) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
