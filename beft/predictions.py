"""A run's per-example predictions: `predictions.jsonl` beside `result.json`, named in the record with its hash.

One JSON line per example of the final evaluation, in each split's order: `split`, `index` (position in the
split), `id` (where the task's files give one), `gold`, `prediction`, and what the prediction was made from:
`scores` (a classifier's logits, a decoder's mean log-likelihood per candidate) or, for generation, the text
itself; `correct` where the task has a right answer (not regression). The record states
`predictions: {"file", "sha256", "count"}`; read back, the file is used only if it still has that hash and
count, so a result can be audited, re-scored and paired per example (beft.report), never from an edited file.
Bottom layer: imports only beft.files.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from beft import files

FILE = "predictions.jsonl"
MAX_BYTES = 1 << 30   # far above any split beft evaluates (ReCoRD's 10k queries with their candidates: ~10 MB)


def example_id(example: dict):
    """The example's own id where its task file gives one (SQuAD `id`, SuperGLUE `idx`), else None."""
    for name in ("id", "idx"):
        value = example.get(name) if isinstance(example, dict) else None
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return value
    return None


def lines_of(predictions: dict[str, list[dict]]) -> bytes:
    """The file's bytes: splits in the workload's order, examples in their split's order, keys sorted."""
    out = [json.dumps({"split": split, **row}, sort_keys=True) + "\n"
           for split, rows in predictions.items() for row in rows]
    return "".join(out).encode("utf-8")


def write(run_dir: Path, predictions: dict[str, list[dict]]) -> dict:
    """Write predictions.jsonl into `run_dir` (temp file + rename, never through a symlink); the record's field."""
    data = lines_of(predictions)
    files.write_bytes(Path(run_dir) / FILE, data)
    return {"file": FILE, "sha256": hashlib.sha256(data).hexdigest(), "count": data.count(b"\n")}


def read(run_dir: Path, field) -> tuple[list[dict] | None, str | None]:
    """(rows, None) if the file the record's `predictions` field names is there with its sha256 and count;
    (None, why not) otherwise. A record without the field (older runs) gives (None, None): nothing to check."""
    if field is None:
        return None, None
    if not isinstance(field, dict) or field.get("file") != FILE or not isinstance(field.get("sha256"), str) \
            or not isinstance(field.get("count"), int):
        return None, f"its predictions field is not {{file: {FILE}, sha256, count}}"
    path = Path(run_dir) / FILE
    try:
        data = files.read_bytes(path, MAX_BYTES)
    except OSError as err:
        return None, f"{path} cannot be read ({type(err).__name__}: {err})"
    if hashlib.sha256(data).hexdigest() != field["sha256"]:
        return None, f"{path} does not have the sha256 its record states (edited or replaced)"
    try:
        rows = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    except ValueError as err:
        return None, f"{path} is not JSON lines ({err})"
    if len(rows) != field["count"] or not all(isinstance(r, dict) for r in rows):
        return None, f"{path} holds {len(rows)} examples, its record states {field['count']}"
    return rows, None


def by_split(rows: list[dict]) -> dict[str, list[dict]]:
    """The rows of a predictions file grouped by split, in file order, without the `split` key."""
    out: dict[str, list[dict]] = {}
    for row in rows:
        row = dict(row)
        out.setdefault(row.pop("split"), []).append(row)
    return out
