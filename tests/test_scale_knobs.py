"""Knobs that make a big job fit and change no maths (issue 39): gradient checkpointing (the same bias gradients),
fp16 with a gradient scaler (the same steps where nothing overflows), and accelerate's device map (the same
outputs and metrics). On this CPU-only machine a device map can only place the model on the CPU: the split over
several GPUs and the CPU offload are checked by scripts/gpu_scale.py on a GPU machine."""
from dataclasses import replace

import pytest
import torch

from beft import config
from beft.bias_map import BiasMap
from beft.evaluate import to_device
from beft.kinds import make_workload
from beft.pipeline import run
from beft.train import train
from beft.trainable import Scope, apply_scope

QUICK = ("regime.n=16", "trainer.epochs=1", "trainer.lr=0.05")


def trained_gradients(make_cfg, model_name, method, *overrides):
    spec = config.resolve(make_cfg(f"model={model_name}", f"method={method}", *QUICK, *overrides))
    workload = make_workload(spec)
    model, _ = workload.new_model()   # a PEFT method's adapter comes with the model
    if method == "bitfit":
        apply_scope(model, BiasMap(model), Scope("all_biases"))
    model.train()                        # dropout on: checkpointing must replay its random stream
    batch = next(iter(workload.batches(workload.train_set, 8, torch.Generator().manual_seed(0))))
    torch.manual_seed(0)
    workload.loss(model, to_device(batch, workload.device)).backward()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.is_gradient_checkpointing, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("model_name,method", [("tiny-bert", "bitfit"), ("tiny-opt", "bitfit"),
                                               ("tiny-llama", "bitfit"), ("tiny-opt", "lora")])
def test_checkpointing_gives_the_same_gradients(make_cfg, model_name, method):
    plain_on, plain = trained_gradients(make_cfg, model_name, method)
    ckpt_on, ckpt = trained_gradients(make_cfg, model_name, method, "trainer.gradient_checkpointing=true")
    assert ckpt_on and not plain_on
    assert sorted(ckpt) == sorted(plain) and len(plain) > 4
    assert all(ckpt[n].abs().sum() > 0 or plain[n].abs().sum() == 0 for n in plain)   # gradients do flow
    for name in plain:
        assert torch.allclose(ckpt[name], plain[name], atol=1e-5, rtol=0), name


def test_checkpointing_is_refused_in_one_line_for_prefix_tuning_whose_prefix_it_would_drop(make_cfg):
    """transformers drops the key/value cache inside a checkpointed layer: the prefix would vanish mid-forward
    (a shape error after the model loaded, without this check)."""
    from beft.errors import BeftError

    with pytest.raises(BeftError, match=r"^trainer.gradient_checkpointing=true cannot train method=prefix: "
                                        r"transformers drops the key/value cache[^\n]*=false"):
        config.resolve(make_cfg("model=tiny-opt", "method=prefix", *QUICK, "trainer.gradient_checkpointing=true"))
    config.resolve(make_cfg("model=tiny-opt", "method=prefix", *QUICK))   # without checkpointing it runs


def test_fp16_trains_through_the_gradient_scaler_with_the_same_steps(make_cfg):
    """On the CPU there is no fp16 autocast, so the fp16 path differs from fp32 only by the scaler: loss x 2^16,
    gradients unscaled before clipping. Unscaling forgotten, clipping would cut the scaled gradients."""
    spec = config.resolve(make_cfg("model=tiny-bert", "method=bitfit", *QUICK, "trainer.max_grad_norm=0.5"))
    workload = make_workload(spec)
    trained = {}
    for precision in ("fp32", "fp16"):
        model, _ = workload.new_model()
        apply_scope(model, BiasMap(model), Scope("all_biases"))
        log = train(model, workload, workload.train_set, replace(spec.settings, precision=precision, progress=False))
        trained[precision] = ({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
                              log.loss_scale)
    (fp32, no_scale), (fp16, scale) = trained["fp32"], trained["fp16"]
    assert no_scale is None and scale == 2.0 ** 16
    for name in fp32:
        assert torch.allclose(fp16[name], fp32[name], atol=1e-6, rtol=0), name


def test_auto_precision_is_bf16_else_fp16_on_cuda_fp32_on_the_cpu_and_fp16_is_refused_there(monkeypatch):
    from beft.errors import BeftError
    from beft.runtime import resolve_precision

    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    for supported, chosen in ((True, "bf16"), (False, "fp16")):   # an A100 / H100; a V100 / T4
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, s=supported: s)
        assert resolve_precision("auto", torch.device("cuda")) == chosen
    with pytest.raises(BeftError, match="needs a CUDA device"):
        resolve_precision("fp16", torch.device("cpu"))


@pytest.mark.parametrize("device_map", ["{model:cpu,lm_head:cpu}", "auto"])
def test_a_device_mapped_model_trains_evaluates_and_exports_as_the_unmapped_one(make_cfg, device_map):
    plain = run(make_cfg("model=tiny-opt", "method=fixed-v", *QUICK))
    mapped = run(make_cfg("model=tiny-opt", "method=fixed-v", *QUICK, f"model.device_map={device_map}",
                          "model.max_memory={cpu: 1GiB}", "force=true"))
    assert mapped["key"] == plain["key"]                   # placement is not maths: the same record
    assert mapped["adapter"]["written"]
    for name, value in plain["metrics"]["final"].items():
        assert mapped["metrics"]["final"][name] == pytest.approx(value, abs=1e-5), name


def test_accelerate_hooks_give_the_same_logits(make_cfg):
    """A model dispatched by accelerate with an explicit per-module map runs through accelerate's hooks."""
    from accelerate import dispatch_model

    spec = config.resolve(make_cfg("model=tiny-opt", "method=fixed-v", *QUICK))
    workload = make_workload(spec)
    plain, _ = workload.load_base()
    mapped, _ = workload.load_base()
    layout = {"model.decoder.embed_tokens": "cpu", "model.decoder.embed_positions": "cpu",
              "model.decoder.layers.0": "cpu", "model.decoder.layers.1": "cpu",
              "model.decoder.final_layer_norm": "cpu", "lm_head": "cpu"}
    mapped = dispatch_model(mapped, device_map=layout, main_device="cpu", force_hooks=True)
    assert hasattr(mapped.model.decoder.layers[0], "_hf_hook")
    plain.eval(), mapped.eval()
    ids = torch.randint(0, 1000, (2, 12))
    with torch.no_grad():
        assert torch.allclose(mapped(input_ids=ids).logits, plain(input_ids=ids).logits, atol=1e-5)


def test_trainable_parameters_offloaded_by_a_device_map_are_refused_in_one_line():
    from torch import nn

    from beft.errors import BeftError
    from beft.fit import check_placed

    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    check_placed(model)                                  # all on a real device: fine
    with torch.device("meta"):
        model[1] = nn.Linear(4, 4)                       # what accelerate leaves of an offloaded module
    with pytest.raises(BeftError, match=r"offloads 2 trainable parameters \(first: 1.weight\)"):
        check_placed(model)
    for p in model[1].parameters():
        p.requires_grad_(False)                          # frozen and offloaded: fine
    check_placed(model)
