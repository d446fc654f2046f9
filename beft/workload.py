"""The one seam between the run and the two kinds of model: a `Workload` is a task made ready for one model.

Training, probing, every selection score and the record go through this interface, so encoders (sequence
classification with a task head, beft/encoder) and decoders (prompted scoring, beft/decoder) share one
pipeline. `kind_of` is the only place that tells the kinds apart by config; `KINDS` says what the layers above
the model code know of each kind (beft.kinds adds each kind's spec and workload). This module imports nothing
of beft, so the config checks, the record keys and the fingerprint can ask it without loading any model code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # only for the annotations: this module stays light
    import torch


@dataclass(frozen=True)
class Kind:
    eval_every_epoch: bool    # trainer.eval_every_epoch's default (null): after every epoch, or once at the end
    task_form: str | None     # the task config's section holding this kind's own form of the task, if any


# The authors' encoder code evaluates after every epoch; their decoder code once after training (docs/paper.md §C.5).
# A decoder reads a task through its `decoder:` section (beft/decoder/spec.py), whose data entries stand over
# the task's own.
KINDS = {"encoder": Kind(eval_every_epoch=True, task_form=None),
         "decoder": Kind(eval_every_epoch=False, task_form="decoder")}


def kind_of(model_cfg) -> str:
    """encoder | decoder, from the model's config section (`kind`, default encoder), without any model code."""
    return "decoder" if (model_cfg or {}).get("kind") == "decoder" else "encoder"


def evaluates_every_epoch(trainer_cfg, model_cfg) -> bool:
    """trainer.eval_every_epoch, where null means the kind's default (KINDS)."""
    value = (trainer_cfg or {}).get("eval_every_epoch")
    return bool(value) if value is not None else KINDS[kind_of(model_cfg)].eval_every_epoch


def other_task_forms(model_cfg) -> set[str]:
    """The task sections that hold the other kinds' forms of a task: nothing in them can change this kind's run."""
    kind = kind_of(model_cfg)
    return {k.task_form for name, k in KINDS.items() if name != kind and k.task_form}


class Workload(Protocol):
    kind: str                          # encoder | decoder
    peft_task_type: str                # the task type a PEFT config of this model names (SEQ_CLS, CAUSAL_LM)
    device: torch.device
    precision: str                     # fp32 | bf16 | fp16, resolved for the device
    train_set: object                  # the training split, encoded for this model
    eval_sets: dict                    # {split name: encoded split}
    main_metric: str                   # "<split>/<metric>" the record reports
    source: dict                       # where the data came from (files and their sha256, or the hub)
    eval_batch_size: int               # rows per evaluation batch (the memory plan may lower the config's)
    weights_dtype: torch.dtype         # the dtype the frozen weights load in

    def batch_shape(self) -> dict:
        """{"candidates": rows per training example, "length": the longest row, "new_tokens": generated}"""

    def new_model(self) -> tuple[torch.nn.Module, dict]:
        """(the model with a freshly seeded head or adapter, weights provenance)"""

    def bias_map(self):
        """BiasMap of the model as new_model builds it, without loading weights."""

    def skeleton(self) -> torch.nn.Module:
        """The model as new_model builds it, on the meta device: its structure and names, no weights."""

    def batches(self, data, batch_size: int, generator: torch.Generator | None = None, **kwargs):
        """Padded batches (in a seeded random order when a generator is given)."""

    def loss(self, model, batch: dict) -> torch.Tensor:
        """Scalar training loss of a batch already on the model's device."""

    def mean_loss(self, model, data) -> float:
        """Mean per-example loss on some split: eval mode, no gradient."""

    def predict(self, model) -> dict[str, list[dict]]:
        """{split: one row per example (beft.predictions)} on every evaluation split."""

    def score(self, predictions: dict[str, list[dict]]) -> dict[str, float]:
        """{"<split>/<metric>": value} from `predict`'s rows: the metrics are computed from these rows only."""

    def evaluate(self, model) -> dict[str, float]:
        """score(predict(model))."""

    def selection_split(self, n: int, seed: int):
        """n training examples drawn by seed (interventional selection)."""

    def identity(self) -> dict:
        """What determines the starting model and the data: part of every training key."""
