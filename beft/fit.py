"""Train one scope on a workload and evaluate it per epoch, or reuse an identical training from the cache."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields

import torch

from beft import bias_updates
from beft.bias_map import BiasMap
from beft.cache import Cache
from beft.errors import BeftError
from beft.fingerprint import code_version, digest
from beft.models import num_parameters
from beft.record import without_neutral
from beft.runtime import free_device_memory
from beft.train import TrainLog, TrainSettings, train
from beft.trainable import InertKeyBiases, Scope, apply_scope

log = logging.getLogger("beft")
STATE_LIMIT = 5_000_000  # keep the trained tensors of parameter-efficient scopes only (not full fine-tuning)
# An all-bias training (= the selection methods' probe) also keeps its biases after these shares of its steps.
# With a constant lr they are exactly what a probe shortened to that share reaches (the same batches, the same
# updates), so `method.probe.fraction` 0.1 / 0.25 / 0.5 is free once the full probe exists.
SNAPSHOT_FRACTIONS = (0.1, 0.25, 0.5)
# TrainSettings fields added after trainings were cached, at the value that trains exactly as before they existed:
# left out of the training key at that value (beft.record.NEUTRAL is the same rule for record keys).
NEUTRAL_SETTINGS: dict = {"optimizer": "adamw", "frozen_dtype": "auto"}


def snapshot_step(fraction: float, total_steps: int) -> int:
    """The optimizer step a probe shortened to `fraction` of `total_steps` stops at."""
    return max(1, math.ceil(fraction * total_steps))


@dataclass
class Fit:
    key: str
    history: list[dict]
    steps: int
    train_seconds: float
    eval_seconds: float
    trainable: int
    total: int
    state: dict[str, torch.Tensor] | None    # trained values of the trainable parameters, on CPU
    model_source: dict
    notes: list[str] = field(default_factory=list)
    zero_gradient: dict = field(default_factory=dict)
    reused: bool = False
    snapshots: dict = field(default_factory=dict)  # {step: state} at SNAPSHOT_FRACTIONS (all-bias trainings)
    bias_update: dict = field(default_factory=dict)  # bias_updates scopes: form, shapes, trainable counts
    head_params: int | None = None        # of `trainable`, the task head's (None in trainings cached before)
    predictions: dict | None = None       # the final evaluation per example (None in trainings cached before)
    # The pre-trained values of the kept biases (b_0), read from the training's own model before it trained, on
    # CPU: the probe's scores and the adapter's Δb need them, and no second model is loaded to get them. None in
    # trainings cached before it was kept (then they are read from a model loaded when no other is alive).
    start: dict[str, torch.Tensor] | None = None


def training_inputs(workload, scope: Scope, settings: TrainSettings) -> dict:
    """Everything that determines a training's numbers: the starting weights and data (the workload's
    identity), what is trained, and the schedule. Not the method that asked for it, nor the config's layout.
    (The evaluation schedule sits beside the settings, where it was before it moved into them: same keys.)"""
    trained = {k: v for k, v in asdict(settings).items() if k not in ("progress", "desc", "eval_every_epoch")}
    trained = without_neutral(trained, NEUTRAL_SETTINGS)
    return {"start": workload.identity(), "scope": scope.identity(), "code": code_version(),
            "settings": trained, "eval_every_epoch": settings.eval_every_epoch}


def training_key(workload, scope: Scope, settings: TrainSettings) -> str:
    return digest(training_inputs(workload, scope, settings))


def fit(workload, scope: Scope, settings: TrainSettings, cache: Cache, logger=None) -> tuple[Fit, object]:
    """Returns (Fit, trained model); the model is None when the training was reused from the cache."""
    inputs = training_inputs(workload, scope, settings)
    key = digest(inputs)
    with cache.claim("fits", key):  # a job asking for a training another job is running waits, then reuses it
        cached = cached_fit(cache, key, inputs, scope)
        if cached is not None:
            return _reuse(cached, scope, logger), None
        result, model = _train(workload, scope, settings, key, logger)
        cache.put("fits", key, inputs, *entry_of(result))
    return result, model


def _reuse(result: Fit, scope: Scope, logger) -> Fit:
    result.reused = True
    log.info("reusing an identical training (%s, %d steps) from the cache", scope.describe(), result.steps)
    if logger is not None:
        for entry in result.history:
            logger.log(entry, step=entry["epoch"])
    return result


class EpochEvaluation:
    """The evaluation of a training: called at the end of each epoch, it scores the model on the workload's
    evaluation sets (every epoch, or only the last one as the paper does), logs the epoch, and keeps the time
    spent evaluating apart from the training time."""

    def __init__(self, workload, model, every_epoch: bool, logger=None):
        self.workload, self.model, self.every_epoch, self.logger = workload, model, every_epoch, logger
        self.seconds = 0.0
        self.predictions = None   # the last evaluation's rows per example: what the record's metrics are made of

    def __call__(self, epoch: int, entry: dict, last: bool) -> dict:
        scores = {}
        if self.every_epoch or last:
            start = time.perf_counter()
            self.predictions = self.workload.predict(self.model)
            scores = self.workload.score(self.predictions)
            self.seconds += time.perf_counter() - start
        if self.logger is not None:
            self.logger.log({**entry, **scores}, step=epoch)
        return scores


def _train(workload, scope: Scope, settings: TrainSettings, key: str, logger) -> tuple[Fit, object]:
    model, source = workload.new_model()
    # b_0, before a scope reparametrises any bias (bias_updates): a few numbers per layer, kept on the CPU
    b0 = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if bias_like(n)}
    bias_map = BiasMap(model)
    trainable = apply_scope(model, bias_map, scope)
    check_placed(model)
    total = num_parameters(model)
    head = set(bias_map.head_param_names(model))
    head_params = sum(p.numel() for n, p in model.named_parameters() if n in head and p.requires_grad)
    log.info("trainable parameters: %s of %s (%.4f%%) [%s]", f"{trainable:,}", f"{total:,}",
             100 * trainable / total, scope.describe())
    inert_keys = InertKeyBiases(model, bias_map)
    evaluation = EpochEvaluation(workload, model, settings.eval_every_epoch, logger)

    snapshots = {}
    snapshot = scope.kind == "all_biases" and settings.schedule == "constant" and settings.max_steps is None

    def on_step_end(step, total_steps):
        if snapshot and step in {snapshot_step(f, total_steps) for f in SNAPSHOT_FRACTIONS}:
            snapshots[step] = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}

    if trainable:
        run = train(model, workload, workload.train_set, settings, on_epoch_end=evaluation, on_step_end=on_step_end)
    else:  # zero-shot, in-context learning: nothing can change, so evaluate once
        start = time.perf_counter()
        run = TrainLog(history=[{"epoch": 0, "train_loss": None, "seconds": 0.0}])
        run.history[0].update(evaluation(0, run.history[0], last=True))
        run.seconds = time.perf_counter() - start
    result = Fit(key=key, history=run.history, steps=run.steps, train_seconds=run.seconds - evaluation.seconds,
                 eval_seconds=evaluation.seconds, trainable=trainable, total=total, state=None, model_source=source,
                 head_params=head_params, predictions=evaluation.predictions)
    if inert_keys.active:
        result.notes.append(inert_keys.note())
        result.zero_gradient = {"k": {"max_abs_roundoff": inert_keys.max_roundoff}}
        log.warning(inert_keys.note())
        inert_keys.remove()
    if scope.kind == "bias_updates":
        # b_0 + Δb becomes a plain trained bias: the state, the cache and the adapter look like a direct bias run.
        result.bias_update = bias_updates.describe(model, scope.update)
        bias_updates.merge(model)
    if sum(p.numel() for p in model.parameters() if p.requires_grad) <= STATE_LIMIT:  # what would be stored
        result.state = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
        result.snapshots = snapshots
        result.start = {n: v for n, v in b0.items() if n in result.state}
    return result, model


def check_placed(model) -> None:
    """A model spread by model.device_map must keep what trains on a real device: accelerate's CPU / disk
    offload holds a module's weights outside it (on `meta`), where an optimizer step would never land."""
    offloaded = [n for n, p in model.named_parameters() if p.requires_grad and p.is_meta]
    if offloaded:
        raise BeftError(f"model.max_memory offloads {len(offloaded)} trainable parameters (first: {offloaded[0]}) "
                        "to the CPU or disk, where they cannot train; give the GPUs more room in model.max_memory, "
                        "or offload only what is frozen")


