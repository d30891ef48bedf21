"""A score folder: its name, its run record (which mixer and preset it belongs to), the check that it
is new or this command's own, and the names of the files `selectivbench score` writes."""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..builders.config import TASKS
from ..errors import ParameterError
from ..files import atomic_write_text, check_writable
from .outputs import ROW_KEYS, check_outputs, read_rows

WRITER = "selectivbench score"
RUN_RECORD = "score_run.json"
LOCK_FILE = ".score.lock"
SCORECARD_FILES = ("scorecard.json", "scorecard.md", "scorecard.png")


def folder_name(mixer: str) -> str:
    """A mixer's folder name (a plugin's target may hold '/' or ':')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", mixer)


def default_out(preset: str, mixer: str | None) -> str:
    """--all: `results` (the leaderboard beside the committed small study); one mixer: its folder
    among the leaderboard's, so a built-in's committed runs are found and not trained again."""
    return "results" if mixer is None else str(Path("results") / f"score_{preset}" / folder_name(mixer))


def is_scorecard_output(name: str) -> bool:
    return name in SCORECARD_FILES


def leaderboard_files(preset: str) -> tuple[str, ...]:
    return tuple(f"leaderboard_{preset}{ext}" for ext in (".json", ".md", ".png"))


def _provenance(plugin: dict | None) -> tuple | None:
    """Where a plugin came from and which source it had (None: a built-in)."""
    return None if plugin is None else (plugin.get("origin"), plugin.get("sha256"))


def check_score_folder(folder: Path, mixer: str, preset: str, flag: str, plugin: dict | None = None) -> None:
    """A score folder is new or empty, or holds this command's files for this very mixer and preset
    (a plugin: from the same origin with the same source): anything else (a user's files, another
    mixer's runs, an edited plugin's) is one error before any work."""
    if folder.exists() and not folder.is_dir():
        raise ParameterError(f"{flag}={str(folder)!r} is invalid: allowed a folder ({folder} is a file)")
    check_writable(folder, flag)
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    allowed = f"allowed a new or empty folder, or the score folder of mixer {mixer!r} and preset {preset!r}"
    record = folder / RUN_RECORD
    try:
        claim = json.loads(record.read_text())
        assert claim["written_by"] == WRITER
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise ParameterError(f"{flag}={str(folder)!r} is invalid: {allowed} (it holds other files and no "
                             f"{RUN_RECORD} of `selectivbench score`)") from None
    if (claim.get("mixer"), claim.get("preset")) != (mixer, preset):
        raise ParameterError(f"{flag}={str(folder)!r} is invalid: {allowed} (it is the score folder of mixer "
                             f"{claim.get('mixer')!r} and preset {claim.get('preset')!r})")
    if _provenance(claim.get("mixer_plugin")) != _provenance(plugin):
        was = claim.get("mixer_plugin") or {"origin": "built-in", "sha256": "-"}
        raise ParameterError(f"{flag}={str(folder)!r} is invalid: {allowed} from the same source (its runs are of "
                             f"{was.get('origin')} with source sha256 {str(was.get('sha256'))[:12]}, this plugin's "
                             f"{str((plugin or {}).get('sha256'))[:12]}: give another --out)")
    ours = {RUN_RECORD, LOCK_FILE, "outputs.json", *SCORECARD_FILES, *TASKS}
    for path in sorted(folder.iterdir()):
        if path.name not in ours or (path.name in TASKS and not path.is_dir()):
            raise ParameterError(f"{flag}={str(folder)!r} is invalid: {allowed} ({path} is not one of its files: "
                                 "move it away, it is never replaced)")
    check_outputs(folder, str(folder), is_scorecard_output, WRITER)
    for task in TASKS:  # both records readable before anything is written
        read_rows(folder / task / "failures.jsonl")
        read_rows(folder / task / "results.jsonl", keys=ROW_KEYS)


def claim_folder(folder: Path, mixer: str, preset: str, plugin: dict | None = None) -> None:
    """The folder's run record: the mixer (a plugin also where it came from, as its config records it)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / RUN_RECORD).exists():
        claim = {"written_by": WRITER, "mixer": mixer, "preset": preset, **({"mixer_plugin": plugin} if plugin else {})}
        atomic_write_text(folder / RUN_RECORD, json.dumps(claim, indent=1) + "\n")

