"""A record read back is checked, not trusted: on resume (beft.pipeline) and in `make tables` (beft.report.store).

`out_dir` may be a disk others write, and a record is a plain JSON file anyone with access can edit, copy or move.
A record is trusted only if it is what it says it is:
- its key is the one its own config and fingerprint give (beft.record.record_key; records from before
  fingerprints: one of the config-only `legacy_keys`), and its run id ends with that key and names its folder;
- it was made by this code: its fingerprint's beft version and results version are this code's
  (beft.fingerprint.code_version; for older records, as rebuilt from their `env` by `of_record`);
- its status and its fields agree: an ok record has a finite main metric and a trainable count, and no error;
  a failed or interrupted one says its error.
What no check can see is a metric edited by someone who leaves the rest alone (the key covers what determines a
number, not the number); docs/records.md ("Trust") says what that means for a shared disk.
A record's per-example predictions (beft.predictions) are checked apart: a predictions file that no longer has
the sha256 and count its record states is ignored with a warning, and the record itself still stands.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

from beft import predictions
from beft.fingerprint import code_version, of_record
from beft.record import legacy_keys, record_key

log = logging.getLogger("beft")
STATUSES = ("ok", "failed", "interrupted")   # interrupted (Ctrl-C) counts like failed: not in any table


def distrust(record, folder: str | None = None) -> str | None:
    """Why `record` cannot be trusted (one short phrase), or None when it checks out. `folder`: the name of the
    folder it was read from (its run id, where beft wrote it)."""
    if not isinstance(record, dict):
        return "it is not a JSON object"
    status, key, config, run_id = (record.get(k) for k in ("status", "key", "config", "run_id"))
    if status not in STATUSES:
        return f"its status {status!r} is not one of {', '.join(STATUSES)}"
    if not isinstance(key, str) or not isinstance(config, dict) or not isinstance(run_id, str):
        return "it lacks its key, config or run id"
    fingerprint = record.get("fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, dict):
        return "its fingerprint is not a JSON object"
    try:
        if fingerprint:
            expected = record_key(config, fingerprint)
            matches = expected == key
        else:   # made before fingerprints entered the key
            expected, matches = "config only", key in legacy_keys(config)
    except Exception as err:   # a config edited into something the key cannot read
        return f"its key cannot be recomputed from its config ({type(err).__name__})"
    if not matches:
        return f"its key {key} is not the one its config and fingerprint give ({expected})"
    if folder is not None and run_id != folder:
        return f"its run id {run_id} is not the name of its folder"
    if not run_id.endswith(f"-{key[:8]}"):
        return f"its run id {run_id} does not end with its key {key[:8]}"
    made_by = (of_record(record) or {}).get("code")
    if made_by != code_version():
        return f"it was made by other code ({made_by}; this is {code_version()})"
    return _fields_disagree(record, status)


def _fields_disagree(record: dict, status: str) -> str | None:
    if status != "ok":
        error = record.get("error")
        return None if isinstance(error, str) and error else f"it is {status} but says no error"
    if record.get("error"):
        return "it is ok but carries an error"
    metrics = record.get("metrics")
    main = metrics.get("main") if isinstance(metrics, dict) else None
    value = main.get("value") if isinstance(main, dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "it is ok but has no finite metrics.main.value"
    trainable = record.get("trainable_params")
    if not isinstance(trainable, int) or isinstance(trainable, bool) or trainable < 0:
        return "it is ok but has no trainable_params count"
    return None


def trusted_predictions(record: dict, run_dir: Path) -> list[dict] | None:
    """The record's per-example predictions if it names a file that checks out (its sha256 and count); None for a
    record without them (older runs), or, with a warning, for a file that does not check out."""
    rows, doubt = predictions.read(run_dir, record.get("predictions"))
    if doubt is not None:
        log.warning("ignoring the predictions of %s: %s", Path(run_dir).name, doubt)
    return rows
