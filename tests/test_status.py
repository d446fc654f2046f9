"""`python -m beft.status`: a sweep's jobs as done / failed / invalid / missing, found where their runs write their
records and checked as the runs check them; counts per model × task × arm; the cost of the rest from a cost
table. And run.py's `-m ... --cfg job` (each job of the sweep) and `--info` in any position. Nothing trains."""
import json
import os
import subprocess
import sys

import pytest

from beft import fingerprint, jobs, status
from beft.record import record_key, run_id
from beft.resume import data_dir
from conftest import REPO

ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
SMOKE = ["experiment=smoke"]        # tiny-bert: task sst2,rte x 6 methods x seed 0,1 = 24 jobs


def record_of(job, status_="ok", **fields) -> dict:
    """The record the job's run would write (as beft.pipeline.run writes it), with `fields` on top."""
    config = jobs._plain(job.config)
    prints = fingerprint.of_run(config["model"], config["task"], data_dir(config))
    key = record_key(config, prints)
    record = {"key": key, "run_id": run_id(config, key), "status": status_, "config": config, "fingerprint": prints,
              "notes": []}
    if status_ == "ok":
        record.update(metrics={"main": {"name": "accuracy", "value": 0.5}}, trainable_params=1234)
    record.update(fields)
    return record


def write(out_dir, record: dict, text: str | None = None):
    folder = out_dir / record["run_id"]
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps(record) if text is None else text)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The smoke sweep in a temporary out_dir: job 0 ok, job 2 failed, job 4 tampered, job 6 torn, the rest
    missing; and one record of a run that is no job of the sweep."""
    out = tmp_path_factory.mktemp("status") / "runs"
    overrides = [*SMOKE, f"out_dir={out}"]
    found = jobs.compose_jobs(overrides)
    write(out, record_of(found[0]))
    write(out, record_of(found[2], "failed", error="Diverged: training loss is nan at step 3\nand more"))
    tampered = record_of(found[4])
    tampered["config"]["trainer"]["lr"] = 1.0      # edited after the run: its key no longer fits its config
    write(out, tampered)
    write(out, record_of(found[6]), text='{"key": "torn')
    other = record_of(found[8])
    other["config"]["seed"] = 7                    # another grid's run: a record of its own, no job of this sweep
    other["key"] = record_key(other["config"], other["fingerprint"])
    other["run_id"] = run_id(other["config"], other["key"])
    write(out, other)
    return overrides, out, found


def test_each_job_is_classified_from_its_record(sweep):
    overrides, out, found = sweep
    states = jobs.states(found)
    assert len(states) == 24 == len({s.run_id for s in states})
    assert [s.state for s in states[:8]] == ["done", "missing", "failed", "missing", "invalid", "missing",
                                             "invalid", "missing"]
    assert all(s.state == "missing" for s in states[8:])   # job 8's seed-7 twin is not job 8
    assert states[2].reason == "Diverged: training loss is nan at step 3"
    assert "is not the one its config and fingerprint give" in states[4].reason
    assert "not a readable JSON record" in states[6].reason
    assert jobs.strays(out, states) == 1


def test_status_agrees_with_the_run_on_what_is_done(sweep):
    """A job is `done` exactly where its run would skip it (beft.pipeline.done_record)."""
    from beft.pipeline import done_record

    _, _, found = sweep
    for job, state in zip(found[:8], jobs.states(found[:8])):
        config = jobs._plain(job.config)
        prints = fingerprint.of_run(config["model"], config["task"], data_dir(config))
        assert (done_record(config, record_key(config, prints), prints) is not None) == (state.state == "done"), \
            state


def _row(lines: list[str], model: str, task: str, arm: str) -> list[str]:
    (row,) = [line.split() for line in lines if line.split()[:3] == [model, task, arm]]
    return row[3:]


def test_the_report_counts_per_model_task_arm_and_costs_what_is_left(sweep, tmp_path, monkeypatch, capsys):
    overrides, out, found = sweep
    # A cost table for this out_dir's folder: fixed-v on sst2 timed (2 min), fixed-q on sst2 (30 min), head untimed.
    monkeypatch.setattr(status, "RUNS", out.parent)
    monkeypatch.setattr(status, "COST_TABLES", tmp_path)
    (tmp_path / f"{out.name}_cost.csv").write_text(
        "model,task,arm,runs,timed,median_min,min_min,max_min,sum_h\n"
        "tiny-bert,sst2,fixed-v,3,3,2.0,1.0,3.0,0.1\ntiny-bert,sst2,fixed-q,1,1,30.0,30.0,30.0,0.5\n"
        "tiny-bert,sst2,head,2,0,,,,0\n")
    assert status.main(overrides) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len([line for line in lines if line.startswith("  ")]) == 24        # one line per job
    (failed,) = [line for line in lines if line.split()[:1] == ["failed"]]
    assert failed.split()[1].startswith("tiny-bert-sst2-n32-fixed-q-s0-")
    assert failed.endswith(": Diverged: training loss is nan at step 3")
    # columns: jobs, done, failed, invalid, missing, estimate of what is left
    assert _row(lines, "tiny-bert", "sst2", "fixed-v") == ["2", "1", "0", "0", "1", "2.0", "min"]
    assert _row(lines, "tiny-bert", "sst2", "fixed-q") == ["2", "0", "1", "0", "1", "1.00", "h"]
    assert _row(lines, "tiny-bert", "sst2", "fixed-k") == ["2", "0", "0", "1", "1", "unknown"]
    assert _row(lines, "tiny-bert", "sst2", "head") == ["2", "0", "0", "0", "2", "unknown"]   # untimed: unknown
    assert "24 jobs: 1 done, 1 failed, 2 invalid, 20 missing" in lines
    left = next(line for line in lines if line.startswith("to run"))
    assert "23 jobs; ≈ 1.03 h for 3 of them" in left and "unknown for 20" in left
    assert any("also holds 1 record(s)" in line for line in lines)


def test_cells_the_sweeps_own_table_lacks_are_costed_from_another_experiments_table(sweep, tmp_path, monkeypatch,
                                                                                    capsys):
    """A new grid's cells were often timed in another experiment: their cost comes from there (the table with the
    most timed runs of the cell), marked *, while the sweep's own table still wins where it has the cell."""
    overrides, out, _ = sweep
    monkeypatch.setattr(status, "RUNS", out.parent)
    monkeypatch.setattr(status, "COST_TABLES", tmp_path)
    head = "model,task,arm,runs,timed,median_min,min_min,max_min,sum_h\n"
    (tmp_path / f"{out.name}_cost.csv").write_text(head + "tiny-bert,sst2,fixed-v,3,3,2.0,1.0,3.0,0.1\n")
    (tmp_path / "a_cost.csv").write_text(head + "tiny-bert,sst2,fixed-v,9,9,50.0,1,99,9\n"
                                                "tiny-bert,sst2,fixed-k,1,1,10.0,10.0,10.0,0.2\n")
    (tmp_path / "b_cost.csv").write_text(head + "tiny-bert,sst2,fixed-k,3,3,4.0,3.0,5.0,0.2\n")
    assert status.main(overrides) == 0
    lines = capsys.readouterr().out.splitlines()
    assert _row(lines, "tiny-bert", "sst2", "fixed-v") == ["2", "1", "0", "0", "1", "2.0", "min"]      # its own
    assert _row(lines, "tiny-bert", "sst2", "fixed-k") == ["2", "0", "0", "1", "1", "8.0", "min", "*"]  # b's 3 runs
    assert _row(lines, "tiny-bert", "sst2", "fixed-q")[-1] == "unknown"
    left = next(line for line in lines if line.startswith("to run"))
    assert "23 jobs; ≈ 10.0 min for 3 of them" in left and "unknown for 20" in left
    assert "1 from " in left and "2 (*) from another experiment's cost table" in left


