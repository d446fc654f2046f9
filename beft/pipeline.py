"""One run, as data flows: config -> data -> model -> what to train -> train -> evaluate -> record.

`run` names the job from its config (key, run id) and skips it if done; then beft.config resolves the config
into a RunSpec, and everything after reads that spec, never the Hydra config.
"""
from __future__ import annotations

import csv
import logging
import shutil
import time
import traceback
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from beft import fingerprint, interrupts, memory_plan, predictions, runtime
from beft.adapter import export_adapter
from beft.bias_map import PAPER_LABELS
from beft.cache import Cache
from beft.checks import check_names, check_writable
from beft.config import resolve, to_plain
from beft.errors import BeftError
from beft.files import DiskFull, atomic_write, plain_name, remove
from beft.fit import fit
from beft.kinds import make_workload
from beft.loggers import make_logger
from beft.methods import fixed_scope
from beft.plots import learning_curve, score_heatmap
from beft.precision import describe as describe_precision
from beft.selection import SELECTORS, select
from beft.trainable import Scope
from beft.run_spec import Section
from beft.record import RECORD, environment, record_key, save_record
from beft.record import method_label, run_id  # noqa: F401 (also imported from here by older callers)
from beft.record_check import trusted_predictions
from beft.resume import look_up
from beft.train import Diverged

log = logging.getLogger("beft")


def run(cfg, record_bad_input: bool = True) -> dict:
    """Run one job and return its record. A job whose key already has an `ok` record is skipped (unless force).

    Whatever happens after the key is known, the record is written (atomically) with status ok, failed or
    interrupted (Ctrl-C), and the logger's run is finished, so a sweep can go on to its next job and resume
    later. With `record_bad_input` false (a single command-line run), bad input (a BeftError) writes nothing
    and leaves no run folder: the one-line error says it all. A skipped job returns the existing record marked
    `"skipped": True` (never written back). An error raised from here carries the job's `run_id`.
    """
    check_names(cfg)   # before any path is made of them: model.name=../../x writes nothing anywhere
    plain = to_plain(cfg)   # the config as data: named, keyed and kept in the record before any check
    prints = fingerprint.of_run(plain["model"], plain["task"], runtime.data_dir(plain.get("data_dir")))
    key = record_key(plain, prints)
    run_dir = own_run_dir(plain, key)
    existing = None if plain.get("force") else done_record(plain, key, prints)
    if existing is not None:
        log.info("skipping %s: an ok record exists (force=true reruns it)", Path(plain["out_dir"]) / existing["run_id"])
        return {**existing, "skipped": True}
    check_writable(plain["out_dir"])  # before any training: a record that cannot be saved is work lost
    # The record says what it is (its arm, whether a selection chose its biases): reports read, never guess.
    record = {"key": key, "run_id": run_dir.name, "method_label": method_label(plain),
              "selection_run": plain["method"]["name"] in SELECTORS, "status": "running",
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "config": plain,
              "fingerprint": prints, "notes": []}
    logger = make_logger(Section(plain["logger"]))
    new_dir, bad_input = not run_dir.exists(), False
    try:
        spec = resolve(cfg)  # inside: a sweep's invalid job is recorded as failed, with the one-line reason
        logger.start(record["config"], run_dir, run_dir.name)
        _execute(spec, record, run_dir, logger)
        record["status"] = "ok"
    except KeyboardInterrupt as err:  # Ctrl-C: not a failure of the run, and the record must never stay "running"
        record.update(status="interrupted", error=interrupts.describe(err))   # Ctrl-C, or the signal that stopped it
        err.run_id = run_dir.name
        raise
    except (BeftError, Diverged, DiskFull, torch.cuda.OutOfMemoryError) as err:
        record.update(status="failed", error=f"{type(err).__name__}: {err}")
        bad_input = isinstance(err, BeftError)
        err.run_id = run_dir.name
        raise
    except BaseException as err:
        record.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        err.run_id = run_dir.name
        raise
    finally:
        keep = record_bad_input or not bad_input
        try:
            if keep:
                save_record(run_dir / RECORD, record)   # on a full disk: the run's own error, noting the loss
        finally:
            logger.finish(record)
            if not keep and new_dir:
                shutil.rmtree(run_dir, ignore_errors=True)   # what the run began (a logger's files)
    return record


def own_run_dir(config: dict, key: str) -> Path:
    """<out_dir>/<run id>, where nothing has been planted that would lead the run's files elsewhere."""
    name = run_id(config, key)
    run_dir = Path(config["out_dir"]) / name
    if not plain_name(name):
        raise BeftError(f"the run id {name!r} cannot be a folder name; use plain model, task and method names")
    if run_dir.is_symlink() or (run_dir.exists() and not run_dir.is_dir()):
        raise BeftError(f"{run_dir} is a symbolic link or a file, not a run folder: beft writes a run's files only "
                        "into a real folder; remove it")
    return run_dir


def done_record(config: dict, key: str, prints: dict) -> dict | None:
    """The ok record this run would write, if one exists and checks out (beft.resume, as `make status` and the
    SLURM submit host are told). A record there that does not check out is named in a warning, and the job
    reruns. `config`: the run's config as data (beft.config.to_plain)."""
    found = look_up(config, key, prints)
    if found.state == "invalid":
        log.warning("not trusting %s: %s; running the job again", Path(config["out_dir"]) / found.path, found.reason)
    if found.state != "done":
        return None
    trusted_predictions(found.record, Path(config["out_dir"]) / found.run_id)   # an edited one is named now
    return found.record


