"""The SLURM launcher's parts that need no cluster: outcomes and summaries, refusals named by field, resume on the
submit host, where a job runs, signals, progress lines, presets. tests/test_slurm.py runs them on a real cluster."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from beft import interrupts, placement, slurm, sweep
from beft.progress import LineProgress
from beft.record import read_record
from beft.resume import DoneRecords
from conftest import REPO, compose

ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
QUICK = ["model=tiny-bert", "method=fixed-v", "regime.n=32", "trainer.epochs=1", "trainer.progress=false"]


def write_lines(path, *entries):
    path.write_text("".join(json.dumps(e) + "\n" for e in entries) + "{torn line\n")


def test_one_outcome_per_job_the_last_one_keeping_its_slurm_job(tmp_path):
    write_lines(tmp_path / sweep.JOBS_FILE,
                {"status": "ok", "run_id": "fast", "job": 1},   # a fast job said ok before its submitted line
                {"status": "submitted", "run_id": "job=1", "job": 1, "slurm_job": "7_1", "log": "l1"},
                {"status": "submitted", "run_id": "job=0", "job": 0, "slurm_job": "7_0", "log": "l0"},
                {"status": "interrupted", "run_id": "req", "job": 0, "slurm_job": "7_0"},   # requeued...
                {"status": "ok", "run_id": "req", "job": 0, "slurm_job": "7_0"},            # ...and done
                {"status": "submitted", "run_id": "job=2", "job": 2, "slurm_job": "7_2", "log": "l2"},
                {"status": "failed", "run_id": "lost", "job": 2, "slurm_job": "7_2", "state": "CANCELLED",
                 "log": "l2", "reason": "cancelled by scancel or an administrator"},
                {"status": "submitted", "run_id": "job=3", "job": 3, "slurm_job": "7_3", "log": "l3"})
    outcomes = {o["job"]: o for o in sweep.read_outcomes(tmp_path)}
    assert outcomes[1]["status"] == "ok" and outcomes[1]["slurm_job"] == "7_1" and outcomes[1]["run_id"] == "fast"
    assert outcomes[0]["status"] == "ok"
    assert sweep.summary_line(list(outcomes.values())) == (
        "2 ok, 0 skipped (already done), 1 failed: lost (SLURM job 7_2 CANCELLED; cancelled by scancel or an "
        "administrator; log: l2); 1 without an outcome (still running, or lost with their launcher): 7_3")
    assert sweep.sweep_failed(list(outcomes.values()))


def test_a_sweep_is_summarised_again_from_its_folder(tmp_path):
    write_lines(tmp_path / sweep.JOBS_FILE, {"status": "ok", "run_id": "a", "job": 0},
                {"status": "skipped", "run_id": "b", "job": 1})
    run = [sys.executable, "-m", "beft.sweep"]
    done = subprocess.run(run + [str(tmp_path)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "1 ok, 1 skipped (already done), 0 failed\n"
    write_lines(tmp_path / sweep.JOBS_FILE, {"status": "failed", "run_id": "a", "job": 0})
    failed = subprocess.run(run + [str(tmp_path)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and failed.stdout.startswith("0 ok, 0 skipped (already done), 1 failed: a")
    missing = subprocess.run(run + [str(tmp_path / "nope")], cwd=REPO, env=ENV, capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "hydra.sweep.dir" in missing.stderr


SHAPE = [{"partition": "debug", "cpus": 2, "mem_mb": 21694, "gpus": 0, "gres": "(null)", "limit": "infinite"}]


@pytest.mark.parametrize("said, params, named", [
    ("sbatch: error: Invalid generic resource (gres) specification", {"gpus_per_node": 1, "cpus_per_task": 1},
     "lower hydra.launcher.gpus_per_node=1 (hydra/launcher=slurm_cpu for CPU jobs)"),
    ("allocation failure: Requested node configuration is not available", {"cpus_per_task": 8, "mem_gb": 64},
     "lower hydra.launcher.cpus_per_task=8 and hydra.launcher.mem_gb=64;"),
    ("sbatch: error: invalid partition specified: gpu", {"partition": "gpu", "cpus_per_task": 1},
     "check hydra.launcher.partition=gpu"),
    ("allocation failure: Invalid feature specification", {"constraint": "a100", "cpus_per_task": 1},
     "check hydra.launcher.constraint=a100"),
    ("sbatch: error: Requested time limit is invalid (missing or exceeds some limit)", {"timeout_min": 9999},
     "check hydra.launcher.timeout_min=9999"),
])
def test_a_refusal_names_the_field_to_change(monkeypatch, said, params, named):
    monkeypatch.setattr(slurm, "node_shapes", lambda partition, every_partition=False: SHAPE)
    line = slurm.explain_refusal(said + "\n", params)
    assert "\n" not in line and named in line and line.startswith("SLURM refuses the jobs: ")
    assert line.endswith("this cluster: partition debug: 2 CPUs, 21694 MB, no GPUs, time limit infinite")


def test_a_time_limit_within_the_warning_delay_is_refused():
    with pytest.raises(Exception, match=r"timeout_min=2 leaves no time: .*signal_delay_s=120"):
        slurm.check_times({"timeout_min": 2, "signal_delay_s": 120})
    slurm.check_times({"timeout_min": 3, "signal_delay_s": 120})
    assert slurm.NEVER_STARTS.match("PartitionConfig") and slurm.NEVER_STARTS.match("QOSMaxCpuPerJobLimit")
    assert not slurm.NEVER_STARTS.match("Resources") and not slurm.NEVER_STARTS.match("Priority")
    assert slurm.ending("TIMEOUT", {"timeout_min": 10}) == "past its time limit, hydra.launcher.timeout_min=10"


def test_the_submit_host_finds_a_finished_job_without_torch(make_cfg, tmp_path):
    from beft.pipeline import run

    cfg = make_cfg(*QUICK, f"cache_dir={tmp_path / 'cache'}")
    assert DoneRecords().find(cfg) is None
    record = run(cfg)
    assert DoneRecords().find(cfg)["run_id"] == record["run_id"]
    assert DoneRecords().find(make_cfg(*QUICK, "seed=1")) is None            # another job
    assert DoneRecords().find(make_cfg(*QUICK, "force=true")) is None        # forced: rerun
    path = tmp_path / "runs" / record["run_id"] / "result.json"
    path.write_text(path.read_text().replace('"status": "ok"', '"status": "failed"'))
    assert DoneRecords().find(cfg) is None                                   # only ok records count
    overrides = [f"out_dir={tmp_path / 'runs'}", *QUICK]
    code = ("import sys; from beft.resume import DoneRecords; from conftest import compose; "
            f"assert DoneRecords().find(compose(*{overrides!r})) is None; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO / "tests", env=ENV, capture_output=True,
                         text=True, timeout=300)
    assert out.stdout.strip() == "[]", out.stderr[-2000:]


def test_a_slurm_job_knows_where_it_runs(monkeypatch, tmp_path):
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(name, raising=False)
    assert placement.slurm_job() is None and placement.describe() == {}
    monkeypatch.setenv("SLURM_JOB_ID", "43")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURMD_NODENAME", "node7")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SUBMITIT_FOLDER", str(tmp_path / ".submitit" / "%j"))
    job = placement.describe()["slurm"]
    assert job == {"job_id": "40_3", "array_index": 3, "node": "node7", "cpus_per_task": 3,
                   "log": str(tmp_path / ".submitit" / "40_3" / "40_3_0_log.err")}
    assert "time limit" in placement.signal_reason(signal.SIGUSR2)
    assert "cancelled" in placement.signal_reason(signal.SIGTERM)

    import torch

    from beft.launch import job_resources

    threads = torch.get_num_threads()
    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    try:
        with job_resources(compose(*QUICK)):
            assert torch.get_num_threads() == 3    # SLURM_CPUS_PER_TASK, not the node's cores
        assert emptied == [True]                   # a reused worker keeps no CUDA memory of the last job
    finally:
        torch.set_num_threads(threads)


def test_signals_become_an_interrupt_naming_them_and_the_old_handlers_return():
    before = signal.getsignal(signal.SIGUSR1)
    with pytest.raises(interrupts.Interrupted) as caught:
        with interrupts.interrupt_on_signals(lambda signum: "a reason"):
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(5)
    assert str(caught.value) == "SIGUSR1 (a reason)" and interrupts.exit_code(caught.value) == 128 + signal.SIGUSR1
    assert isinstance(caught.value, KeyboardInterrupt) and interrupts.last_signal == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) == before
    assert interrupts.describe(KeyboardInterrupt()) == "KeyboardInterrupt: interrupted by the user (Ctrl-C)"


def test_sigterm_mid_sweep_leaves_an_interrupted_record_and_the_summary(tmp_path):
    quick = [o for o in QUICK if o != "trainer.progress=false"]
    cmd = [sys.executable, "run.py", "-m", f"out_dir={tmp_path / 'runs'}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
           f"cache_dir={tmp_path / 'cache'}", *quick, "regime.n=256", "trainer.epochs=500"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    progress = []
    for line in proc.stderr:   # stderr is a pipe, not a terminal: progress comes as plain lines, one per 10 %
        progress.append(line)
        if "% (" in line:
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out + err
    assert re.match(r"sst2 \S+ s0: 10% \(800/8000\), epoch=49, loss=\S+, [\d.]+ s$", progress[-1].rstrip("\n"))
    assert "\r" not in "".join(progress) + err and "Traceback" not in out + err
    (record,) = [read_record(p) for p in (tmp_path / "runs").glob("*/result.json")]
    assert record["status"] == "interrupted" and record["error"].startswith("Interrupted: SIGTERM (")
    said = [line for line in (out + err).splitlines() if "interrupted by SIGTERM" in line]
    assert len(said) == 1 and record["run_id"] in said[0]
    assert out.splitlines()[-1] == f"0 ok, 0 skipped (already done), 0 failed; 1 interrupted: {record['run_id']}"


def test_progress_outside_a_terminal_is_a_line_per_tenth(tmp_path):
    with open(tmp_path / "log", "w") as stream:
        bar = LineProgress(total=40, desc="sst2 v s0", stream=stream)
        for step in range(40):
            bar.update(1)
            bar.set_postfix(epoch=step // 20, loss="0.500")
        bar.close()
        bar.update(1)   # after close: silent
        for _ in LineProgress(range(3), desc="cells", stream=stream):
            pass
    lines = (tmp_path / "log").read_text().splitlines()
    assert "\r" not in "".join(lines) and len(lines) == 10 + 3
    assert lines[3].startswith("sst2 v s0: 40% (16/40), epoch=0, loss=0.500, ")
    assert lines[-1].startswith("cells: 100% (3/3)")


@pytest.mark.parametrize("preset, gpus", [("slurm", 1), ("slurm_cpu", None)])
def test_slurm_presets_compose_with_beft_launcher(preset, gpus):
    cfg = compose("experiment=smoke", f"hydra/launcher={preset}", "hydra.launcher.partition=debug", hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.beft_launcher.slurm_launcher.SlurmLauncher"
    assert launcher.gpus_per_node == gpus and launcher.partition == "debug"
    for field in ("cpus_per_task", "mem_gb", "timeout_min", "account", "qos", "constraint", "array_parallelism",
                  "setup", "signal_delay_s", "max_num_timeout"):
        assert field in launcher
    assert launcher.timeout_min * 60 > launcher.signal_delay_s


def waiting_host(tmp_path, monkeypatch, queue_answers, states):
    """A SubmitHost waiting for one submitted job (5_0), with squeue and sacct answered from lists."""
    from beft import submitit_launcher

    launcher = type("Launcher", (), {"params": {"mem_gb": 4, "timeout_min": 60}})()
    monkeypatch.setattr(submitit_launcher.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(slurm, "queue", lambda ids: queue_answers.pop(0))
    monkeypatch.setattr(slurm, "final_states", lambda ids: states)
    cancelled = []
    monkeypatch.setattr(slurm, "cancel", cancelled.append)
    monkeypatch.setattr(slurm, "node_shapes", lambda partition, every_partition=False: SHAPE)
    job = submitit_launcher.Job(0, ["seed=0"], "seed=0", slurm_id="5_0", log="/logs/5_0_0_log.err")
    (tmp_path / sweep.JOBS_FILE).write_text("")
    return submitit_launcher.SubmitHost(launcher), job, cancelled


def test_a_job_that_ends_without_an_outcome_is_counted_failed_with_its_state(tmp_path, monkeypatch):
    host, job, _ = waiting_host(tmp_path, monkeypatch, [{"5_0": ("RUNNING", "None")}, None, {}],
                                {"5_0": "OUT_OF_MEMORY"})
    host._wait([job], tmp_path)
    (outcome,) = sweep.read_outcomes(tmp_path)
    assert sweep.summary_line([outcome]) == ("0 ok, 0 skipped (already done), 1 failed: seed=0 (SLURM job 5_0 "
                                             "OUT_OF_MEMORY; out of memory, hydra.launcher.mem_gb=4; "
                                             "log: /logs/5_0_0_log.err)")


def test_a_job_that_spoke_for_itself_keeps_its_outcome(tmp_path, monkeypatch):
    host, job, _ = waiting_host(tmp_path, monkeypatch, [{}], {"5_0": "COMPLETED"})
    sweep.append(tmp_path, {"status": "failed", "run_id": "its-run-id", "job": 0})   # a bad input it recorded
    host._wait([job], tmp_path)
    assert sweep.summary_line(sweep.read_outcomes(tmp_path)) == "0 ok, 0 skipped (already done), 1 failed: its-run-id"


def test_jobs_that_can_never_start_are_cancelled_with_one_line(tmp_path, monkeypatch, capsys):
    host, job, cancelled = waiting_host(tmp_path, monkeypatch, [{"5_0": ("PENDING", "PartitionConfig")}], {})
    host.params.update(cpus_per_task=8)
    with pytest.raises(SystemExit) as stop:
        host._wait([job], tmp_path)
    said = capsys.readouterr().err
    assert stop.value.code == 2 and cancelled == [["5_0"]] and said.count("\n") == 1
    assert said.startswith("error: SLURM refuses the jobs: the jobs wait for a reason that waiting will not cure: "
                           "PartitionConfig; lower hydra.launcher.cpus_per_task=8")
