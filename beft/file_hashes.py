"""The sha256 of files, computed once: per process, and across processes through an index in the user's own cache.

A local model folder (model.path) is identified by the content of every file in it, so a weights file changed in
the middle is another key. Hashing gigabytes on every run would cost seconds to minutes, so a file's hash is kept
by its path and stat stamp (size, mtime, ctime, inode, device): the ctime moves on every write and cannot be set
back by anyone, so an edit whose mtime was reset still reads as changed. The index lives in the user's own
`~/.cache/beft` (`BEFT_HASH_INDEX` to move it), never in the shared cache_dir, where another user could plant
hashes; a torn or foreign index is ignored.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from beft import files

_MAX_INDEX_BYTES = 64 << 20
_SEEN: dict[tuple, str] = {}       # (real path, *stamp) -> sha256, this process
_INDEX: dict[str, list] | None = None


def index_path() -> Path:
    return Path(os.environ.get("BEFT_HASH_INDEX") or Path.home() / ".cache" / "beft" / "sha256-index.json")


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _index() -> dict[str, list]:
    global _INDEX
    if _INDEX is None:
        try:
            loaded = json.loads(files.read_bytes(index_path(), _MAX_INDEX_BYTES))
            _INDEX = {k: v for k, v in loaded.items() if isinstance(v, list) and len(v) == 6} \
                if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            _INDEX = {}
    return _INDEX


def sha256_files(paths) -> dict[Path, str]:
    """{path: sha256 hex} for files (symlinks to files followed: a hub snapshot's files are links to blobs)."""
    out, changed = {}, False
    for path in paths:
        real = os.path.realpath(path)
        stamp = _stamp(os.stat(real))
        seen = _SEEN.get((real, *stamp))
        if seen is None:
            known = _index().get(real)
            if known is not None and known[:5] == stamp and isinstance(known[5], str):
                seen = known[5]
            else:
                seen = _sha256(real)
                _index()[real] = [*stamp, seen]
                changed = True
            _SEEN[(real, *stamp)] = seen
        out[Path(path)] = seen
    if changed:
        try:
            files.write_json(index_path(), _index())
        except OSError:
            pass   # a read-only home: the hashes are still right, only computed again next process
    return out


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
