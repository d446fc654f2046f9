"""Shared fixtures: offline hub, the task files, tiny models and composed Hydra configs.

Two kinds of task files:
- `data_dir`: tests/data, small synthetic files in every reader's format (tests/task_fixtures.py writes them).
  The plumbing tests use these, so they run on a fresh clone; BEFT_DATA_DIR is pointed at them for the
  subprocesses (run.py) the tests start.
- `real_data_dir`: the real GLUE / SuperGLUE files ($BEFT_DATA_DIR, else ../shared/data beside the checkout;
  BEFT_TEST_DATA_FALLBACK=0 turns that fallback off). Only the tests of those files' counts and hashes, and of
  the committed records made on them, use it; they skip where the files are missing, and the run ends with a
  count of what skipped and why (written as JSON to $BEFT_SKIP_REPORT for .ci/run where that is set).
"""
import json
import os
from collections import Counter
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "data"


def _real_data_dir() -> Path:
    given = os.environ.get("BEFT_DATA_DIR")
    if given:
        return Path(given).expanduser().resolve()
    if os.environ.get("BEFT_TEST_DATA_FALLBACK", "1") == "0":
        return REPO / "tests" / "no-real-data"          # a path that never exists
    return (REPO.parent / "shared" / "data").resolve()


REAL_DATA_DIR = _real_data_dir()
HAS_REAL_DATA = (REAL_DATA_DIR / "SST-2" / "train.tsv").is_file()
NO_REAL_DATA = f"real task data not found at {REAL_DATA_DIR} (set BEFT_DATA_DIR to ../shared/data)"
# run.py started by a test reads its task files from here (beft.config.data_dir falls back to this variable).
os.environ["BEFT_DATA_DIR"] = str(FIXTURES)

needs_real_data = pytest.mark.skipif(not HAS_REAL_DATA, reason=NO_REAL_DATA)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The synthetic task files of tests/data (every reader's format, a few dozen rows per split)."""
    return FIXTURES


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real task files; the test skips where they are missing."""
    if not HAS_REAL_DATA:
        pytest.skip(NO_REAL_DATA)
    return REAL_DATA_DIR


def compose(*overrides: str, hydra_config: bool = False):
    """The run config as `python run.py <overrides>` would build it (with its `hydra` node if asked)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra_config)


@pytest.fixture
def make_cfg(tmp_path, data_dir):
    """Compose a config that writes into tmp_path and reads the synthetic task files."""
    def make(*overrides):
        return compose(f"out_dir={tmp_path / 'runs'}", f"data_dir={data_dir}", "trainer.progress=false",
                       *overrides)
    return make


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return str(longrepr[2] if isinstance(longrepr, tuple) else longrepr).removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter):
    """Say how many tests skipped and why, grouped by reason (CI fails where more skip than it allows)."""
    skipped = terminalreporter.stats.get("skipped", [])
    reasons = Counter(_skip_reason(r) for r in skipped)
    if reasons:
        terminalreporter.write_sep("-", f"{len(skipped)} skipped")
        for reason, count in reasons.most_common():
            terminalreporter.write_line(f"{count:4d}  {reason}")
    report = os.environ.get("BEFT_SKIP_REPORT")
    if report:
        passed = len(terminalreporter.stats.get("passed", []))
        Path(report).write_text(json.dumps({"skipped": len(skipped), "passed": passed, "reasons": dict(reasons)},
                                           indent=1))
