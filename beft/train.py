"""The fine-tuning loop: the paper's recipe (AdamW eps 1e-6, no weight decay, constant lr, clip 1.0) on the
trainable parameters only. Frozen weights get no gradient, so bias-only steps skip every weight gradient.
`optimizer: sgd` swaps AdamW for plain gradient descent (no momentum), under which a b_v-only run is a
W_o W_oᵀ-preconditioned b_o-only run (docs/why-bv.md)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from beft.evaluate import autocast, to_device
from beft.progress import progress


class Diverged(RuntimeError):
    """The training loss became NaN or infinite, or exploded; the run is recorded as failed."""


# A batch loss this many times the first batch's (or 1, if that was smaller) is divergence. A working run's loss
# falls, and a batch's loss rarely reaches a few times its start; lr=1e6 reaches 1e5 times its start while still
# finite, and would otherwise be recorded ok.
DIVERGENCE_FACTOR = 100.0


def check_loss(loss: float, first: float | None, epoch: int, step: int) -> None:
    """Raise Diverged for a non-finite loss, or one above DIVERGENCE_FACTOR x max(first batch loss, 1)."""
    if not math.isfinite(loss):
        raise Diverged(f"training loss became {loss} at epoch {epoch}, step {step}")
    limit = DIVERGENCE_FACTOR * max(first if first is not None else loss, 1.0)
    if loss > limit:
        raise Diverged(f"training loss exploded to {loss:.4g} at epoch {epoch}, step {step} (first batch: "
                       f"{first:.4g}; limit {DIVERGENCE_FACTOR:g} x max(first, 1) = {limit:.4g}); lower trainer.lr")


@dataclass
class TrainSettings:
    lr: float
    epochs: int
    batch_size: int = 16
    max_grad_norm: float = 1.0
    adam_eps: float = 1e-6
    weight_decay: float = 0.0
    schedule: str = "constant"          # constant | linear (decay to 0, no warmup)
    grad_accum: int = 1
    group_by_length: bool = True
    precision: str = "fp32"
    seed: int = 0
    progress: bool = True
    desc: str = "train"
    max_steps: int | None = None        # stop early after this many optimizer steps (probes, smoke tests)
    eval_every_epoch: bool = True       # evaluate after every epoch (encoders, as the authors) or once at the end
    optimizer: str = "adamw"            # adamw (the paper's) | sgd (plain: p <- p - lr g, no momentum)
    frozen_dtype: str = "auto"          # trainer.frozen_dtype as chosen (auto follows kind, precision, method)


@dataclass
class TrainLog:
    history: list[dict] = field(default_factory=list)   # one entry per epoch: loss, seconds, eval metrics
    steps: int = 0
    seconds: float = 0.0
    loss_scale: float | None = None   # fp16: the gradient scaler's scale at the end (None: no scaler)


OPTIMIZERS = ("adamw", "sgd")


def make_optimizer(params, s: TrainSettings) -> torch.optim.Optimizer:
    if s.optimizer == "sgd":   # no momentum, no dampening: each step is exactly p - lr (g + weight_decay p)
        return torch.optim.SGD(params, lr=s.lr, momentum=0.0, weight_decay=s.weight_decay)
    if s.optimizer != "adamw":
        raise ValueError(f"unknown optimizer {s.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    # transformers 5 dropped its AdamW; torch's with eps 1e-6 and no weight decay is the paper's optimizer.
    return torch.optim.AdamW(params, lr=s.lr, eps=s.adam_eps, weight_decay=s.weight_decay)


def train(model, workload, data, s: TrainSettings, on_epoch_end=None, on_step_end=None) -> TrainLog:
    """Train the parameters that require grad.

    `on_epoch_end(epoch, entry, last)` may return metrics to add to the epoch's history entry; `last` is true for
    the final epoch (also when `max_steps` ends training early). `on_step_end(step, total_steps)` runs after
    every optimizer step.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, s)
    device = next(model.parameters()).device
    batches_per_epoch = math.ceil(len(data) / s.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / s.grad_accum)
    total_steps = steps_per_epoch * s.epochs if s.max_steps is None else min(s.max_steps, steps_per_epoch * s.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, (lambda step: max(0.0, 1 - step / total_steps)) if s.schedule == "linear" else (lambda step: 1.0))
    # fp16 gradients underflow: the loss is scaled up before backward and the gradients unscaled before clipping
    # (a step whose gradients overflowed is skipped and the scale lowered). Disabled, it is the identity.
    scaler = torch.amp.GradScaler(device.type, enabled=s.precision == "fp16")
    generator = torch.Generator().manual_seed(s.seed)   # batch order: the same for every method with this seed
    log = TrainLog()
    start = time.perf_counter()
    model.train()
    bar = progress(total=total_steps, desc=s.desc, enabled=s.progress)   # a line per ~10 % outside a terminal
    first_loss = None
    for epoch in range(s.epochs):
        epoch_start, losses = time.perf_counter(), []
        for i, batch in enumerate(workload.batches(data, s.batch_size, generator, s.group_by_length)):
            with autocast(device, s.precision):
                loss = workload.loss(model, to_device(batch, device))
            value = loss.item()
            check_loss(value, first_loss, epoch, log.steps)
            first_loss = value if first_loss is None else first_loss
            scaler.scale(loss / s.grad_accum).backward()
            losses.append(value)
            if (i + 1) % s.grad_accum == 0 or i + 1 == batches_per_epoch:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                log.steps += 1
                if on_step_end is not None:
                    on_step_end(log.steps, total_steps)
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.3f}")
                if log.steps >= total_steps:
                    break
        entry = {"epoch": epoch, "train_loss": sum(losses) / max(len(losses), 1),
                 "seconds": time.perf_counter() - epoch_start}
        last = log.steps >= total_steps or epoch == s.epochs - 1
        if on_epoch_end is not None:
            entry.update(on_epoch_end(epoch, entry, last) or {})
        log.history.append(entry)
        if last:
            break
    bar.close()
    log.seconds = time.perf_counter() - start
    log.loss_scale = scaler.get_scale() if scaler.is_enabled() else None
    return log
