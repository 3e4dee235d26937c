"""Atomic file and directory writes: a reader (or a resumed run) sees the old content or
the new, never half of either. Also the one reader of user text files (JSONL, lines), so
every problem in them is reported the same way: file, line, fix."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from evalign.errors import EvalignError, InputError

#: Every temporary evalign writes starts with this: no user's file is named so, and only
#: names with it are removed as leftovers (:func:`remove_stale_temporaries`).
TEMP_PREFIX = ".evalign-tmp-"


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a binary file handle; on success its content replaces ``path`` in one rename.

    For content too large to hold in memory (streamed while it is produced); an exception in
    the block leaves ``path`` as it was and removes the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    with atomic_writer(path, mode) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str], what: str = "directory") -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``target`` in one rename.

    A checkpoint written through this is either complete or absent: a kill (or a full
    disk) mid-write leaves only a ``.evalign-tmp-*`` directory, removed here or by the next run.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{TEMP_PREFIX}{target.name}."))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise EvalignError(
                f"disk full while writing {what} {target}; free space on {target.parent} and rerun "
                "(finished stages are kept)"
            ) from None
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_lines(path: str | os.PathLike[str], *, if_empty: str | None = None) -> Iterator[tuple[int, str]]:
    """(line number, text) of every line of a UTF-8 file (a BOM on line 1 is allowed).

    A missing or unreadable file and invalid UTF-8 are an InputError naming the file and the
    line; with ``if_empty`` (the fix to suggest), so is a file with nothing but whitespace.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found; check the path") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror}); check the path") from None
    if if_empty is not None and not data.strip():
        raise InputError(f"{path}: the file is empty; {if_empty}")
    for lineno, raw in enumerate(data.splitlines(), start=1):
        try:
            yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{path} line {lineno}: invalid UTF-8 at byte {e.start + 1}; re-save the file as UTF-8") from None


def read_jsonl(path: str | os.PathLike[str], *, if_empty: str | None = None) -> Iterator[tuple[int, Any]]:
    """(line number, JSON value) of every non-blank line, read lazily so a caller's own
    check of line 2 comes before a JSON error on line 3; errors as in :func:`read_lines`."""
    for lineno, text in read_lines(path, if_empty=if_empty):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(
                f"{Path(path)} line {lineno}: invalid JSON ({e.msg} at column {e.colno}); make it one JSON object"
            ) from None
        yield lineno, value


def remove_stale_temporaries(*directories: str | os.PathLike[str]) -> int:
    """Delete leftovers of writes interrupted by a kill in ``directories``; returns how many.

    Only entries named ``.evalign-tmp-*`` (what :func:`atomic_writer` and :func:`atomic_dir`
    create), only directly in the given directories (never recursively: a run directory may
    sit in a user's folder, and a user's own ``*.tmp`` files are theirs).
    """
    n = 0
    for directory in map(Path, directories):
        try:
            entries = list(directory.iterdir())
        except OSError:  # absent or not a directory
            continue
        for p in entries:
            if not p.name.startswith(TEMP_PREFIX):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            n += 1
    return n
