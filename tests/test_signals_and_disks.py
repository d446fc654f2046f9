"""A full disk is one line, never a half-written file: a failed record where it still fits, no partial adapter,
no temp file left, and a cache that cannot be written is a warning while the run's record stands.

The disk is filled harmlessly and without privileges: every os.write and os.fsync of a file under the folders
named raises ENOSPC (beft.files syncs every file it writes, so Python's buffered writes fail there too), and
PEFT's save_pretrained writes half a file, then fails as a full disk makes it fail.
"""
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from beft.checks import WRITE_CHECK_BYTES, check_writable
from beft.errors import BeftError
from beft.files import DiskFull
from beft.pipeline import run
from beft.record import read_record
from conftest import REPO

QUICK = ("model=tiny-bert", "method=fixed-v", "regime.n=32", "trainer.epochs=1", "trainer.progress=false")
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd to tell files apart")

# Fills the disk, in the process that runs it, for every file whose path holds one of FULL (a list of strings;
# with DEEP, only files in a folder below that string: a run's folder under out_dir, not the write check beside it).
FILL = textwrap.dedent("""
    import errno, os

    def _full(fd):
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return False
        return any(part in path and (not DEEP or "/" in path.split(part, 1)[1]) for part in FULL)

    def _refuse(real):
        def call(fd, *args):
            if _full(fd):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(fd, *args)
        return call

    os.write, os.fsync = _refuse(os.write), _refuse(os.fsync)

    def _half_then_full(self, save_directory, *args, **kwargs):
        with open(os.path.join(save_directory, "adapter_model.safetensors"), "wb") as f:
            f.write(b"half an adapter")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if ADAPTER:
        import peft
        peft.PeftModel.save_pretrained = _half_then_full
""")


def fill(monkeypatch, *parts: str, deep: bool = False, adapter: bool = False) -> None:
    """In this process: the disk is full for files whose path holds one of `parts` (and for adapters, if asked)."""
    real = {"write": os.write, "fsync": os.fsync}
    namespace = {"FULL": parts, "DEEP": deep, "ADAPTER": False}
    exec(FILL, namespace)
    patched = {"write": os.write, "fsync": os.fsync}
    os.write, os.fsync = real["write"], real["fsync"]
    for name, function in patched.items():
        monkeypatch.setattr(os, name, function)
    if adapter:
        import peft

        monkeypatch.setattr(peft.PeftModel, "save_pretrained", namespace["_half_then_full"])


