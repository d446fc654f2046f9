"""Interventional selection (ours): measure directly what the other scores only proxy.

With the probe's head, for a set S of bias cells (one type in every layer, or one cell):
  sufficiency(S) = L(pre-trained biases) - L(pre-trained biases, S set to its probe value)
  necessity(S)   = L(probe biases, S reverted to pre-trained) - L(probe biases)
  score(S)       = (sufficiency + necessity) / 2
where L is the mean loss on a selection split carved from the training subset (never the evaluation split).
A positive score means the bias update of S lowers the loss on its own and is missed when taken away.
Interventions are undone in a `finally`, so the probe model is exactly as before afterwards.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from beft.progress import progress

NEEDS_PROBE = True


@contextmanager
def intervene(model, values: dict):
    """Set some parameters to given values for the duration of the block; always restored."""
    params = dict(model.named_parameters())
    saved = {}
    try:
        with torch.no_grad():
            for name, value in values.items():
                saved[name] = params[name].detach().clone()
                params[name].copy_(value)
        yield model
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)


class Interventions:
    """Loss of the probe model under bias interventions, on the selection split."""

    def __init__(self, ctx):
        self.ctx, workload, probe = ctx, ctx.workload, ctx.probe
        self.model = probe.model(workload)
        size = int(ctx.method.get("selection_size") or 256)
        self.data = workload.selection_split(min(size, len(workload.train_set)), ctx.seed)
        head = set(ctx.bias_map.head_param_names(self.model))
        self.pretrained = {n: v for n, v in probe.pretrained.items() if n not in head}
        self.name = {cell: ctx.bias_map.param_name(cell) for cell in ctx.cells}
        self.loss_pre = self.loss({})
        self.loss_probe = self.loss(None)

    def loss(self, values: dict | None) -> float:
        """values None: the probe model; otherwise pre-trained biases with `values` applied on top."""
        base = {} if values is None else self.pretrained
        with intervene(self.model, base), intervene(self.model, values or {}):
            return self.ctx.workload.mean_loss(self.model, self.data)

    def score(self, cells) -> float:
        fine = {self.name[c]: self.ctx.probe.bf[c] for c in cells}
        pre = {self.name[c]: self.ctx.probe.b0[c] for c in cells}
        sufficiency = self.loss_pre - self.loss(fine)
        with intervene(self.model, pre):
            necessity = self.ctx.workload.mean_loss(self.model, self.data) - self.loss_probe
        return (sufficiency + necessity) / 2


def _interventions(ctx) -> Interventions:
    if "causal" not in ctx.memo:
        ctx.memo["causal"] = Interventions(ctx)
    return ctx.memo["causal"]


def type_scores(ctx) -> dict:
    iv = _interventions(ctx)
    types = sorted({t for _, t in ctx.cells}, key=lambda t: [c[1] for c in ctx.cells].index(t))
    return {t: iv.score([c for c in ctx.cells if c[1] == t]) for t in types}


def scores(ctx) -> dict:
    if not ctx.method.get("cells", True):
        return {}
    iv = _interventions(ctx)
    cells = progress(ctx.cells, desc="causal: single-cell interventions", enabled=ctx.progress)
    return {cell: iv.score([cell]) for cell in cells}
