"""A task: a config of a generated folder or Hub dataset, or built here, with its parameters and
grammar; the task a checkpoint recorded, and the checks that a checkpoint fits a task."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from datasets import DatasetDict

from ..builders import Grammar, TaskParams
from ..builders.config import TASKS, params_problem
from ..builders.split_cache import build_split
from ..errors import ParameterError, is_count
from ..hub.dataset_folder import make_builder
from ..hub.dataset_records import check_config_folder, load_config_folder
from .hub_ids import resolve_data_dir, resolve_hub_id

RUN_FILE = "selectivbench_run.json"  # written next to a checkpoint by `selectivbench train`


@dataclass
class Task:
    """A loaded task: its splits, its parameters and its grammar."""

    name: str
    data: DatasetDict
    params: TaskParams
    grammar: Grammar
    sizes: dict = field(default_factory=dict)  # every non-empty split's size, also of splits not loaded

    @property
    def num_labels(self) -> int:
        return self.grammar.num_states

    @property
    def split_sizes(self) -> dict:
        return self.sizes or {s: len(d) for s, d in self.data.items()}


def task_fingerprint(task_params: dict, split_sizes: dict) -> dict:
    """Everything that makes a task's samples what they are: every task parameter and every
    non-empty split's size, as JSON holds them (a run record is compared with it field by field)."""
    fields = {**task_params, **{f"split_sizes.{s}": n for s, n in split_sizes.items() if n}}
    return json.loads(json.dumps(fields))


def fingerprint_of(task: Task) -> dict:
    return task_fingerprint(task.params.to_dict(), task.split_sizes)


def fingerprint_differences(run: dict, task: Task) -> list[str]:
    """The fields in which a checkpoint's record and a task differ, each with both values."""
    return differences(task_fingerprint(run.get("task_params") or {}, run.get("split_sizes") or {}),
                       fingerprint_of(task))


def differences(recorded: dict, now: dict) -> list[str]:
    return [f"{k}: {recorded.get(k, 'absent')!r} in the record, {now.get(k, 'absent')!r} in the data"
            for k in sorted(set(recorded) | set(now)) if recorded.get(k) != now.get(k)]


def grammar_sha256(grammar: Grammar) -> str:
    """Identity of a grammar's structure (symbols, states, start states, edges), not of its task
    parameters: a model trained on `gapped` may be scored on `generalization` of the same grammar."""
    d = grammar.to_json_dict()
    d.pop("params")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def load_task(config: str, data_dir: str | None = None, cache_dir: str | None = None, num_proc=None,
              splits: list[str] | None = None, with_train: bool = True, check=None, **overrides) -> Task:
    """A config of a generated folder or Hub dataset, or built here with overrides. Only `splits`
    (default: all, train only `with_train`) are read or built, and `check(task_without_data)` runs
    before any of that work."""
    if data_dir is not None:
        if overrides:
            raise ParameterError(f"data_dir={data_dir!r} is invalid with task parameters {sorted(overrides)}: "
                                 "allowed only when the data is built here (omit --data-dir)")
        folder = resolve_data_dir(str(data_dir), config)
        record = check_config_folder(folder, config)  # every file whole before anything is read
        grammar = Grammar.load(folder / config / "grammar.json")  # its params are generation.json's (checked)
        params = TaskParams.from_dict({**record["params"], "test_gaps": tuple(record["params"].get("test_gaps", ()))})
        sizes = {s: v["num_examples"] for s, v in record["splits"].items()}
        splits = _wanted_splits(config, splits, list(record["splits"]), with_train)
        if check:
            check(Task(config, DatasetDict(), params, grammar, sizes))
        data = {s: load_config_folder(folder, config, split=s, cache_dir=cache_dir) for s in splits}
        return Task(config, DatasetDict(data), params, grammar, sizes)
    builder = make_builder(config, cache_dir=cache_dir, **overrides)
    sizes = builder.config.split_sizes  # validates every parameter
    params, grammar = builder.config.params, builder.grammar
    sizes = {s: n for s, n in sizes.items() if n > 0}
    splits = _wanted_splits(config, splits, list(sizes), with_train)
    if check:
        check(Task(config, DatasetDict(), params, grammar, sizes))
    data = {s: build_split(params, s, sizes[s], cache_dir=cache_dir, num_proc=num_proc) for s in splits}
    return Task(config, DatasetDict(data), params, grammar, sizes)


def _wanted_splits(config: str, splits, available: list[str], with_train: bool) -> list[str]:
    unknown = sorted(set(splits or ()) - set(available))
    if unknown:
        raise ParameterError(f"splits={unknown} is invalid for config {config!r}: allowed {sorted(available)}")
    return list(splits) if splits else [s for s in available if with_train or s != "train"]


