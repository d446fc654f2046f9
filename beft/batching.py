"""Tokenize once, then pad per batch.

The authors pad every example to 128 tokens; SST-2 averages 13. Padding each batch to its own longest example
(and grouping similar lengths into training batches) removes that waste without changing the maths: padded
positions are masked out of attention. `pad_to_max_length=true` restores the authors' behaviour for comparison.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.trainer_pt_utils import get_length_grouped_indices


@dataclass
class Encoded:
    """Token ids of a list of examples, unpadded, with their labels."""

    features: list[dict]          # input_ids, attention_mask (, token_type_ids) per example
    labels: torch.Tensor          # long for classification, float for regression

    def __len__(self) -> int:
        return len(self.features)

    @property
    def lengths(self) -> list[int]:
        return [len(f["input_ids"]) for f in self.features]


def encode(examples: list[dict], tokenizer, text_fields, max_length: int, regression: bool = False) -> Encoded:
    """Tokenize one or two text fields per example, truncating to max_length."""
    columns = [[str(ex[f]) for ex in examples] for f in text_fields]
    tokens = tokenizer(*columns, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in tokens]
    features = [{k: tokens[k][i] for k in keys} for i in range(len(examples))]
    dtype = torch.float32 if regression else torch.long
    return Encoded(features, torch.tensor([ex["label"] for ex in examples], dtype=dtype))


class Batcher:
    """Yields padded batches of an `Encoded` set."""

    def __init__(self, tokenizer, batch_size: int, max_length: int, pad_to_max_length: bool = False):
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.pad_to_max_length = pad_to_max_length

    def collate(self, data: Encoded, indices) -> dict:
        padding = "max_length" if self.pad_to_max_length else "longest"
        batch = self.tokenizer.pad([data.features[i] for i in indices], padding=padding,
                                   max_length=self.max_length, return_tensors="pt")
        batch["labels"] = data.labels[list(indices)]
        return dict(batch)

    def train_batches(self, data: Encoded, generator: torch.Generator, group_by_length: bool = True):
        """One epoch in a seeded random order; with grouping, batches hold examples of similar length."""
        if group_by_length and not self.pad_to_max_length:
            order = get_length_grouped_indices(data.lengths, self.batch_size, generator=generator)
        else:
            order = torch.randperm(len(data), generator=generator).tolist()
        for start in range(0, len(order), self.batch_size):
            yield self.collate(data, order[start:start + self.batch_size])

    def eval_batches(self, data: Encoded):
        """Length-sorted batches (least padding); yields (original indices, batch) so callers can restore order."""
        order = sorted(range(len(data)), key=lambda i: data.lengths[i]) if not self.pad_to_max_length \
            else list(range(len(data)))
        for start in range(0, len(order), self.batch_size):
            indices = order[start:start + self.batch_size]
            yield indices, self.collate(data, indices)
