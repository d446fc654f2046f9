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


def example_rows(logits: np.ndarray, labels: torch.Tensor, regression: bool, ids=None) -> list[dict]:
    """One row per example (beft.predictions): gold, prediction and, for classification, the logits. Values are
    the float32 numbers themselves (as Python floats, which JSON keeps exactly), so `score_rows` on rows read
    back from disk gives exactly the metrics the run reported."""
    preds = metrics.predictions_from_logits(logits, regression)
    rows = []
    for i, (gold, pred) in enumerate(zip(labels.tolist(), preds.tolist())):
        row = {"index": i, "gold": gold, "prediction": pred}
        if ids is not None and ids[i] is not None:
            row["id"] = ids[i]
        if not regression:
            row.update(scores=logits[i].tolist(), correct=pred == gold)
        rows.append(row)
    return rows


def score_rows(rows: list[dict], metric_names, regression: bool) -> dict[str, float]:
    """The task's metrics and mean loss of one split's rows (from `example_rows`, or read back from disk)."""
    dtype = np.float32 if regression else np.int64
    labels = np.asarray([r["gold"] for r in rows], dtype=dtype)
    preds = np.asarray([r["prediction"] for r in rows], dtype=dtype)
    scores = metrics.compute(metric_names, preds, labels)
    outputs = preds.reshape(-1, 1) if regression else np.asarray([r["scores"] for r in rows], dtype=np.float32)
    scores["loss"] = float(loss_from_logits(torch.from_numpy(outputs), torch.from_numpy(labels), regression))
    return scores


def evaluate(model, batcher: Batcher, data: Encoded, metric_names, regression: bool, device: torch.device,
             precision: str = "fp32") -> dict[str, float]:
    rows = example_rows(predict(model, batcher, data, device, precision), data.labels, regression)
    return score_rows(rows, metric_names, regression)
