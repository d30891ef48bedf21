"""Training states that resume exactly and are never unpickled.

A state folder `state/step-N` holds tensors in safetensors files and everything else in JSON, so a
crafted file in a run folder can be wrong but never runs code. A state is written under
`step-N.tmp` and renamed when complete: a folder named `step-N` is whole, and a run killed while
saving resumes from the newest state that loads.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..files import swap_in
from ..errors import ParameterError, is_count, is_int


# --- nested state dicts <-> (JSON, tensors) ---
def _encode(obj, tensors: dict):
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):  # a list of pairs keeps int keys ints (optimizer states are keyed by int)
        return {"__dict__": [[k, _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_encode(v, tensors) for v in obj], "tuple": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a training state")


def _decode(obj, tensors: dict):
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _decode(v, tensors) for k, v in obj["__dict__"]}
        items = [_decode(v, tensors) for v in obj["__list__"]]
        return tuple(items) if obj["tuple"] else items
    return obj


def write_pair(folder: Path, name: str, state) -> None:
    tensors: dict = {}
    meta = _encode(state, tensors)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(meta))


def read_pair(folder: Path, name: str):
    return _decode(json.loads((folder / f"{name}.json").read_text()), load_file(str(folder / f"{name}.safetensors")))


# --- whole states ---
def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_of(path: Path) -> int:
    return int(path.name.split("-")[1])


def complete_states(state_dir: Path) -> list[Path]:
    """Folders named step-N (never the .tmp ones being written), newest first."""
    found = [p for p in state_dir.glob("step-*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(found, key=step_of, reverse=True)


def newest_state_step(state_dir: Path) -> tuple[Path, int] | None:
    """(folder, step) of the newest state whose progress.json reads (that --resume would start from,
    unless its tensors are damaged), without loading its tensors; None when there is none."""
    for folder in complete_states(state_dir):
        try:
            step = json.loads((folder / "progress.json").read_text())["step"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if is_int(step):
            return folder, step
    return None


def save_state(accelerator, state_dir: Path, step: int, model, optimizer, scheduler, progress: dict,
               keep: int = 2) -> None:
    """Every process writes its RNG state, the main one the rest; renamed into place when complete."""
    final, tmp = state_dir / f"step-{step}", state_dir / f"step-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    write_pair(tmp, f"rng-{accelerator.process_index}", rng_state())
    if accelerator.is_main_process:
        save_file({k: v.detach().cpu().contiguous() for k, v in accelerator.unwrap_model(model).state_dict().items()},
                  str(tmp / "model.safetensors"))
        write_pair(tmp, "optimizer", optimizer.state_dict())
        scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
        write_pair(tmp, "schedule", {"scheduler": scheduler.state_dict(), "scaler": scaler})
        (tmp / "progress.json").write_text(json.dumps({**progress, "num_processes": accelerator.num_processes}))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        swap_in(tmp, final, state_dir / f"step-{step}.old")
        for old in complete_states(state_dir)[keep:]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def read_state(folder: Path, process_index: int) -> dict:
    """Everything of one state in memory, or an error saying what is missing or broken."""
    try:
        progress = json.loads((folder / "progress.json").read_text())
        counts_ok = all(is_count(progress.get(k)) for k in ("step", "bad_evals"))
        if not (counts_ok and isinstance(progress.get("best"), (int, float))):
            raise ValueError(f"progress.json holds {progress!r}: allowed integers step, bad_evals >= 0 and a number best")
        return {"progress": progress, "model": load_file(str(folder / "model.safetensors")),
                "optimizer": read_pair(folder, "optimizer"), "schedule": read_pair(folder, "schedule"),
                "rng": read_pair(folder, f"rng-{process_index}")}
    except Exception as err:  # any unreadable file makes the whole state unusable
        raise ParameterError(f"state {folder} is incomplete or damaged: {type(err).__name__}: {err}") from None


def weights_mismatch(saved: dict, wanted: dict) -> str:
    """What differs between two {name: shape} maps of weights, in a few words ('' when nothing does)."""
    missing, unexpected = sorted(wanted.keys() - saved.keys()), sorted(saved.keys() - wanted.keys())
    reshaped = [f"{n} {saved[n]} vs {wanted[n]}" for n in sorted(wanted.keys() & saved.keys()) if saved[n] != wanted[n]]
    found = [(what, names) for what, names in (("missing", missing), ("unexpected", unexpected),
                                               ("shape saved vs model", reshaped)) if names]
    return "; ".join(f"{what}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}" for what, names in found)


def shapes(state_dict: dict) -> dict:
    return {name: tuple(t.shape) for name, t in state_dict.items()}


def load_newest_state(accelerator, state_dir: Path, model, optimizer, scheduler) -> dict | None:
    """Restore the newest state that reads whole; say which ones were passed over. Returns its progress."""
    for folder in complete_states(state_dir):
        try:
            state = read_state(folder, accelerator.process_index)
        except ParameterError as err:
            accelerator.print(f"skipping {err}")
            continue
        if state["progress"].get("num_processes", accelerator.num_processes) != accelerator.num_processes:
            raise ParameterError(f"state {folder} was saved by {state['progress']['num_processes']} processes: "
                                 f"allowed to resume with the same number (got {accelerator.num_processes})")
        differs = weights_mismatch(shapes(state["model"]), shapes(accelerator.unwrap_model(model).state_dict()))
        if differs:
            raise ParameterError(f"state {folder} is invalid for this run: allowed the weights of the model these "
                                 f"arguments build ({differs}; resume with the arguments and the selectivbench "
                                 "version that saved it)")
        accelerator.unwrap_model(model).load_state_dict(state["model"])
        try:
            optimizer.load_state_dict(state["optimizer"])
        except ValueError as err:  # parameter groups of another version's weight-decay rule
            raise ParameterError(f"state {folder} is invalid for this run: allowed an optimizer state of the same "
                                 f"parameter groups ({err})") from None
        except Exception as err:  # a damaged optimizer.json: its JSON reads, its layout does not
            raise ParameterError(f"state {folder} is invalid: allowed the optimizer.json that training writes "
                                 f"({type(err).__name__}: {err})") from None
        try:
            scheduler.load_state_dict(state["schedule"]["scheduler"])
            if accelerator.scaler is not None and state["schedule"]["scaler"] is not None:
                accelerator.scaler.load_state_dict(state["schedule"]["scaler"])
            set_rng_state(state["rng"])
        except Exception as err:
            raise ParameterError(f"state {folder} is invalid: allowed the schedule and random states that training "
                                 f"writes ({type(err).__name__}: {err})") from None
        accelerator.print(f"resumed from {folder} at step {state['progress']['step']}")
        return state["progress"]
    return None
