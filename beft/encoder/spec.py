"""What an encoder run needs of its task, regime and method, and its training schedule (docs/paper.md §B.3-§B.4).

The encoder's side of the spec builder (beft.config), beside the decoder's (beft/decoder/spec.py): the same
three functions over the config's sections, looked up by kind in beft.kinds.
"""
from __future__ import annotations

from beft.data.tasks import validate_task_config
from beft.errors import BeftError


def validate(model, task, regime, method) -> None:
    """The task has an encoder form (a task head), its config is whole, and the regime has a size for it."""
    if task.get("kind") is None and task.get("decoder") is not None:
        raise BeftError(f"task {task.name} is decoder-only (a prompted task, docs/paper.md §C); use a decoder model, "
                        f"e.g. model=opt-1.3b (or tiny-opt), not the encoder {model.name}")
    validate_task_config(task)   # the one check of a task config: kind, metrics, labels (the loader's too)
    n = regime.get("n")
    if regime.name not in ("full", "custom") and n is None and regime.name not in (task.get("sizes") or {}):
        raise BeftError(f"task {task.name} defines no size for regime {regime.name!r}; "
                        f"set regime.n=... or use one of: {', '.join(task.get('sizes') or {})}, full")


def train_size(task, regime) -> tuple[int | None, bool]:
    """(training examples, exact): regime.n, else the task's size for the regime; None (all) for regime=full."""
    if regime.get("n") is not None:
        return int(regime.n), True
    if regime.name == "full":
        return None, True
    return int(task.sizes[regime.name]), True


def schedule(model, task, method, trainer) -> dict:
    """lr, epochs, batch size, gradient accumulation and lr schedule: the task's lr and epochs (docs/paper.md
    §B.3-B.4) unless trainer.lr / trainer.epochs or the method's lr (full: 1e-5) say otherwise."""
    return {"lr": trainer.lr if trainer.lr is not None else method.get("lr") or task.lr,
            # Some models have their own epochs for some tasks (BERT-large, RoBERTa: docs/paper.md §B.4).
            "epochs": trainer.epochs if trainer.epochs is not None else
            (model.get("task_epochs") or {}).get(task.name) or task.epochs,
            "batch_size": trainer.batch_size, "grad_accum": trainer.grad_accum, "schedule": trainer.schedule}
