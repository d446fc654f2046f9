"""Sweeps on a real SLURM cluster (`bash scripts/slurm_local.sh up`; .ci/run brings one up): the README's
commands, a rerun that submits nothing, a failing job, a scancelled job, Ctrl-C of the launcher, a time limit.
Skipped where no cluster answers."""
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from beft.record import read_record
from conftest import REPO

pytestmark = pytest.mark.slurm
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
       "TOKENIZERS_PARALLELISM": "false"}
LONG = ["model=tiny-bert", "task=sst2", "method=fixed-v", "regime.n=256", "trainer.epochs=500",
        "trainer.progress=false"]


def _cluster() -> dict | None:
    """The default partition's name and whether it has GPUs, if a cluster with a usable node answers."""
    if not shutil.which("sinfo") or not shutil.which("sbatch"):
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P|%T|%G"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.stdout.splitlines():
        name, state, gres = line.split("|")
        if name.endswith("*") and state.rstrip("*~#") in ("idle", "mixed", "allocated"):
            return {"partition": name.rstrip("*"), "gpus": "gpu" in gres}
    return None


CLUSTER = _cluster()
if CLUSTER is None and os.environ.get("BEFT_REQUIRE_SLURM"):   # CI brought one up: its absence is a failure
    raise RuntimeError("BEFT_REQUIRE_SLURM is set but no SLURM cluster answers (sinfo)")
if CLUSTER is None:   # every test here runs sweeps on the cluster: without one the module is one skip, one reason
    pytest.skip("no SLURM cluster up (bash scripts/slurm_local.sh up)", allow_module_level=True)


def readme_commands() -> list[list[str]]:
    """The run.py commands of the README's SLURM section, as words."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("### On a SLURM cluster"):]
    block = section[section.index("```bash") + 7:section.index("```", section.index("```bash") + 7)]
    commands = [shlex.split(line.split("#")[0]) for line in block.splitlines() if "run.py -m" in line]
    assert commands, "the README's SLURM section lost its commands"
    return commands


def sweep(tmp_path, name, args, runs="runs", wait=True, **popen):
    """run.py with these arguments (the README's partition replaced by this cluster's), writing under tmp_path."""
    args = [re.sub(r"^hydra\.launcher\.partition=.*", f"hydra.launcher.partition={CLUSTER['partition']}", a)
            for a in args]
    cmd = [sys.executable, "run.py", "-m", *[a for a in args if a != "-m"], f"out_dir={tmp_path / runs}",
           f"hydra.sweep.dir={tmp_path / name}", f"cache_dir={tmp_path / 'cache'}"]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, **popen)
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)


def submitted(tmp_path, name) -> list[dict]:
    lines = (tmp_path / name / "beft_jobs.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["status"] == "submitted"]


def records(tmp_path, runs="runs") -> dict:
    return {r["run_id"]: r for r in map(read_record, (tmp_path / runs).glob("*/result.json"))}


def queued(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-r", "-j", job_id.split("_")[0], "-o", "%i %T"], capture_output=True,
                         text=True, timeout=30).stdout
    return next((line.split()[1] for line in out.splitlines() if line.split()[0] == job_id), "")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The README's CPU command, run on SLURM: its output and folder."""
    tmp_path = tmp_path_factory.mktemp("slurm")
    (cpu,) = [c for c in readme_commands() if "hydra/launcher=slurm_cpu" in c]
    return tmp_path, cpu, sweep(tmp_path, "sweep", cpu[2:])


def test_the_readme_cpu_command_runs_every_job_like_the_basic_launcher(smoke):
    tmp_path, cpu, done = smoke
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    on_slurm = records(tmp_path)
    n = len(submitted(tmp_path, "sweep"))
    assert n == len(on_slurm) >= 2 and all(r["status"] == "ok" for r in on_slurm.values())
    assert done.stdout.splitlines()[-1] == f"{n} ok, 0 skipped (already done), 0 failed"
    for record in on_slurm.values():   # each job knows its SLURM job, node, CPUs and log
        where = record["env"]["placement"]["slurm"]
        assert where["node"] and os.path.exists(where["log"]) and "_" in where["job_id"]
        assert record["env"]["host"]["torch_threads"] == where["cpus_per_task"]
    basic = [a for a in cpu[2:] if not a.startswith("hydra")]
    again = sweep(tmp_path, "basic", basic, runs="basic")
    assert again.returncode == 0, again.stderr[-3000:]
    here = records(tmp_path, "basic")
    assert set(here) == set(on_slurm)
    for run_id, record in on_slurm.items():
        assert record["metrics"]["final"] == here[run_id]["metrics"]["final"], run_id


def test_a_rerun_submits_nothing(smoke):
    tmp_path, cpu, first = smoke
    n = len(records(tmp_path))
    again = sweep(tmp_path, "again", cpu[2:])
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.splitlines()[-1] == f"0 ok, {n} skipped (already done), 0 failed"
    assert submitted(tmp_path, "again") == [] and not (tmp_path / "again" / ".submitit").exists()


def test_the_readme_gpu_command_is_one_line_on_a_cluster_without_gpus(tmp_path):
    if CLUSTER["gpus"]:
        pytest.skip("this cluster has GPUs")
    (gpu,) = [c for c in readme_commands() if "hydra/launcher=slurm" in c and "hydra/launcher=slurm_cpu" not in c]
    done = sweep(tmp_path, "sweep", gpu[2:])
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: SLURM refuses the jobs: ")
    assert "hydra.launcher.gpus_per_node=1" in done.stderr and "no GPUs" in done.stderr
    assert not (tmp_path / "sweep" / ".submitit").exists()   # nothing was submitted


