"""The probe: one all-bias (BitFit) fine-tuning run whose bias changes the post-hoc scores read.

It is an ordinary cached training (`beft.fit`), so a probe with the paper's schedule *is* the `bitfit` run of
the same seed, and beft, magnitude and causal in one sweep share it. `method.probe.epochs` or
`method.probe.fraction` shorten it (and then it is a different training, cached on its own).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace

import torch

from beft.bias_map import BiasMap, Cell
from beft.cache import Cache
from beft.errors import BeftError
from beft.fingerprint import digest
from beft.fit import (Fit, bias_like, cached_fit, fit, pretrained_values, restore, snapshot_step,
                      training_inputs)
from beft.train import TrainSettings
from beft.trainable import Scope

log = logging.getLogger("beft")


@dataclass
class Probe:
    fit: Fit
    b0: dict[Cell, torch.Tensor]     # pre-trained bias per cell (float64, CPU)
    bf: dict[Cell, torch.Tensor]     # bias after the probe per cell
    pretrained: dict[str, torch.Tensor]  # pre-trained value of every parameter the probe trained
    seconds: float                   # time spent here (near 0 when reused)
    _model: object = None

    def model(self, workload):
        """The probe's model (all biases and head as trained); rebuilt from the cache when it was reused."""
        if self._model is None:
            self._model = restore(workload, self.fit)
        return self._model

    def release(self) -> None:
        """Let the probe's model go (scoring is done): the next training loads its own, and one model at a time
        fits the device."""
        self._model = None


def probe_settings(method_cfg, settings: TrainSettings) -> TrainSettings:
    spec = method_cfg.get("probe") or {}
    fraction, epochs = spec.get("fraction"), spec.get("epochs")
    if fraction is not None and not (0 < float(fraction) <= 1):
        raise BeftError(f"method.probe.fraction={fraction} must be in (0, 1]: the share of the probe's "
                        "training steps to run (1 = the full schedule)")
    if epochs is not None and int(epochs) < 1:
        raise BeftError(f"method.probe.epochs={epochs} must be a positive number of epochs (or null)")
    probe = replace(settings, epochs=int(epochs) if epochs is not None else settings.epochs,
                    desc=f"probe {settings.desc}")
    return probe, (None if fraction is None else float(fraction))


def run_probe(method_cfg, workload, bias_map: BiasMap, settings: TrainSettings, cache: Cache, cells) -> Probe:
    start = time.perf_counter()
    settings, fraction = probe_settings(method_cfg, settings)
    result = model = None
    if fraction is not None and fraction < 1:
        steps_per_epoch = math.ceil(math.ceil(len(workload.train_set) / settings.batch_size) / settings.grad_accum)
        step = snapshot_step(fraction, steps_per_epoch * settings.epochs)
        result = _from_full_probe(workload, settings, cache, step)
        settings = replace(settings, max_steps=step)
    if result is None:
        result, model = fit(workload, Scope("all_biases"), settings, cache)
    needed = {n for n in result.state if bias_like(n)}   # the head is not scored, nor reverted by causal
    pretrained = {n: result.start[n] for n in needed} if result.start is not None and set(result.start) >= needed \
        else pretrained_values(workload, needed, alive=model)
    b0 = {c: pretrained[bias_map.param_name(c)].double() for c in cells}
    bf = {c: result.state[bias_map.param_name(c)].double() for c in cells}
    return Probe(result, b0, bf, pretrained, time.perf_counter() - start, model)


def _from_full_probe(workload, settings: TrainSettings, cache: Cache, step: int) -> Fit | None:
    """The shortened probe as a snapshot of the full one, where that is cached and kept one at `step`."""
    full_scope = Scope("all_biases")
    inputs = training_inputs(workload, full_scope, settings)
    full = cached_fit(cache, digest(inputs), inputs, full_scope)
    if full is None or step not in full.snapshots:
        return None
    result = replace(full, state=full.snapshots[step], steps=step, snapshots={}, reused=True, history=[],
                     notes=[f"the full probe {full.key} after {step} of its {full.steps} steps (constant lr: what a "
                            "probe stopped there reaches)"])
    log.info("shortened probe: the full probe's biases after %d of %d steps", step, full.steps)
    return result
