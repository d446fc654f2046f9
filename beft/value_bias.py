"""The value bias is the output bias in disguise: the b_v -> b_o map, and a b_v adapter merged into b_o.

Each row of an attention matrix sums to 1, so a change Δ of b_v passes through attention unchanged: every
position of head h gets Δ's slice for h, and the output projection turns that into the same shift W_o Δ at
every position. A b_v change is therefore exactly the b_o change W_o R Δ, where R copies each key/value head's
slice to the query heads that share it (the identity without grouped-query attention; with it, the b_o change
sums W_o's columns over the query heads of each key/value group). The reachable b_o changes are the column
space of W_o R: of rank n_kv·d_h where W_o has full rank, so all of b_o without grouping, a subspace with it
(SmolLM2: 192 of 576). It holds in eval mode and in training without attention dropout: a dropped-out row
no longer sums to 1. Derivation: docs/why-bv.md.

`merge_value_adapter` rewrites a run's BEFT adapter with every b_v change moved into b_o (an added one where
the model has none): the same function, with b_v back at its pre-trained value.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from beft.adapter import PEFT_PREFIX, write_adapter
from beft.bias_map import BiasMap
from beft.errors import BeftError


def _linear(model: nn.Module, bias_map: BiasMap, cell) -> nn.Linear:
    module = model.get_submodule(bias_map.modules[cell])
    return getattr(module, "base_layer", module)   # under a PEFT wrapper, the original Linear


def value_spread(value_size: int, heads_size: int, num_heads: int) -> torch.Tensor:
    """R (heads_size × value_size, 0/1): copies key/value head g's slice of b_v to every query head of its group,
    as transformers' repeat_kv does (query head h reads key/value head h // (n_q / n_kv))."""
    if value_size == heads_size:
        return torch.eye(value_size, dtype=torch.float64)
    head_dim = heads_size // num_heads
    if head_dim * num_heads != heads_size or value_size % head_dim or num_heads % (value_size // head_dim):
        raise BeftError(f"cannot split the attention output ({heads_size} wide, {num_heads} query heads) and b_v "
                        f"({value_size} wide) into whole heads and key/value groups")
    group = num_heads // (value_size // head_dim)            # query heads per key/value head
    rows = torch.arange(heads_size)
    columns = (rows // head_dim // group) * head_dim + rows % head_dim
    spread = torch.zeros(heads_size, value_size, dtype=torch.float64)
    spread[rows, columns] = 1.0
    return spread


def output_map(model: nn.Module, bias_map: BiasMap, layer: int) -> torch.Tensor:
    """W_o R (b_o width × b_v width, float64): the b_o change equal to each b_v change of `layer`."""
    weight = _linear(model, bias_map, (layer, "o")).weight.detach().to(torch.float64).cpu()
    return weight @ value_spread(bias_map.size((layer, "v")), weight.shape[1], int(model.config.num_attention_heads))


def value_to_output_bias(model: nn.Module, bias_map: BiasMap, changes: dict[int, torch.Tensor]) -> dict:
    """{layer: b_v change} -> {layer: the b_o change with the same effect}, in the changes' dtype, on the CPU."""
    return {layer: (output_map(model, bias_map, layer) @ change.detach().flatten().to(torch.float64).cpu())
            .to(change.dtype) for layer, change in changes.items()}


def merge_value_adapter(base: nn.Module, adapter_dir: Path, out_dir: Path) -> dict:
    """Write the BEFT adapter at `adapter_dir` again at `out_dir`, with each layer's b_v change Δ removed (b_v
    back at its pre-trained b_0) and W_o R Δ added to that layer's b_o change (an added b_o where the model has
    none). `base` is the pre-trained model the adapter was trained on, without adapter (it gets the new one).
    The merged adapter computes the same function with one bias add per layer, as before: it costs nothing at
    inference. Returns what was written."""
    from safetensors.torch import load_file

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    config_file, weights_file = adapter_dir / "adapter_config.json", adapter_dir / "adapter_model.safetensors"
    if not (config_file.is_file() and weights_file.is_file()):
        raise BeftError(f"no adapter at {adapter_dir} (it needs adapter_config.json and adapter_model.safetensors); "
                        f"give a run's adapter/ folder")
    config = json.loads(config_file.read_text())
    if config.get("peft_type") != "BEFT":
        raise BeftError(f"the adapter at {adapter_dir} is {config.get('peft_type')}, not BEFT: only bias adapters "
                        f"can be merged")
    if out_dir.is_symlink() or out_dir.resolve() == adapter_dir.resolve():
        raise BeftError(f"will not write the merged adapter to {out_dir}: give a new folder (not a link, not the "
                        f"adapter itself)")
    modules, params = dict(base.named_modules()), dict(base.named_parameters())
    targets, head_params = {}, {}
    for key, value in load_file(str(weights_file)).items():   # PEFT's layout: <prefix><module>.beft_bias
        name = key.removeprefix(PEFT_PREFIX)
        if name.endswith(".beft_bias") and isinstance(modules.get(name.removesuffix(".beft_bias")), nn.Linear):
            targets[name.removesuffix(".beft_bias")] = value.flatten()
        elif name in params:                                    # a saved head module's parameter
            head_params[name] = value
        else:
            raise BeftError(f"the adapter at {adapter_dir} holds {key}, which is not in this {type(base).__name__}; "
                            f"give the model the adapter was trained on")
    bias_map = BiasMap(base)
    values = {layer: targets.pop(module) for (layer, t), module in sorted(bias_map.modules.items())
              if t == "v" and module in targets}
    if not values:
        raise BeftError(f"the adapter at {adapter_dir} changes no b_v: nothing to merge into b_o")
    for layer, shift in value_to_output_bias(base, bias_map, values).items():
        output = bias_map.modules[(layer, "o")]
        targets[output] = targets[output] + shift if output in targets else shift
    summary = write_adapter(base, targets, head_params, config.get("task_type"), out_dir)
    return {**summary, "merged_layers": sorted(values)}
