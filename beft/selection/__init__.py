"""Bias-term selection: score every (layer, type) cell, rank the types, and let the budget choose targets.

A selection method is one module here and one YAML in conf/method/, registered in SELECTORS. The module gives
`NEEDS_PROBE` and `scores(ctx) -> {cell: score}`, and optionally `type_scores(ctx) -> {type: score}` (else a
type's score is the mean over its layers, which ranks like the authors' sum) and `check(bias_map)`, called
before any probe is trained. Selection never sees the evaluation split.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from beft.bias_map import TYPES, BiasMap, Cell, canonical_type
from beft.cache import Cache
from beft.errors import BeftError
from beft.selection import budget, causal, fisher, magnitude, projection, random_baseline
from beft.runtime import free_device_memory
from beft.selection.probe import Probe, run_probe
from beft.train import TrainSettings

SELECTORS = {"beft": projection, "magnitude": magnitude, "fisher": fisher, "causal": causal,
             "random": random_baseline}


@dataclass
class SelectionContext:
    method: object                    # the method's own config section (conf/method/<name>.yaml)
    seed: int
    progress: bool
    workload: object
    bias_map: BiasMap
    cells: list[Cell]                 # the candidate cells, in (layer, type) order
    probe: Probe | None
    warnings: list[str] = field(default_factory=list)
    memo: dict = field(default_factory=dict)


@dataclass
class Selection:
    method: str
    cell_scores: dict
    type_scores: dict
    ranking: list[str]
    targets: list[Cell]
    warnings: list[str]
    probe: Probe | None
    seconds: float

    def to_record(self, bias_map: BiasMap, budget_cfg) -> dict:
        per_layer = {t: [self.cell_scores.get((layer, t)) for layer in range(bias_map.num_layers)]
                     for t in self.ranking}
        probe = None
        if self.probe is not None:
            fit = self.probe.fit
            probe = {"key": fit.key, "reused": fit.reused, "steps": fit.steps, "seconds": self.probe.seconds,
                     "train_seconds": fit.train_seconds}
        return {"method": self.method, "scores": per_layer, "type_scores": self.type_scores,
                "ranking": self.ranking, "budget": dict(budget_cfg),
                "chosen_types": sorted({t for _, t in self.targets}, key=self.ranking.index),
                "targets": [list(c) for c in self.targets],
                "chosen_params": sum(bias_map.size(c) for c in self.targets),
                "warnings": self.warnings, "probe": probe, "seconds": self.seconds}


def candidate_cells(method_cfg, bias_map: BiasMap) -> list[Cell]:
    wanted = method_cfg.get("candidates")
    types = [canonical_type(t) for t in wanted] if wanted else bias_map.types
    cells = bias_map.cells(types)
    if len({t for _, t in cells}) < 1:
        raise BeftError(f"method.candidates={list(wanted or [])} leaves no bias type to choose from")
    return cells


def score(module, ctx: SelectionContext) -> tuple[dict, dict, list[str]]:
    """(cell scores, type scores, ranking). A type's score is the mean over its layers unless the method
    scores types itself; the ranking is highest first, ties (b_k's exact zeros) in the order q k v o ..."""
    cell_scores = module.scores(ctx)
    if hasattr(module, "type_scores"):
        type_scores = module.type_scores(ctx)
    else:
        types = {t for _, t in ctx.cells}
        type_scores = {t: sum(cell_scores[c] for c in ctx.cells if c[1] == t) / sum(c[1] == t for c in ctx.cells)
                       for t in types}
    ranking = sorted(type_scores, key=lambda t: (-type_scores[t], TYPES.index(t)))
    return cell_scores, type_scores, ranking


def select(method_cfg, budget_cfg, workload, settings: TrainSettings, cache: Cache) -> tuple[Selection, BiasMap]:
    """Score, rank and choose with the method `method_cfg.name`; the seed and progress bar come from settings."""
    module = SELECTORS[method_cfg.name]
    bias_map = workload.bias_map()
    cells = candidate_cells(method_cfg, bias_map)
    budget.check(budget_cfg, bias_map, cells)
    if hasattr(module, "check"):
        module.check(bias_map)
    probe = run_probe(method_cfg, workload, bias_map, settings, cache, cells) if module.NEEDS_PROBE else None
    start = time.perf_counter()
    ctx = SelectionContext(method_cfg, settings.seed, settings.progress, workload, bias_map, cells, probe)
    cell_scores, type_scores, ranking = score(module, ctx)
    targets = budget.choose(budget_cfg, bias_map, cell_scores, ranking, cells)
    ctx.memo.clear()        # the causal interventions hold the probe's model
    if probe is not None:
        probe.release()
    free_device_memory()    # scoring is done: the final training loads the job's next (and only) model
    selection = Selection(method_cfg.name, cell_scores, type_scores, ranking, targets, ctx.warnings, probe,
                          time.perf_counter() - start)
    return selection, bias_map
