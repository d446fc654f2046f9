"""Config checks and derived settings: bad input becomes one line naming the key and the valid choices."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from omegaconf import OmegaConf

from beft.bias_map import canonical_type
from beft.checks import CONF_DIR, check_overrides, check_values, group_choices  # noqa: F401 (re-exported)
from beft.errors import BeftError, choices_error
from beft.train import TrainSettings
from beft.workload import kind_of



def all_methods() -> list[str]:
    from beft.methods import FIXED
    from beft.selection import SELECTORS

    return sorted({*FIXED, *SELECTORS})


def validate(cfg) -> None:
    """Checks Hydra cannot do: values inside the groups."""
    check_values(cfg)
    if cfg.method.name not in all_methods():
        raise choices_error("method", cfg.method.name, all_methods())
    for term in cfg.method.get("terms") or []:
        canonical_type(term)
    if kind_of(cfg.model) == "decoder":   # each workload checks what it needs of the model, task and method
        from beft.decoder.spec import validate as validate_workload
    else:
        from beft.encoder import validate as validate_workload
    validate_workload(cfg)
    if cfg.method.name == "rand_uniform" and cfg.trainer.weight_decay:
        raise BeftError(f"method=rand_uniform needs trainer.weight_decay=0 (got {cfg.trainer.weight_decay}): weight "
                        "decay would move the weights outside the random mask")
    resolve_device(cfg.trainer.device)


def train_size(cfg) -> int | None:
    """Training examples for this regime: regime.n, else the task's size for the regime; None means all."""
    if cfg.regime.get("n") is not None:
        return int(cfg.regime.n)
    if cfg.regime.name == "full":
        return None
    return int(cfg.task.sizes[cfg.regime.name])


def data_dir(cfg) -> str | None:
    value = cfg.get("data_dir") or os.environ.get("BEFT_DATA_DIR") or None
    return str(Path(value).expanduser().resolve()) if value else None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise BeftError(f"trainer.device={name!r} is not a device; valid: auto, cpu, cuda, cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BeftError(f"trainer.device={name} but no CUDA GPU is visible; use trainer.device=cpu or auto")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision != "fp32" and device.type != "cuda":   # autocast is CUDA-only here: the record would claim bf16
        raise BeftError(f"trainer.precision={precision} needs a CUDA device, and this run is on {device.type}; "
                        f"valid here: auto, fp32")
    return precision


def train_settings(cfg, device: torch.device) -> TrainSettings:
    """The paper's schedule for the task unless the trainer or the method overrides it: everything a training
    needs from the config, so that nothing below the pipeline reads the config itself."""
    from beft.record import evaluates_every_epoch

    t = cfg.trainer
    if kind_of(cfg.model) == "decoder":  # each workload owns its schedule: the task's decoder one, PAPER.md §C.3-C.4
        from beft.decoder.spec import schedule
    else:                                # the encoder one, PAPER.md §B.3-B.4
        from beft.encoder import schedule
    s = schedule(cfg)
    return TrainSettings(lr=float(s["lr"]), epochs=int(s["epochs"]), batch_size=int(s["batch_size"]),
                         max_grad_norm=t.max_grad_norm, adam_eps=t.adam_eps, weight_decay=t.weight_decay,
                         schedule=s["schedule"], grad_accum=int(s["grad_accum"]), group_by_length=t.group_by_length,
                         precision=resolve_precision(t.precision, device), seed=int(cfg.seed),
                         progress=bool(t.progress), max_steps=t.get("max_steps"),
                         eval_every_epoch=evaluates_every_epoch(cfg), optimizer=t.get("optimizer", "adamw"))


def to_plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)
