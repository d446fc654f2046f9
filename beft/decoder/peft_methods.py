"""PEFT adapters a decoder run puts on its model: added biases, LoRA, prefix tuning (docs/paper.md §C.8, §C.9).

Which adapter a method gets is its entry in beft.method_table (a PEFT-library adapter is configured there, from
the method's section); this module puts it on the model.
- `beft`: bias-free projections (LLaMA, GPT-J, deepseek-coder) get PEFT `BeftConfig` biases, zero-initialised so
  the model is unchanged until it trains. Every bias-free Linear type of the bias map gets one, so the probe of
  the selection methods and `bitfit` can train them all; a run trains only its chosen ones and the others stay
  exactly zero. With grouped-query attention each bias takes its projection's output size (k/v smaller than q).
- `lora`: r 8, alpha 16, no dropout, on the query and value projections (the authors' OPT setting).
- `prefix`: 5 key/value vectors per layer, no reparameterisation, initialised from the model's own keys and
  values of 5 random vocabulary tokens (the authors' `--prefix_init_by_real_act`).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from beft.bias_map import BiasMap
from beft.decoder.kv_cache import cache_of
from beft.method_table import ADDED_BIASES, Adapter, method


def bias_free_linear_modules(model, bias_map: BiasMap) -> list[str]:
    """Names of the mapped Linear modules that have no bias of their own, in layer order."""
    return [bias_map.modules[c] for c in bias_map.bias_free_linear_cells(model)]


def adapter_of(method_name: str, model, bias_map: BiasMap) -> str | Adapter | None:
    """The method's adapter (beft.method_table) for this model: added biases only where it has bias-free
    projections; None where it gets none."""
    adapter = method(method_name).adapter
    if adapter == ADDED_BIASES and not bias_free_linear_modules(model, bias_map):
        return None
    return adapter


def adapter_name(adapter: str | Adapter | None) -> str | None:
    return adapter.name if isinstance(adapter, Adapter) else adapter


def add_adapter(model, adapter: str | Adapter | None, method_cfg, bias_map: BiasMap, seed: int = 0,
                init: bool = True):
    """The model with `adapter` (None: unchanged). init=False skips an adapter's own initialisation from the
    model's activations (for weightless skeletons)."""
    from peft import BeftConfig, get_peft_model

    if adapter is None:
        return model
    if adapter == ADDED_BIASES:
        config = BeftConfig(task_type="CAUSAL_LM", target_modules=bias_free_linear_modules(model, bias_map))
        with warnings.catch_warnings():  # "base layer has no bias": exactly why the bias is added
            warnings.filterwarnings("ignore", message=".*no bias.*")
            return get_peft_model(model, config)
    peft_model = get_peft_model(model, adapter.config(method_cfg, bias_map.family.peft_names))
    if init and adapter.init is not None:
        INITS[adapter.init](peft_model, method_cfg, seed)
    return peft_model


def _init_from_activations(peft_model, method_cfg, seed: int) -> None:
    if method_cfg.get("init_by_real_act", True):
        n = int(method_cfg.get("num_virtual_tokens", 5))
        init_prefix_from_activations(peft_model, n, torch.Generator().manual_seed(seed))


@torch.no_grad()
def init_prefix_from_activations(peft_model, n_tokens: int, generator: torch.Generator) -> torch.Tensor:
    """Set the prefix to the keys and values the model computes for `n_tokens` random vocabulary tokens.

    PEFT keeps the prefix as one embedding row per virtual token, laid out as (layer, key|value, head, dim):
    exactly what `get_prompt` reshapes into each layer's past keys and values. Returns the token ids.
    """
    base = peft_model.get_base_model()
    device = next(base.parameters()).device
    ids = torch.randint(0, base.config.vocab_size, (1, n_tokens), generator=generator)
    was_training = base.training
    base.eval()
    cache = cache_of(base(input_ids=ids.to(device), use_cache=True))
    base.train(was_training)
    layers = [(layer.keys, layer.values) for layer in cache.layers]
    kv = torch.stack([torch.stack(pair) for pair in layers])       # (layer, 2, 1, heads, tokens, dim)
    weight = kv[:, :, 0].permute(3, 0, 1, 2, 4).reshape(n_tokens, -1)
    embedding = peft_model.prompt_encoder[peft_model.active_adapter].embedding.weight
    if embedding.shape != weight.shape:
        raise ValueError(f"prefix layout {tuple(embedding.shape)} does not match the model's key/value cache "
                         f"{tuple(weight.shape)}")
    embedding.copy_(weight.to(embedding.dtype))
    return ids


INITS = {"activations": _init_from_activations}   # an Adapter's `init`, by name
