"""Files this package writes into a user's folder (a card, a sweep's tables), and the rule that keeps
the user's: a record beside them holds the sha256 of each file's bytes as this package wrote them,
and a file is replaced or removed only while its bytes are recorded there. A file edited since, or
one that was never ours, stays; the command refuses, naming it.

A record is `{"written_by": WRITER, "files": {name: [sha256, ...]}}`: several hashes while a write is
under way (the old bytes and the new), so that a crash anywhere leaves every file recorded.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .files import atomic_write_text, replaced
from .errors import ParameterError


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
    """Replace `path` (ours: checked by the caller) with `data`: the record is widened to the new
    bytes first and narrowed to them after, so a crash in between leaves the file recorded.
    new=True: `path` must not exist (FileExistsError if one appears meanwhile; it stays)."""
    name, digest = path.name, sha256(data)
    write_record(record_path, writer, {**record, name: sorted({*record.get(name, ()), digest})}, prefix)
    with replaced(path, prefix, new=new) as tmp:
        tmp.write_bytes(data)
    record[name] = [digest]
    write_record(record_path, writer, record, prefix)


def remove_owned(path: Path, record_path: Path, writer: str, record: dict[str, list[str]],
                 prefix: str | None = None) -> None:
    """Remove `path` (ours: checked by the caller) and its entry."""
    path.unlink(missing_ok=True)
    record.pop(path.name, None)
    write_record(record_path, writer, record, prefix)
