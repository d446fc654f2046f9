"""Shared fixtures: offline hub, the shared data directory, tiny models and composed Hydra configs."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("BEFT_DATA_DIR") or REPO.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "SST-2" / "train.tsv").exists():
        pytest.skip(f"task data not found at {DATA_DIR} (set BEFT_DATA_DIR)")
    return DATA_DIR


def compose(*overrides: str, hydra_config: bool = False):
    """The run config as `python run.py <overrides>` would build it (with its `hydra` node if asked)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra_config)


@pytest.fixture
def make_cfg(tmp_path, data_dir):
    """Compose a config that writes into tmp_path and reads the shared data."""
    def make(*overrides):
        return compose(f"out_dir={tmp_path / 'runs'}", f"data_dir={data_dir}", "trainer.progress=false",
                       *overrides)
    return make