def bias_like(name: str) -> bool:
    """A bias vector (own, or one PEFT added to a bias-free projection): a few numbers per layer."""
    return name.endswith(".bias") or ".beft_bias." in name


def restore(workload, result: Fit):
    """A model with a cached training's trained parameters put back (the rest is the pretrained model)."""
    if result.state is None:
        raise ValueError("this training kept no parameters (too many to cache); rerun it with force=true")
    model, _ = workload.new_model()
    missing = set(result.state) - {n for n, _ in model.named_parameters()}
    if missing:
        raise ValueError(f"cached parameters not in the model: {sorted(missing)[:3]}")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in result.state:
                param.copy_(result.state[name].to(param.device))
    return model


def pretrained_values(workload, names: set, alive=None) -> dict:
    """The pre-trained values of `names`, for a training cached before it kept them (Fit.start): read from a
    model loaded while no other is alive (a probe's own model, `alive`, is set aside on the CPU meanwhile)."""
    device = None
    if alive is not None:
        device = next(alive.parameters()).device
        alive.to("cpu")
    model, _ = workload.new_model()
    values = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if n in names}
    del model
    free_device_memory()
    if alive is not None:
        alive.to(device)
    return values


# Scopes whose kept state is exactly their trainable parameters (random_weights keeps whole weight matrices of
# which a few scalars train; bias_updates keeps the merged biases, not the update's own parameters).
STATE_IS_TRAINABLE = ("targets", "all_biases", "all", "head", "adapter", "none")
_ENTRY_TYPES = {"key": str, "history": list, "steps": int, "train_seconds": (int, float),
                "eval_seconds": (int, float), "trainable": int, "total": int, "model_source": dict, "notes": list,
                "zero_gradient": dict, "bias_update": dict, "head_params": (int, type(None)), "state_kept": bool,
                "predictions": (dict, type(None))}


