"""Make exactly the chosen parameters trainable, and keep mathematically inert ones honest.

A `Scope` says what a run trains: chosen bias cells, every bias, every weight, only the task head, N random
scalar weights of the backbone (`random_weights`, the paper's rand_uniform control), the weights a PEFT adapter
added (LoRA, prefix), a structured update of chosen bias cells (`bias_updates`: LoRA / DoRA / VeRA on a bias,
beft.bias_updates), or nothing (zero-shot, in-context learning). The task head (the family's `head` patterns;
decoders have none: the LM head stays frozen, as in the paper) is trained in every scope but `none`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from torch import nn

from beft.bias_map import PAPER_LABELS, BiasMap, Cell

SCOPES = ("targets", "all_biases", "all", "head", "random_weights", "adapter", "bias_updates", "none")


def adapter_param_names(model: nn.Module) -> set[str]:
    """The weights a PEFT adapter added (LoRA matrices, prefix key/values, IA3 vectors...): `get_peft_model`
    freezes the model and leaves exactly those trainable, so a fresh PEFT model's trainable parameters are they."""
    if not hasattr(model, "peft_config"):
        return set()
    return {n for n, p in model.named_parameters() if p.requires_grad}


@dataclass
class Scope:
    kind: str                                   # one of SCOPES
    targets: list[Cell] = field(default_factory=list)
    num_params: int | None = None               # random_weights: how many backbone scalars to train
    seed: int = 0                               # random_weights: which ones
    update: dict | None = None                  # bias_updates: method, rank, alpha, shape, authors (bias_updates.py)

    def identity(self) -> list:
        """What the scope trains, for training keys (unchanged for the kinds that existed first)."""
        cells = [self.kind, sorted(map(list, self.targets))]
        if self.kind == "bias_updates":
            return cells + [self.update]
        return cells + [self.num_params, self.seed] if self.kind == "random_weights" else cells

    def describe(self) -> str:
        if self.kind == "random_weights":
            return f"random {self.num_params} weights"
        if self.kind not in ("targets", "bias_updates"):
            return self.kind
        types = "+".join(sorted({t for _, t in self.targets}, key=lambda t: list(PAPER_LABELS).index(t)))
        return f"{self.update['method']} on {types}" if self.kind == "bias_updates" else types


def trainable_names(model: nn.Module, bias_map: BiasMap, scope: Scope) -> list[str]:
    """Parameter names the scope trains (for random_weights: those holding a chosen position), in model order."""
    head = set(bias_map.head_param_names(model))
    if scope.kind == "all":
        wanted = {n for n, _ in model.named_parameters()}
    elif scope.kind == "all_biases":
        # BitFit: every parameter called `bias` (embedding LayerNorm and pooler included), as the authors do, and
        # the biases an adapter added to bias-free projections.
        wanted = {n for n, _ in model.named_parameters() if n.endswith(".bias")} | head
        wanted |= set(bias_map.added_param_names())
    elif scope.kind == "targets":
        wanted = {bias_map.param_name(c) for c in scope.targets} | head
    elif scope.kind == "head":
        wanted = head
    elif scope.kind == "adapter":
        wanted = adapter_param_names(model) | head
    elif scope.kind == "bias_updates":   # the updates' own parameters (b_0 stays frozen inside them)
        wanted = {n for n, _ in model.named_parameters() if ".parametrizations." in n and not n.endswith(".original")}
        wanted |= head
    elif scope.kind == "none":
        wanted = set()
    elif scope.kind == "random_weights":
        wanted = set(random_positions(model, bias_map, scope)) | head
    else:
        raise ValueError(f"unknown scope {scope.kind!r}; valid: {SCOPES}")
    return [n for n, _ in model.named_parameters() if n in wanted]


