"""End-to-end runs on the synthetic task files (tests/data): the record, determinism, the b_k fact, and training reuse."""
import json
import threading
import time

import numpy as np
import pytest
import torch

from beft.cache import Cache
from beft.fit import fit, training_key
from beft.pipeline import run
from beft.record import RECORD
from beft.trainable import Scope
from beft.encoder import EncoderWorkload
from beft import config
from task_fixtures import ROWS

QUICK = ("regime.n=48", "trainer.epochs=2", "trainer.batch_size=16")
FIXED = ("method=fixed", *QUICK)


def test_minilm_v_run_writes_a_complete_record(make_cfg, tmp_path):
    record = run(make_cfg("model=minilm", "task=sst2", "method.terms=[v]", *FIXED))
    assert record["status"] == "ok"
    assert record["trainable_params"] == 6 * 384 + 384 + 2 * 384 + 2  # b_v in 6 layers + pooler bias + classifier
    assert record["n_train"] == 48 and record["n_eval"] == {"validation": ROWS["SST-2/dev.tsv"]}
    assert 0.0 <= record["metrics"]["main"]["value"] <= 1.0
    assert [e["epoch"] for e in record["metrics"]["history"]] == [0, 1]
    assert record["env"]["data"]["kind"] == "local" and record["env"]["model"]["kind"] == "package"
    assert record["env"]["host"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()   # AVX2, AVX512...
    assert set(record["timing"]) >= {"load", "train", "eval", "total"}
    saved = json.loads((tmp_path / "runs" / record["run_id"] / RECORD).read_text())
    assert saved["key"] == record["key"] and saved["metrics"] == record["metrics"]
    assert (tmp_path / "runs" / record["run_id"] / "learning_curve.png").stat().st_size > 1000


def test_same_config_and_seed_give_identical_numbers(make_cfg):
    a = run(make_cfg("model=tiny-bert", "task=rte", "cache_dir=null", *FIXED))
    b = run(make_cfg("model=tiny-bert", "task=rte", "cache_dir=null", "force=true", *FIXED))
    assert a["metrics"]["history"][-1]["train_loss"] == b["metrics"]["history"][-1]["train_loss"]
    assert a["metrics"]["final"] == b["metrics"]["final"]
    c = run(make_cfg("model=tiny-bert", "task=rte", "cache_dir=null", "seed=1", *FIXED))
    assert c["metrics"]["history"][-1]["train_loss"] != a["metrics"]["history"][-1]["train_loss"]


def test_key_bias_gets_zero_gradient_and_is_reported(make_cfg, tmp_path):
    cfg = make_cfg("model=tiny-bert", "task=sst2", "method.terms=[k,v]", *FIXED)
    workload = EncoderWorkload(config.resolve(cfg))
    bias_map = workload.bias_map()
    result, model = fit(workload, Scope("targets", bias_map.cells(["k", "v"])),
                        config.resolve(cfg).settings, Cache(None))
    start, _ = workload.new_model()
    for cell in bias_map.cells(["k", "v"]):
        moved = not torch.equal(bias_map.param(model, cell), bias_map.param(start, cell))
        assert moved == (cell[1] == "v"), cell
    assert 0 < result.zero_gradient["k"]["max_abs_roundoff"] < 1e-6
    record = run(cfg)
    assert any("b_k receives exactly zero gradient" in note for note in record["notes"])
    assert "k" in record["zero_gradient"]


def test_identical_trainings_are_shared(make_cfg, tmp_path):
    cache = f"cache_dir={tmp_path / 'cache'}"
    first = run(make_cfg("model=tiny-bert", "task=sst2", cache, *FIXED))
    again = run(make_cfg("model=tiny-bert", "task=sst2", cache, "force=record", *FIXED))
    assert not first["training"]["reused"] and again["training"]["reused"]
    assert again["metrics"] == first["metrics"]
    cfg = make_cfg("model=tiny-bert", "task=sst2", *FIXED)
    spec = config.resolve(cfg)
    workload, settings = EncoderWorkload(spec), spec.settings
    v = Scope("targets", workload.bias_map().cells(["v"]))
    q = Scope("targets", workload.bias_map().cells(["q"]))
    assert training_key(workload, v, settings) != training_key(workload, q, settings)
    other = make_cfg("model=tiny-bert", "task=sst2", "method=bitfit", "out_dir=/x", "logger=csv", *QUICK)
    assert training_key(EncoderWorkload(config.resolve(other)), v, settings) == training_key(workload, v, settings)
    for change in ("seed=1", "regime.n=40", "trainer.max_length=64", "trainer.attn_implementation=eager"):
        changed = make_cfg("model=tiny-bert", "task=sst2", "method=bitfit", *QUICK, change)
        assert training_key(EncoderWorkload(config.resolve(changed)), v, config.resolve(changed).settings) \
            != training_key(workload, v, settings), change


def test_weights_reused_in_process_are_never_mutated(make_cfg):
    from omegaconf import OmegaConf
    from transformers import AutoModelForSequenceClassification, set_seed

    from beft.models import load_encoder, weights_location

    model_cfg = make_cfg("model=minilm").model
    set_seed(3)
    first, _ = load_encoder(model_cfg, 2)
    with torch.no_grad():  # a run trains its copy in place
        for p in first.parameters():
            p.add_(1.0)
    set_seed(3)
    second, _ = load_encoder(model_cfg, 2)
    set_seed(3)  # a cold load, as from_pretrained does it, under the same seed
    cold = AutoModelForSequenceClassification.from_pretrained(weights_location(model_cfg)["path"], num_labels=2)
    for (name, a), b in zip(second.state_dict().items(), cold.state_dict().values()):
        assert torch.equal(a, b), name
    set_seed(4)
    other, _ = load_encoder(model_cfg, 2)
    assert not torch.equal(other.classifier.weight, second.classifier.weight)
    assert torch.equal(other.bert.pooler.dense.bias, second.bert.pooler.dense.bias)


def test_dynamic_padding_gives_the_logits_of_max_length_padding(make_cfg):
    """Per-batch padding (length-sorted) is a pure speed-up: the same logits as padding every example to 128."""
    from beft.batching import Batcher, Encoded
    from beft.evaluate import predict

    cfg = make_cfg("model=minilm", "task=rte", "method=fixed-v")
    workload = EncoderWorkload(config.resolve(cfg))
    model, _ = workload.new_model()
    model.eval()
    data = workload.eval_sets["validation"]
    data = Encoded(data.features[:48], data.labels[:48])
    dynamic = Batcher(workload.tokenizer, 16, 128, pad_to_max_length=False)
    padded = Batcher(workload.tokenizer, 16, 128, pad_to_max_length=True)
    widths = {next(iter(dynamic.eval_batches(data)))[1]["input_ids"].shape[1],
              next(iter(padded.eval_batches(data)))[1]["input_ids"].shape[1]}
    assert 128 in widths and len(widths) == 2          # the two really pad differently
    np.testing.assert_allclose(predict(model, dynamic, data, workload.device),
                               predict(model, padded, data, workload.device), rtol=1e-4, atol=1e-5)


def test_a_training_asked_for_by_two_jobs_at_once_runs_once(make_cfg, tmp_path, monkeypatch):
    import beft.fit as fit_module

    cfg = make_cfg("model=tiny-bert", "task=sst2", *FIXED)
    workload = EncoderWorkload(config.resolve(cfg))
    scope = Scope("targets", workload.bias_map().cells(["v"]))
    trainings, real_train = [], fit_module._train

    def slow_train(*args):  # holds the training open long enough for the other job to ask for it meanwhile
        trainings.append(threading.get_ident())
        time.sleep(0.5)
        return real_train(*args)

    monkeypatch.setattr(fit_module, "_train", slow_train)
    results = []

    def job():  # each job opens the cache on its own, as separate processes do
        results.append(fit(workload, scope, config.resolve(cfg).settings, Cache(tmp_path / "c"))[0])

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(trainings) == 1
    assert sorted(r.reused for r in results) == [False, True]
    assert results[0].history == results[1].history