def entry_of(result: Fit) -> tuple[dict, dict]:
    """A training as the cache stores it: its JSON fields, and its tensors under flat names (`state/<param>`,
    `snapshots/<step>/<param>`)."""
    entry = {f.name: getattr(result, f.name) for f in fields(Fit)
             if f.name not in ("state", "snapshots", "reused", "start")}
    entry["state_kept"] = result.state is not None
    tensors = {f"state/{name}": value for name, value in (result.state or {}).items()}
    tensors.update({f"start/{name}": value for name, value in (result.start or {}).items()})
    for step, state in result.snapshots.items():
        tensors.update({f"snapshots/{step}/{name}": value for name, value in state.items()})
    return entry, {name: value.detach().cpu().contiguous() for name, value in tensors.items()}


def cached_fit(cache: Cache, key: str, inputs: dict, scope: Scope) -> Fit | None:
    """The training stored under `key`, if the cache holds one stating exactly `inputs` and it is whole."""
    found = cache.get("fits", key, inputs)
    if found is None:
        return None
    try:
        return _fit_of(*found, key=key, scope=scope)
    except (ValueError, TypeError, KeyError) as err:
        log.warning("cache entry fits/%s does not hold a whole training (%s): training it again", key, err)
        return None


def _fit_of(entry: dict, tensors: dict, key: str, scope: Scope) -> Fit:
    for name, kind in _ENTRY_TYPES.items():
        value = entry.get(name)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ValueError(f"its {name} is {type(value).__name__}")
    if entry["key"] != key:
        raise ValueError(f"it names the training {entry['key']}")
    if not entry["history"] or not all(isinstance(e, dict) and isinstance(e.get("epoch"), int)
                                       for e in entry["history"]):
        raise ValueError("its history is not a list of epochs")
    state = {n[len("state/"):]: t for n, t in tensors.items() if n.startswith("state/")}
    state = state if entry["state_kept"] else None
    start = {n[len("start/"):]: t for n, t in tensors.items() if n.startswith("start/")}
    snapshots: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("start/"):
            continue
        if name.startswith("snapshots/"):
            _, step, param = name.split("/", 2)
            snapshots.setdefault(int(step), {})[param] = value
        elif not name.startswith("state/"):
            raise ValueError(f"it holds a tensor {name!r}")
    shapes = {n: t.shape for n, t in (state or {}).items()}
    if any({n: t.shape for n, t in snap.items()} != shapes for snap in snapshots.values()):
        raise ValueError("its snapshots are not of its trained parameters")
    if state is not None and scope.kind in STATE_IS_TRAINABLE and sum(t.numel() for t in state.values()) != \
            entry["trainable"]:
        raise ValueError(f"its {sum(t.numel() for t in state.values()):,} trained numbers are not its "
                         f"{entry['trainable']:,} trainable parameters")
    predictions = entry.get("predictions")
    if predictions is not None and not all(isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
                                           for rows in predictions.values()):
        raise ValueError("its predictions are not rows per split")
    if state is not None and any(n not in state or t.shape != state[n].shape for n, t in start.items()):
        raise ValueError("its pre-trained values are not of its trained parameters")
    kept = {name: entry.get(name) for name in _ENTRY_TYPES if name != "state_kept"}
    return Fit(**kept, state=state, snapshots=snapshots, start=(start or None) if state is not None else None)
