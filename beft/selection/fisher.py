"""Empirical Fisher information at the pre-trained weights (docs/paper.md §A.2), no probe needed.

Batch form (the authors'): a fresh head, eval mode (no dropout), mini-batches of `method.batch_size` (8) in a
seeded random order; per batch the mean loss's gradient is clipped to global norm `method.clip` (1.0) over all
biases and the head, and

    F(b) = (1/N) sum_n mean_i g_n[b][i]^2          (N mini-batches)

`method.per_example=true` (ours) is the true empirical Fisher: the same average over single examples, each
gradient unclipped. Per-example gradients are taken one example at a time: exact for any workload (HF's mask
construction branches on data, which torch.func's vmap cannot trace).
"""
from __future__ import annotations

import torch

from beft.evaluate import autocast, to_device
from beft.progress import progress as progress_bar
from beft.trainable import InertKeyBiases, Scope, apply_scope

NEEDS_PROBE = False


def fisher_scores(workload, bias_map, cells, *, batch_size: int, clip: float | None, seed: int,
                  per_example: bool, progress: bool = False) -> dict:
    model, _ = workload.new_model()
    apply_scope(model, bias_map, Scope("all_biases"))
    inert_keys = InertKeyBiases(model, bias_map)  # b_k's gradient is exactly 0; drop the round-off
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = {cell: bias_map.param(model, cell) for cell in cells}
    totals = {cell: 0.0 for cell in cells}
    generator = torch.Generator().manual_seed(seed)
    size = 1 if per_example else batch_size
    n = 0
    batches = workload.batches(workload.train_set, size, generator, group_by_length=False)
    for batch in progress_bar(batches, desc="fisher", total=-(-len(workload.train_set) // size), enabled=progress):
        model.zero_grad(set_to_none=True)
        with autocast(workload.device, workload.precision):
            loss = workload.loss(model, to_device(batch, workload.device))
        loss.backward()
        if clip is not None and not per_example:
            torch.nn.utils.clip_grad_norm_(params, clip)
        for cell, param in grads.items():
            totals[cell] += float(param.grad.double().pow(2).mean())
        n += 1
    inert_keys.remove()
    return {cell: total / n for cell, total in totals.items()}


def scores(ctx) -> dict:
    m = ctx.method
    return fisher_scores(ctx.workload, ctx.bias_map, ctx.cells, batch_size=int(m.get("batch_size", 8)),
                         clip=m.get("clip", 1.0), seed=ctx.seed, per_example=bool(m.get("per_example")),
                         progress=ctx.progress)
