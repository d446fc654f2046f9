"""One run, as data flows: config -> data -> model -> what to train -> train -> evaluate -> record."""
from __future__ import annotations

import logging
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import torch
from transformers import set_seed

from beft import config as C
from beft.batching import Batcher, encode
from beft.bias_map import BiasMap
from beft.data import load_task
from beft.errors import BeftError
from beft.evaluate import evaluate
from beft.loggers import make_logger
from beft.methods import fixed_scope
from beft.models import load_encoder, load_tokenizer, num_parameters
from beft.plots import learning_curve
from beft.record import RECORD, environment, read_record, record_key, write_json_atomic
from beft.train import Diverged, train
from beft.trainable import InertKeyBiases, apply_scope

log = logging.getLogger("beft")


def method_label(cfg) -> str:
    if cfg.method.name == "fixed":
        return "fixed-" + "+".join(str(t) for t in cfg.method.terms)
    return cfg.method.name


def run_id(cfg, key: str) -> str:
    regime = cfg.regime.name if cfg.regime.get("n") is None else f"n{cfg.regime.n}"
    return f"{cfg.model.name}-{cfg.task.name}-{regime}-{method_label(cfg)}-s{cfg.seed}-{key[:8]}"


def run(cfg) -> dict:
    """Run one job and return its record. A job whose key already has an `ok` record is skipped (unless force)."""
    C.validate(cfg)
    key = record_key(cfg)
    run_dir = Path(cfg.out_dir) / run_id(cfg, key)
    existing = read_record(run_dir / RECORD)
    if existing and existing.get("status") == "ok" and not cfg.get("force"):
        log.info("skipping %s: an ok record exists (force=true reruns it)", run_dir)
        return existing
    record = {"key": key, "run_id": run_dir.name, "status": "running",
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "config": C.to_plain(cfg),
              "notes": []}
    logger = make_logger(cfg.logger)
    logger.start(record["config"], run_dir, run_dir.name)
    try:
        _execute(cfg, record, run_dir, logger)
        record["status"] = "ok"
    except (BeftError, Diverged, torch.cuda.OutOfMemoryError) as err:
        record.update(status="failed", error=f"{type(err).__name__}: {err}")
        raise
    except Exception as err:
        record.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        raise
    finally:
        write_json_atomic(run_dir / RECORD, record)
        logger.finish(record)
    return record


def _execute(cfg, record: dict, run_dir: Path, logger) -> None:
    timing, t0 = {}, time.perf_counter()
    device = C.resolve_device(cfg.trainer.device)
    task, regression = cfg.task, cfg.task.kind == "regression"
    data = load_task(task, C.data_dir(cfg), C.train_size(cfg), int(cfg.seed))
    tokenizer = load_tokenizer(cfg.model)
    batcher = Batcher(tokenizer, cfg.trainer.batch_size, cfg.trainer.max_length, cfg.trainer.pad_to_max_length)
    eval_batcher = Batcher(tokenizer, cfg.trainer.eval_batch_size, cfg.trainer.max_length,
                           cfg.trainer.pad_to_max_length)
    train_set = encode(data.train, tokenizer, task.text_fields, cfg.trainer.max_length, regression)
    eval_sets = {name: encode(rows, tokenizer, task.text_fields, cfg.trainer.max_length, regression)
                 for name, rows in data.eval.items()}
    if cfg.trainer.eval_train:
        eval_sets["train"] = train_set

    set_seed(int(cfg.seed))  # python, numpy, torch (and CUDA): the head starts the same for every method
    model, model_source = load_encoder(cfg.model, 1 if regression else len(task.label_names),
                                       cfg.trainer.attn_implementation)
    bias_map = BiasMap(model)
    scope = fixed_scope(cfg.method, bias_map)
    trainable = apply_scope(model, bias_map, scope)
    inert_keys = InertKeyBiases(model, bias_map)
    model.to(device)
    total = num_parameters(model)
    log.info("trainable parameters: %s of %s (%.4f%%) [%s]", f"{trainable:,}", f"{total:,}",
             100 * trainable / total, scope.describe())
    record.update(trainable_params=trainable, total_params=total,
                  scope={"kind": scope.kind, "targets": [list(c) for c in scope.targets], "label": scope.describe()},
                  n_train=len(train_set), n_eval={k: len(v) for k, v in eval_sets.items()},
                  env=environment(str(device), model_source, data.source))
    timing["load"] = time.perf_counter() - t0

    settings = C.train_settings(cfg, device)
    settings.desc = f"{cfg.task.name} {scope.describe()} s{cfg.seed}"
    eval_seconds = [0.0]

    def evaluate_all(epoch, entry, last):
        if not (cfg.trainer.eval_every_epoch or last):
            return {}
        start, scores = time.perf_counter(), {}
        for split, encoded in eval_sets.items():
            for name, value in evaluate(model, eval_batcher, encoded, task.metrics, regression, device,
                                        settings.precision).items():
                scores[f"{split}/{name}"] = value
        eval_seconds[0] += time.perf_counter() - start
        logger.log({**entry, **scores}, step=epoch)
        return scores

    result = train(model, train_set, batcher, settings, device, regression, on_epoch_end=evaluate_all)
    if inert_keys.active:
        record["notes"].append(inert_keys.note())
        record["zero_gradient"] = {"k": {"max_abs_roundoff": inert_keys.max_roundoff}}
        log.warning(inert_keys.note())
        inert_keys.remove()

    main_split = next(iter(data.eval))
    final = {k: v for k, v in result.history[-1].items() if "/" in k}
    scored = [e for e in result.history if f"{main_split}/{task.main_metric}" in e]
    best = max(scored, key=lambda e: e[f"{main_split}/{task.main_metric}"])
    record["metrics"] = {"main": {"name": f"{main_split}/{task.main_metric}",
                                  "value": final[f"{main_split}/{task.main_metric}"]},
                         "final": final, "best": {"epoch": best["epoch"], **{k: v for k, v in best.items() if "/" in k}},
                         "history": result.history}
    record["training"] = {"lr": settings.lr, "epochs": settings.epochs, "steps": result.steps,
                          "batch_size": cfg.trainer.batch_size, "precision": settings.precision}
    timing.update(train=result.seconds - eval_seconds[0], eval=eval_seconds[0], total=time.perf_counter() - t0)
    record["timing"] = timing
    plot = learning_curve(result.history, run_dir / "learning_curve.png", title=run_dir.name)
    logger.log_image("learning_curve", plot)
