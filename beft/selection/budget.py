"""How much to train once scores are known (`budget` group).

one_type: the top-ranked bias type in every layer (the paper's setting);
types:    the top `budget.k` types in every layer;
params:   the best (layer, type) cells by score while they fit in `budget.max_params` (head not counted).
"""
from __future__ import annotations

from beft.bias_map import PAPER_LABELS, BiasMap, Cell
from beft.errors import BeftError, choices_error

BUDGETS = ("one_type", "types", "params")


def check(budget_cfg, bias_map: BiasMap, cells: list[Cell]) -> None:
    """Bad budgets fail before any probe is trained."""
    if budget_cfg.name not in BUDGETS:
        raise choices_error("budget", budget_cfg.name, BUDGETS)
    if budget_cfg.name == "types":
        k, n_types = budget_cfg.get("k"), len({t for _, t in cells})
        if not isinstance(k, int) or not 1 <= k <= n_types:
            raise BeftError(f"budget.k={k!r} must be a whole number of bias types from 1 to {n_types}")
    if budget_cfg.name == "params":
        smallest = min(bias_map.size(c) for c in cells)
        limit = budget_cfg.get("max_params")
        if not isinstance(limit, int) or limit < smallest:
            raise BeftError(f"budget.max_params={limit!r} is smaller than one bias vector ({smallest} parameters "
                            f"for {bias_map.model_type}); give at least {smallest}")


def choose(budget_cfg, bias_map: BiasMap, cell_scores: dict, ranking: list[str], cells: list[Cell]) -> list[Cell]:
    if budget_cfg.name == "one_type":
        return [c for c in cells if c[1] == ranking[0]]
    if budget_cfg.name == "types":
        top = set(ranking[: budget_cfg.k])
        return [c for c in cells if c[1] in top]
    if not cell_scores:
        raise BeftError("budget=params needs per-cell scores; this method computed type scores only "
                        "(for causal, set method.cells=true)")
    chosen, used = [], 0
    # Highest score first; ties broken by layer then type order, so the choice is deterministic.
    for cell in sorted(cells, key=lambda c: (-cell_scores[c], c[0], list(PAPER_LABELS).index(c[1]))):
        if used + bias_map.size(cell) <= budget_cfg.max_params:
            chosen.append(cell)
            used += bias_map.size(cell)
    return sorted(chosen, key=lambda c: (c[0], list(PAPER_LABELS).index(c[1])))
