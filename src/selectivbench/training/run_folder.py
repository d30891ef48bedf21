"""A run folder (`selectivbench train --output-dir`): checked before any work, held by one run at a
time, its log, and its `model/` swapped in whole."""
from __future__ import annotations

import json
import shutil
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, replace
from pathlib import Path

from accelerate.utils import broadcast_object_list

from ..data.task import RUN_FILE, Task, checkpoint_record, differences, fingerprint_differences

from ..data.hub_ids import resolve_hub_id
from ..errors import ParameterError
from ..files import atomic_write_text, check_writable, file_lock, swap_in
from ..hub.dataset_records import check_outside_configs
from ..models.plugins import absolute_spec
from .args import TrainArgs


# what may change when a run is resumed: where and how it reports, not what it trains
RESUME_MAY_CHANGE = ("output_dir", "resume", "quiet", "report_to", "cpu")


def absolute_data_dir(data_dir: str | None) -> str | None:
    """A local data folder as an absolute path, a Hub id as it is: the run and its checkpoint are read
    later from other directories (a relative 'o/sb' would then read as a Hub id)."""
    if data_dir is not None and resolve_hub_id(data_dir) is None and Path(data_dir).exists():
        return str(Path(data_dir).resolve())
    return data_dir


def with_absolute_data_dir(args: TrainArgs) -> TrainArgs:
    """Also a plugin file's path (PATH.py:CLASS), for the same reason."""
    return replace(args, data_dir=absolute_data_dir(args.data_dir), mixer=absolute_spec(args.mixer))


def check_output_dir(out: Path, args: TrainArgs) -> None:
    """A run folder is new, or the same run resumed: never mixes two runs' files, never touches a
    folder that is not a run's (a run folder holds the train_args.json of the same arguments)."""
    if not args.output_dir:  # Path("") is the current folder: "" is a mistake, not a choice of "."
        raise ParameterError("output_dir='' is invalid: allowed a folder path (not empty)")
    if out.exists() and not out.is_dir():
        raise ParameterError(f"output_dir={str(out)!r} is invalid: allowed a folder (it is a file)")
    check_outside_configs(out, "output_dir")
    check_writable(out, "output_dir")
    if not (out.exists() and any(p.name != TRAIN_LOCK for p in out.iterdir())):
        return
    if not args.resume:
        raise ParameterError(f"output_dir={str(out)!r} is invalid: allowed an empty or new folder "
                             "(pass --resume to continue the run that is there)")
    saved_path = out / "train_args.json"
    try:
        saved = json.loads(saved_path.read_text())
        assert isinstance(saved, dict)
    except (OSError, ValueError, AssertionError):
        raise ParameterError(f"output_dir={str(out)!r} is invalid: allowed with --resume an empty folder or a run "
                             f"folder (its {saved_path.name} is missing or unreadable)") from None
    given = json.loads(json.dumps(asdict(args)))  # as the file holds them (tuples as lists)
    differs = [f"{k}={v!r} (the run's: {saved.get(k, 'absent')!r})" for k, v in given.items()
               if k not in RESUME_MAY_CHANGE and saved.get(k, 'absent') != v]
    if differs:
        raise ParameterError(f"output_dir={str(out)!r} is invalid: allowed with --resume only the arguments of the "
                             f"run there ({'; '.join(differs)})")


TRAIN_LOCK = ".selectivbench-train.lock"  # in the run folder: held by the run writing there


@contextmanager
def run_folder_lock(accelerator, out: Path, args: TrainArgs):
    """One `train` per run folder: a second run into it (started meanwhile, or a --resume while the
    first runs) is refused at once, before anything is written; two would interleave their logs and
    replace each other's files. The main process takes it and tells the others, so that every
    process refuses together. The folder is checked again under the lock: a run may have written
    there since the first check."""
    made = [p for p in (out, *out.parents) if not p.exists()] if accelerator.is_main_process else []
    with ExitStack() as held:
        refusal = None
        if accelerator.is_main_process:
            try:
                out.mkdir(parents=True, exist_ok=True)
                held.enter_context(file_lock(out / TRAIN_LOCK, busy=(
                    f"output_dir={str(out)!r} is invalid: allowed a folder no other `selectivbench train` is writing "
                    f"to ({out} is in use: wait for that run or stop it)")))
                check_output_dir(out, args)
            except (ParameterError, OSError) as err:
                refusal = str(err) if isinstance(err, ParameterError) else \
                    f"output_dir={str(out)!r} is invalid: allowed a folder that can be made ({err.strerror})"
        try:
            refusal = broadcast_object_list([refusal])[0]
            if refusal is not None:
                raise ParameterError(refusal)
            yield
        except BaseException:
            remove_if_unused(made, out / TRAIN_LOCK)
            raise


