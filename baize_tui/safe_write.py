"""The one safe way to replace a file: temp file in the same directory, fsync, rename.

It never turns something that is not a regular file into one: a symbolic link, a FIFO, a
device node (``/dev/full``), a socket or a directory at the target is refused with a
:class:`~baize_tui.errors.OperationFailed` naming the path and what it is. A full disk, a
read-only file system or a missing permission are reported the same way, and the temp file
is removed, so there is never a half-written output.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from baize_tui.errors import OperationFailed, UserError

_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(path: Path) -> str | None:
    """What ``path`` is when it is not a regular file (``"a FIFO (named pipe)"``), else None.

    A missing path is None too (it can be created). Symbolic links are not followed.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    for test, name in _KINDS:
        if test(mode):
            return name
    return None


def ensure_regular_input(path: Path | str, what: str, hint: str) -> None:
    """Raise :class:`UserError` when an input ``path`` (links followed) exists but is not a
    regular file: reading a FIFO nobody writes to, or a device, would hang or never end."""
    try:
        resolved = Path(path).expanduser().resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise UserError(f"{path}: cannot resolve the {what} (a symbolic link loop?)") from None
    kind = file_kind(resolved)
    if kind is not None and kind != "a directory":
        raise UserError(f"{path}: is {kind}, not a regular file; {hint}")


def describe_os_error(path: Path | str, exc: OSError, action: str = "cannot write") -> str:
    """One line naming ``path`` and what went wrong, in words (disk full, read-only, ...)."""
    reasons = {
        errno.ENOSPC: "the disk is full; free some space and try again",
        errno.EDQUOT: "the disk quota is exhausted; free some space and try again",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
    }
    reason = reasons.get(exc.errno or 0) or exc.strerror or str(exc)
    where = exc.filename if exc.filename else path
    return f"{where}: {action} ({reason})"


def refuse_non_regular(path: Path, what: str = "output") -> None:
    """Raise :class:`OperationFailed` unless ``path`` is missing or a regular file."""
    kind = file_kind(path)
    if kind is not None:
        raise OperationFailed(
            f"{path}: is {kind}, not a regular file; refusing to replace it with the {what} "
            "(give the path of a regular file, or leave -o out to print to stdout)"
        )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically; refuses targets that are not regular files."""
    path = Path(path)
    refuse_non_regular(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        refuse_non_regular(path)  # checked again: something may have appeared meanwhile
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OperationFailed(describe_os_error(path, exc)) from exc
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8", errors="replace"))