def test_a_failing_job_is_counted_and_the_sweep_exits_1(tmp_path):
    done = sweep(tmp_path, "sweep", ["model=tiny-bert", "method=fixed-v", "regime.n=999999999",
                                     "hydra/launcher=slurm_cpu", "hydra.launcher.partition=x",
                                     "hydra.launcher.cpus_per_task=1"])
    (record,) = records(tmp_path).values()
    assert done.returncode == 1 and record["status"] == "failed" and "999999999" in record["error"]
    (job,) = submitted(tmp_path, "sweep")   # the job's own failure, with its log
    assert done.stdout.splitlines()[-1] == (f"0 ok, 0 skipped (already done), 1 failed: {record['run_id']} "
                                            f"(log: {job['log']})")


def test_a_scancelled_job_is_counted_failed_and_a_rerun_does_only_it(smoke):
    tmp_path, cpu, _ = smoke
    done_before = records(tmp_path)
    # seed 0 is done (the README's command); seed 1 waits in its setup line, cancelled before Python starts
    args = ["experiment=smoke", "task=sst2", "method=fixed-v", "seed=0,1", "hydra/launcher=slurm_cpu",
            "hydra.launcher.partition=x", "hydra.launcher.cpus_per_task=1"]
    proc = sweep(tmp_path, "cancel", [*args, 'hydra.launcher.setup=["sleep 600"]'], wait=False)
    deadline, job = time.time() + 300, None
    while time.time() < deadline and not job:
        time.sleep(1)
        jobs = submitted(tmp_path, "cancel") if (tmp_path / "cancel" / "beft_jobs.jsonl").exists() else []
        job = next((e for e in jobs if queued(e["slurm_job"]) == "RUNNING"), None)
    assert job and len(submitted(tmp_path, "cancel")) == 1, "the job never ran"
    subprocess.run(["scancel", job["slurm_job"]], check=True, timeout=30)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, out[-3000:] + err[-3000:]
    (lost,) = [r for r in records(tmp_path).values() if r["run_id"] not in done_before]
    assert lost["status"] == "failed" and lost["config"]["seed"] == 1
    assert lost["slurm"] == {"job_id": job["slurm_job"], "state": "CANCELLED", "log": job["log"]}
    assert out.splitlines()[-1] == (f"0 ok, 1 skipped (already done), 1 failed: {lost['run_id']} (SLURM job "
                                    f"{job['slurm_job']} CANCELLED; cancelled by scancel or an administrator; "
                                    f"log: {job['log']})")
    again = sweep(tmp_path, "rerun", args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [e["run_id"] for e in submitted(tmp_path, "rerun")] == [job["run_id"]]   # only the cancelled job
    assert again.stdout.splitlines()[-1] == "1 ok, 1 skipped (already done), 0 failed"
    assert records(tmp_path)[lost["run_id"]]["status"] == "ok"


def test_ctrl_c_cancels_the_jobs_and_prints_the_summary(tmp_path):
    proc = sweep(tmp_path, "sweep", [*LONG, "seed=0,1", "hydra/launcher=slurm_cpu", "hydra.launcher.partition=x",
                                     "hydra.launcher.cpus_per_task=1"], wait=False,
                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "cache").glob("fits/*.lock")):  # a job is training
        time.sleep(1)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-3000:] + err[-3000:]
    assert "Traceback" not in out + err
    ids = [e["slurm_job"] for e in submitted(tmp_path, "sweep")]
    assert not any(queued(i) for i in ids)   # nothing left running or queued
    summary = out.splitlines()[-1]
    assert summary.startswith("0 ok, 0 skipped (already done), 0 failed; 2 interrupted: ")
    interrupted = [r for r in records(tmp_path).values() if r["status"] == "interrupted"]
    assert interrupted and all(r["error"].startswith("Interrupted: SIGTERM (SLURM cancelled") for r in interrupted)
    assert all(r["run_id"] in summary for r in interrupted)


def test_a_job_stopped_by_its_time_limit_says_so(tmp_path):
    # SLURM warns signal_delay_s before the limit (checked about twice a minute): here 50 to 80 s into the job.
    # The job must outlast the warning on an idle machine too (500 epochs can end in under 50 s): it trains until
    # the signal stops it, and SLURM's limit ends it at 3 minutes whatever happens.
    endless = [a if not a.startswith("trainer.epochs=") else "trainer.epochs=100000" for a in LONG]
    done = sweep(tmp_path, "sweep", [*endless, "hydra/launcher=slurm_cpu", "hydra.launcher.partition=x",
                                     "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=3",
                                     "hydra.launcher.signal_delay_s=130"])
    (record,) = records(tmp_path).values()
    assert done.returncode == 1, done.stderr[-3000:]
    assert record["status"] == "failed" and record["slurm"]["state"] in ("FAILED", "TIMEOUT")
    assert record["job_error"].startswith("Interrupted: SIGUSR2 (SLURM's warning: the time limit "
                                          "(hydra.launcher.timeout_min=3) is near")
    assert f"SLURM job {record['slurm']['job_id']}" in done.stdout.splitlines()[-1]
