"""A shared cache_dir / out_dir cannot be turned against its users, and what beft reads back is checked, not trusted.

Each hole the second hostile round found is reproduced harmlessly: a planted pickle that would create a marker
file, a lock symlink and a plot symlink to a victim file, names that climb out of out_dir; edited, moved and
flipped records; cache entries that are not the training asked for; a stopped lock holder; a local model folder
whose weights changed in the middle.
"""
import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from omegaconf import OmegaConf

from beft import file_hashes, files
from beft import fingerprint
from beft.cache import Cache
from beft.errors import BeftError
from beft.file_lock import LockError, UnsafeLock, exclusive
from beft.fit import cached_fit, fit, training_inputs
from beft.fingerprint import digest
from beft.pipeline import run, run_id
from beft.record import record_key
from beft.record_check import distrust
from beft.report.store import read_store
from beft.resume import DoneRecords, look_up
from beft.trainable import Scope
from conftest import REPO, compose
from synthetic import record as synthetic_record, rekey

QUICK = ("model=tiny-bert", "regime.n=32", "trainer.epochs=1", "trainer.progress=false")
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


@pytest.fixture(scope="module")
def base(tmp_path_factory, data_dir):
    """A fixed-v and a fixed-q run in one experiment folder, their trainings cached (the cases reuse them)."""
    root = tmp_path_factory.mktemp("base")
    old = os.umask(0o022)
    try:
        records = {arm: run(quick_cfg(data_dir, root / "runs" / "exp", root / "cache", method=arm))
                   for arm in ("fixed-v", "fixed-q")}
    finally:
        os.umask(old)
    return root, records


def quick_cfg(data_dir, out_dir, cache_dir, *overrides, method="fixed-v"):
    return compose(f"out_dir={out_dir}", f"data_dir={data_dir}", f"cache_dir={cache_dir}", *QUICK, f"method={method}",
                   *overrides)


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --- 1. Security: what another user can do through a shared cache_dir or out_dir ---------------------------------

