"""The spec builder: the composed Hydra config, checked once and resolved once into a frozen `RunSpec`.

Bad input becomes one line naming the key and the valid choices. Below the pipeline nothing reads the Hydra
config: device, precision, data directory, training size and schedule are decided here, and the config's
sections travel in the RunSpec as read-only `Section`s. What differs between encoders and decoders is their
spec (beft/encoder/spec.py, beft/decoder/spec.py), looked up by kind; what differs between methods is their
entry in beft.method_table.
"""
from __future__ import annotations

from omegaconf import OmegaConf

from beft import precision as precisions
from beft import runtime
from beft.bias_map import canonical_type
from beft.checks import CONF_DIR, check_overrides, check_values, group_choices  # noqa: F401 (re-exported)
from beft.errors import BeftError, choices_error
from beft.kinds import spec_of
from beft.method_table import METHODS, method as method_entry, refusal
from beft.run_spec import RunSpec, Section
from beft.selection import SELECTORS
from beft.train import TrainSettings
from beft.workload import evaluates_every_epoch, kind_of

SECTIONS = ("model", "task", "regime", "method", "budget", "trainer", "logger")


def all_methods() -> list[str]:
    return sorted({*(name for name, entry in METHODS.items() if entry.scope != "selection"), *SELECTORS})


def to_plain(cfg) -> dict:
    """The whole config, resolved, as plain data: what the record keeps and its key hashes."""
    return OmegaConf.to_container(cfg, resolve=True)


def sections(cfg) -> dict[str, Section]:
    """The config groups' sections, resolved, as read-only plain data."""
    return {name: Section(OmegaConf.to_container(cfg[name], resolve=True)) for name in SECTIONS}


def validate(cfg) -> None:
    """Every check a run makes of its config before it loads anything (`resolve` without its result)."""
    resolve(cfg)


def resolve(cfg) -> RunSpec:
    """The run the config describes: checked (a one-line BeftError), then resolved once."""
    check_values(cfg)
    s = sections(cfg)
    model, task, regime, method, trainer = s["model"], s["task"], s["regime"], s["method"], s["trainer"]
    if method.name not in all_methods():
        raise choices_error("method", method.name, all_methods())
    for term in method.get("terms") or []:
        canonical_type(term)
    kind = kind_of(model)
    why = refusal(method.name, kind, model.name)
    if why:
        raise BeftError(why)
    kind_spec = spec_of(kind)
    kind_spec.validate(model, task, regime, method)   # what this kind needs of the task, regime and method
    if method.name == "rand_uniform" and trainer.weight_decay:
        raise BeftError(f"method=rand_uniform needs trainer.weight_decay=0 (got {trainer.weight_decay}): weight "
                        "decay would move the weights outside the random mask")
    device = runtime.resolve_device(trainer.device)
    precision = runtime.resolve_precision(trainer.precision, device, bool(trainer.get("allow_emulated_bf16")))
    frozen = precisions.frozen_dtype(trainer.get("frozen_dtype", "auto"), kind, precision,
                                     method_entry(method.name).scope, device)
    n_train, exact = kind_spec.train_size(task, regime)
    return RunSpec(kind=kind, **s, seed=int(cfg.seed), device=device, precision=precision,
                   data_dir=runtime.data_dir(cfg.get("data_dir")), train_size=n_train, exact_train_size=exact,
                   settings=train_settings(s, kind_spec.schedule(model, task, method, trainer), precision,
                                           int(cfg.seed)),
                   cache_dir=cfg.get("cache_dir"), force=cfg.get("force"), lock_timeout=cfg.get("lock_timeout"),
                   frozen_dtype=frozen)


def train_settings(s: dict[str, Section], schedule: dict, precision: str, seed: int) -> TrainSettings:
    """The kind's schedule (the task's, the paper's) unless the trainer or the method overrides it, and the rest
    of the trainer section: everything a training needs."""
    t = s["trainer"]
    return TrainSettings(lr=float(schedule["lr"]), epochs=int(schedule["epochs"]),
                         batch_size=int(schedule["batch_size"]), max_grad_norm=t.max_grad_norm,
                         adam_eps=t.adam_eps, weight_decay=t.weight_decay, schedule=schedule["schedule"],
                         grad_accum=int(schedule["grad_accum"]), group_by_length=t.group_by_length,
                         precision=precision, seed=seed, progress=bool(t.progress), max_steps=t.get("max_steps"),
                         eval_every_epoch=evaluates_every_epoch(t, s["model"]), optimizer=t.get("optimizer", "adamw"),
                         frozen_dtype=t.get("frozen_dtype", "auto"))
