"""The results store: every `result.json` under results/runs/<experiment>/, read into one tidy table of runs.

Records are read, never trusted blindly: a file that is not valid JSON, or lacks the fields a table needs, is
skipped with a warning (a half-written temp file is never even opened: only files named result.json are
records), and a record that does not check out (beft.record_check: its key is not the one its own config and
fingerprint give, it sits in another run's folder, its status and fields disagree, other code made it) is left
out of every table with a warning, and kept apart in `Store.untrusted`. One row per record; `make tables`
(beft.report.tables, beft.report.figures) aggregates these rows. The store is <experiment>/<run id>/result.json,
or run.py's flat <run id>/result.json (one experiment, shown as the top level).
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from beft.bias_map import PAPER_LABELS, TYPES
from beft.fingerprint import digest
from beft.files import read_bytes
from beft.method_table import METHODS, SELECTION_METHODS, TYPE_ORDER, arms
from beft.record import MAX_RECORD_BYTES, RECORD   # the run program names the record file; the report reads it
from beft.record_check import STATUSES, distrust, trusted_predictions
from beft.report import settings

log = logging.getLogger("beft")
CELL = ["experiment", "model", "task", "regime_label", "variant", "arm", "seed"]   # one number in a table

# Display order: the paper's model, task and regime order, then anything else alphabetically.
MODELS = ["bert-base-cased", "bert-large-cased", "roberta-base", "minilm", "mpnet-base", "opt-1.3b", "opt-6.7b",
          "llama2-7b", "gpt-j-6b", "deepseek-coder-1.3b", "smollm2-135m", "qwen2.5-coder-0.5b", "tiny-bert",
          "tiny-opt", "tiny-llama", "tiny-qwen2"]
TASKS = ["cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "cb", "wic", "boolq", "copa", "wsc",
         "multirc", "record", "squad", "drop"]
REGIMES = ["low", "medium", "high", "full"]
# Display order of the selection methods the paper and beft define (beft.method_table); whether a run is a
# selection run is read from its record (is_selection), so a new selection method needs no entry there.
SELECTION_METHODS = list(SELECTION_METHODS)
FIXED_ORDER = list(TYPE_ORDER)   # the paper's question first: b_v, b_q, b_k
# Structured updates of a bias (Table 4): arm `<method>-<types>[-authors]`, e.g. lora_bias-v.
BIAS_UPDATES = {name: entry.title for name, entry in METHODS.items() if entry.scope == "bias_updates"}


def arm_titles() -> dict[str, str]:
    """Every arm the method table defines, in its order, with its name in tables ("": arm_name composes it)."""
    return {arm: title for name in METHODS for arm, title in arms(name).items()}


def arm_order() -> list[str]:
    return list(arm_titles())


def selection_arms(ok: pd.DataFrame) -> list[str]:
    """The arms whose runs chose their biases by a selection method, in display order."""
    return sorted(ok.loc[ok["is_selection"], "arm"].unique(), key=lambda a: order_key(a, SELECTION_METHODS))


def order_key(value, order: list[str]):
    """Sort known names in the given order, then the rest alphabetically (deterministic)."""
    return (order.index(value), "") if value in order else (len(order), str(value))


def fixed_type(arm: str) -> str | None:
    """The bias type a `fixed-<t>` arm trains alone in every layer; None for any other arm (combinations too)."""
    kind = arm[len("fixed-"):] if arm.startswith("fixed-") else None
    return kind if kind in TYPES else None


def bias_update_arm(arm: str) -> tuple[str, str, bool] | None:
    """(method, types, authors' form) of a structured bias-update arm ('lora_bias-v+q-authors'); else None."""
    method, _, rest = arm.partition("-")
    if method not in BIAS_UPDATES or not rest:
        return None
    authors = rest.endswith("-authors")
    return method, rest.removesuffix("-authors"), authors


def update_arm(method: str, types: str, authors: bool) -> str:
    """The arm of a structured bias update: the inverse of bias_update_arm."""
    return f"{method}-{types}" + ("-authors" if authors else "")


def _authors_suffix(authors: bool) -> str:
    return " (authors' form)" if authors else ""


def update_form_name(method: str, authors: bool) -> str:
    """'LoRA', 'VeRA1D (authors' form)': a structured update's display name, without the bias it updates."""
    return BIAS_UPDATES[method] + _authors_suffix(authors)


def _types_label(types: str) -> str:
    return "+".join(PAPER_LABELS.get(t, t) for t in types.split("+"))


def arm_name(arm: str) -> str:
    if arm.startswith("fixed-") and ("+" in arm or fixed_type(arm)):
        return _types_label(arm[len("fixed-"):])
    update = bias_update_arm(arm)
    if update:
        method, types, authors = update
        return f"{BIAS_UPDATES[method]} on {_types_label(types)}" + _authors_suffix(authors)
    return arm_titles().get(arm) or arm


@dataclass
class Store:
    runs: pd.DataFrame                              # one row per record (ok and failed)
    records: dict[str, dict]                        # run row id -> the record itself (selection details)
    skipped: list[str] = field(default_factory=list)  # "path: why" for every file that is not a usable record
    untrusted: list[dict] = field(default_factory=list)  # {"path", "reason", "row"}: records that did not check out
    predictions: dict[str, list[dict]] = field(default_factory=dict)  # record path -> its checked per-example rows


def regime_label(config: dict) -> str:
    regime = config.get("regime") or {}
    return regime.get("name", "?") if regime.get("n") is None else f"n{regime['n']}"


def arm_of(record: dict) -> str:
    """The record's arm: the `method_label` it states (pipeline.method_label); for records written before
    records stated it, the label its run id was built with (run_id minus its known parts)."""
    if record.get("method_label"):
        return record["method_label"]
    config = record["config"]
    prefix = f"{config['model']['name']}-{config['task']['name']}-{regime_label(config)}-"
    suffix = f"-s{config['seed']}-{record['key'][:8]}"
    run_id = record.get("run_id", "")
    if run_id.startswith(prefix) and run_id.endswith(suffix) and len(run_id) > len(prefix) + len(suffix):
        return run_id[len(prefix):-len(suffix)]
    return config["method"]["name"]


def is_selection(record: dict) -> bool:
    """Whether the run chose its biases by a selection method: stated by the record (`selection_run`); in older
    records, a selection section or a method config with a probe (every selection method has one)."""
    if "selection_run" in record:
        return bool(record["selection_run"])
    return bool(record.get("selection")) or "probe" in (record["config"].get("method") or {})


def variant_of(config: dict) -> str:
    """Short hash of what changes numbers besides the method and the seed: the run's setting (model, task, regime,
    trainer, by the record key's own rules, so a field the key ignores, like an encoder task's prompted form, never
    splits a cell). Runs in one table cell must share it, or the table shows them apart."""
    return digest(settings.fields_of(config))[:6]


def _row(record: dict, experiment: str, path: Path) -> dict:
    config = record["config"]
    main = ((record.get("metrics") or {}).get("main") or {})
    metric = str(main.get("name", "")).split("/")[-1] or (config.get("task") or {}).get("main_metric")
    selection = record.get("selection") or {}
    return {
        "experiment": experiment, "path": str(path), "run_id": record.get("run_id"), "key": record["key"],
        "status": record["status"], "error": record.get("error"), "created": record.get("created", ""),
        "model": config["model"]["name"], "task": config["task"]["name"], "regime": config["regime"]["name"],
        "regime_label": regime_label(config), "n_train": record.get("n_train"), "method": config["method"]["name"],
        "arm": arm_of(record), "seed": int(config["seed"]), "variant": variant_of(config),
        "setting_fields": settings.fields_of(config), "metric": metric,
        "value": main.get("value", math.nan), "trainable_params": record.get("trainable_params"),
        "total_params": record.get("total_params"), "top_type": (selection.get("ranking") or [None])[0],
        "chosen": "+".join(selection.get("chosen_types") or []) or None, "is_selection": is_selection(record),
        "seconds": (record.get("timing") or {}).get("total", math.nan),
    }


def read_store(root: Path) -> Store:
    """Every record under root (root/<experiment>/**/result.json), newest kept when a key appears twice."""
    root = Path(root)
    rows, records, skipped, untrusted, kept = [], {}, [], [], {}
    for path in sorted(root.glob(f"**/{RECORD}")):
        where = path.relative_to(root)
        experiment = where.parts[0] if len(where.parts) > 2 else ""   # <run id>/result.json: run.py's flat layout
        try:
            record = json.loads(read_bytes(path, MAX_RECORD_BYTES))   # never through a symlink, nor unbounded
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            if record.get("status") not in STATUSES:
                raise ValueError(f"status {record.get('status')!r} is not one of {', '.join(STATUSES)}")
            row = _row(record, experiment, where)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            reason = f"{where}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            log.warning("skipping %s", reason)
            skipped.append(reason)
            continue
        doubt = distrust(record, path.parent.name)
        if doubt is not None:
            log.warning("leaving out %s, which is not trusted: %s", where, doubt)
            untrusted.append({"path": str(where), "reason": doubt, "row": row})
            continue
        rows.append(row)
        records[str(where)] = record
        examples = trusted_predictions(record, path.parent)   # an edited file is warned about and left out
        if examples is not None:
            kept[str(where)] = examples
    runs = pd.DataFrame(rows)
    if not runs.empty:
        # A record copied twice (same experiment, same key) counts once: keep the newest ok one.
        runs = runs.sort_values(["experiment", "key", "status", "created", "path"],
                                ascending=[True, True, False, False, True])  # "ok" > "failed"
        runs = runs.drop_duplicates(["experiment", "key"], keep="first")
        runs = _one_per_cell(runs)
        runs = runs.sort_values(["experiment", "path"]).reset_index(drop=True)
        runs = settings.assign(runs, arm_name)   # rows apart where settings differ (beft.report.settings)
    tabled = set(runs["path"]) if not runs.empty else set()   # a duplicate left out keeps no predictions either
    return Store(runs, records, skipped, untrusted, {p: r for p, r in kept.items() if p in tabled})


def _one_per_cell(runs: pd.DataFrame) -> pd.DataFrame:
    """Two ok records with different keys can fall in one table cell (a setting the cell does not show, such
    as budget=types on a fixed method, or a `+key`): the table uses the newest, and says so once per cell."""
    ok = runs[runs["status"] == "ok"].sort_values(["created", "path"], ascending=[False, True])
    extra = ok[ok.duplicated(CELL, keep="first")]
    for _, cell in ok[ok.duplicated(CELL, keep=False)].groupby(CELL, sort=True):
        used, *others = list(cell["run_id"])
        log.warning("%d ok records for one table cell (%s): %s; the tables use %s (the newest)", len(cell),
                    " ".join(str(cell.iloc[0][c]) for c in CELL if c != "variant"), ", ".join([used, *others]),
                    used)
    return runs.drop(index=extra.index)


def sort_runs(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Sort rows by model, task, regime, arm in the paper's order (other columns alphabetically)."""
    orders = {"model": MODELS, "task": TASKS, "regime": REGIMES, "arm": arm_order()}
    keys = {c: (lambda s, c=c: s.map(lambda v: order_key(v, orders[c]))) for c in by if c in orders}
    return frame.sort_values(by, key=lambda s: keys[s.name](s) if s.name in keys else s).reset_index(drop=True)