class Bomb:
    """Unpickling this creates `marker`: a harmless stand-in for os.system(...)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def planted_pickle(tmp_path, data_dir, base, caplog):
    _, records = base
    key = records["fixed-v"]["training"]["key"]
    payload = pickle.dumps(Bomb(tmp_path / "proof"))
    pickle.loads(payload)
    assert (tmp_path / "proof").exists()                      # the payload is live: unpickled, it writes its file
    fits = tmp_path / "cache" / "fits"
    fits.mkdir(parents=True)
    bomb = pickle.dumps(Bomb(tmp_path / "marker"))
    (fits / f"{key}.pt").write_bytes(bomb)                    # where beft < this version looked
    (fits / f"{key}.safetensors").write_bytes(bomb)           # and where it looks now
    record = run(quick_cfg(data_dir, tmp_path / "runs", tmp_path / "cache"))
    assert not (tmp_path / "marker").exists()
    assert record["status"] == "ok" and record["training"]["reused"] is False   # a miss: trained again
    assert record["metrics"]["final"] == records["fixed-v"]["metrics"]["final"]
    assert any("is not a beft cache entry" in r.getMessage() for r in caplog.records)


def lock_symlink(tmp_path, data_dir, base, caplog):
    _, records = base
    victim = tmp_path / "victim.txt"
    victim.write_text("the victim's notes\n")
    fits = tmp_path / "cache" / "fits"
    fits.mkdir(parents=True)
    (fits / f"{records['fixed-v']['training']['key']}.lock").symlink_to(victim)
    record = run(quick_cfg(data_dir, tmp_path / "runs", tmp_path / "cache"))
    assert victim.read_text() == "the victim's notes\n"
    assert record["status"] == "ok"
    assert any("is a symbolic link" in r.getMessage() for r in caplog.records)
    with pytest.raises(UnsafeLock, match="symbolic link"):   # sweep and GPU locks: one line, the victim untouched
        with exclusive(fits / f"{records['fixed-v']['training']['key']}.lock", "waiting"):
            pass
    assert victim.read_text() == "the victim's notes\n"


def plot_symlink(tmp_path, data_dir, base, caplog):
    root, records = base
    victim, victim_dir = tmp_path / "victim.txt", tmp_path / "victim_dir"
    victim.write_text("the victim's notes\n")
    victim_dir.mkdir()
    cfg = quick_cfg(data_dir, tmp_path / "runs", root / "cache", "logger=csv")
    prints = fingerprint.of_run(cfg.model, cfg.task, str(data_dir))
    run_dir = tmp_path / "runs" / run_id(cfg, record_key(cfg, prints))
    run_dir.mkdir(parents=True)
    for name in ("learning_curve.png", "result.json", "history.csv"):
        (run_dir / name).symlink_to(victim)
    (run_dir / "adapter").symlink_to(victim_dir, target_is_directory=True)
    record = run(cfg)
    assert record["status"] == "ok"
    assert victim.read_text() == "the victim's notes\n" and list(victim_dir.iterdir()) == []
    for name in ("learning_curve.png", "result.json", "history.csv", "adapter"):
        assert not (run_dir / name).is_symlink(), name    # replaced by the run's own file, never written through
    assert (run_dir / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def traversing_name(tmp_path, data_dir, base, caplog):
    out = tmp_path / "a" / "b" / "runs"
    for name in ("../../escaped", str(tmp_path / "abs" / "escaped")):
        cfg = quick_cfg(data_dir, out, tmp_path / "cache", f"model.name={name}")
        with pytest.raises(BeftError) as err:
            run(cfg)                                          # a sweep's job: still nothing written
        assert "\n" not in str(err.value) and "model.name=" in str(err.value) and "'/'" in str(err.value)
    assert tree(tmp_path) == []


SECURITY = {"planted pickle": planted_pickle, "lock symlink": lock_symlink, "plot symlink": plot_symlink,
            "traversing name": traversing_name}


@pytest.mark.parametrize("hole", SECURITY)
def test_a_shared_disk_cannot_be_turned_against_its_user(hole, tmp_path, data_dir, base, caplog):
    with caplog.at_level(logging.WARNING, logger="beft"):
        SECURITY[hole](tmp_path, data_dir, base, caplog)


def cli(tmp_path, *args):
    out = tmp_path / "out"
    return subprocess.run([sys.executable, "run.py", f"out_dir={out / 'runs'}", f"hydra.run.dir={out / 'hydra'}",
                           f"hydra.sweep.dir={out / 'sweep'}", f"cache_dir={out / 'cache'}", *QUICK, *args],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)


# Checked before anything runs (TMP: this test's folder, so an absolute name would land in it); a term that is
# not a plain name is an unknown term, refused as such.
ONE_LINE = {"model.name=../../escaped": "model.name='../../escaped'", "model.name=TMP/escaped": "model.name='TMP/",
            "task.name=..": "task.name='..'", "method.terms=[v/../x]": "'v/../x'",
            "out_dir=": "out_dir is empty", "lock_timeout=5": "lock_timeout=5"}


@pytest.mark.parametrize("override", ONE_LINE)
def test_names_that_become_paths_are_one_line_before_anything_runs(override, tmp_path):
    proc = cli(tmp_path, "method=fixed-v", override.replace("TMP", str(tmp_path)))
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert ONE_LINE[override].replace("TMP", str(tmp_path)) in lines[0], lines[0]
    assert tree(tmp_path) == []


def test_run_files_follow_the_umask_and_an_adapter_is_whole_or_absent(base, tmp_path):
    root, records = base
    run_dir = root / "runs" / "exp" / records["fixed-v"]["run_id"]
    adapter = run_dir / "adapter"
    assert adapter.stat().st_mode & 0o777 == 0o755              # written under umask 022 (mkdtemp alone: 0700)
    assert {p.stat().st_mode & 0o777 for p in adapter.iterdir()} == {0o644}   # PEFT alone: safetensors 0600
    for name in ("result.json", "learning_curve.png"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o644
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".")] == []   # no temp left behind
    # A write that fails half-way leaves the old folder as it was (here: none) and no temp folder.
    target = tmp_path / "adapter"
    with pytest.raises(RuntimeError):
        with files.atomic_folder(target) as folder:
            (folder / "adapter_config.json").write_text("{}")
            raise RuntimeError("disk full")
    assert tree(tmp_path) == []
    target.mkdir()
    (target / "old").write_text("old")
    with files.atomic_folder(target) as folder:
        (folder / "new").write_text("new")
    assert tree(tmp_path) == ["adapter", "adapter/new"]


# --- 2. Records are checked on resume and in `make tables` ----------------------------------------------------------

def edited_metric(records, path):
    record = json.loads(path.read_text())
    record["metrics"]["main"]["value"] = 0.97
    record["key"] = "0" * 16
    return record, "its key 0000000000000000 is not the one"


def moved_record(records, path):
    return dict(records["fixed-q"]), "is not the name of its folder"


def flipped_to_ok(records, path):
    record = json.loads(path.read_text())
    for field in ("metrics", "trainable_params", "adapter", "training"):
        record.pop(field)
    record.update(status="failed", error="RuntimeError: CUDA error")   # what a failed record holds
    record["status"] = "ok"                                            # ... flipped by hand
    return record, "it is ok but carries an error"


def results_version_99(records, path):
    record = json.loads(path.read_text())
    record["fingerprint"]["code"] = {"beft": "9.9.9", "results_version": 99}
    return record, "its key"


TAMPERED = {"edited metric, zeroed key": edited_metric, "fixed-q record in the fixed-v folder": moved_record,
            "failed flipped to ok": flipped_to_ok, "results_version 99": results_version_99}


@pytest.mark.parametrize("case", TAMPERED)
def test_a_record_that_does_not_check_out_is_rerun_and_left_out_of_tables(case, base, tmp_path, data_dir, caplog):
    root, records = base
    shutil.copytree(root / "runs", tmp_path / "runs")
    path = tmp_path / "runs" / "exp" / records["fixed-v"]["run_id"] / "result.json"
    tampered, reason = TAMPERED[case](records, path)
    path.write_text(json.dumps(tampered))
    with caplog.at_level(logging.WARNING, logger="beft"):
        store = read_store(tmp_path / "runs")
        assert [u["path"] for u in store.untrusted] == [str(path.relative_to(tmp_path / "runs"))]
        assert reason in store.untrusted[0]["reason"]
        assert list(store.runs["run_id"]) == [records["fixed-q"]["run_id"]]   # the table holds only the good one
        assert any("leaving out" in r.getMessage() and records["fixed-v"]["run_id"] in r.getMessage()
                   for r in caplog.records)
        caplog.clear()
        cfg = quick_cfg(data_dir, tmp_path / "runs" / "exp", root / "cache")
        found = look_up(OmegaConf.to_container(cfg, resolve=True))   # what `make status` is told
        assert found.state == "invalid" and reason in found.reason
        assert DoneRecords().find(cfg) is None   # the SLURM submit host submits it again, as the run redoes it
        again = run(cfg)
    assert "skipped" not in again and again["status"] == "ok"              # rerun, not trusted
    assert again["metrics"] == records["fixed-v"]["metrics"] and again["training"]["reused"] is True
    warned = [r.getMessage() for r in caplog.records if "not trusting" in r.getMessage()]
    assert len(warned) == 1 and str(path) in warned[0] and reason in warned[0]
    assert distrust(json.loads(path.read_text()), path.parent.name) is None   # the rerun wrote a sound record
    if case == "results_version 99":   # the same claim with its key and run id made to match: other code's
        consistent = rekey(synthetic_record("tiny-bert", "sst2", "fixed-v", 0, 0.9))
        consistent["fingerprint"]["code"] = {"beft": "9.9.9", "results_version": 99}
        assert "made by other code" in distrust(rekey(consistent))


def test_tables_read_run_py_flat_layout_as_one_experiment(tmp_path):
    for seed in range(3):
        for arm in ("fixed-v", "fixed-q"):
            rec = synthetic_record("minilm", "sst2", arm, seed, 0.8)
            (tmp_path / rec["run_id"]).mkdir()
            (tmp_path / rec["run_id"] / "result.json").write_text(json.dumps(rec))
    store = read_store(tmp_path)
    assert len(store.runs) == 6 and set(store.runs["experiment"]) == {""}


# --- 3. Cache entries: a statement checked against the request, never unpickled ---------------------------------

@pytest.fixture(scope="module")
def cached(tmp_path_factory, data_dir):
    """A fixed-v and an all-bias training in a cache, and what determined the fixed-v one."""
    from beft import config
    from beft.encoder import EncoderWorkload

    root = tmp_path_factory.mktemp("cached")
    cfg = quick_cfg(data_dir, root / "runs", root / "cache")
    workload = EncoderWorkload(config.resolve(cfg))
    settings = config.resolve(cfg).settings
    cache = Cache(root / "cache")
    scopes = {"v": Scope("targets", workload.bias_map().cells(["v"])), "all": Scope("all_biases")}
    fits = {name: fit(workload, scope, settings, cache)[0] for name, scope in scopes.items()}
    inputs = {name: training_inputs(workload, scope, settings) for name, scope in scopes.items()}
    return cache, fits, inputs, scopes


def entry_path(cache, inputs):
    return cache.root / "fits" / f"{digest(inputs)}.safetensors"


def statement_of(path):
    data = path.read_bytes()
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    return json.loads(header["__metadata__"]["beft"]), safetensors.torch.load(data)


def another_training(cache, fits, inputs, path):
    shutil.copy(entry_path(cache, inputs["all"]), path)    # the bitfit training under the fixed-v name
    return "its key, determined_by.scope differ"


def count_disagrees(cache, fits, inputs, path):
    statement, tensors = statement_of(path)
    statement["entry"]["trainable"] += 1
    path.write_bytes(safetensors.torch.save(tensors, metadata={"beft": json.dumps(statement)}))
    return "trainable parameters"


def torn(cache, fits, inputs, path):
    path.write_bytes(path.read_bytes()[:-100])
    return "is not a beft cache entry"


def foreign_safetensors(cache, fits, inputs, path):
    path.write_bytes(safetensors.torch.save({"w": torch.zeros(2)}))
    return "is not a beft cache entry"


def wrong_structure(cache, fits, inputs, path):
    statement, tensors = statement_of(path)
    statement["entry"]["history"] = "0.99"
    path.write_bytes(safetensors.torch.save(tensors, metadata={"beft": json.dumps(statement)}))
    return "does not hold a whole training (its history is str)"


def symlink(cache, fits, inputs, path):
    elsewhere = path.with_name("elsewhere")
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    return "symbolic link"


def fifo(cache, fits, inputs, path):
    path.unlink()
    os.mkfifo(path)
    return "not a regular file"


ENTRIES = {"another training": another_training, "count disagrees": count_disagrees, "torn": torn,
           "foreign safetensors": foreign_safetensors, "wrong structure": wrong_structure, "symlink": symlink,
           "fifo": fifo}


@pytest.mark.parametrize("case", ENTRIES)
def test_a_cache_entry_that_is_not_the_training_asked_for_is_a_miss_with_one_warning(case, cached, tmp_path,
                                                                                     caplog):
    cache, fits, inputs, scopes = cached
    mine = Cache(tmp_path / "cache")
    path = entry_path(mine, inputs["v"])
    path.parent.mkdir(parents=True)
    shutil.copy(entry_path(cache, inputs["v"]), path)
    shutil.copy(entry_path(cache, inputs["all"]), entry_path(mine, inputs["all"]))
    hit = cached_fit(mine, digest(inputs["v"]), inputs["v"], scopes["v"])          # the untouched entry: a hit
    assert hit.history == fits["v"].history and hit.trainable == fits["v"].trainable
    assert set(hit.state) == set(fits["v"].state)
    assert all(torch.equal(hit.state[n], t) for n, t in fits["v"].state.items())
    needle = ENTRIES[case](cache, fits, inputs, path)
    with caplog.at_level(logging.WARNING, logger="beft"):
        assert cached_fit(mine, digest(inputs["v"]), inputs["v"], scopes["v"]) is None
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and needle in warned[0], warned


def test_an_all_bias_training_keeps_its_snapshots_through_the_cache(cached):
    cache, fits, inputs, scopes = cached
    back = cached_fit(cache, digest(inputs["all"]), inputs["all"], scopes["all"])
    assert sorted(back.snapshots) == sorted(fits["all"].snapshots) and back.snapshots    # int steps, as trained
    for step, state in fits["all"].snapshots.items():
        assert all(torch.equal(back.snapshots[step][n], t) for n, t in state.items())
    assert back.trainable == sum(t.numel() for t in back.state.values())


def test_a_cache_folder_planted_as_a_link_gets_nothing_written_through_it(tmp_path, caplog):
    elsewhere = tmp_path / "victim_dir"
    elsewhere.mkdir()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "fits").symlink_to(elsewhere, target_is_directory=True)
    cache = Cache(tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="beft"):
        with cache.claim("fits", "k" * 16):
            cache.put("fits", "k" * 16, {"a": 1}, {"history": []}, {"w": torch.zeros(1)})
    assert list(elsewhere.iterdir()) == []
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and "without the lock" in warned[0] and "not caching fits" in warned[1], warned


# --- 4. Locks: never through a link, the holder named, a stopped holder given up on --------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from beft.file_lock import exclusive
with exclusive(Path(sys.argv[1]), timeout=float(sys.argv[2])):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def hold(lock: Path, seconds: float, timeout: float) -> subprocess.Popen:
    """Another process holding `lock` for `seconds` (its heartbeat every timeout / 4 seconds)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), str(timeout), str(seconds)], env=ENV,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_waiter_names_the_holder_and_gives_up_on_a_stopped_one_but_not_on_a_live_one(tmp_path, caplog):
    lock = tmp_path / "x.lock"
    live = hold(lock, seconds=2.5, timeout=0.8)
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="beft"):
        with exclusive(lock, "waiting for x", timeout=0.8) as held:   # alive: its heartbeat is progress
            assert held is True and time.monotonic() - started > 1.6     # waited through twice its limit
    live.wait()
    assert any(f"waiting for x (lock {lock} held by pid {live.pid} on host" in r.getMessage() for r in caplog.records)
    stopped = hold(lock, seconds=120, timeout=0.8)
    os.kill(stopped.pid, signal.SIGSTOP)                                 # a stopped job, a hung NFS client
    try:
        started = time.monotonic()
        with pytest.raises(LockError) as err:
            with exclusive(lock, "waiting for x", timeout=1.0):
                pytest.fail("took a lock a stopped process holds")
        assert 1.0 < time.monotonic() - started < 10
        message = str(err.value)
        assert "\n" not in message and f"pid {stopped.pid} on host" in message and "delete the lock file" in message
    finally:
        os.kill(stopped.pid, signal.SIGCONT)
        stopped.kill()
        stopped.wait()
    with exclusive(lock, "waiting", timeout=1.0) as held:              # the holder died: its lock went with it
        assert held is True and json.loads(lock.read_text())["pid"] == os.getpid()


