"""Readers for the local GLUE / SuperGLUE file formats (the layout of ../shared/data, see its SOURCES.md).

Every reader has the same signature, `read(path, fields, label_fn, **options) -> list[dict]`:
- `fields` maps a canonical field name (the hub schema's name, plus "label") to the column or key in the file;
- `label_fn` turns the raw label into the canonical one (class index or float) and raises ValueError on a bad
  value; the reader adds the file and line, so every bad-data error points at one line of one file.
`reader_files(name, path)` lists every file a reader opens, so callers can check and fingerprint them first.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Callable, Mapping
from pathlib import Path

from beft.data.nested_readers import NESTED_READERS
from beft.data.text_files import json_lines, read_text
from beft.errors import BeftError, choices_error

LabelFn = Callable[[object], object]

# The original WiC release: word, part of speech, token indices "i-j", sentence1, sentence2 (tab-separated).
WIC_COLUMNS = ["word", "pos", "index", "sentence1", "sentence2"]


def _pick(record: Mapping, fields: Mapping[str, str], path: Path, line: int) -> dict:
    """One example from one parsed record: the wanted columns under their canonical names."""
    example = {}
    for name, column in fields.items():
        value = _lookup(record, column)
        if value is _MISSING:
            raise BeftError(f"malformed row in {path} line {line}: no {column!r} field; fields found: "
                            f"{', '.join(map(str, record))}")
        example[name] = value
    return example


_MISSING = object()


def _lookup(record: Mapping, column: str):
    """record[column]; a dotted column ("target.span1_text", SuperGLUE WSC) walks into nested objects."""
    if column in record:
        return record[column]
    value = record
    for part in column.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _label(label_fn: LabelFn, value, path: Path, line: int):
    try:
        return label_fn(value)
    except ValueError as err:
        raise BeftError(f"{path} line {line}: {err}") from None


def _canonical(record: Mapping, fields: Mapping[str, str], label_fn: LabelFn, path: Path, line: int) -> dict:
    example = _pick(record, fields, path, line)
    if "label" in example:
        example["label"] = _label(label_fn, example["label"], path, line)
    return example


def _check_columns(path: Path, names: list[str], fields: Mapping[str, str]) -> None:
    # A missing label column usually means an unlabelled (test) file was given as an evaluation split.
    if not names:
        raise BeftError(f"{path} has no header row (the file is empty, or its first line is blank); a task file "
                        f"starts with its column names ({', '.join(fields.values())}), then one example per row")
    missing = [c for c in fields.values() if c not in names]
    if missing:
        raise BeftError(f"{path} lacks column(s) {', '.join(missing)} (needs {', '.join(fields.values())}); "
                        f"columns found: {', '.join(names) if any(names) else '(a blank header row)'}")


@contextlib.contextmanager
def _tsv_rows(path: Path, text: str):
    """csv rows of a GLUE .tsv text. No field can be longer than the file, so csv's field size limit (128 KiB by
    default, which a long passage can pass) is raised to the file's length while it is read; a csv error is one
    line naming the file and the line."""
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(text) + 1))
    try:
        with io.StringIO(text, newline="") as f:
            rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            try:
                yield rows
            except csv.Error as err:
                raise BeftError(f"malformed row in {path} line {rows.line_num}: {err}") from None
    finally:
        csv.field_size_limit(limit)


def read_glue_tsv(path: Path, fields: Mapping[str, str], label_fn: LabelFn, *,
                  header: bool = True, columns: list[str] | None = None) -> list[dict]:
    """A GLUE .tsv file. QUOTE_NONE because GLUE text contains bare quotes (the default corrupts RTE and QNLI).

    header=False (CoLA train/dev) takes the column names from `columns`.
    """
    # utf-8-sig: the GLUE MRPC files start with a byte-order mark before "Quality".
    with _tsv_rows(path, read_text(path, "utf-8-sig")) as rows:
        if header:
            names = next(rows, [])
        elif columns:
            names = list(columns)
        else:
            raise BeftError(f"reader glue_tsv for {path}: header: false needs columns: [...] naming the columns")
        _check_columns(path, names, fields)
        examples = []
        for row in rows:
            if not row:  # blank line, e.g. a trailing newline
                continue
            if len(row) != len(names):
                raise BeftError(f"malformed row in {path} line {rows.line_num}: {len(row)} tab-separated fields, "
                                f"expected {len(names)} ({', '.join(names)})")
            examples.append(_canonical(dict(zip(names, row)), fields, label_fn, path, rows.line_num))
    return examples


def read_jsonl(path: Path, fields: Mapping[str, str], label_fn: LabelFn) -> list[dict]:
    """A SuperGLUE JSON-lines file (one object per line)."""
    return [_canonical(record, fields, label_fn, path, line_no)
            for line_no, record in json_lines(path, read_text(path))]


def _wic_gold(path: Path) -> Path:
    return path.with_name(path.name.replace(".data.txt", ".gold.txt"))


def read_wic_original(path: Path, fields: Mapping[str, str], label_fn: LabelFn) -> list[dict]:
    """The original WiC release: `<split>.data.txt` with its labels (T/F) in the `<split>.gold.txt` beside it.

    Sentences here are tokenised ("gear ." not "gear."); the hub's SuperGLUE copy is detokenised.
    """
    gold_path = _wic_gold(path)
    data_lines = read_text(path).splitlines()
    gold_lines = read_text(gold_path).splitlines()
    while data_lines and not data_lines[-1].strip():
        data_lines.pop()
    while gold_lines and not gold_lines[-1].strip():
        gold_lines.pop()
    if len(data_lines) != len(gold_lines):
        raise BeftError(f"{path} has {len(data_lines)} rows but {gold_path} has {len(gold_lines)} labels; "
                        "they must match line for line")
    names = WIC_COLUMNS + ["label"]
    _check_columns(path, names, fields)
    examples = []
    for line_no, (data, gold) in enumerate(zip(data_lines, gold_lines), start=1):
        row = data.split("\t")
        if len(row) != len(WIC_COLUMNS):
            raise BeftError(f"malformed row in {path} line {line_no}: {len(row)} tab-separated fields, "
                            f"expected {len(WIC_COLUMNS)} ({', '.join(WIC_COLUMNS)})")
        example = _pick(dict(zip(WIC_COLUMNS, row), label=gold.strip()), fields, path, line_no)
        if "label" in example:  # a bad label is on the gold file's line
            example["label"] = _label(label_fn, example["label"], gold_path, line_no)
        examples.append(example)
    return examples


READERS = {"glue_tsv": read_glue_tsv, "jsonl": read_jsonl, "wic_original": read_wic_original, **NESTED_READERS}


def get_reader(name: str) -> Callable[..., list[dict]]:
    if name not in READERS:
        raise choices_error("reader", name, READERS)
    return READERS[name]


def reader_files(name: str, path: Path) -> list[Path]:
    """Every file the reader `name` opens for `path` (WiC also reads the gold file beside the data file)."""
    get_reader(name)
    return [path, _wic_gold(path)] if name == "wic_original" else [path]
