"""bf16 on the CPU (issue 41): autocast through oneDNN, trainables and optimizer state in fp32, frozen matrices
optionally in bf16, the record saying exactly what ran, and one line where the CPU would only emulate bf16."""
import json
import subprocess
import sys

import pytest
import torch

from beft import config, runtime
from beft.errors import BeftError
from beft.kinds import make_workload
from beft.pipeline import run
from beft.record import record_key
from conftest import REPO, compose

QUICK = ("model=tiny-bert", "task=sst2", "regime.n=32", "trainer.epochs=3", "method=fixed-v", "cache_dir=null",
         "trainer.lr=0.02")


@pytest.fixture
def native_bf16(monkeypatch):
    """A CPU that multiplies bf16 itself (whatever this machine is): no refusal, the record says native."""
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2", "avx512_bf16"})


@pytest.fixture
def emulated_bf16(monkeypatch):
    """An AVX2-only CPU."""
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx", "avx2", "fma"})


def losses(record: dict) -> list[float]:
    return [entry["train_loss"] for entry in record["metrics"]["history"]]


def test_a_bf16_run_records_bf16_and_tracks_the_fp32_run(make_cfg, native_bf16):
    fp32 = run(make_cfg(*QUICK))
    bf16 = run(make_cfg(*QUICK, "trainer.precision=bf16"))
    assert bf16["status"] == fp32["status"] == "ok"
    assert bf16["training"]["precision"] == "bf16" and bf16["training"]["autocast"] == "bf16"
    assert bf16["training"]["cpu_bf16"] == "native" and bf16["training"]["frozen_dtype"] == "fp32"
    assert fp32["training"]["autocast"] is None and "cpu_bf16" not in fp32["training"]
    assert bf16["key"] != fp32["key"] and bf16["training"]["key"] != fp32["training"]["key"]
    # bf16 products carry ~3 significant digits: the loss curve stays within a few percent of fp32's
    a, b = losses(fp32), losses(bf16)
    assert len(a) == len(b) == 3
    assert max(abs(x - y) / x for x, y in zip(a, b)) < 0.03, (a, b)
    assert a != b   # autocast did run: the products were rounded


def test_trainables_and_their_updates_stay_fp32_under_bf16(make_cfg, native_bf16):
    """Under autocast the products are bf16 but the parameters the optimizer moves, and their gradients, are fp32;
    with frozen_dtype=bf16 the frozen matrices are bf16 and the head, biases and norms are not."""
    spec = config.resolve(make_cfg(*QUICK, "trainer.precision=bf16", "trainer.frozen_dtype=bf16"))
    assert spec.frozen_dtype == "bf16"
    workload = make_workload(spec)
    model, _ = workload.new_model()
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert dtypes["bert.encoder.layer.0.attention.self.value.weight"] == torch.bfloat16
    assert dtypes["bert.embeddings.word_embeddings.weight"] == torch.bfloat16
    assert dtypes["bert.encoder.layer.0.attention.self.value.bias"] == torch.float32
    assert dtypes["bert.encoder.layer.0.output.LayerNorm.weight"] == torch.float32
    assert dtypes["classifier.weight"] == torch.float32
    batch = next(iter(workload.batches(workload.train_set, 8)))
    with runtime.torch.autocast("cpu", dtype=torch.bfloat16):
        loss = workload.loss(model, batch)
    loss.backward()
    grad = model.bert.encoder.layer[0].attention.self.value.bias.grad
    assert grad is not None and grad.dtype == torch.float32 and grad.abs().sum() > 0
    record = run(make_cfg(*QUICK, "trainer.precision=bf16", "trainer.frozen_dtype=bf16"))
    assert record["status"] == "ok" and record["training"]["frozen_dtype"] == "bf16"


