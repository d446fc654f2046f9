"""Random scores, seeded: the control every selection method must beat (`method=random`)."""
from __future__ import annotations

import numpy as np

NEEDS_PROBE = False


def scores(ctx) -> dict:
    rng = np.random.RandomState(ctx.seed)
    return {cell: float(value) for cell, value in zip(ctx.cells, rng.uniform(size=len(ctx.cells)))}
