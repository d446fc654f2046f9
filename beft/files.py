"""Files on a disk other users may write to: written by temp file + rename, read and locked never through a symlink.

The bottom of the package (it imports nothing from beft). `out_dir` and `cache_dir` may sit on a shared disk, where
anyone could plant a name beside ours: a symlink at `learning_curve.png` pointing at one of the user's files, a
FIFO at a lock's name, a folder at a record's. So:
- a file is written as a fresh temp file in its folder (mkstemp: O_EXCL, which never opens an existing name or a
  symlink) and renamed over its name (rename replaces a symlink itself, never what it points to); readers see the
  old file or the new one, never half of one;
- a folder (a PEFT adapter) is written into a private temp folder and renamed into place, so it is whole or absent;
- files are read and locks opened with O_NOFOLLOW and O_NONBLOCK, and only regular files are used (a FIFO cannot
  hang a run, a symlink cannot lead it elsewhere);
- what beft writes gets the mode the user's umask gives (mkstemp and mkdtemp alone would make 0600 / 0700);
- a write a full disk (or an exhausted quota) refuses leaves no temp file or folder behind and is raised as
  DiskFull, naming the file that could not be written (an OSError deep inside a library names none).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path


class UnsafePath(OSError):
    """A name beft will not open or write through: a symlink, a FIFO, a folder where a file belongs."""


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)   # no room: the disk, the user's quota, the file size limit


class DiskFull(OSError):
    """A write refused for lack of room; its message names the file beft was writing (its `filename`)."""

    def __str__(self) -> str:
        return f"no space left on the disk to write {self.filename} ({self.strerror})"


def disk_full(err: BaseException, path) -> BaseException:
    """`err` as a DiskFull naming `path` where it is a lack of room (ENOSPC, EDQUOT, EFBIG), else `err` itself."""
    if isinstance(err, OSError) and not isinstance(err, DiskFull) and err.errno in DISK_FULL:
        return DiskFull(err.errno, err.strerror, str(path))
    return err


def umask() -> int:
    mask = os.umask(0)   # the only way to read it is to set it, so set it straight back
    os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


def plain_name(name) -> bool:
    """Whether `name` can be one path component as it is: not empty, '.' or '..', no separator, no NUL."""
    text = str(name)
    return text not in ("", ".", "..") and not any(c in text for c in ("/", "\\", "\0"))


def _folder(path: Path) -> Path:
    """The folder `path` will be written into, made if missing; never a symlink (a planted link to elsewhere)."""
    folder = Path(path).parent
    folder.mkdir(parents=True, exist_ok=True)
    if folder.is_symlink() or not folder.is_dir():
        raise UnsafePath(f"{folder} is a symbolic link or not a folder: beft writes only into real folders")
    return folder


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", **kwargs):
    """An open temp file beside `path`; on a clean exit it is flushed, synced and renamed to `path`."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=_folder(path), prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise disk_full(err, path) from None
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        full = disk_full(err, path)
        if full is not err:
            raise full from None
        raise


def write_bytes(path, data: bytes) -> Path:
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_json(path, obj, default=None) -> Path:
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=2, sort_keys=False, default=default)
    return Path(path)


@contextlib.contextmanager
def atomic_folder(path):
    """A private temp folder beside `path` to fill; on a clean exit it replaces `path` whole (an old folder, or a
    symlink planted there, is moved aside and removed, never followed). On an error nothing is left."""
    path = Path(path)
    try:
        tmp = Path(tempfile.mkdtemp(dir=_folder(path), prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as err:
        raise disk_full(err, path) from None
    old = None
    try:
        yield tmp
        for root, dirs, names in os.walk(tmp):   # libraries write some files 0600; ours follow the umask
            for name in names:
                if not os.path.islink(os.path.join(root, name)):
                    os.chmod(os.path.join(root, name), file_mode())
            for name in dirs:
                if not os.path.islink(os.path.join(root, name)):
                    os.chmod(os.path.join(root, name), dir_mode())
        os.chmod(tmp, dir_mode())
        if os.path.lexists(path):
            old = path.with_name(f".{path.name}.old-{secrets.token_hex(4)}")
            os.rename(path, old)
        os.rename(tmp, path)
        if old is not None:
            remove(old)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not os.path.lexists(path):
            os.rename(old, path)   # the new folder could not take its place: the old one stays
        full = disk_full(err, path)
        if full is not err:
            raise full from None
        raise


def remove(path) -> None:
    """Remove a file, a symlink (the link, not its target) or a folder tree."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _open_regular(path, flags: int) -> int:
    """An fd on `path` if it is a regular file, opened without following a symlink and without blocking."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UnsafePath(f"{path} is a symbolic link") from None
        if Path(path).is_dir():
            raise UnsafePath(f"{path} is a folder, not a file") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePath(f"{path} is not a regular file")
    return fd


def read_bytes(path, limit: int) -> bytes:
    """The content of the regular file at `path` (never through a symlink); UnsafePath if larger than `limit`.
    FileNotFoundError where there is none."""
    fd = _open_regular(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise UnsafePath(f"{path} holds more than the {limit:,} bytes beft ever writes there")
    return data


def open_lock(path) -> tuple[int, bool]:
    """(fd, writable) on the lock file at `path`, made if missing and never truncated or followed. Read-only where
    the file is another user's that we may not write (flock works on either)."""
    try:
        return _open_regular(path, os.O_RDWR | os.O_CREAT), True
    except PermissionError:
        return _open_regular(path, os.O_RDONLY), False
