"""Bad input: one line that names what is wrong and what is valid; nothing already done is lost."""
import subprocess
import sys

import pytest

from beft import config
from beft.errors import BeftError
from beft.pipeline import run
from beft.record import read_record
from conftest import REPO
from task_fixtures import ROWS


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("override,group,valid", [("model=gpt5", "model", "minilm"), ("task=squadx", "task", "sst2"),
                                                 ("method=magic", "method", "bitfit"),
                                                 ("method=fixed,magic", "method", "fixed")])
def test_unknown_group_option_lists_choices(override, group, valid):
    with pytest.raises(BeftError) as err:
        config.check_overrides([override, "seed=1"])
    message = one_line(err)
    assert f"unknown {group}" in message and valid in message


def test_cli_prints_one_line_for_an_unknown_option():
    proc = subprocess.run([sys.executable, "run.py", "model=gpt5"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown model 'gpt5'" in lines[0] and "minilm" in lines[0]


def test_unknown_bias_term(make_cfg):
    with pytest.raises(BeftError) as err:
        config.validate(make_cfg("method=fixed", "method.terms=[v,vv]"))
    assert "'vv'" in one_line(err) and "valid: q" in str(err.value)


def test_missing_data_dir_is_recorded_as_failed(make_cfg, tmp_path):
    cfg = make_cfg("model=tiny-bert", f"data_dir={tmp_path / 'nowhere'}")
    with pytest.raises(BeftError) as err:
        run(cfg)
    assert "nowhere" in one_line(err) and "SST-2/train.tsv" in str(err.value)
    records = list((tmp_path / "runs").glob("*/result.json"))
    assert len(records) == 1 and read_record(records[0])["status"] == "failed"


def test_data_dir_without_the_task_files(make_cfg, tmp_path):
    (tmp_path / "data" / "RTE").mkdir(parents=True)
    (tmp_path / "data" / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")
    with pytest.raises(BeftError) as err:
        run(make_cfg("model=tiny-bert", "task=rte", f"data_dir={tmp_path / 'data'}"))
    assert "RTE/dev.tsv" in one_line(err)


def test_regime_larger_than_the_split(make_cfg):
    with pytest.raises(BeftError) as err:
        run(make_cfg("model=tiny-bert", "task=rte", "regime.n=5000"))
    message = one_line(err)
    assert "5000" in message and f"({ROWS['RTE/train.tsv']} examples)" in message


@pytest.mark.parametrize("override,needle", [("regime.n=-3", "positive"), ("trainer.device=tpu9", "valid: auto"),
                                             ("trainer.precision=fp8", "valid: auto")])
def test_bad_values(make_cfg, override, needle):
    with pytest.raises(BeftError) as err:
        config.validate(make_cfg(override))
    assert needle in one_line(err)
