"""Load a causal language model (OPT, LLaMA, GPT-J, ...) from a local path, the hub, or a tiny random config.

Under bf16/fp16 autocast the frozen weights are loaded in that dtype (beft.precision.frozen_dtype: a 7B model
then fits one GPU), while everything that can train stays fp32: `keep_trainable_fp32` upcasts biases and adapter weights.
"""
from __future__ import annotations

import contextlib

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from beft.models import _tiny_config, load_weights, loading, weights_location
from beft.trainable import adapter_param_names

def model_config(model_cfg):
    if model_cfg.get("tiny"):
        return _tiny_config(model_cfg)
    where = weights_location(model_cfg)
    with loading(model_cfg, where, "config"):
        return AutoConfig.from_pretrained(where["path"], revision=where.get("revision"))


def context_length(config) -> int:
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    return 2048


def load_causal_lm(model_cfg, dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa",
                   device: torch.device | None = None):
    """(model, weights provenance). Tiny models get fixed random weights (`weights_seed`) with small biases. A
    random model of a real shape (`init_on_device: true`, conf/model/shape-*.yaml) is made where it runs, in its
    dtype, never in fp32 on the CPU first (a 7B model would take 27 GB and minutes); its random weights then
    come from that device's generator. Tiny test models are always made on the CPU: the same weights anywhere."""
    load_kwargs = {"dtype": dtype}
    if model_cfg.get("device_map") and not model_cfg.get("tiny"):   # accelerate places the layers as they load
        load_kwargs.update(device_map=model_cfg.device_map, max_memory=plain_memory(model_cfg.get("max_memory")))
    if model_cfg.get("tiny") and model_cfg.get("init_on_device") and device is not None:
        with torch.device(device), default_dtype(dtype):
            model, source = load_weights(AutoModelForCausalLM, model_cfg, attn_implementation)
        return model, source
    model, source = load_weights(AutoModelForCausalLM, model_cfg, attn_implementation, load_kwargs=load_kwargs)
    return (model.to(dtype) if model_cfg.get("tiny") else model), source


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def plain_memory(max_memory) -> dict | None:
    """model.max_memory as accelerate reads it: GPU indices as ints ({0: "20GiB", "cpu": "60GiB"})."""
    if not max_memory:
        return None
    return {(int(k) if str(k).isdigit() else k): v for k, v in dict(max_memory).items()}


def skeleton(model_cfg):
    """The model's structure on the meta device, without weights."""
    config = model_config(model_cfg)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def keep_trainable_fp32(model) -> None:
    """Biases (own or added) and adapter weights in fp32: their Adam updates are far below bf16's resolution."""
    adapter = adapter_param_names(model)
    for name, param in model.named_parameters():
        trainable_kind = name.endswith(".bias") or ".beft_bias." in name or name in adapter
        if trainable_kind and param.dtype != torch.float32:
            param.data = param.data.float()