def _execute(spec, record: dict, run_dir: Path, logger) -> None:
    t0 = time.perf_counter()
    workload = make_workload(spec)
    if workload.device.type == "cuda":   # one process may run several jobs (basic launcher): this run's peak only
        torch.cuda.reset_peak_memory_stats(workload.device)
    timing = {"load": time.perf_counter() - t0}
    # Before any model loads: will the job fit? (the probe's all-bias training stands for a selection method's)
    planned = Scope("all_biases") if spec.method.name in SELECTORS else fixed_scope(spec.method, workload.bias_map())
    record["memory"] = memory_plan.check(spec, workload, planned)
    # force=true recomputes every training the record depends on; force=record reuses cached trainings.
    cache = Cache(spec.cache_dir, refresh=spec.force is True, lock_timeout=spec.lock_timeout)
    settings = replace(spec.settings, desc=f"{spec.task.name} s{spec.seed}")
    if spec.method.name in SELECTORS:
        selection, bias_map = select(spec.method, spec.budget, workload, settings, cache)
        scope = Scope("targets", selection.targets)
        record["selection"] = selection.to_record(bias_map, spec.budget)
        record["notes"] += selection.warnings
        timing.update(probe=selection.probe.seconds if selection.probe else 0.0, scoring=selection.seconds)
        write_scores(record["selection"], run_dir, logger,
                     title=f"{spec.method.name}: {spec.model.name}, {spec.task.name}, n={len(workload.train_set)}, "
                           f"seed {spec.seed}")
        log.info("%s ranking: %s -> training %s", spec.method.name, " > ".join(selection.ranking),
                 Scope("targets", selection.targets).describe())
    else:
        scope = fixed_scope(spec.method, workload.bias_map())
    settings = replace(settings, desc=f"{spec.task.name} {scope.describe()} s{spec.seed}")
    result = fit(workload, scope, settings, cache, logger)[0]   # the trained model is not kept: export needs
    runtime.free_device_memory()                                  # only its state, and one model at a time fits

    if result.head_params is not None:   # the task head's share (MPNet / RoBERTa: ~590 k of every run's count)
        record["head_params"] = result.head_params
    record.update(trainable_params=result.trainable, total_params=result.total,
                  scope={"kind": scope.kind, "targets": [list(c) for c in scope.targets], "label": scope.describe(),
                         **({"num_params": scope.num_params, "seed": scope.seed} if scope.num_params else {})},
                  n_train=len(workload.train_set), n_eval={k: len(v) for k, v in workload.eval_sets.items()},
                  env=environment(str(workload.device), result.model_source, workload.source))
    record["notes"] += result.notes
    if getattr(workload, "prompting", None):   # in-context learning: demonstrations actually shown, truncation
        record["prompting"] = workload.prompting
    record["adapter"] = export_adapter(workload, result, run_dir / "adapter")
    if result.zero_gradient:
        record["zero_gradient"] = result.zero_gradient
    if result.bias_update:
        record["bias_update"] = result.bias_update
    record["metrics"] = summarize(result.history, workload.main_metric)
    if result.predictions is not None:   # the rows the final metrics were computed from, one per example
        record["predictions"] = predictions.write(run_dir, result.predictions)
    else:   # and no earlier run's file left beside a record that does not name it
        remove(run_dir / predictions.FILE)
        record["notes"].append("no per-example predictions: the training was reused from a cache entry made "
                               "before beft kept them (force=true reruns it)")
    record["training"] = {"key": result.key, "reused": result.reused, "lr": settings.lr, "epochs": settings.epochs,
                          "steps": result.steps, "batch_size": settings.batch_size, "precision": settings.precision,
                          "optimizer": settings.optimizer,
                          **describe_precision(workload.device, settings.precision, workload.run.frozen_dtype)}
    timing.update(train=result.train_seconds, eval=result.eval_seconds, total=time.perf_counter() - t0)
    if workload.device.type == "cuda":   # the allocator's peak over the whole run (model, probe, training, eval)
        timing["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(workload.device) / 2**30, 3)
        record["memory"]["peak_gib"] = timing["peak_gpu_memory_gib"]
    record["timing"] = timing
    plot = learning_curve(result.history, run_dir / "learning_curve.png", title=run_dir.name)
    logger.log_image("learning_curve", plot)


def write_scores(selection: dict, run_dir: Path, logger, title: str) -> None:
    """scores.csv (one row per layer and type) and the heatmap, beside the record."""
    rows = [(layer, t, PAPER_LABELS[t], score) for t, per_layer in selection["scores"].items()
            for layer, score in enumerate(per_layer)]
    with atomic_write(run_dir / "scores.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["layer", "type", "label", "score", "type_score"])
        for layer, t, label, score in rows:
            writer.writerow([layer, t, label, "" if score is None else repr(score),
                             repr(selection["type_scores"][t])])
    plot = score_heatmap(selection["scores"], selection["type_scores"], run_dir / "heatmap.png",
                         title=title)
    logger.log_image("heatmap", plot)


def summarize(history: list[dict], main_metric: str) -> dict:
    """Final-epoch metrics (what the paper reports, as far as is known), the best epoch, and the history."""
    final = {k: v for k, v in history[-1].items() if "/" in k}
    best = max((e for e in history if main_metric in e), key=lambda e: e[main_metric])
    return {"main": {"name": main_metric, "value": final[main_metric]}, "final": final,
            "best": {"epoch": best["epoch"], **{k: v for k, v in best.items() if "/" in k}}, "history": history}