@pytest.mark.parametrize("model", ["tiny-opt", "tiny-llama"])
def test_a_decoder_under_cpu_bf16_keeps_its_frozen_matrices_in_bf16_and_trains_fp32_biases(make_cfg, native_bf16,
                                                                                           model):
    """auto on the CPU: fp32 storage, bf16 products; frozen_dtype=bf16: the matrices (not the norms) in bf16."""
    quick = (f"model={model}", "task=sst2", "regime.n=8", "task.decoder.n_eval=8", "trainer.epochs=1",
             "method=fixed-v", "cache_dir=null", "trainer.precision=bf16")
    assert config.resolve(make_cfg(*quick)).frozen_dtype == "fp32"
    cfg = make_cfg(*quick, "trainer.frozen_dtype=bf16")
    workload = make_workload(config.resolve(cfg))
    model, _ = workload.new_model()
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert {d for n, d in dtypes.items() if "v_proj" in n and "bias" in n} == {torch.float32}
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert {d for n, d in dtypes.items() if "norm" in n.lower()} == {torch.float32}
    record = run(cfg)
    assert record["status"] == "ok" and record["training"]["frozen_dtype"] == "bf16"
    assert record["metrics"]["history"][-1]["train_loss"] > 0


def test_emulated_bf16_is_one_line_unless_allowed(make_cfg, emulated_bf16):
    with pytest.raises(BeftError) as err:
        config.resolve(make_cfg(*QUICK, "trainer.precision=bf16"))
    line = str(err.value)
    assert "\n" not in line and "emulated" in line and "trainer.allow_emulated_bf16=true" in line
    assert "trainer.precision=fp32" in line
    spec = config.resolve(make_cfg(*QUICK, "trainer.precision=bf16", "trainer.allow_emulated_bf16=true"))
    assert spec.precision == "bf16"
    record = run(make_cfg(*QUICK, "trainer.precision=bf16", "trainer.allow_emulated_bf16=true", "trainer.epochs=1"))
    assert record["training"]["cpu_bf16"] == "emulated"


def test_refusals_name_what_is_valid(make_cfg, native_bf16):
    cases = {("trainer.precision=fp16",): "valid here: auto, fp32, bf16",
             ("trainer.frozen_dtype=bf16",): "needs trainer.precision=bf16",
             ("trainer.precision=bf16", "trainer.frozen_dtype=bf16", "method=full"): "this method trains them"}
    for overrides, expected in cases.items():
        with pytest.raises(BeftError, match=expected):
            config.resolve(make_cfg(*QUICK, *overrides))


def test_the_new_knobs_at_their_defaults_keep_every_key():
    """trainer.frozen_dtype=auto and allow_emulated_bf16 at any value leave the record key as it was."""
    base = compose("model=tiny-bert")
    plain = json.loads(json.dumps(config.to_plain(base)))
    old = {**plain, "trainer": {k: v for k, v in plain["trainer"].items()
                                if k not in ("frozen_dtype", "allow_emulated_bf16")}}
    prints = {"code": "x"}
    assert record_key(plain, prints) == record_key(old, prints)
    allowed = {**plain, "trainer": {**plain["trainer"], "allow_emulated_bf16": True}}
    assert record_key(allowed, prints) == record_key(plain, prints)
    chosen = {**plain, "trainer": {**plain["trainer"], "frozen_dtype": "bf16"}}
    assert record_key(chosen, prints) != record_key(plain, prints)


def test_the_bench_rows_run_on_tiny_models(tmp_path):
    """scripts/bench_bf16.py --quick: every row of the committed table, for every variant, on tiny models."""
    out = tmp_path / "cpu_bf16.md"
    done = subprocess.run([sys.executable, "scripts/bench_bf16.py", "--quick", "--rounds", "1", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    table = [line for line in text.splitlines() if line.startswith("| tiny-")]
    assert len(table) == 4 * 3 and "not measured" not in text
    assert f"bf16 {runtime.cpu_bf16()}" in text
    assert all(line.endswith("1.00× |") for line in table if "| fp32 |" in line)
