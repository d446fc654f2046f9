"""Predict on an encoded split and score it with the task's metrics."""
from __future__ import annotations

import numpy as np
import torch

from beft import metrics
from beft.batching import Batcher, Encoded
from beft.precision import autocast  # noqa: F401 (the workloads import it from here)




def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def predict(model, batcher: Batcher, data: Encoded, device: torch.device, precision: str = "fp32") -> np.ndarray:
    """Logits for every example, in the split's original order (batches are length-sorted)."""
    was_training = model.training
    model.eval()
    out = [None] * len(data)
    for indices, batch in batcher.eval_batches(data):
        batch = to_device(batch, device)
        batch.pop("labels")
        with autocast(device, precision):
            logits = model(**batch).logits.float().cpu().numpy()
        for i, row in zip(indices, logits):
            out[i] = row
    model.train(was_training)
    return np.stack(out)


def loss_from_logits(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    if regression:
        return torch.nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
    return torch.nn.functional.cross_entropy(logits.float(), labels)


def evaluate(model, batcher: Batcher, data: Encoded, metric_names, regression: bool, device: torch.device,
             precision: str = "fp32") -> dict[str, float]:
    logits = predict(model, batcher, data, device, precision)
    preds = metrics.predictions_from_logits(logits, regression)
    scores = metrics.compute(metric_names, preds, data.labels.numpy())
    scores["loss"] = float(loss_from_logits(torch.from_numpy(logits), data.labels, regression))
    return scores
