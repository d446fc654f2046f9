"""Sweeps: resume after a kill, failed jobs recorded while the sweep goes on, launchers, wandb runs."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from beft.launch import claim_gpu, parallel_jobs, plan
from beft.record import read_record
from conftest import REPO

SMOKE_SST2 = ["experiment=smoke", "task=sst2", "method=fixed-v,fixed-q,bitfit,head", "seed=0,1"]  # 8 jobs


def sweep(tmp_path, *overrides, wait=True):
    cmd = [sys.executable, "run.py", "-m", f"out_dir={tmp_path / 'runs'}", f"hydra.sweep.dir={tmp_path / 'hydra'}",
           f"cache_dir={tmp_path / 'cache'}", *overrides]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if wait:
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def records(tmp_path):
    return [read_record(p) for p in sorted((tmp_path / "runs").glob("*/result.json"))]


def test_killed_sweep_resumes_with_one_ok_record_per_job(tmp_path):
    proc = sweep(tmp_path, *SMOKE_SST2, wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and sum(1 for r in records(tmp_path) if r and r["status"] == "ok") < 3:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up: a job may be half-way
    proc.wait()
    before = {r["key"]: r["created"] for r in records(tmp_path) if r and r["status"] == "ok"}
    assert 3 <= len(before) < 8, "the sweep was not interrupted half-way"

    again = sweep(tmp_path, *SMOKE_SST2)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.splitlines()[-1] == f"{8 - len(before)} ok, {len(before)} skipped (already done), 0 failed"
    after = records(tmp_path)
    assert len(after) == 8 and all(r["status"] == "ok" for r in after)
    assert len({r["key"] for r in after}) == 8                        # no duplicates
    assert {r["key"]: r["created"] for r in after if r["key"] in before} == before  # finished jobs were skipped
    assert not list((tmp_path / "runs").glob("*/.*.tmp"))             # no temp file counts or stays


def test_failed_job_is_recorded_the_sweep_goes_on_and_exits_non_zero_under_joblib(tmp_path):
    done = sweep(tmp_path, "model=tiny-bert", "method=fixed-v", "trainer.epochs=1", "regime.n=32,999999999",
                 "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert done.returncode == 1, done.stderr[-2000:]
    by_n = {r["config"]["regime"]["n"]: r for r in records(tmp_path)}
    assert by_n[32]["status"] == "ok"
    assert by_n[999999999]["status"] == "failed" and "999999999" in by_n[999999999]["error"]
    placed = by_n[32]["env"]["placement"]   # where the job ran: its joblib job number and threads (no GPU here)
    assert placed["launcher"] == "joblib" and placed["threads"] == by_n[32]["env"]["host"]["torch_threads"]
    # The jobs ran in joblib's worker processes; the summary still counts both.
    assert done.stdout.splitlines()[-1] == f"1 ok, 0 skipped (already done), 1 failed: {by_n[999999999]['run_id']}"


def test_parallel_jobs_get_their_own_gpu_and_a_share_of_the_cpus():
    assert plan(job_num=3, n_jobs=2, n_gpus=2, cpus=16) == {"gpu": 1, "slot": 0, "threads": 8}
    assert plan(job_num=3, n_jobs=4, n_gpus=0, cpus=16) == {"gpu": None, "slot": None, "threads": 4}
    assert parallel_jobs(-1, cpus=6) == 6 and parallel_jobs(-2, cpus=6) == 5
    assert plan(job_num=0, n_jobs=-1, n_gpus=0, cpus=2)["threads"] == 1
    with claim_gpu(0, n_gpus=2) as first, claim_gpu(0, n_gpus=2) as second:
        assert {first, second} == {0, 1}  # the preferred GPU is held: the next job takes the free one


def test_jobs_per_gpu_lets_k_jobs_share_each_gpu_and_no_more(tmp_path, monkeypatch):
    monkeypatch.setattr("beft.launch.LOCK_DIR", tmp_path)
    # 8 parallel jobs on 2 GPUs, 4 per GPU: job j prefers GPU j % 2, slots fill GPU by GPU in turn.
    chosen = [plan(job_num=j, n_jobs=8, n_gpus=2, cpus=16, jobs_per_gpu=4) for j in range(8)]
    assert [(c["gpu"], c["slot"]) for c in chosen] == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2), (0, 3), (1, 3)]
    assert {c["threads"] for c in chosen} == {2}
    import contextlib

    with contextlib.ExitStack() as held:   # jobs handed out of order all land on a free slot: 2 per GPU here
        gpus = [held.enter_context(claim_gpu(0, n_gpus=2, slot=0, jobs_per_gpu=2)) for _ in range(4)]
        assert sorted(gpus) == [0, 0, 1, 1]
        assert len(list(tmp_path.glob("gpu*-slot*.lock"))) == 4


def test_slurm_launcher_config_composes():
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="config", return_hydra_config=True,
                            overrides=["experiment=table1", "hydra/launcher=slurm", "hydra.launcher.partition=gpu"])
    launcher = cfg.hydra.launcher
    assert "SlurmLauncher" in launcher._target_ and launcher.partition == "gpu" and launcher.gpus_per_node == 1
    assert cfg.hydra.sweeper.params.task.startswith("cola")


def test_wandb_runs_offline_and_every_run_is_finished(tmp_path, make_cfg, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from beft.errors import BeftError
    from beft.pipeline import run

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    quick = ["model=tiny-bert", "regime.n=32", "trainer.epochs=1", "logger=wandb", f"cache_dir={tmp_path / 'c'}"]
    with pytest.raises(BeftError):
        run(make_cfg(*quick, "regime.n=999999999"))
    assert wandb.run is None                     # the failed job's run was finished, not left for the next job
    record = run(make_cfg(*quick))
    assert record["status"] == "ok" and wandb.run is None
    runs = {p.parent.parent.name: p for p in (tmp_path / "runs").glob("*/wandb/offline-run-*")}
    assert len(runs) == 2                          # one wandb run per job, never shared
    for run_id, status in ((record["run_id"], "ok"), (next(r for r in runs if "n999999999" in r), "failed")):
        saved = json.loads(next(runs[run_id].rglob("result.json")).read_text())
        assert saved["status"] == status           # the final record travels with the wandb run
    images = {p.name.split("_")[0] for p in runs[record["run_id"]].rglob("*.png")}
    assert {"heatmap", "learning"} <= images


@pytest.fixture
def wandb_online(monkeypatch):
    """wandb in online mode with a well-formed key, its settings rebuilt from this environment."""
    wandb = pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    wandb.teardown()
    yield wandb
    wandb.teardown()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_wandb_online_without_its_server_logs_offline_and_says_so(tmp_path, make_cfg, wandb_online, monkeypatch,
                                                                  caplog):
    from beft.pipeline import run

    server = f"http://127.0.0.1:{closed_port()}"   # no network: nothing answers there
    monkeypatch.setenv("WANDB_BASE_URL", server)
    with caplog.at_level("WARNING", logger="beft"):
        record = run(make_cfg("model=tiny-bert", "method=fixed-v", "regime.n=32", "trainer.epochs=1", "logger=wandb",
                              "logger.mode=online", f"cache_dir={tmp_path / 'c'}"))
    assert record["status"] == "ok" and wandb_online.run is None
    (warning,) = [r.getMessage() for r in caplog.records if "wandb" in r.getMessage()]
    assert f"cannot reach {server}" in warning and "logging this run offline instead" in warning
    assert "wandb sync" in warning and "\n" not in warning
    assert list((tmp_path / "runs" / record["run_id"] / "wandb").glob("offline-run-*"))


def test_wandb_online_without_a_key_is_one_line(tmp_path, wandb_online, monkeypatch):
    """A key beft's check cannot see is missing (a netrc for another server): wandb's refusal is one line."""
    from beft.errors import BeftError
    from beft.loggers import make_logger
    from conftest import compose

    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    with socket.socket() as server:   # a server that is there (the run does not fall back to offline)
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        logger = make_logger(compose("logger=wandb", "logger.mode=online").logger)
        with pytest.raises(BeftError) as err:
            logger.start({"method": {"name": "fixed"}}, tmp_path / "run", "run")
    assert "\n" not in str(err.value) and str(err.value).startswith("logger=wandb logger.mode=online: ")
    assert "API key" in str(err.value) and "logger.mode=offline" in str(err.value)


def test_submitit_local_counts_every_job_and_exits_non_zero_on_failure(tmp_path):
    done = sweep(tmp_path, "model=tiny-bert", "method=fixed-v", "trainer.epochs=1", "trainer.progress=false",
                 "regime.n=32,999999999", "hydra/launcher=submitit_local")
    assert done.returncode == 1, done.stderr[-2000:]
    by_n = {r["config"]["regime"]["n"]: r for r in records(tmp_path)}
    assert by_n[32]["status"] == "ok" and by_n[999999999]["status"] == "failed"
    assert done.stdout.splitlines()[-1] == f"1 ok, 0 skipped (already done), 1 failed: {by_n[999999999]['run_id']}"
