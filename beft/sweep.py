"""A sweep tells the truth about itself: every job's outcome, one summary line, and a non-zero exit on failure.

Each job of a multirun appends its outcome (ok, skipped, failed, interrupted) and run id to a jobs file in the
sweep directory, under a file lock, so jobs in joblib's worker processes (or SLURM jobs on a shared disk) can
write side by side. `SweepSummary`, a Hydra callback (conf/config.yaml, hydra.callbacks), empties that file when
the sweep starts and prints the summary line when it ends; run.py exits non-zero when a job failed.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from hydra.experimental.callback import Callback

from beft.file_lock import exclusive

JOBS_FILE = "beft_jobs.jsonl"
log = logging.getLogger("beft")
# Outcomes of the last sweep this process ran (set by SweepSummary.on_multirun_end): run.py's exit code.
last_outcomes: list[dict] | None = None


def _jobs_file(sweep_dir) -> Path:
    return Path(str(sweep_dir)) / JOBS_FILE


def note_outcome(status: str, run_id: str) -> None:
    """Record one job's outcome in its sweep's jobs file (a no-op outside a multirun)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    path = _jobs_file(HydraConfig.get().sweep.dir)
    with exclusive(path.with_suffix(".lock"), "waiting for the sweep's jobs file"):
        with open(path, "a") as f:
            f.write(json.dumps({"status": status, "run_id": run_id}) + "\n")


def read_outcomes(sweep_dir) -> list[dict]:
    path = _jobs_file(sweep_dir)
    if not path.exists():
        return []
    outcomes = []
    for line in path.read_text().splitlines():
        try:
            outcomes.append(json.loads(line))
        except ValueError:
            continue  # a job killed mid-write: its outcome is unknown, the others still count
    return outcomes


def summary_line(outcomes: list[dict]) -> str:
    """`N ok, M skipped (already done), K failed: <run ids>` (and interrupted jobs, where there are any)."""
    def ids(status):
        return [o["run_id"] for o in outcomes if o["status"] == status]

    line = f"{len(ids('ok'))} ok, {len(ids('skipped'))} skipped (already done), {len(ids('failed'))} failed"
    if ids("failed"):
        line += ": " + ", ".join(ids("failed"))
    if ids("interrupted"):
        line += f"; {len(ids('interrupted'))} interrupted: " + ", ".join(ids("interrupted"))
    return line


def sweep_failed(outcomes: list[dict] | None) -> bool:
    return bool(outcomes) and any(o["status"] != "ok" and o["status"] != "skipped" for o in outcomes)


class SweepSummary(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        global last_outcomes
        last_outcomes = None
        path = _jobs_file(config.hydra.sweep.dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(path.with_suffix(".lock"), "waiting for the sweep's jobs file"):
            path.write_text("")   # a sweep run again in the same directory counts its own jobs only

    def on_multirun_end(self, config, **kwargs) -> None:
        global last_outcomes
        last_outcomes = read_outcomes(config.hydra.sweep.dir)
        print(summary_line(last_outcomes), flush=True)