def checkpoint_record(checkpoint: str | Path) -> dict:
    """What `selectivbench train` recorded next to a checkpoint (JSON, never unpickled)."""
    path = Path(checkpoint) / RUN_FILE
    if not (Path(checkpoint) / "config.json").exists():
        cut_short = Path(checkpoint).name == "model" and (Path(checkpoint).parent / "model.tmp" / RUN_FILE).is_file()
        raise ParameterError(f"checkpoint={str(checkpoint)!r} is invalid: allowed a save_pretrained folder "
                             "(no config.json there" + (f"; a save was cut short: `selectivbench train --resume "
                                                       f"--output-dir {Path(checkpoint).parent}` with the run's "
                                                       "arguments finishes it)" if cut_short else ")"))
    try:
        run = json.loads(path.read_text())
    except FileNotFoundError:
        raise ParameterError(f"checkpoint={str(checkpoint)!r} is invalid: allowed a folder with {RUN_FILE} "
                             "(made by `selectivbench train` or scripts/finetune_with_trainer.py)") from None
    except json.JSONDecodeError as err:
        raise ParameterError(f"file {path} is invalid: allowed JSON ({err})") from None
    problem = _run_record_problem(run)
    if problem:
        raise ParameterError(f"file {path} is invalid: allowed the {RUN_FILE} that `selectivbench train` writes "
                             f"({problem})")
    return run


def _run_record_problem(run) -> str | None:
    """What in a checkpoint's record differs from what `training.record.run_record` writes (the fields
    read), or None."""
    if not isinstance(run, dict):
        return "a JSON object"
    if run.get("task") not in TASKS:
        return f"task={run.get('task')!r}: allowed one of {tuple(TASKS)}"
    if (why := params_problem(run.get("task_params"))) is not None:
        return f"task_params: {why}"
    for field, kind, allowed in (("data_dir", str, "a string or null"), ("grammar_sha256", str, "a string or null"),
                                 ("train_args", dict, "an object"), ("split_sizes", dict, "an object")):
        if run.get(field) is not None and not isinstance(run[field], kind):
            return f"{field}: allowed {allowed}"
    sizes = run.get("split_sizes") or {}
    if not all(is_count(n) for n in sizes.values()):
        return "split_sizes: allowed an object of split name -> number of samples"
    return None


def checkpoint_task(checkpoint: str | Path, splits: list[str] | None = None, config: str | None = None,
                    num_proc=None, with_train: bool = True, check=None) -> Task:
    """Rebuild the task a checkpoint was trained on from its record: every TaskParams field, from
    its data folder when that is still there, else on the fly (the same samples: a sample is a pure
    function of the parameters, seed, split and index; the grammar's hash is checked after); only
    `splits` are built."""
    run = checkpoint_record(checkpoint)
    config = config or run["task"]
    data_dir = run.get("data_dir")
    # a local folder no longer there (a path that is no Hub id: absolute, or relative like 'data')
    gone = data_dir is not None and not os.path.exists(data_dir) and resolve_hub_id(data_dir) is None
    if data_dir is not None and not gone:
        return load_task(config, data_dir, splits=splits, num_proc=num_proc, with_train=with_train, check=check)
    sizes = {f"num_{s}": n for s, n in run.get("split_sizes", {}).items() if s in ("train", "validation", "test")}
    task_params = {k: tuple(v) if k == "test_gaps" else v for k, v in run["task_params"].items()}
    return load_task(config, splits=splits, num_proc=num_proc, with_train=with_train, check=check, **task_params,
                     **sizes)


def check_compatible(checkpoint: str | Path, task: Task, same_task: bool = False) -> None:
    """A checkpoint scores a task only when it was trained on the very same grammar; `same_task`: only
    the very task it recorded (every parameter and split size: a folder regenerated since is refused)."""
    run = checkpoint_record(checkpoint)
    if same_task and (differs := fingerprint_differences(run, task)):
        raise ParameterError(f"checkpoint {checkpoint} is invalid for config {task.name!r}: allowed the task it was "
                             f"trained on (its data differs from its {RUN_FILE}: {'; '.join(differs)})")
    want = grammar_sha256(task.grammar)
    if run.get("grammar_sha256") != want:
        p = run.get("task_params", {})
        raise ParameterError(
            f"checkpoint {checkpoint} is invalid for config {task.name!r}: allowed a model trained on the same grammar "
            f"(checkpoint: seed={p.get('seed')}, vocab_size={p.get('vocab_size')}, ambiguities={p.get('ambiguities')}; "
            f"task: seed={task.params.seed}, vocab_size={task.params.vocab_size}, "
            f"ambiguities={task.params.ambiguities}; grammar hashes differ)")
