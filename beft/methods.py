"""Fixed training strategies: the `Scope` each non-selecting `method` trains, by its scope in the method table.

Selection methods (beft, magnitude, fisher, causal, random) live in `beft.selection` and end in the same place:
a `Scope` of chosen bias cells. What a method trains is its entry in beft.method_table; the scopes that read
the method's settings are built here: `fixed` its `terms`, `rand_uniform` its `num_params`, the structured bias
updates (`lora_bias`, `dora_bias`, `vera_bias`, `vera1d_bias`: the paper's Table 4, beft.bias_updates) their
rank, alpha and shape. `lora` and `prefix` train the weights their PEFT adapter adds (the decoder workload puts
the adapter on the model); `icl` and `zero_shot` train nothing and only evaluate.
"""
from __future__ import annotations

import math

from beft.bias_map import BiasMap, canonical_type
from beft.errors import BeftError
from beft.method_table import METHODS, method
from beft.trainable import Scope


def _fixed(method_cfg, bias_map: BiasMap) -> Scope:
    terms = list(method_cfg.get("terms") or [])
    if not terms:
        raise BeftError(f"method={method_cfg.name} needs method.terms, e.g. method.terms=[v]; valid terms: "
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


def _bias_update(method_cfg, bias_map: BiasMap) -> Scope:
    """The chosen bias types, each trained as b_0 + Δb with Δb a low-rank / scaled update (beft.bias_updates)."""
    rank, alpha, authors = method_cfg.get("rank"), method_cfg.get("alpha"), method_cfg.get("authors", False)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise BeftError(f"method.rank={rank!r} is not valid; give a whole number >= 1 (the authors: 8)")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise BeftError(f"method.alpha={alpha!r} is not valid; give a finite number > 0 (the authors: 1)")
    if not isinstance(authors, bool):
        raise BeftError(f"method.authors={authors!r} is not valid; give true (the authors' code) or false")
    shape = method_cfg.get("shape")
    if shape is not None and (len(shape) != 2 or not all(isinstance(x, int) and x >= 1 for x in shape)):
        raise BeftError(f"method.shape={list(shape)!r} is not valid; give [m, n], two whole numbers >= 1 whose "
                        "product is the bias width, or null for the most square factorisation")
    spec = {"method": method_cfg.name, "rank": rank, "alpha": float(alpha), "authors": authors,
            "shape": None if shape is None else [int(x) for x in shape]}
    if method(method_cfg.name).form == "vera":
        spec["d_init"] = float(method_cfg.get("d_init", 0.1))
    return Scope("bias_updates", _fixed(method_cfg, bias_map).targets, update=spec)


# Scopes built from the method's settings; every other scope kind takes none.
BUILDERS = {"targets": _fixed, "random_weights": _rand_uniform, "bias_updates": _bias_update}
# The methods that train what their settings say, without a selection.
FIXED = tuple(name for name, entry in METHODS.items() if entry.scope != "selection")


def fixed_scope(method_cfg, bias_map: BiasMap) -> Scope:
    scope = method(method_cfg.name).scope
    build = BUILDERS.get(scope)
    return build(method_cfg, bias_map) if build else Scope(scope)
