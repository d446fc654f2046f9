"""A sweep tells the truth about itself: its summary line and exit code, Ctrl-C, record permissions, and a table
that survives two ok records in one cell."""
import os
import signal
import subprocess
import sys
import time

import pytest

from beft.pipeline import run
from beft.record import read_record, write_json_atomic
from beft.report import make_tables
from beft.report.store import read_store
from beft.sweep import summary_line
from conftest import REPO
from synthetic import record, rekey, write

ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
QUICK = ["model=tiny-bert", "method=fixed-v", "regime.n=32", "trainer.epochs=1", "trainer.progress=false"]


def command(tmp_path, *args):
    return [sys.executable, "run.py", f"out_dir={tmp_path / 'runs'}", f"hydra.run.dir={tmp_path / 'hydra'}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}", f"cache_dir={tmp_path / 'cache'}", *args]


def records(tmp_path):
    return {r["config"]["trainer"]["lr"]: r for r in map(read_record, (tmp_path / "runs").glob("*/result.json"))}


def test_a_sweep_with_a_failing_job_exits_non_zero_with_the_summary_line(tmp_path):
    cmd = command(tmp_path, "-m", *QUICK, "trainer.lr=1e-3,1e6")
    first = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    by_lr = records(tmp_path)
    assert first.returncode == 1, first.stderr[-2000:]
    assert by_lr[1e-3]["status"] == "ok" and by_lr[1e6]["status"] == "failed"
    assert first.stdout.splitlines()[-1] == f"1 ok, 0 skipped (already done), 1 failed: {by_lr[1e6]['run_id']}"
    again = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 1   # the failed job is retried (and fails again); the ok one is skipped
    assert again.stdout.splitlines()[-1] == f"0 ok, 1 skipped (already done), 1 failed: {by_lr[1e6]['run_id']}"


def test_summary_line_counts_every_outcome():
    outcomes = [{"status": s, "run_id": f"r{i}"} for i, s in enumerate(["ok", "skipped", "failed", "ok",
                                                                         "interrupted", "failed"])]
    assert summary_line(outcomes) == "2 ok, 1 skipped (already done), 2 failed: r2, r5; 1 interrupted: r4"
    assert summary_line([]) == "0 ok, 0 skipped (already done), 0 failed"


def test_a_skipped_job_is_told_from_an_ok_one(make_cfg, tmp_path):
    cfg = make_cfg(*QUICK, f"cache_dir={tmp_path / 'cache'}")
    first = run(cfg)
    again = run(cfg)
    assert "skipped" not in first and again["skipped"] is True and again["created"] == first["created"]
    assert "skipped" not in read_record(tmp_path / "runs" / first["run_id"] / "result.json")  # never written


def test_ctrl_c_gives_an_interrupted_record_and_one_line(tmp_path):
    # SIGINT back to its default in the child, as in a terminal: a test run started in the background by a
    # non-interactive shell (`cmd &`, nohup) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
    proc = subprocess.Popen(command(tmp_path, *QUICK, "regime.n=256", "trainer.epochs=500"), cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "cache").glob("fits/*.lock")):  # training has begun
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in out + err
    said = [line for line in (out + err).splitlines() if "interrupted" in line.lower()]
    assert len(said) == 1 and "resume" in said[0]
    (rec,) = [read_record(p) for p in (tmp_path / "runs").glob("*/result.json")]
    assert rec["status"] == "interrupted" and rec["run_id"] in said[0]


def test_an_interrupted_record_is_read_as_not_ok(make_cfg, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("beft.pipeline.fit", interrupted)
    with pytest.raises(KeyboardInterrupt) as err:
        run(make_cfg(*QUICK, f"cache_dir={tmp_path / 'cache'}"))
    store = read_store(tmp_path)
    assert store.skipped == [] and list(store.runs["status"]) == ["interrupted"]
    assert store.runs["run_id"][0] == err.value.run_id
    report = make_tables(tmp_path, REPO / "results" / "paper", tmp_path / "tables", tmp_path / "figures",
                         with_figures=False)
    assert report.store.runs["status"].tolist() == ["interrupted"]
    assert "| runs | 0 | 1 |" in (tmp_path / "tables" / "summary.md").read_text()


def test_records_are_written_with_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "result.json", {"a": 1})
        os.umask(0o077)
        write_json_atomic(tmp_path / "private.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "result.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600


def test_two_ok_records_in_one_cell_warn_once_and_the_table_is_written(tmp_path, caplog):
    runs = tmp_path / "runs"
    for seed in range(3):
        for arm, value in (("fixed-v", 0.85), ("fixed-q", 0.80)):
            write(runs, "table1", record("bert-base-cased", "sst2", arm, seed, value + seed / 100))
    stray = record("bert-base-cased", "sst2", "fixed-v", 0, 0.10)   # the same cell under another key
    stray["config"]["budget"] = {"name": "types", "k": 2}
    stray = rekey({**stray, "created": "2026-02-01T00:00:00+00:00"})
    write(runs, "table1", stray)
    original = record("bert-base-cased", "sst2", "fixed-v", 0, 0.85)["run_id"]
    with caplog.at_level("WARNING", logger="beft"):
        make_tables(runs, REPO / "results" / "paper", tmp_path / "tables", tmp_path / "figures", with_figures=False)
    warnings = [r.getMessage() for r in caplog.records if "one table cell" in r.getMessage()]
    assert len(warnings) == 1 and stray["run_id"] in warnings[0] and original in warnings[0]
    assert warnings[0].endswith(f"the tables use {stray['run_id']} (the newest)")
    table = (tmp_path / "tables" / "table1.md").read_text()
    assert "| 61.00 ± 44.17 (3) |" in table   # b_v over seeds: 0.10 (the newest), 0.86, 0.87
    assert (tmp_path / "tables" / "table1_paired.md").exists()


def test_two_sweeps_started_in_the_same_second_get_folders_of_their_own(monkeypatch):
    """Each sweep's jobs file lives in its sweep folder: a shared folder would mix (and erase) two sweeps' outcomes."""
    import datetime as dt

    import hydra.core.utils
    from omegaconf import OmegaConf

    from conftest import compose

    folders = []
    for microsecond in (100_000, 900_000):     # two processes, the same wall-clock second
        class Clock(dt.datetime):
            @classmethod
            def now(cls, tz=None):
                return dt.datetime(2026, 12, 2, 3, 15, 33, microsecond)
        monkeypatch.setattr(hydra.core.utils, "datetime", Clock)
        hydra.core.utils.setup_globals()       # Hydra's `now` resolver, reading the patched clock
        cfg = compose(hydra_config=True)
        folders.append((OmegaConf.select(cfg, "hydra.sweep.dir"), OmegaConf.select(cfg, "hydra.run.dir")))
    (sweep_a, run_a), (sweep_b, run_b) = folders
    assert "2026-12-02/03-15-33" in sweep_a and sweep_a != sweep_b and run_a != run_b
