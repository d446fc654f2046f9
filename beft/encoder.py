"""The encoder workload: sequence classification or regression with a task head (BERT, RoBERTa, MiniLM, MPNet).

It implements the interface in beft/workload.py; the decoder workload (prompted scoring) is beft/decoder.
"""
from __future__ import annotations

import json

import numpy as np
import torch
from omegaconf import OmegaConf
from transformers import set_seed

from beft import config as C
from beft.batching import Batcher, Encoded, encode
from beft.data import load_task
from beft.evaluate import autocast, evaluate, loss_from_logits, to_device
from beft.bias_map import BiasMap
from beft.errors import BeftError
from beft.fingerprint import weights_identity
from beft.models import attention_dropout_identity, encoder_skeleton, load_encoder, load_tokenizer


def validate(cfg) -> None:
    """What an encoder run needs of the method, the task and the regime (config.validate calls it)."""
    from beft.methods import DECODER_ONLY

    if cfg.method.name in DECODER_ONLY:
        raise BeftError(f"method={cfg.method.name} needs a decoder (causal LM), but model={cfg.model.name} is an "
                        f"encoder; use e.g. model=opt-1.3b (or tiny-opt)")
    if cfg.task.get("kind") is None and cfg.task.get("decoder") is not None:
        raise BeftError(f"task {cfg.task.name} is decoder-only (a prompted task, PAPER.md §C); use a decoder model, "
                        f"e.g. model=opt-1.3b (or tiny-opt), not the encoder {cfg.model.name}")
    from beft.data.tasks import validate_task_config

    validate_task_config(cfg.task)   # the one check of a task config: kind, metrics, labels (the loader's too)
    n = cfg.regime.get("n")
    if cfg.regime.name not in ("full", "custom") and n is None and cfg.regime.name not in (cfg.task.get("sizes") or {}):
        raise BeftError(f"task {cfg.task.name} defines no size for regime {cfg.regime.name!r}; "
                        f"set regime.n=... or use one of: {', '.join(cfg.task.get('sizes') or {})}, full")


def schedule(cfg) -> dict:
    """lr, epochs, batch size, gradient accumulation and lr schedule of an encoder run: the task's lr and epochs
    (PAPER.md §B.3-B.4) unless trainer.lr / trainer.epochs or the method's lr (full: 1e-5) say otherwise."""
    t = cfg.trainer
    return {"lr": t.lr if t.lr is not None else cfg.method.get("lr") or cfg.task.lr,
            # Some models have their own epochs for some tasks (BERT-large, RoBERTa: PAPER.md §B.4).
            "epochs": t.epochs if t.epochs is not None else
            (cfg.model.get("task_epochs") or {}).get(cfg.task.name) or cfg.task.epochs,
            "batch_size": t.batch_size, "grad_accum": t.grad_accum, "schedule": t.schedule}


# Data read and tokenized once per process for each (task, data, subset, tokenizer, max length): the jobs of a
# basic-launcher multirun that differ only in method share it.
_PREPARED: dict = {}


def _prepared(cfg, prepare):
    key = json.dumps([OmegaConf.to_container(cfg.task, resolve=True), C.data_dir(cfg), C.train_size(cfg),
                      int(cfg.seed), OmegaConf.to_container(cfg.model, resolve=True), cfg.trainer.max_length],
                     sort_keys=True, default=str)
    if key not in _PREPARED:
        if len(_PREPARED) >= 8:
            _PREPARED.pop(next(iter(_PREPARED)))
        _PREPARED[key] = prepare()
    return _PREPARED[key]


