"""Files that are the old version or the new one, never half of either: write a temporary
sibling, then rename it over the target (atomic within one filesystem)."""
from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import ParameterError

UMASK = os.umask(0o022)  # read the process umask (the only way is to set it), then restore it
os.umask(UMASK)


@contextmanager
def replaced(path: str | Path, prefix: str | None = None, new: bool = False):
    """Yield a temporary path beside `path`; when the block ends without error it becomes `path`,
    with the permissions a plain `open` would give; on error it is removed. new=True: `path` must
    not exist (FileExistsError, checked by the link itself, so a file that appeared meanwhile stays)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix or f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes it private
        if new:
            _link_new(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _link_new(tmp: str, path: Path) -> None:
    """tmp becomes path only if path does not exist: a hard link fails on an existing name. Where the
    filesystem has no hard links (some FUSE, SMB, exFAT mounts), a check then a rename (a short race)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:
        if os.path.lexists(path):
            raise FileExistsError(path) from None
        os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str, prefix: str | None = None, new: bool = False) -> None:
    with replaced(path, prefix, new) as tmp:
        tmp.write_text(text)


@contextmanager
def file_lock(path: str | Path, busy: str | None = None, what: str = "one writer at a time"):
    """An exclusive flock for the block on `path`: a folder (locked itself, nothing is created in
    it) or a file (created if absent). The system drops it when the process ends, however it ends.
    `busy`: the ParameterError raised at once when another process holds it; None: wait for it (a
    writer that holds it for a moment). Where there are no locks (Windows, some cluster mounts) the
    block runs unlocked, with a warning that says `what`."""
    try:
        import fcntl
    except ImportError:  # not POSIX (Windows): keeping to one writer is then the user's
        yield
        return
    path = Path(path)
    fd = os.open(path, os.O_RDONLY) if path.is_dir() else os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if busy is not None else 0))
        except BlockingIOError:  # held by another process
            raise ParameterError(busy) from None
        except OSError as err:  # a filesystem without locks: run, and say so
            where = path if path.is_dir() else path.parent
            print(f"warning: {where} cannot be locked ({err.strerror}): {what} there", file=sys.stderr)
        yield
    finally:
        os.close(fd)


def check_writable(path: str | Path, field: str, value=None) -> None:
    """Files can be made at `path`: the nearest of it and its parents that exists is a folder this
    process may write (checked before any work; a read-only folder failed after it)."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if os.path.lexists(p) or p == Path(p.anchor or "."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        what = "not a folder" if not existing.is_dir() else "not writable"
        raise ParameterError(f"{field}={str(path if value is None else value)!r} is invalid: allowed a folder that "
                             f"can be written ({existing} is {what})")
