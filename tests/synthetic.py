"""Synthetic records in the shape beft writes (result.json), for table and figure tests: no training needed.

`record(...)` builds one record with the fields `make tables` reads, the run id built as beft.pipeline builds
it, and (for selection methods) a `selection` block with per-layer scores for every bias type.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from beft.bias_map import TYPES
from beft.fingerprint import code_version
from beft.record import record_key

SIZES = {"sst2": 1000, "rte": 300, "cola": 1710, "cb": 50}
METRICS = {"cola": "mcc", "cb": "macro_f1"}
SELECTORS = ("beft", "magnitude", "fisher", "causal", "random")


def method_config(arm: str) -> dict:
    if arm.startswith("fixed-"):
        return {"name": "fixed", "terms": arm[len("fixed-"):].split("+")}
    if arm.split("-")[0].endswith("_bias"):     # lora_bias-v, vera_bias-v-authors
        name, terms, *authors = arm.split("-")
        return {"name": name, "terms": terms.split("+"), "rank": 8, "alpha": 1, "authors": bool(authors)}
    if arm.startswith("rand_uniform"):
        return {"name": "rand_uniform", "num_params": "bitfit" if arm.endswith("bitfit") else "budget"}
    return {"name": arm}


def record(model: str, task: str, arm: str, seed: int, value: float, *, regime: str = "low", n: int | None = None,
           status: str = "ok", scores: dict | None = None, layers: int = 12, trainable: int = 11522,
           epochs: int | None = None, seconds: float = 1.3) -> dict:
    method = method_config(arm)
    config = {"model": {"name": model}, "task": {"name": task, "main_metric": METRICS.get(task, "accuracy")},
              "regime": {"name": regime, "n": n}, "method": method, "budget": {"name": "one_type"},
              "trainer": {"lr": None, "epochs": epochs, "batch_size": 16}, "seed": seed}
    fingerprint = {"data": {"hub": {"path": "glue", "name": task}},
                   "weights": {"kind": "hub", "hub_id": model, "revision": "main"}, "code": code_version()}
    key = record_key(config, fingerprint)    # as beft keys it: the record checks out (beft.record_check)
    regime_label = regime if n is None else f"n{n}"
    out = {"key": key, "run_id": f"{model}-{task}-{regime_label}-{arm}-s{seed}-{key[:8]}", "status": status,
           "created": "2026-01-01T00:00:00+00:00", "config": config, "fingerprint": fingerprint, "notes": []}
    if status != "ok":
        out["error"] = "RuntimeError: synthetic failure"
        return out
    metric = f"validation/{METRICS.get(task, 'accuracy')}"
    out.update(trainable_params=trainable, total_params=108_311_810, n_train=n or SIZES.get(task, 100),
               scope={"kind": "targets", "targets": [], "label": arm},
               metrics={"main": {"name": metric, "value": value}, "final": {metric: value},
                        "best": {"epoch": 0, metric: value},
                        "history": [{"epoch": 0, "train_loss": 0.5, "seconds": 1.0, metric: value}]},
               timing={"load": 0.1, "train": seconds - 0.3, "eval": 0.2, "total": seconds})
    if arm in SELECTORS:
        scores = scores or {t: [0.1] * layers for t in TYPES}
        type_scores = {t: float(np.mean(v)) for t, v in scores.items()}
        ranking = sorted(type_scores, key=lambda t: (-type_scores[t], TYPES.index(t)))
        out["selection"] = {"method": arm, "scores": scores, "type_scores": type_scores, "ranking": ranking,
                            "budget": {"name": "one_type"}, "chosen_types": [ranking[0]],
                            "targets": [[i, ranking[0]] for i in range(layers)], "warnings": [],
                            "probe": None, "seconds": 0.1}
    return out


def rekey(rec: dict) -> dict:
    """The record with the key (and run id) its config now gives, after a test changed the config."""
    rec["key"] = record_key(rec["config"], rec["fingerprint"])
    rec["run_id"] = rec["run_id"][:-8] + rec["key"][:8]
    return rec


def write(root: Path, experiment: str, rec: dict) -> Path:
    path = Path(root) / experiment / rec["run_id"] / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec, indent=1))
    return path


def realistic_store(root: Path, seeds=(0, 1, 2, 3, 4), tasks=("sst2", "rte", "cola"), layers: int = 12) -> None:
    """A plausible selection experiment: b_v usually best, scores that mostly (not always) rank it first."""
    rng = np.random.default_rng(0)
    base = {"sst2": 0.86, "rte": 0.60, "cola": 0.40}
    gain = {"v": 0.0, "q": -0.03, "k": -0.06}
    for task in tasks:
        for seed in seeds:
            fixed = {t: base[task] + gain[t] + rng.normal(0, 0.01) for t in gain}
            for t, v in fixed.items():
                write(root, "selection", record("bert-base-cased", task, f"fixed-{t}", seed, v))
            write(root, "selection", record("bert-base-cased", task, "bitfit", seed, base[task] + rng.normal(0, .01),
                                             trainable=104450))
            for method in SELECTORS:
                scale = {"fisher": 1e-7, "magnitude": 0.02}.get(method, 0.3)
                scores = {t: list(np.abs(rng.normal(0.3, 0.15, layers)) * scale) for t in TYPES}
                scores["k"] = [0.0] * layers
                if method in ("beft", "causal"):
                    scores["v"] = list(np.abs(rng.normal(0.6, 0.2, layers)) * scale)
                rec = record("bert-base-cased", task, method, seed, 0.0, scores=scores, layers=layers)
                top = rec["selection"]["ranking"][0]
                rec["metrics"]["main"]["value"] = fixed.get(top, base[task] - 0.02 + rng.normal(0, 0.01))
                write(root, "selection", rec)