class EncoderWorkload:
    """Sequence classification or regression with a task head on an encoder (BERT, RoBERTa, MiniLM)."""

    kind = "encoder"

    def __init__(self, cfg, device: torch.device | None = None):
        self.cfg, self.task = cfg, cfg.task
        self.regression = cfg.task.kind == "regression"
        self.device = device or C.resolve_device(cfg.trainer.device)
        self.precision = C.resolve_precision(cfg.trainer.precision, self.device)
        t = cfg.trainer
        self.max_length, self.pad_to_max_length = t.max_length, t.pad_to_max_length
        self.data, self.tokenizer, self.train_set, self.eval_sets = _prepared(cfg, self._prepare)
        self.eval_sets = dict(self.eval_sets)
        if t.eval_train:
            self.eval_sets["train"] = self.train_set
        self.main_metric = f"{next(iter(self.data.eval))}/{cfg.task.main_metric}"
        self.source = self.data.source

    def _prepare(self):
        data = load_task(self.cfg.task, C.data_dir(self.cfg), C.train_size(self.cfg), int(self.cfg.seed))
        self.tokenizer = load_tokenizer(self.cfg.model)
        return (data, self.tokenizer, self.encode(data.train),
                {name: self.encode(rows) for name, rows in data.eval.items()})

    def encode(self, examples: list[dict]) -> Encoded:
        return encode(examples, self.tokenizer, self.task.text_fields, self.max_length, self.regression)

    @property
    def num_labels(self) -> int:
        return 1 if self.regression else len(self.task.label_names)

    def new_model(self):
        """The pretrained backbone with a task head seeded by the run's seed: the same start for every method."""
        set_seed(int(self.cfg.seed))
        model, source = load_encoder(self.cfg.model, self.num_labels, self.cfg.trainer.attn_implementation)
        return model.to(self.device), source

    def bias_map(self) -> BiasMap:
        """The model's bias cells, from its structure alone (no weights are loaded)."""
        return BiasMap(encoder_skeleton(self.cfg.model, self.num_labels))

    def batcher(self, batch_size: int) -> Batcher:
        return Batcher(self.tokenizer, batch_size, self.max_length, self.pad_to_max_length)

    def batches(self, data: Encoded, batch_size: int, generator: torch.Generator | None = None,
                group_by_length: bool = True):
        batcher = self.batcher(batch_size)
        if generator is None:
            return (batch for _, batch in batcher.eval_batches(data))
        return batcher.train_batches(data, generator, group_by_length)

    def loss(self, model, batch: dict) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return loss_from_logits(model(**inputs).logits, batch["labels"], self.regression)

    def identity(self) -> dict:
        """The weights, head and data a training starts from, independent of how the config is laid out."""
        m, t = self.cfg.model, self.cfg.trainer
        source = {k: v for k, v in self.data.source.items() if k != "dir"}  # where the files sit is no matter
        return {"model": {**{k: m.get(k) for k in ("hub_id", "revision", "tiny", "weights_seed", "bias_std")},
                          "weights": weights_identity(m), **attention_dropout_identity(m)},
                "num_labels": self.num_labels, "attn": t.attn_implementation,
                "data": {"source": source, "n_train": len(self.train_set), "seed": int(self.cfg.seed),
                         "text_fields": list(self.task.text_fields), "kind": self.task.kind,
                         "labels": list(self.task.label_names), "metrics": list(self.task.metrics),
                         "max_length": self.max_length, "pad_to_max_length": self.pad_to_max_length,
                         "eval": sorted(self.eval_sets)}}

    def selection_split(self, n: int, seed: int) -> Encoded:
        order = np.random.RandomState(seed).permutation(len(self.train_set))[:n].tolist()
        return Encoded([self.train_set.features[i] for i in order], self.train_set.labels[order])

    @torch.no_grad()
    def mean_loss(self, model, data: Encoded) -> float:
        was_training = model.training
        model.eval()
        total = 0.0
        for batch in self.batches(data, self.cfg.trainer.eval_batch_size):
            batch = to_device(batch, self.device)
            with autocast(self.device, self.precision):
                total += float(self.loss(model, batch)) * len(batch["labels"])
        model.train(was_training)
        return total / len(data)

    def evaluate(self, model) -> dict[str, float]:
        batcher = self.batcher(self.cfg.trainer.eval_batch_size)
        scores = {}
        for split, data in self.eval_sets.items():
            for name, value in evaluate(model, batcher, data, self.task.metrics, self.regression, self.device,
                                        self.precision).items():
                scores[f"{split}/{name}"] = value
        return scores
