"""docs/gpu.md is what scripts/gpu_plan.py writes from the memory plan (rerun the script after changing either)."""
import importlib.util

from conftest import REPO


def test_the_committed_gpu_page_is_the_plan_scripts_output():
    spec = importlib.util.spec_from_file_location("gpu_plan", REPO / "scripts" / "gpu_plan.py")
    gpu_plan = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_plan)
    text = gpu_plan.render()
    assert (REPO / "docs" / "gpu.md").read_text() == text, "docs/gpu.md is stale: run python scripts/gpu_plan.py"
    # OPT-6.7B b_v: its frozen weights in bf16 are 2 bytes per parameter (6.66 B parameters: 12.4 GiB)
    row = next(line for line in text.splitlines() if line.startswith("| OPT-6.7B | b_v |"))
    assert row.split("|")[4].strip() == "12.4"
