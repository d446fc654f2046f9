"""The decoder (prompted) form of a task: the `decoder:` section of conf/task/<task>.yaml, checked once.

    decoder:
      template: rte            # beft/decoder/templates.py
      loss: classification     # classification (CE over candidate log-likelihoods) | lm (gold tokens only)
      metrics: [accuracy]      # choice templates: accuracy; generation templates: f1, em
      main_metric: accuracy
      lr, epochs, batch_size, grad_accum, schedule   # docs/paper.md §C.3, §C.4
      n_train: 1000            # drawn by seed (all where fewer)
      n_eval: 1000             # drawn by seed from the validation split (all where fewer)
      max_length: 2048         # capped at the model's context
      label_names, hub, local  # where the data comes from; absent: the task's own (encoder) entries

Tasks without a decoder section have no prompted form; tasks with only one are decoder-only. The decoder's side
of the spec builder (beft.config), beside the encoder's (beft/encoder/spec.py): the same three functions over
the config's sections (validate, train_size, schedule), looked up by kind in beft.kinds.
"""
from __future__ import annotations

from functools import lru_cache

from omegaconf import OmegaConf

from beft.decoder.templates import get_template
from beft.errors import BeftError, choices_error
from beft.run_spec import plain

REQUIRED = ("template", "loss", "metrics", "main_metric", "lr", "epochs", "batch_size", "grad_accum", "n_train",
            "n_eval")
LOSSES = ("classification", "lm")
METRICS = {"choice": ("accuracy",), "generation": ("f1", "em")}
DEFAULTS = {"schedule": "linear", "max_length": 2048}


@lru_cache(maxsize=1)
def decoder_tasks() -> tuple[str, ...]:
    from beft.checks import CONF_DIR

    return tuple(sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml")
                        if OmegaConf.load(p).get("decoder") is not None))


def section(task) -> dict:
    """The task's decoder section as a plain dict, checked, with data entries inherited from the task."""
    name = task.get("name")
    if task.get("decoder") is None:
        raise BeftError(f"task {name} has no template for decoders (no decoder: section in conf/task/{name}.yaml); "
                        f"tasks with one: {', '.join(decoder_tasks())}")
    spec = {**DEFAULTS, **plain(task.decoder), "name": name}
    missing = [k for k in REQUIRED if k not in spec]
    if missing:
        raise BeftError(f"task {name}: decoder section lacks {', '.join(missing)}; it needs {', '.join(REQUIRED)}")
    for key in ("label_names", "hub", "local"):
        if key not in spec:
            spec[key] = plain(task.get(key))
    if not spec.get("hub"):
        raise BeftError(f"task {name}: decoder section needs hub: {{path, name, train, eval}} (and local: for files)")
    template = get_template(spec["template"])
    if spec["loss"] not in LOSSES:
        raise choices_error(f"decoder loss for task {name}:", spec["loss"], LOSSES)
    if template.kind == "generation" and spec["loss"] != "lm":
        raise BeftError(f"task {name}: a generation template trains with loss: lm, not {spec['loss']}")
    for metric in spec["metrics"]:
        if metric not in METRICS[template.kind]:
            raise choices_error(f"decoder metric for task {name} ({template.kind}):", metric, METRICS[template.kind])
    if spec["main_metric"] not in spec["metrics"]:
        raise BeftError(f"task {name}: decoder main_metric {spec['main_metric']!r} is not among its metrics "
                        f"{', '.join(spec['metrics'])}")
    return spec


def validate(model, task, regime, method) -> None:
    """Checks of a decoder run: the task's prompted form, the regime and the method's own settings."""
    section(task)
    if regime.get("n") is None and regime.name not in ("low", "full"):
        raise BeftError(f"regime={regime.name} is defined for encoders only; decoder runs train on the task's "
                        f"decoder.n_train examples (1,000, docs/paper.md §C.5): use regime=low (default), regime=full "
                        f"or regime.n=N")
    if method.name == "icl":
        k = method.get("demonstrations")
        if not isinstance(k, int) or k < 1:
            raise BeftError(f"method.demonstrations={k!r} must be a positive number of in-context examples")


def train_size(task, regime) -> tuple[int | None, bool]:
    """(training examples, exact): regime.n exactly, all for regime=full, else the task's n_train (all where
    fewer). ICL trains nothing but draws its demonstrations from these."""
    if regime.get("n") is not None:
        return int(regime.n), True
    if regime.name == "full":
        return None, False
    return int(section(task)["n_train"]), False


def schedule(model, task, method, trainer) -> dict:
    """lr, epochs, batch size, gradient accumulation and lr schedule of a decoder run (docs/paper.md §C.3-C.4);
    trainer.lr / trainer.epochs and a method's lr (full: 1e-5) override the task's, as for encoders."""
    spec = section(task)
    lr = trainer.lr if trainer.lr is not None else method.get("lr") or spec["lr"]
    epochs = trainer.epochs if trainer.epochs is not None else spec["epochs"]
    return {"lr": float(lr), "epochs": int(epochs), "batch_size": int(spec["batch_size"]),
            "grad_accum": int(spec["grad_accum"]), "schedule": spec["schedule"]}
