"""Magnitude (BitFit's "amount of change", docs/paper.md §A.1): s(b) = mean_i |b_probe[i] - b_0[i]|."""
from __future__ import annotations

NEEDS_PROBE = True


def magnitude(b0, bf) -> float:
    return float((bf - b0).abs().mean())


def scores(ctx) -> dict:
    return {cell: magnitude(ctx.probe.b0[cell], ctx.probe.bf[cell]) for cell in ctx.cells}
