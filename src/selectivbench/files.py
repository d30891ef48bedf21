"""Files and folders this package writes, and the rules that keep them whole and keep the user's.

- Whole: a file is written to a temporary sibling and renamed over the target (`replaced`,
  `atomic_write_text`); a folder is built beside its target and swapped in (`swap_in`). A reader
  sees the old version or the new one, never half of either.
- One writer: `file_lock`.
- Ours: files this package writes into a user's folder (a card, a sweep's tables) are recorded:
  a record beside them holds the sha256 of each file's bytes as this package wrote them, and a file
  is replaced or removed only while its bytes are recorded there. A file edited since, or one that
  was never ours, stays; the command refuses, naming it. A record is
  `{"written_by": WRITER, "files": {name: [sha256, ...]}}`: several hashes while a write is under
  way (the old bytes and the new), so that a crash anywhere leaves every file recorded.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from contextlib import ExitStack, contextmanager
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


def check_new_file(path: str, field: str) -> None:
    """A file we are asked to write: never over a user's file, and its folder must take it."""
    if not path:
        raise ParameterError(f"{field}='' is invalid: allowed a file path (not empty)")
    p = Path(path)
    if os.path.lexists(p):  # a dangling link too: the file would be made at its target, or fail after the work
        raise ParameterError(f"{field}={path!r} is invalid: allowed a path that does not exist yet (never overwritten"
                             f"{'; it is a link' if p.is_symlink() else ''})")
    if not p.parent.is_dir() or not os.access(p.parent, os.W_OK):
        raise ParameterError(f"{field}={path!r} is invalid: allowed a path in a writable folder ({p.parent})")


def swap_in(new: Path, target: Path, old: Path) -> None:
    """Folder `new` (complete) becomes `target`: the current `target` is renamed to `old` first, and
    removed after. A kill between the two renames leaves `old` and `new` and no `target`: the caller
    that knows when `new` is complete finishes it (`swap_in` again)."""
    if os.path.lexists(target):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


# --- ownership: the sha256 record ---
def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_record(path: Path, writer: str, refusal: str) -> dict[str, list[str]] | None:
    """{name: [accepted sha256, ...]} of the record at `path`, None when there is none; a file there
    that is not `writer`'s record is ParameterError(refusal + why): it is never replaced."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        assert data["written_by"] == writer and isinstance(data["files"], dict)
        assert all(isinstance(v, list) and all(isinstance(h, str) for h in v) for v in data["files"].values())
        return data["files"]
    except Exception:
        raise ParameterError(f"{refusal} ({path} is another file; move it away)") from None


def write_record(path: Path, writer: str, files: dict[str, list[str]], prefix: str | None = None) -> None:
    atomic_write_text(path, json.dumps({"written_by": writer, "files": files}, indent=1, sort_keys=True) + "\n",
                      prefix=prefix)


def is_ours(path: Path, record: dict[str, list[str]]) -> bool:
    """`path` is absent, or a plain file whose bytes are recorded under its name."""
    if not path.exists() and not path.is_symlink():
        return True
    return path.is_file() and not path.is_symlink() and sha256(path.read_bytes()) in record.get(path.name, ())


def write_owned(path: Path, data: bytes, record_path: Path, writer: str, record: dict[str, list[str]],
                new: bool = False, prefix: str | None = None) -> None:
    """Replace `path` (ours: checked by the caller) with `data` (`write_all_owned`)."""
    write_all_owned({path: data}, record_path, writer, record, new, prefix)


def write_all_owned(files: dict[Path, bytes], record_path: Path, writer: str, record: dict[str, list[str]],
                    new: bool = False, prefix: str | None = None) -> None:
    """Replace each file (ours: checked by the caller) with its bytes: all of them are written to
    temporary siblings first (a full disk leaves every file, and the record, as they were); the record
    is widened to the new bytes before the renames and narrowed to them after, so a crash in between
    leaves every file recorded. new=True: the files must not exist (FileExistsError if one appears
    meanwhile; it stays)."""
    digests = {path.name: sha256(data) for path, data in files.items()}
    with ExitStack() as renames:
        for path, data in files.items():
            renames.enter_context(replaced(path, prefix, new=new)).write_bytes(data)
        write_record(record_path, writer, {**record, **{name: sorted({*record.get(name, ()), digest})
                                                         for name, digest in digests.items()}}, prefix)
    record.update({name: [digest] for name, digest in digests.items()})
    write_record(record_path, writer, record, prefix)


def remove_owned(path: Path, record_path: Path, writer: str, record: dict[str, list[str]],
                 prefix: str | None = None) -> None:
    """Remove `path` (ours: checked by the caller) and its entry."""
    path.unlink(missing_ok=True)
    record.pop(path.name, None)
    write_record(record_path, writer, record, prefix)
