"""Reading task files as text: UTF-8 checked with the file and line named, and JSON lines parsed one object per
line. Shared by the flat readers (beft.data.readers) and the nested ones (beft.data.nested_readers)."""
from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from beft.errors import BeftError


def decode(path: Path, data: bytes, encoding: str = "utf-8") -> str:
    """A data file's text. Bytes that are not UTF-8 text (a binary or wrongly encoded file) are one error naming
    the file and line, not a UnicodeDecodeError deep inside a reader."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise BeftError(f"{path} line {line} is not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start}): "
                        f"a binary or wrongly encoded file? Task files must be UTF-8") from None
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise BeftError(f"{path} line {line} holds a NUL byte: a binary file, not UTF-8 text as task files must be")
    return text


def read_text(path: Path, encoding: str = "utf-8") -> str:
    return decode(path, Path(path).read_bytes(), encoding)


def read_gzip_text(path: Path) -> str:
    try:
        data = gzip.decompress(Path(path).read_bytes())
    except (OSError, EOFError) as err:
        raise BeftError(f"{path} is not a readable gzip file: {err}") from None
    return decode(path, data)


def json_lines(path: Path, text: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a line that is not a JSON object is one error."""
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise BeftError(f"malformed row in {path} line {line_no}: not JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise BeftError(f"malformed row in {path} line {line_no}: expected a JSON object")
        yield line_no, record