def test_without_a_cost_table_the_cost_is_unknown(sweep, capsys):
    overrides, _, _ = sweep
    assert status.main(overrides) == 0
    left = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("to run"))
    assert "cost unknown" in left and "≈" not in left


def test_table1_lists_216_jobs(capsys):
    assert status.main(["experiment=table1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("experiment=table1: 216 jobs")
    assert len([line for line in lines if line.startswith("  ")]) == 216
    assert _row(lines, "bert-base-cased", "rte", "fixed-v")[0] == "9"      # 3 regimes x 3 seeds


@pytest.mark.parametrize("args,needle", [(["experiment=table9"], "unknown experiment 'table9'"),
                                         ([], "give one experiment=NAME"),
                                         (["experiment=smoke,local"], "give one experiment=NAME")])
def test_bad_input_is_one_line_naming_the_experiments_before_any_work(args, needle):
    code = ("import sys; from beft import status\nrc = status.main(%r)\n"
            "print(rc, sorted(m for m in ('torch', 'transformers') if m in sys.modules))" % (args,))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.split() == ["2", "[]"], proc.stdout + proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: ") and needle in line and "table1" in line and "smoke" in line


def run_py(*args):
    return subprocess.run([sys.executable, "run.py", *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=300)


def test_cfg_job_with_m_prints_every_job_of_the_sweep():
    proc = run_py("-m", *SMOKE, "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    headers = [line for line in proc.stdout.splitlines() if line.startswith("# job ")]
    assert len(headers) == 24
    assert headers[0] == "# job 0 (1 of 24): task=sst2 method=fixed-v seed=0 experiment=smoke"
    assert headers[-1] == "# job 23 (24 of 24): task=rte method=rand_uniform seed=1 experiment=smoke"
    configs = proc.stdout.split("# job ")[1:]
    assert "name: tiny-bert" in configs[0] and "seed: 0" in configs[0] and "- v" in configs[0]
    assert "name: rte" in configs[-1] and "seed: 1" in configs[-1] and "name: rand_uniform" in configs[-1]


def test_cfg_job_with_m_takes_the_flag_anywhere_and_a_package():
    proc = run_py("experiment=table1", "--cfg", "job", "-m", "-p", "regime")
    assert proc.returncode == 0, proc.stderr
    headers = [line for line in proc.stdout.splitlines() if line.startswith("# job ")]
    assert len(headers) == 216 and proc.stdout.count("# @package regime") == 216
    assert proc.stdout.count("name: medium") == 72 and "regime=medium" in headers[9]   # 3 methods x 3 seeds per regime


@pytest.mark.parametrize("args", [["-m", *SMOKE, "--info"], ["--info", *SMOKE], [*SMOKE, "-m", "--info", "config"],
                                  ["-m", "--info", *SMOKE, "seed=3"]])
def test_info_works_in_any_position(args):
    proc = run_py(*args)
    assert proc.returncode == 0, proc.stderr
    assert "Config search path" in proc.stdout and "Traceback" not in proc.stderr
