"""scripts/gpu_scale.py's CPU dry run: the GPU check's code path (every part, every job) on tiny shapes."""
import subprocess
import sys

from conftest import REPO


def test_the_gpu_scale_dry_run_runs_every_job(tmp_path):
    out = tmp_path / "gpu_scale.md"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_scale.py"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| A") or line.startswith("| B")
            or line.startswith("| C")]
    assert len(rows) == 11 and all("| ok |" in r for r in rows), rows
    text = out.read_text()
    assert "dry-run" in text and "metrics identical to the unsplit model's" in text
    assert text.count("adapter written") == 4 and "full fine-tuning's training tokens/s" in text
