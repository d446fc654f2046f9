"""The one seam between the run and the two kinds of model: a `Workload` is a task made ready for one model.

Training, probing, every selection score and the record go through this interface, so encoders (sequence
classification with a task head, beft/encoder.py) and decoders (prompted scoring, beft/decoder) share one
pipeline. `kind_of` is the only place that tells the kinds apart by config; everything else asks the workload.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # only for the annotations: the config checks import this module and must stay light
    import torch

KINDS = ("encoder", "decoder")
# Evaluate after every epoch, unless trainer.eval_every_epoch says otherwise: the authors' encoder code does;
# their decoder code evaluates once after training (PAPER.md §C.5).
EVAL_EVERY_EPOCH = {"encoder": True, "decoder": False}


def kind_of(model_cfg) -> str:
    """encoder | decoder, from the model config (`kind`, default encoder), without importing any model code."""
    return "decoder" if (model_cfg or {}).get("kind") == "decoder" else "encoder"


class Workload(Protocol):
    kind: str                          # encoder | decoder
    device: torch.device
    precision: str                     # fp32 | bf16 | fp16, resolved for the device
    train_set: object                  # the training split, encoded for this model
    eval_sets: dict                    # {split name: encoded split}
    main_metric: str                   # "<split>/<metric>" the record reports
    source: dict                       # where the data came from (files and their sha256, or the hub)

    def new_model(self) -> tuple[torch.nn.Module, dict]:
        """(the model with a freshly seeded head or adapter, weights provenance)"""

    def bias_map(self):
        """BiasMap of the model as new_model builds it, without loading weights."""

    def batches(self, data, batch_size: int, generator: torch.Generator | None = None, **kwargs):
        """Padded batches (in a seeded random order when a generator is given)."""

    def loss(self, model, batch: dict) -> torch.Tensor:
        """Scalar training loss of a batch already on the model's device."""

    def mean_loss(self, model, data) -> float:
        """Mean per-example loss on some split: eval mode, no gradient."""

    def evaluate(self, model) -> dict[str, float]:
        """{"<split>/<metric>": value} on every evaluation split."""

    def selection_split(self, n: int, seed: int):
        """n training examples drawn by seed (interventional selection)."""

    def identity(self) -> dict:
        """What determines the starting model and the data: part of every training key."""


def make_workload(cfg) -> Workload:
    if kind_of(cfg.model) == "decoder":
        from beft.decoder import DecoderWorkload  # imported here: PEFT and the templates are decoder-only

        return DecoderWorkload(cfg)
    from beft.encoder import EncoderWorkload

    return EncoderWorkload(cfg)