def apply_scope(model: nn.Module, bias_map: BiasMap, scope: Scope) -> int:
    """Freeze everything but the scope; returns the number of trainable parameters (scalars that can move)."""
    if scope.kind == "random_weights":
        return _apply_random_weights(model, bias_map, scope)
    if scope.kind == "bias_updates":
        from beft.bias_updates import attach

        attach(model, bias_map, scope.targets, scope.update)
    names = set(trainable_names(model, bias_map, scope))
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def random_positions(model: nn.Module, bias_map: BiasMap, scope: Scope) -> dict[str, torch.Tensor]:
    """{parameter name: flat indices} over the backbone (task head excluded): exactly `scope.num_params`
    positions, drawn uniformly without replacement under `scope.seed`. Parameters with none are left out.

    The authors draw per tensor with replacement (slightly fewer unique positions, docs/paper.md §B.5); here the
    count is exact, so the comparison with a bias budget is at exactly equal size.
    """
    head = set(bias_map.head_param_names(model))
    backbone = [(n, p.numel()) for n, p in model.named_parameters() if n not in head]
    total = sum(size for _, size in backbone)
    if not 1 <= (scope.num_params or 0) <= total:
        raise ValueError(f"random_weights needs 1..{total} positions, got {scope.num_params}")
    # numpy draws k of n without replacement in O(k) memory (Floyd's method), even for a 7B-parameter backbone.
    chosen = np.sort(np.random.default_rng(scope.seed).choice(total, size=scope.num_params, replace=False))
    positions, start = {}, 0
    for name, size in backbone:
        lo, hi = np.searchsorted(chosen, [start, start + size])
        if hi > lo:
            positions[name] = torch.from_numpy(chosen[lo:hi] - start)
        start += size
    return positions


def _apply_random_weights(model: nn.Module, bias_map: BiasMap, scope: Scope) -> int:
    positions = random_positions(model, bias_map, scope)
    head = set(bias_map.head_param_names(model))
    for name, param in model.named_parameters():
        param.requires_grad_(name in positions or name in head)
        if name in positions:
            # Only the chosen positions keep their gradient. A zero gradient gives a zero AdamW step (weight decay
            # is 0, checked in config.validate), so every other weight stays exactly at its pre-trained value.
            param.register_hook(partial(_keep_only, index=positions[name].to(param.device)))
    return scope.num_params + sum(p.numel() for n, p in model.named_parameters() if n in head)


def _keep_only(grad: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    kept = torch.zeros_like(grad)
    kept.view(-1)[index] = grad.reshape(-1)[index]
    return kept


class InertKeyBiases:
    """Zero the gradient of b_k where it is mathematically zero, and measure the round-off that is dropped.

    Without positional rotation, b_k adds q_i . b_k to every logit of query i alike; softmax is shift-invariant,
    so dL/db_k = 0 exactly (docs/paper.md §A.6). Autograd returns float round-off (~1e-10) instead, which Adam's
    normalisation would turn into a slow random walk. Zeroing it makes b_k stay exactly at its pre-trained
    value, as the mathematics says, and the record states that a b_k-only run trains only the head.
    """

    def __init__(self, model: nn.Module, bias_map: BiasMap):
        self.max_roundoff = 0.0
        self.steps = 0
        self._handles = []
        if not bias_map.family.key_bias_inert:
            return
        from beft.bias_updates import updates_of

        updates = updates_of(model)
        for cell in bias_map.cells(["k"]) if "k" in bias_map.types else []:
            if not bias_map.has_bias(cell):
                continue
            update = updates.get(bias_map.param_name(cell))
            # A structured update of b_k gets exactly zero gradient too (the chain rule through dL/db_k = 0).
            for param in update.parameters() if update is not None else [bias_map.param(model, cell)]:
                if param.requires_grad:
                    self._handles.append(param.register_hook(self._zero))

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def _zero(self, grad: torch.Tensor) -> torch.Tensor:
        self.max_roundoff = max(self.max_roundoff, float(grad.detach().abs().max()))
        self.steps += 1
        return torch.zeros_like(grad)

    def note(self) -> str | None:
        if not self.active:
            return None
        return ("b_k receives exactly zero gradient: softmax is shift-invariant over keys, so b_k cannot change "
                f"any output. Its computed gradient is float round-off (max |g| = {self.max_roundoff:.1e}) and "
                "was zeroed, so b_k stays at its pre-trained value and contributes nothing beyond the task head.")

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
