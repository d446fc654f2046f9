"""One model with weights per job at every stage (issue 39): the probe, selection, the final training, evaluation
and the adapter export never hold a second model, so a model that fits the device once runs the whole job.

Live models are counted from the garbage collector after a collection (every reachable transformers model whose
weights are real, counted once with its submodules); the encoders' process-wide load cache
(beft.models._PRISTINE: the checkpoint read once per process, kept on the CPU, never on the device) is left out.
"""
import gc
import warnings

import pytest
import torch
from transformers import PreTrainedModel

from beft import adapter, models, pipeline
from beft.pipeline import run

QUICK = ("regime.n=16", "trainer.epochs=1", "trainer.lr=0.05")


def live_models() -> list:
    gc.collect()
    with warnings.catch_warnings():   # isinstance on torch's deprecated module attributes warns
        warnings.simplefilter("ignore")
        real = [o for o in gc.get_objects() if isinstance(o, PreTrainedModel)
                and any(not p.is_meta for p in o.parameters())]
    inner = {id(sub) for m in real for sub in m.modules() if sub is not m}
    cached = {id(m) for m, _ in models._PRISTINE.values()}
    return [m for m in real if id(m) not in inner and id(m) not in cached]


@pytest.fixture
def counts(monkeypatch):
    """{stage: [live models each time the stage ran]}, for every run in the test."""
    seen: dict[str, list[int]] = {}

    def note(stage):
        seen.setdefault(stage, []).append(len(live_models()))

    def watched(make):
        def make_workload(spec):
            workload = make(spec)
            for stage in ("loss", "mean_loss", "predict"):   # training and probe steps, causal, evaluation
                original = getattr(workload, stage)

                def wrapper(*args, _original=original, _stage=stage, **kwargs):
                    note(_stage)
                    return _original(*args, **kwargs)
                setattr(workload, stage, wrapper)
            load = workload.new_model

            def new_model(*args, **kwargs):   # every load, whatever asks for it: the new model is the only one
                model = load(*args, **kwargs)
                note("load")
                return model
            workload.new_model = new_model
            return workload
        return make_workload

    write = adapter.write_adapter

    def write_adapter(*args, **kwargs):
        note("export")
        return write(*args, **kwargs)

    monkeypatch.setattr(pipeline, "make_workload", watched(pipeline.make_workload))
    monkeypatch.setattr(adapter, "write_adapter", write_adapter)
    return seen


@pytest.mark.parametrize("model, method", [
    ("tiny-opt", "fixed-v"), ("tiny-opt", "beft"), ("tiny-opt", "magnitude"), ("tiny-opt", "causal"),
    ("tiny-opt", "lora_bias"), ("tiny-opt", "lora"), ("tiny-opt", "prefix"),
    ("tiny-bert", "fixed-v"), ("tiny-bert", "causal"), ("tiny-llama", "magnitude"),
])
def test_one_model_at_every_stage(make_cfg, counts, model, method, tmp_path):
    record = run(make_cfg(f"model={model}", "task=sst2", f"method={method}", *QUICK,
                          f"cache_dir={tmp_path / 'cache'}"))
    assert record["status"] == "ok"
    assert counts["loss"] and counts["predict"] and counts["load"]
    if method in ("fixed-v", "lora", "prefix", "lora_bias"):   # no selection: the job loads one model, once
        assert counts["load"] == [1]
    else:                                                    # the probe's, then the final training's
        assert len(counts["load"]) == 2
    for stage in ("load", "loss", "mean_loss", "predict"):   # a model loads, trains or is scored: the only one
        assert set(counts.get(stage, [1])) == {1}, (stage, counts[stage])
    if method == "causal":
        assert counts["mean_loss"]                         # the interventions ran, on the probe's model alone
    if record["adapter"]["written"]:                       # the trained model is gone; the skeleton has no weights
        assert counts["export"] == [0]
    else:                                                  # LoRA, prefix, LayerNorm biases: nothing to export
        assert record["adapter"]["reason"] and "export" not in counts
    assert live_models() == []


def test_a_reused_probe_and_training_load_no_second_model(make_cfg, counts, tmp_path):
    """From the cache: b_0 and the adapter's base come from the cached training's own pre-trained values."""
    cache = f"cache_dir={tmp_path / 'cache'}"
    first = run(make_cfg("model=tiny-opt", "method=beft", *QUICK, cache))
    again = run(make_cfg("model=tiny-opt", "method=beft", *QUICK, cache, "force=record"))
    assert again["training"]["reused"] and again["selection"]["probe"]["reused"]
    assert again["selection"]["scores"] == first["selection"]["scores"]
    assert again["metrics"]["final"] == first["metrics"]["final"]


def test_the_adapter_from_the_skeleton_equals_the_adapter_from_the_loaded_model(make_cfg, tmp_path):
    """write_adapter on a meta-device skeleton writes the very tensors it writes on the loaded model."""
    from safetensors.torch import load_file

    from beft import config
    from beft.kinds import make_workload

    cfg = make_cfg("model=tiny-bert", "method=fixed-v", *QUICK)
    wl = make_workload(config.resolve(cfg))
    targets = {"bert.encoder.layer.0.attention.self.value": torch.randn(32)}
    loaded, _ = wl.new_model()
    head = {f"classifier.{n}": torch.randn_like(p) for n, p in loaded.classifier.named_parameters()}
    adapter.write_adapter(loaded, targets, head, wl.peft_task_type, tmp_path / "loaded")
    adapter.write_adapter(wl.skeleton(), targets, head, wl.peft_task_type, tmp_path / "skeleton")
    a = load_file(tmp_path / "loaded" / "adapter_model.safetensors")
    b = load_file(tmp_path / "skeleton" / "adapter_model.safetensors")
    assert sorted(a) == sorted(b) and len(a) == 3
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_training_cached_without_its_start_still_exports_the_same_adapter(make_cfg, counts, monkeypatch, tmp_path):
    """A training cached before Fit.start existed: b_0 is read from a model loaded once the trained one is gone."""
    from beft import fit as fit_module

    cache = f"cache_dir={tmp_path / 'cache'}"
    train = fit_module._train

    def without_start(*args, **kwargs):
        result, model = train(*args, **kwargs)
        result.start = None
        return result, model
    monkeypatch.setattr(fit_module, "_train", without_start)
    first = run(make_cfg("model=tiny-opt", "method=fixed-v", *QUICK, cache))
    monkeypatch.setattr(fit_module, "_train", train)
    again = run(make_cfg("model=tiny-opt", "method=fixed-v", *QUICK, cache, "force=record"))
    assert again["training"]["reused"] and again["adapter"]["written"]
    folder = tmp_path / "runs" / again["run_id"] / "adapter" / "adapter_model.safetensors"
    from safetensors.torch import load_file

    reference = run(make_cfg("model=tiny-opt", "method=fixed-v", *QUICK, f"cache_dir={tmp_path / 'fresh'}",
                             "force=true"))
    assert reference["key"] == first["key"]
    b = load_file(tmp_path / "runs" / reference["run_id"] / "adapter" / "adapter_model.safetensors")
    a = load_file(folder)
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert max(counts["export"]) == 0
