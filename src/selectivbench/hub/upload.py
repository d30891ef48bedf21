"""Uploads to the Hub: repository ids and offline mode checked before any work, and a generated
dataset folder published (exactly its recorded files)."""
from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi, constants
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..builders import TASKS
from ..errors import ParameterError
from .dataset_card import CARD_RECORD, card_record, write_card
from .dataset_records import RECORD, check_config_folder


def check_repo_id(repo_id, field: str = "repo_id", what: str = "", org: bool = True) -> None:
    """ORG/NAME (org=False: also NAME alone) as the Hub accepts it (huggingface_hub's own validator),
    before any work."""
    form = "ORG/NAME" if org else "NAME or ORG/NAME"
    allowed = f"allowed {form}{what} (letters, digits, '-', '_', '.'; no '--' or '..')"
    if not isinstance(repo_id, str) or repo_id.count("/") not in ((1,) if org else (0, 1)):
        raise ParameterError(f"{field}={repo_id!r} is invalid: {allowed}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise ParameterError(f"{field}={repo_id!r} is invalid: {allowed}") from None


def check_can_upload(repo_id: str) -> None:
    """An upload in offline mode would fail only at its first request: refuse it before any work."""
    if constants.HF_HUB_OFFLINE:
        raise ParameterError(f"dry_run=False is invalid in offline mode (HF_HUB_OFFLINE=1): allowed --dry-run, "
                             f"or HF_HUB_OFFLINE unset to upload to {repo_id}")


def publish_folder(folder: str | Path, repo_id: str, dry_run: bool = False, private: bool = False) -> list[str]:
    """Check every config's files, rewrite the card's load snippet to repo_id, then upload the folder
    (with dry_run: only list it). Nothing is written unless every check passes."""
    folder = Path(folder)
    readme = folder / "README.md"
    if not readme.exists() or not (folder / CARD_RECORD).exists():
        raise ParameterError(f"folder={str(folder)!r} is invalid: allowed a folder made by `selectivbench generate`")
    card_record(folder, "folder", "a folder whose card `selectivbench generate` wrote")  # an edited card stays
    check_repo_id(repo_id)
    if not dry_run:
        check_can_upload(repo_id)
    # every file whole, as its generation.json records it (a config without one is refused)
    records = [check_config_folder(folder, name) for name in TASKS if (folder / name).exists()]
    if not records:
        raise ParameterError(f"folder={str(folder)!r} is invalid: allowed a folder with at least one generated config "
                             f"(it has none of {TASKS})")
    write_card(folder, repo_id)
    # exactly the dataset: the card and each config's recorded files, nothing else the folder holds (a
    # user's notes, an .env, an old copy); the remote files of these configs that are not among them
    # (a split of another size, sharded differently) are deleted in the same commit
    files = ["README.md"] + sorted(f"{r['config']}/{name}" for r in records for name in
                                   [RECORD, "grammar.json", *(f["name"] for s in r["splits"].values() for f in s["files"])])
    if not dry_run:
        api = HfApi()
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                          commit_message="Upload SelectivBench data", allow_patterns=files,
                          delete_patterns=[f"{r['config']}/*" for r in records])
    return files
