"""Files that stay whole under concurrent runs: atomic writes and file locks.

The one leaf module below every package (benchmarks, strategies, models and results all write
through it; it imports the standard library only).

**Atomic writes.** The content is written to a uniquely named temporary file in the target's
folder (so concurrent writers never share one) and moved over the target with ``os.replace``; on
an error the temporary file is removed and the target is untouched.

**Locks.** ``flock`` on a lock file, exclusive or shared.

One mechanism for every lock of the suite: a run folder's, a base pre-training's, an image
cache build's (its readers share one), a probe fit's. ``flock`` is advisory and released by the
kernel when the holder's descriptor closes, also when the process dies (even by SIGKILL), so a
killed run never leaves a stale lock. The lock belongs to an open file description: threads
taking it each open their own.

Some filesystems refuse ``flock`` (ENOLCK, EOPNOTSUPP or ENOSYS): Lustre mounted without
``-o flock`` (``-o localflock`` locks within one node only), NFS without a lock manager, some
FUSE mounts. That is :class:`LocksUnsupported`, one line naming the folder and the fix. There is
no fallback: a lock file created with ``O_CREAT | O_EXCL`` is not removed when its holder is
killed, and the pid written in it says nothing on another node of a cluster, so a stale one
could only be broken by guessing — and two runs writing one folder is what the locks prevent.
:func:`check_locks` finds out before any work.
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Create or replace ``path`` with what ``write(binary file)`` writes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make the file unreadable to others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Create or replace ``path`` with ``text`` (UTF-8)."""
    atomic_write(path, lambda f: f.write(text.encode()))


# flock's errors where the filesystem has no locks (ENOTSUP is EOPNOTSUPP on Linux)
UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS)


class LockHeld(RuntimeError):
    """A non-blocking lock is held by another process."""


class LocksUnsupported(OSError):
    """The filesystem refuses ``flock``."""


def _flock(fd: int, path: Path, blocking: bool, shared: bool = False) -> None:
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
                    | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError as e:
        raise LockHeld(f"{path.parent} is locked by another process (it holds {path.name})") \
            from e
    except OSError as e:
        if e.errno not in UNSUPPORTED:
            raise
        raise LocksUnsupported(
            f"{path.parent}: its filesystem refuses file locks (flock: "
            f"{os.strerror(e.errno)}); mount it with -o flock (Lustre) or use a folder on a "
            "filesystem with flock (a local disk, NFSv4)") from e


@contextmanager
def file_lock(path: Path, blocking: bool = True, shared: bool = False) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created, with its folder, if needed) for the block, or
    with ``shared=True`` one that other shared holders may hold at once (readers) and an exclusive
    one excludes; with ``blocking=False`` :class:`LockHeld` at once if it cannot be had. To
    change kinds leave the block first: a nested block opens its own descriptor and would wait
    for the outer one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _flock(fd, path, blocking, shared)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def check_locks(folder: Path) -> None:
    """Raise :class:`LocksUnsupported` if locks cannot be taken in ``folder`` (or, while it does
    not exist, in the nearest existing folder above it, where it will be created), and the
    ``OSError`` if a file cannot be created there; leaves nothing behind."""
    folder = Path(folder).absolute()
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".lock-check-") as f:
        _flock(f.fileno(), Path(f.name), blocking=False)
