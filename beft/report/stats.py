"""How sure a paired comparison over seeds is: mean difference, a bootstrap interval, wins, and an exact
sign-flip test. With 3 seeds the smallest possible two-sided sign-flip p is 0.25: three seeds cannot settle a
difference on their own, and the tables say so rather than star it."""
from __future__ import annotations

import itertools
import math

import numpy as np

BOOTSTRAP = 10_000
EXACT_UP_TO = 16       # enumerate all 2^n sign flips up to this many pairs; seeded Monte Carlo beyond


def paired(a: list[float], b: list[float]) -> dict:
    """Compare a and b paired by position (the same seeds): differences a - b."""
    d = np.asarray(a, float) - np.asarray(b, float)
    n = len(d)
    if n == 0:
        return {"n": 0, "diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "wins": 0, "ties": 0,
                "losses": 0, "p": math.nan}
    low, high = bootstrap_ci(d)
    return {"n": n, "diff": float(d.mean()), "ci_low": low, "ci_high": high, "wins": int((d > 0).sum()),
            "ties": int((d == 0).sum()), "losses": int((d < 0).sum()), "p": sign_flip_p(d)}


def bootstrap_ci(d: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean difference (seeded: the same numbers give the same interval).
    It is optimistic for a handful of pairs; read it together with the sign-flip p."""
    if len(d) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(0)
    means = d[rng.integers(0, len(d), size=(BOOTSTRAP, len(d)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def sign_flip_p(d: np.ndarray) -> float:
    """Two-sided p of the paired sign-flip (permutation) test of mean difference 0: exact for small n."""
    d = np.asarray(d, float)
    observed = abs(d.mean())
    if len(d) <= EXACT_UP_TO:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    else:
        signs = np.random.default_rng(0).choice((1.0, -1.0), size=(2 ** EXACT_UP_TO, len(d)))
    flipped = np.abs((signs * d).mean(axis=1))
    return float((flipped >= observed - 1e-12).mean())


def mcnemar_p(first_only: int, second_only: int) -> float:
    """Exact two-sided McNemar p over paired examples: under no difference, each example one arm alone got right
    is equally likely to be either arm's (a binomial test on the discordant pairs); 1.0 when there are none."""
    from scipy.stats import binomtest

    n = first_only + second_only
    return 1.0 if n == 0 else float(binomtest(first_only, n, 0.5).pvalue)
