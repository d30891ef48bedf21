"""Where a task's data lives: a local folder, or a Hub dataset id (`ORG/NAME[@revision][/folder]`,
`hf://datasets/...`) read through the Hub cache. Decided once here (`is_local_path`)."""
from __future__ import annotations

from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.utils import parse_hf_uri

from ..errors import ParameterError


def parse_hub_id(data_dir: str) -> tuple[str, str | None, str | None] | None:
    """(ORG/NAME, revision, folder in the repo) of a Hub dataset id, or None. huggingface_hub's own
    parser, a bare `ORG/NAME[@revision][/folder]` read as `hf://datasets/...`: it knows revisions
    with slashes (`refs/pr/1`, or URL-encoded), which a regular expression split at the first '/'."""
    try:
        uri = parse_hf_uri(data_dir if data_dir.startswith("hf://") else f"hf://datasets/{data_dir}")
    except Exception:  # HfUriError and kin: not a Hub id
        return None
    if uri.type != "dataset" or uri.id.count("/") != 1:
        return None
    return uri.id, uri.revision, uri.path_in_repo.strip("/") or None


def is_local_path(data_dir) -> bool:
    """A local folder, not a Hub id: one that exists, or a path written as one ('.', '/', '~')."""
    return Path(data_dir).exists() or str(data_dir).startswith((".", "/", "~"))


def resolve_hub_id(data_dir: str | None) -> str | None:
    """`ORG/NAME` when `data_dir` names a Hub dataset rather than a local folder, else None."""
    if data_dir is None or is_local_path(data_dir):
        return None
    parsed = parse_hub_id(str(data_dir))
    return parsed[0] if parsed else None


def resolve_data_dir(data_dir: str, config: str) -> Path:
    """A local folder as it is; a Hub dataset id `ORG/NAME[@revision]` or `hf://datasets/ORG/NAME[@rev][/sub]`
    through the Hub cache (so HF_HUB_OFFLINE and revision pinning work as everywhere in HF)."""
    local = Path(data_dir)
    if is_local_path(data_dir):
        if not (local / config).is_dir():
            raise ParameterError(f"data_dir={data_dir!r} is invalid: allowed a folder with a {config!r} config "
                                 "(made by `selectivbench generate`)")
        return local
    parsed = parse_hub_id(data_dir)
    if not parsed:
        raise ParameterError(f"data_dir={data_dir!r} is invalid: allowed a generated folder, ORG/NAME[@revision] "
                             "or hf://datasets/ORG/NAME[@revision]")
    repo_id, revision, sub = parsed
    prefix = f"{sub}/" if sub else ""
    try:
        root = Path(snapshot_download(repo_id, repo_type="dataset", revision=revision,
                                      allow_patterns=[f"{prefix}{config}/*", f"{prefix}README.md"]))
    except Exception as err:  # offline without a cached copy, unknown repo or revision
        raise ParameterError(f"data_dir={data_dir!r} is invalid: allowed a dataset repository that can be read "
                             f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    return root / sub if sub else root
