"""scripts/bench.py measures what it says: the trainable set of each mode (no timing is asserted)."""
import importlib.util

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", REPO / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("mode,trainable", [
    ("v", 2 * 32 + 32 * 2 + 2 + 32),                      # b_v in 2 layers + classifier + pooler bias
    ("lora", 2 * 2 * (8 * 32 + 32 * 8) + 32 * 2 + 2),     # r=8 on query and value + classifier
    ("full", None),
])
def test_bench_modes_train_the_right_parameters(bench, mode, trainable):
    row = bench.measure(mode, "tiny-bert", batch_size=2, seq_len=8, steps=1, warmup=0, device_name="cpu")
    assert row["mode"] == mode and row["step_ms"] > 0 and row["peak_extra_mib"] >= 0
    if trainable is not None:
        assert row["trainable"] == trainable
    else:
        assert row["trainable"] > 1_000_000  # every weight, embeddings included


def test_error_time_measures_the_error_line_of_each_bad_command(bench):
    result = bench.error_time(repeats=1)
    lines = {row["command"]: row["line"] for row in result["rows"]}
    assert lines["model=foo"].startswith("error: unknown model 'foo'")
    assert lines["method=fixed method.terms=[zz]"].startswith("error: unknown bias term 'zz'")
    assert lines["budget=types budget.k=0"].startswith("error: budget.k=0 is not valid")
    assert all(row["ratio"] > 0 for row in result["rows"])


def test_job_memory_reads_each_childs_own_peak(bench, tmp_path):
    """wait4's peak RSS is the child's own: a child holding 200 MiB more reads about 200 MiB more, and a child
    that holds little reads little, however much this (pytest, torch loaded) process holds."""
    import sys

    small, code = bench.peak_rss_mib([sys.executable, "-c", "b = b'x' * (100 * 2**20)"], tmp_path, tmp_path / "a.log")
    big, code2 = bench.peak_rss_mib([sys.executable, "-c", "b = b'x' * (300 * 2**20)"], tmp_path, tmp_path / "b.log")
    assert code == code2 == 0 and 180 < big - small < 260 and small < 150
