"""hydra/launcher=slurm (and slurm_cpu): hydra-submitit-launcher's SlurmLauncher, made to account for every job.

Hydra loads launchers only from the hydra_plugins package: hydra_plugins/beft_launcher holds the class, a
subclass of the plugin's, whose `launch` and `__call__` are the two functions here. On the submit host, `launch`:
1. drops the jobs whose key already has an ok record (beft.resume: no torch), so a rerun submits only what is
   missing and counts the rest `skipped (already done)`;
2. asks SLURM whether it would run the request (`sbatch --test-only` on the job script) and refuses one it
   would not, or one whose time limit leaves no time, with one line naming the hydra.launcher field;
3. submits the others as one array and waits for every job, asking squeue and sacct itself (submitit's
   `results()` stops at the first job that ended without a result, and reads result pickles, which beft never
   does): a job that ended without an outcome of its own (cancelled, past its time limit, out of memory, its
   node lost, stopped by a signal) is counted failed, with its SLURM job id, end state and log, in the sweep's
   jobs file and in a `failed` record beside where its own would be;
4. on Ctrl-C, cancels the jobs (scancel), gives running ones a few seconds to write their `interrupted`
   records, counts the rest interrupted, and lets run.py print the summary and exit 130.
In the job, `run_in_job` requeues a job stopped by SLURM's time-limit warning when hydra.launcher.max_num_timeout
> 0 (submitit's checkpoint-and-requeue): the rerun reuses every training already in cache_dir.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf, open_dict, read_write

from beft import interrupts, slurm, sweep
from beft.errors import BeftError
from beft.record import RECORD, read_record, write_json_atomic
from beft.resume import DoneRecords, data_dir

log = logging.getLogger("beft")
EXIT_BAD_INPUT = 2
GRACE_S = 30   # after scancel, how long running jobs get to write their interrupted records


@dataclass
class Job:
    num: int                 # Hydra's job number in the sweep
    overrides: list[str]
    label: str               # the overrides, until the run id is known
    cfg: object = None       # the job's config (None if it did not compose here: the job will say why)
    done: dict | None = None   # the ok record that makes it unnecessary
    slurm_id: str | None = None
    log: str | None = None


def launch(launcher, job_overrides, initial_job_idx) -> list[JobReturn]:
    """The SLURM launcher's `launch` (hydra_plugins.beft_launcher): see the module's docstring."""
    return SubmitHost(launcher).launch(job_overrides, initial_job_idx)


def run_in_job(launcher, run, *args, **kwargs):
    """The SLURM launcher's `__call__`, on the node: `run` (the plugin's) runs the job; a job that SLURM's
    time-limit warning stopped is requeued when hydra.launcher.max_num_timeout > 0."""
    import submitit

    warning = submitit.JobEnvironment._usr_sig()
    requeue = signal.getsignal(warning) if launcher.params.get("max_num_timeout") else None
    try:
        return run(*args, **kwargs)
    except SystemExit:
        if callable(requeue) and interrupts.last_signal == warning:
            requeue(warning, None)   # submitit: resubmit these arguments and requeue, or raise why not
        raise


class SubmitHost:
    """One sweep's jobs on the submit host: plan, check, submit, wait, account."""

    def __init__(self, launcher):
        self.launcher, self.params = launcher, launcher.params
        self.records = DoneRecords()

    def launch(self, job_overrides, initial_job_idx):
        sweep_dir = Path(str(self.launcher.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        try:   # before anything else: a request the cluster cannot run is refused at once
            executor = self._executor()
            slurm.check_times(self.params)
            slurm.test_request(self._script(executor, len(job_overrides)), self.params)
        except BeftError as err:
            _refuse(err)
        jobs = [self._plan(initial_job_idx + i, list(overrides)) for i, overrides in enumerate(job_overrides)]
        todo = [job for job in jobs if job.done is None]
        for job in jobs:
            if job.done is not None:
                sweep.append(sweep_dir, {"status": "skipped", "run_id": job.done.get("run_id"), "job": job.num})
        log.info("SLURM: %d of %d jobs already have an ok record (skipped, not submitted); submitting %d",
                 len(jobs) - len(todo), len(jobs), len(todo))
        if todo:
            self._submit(executor, todo, sweep_dir)
            self._wait(todo, sweep_dir)
        return [JobReturn(overrides=job.overrides, status=JobStatus.COMPLETED, _return_value=None) for job in jobs]

    # -- before submitting ---------------------------------------------------------------------------------
    def _plan(self, num: int, overrides: list[str]) -> Job:
        """The job, its config as the job will compose it, and its ok record if it has one."""
        job = Job(num, overrides, ",".join(filter_overrides(overrides)) or f"job {num}")
        before = HydraConfig.instance().cfg
        try:
            full = self.launcher.hydra_context.config_loader.load_sweep_config(self.launcher.config, overrides)
            HydraConfig.instance().set_config(full)   # for ${hydra:...} in the job's config
            cfg = copy.deepcopy(full)
            with read_write(cfg), open_dict(cfg):
                del cfg["hydra"]
            job.cfg = cfg
            job.done = self.records.find(cfg)
        except Exception as err:   # the job itself will report a config that cannot run
            log.debug("job %d: not checked on the submit host (%s)", num, err)
        finally:
            HydraConfig.instance().cfg = before
        return job

    def _executor(self):
        """submitit's SLURM executor with this launcher's parameters (as the plugin builds it)."""
        import submitit

        params = dict(self.params)
        folder, max_timeouts = params.pop("submitit_folder"), params.pop("max_num_timeout")
        try:
            executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=max_timeouts)
        except RuntimeError as err:   # no srun here
            raise BeftError(f"hydra/launcher=slurm needs SLURM's commands (sbatch, srun, squeue, sacct) on this "
                            f"machine ({err}); without a cluster use hydra/launcher=basic or joblib") from None
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        try:
            executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
        except ValueError as err:
            raise BeftError(f"hydra.launcher: {str(err).splitlines()[0]}") from None
        return executor

    @staticmethod
    def _script(executor, n_jobs: int) -> str:
        """The sbatch script submitit will write for an array of n_jobs (for `sbatch --test-only`)."""
        inner = executor._executor   # submitit's SlurmExecutor: the script is private API, so build it as it does
        params = {**inner.parameters, **({"map_count": n_jobs} if n_jobs > 1 else {})}
        from submitit.slurm.slurm import _make_sbatch_string

        return _make_sbatch_string(command=inner._submitit_command_str, folder=inner.folder, **params)

    def _submit(self, executor, todo: list[Job], sweep_dir: Path) -> None:
        args = [(job.overrides, "hydra.sweep.dir", job.num, f"job_id_for_{job.num}", Singleton.get_state())
                for job in todo]
        said = io.StringIO()
        try:
            with contextlib.redirect_stderr(said):   # submitit echoes sbatch's stderr; one line says it below
                submitted = executor.map_array(self.launcher, *zip(*args))
        except Exception as err:   # sbatch refused (submitit's FailedJobError carries its stderr)
            _refuse(BeftError(slurm.explain_refusal(f"{said.getvalue()}\n{err}", self.params)))
        for job, handle in zip(todo, submitted):
            job.slurm_id, job.log = handle.job_id, str(handle.paths.stderr)
            sweep.append(sweep_dir, {"status": "submitted", "run_id": job.label, "job": job.num,
                                     "slurm_job": job.slurm_id, "log": job.log})
        log.info("SLURM: submitted %d jobs (%s); logs in %s", len(todo), _ids(todo), Path(todo[0].log).parent.parent)

    # -- waiting -------------------------------------------------------------------------------------------
    def _wait(self, todo: list[Job], sweep_dir: Path) -> None:
        waiting = {job.slurm_id: job for job in todo}
        try:
            # SIGTERM to the launcher (`kill`, a driver job's own time limit) stops the sweep as Ctrl-C does.
            with interrupts.interrupt_on_signals(lambda signum: "sent to the launcher"):
                self._poll(waiting, sweep_dir)
        except KeyboardInterrupt:
            self._interrupt(list(waiting.values()), sweep_dir)
            raise

    def _poll(self, waiting: dict, sweep_dir: Path) -> None:
        """Until every job has ended: squeue for the ones still there, sacct for how the others ended."""
        start, ended_at = time.time(), {}
        while waiting:
            time.sleep(min(15.0, 1.0 + (time.time() - start) / 20))
            queued = slurm.queue(list(waiting))
            if queued is None:
                continue   # squeue did not answer: ask again
            stuck = {reason for state, reason in queued.values() if state == "PENDING"
                     and slurm.NEVER_STARTS.match(reason)}
            if stuck:
                slurm.cancel(list(waiting))
                _refuse(BeftError(slurm.explain_refusal(
                    f"the jobs wait for a reason that waiting will not cure: {', '.join(sorted(stuck))}",
                    self.params)))
            for slurm_id in [i for i in waiting if i not in queued]:
                ended_at.setdefault(slurm_id, time.time())
            states = slurm.final_states(list(ended_at))
            for slurm_id in list(ended_at):
                # sacct may lag squeue by a moment; without accounting it never knows: UNKNOWN after 20 s
                if slurm_id in states or time.time() - ended_at[slurm_id] > 20:
                    self._settle(waiting.pop(slurm_id), states.get(slurm_id, "UNKNOWN"), sweep_dir)
                    del ended_at[slurm_id]

    def _settle(self, job: Job, state: str, sweep_dir: Path) -> None:
        """A job SLURM says has ended: its own outcome stands; without one (or stopped by a signal) it is lost."""
        outcome = _outcome(sweep_dir, job.num)
        if outcome and outcome["status"] in ("ok", "skipped", "failed"):
            return
        run_id, reason = self._lost_record(job, state)
        if reason == "ok":   # the job finished its run and ended before it could say so
            sweep.append(sweep_dir, {"status": "ok", "run_id": run_id, "job": job.num, "slurm_job": job.slurm_id})
            return
        sweep.append(sweep_dir, {"status": "failed", "run_id": run_id, "job": job.num, "slurm_job": job.slurm_id,
                                 "state": state, "log": job.log, **({"reason": reason} if reason else {})})
        log.error("SLURM job %s (%s) ended %s without a result%s; log: %s", job.slurm_id, run_id, state,
                  f" ({reason})" if reason else "", job.log)

    def _lost_record(self, job: Job, state: str) -> tuple[str, str | None]:
        """Write the `failed` record of a lost job where the job would have written its own (keeping what an
        `interrupted` record of its own said); its run id and why it was lost ("ok" if its ok record is there)."""
        reason = slurm.ending(state, self.params)
        if job.cfg is None:
            return job.label, reason
        # The pipeline's names import torch: only here, when a job was lost.
        from beft import fingerprint
        from beft.config import to_plain
        from beft.pipeline import method_label, run_id
        from beft.record import record_key
        from beft.selection import SELECTORS

        cfg = job.cfg
        prints = fingerprint.of_run(cfg.model, cfg.task, data_dir(cfg))
        key = record_key(cfg, prints)
        path = Path(str(cfg.out_dir)) / run_id(cfg, key) / RECORD
        record = read_record(path)
        if record and record.get("key") == key and record.get("status") == "ok":
            return record["run_id"], "ok"
        if record and record.get("key") == key and record.get("status") == "interrupted":
            record["job_error"] = record.get("error")   # the job's own word: the signal that stopped it
            reason = "; ".join(r for r in (reason, f"the job says {record.get('error')}") if r)
        else:
            record = {"key": key, "run_id": path.parent.name, "method_label": method_label(cfg),
                      "selection_run": cfg.method.name in SELECTORS,
                      "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      "config": to_plain(cfg), "fingerprint": prints, "notes": []}
        record.update(status="failed", error=f"SLURM job {job.slurm_id} ended {state} without a result"
                      + (f" ({reason})" if reason else "") + f"; log: {job.log}",
                      slurm={"job_id": job.slurm_id, "state": state, "log": job.log})
        write_json_atomic(path, record)
        return record["run_id"], reason

    def _interrupt(self, unfinished: list[Job], sweep_dir: Path) -> None:
        """Ctrl-C: cancel the jobs, let running ones write their records, count every unfinished job interrupted."""
        ids = [job.slurm_id for job in unfinished]
        print(f"\ninterrupted: cancelling SLURM jobs {_ids(unfinished)} (up to {GRACE_S} s for running ones to "
              "write their records; Ctrl-C again to stop waiting)", file=sys.stderr, flush=True)
        slurm.cancel(ids)
        deadline = time.time() + GRACE_S
        try:
            while time.time() < deadline and slurm.queue(ids):
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        for job in unfinished:
            outcome = _outcome(sweep_dir, job.num)
            if not outcome or outcome["status"] == "submitted":
                sweep.append(sweep_dir, {"status": "interrupted", "run_id": job.label, "job": job.num,
                                         "slurm_job": job.slurm_id, "log": job.log})


def _outcome(sweep_dir: Path, num: int) -> dict | None:
    return next((o for o in sweep.read_outcomes(sweep_dir) if o.get("job") == num), None)


def _ids(jobs: list[Job]) -> str:
    arrays = sorted({job.slurm_id.split("_")[0] for job in jobs})
    return ", ".join(arrays) if len(arrays) < 4 else f"{arrays[0]} ... {arrays[-1]}"


def _refuse(err: BeftError):
    """A request SLURM will not run is bad input: one line, exit 2, nothing left queued."""
    print(f"error: {err}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_BAD_INPUT)