def leftovers(root: Path) -> list[str]:
    """Temp files and folders beft began and did not finish (their names start with a dot)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*"))


def test_the_write_check_writes_real_bytes_and_a_full_disk_fails_it(tmp_path, monkeypatch):
    sizes, real_write = [], os.write

    def counting(fd, data):
        sizes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting)
    check_writable(tmp_path / "runs")
    assert sum(sizes) == WRITE_CHECK_BYTES       # not an empty file: that succeeds on a full disk
    assert list(tmp_path.iterdir()) == []        # nothing left behind, not even the folder it made
    monkeypatch.undo()
    fill(monkeypatch, ".beft-write-check-")
    with pytest.raises(BeftError) as err:
        check_writable(tmp_path / "runs")
    assert "\n" not in str(err.value) and "has no room" in str(err.value) and "No space left" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def adapter_on_a_full_disk(tmp_path, make_cfg, monkeypatch):
    """The disk fills while the adapter is written: the run fails with one line, its record says so, and no
    partial adapter (nor its temp folder) is left."""
    fill(monkeypatch, adapter=True)
    with pytest.raises(DiskFull) as err:
        run(make_cfg(*QUICK, f"cache_dir={tmp_path / 'cache'}"))
    assert "\n" not in str(err.value) and "no space left on the disk to write" in str(err.value)
    assert str(err.value).split(" to write ")[1].split(" (")[0].endswith("/adapter")
    (record,) = [read_record(p) for p in (tmp_path / "runs").glob("*/result.json")]
    assert record["status"] == "failed" and "no space left" in record["error"] and "traceback" not in record
    assert not list((tmp_path / "runs").glob("*/adapter")) and leftovers(tmp_path / "runs") == []
    assert not hasattr(err.value, "record_lost")


def record_on_a_full_disk(tmp_path, make_cfg, monkeypatch):
    """The disk fills as a finished run writes its record: the error names the record (the result is lost, and
    the user hears it), and no temp record is left."""
    fill(monkeypatch, "/.result.json.")
    with pytest.raises(DiskFull) as err:
        run(make_cfg(*QUICK, f"cache_dir={tmp_path / 'cache'}"))
    assert str(err.value).startswith("no space left on the disk to write ") and "result.json" in str(err.value)
    assert not list((tmp_path / "runs").glob("*/result.json")) and leftovers(tmp_path / "runs") == []


def everything_on_a_full_disk(tmp_path, make_cfg, monkeypatch):
    """Nothing fits in the run folder: the run's own error is raised (not a chained second one), noting that no
    record could be written either."""
    fill(monkeypatch, str(tmp_path / "runs") + "/", deep=True, adapter=True)   # (the write check passes)
    with pytest.raises(DiskFull) as err:
        run(make_cfg(*QUICK, f"cache_dir={tmp_path / 'cache'}"))
    assert "/adapter" in str(err.value) and "result.json" in err.value.record_lost
    assert not list((tmp_path / "runs").glob("*/*")) and leftovers(tmp_path / "runs") == []


def cache_on_a_full_disk(tmp_path, make_cfg, monkeypatch):
    """A cache that cannot take the entry: a warning, and the run and its record stand."""
    fill(monkeypatch, str(tmp_path / "cache"))
    record = run(make_cfg(*QUICK, f"cache_dir={tmp_path / 'cache'}"))
    assert record["status"] == "ok" and read_record(tmp_path / "runs" / record["run_id"] / "result.json") == record
    assert leftovers(tmp_path / "cache") == [] and not list((tmp_path / "cache").rglob("*.safetensors"))


def cache_not_writable_at_all(tmp_path, make_cfg, monkeypatch):
    """A cache_dir that cannot even be made (its parent is a file): no lock, no entry, warnings; the record stands."""
    (tmp_path / "file").write_text("not a folder")
    record = run(make_cfg(*QUICK, f"cache_dir={tmp_path / 'file' / 'cache'}"))
    assert record["status"] == "ok" and (tmp_path / "runs" / record["run_id"] / "result.json").is_file()


FULL_DISK = {"adapter": adapter_on_a_full_disk, "record": record_on_a_full_disk,
             "everything": everything_on_a_full_disk, "cache": cache_on_a_full_disk,
             "cache not writable": cache_not_writable_at_all}
WARNS = {"cache": "not caching fits", "cache not writable": "cannot lock"}


@pytest.mark.parametrize("case", FULL_DISK)
def test_a_full_disk_is_one_line_and_leaves_no_partial_file(case, tmp_path, make_cfg, monkeypatch, caplog):
    with caplog.at_level(logging.WARNING, logger="beft"):
        FULL_DISK[case](tmp_path, make_cfg, monkeypatch)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if case in WARNS:
        assert any(WARNS[case] in w and "\n" not in w for w in warnings), warnings
        assert case != "cache not writable" or any("not caching fits" in w for w in warnings), warnings


def test_a_disk_that_fills_during_a_run_is_one_line_from_run_py(tmp_path):
    """run.py, with the run folder's disk full once the write check has passed (the disk fills during the run):
    exit 1, one line naming what could not be written and that no record could be either, no traceback."""
    runner = tmp_path / "full_disk_run.py"
    out = tmp_path / "out" / "runs"
    runner.write_text(f"FULL, DEEP, ADAPTER = [{str(out) + '/'!r}], True, True\n{FILL}\nimport runpy, sys\n"
                      "sys.argv = ['run.py', *sys.argv[1:]]\nrunpy.run_path('run.py', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, str(runner), f"out_dir={out}", f"hydra.run.dir={tmp_path / 'hydra'}",
                           f"cache_dir={tmp_path / 'cache'}", *QUICK], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=600)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines()
             if line.strip() and "][INFO] - " not in line]
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in proc.stdout + proc.stderr, lines
    assert "no space left on the disk to write" in lines[0] and "/adapter" in lines[0], lines[0]
    assert "no record could be written either" in lines[0] and "result.json" in lines[0], lines[0]
    assert not list(out.glob("*/adapter")) and leftovers(out) == []
