"""Fixed training strategies: what each non-selecting `method` trains.

Selection methods (beft, magnitude, fisher, causal, random) live in `beft.selection` and end in the same place:
a `Scope` of chosen bias cells. Adding a fixed strategy is one entry here and one YAML in conf/method/.
`lora` and `prefix` train the weights their PEFT adapter adds (the decoder workload puts the adapter on the
model); `icl` and `zero_shot` train nothing and only evaluate (ICL with demonstrations in every prompt).
"""
from __future__ import annotations

from beft.bias_map import BiasMap, canonical_type
from beft.errors import BeftError
from beft.trainable import Scope


def _fixed(method_cfg, bias_map: BiasMap) -> Scope:
    terms = list(method_cfg.get("terms") or [])
    if not terms:
        raise BeftError("method=fixed needs method.terms, e.g. method.terms=[v]; valid terms: "
                        + ", ".join(bias_map.types))
    return Scope("targets", bias_map.cells([canonical_type(t) for t in terms]))


def _rand_uniform(method_cfg, bias_map: BiasMap) -> Scope:
    """N random scalar weights of the backbone (+ the task head): the equal-budget control for bias selection."""
    spec = method_cfg.get("num_params", "budget")
    named = {"budget": sum(bias_map.size(c) for c in bias_map.cells(["v"])),  # b_v in every layer
             "bitfit": bias_map.backbone_bias_params}                          # every bias outside the head
    if isinstance(spec, str) and spec in named:
        n = named[spec]
    elif isinstance(spec, int) and not isinstance(spec, bool) and 1 <= spec <= bias_map.backbone_params:
        n = spec
    else:
        raise BeftError(f"method.num_params={spec!r} is not valid; give budget (b_v in every layer: "
                        f"{named['budget']:,}), bitfit (every bias: {named['bitfit']:,}) or a whole number from 1 "
                        f"to {bias_map.backbone_params:,}")
    return Scope("random_weights", num_params=n, seed=int(method_cfg.get("mask_seed") or 0))


FIXED = {
    "fixed": _fixed,
    "bitfit": lambda method_cfg, bias_map: Scope("all_biases"),
    "full": lambda method_cfg, bias_map: Scope("all"),
    "head": lambda method_cfg, bias_map: Scope("head"),
    "lora": lambda method_cfg, bias_map: Scope("adapter"),
    "prefix": lambda method_cfg, bias_map: Scope("adapter"),
    "icl": lambda method_cfg, bias_map: Scope("none"),
    "zero_shot": lambda method_cfg, bias_map: Scope("none"),
    "rand_uniform": _rand_uniform,
}
# Methods defined for causal language models only (PAPER.md §C.8): prompted scoring, no task head.
DECODER_ONLY = ("lora", "prefix", "icl", "zero_shot")


def fixed_scope(method_cfg, bias_map: BiasMap) -> Scope:
    return FIXED[method_cfg.name](method_cfg, bias_map)
