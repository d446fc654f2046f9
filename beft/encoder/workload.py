"""The encoder workload: sequence classification or regression with a task head (BERT, RoBERTa, MiniLM, MPNet).

It implements the interface in beft/workload.py; the decoder workload (prompted scoring) is beft/decoder. What
an encoder run needs of its config, and its schedule, is beft/encoder/spec.py.
"""
from __future__ import annotations

import json

import numpy as np
import torch
from transformers import set_seed

from beft.batching import Batcher, Encoded, encode
from beft.data import load_task
from beft.evaluate import autocast, example_rows, loss_from_logits, predict, score_rows, to_device
from beft.predictions import example_id
from beft.bias_map import BiasMap
from beft.fingerprint import model_identity
from beft.models import enable_checkpointing, encoder_skeleton, load_encoder, load_tokenizer, place
from beft.precision import DTYPES, store_frozen_matrices


# Data read and tokenized once per process for each (task, data, subset, tokenizer, max length): the jobs of a
# basic-launcher multirun that differ only in method share it.
_PREPARED: dict = {}


def _prepared(run, prepare):
    key = json.dumps([run.task, run.data_dir, run.train_size, run.seed, run.model, run.trainer.max_length],
                     sort_keys=True, default=str)
    if key not in _PREPARED:
        if len(_PREPARED) >= 8:
            _PREPARED.pop(next(iter(_PREPARED)))
        _PREPARED[key] = prepare()
    return _PREPARED[key]


class EncoderWorkload:
    """Sequence classification or regression with a task head on an encoder (BERT, RoBERTa, MiniLM)."""

    kind = "encoder"
    peft_task_type = "SEQ_CLS"

    def __init__(self, run):
        """`run`: the RunSpec (beft.run_spec) the pipeline resolved from the config."""
        self.run, self.task = run, run.task
        self.regression = run.task.kind == "regression"
        self.device, self.precision = run.device, run.precision
        t = run.trainer
        self.max_length, self.pad_to_max_length = t.max_length, t.pad_to_max_length
        self.data, self.tokenizer, self.train_set, self.eval_sets = _prepared(run, self._prepare)
        self.eval_sets = dict(self.eval_sets)
        if t.eval_train:
            self.eval_sets["train"] = self.train_set
        self.main_metric = f"{next(iter(self.data.eval))}/{run.task.main_metric}"
        self.source = self.data.source
        self.eval_batch_size = int(t.eval_batch_size)   # the memory plan may lower it (beft.memory_plan)
        self.weights_dtype = DTYPES[run.frozen_dtype]   # the memory plan counts the frozen matrices at it

    def _prepare(self):
        data = load_task(self.run.task, self.run.data_dir, self.run.train_size, self.run.seed)
        self.tokenizer = load_tokenizer(self.run.model)
        return (data, self.tokenizer, self.encode(data.train),
                {name: self.encode(rows) for name, rows in data.eval.items()})

    def encode(self, examples: list[dict]) -> Encoded:
        return encode(examples, self.tokenizer, self.task.text_fields, self.max_length, self.regression)

    @property
    def num_labels(self) -> int:
        return 1 if self.regression else len(self.task.label_names)

    def new_model(self):
        """The pretrained backbone with a task head seeded by the run's seed: the same start for every method."""
        set_seed(self.run.seed)
        model, source = load_encoder(self.run.model, self.num_labels, self.run.trainer.attn_implementation)
        if self.run.frozen_dtype != "fp32":   # the head trains: it stays fp32 with the biases and norms
            store_frozen_matrices(model, DTYPES[self.run.frozen_dtype], set(BiasMap(model).head_param_names(model)))
        if self.run.trainer.get("gradient_checkpointing"):
            enable_checkpointing(model)
        return place(model, self.run.model, self.device), source

    def bias_map(self) -> BiasMap:
        """The model's bias cells, from its structure alone (no weights are loaded)."""
        return BiasMap(self.skeleton())

    def batch_shape(self) -> dict:
        """What a batch holds, for the memory plan: rows per example, the longest row, tokens generated."""
        longest = max((max(d.lengths, default=1) for d in (self.train_set, *self.eval_sets.values())), default=1)
        return {"candidates": 1, "length": self.max_length if self.pad_to_max_length else longest, "new_tokens": 0}

    def skeleton(self):
        """The model on the meta device (structure and names, no weights)."""
        return encoder_skeleton(self.run.model, self.num_labels)

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
        source = {k: v for k, v in self.data.source.items() if k != "dir"}  # where the files sit is no matter
        return {"model": model_identity(self.run.model),
                "num_labels": self.num_labels, "attn": self.run.trainer.attn_implementation,
                "data": {"source": source, "n_train": len(self.train_set), "seed": self.run.seed,
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
        for batch in self.batches(data, self.eval_batch_size):
            batch = to_device(batch, self.device)
            with autocast(self.device, self.precision):
                total += float(self.loss(model, batch)) * len(batch["labels"])
        model.train(was_training)
        return total / len(data)

    def predict(self, model) -> dict[str, list[dict]]:
        """{split: one row per example (beft.predictions)} on every evaluation split."""
        batcher = self.batcher(self.eval_batch_size)
        out = {}
        for split, data in self.eval_sets.items():
            examples = self.data.train if split == "train" else self.data.eval[split]
            out[split] = example_rows(predict(model, batcher, data, self.device, self.precision), data.labels,
                                      self.regression, [example_id(ex) for ex in examples])
        return out

    def score(self, predictions: dict[str, list[dict]]) -> dict[str, float]:
        """{"<split>/<metric>": value} from `predict`'s rows (or the same rows read back from disk)."""
        return {f"{split}/{name}": value for split, rows in predictions.items()
                for name, value in score_rows(rows, self.task.metrics, self.regression).items()}

    def evaluate(self, model) -> dict[str, float]:
        return self.score(self.predict(model))
