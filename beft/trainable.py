"""Make exactly the chosen parameters trainable, and keep mathematically inert ones honest.

A `Scope` says what a run trains: chosen bias cells, every bias, every weight, only the task head, the weights a
PEFT adapter added (LoRA, prefix), or nothing (zero-shot, in-context learning). The task head (the family's `head`
patterns; decoders have none: the LM head stays frozen, as in the paper) is trained in every scope but `none`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from beft.bias_map import PAPER_LABELS, BiasMap, Cell

SCOPES = ("targets", "all_biases", "all", "head", "adapter", "none")
# Parameter-name fragments of the weights a PEFT adapter adds (LoRA matrices, prefix key/values).
ADAPTER_PARTS = ("lora_A.", "lora_B.", "prompt_encoder.")


@dataclass
class Scope:
    kind: str                                   # one of SCOPES
    targets: list[Cell] = field(default_factory=list)

    def describe(self) -> str:
        if self.kind != "targets":
            return self.kind
        types = sorted({t for _, t in self.targets}, key=lambda t: list(PAPER_LABELS).index(t))
        return "+".join(types)


def trainable_names(model: nn.Module, bias_map: BiasMap, scope: Scope) -> list[str]:
    """Parameter names the scope trains, in model order."""
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
        wanted = {n for n, _ in model.named_parameters() if any(part in n for part in ADAPTER_PARTS)} | head
    elif scope.kind == "none":
        wanted = set()
    else:
        raise ValueError(f"unknown scope {scope.kind!r}; valid: {SCOPES}")
    return [n for n, _ in model.named_parameters() if n in wanted]


def apply_scope(model: nn.Module, bias_map: BiasMap, scope: Scope) -> int:
    """Freeze everything but the scope; returns the number of trainable parameters."""
    names = set(trainable_names(model, bias_map, scope))
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class InertKeyBiases:
    """Zero the gradient of b_k where it is mathematically zero, and measure the round-off that is dropped.

    Without positional rotation, b_k adds q_i . b_k to every logit of query i alike; softmax is shift-invariant,
    so dL/db_k = 0 exactly (PAPER.md §A.6). Autograd returns float round-off (~1e-10) instead, which Adam's
    normalisation would turn into a slow random walk. Zeroing it makes b_k stay exactly at its pre-trained
    value, as the mathematics says, and the record states that a b_k-only run trains only the head.
    """

    def __init__(self, model: nn.Module, bias_map: BiasMap):
        self.max_roundoff = 0.0
        self.steps = 0
        self._handles = []
        if not bias_map.family.key_bias_inert:
            return
        for cell in bias_map.cells(["k"]) if "k" in bias_map.types else []:
            if bias_map.has_bias(cell):
                param = bias_map.param(model, cell)
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