def remove_if_unused(made: list[Path], lock: Path) -> None:
    """A run that failed before writing anything leaves no folder behind: the lock file (still held)
    and the folders this run made for it are removed, when they hold nothing else."""
    if not made or not lock.exists() or [p.name for p in made[0].iterdir()] != [lock.name]:
        return
    lock.unlink()
    for folder in made:
        try:
            folder.rmdir()
        except OSError:  # not empty (another run made something there meanwhile)
            break


def check_state_within(where: Path, step: int, steps: int, args: TrainArgs) -> None:
    """A saved state past the run's last step is another run's (a copied folder, an edited record, a
    training split that has shrunk): resuming it would train nothing and report that run as this one."""
    if step > steps:
        field, value = ("max_steps", args.max_steps) if args.epochs is None else ("epochs", args.epochs)
        raise ParameterError(f"{field}={value} is invalid for output_dir={args.output_dir!r}: allowed with --resume "
                             f"a run whose saved state is at most at its last step {steps} ({where} is at step {step}: "
                             "it belongs to another run)")


def saved_record(out: Path) -> dict | None:
    """The run record of the checkpoint a run folder holds (checked, read before any work), or None."""
    return checkpoint_record(out / "model") if (out / "model" / RUN_FILE).exists() else None


def check_same_task(out: Path, task: Task, record: dict | None) -> None:
    """A resumed run trains on the task it started on: every task parameter and split size of its
    record (a data folder may have been regenerated with another seq_len or noise)."""
    if record is not None and (differs := fingerprint_differences(record, task)):
        raise ParameterError(f"output_dir={str(out)!r} is invalid: allowed with --resume the task the run was "
                             f"trained on (its {RUN_FILE} differs from the data now: {'; '.join(differs)})")


def check_state_task(out: Path, restored: dict, fingerprint: dict) -> None:
    """The newest state was saved by a run of this task (its model/ record may be missing: a run
    killed between its first state and its first checkpoint)."""
    if (differs := differences(restored.get("task") or {}, fingerprint)):
        raise ParameterError(f"output_dir={str(out)!r} is invalid: allowed with --resume the task the run was "
                             f"trained on (its newest state's task differs from the data now: {'; '.join(differs)})")

def log(accelerator, out: Path, record: dict, report_to) -> None:
    if accelerator.is_main_process:
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
    if report_to:
        accelerator.log(record, step=record["step"])


def drop_log_after(path: Path, step: int) -> None:
    """Keep the log lines up to `step`. A last line cut short by a kill is dropped; a damaged line
    before it is an error naming the file."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            logged = record["step"]
            assert isinstance(logged, int)
        except (ValueError, KeyError, TypeError, AssertionError):
            if number == len(lines):
                break
            raise ParameterError(f"file={str(path)!r} is invalid: allowed one JSON record with an integer 'step' "
                                 f"per line (line {number} is not)") from None
        if logged <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))

def model_swap_folders(out: Path) -> tuple[Path, Path, Path]:
    """`model/`, the new one being written, the previous one being removed."""
    return out / "model", out / "model.tmp", out / "model.old"


def repair_model_swap(out: Path) -> None:
    """Finish a `save_model` cut short. Its new folder is complete once its run record is in (written
    last), and `model/` is renamed away only after that: a complete new one is swapped in (a kill
    between the two renames left no `model/` at all); the leftovers of a kill at any other point
    are removed. (A --resume of a finished run trains nothing: it saved nothing either.)"""
    final, tmp, old = model_swap_folders(out)
    if (tmp / RUN_FILE).is_file():  # complete, and newer than any model/ (save_model removes it first)
        swap_in(tmp, final, old)
    for p in (tmp, old):
        shutil.rmtree(p, ignore_errors=True)


def save_model(accelerator, model, out: Path, meta: dict) -> None:
    """`model/` is swapped in whole: a reader sees the previous checkpoint or this one; a kill between
    the two renames is finished by `repair_model_swap` (the next train or --resume of the folder)."""
    if accelerator.is_main_process:
        final, tmp, old = model_swap_folders(out)
        for p in (tmp, old):
            shutil.rmtree(p, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(tmp)
        atomic_write_text(tmp / RUN_FILE, json.dumps(meta, indent=1))
        swap_in(tmp, final, old)
    accelerator.wait_for_everyone()