# --- 5. Local weights are identified by their content ------------------------------------------------------------

def test_a_local_model_folder_is_identified_by_every_byte_of_every_file(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("BEFT_HASH_INDEX", str(tmp_path / "home" / "index.json"))
    monkeypatch.setattr(file_hashes, "_SEEN", {})
    monkeypatch.setattr(file_hashes, "_INDEX", None)
    hashed = []
    real_sha256 = file_hashes._sha256
    monkeypatch.setattr(file_hashes, "_sha256", lambda path: hashed.append(path) or real_sha256(path))
    model = tmp_path / "model"
    (model / "1_Pooling").mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "bert"}')
    (model / "model.safetensors").write_bytes(bytes(range(256)) * (5 << 12))       # 5 MiB
    (model / "1_Pooling" / "config.json").write_text('{"mean": true}')

    def key():
        cfg = compose(f"data_dir={data_dir}", "model=minilm", f"model.path={model}", "method=fixed-v")
        return record_key(cfg, fingerprint.of_run(cfg.model, cfg.task, str(data_dir)))

    first = key()
    assert len(hashed) == 3 and key() == first and len(hashed) == 3   # computed once per process ...
    monkeypatch.setattr(file_hashes, "_SEEN", {})
    monkeypatch.setattr(file_hashes, "_INDEX", None)
    assert key() == first and len(hashed) == 3                         # ... and once per machine (the index)
    with open(model / "model.safetensors", "r+b") as f:                # 4 KiB of zeros in the middle
        f.seek(5 << 19)
        f.write(bytes(4096))
    middle = key()
    assert middle != first
    (model / "1_Pooling" / "config.json").write_text('{"mean": false}')
    assert key() not in (first, middle)                                 # subfolders count
    shutil.copytree(model, tmp_path / "copy")
    cfg = compose(f"data_dir={data_dir}", "model=minilm", f"model.path={tmp_path / 'copy'}", "method=fixed-v")
    # where the folder sits does not matter
    assert record_key(cfg, fingerprint.of_run(cfg.model, cfg.task, str(data_dir))) == key()
    assert (tmp_path / "home" / "index.json").is_file()                 # the user's own index, not the cache_dir
