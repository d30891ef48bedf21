"""`selectivbench evaluate`: many checkpoints x task configs and splits, on any number of processes
(Accelerate shards the batches, `gather_for_metrics` reassembles them exactly).

By default each checkpoint is scored on the task it was trained on, rebuilt from its record
(`data.checkpoint_task`); `configs`, `data_dir` or task overrides score it elsewhere, and only a
task of the very same grammar is accepted. Only the asked splits are read or built.

One row per (model, config, split) appended to `<out>.jsonl` and `<out>.csv` (`tables.py`): element
and per-step accuracy, token-mean loss, and the Bayes ceiling of the same samples beside them.
`seed` is the task seed; `noise_seed` seeds the evaluation input noise.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors import safe_open
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

from ..errors import ParameterError, check_int
from ..builders.ceiling import ceiling_counts
from ..builders.sampler import Sampler
from ..data.collator import SelectivBenchCollator, model_view
from ..data.task import Task, check_compatible, checkpoint_record, checkpoint_task, load_task
from ..models.configuration_selectivbench import IGNORE_INDEX
from .metrics import accuracies, element_starts, step_cross_entropy, window_predictions
from .tables import append_rows, check_table_path
from ..models import SelectivBenchConfig, SelectivBenchForTokenClassification
from ..models.modeling_selectivbench import AUTO_MAP
from ..training.state import shapes, weights_mismatch
from ..backbone import BackboneConfig, model_class_of

MAX_NOISE_SEED = 2**63 - 1  # the task seed's range; data.noise_for's SeedSequence takes no negative entropy


@torch.no_grad()
def evaluate_loader(model, loader, accelerator, desc: str | None = None) -> dict:
    """Element/step accuracy and token-mean loss over a loader, gathered across processes."""
    model.eval()
    totals = torch.zeros(5, dtype=torch.float64, device=accelerator.device)
    bar = tqdm(loader, desc=desc, disable=desc is None or not accelerator.is_local_main_process, leave=False)
    for batch in bar:
        out = model(input_ids=batch["input_ids"], input_noise=batch.get("input_noise"))
        per_sample = per_sample_counts(out.logits, batch["labels"], batch["element_index"])
        totals += accelerator.gather_for_metrics(per_sample).sum(0)
    model.train()
    el_c, el_n, st_c, st_n, loss = totals.tolist()
    counts = {"element_correct": el_c, "elements": el_n, "step_correct": st_c, "steps": st_n}
    return {**accuracies(counts), "loss": loss / max(st_n, 1), "elements": int(el_n), "steps": int(st_n)}


def per_sample_counts(logits, labels, element_index) -> torch.Tensor:
    """(B, 5): element correct, elements, step correct, steps, summed loss; one row per sample,
    so that gather_for_metrics can drop the duplicates of an uneven last batch."""
    step_pred, element_pred = window_predictions(logits, labels, element_index)
    valid = labels != IGNORE_INDEX
    first = element_starts(valid, element_index)
    loss = step_cross_entropy(logits, labels).sum(1)
    rows = [((element_pred == labels) & first).sum(1), first.sum(1), ((step_pred == labels) & valid).sum(1),
            valid.sum(1), loss]
    return torch.stack([r.double() for r in rows], 1)


def ceiling_of(task: Task, split: str, dataset) -> dict:
    c = ceiling_counts(Sampler(task.params, task.grammar), split, dataset)
    return {"bayes_" + k: v for k, v in accuracies(c).items()}


def check_weights(checkpoint: str | Path) -> None:
    """The checkpoint's saved tensors are exactly this model's parameters, by name and shape.
    from_pretrained only warns on a mismatch and starts the missing ones from random values: a
    checkpoint of an older block layout would then be scored as a partly untrained model. Reads
    what from_pretrained(use_safetensors=True) reads: model.safetensors, else the shards its index
    names (never a pickle)."""
    folder = Path(checkpoint)
    check_model_type(folder)
    files = [folder / name for name in weight_files(folder) if name.endswith(".safetensors")]
    try:
        saved = {}
        for file in files:
            with safe_open(str(file), framework="pt") as f:
                saved.update({name: tuple(f.get_slice(name).get_shape()) for name in f.keys()})
        model_class = model_class_of(folder)
        config = model_class.config_class.from_pretrained(folder, trust_remote_code=False)
        if model_class is not SelectivBenchForTokenClassification:
            # a transformers backbone may save its weights in another layout than it holds them (MoE
            # experts): transformers' own loader converts them and says what did not load
            _, info = model_class.from_pretrained(folder, use_safetensors=True, output_loading_info=True,
                                                 trust_remote_code=False)
            differs = "; ".join(f"{kind}: {', '.join(map(str, info[kind]))}" for kind in
                                ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(kind))
        else:
            with torch.device("meta"):  # names and shapes only: no memory, no init
                model = model_class(config)
            differs = weights_mismatch(saved, shapes(model.state_dict()))
    except Exception as err:  # unreadable weights or config: one line naming the checkpoint
        raise ParameterError(f"checkpoint={str(checkpoint)!r} is invalid: allowed a folder whose weights and "
                             f"config.json load ({type(err).__name__}: {' '.join(str(err).split())})") from None
    if not config.return_dict:  # the model would return tuples, read here by name: an error after the data
        raise ParameterError(f"file={str(folder / 'config.json')!r} is invalid: allowed return_dict true (it is "
                             f"{config.return_dict!r}; the evaluation reads the model's outputs by name)")
    if differs and model_class is not SelectivBenchForTokenClassification:
        raise ParameterError(f"checkpoint={str(checkpoint)!r} is invalid: allowed the complete weights of its "
                             f"{config.mixer} model ({differs})")
    if differs:
        raise ParameterError(f"checkpoint={str(checkpoint)!r} is invalid: allowed the weights of this version's "
                             f"{config.mixer} block ({differs}; saved by another selectivbench version? its own "
                             "code beside the weights loads it with trust_remote_code=True in a process that has "
                             "not imported selectivbench)")


def check_model_type(folder: Path) -> None:
    """config.json is this package's model: its model_type, and an auto_map naming only the code that
    save_pretrained ships with it. Anything else is someone else's code, never imported here (and
    transformers would ask whether to run it): one error before anything is loaded."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # nothing to run in it; loading it is refused next, naming the checkpoint
    ours = (SelectivBenchConfig.model_type, BackboneConfig.model_type)
    if not isinstance(config, dict) or config.get("model_type") not in ours:
        found = config.get("model_type") if isinstance(config, dict) else config
        raise ParameterError(f"file={str(path)!r} is invalid: allowed model_type {' or '.join(map(repr, ours))} "
                             f"(found {found!r}; code of another model is never run here)")
    if config.get("auto_map") not in (None, AUTO_MAP):
        raise ParameterError(f"file={str(path)!r} is invalid: allowed no auto_map or selectivbench's own "
                             f"{AUTO_MAP} (found {config['auto_map']!r}; code shipped in a folder is never run here)")


def weight_files(checkpoint: str | Path) -> list[str]:
    """The weight files of a checkpoint, by name: model.safetensors, else the index and the shards it
    names, each a file of the folder itself (a name like '../x' or '/etc/x' would read, and upload,
    a file outside it). ParameterError naming the checkpoint otherwise."""
    folder = Path(checkpoint)
    if (folder / SAFE_WEIGHTS_NAME).is_file():
        return [SAFE_WEIGHTS_NAME]
    if not (folder / SAFE_WEIGHTS_INDEX_NAME).is_file():
        raise ParameterError(f"checkpoint={str(checkpoint)!r} is invalid: allowed a folder with {SAFE_WEIGHTS_NAME} "
                             f"or {SAFE_WEIGHTS_INDEX_NAME} (other formats are pickles, never loaded here)")
    try:
        shards = sorted(set(json.loads((folder / SAFE_WEIGHTS_INDEX_NAME).read_text())["weight_map"].values()))
        assert all(isinstance(name, str) for name in shards)
    except Exception:
        raise ParameterError(f"file={str(folder / SAFE_WEIGHTS_INDEX_NAME)!r} is invalid: allowed a JSON object whose "
                             "weight_map maps each weight to a shard's file name") from None
    outside = [name for name in shards if name in ("", ".", "..") or Path(name).name != name]
    if outside:
        raise ParameterError(f"file={str(folder / SAFE_WEIGHTS_INDEX_NAME)!r} is invalid: allowed shards that are "
                             f"files of the checkpoint folder itself (it names {outside[:3]})")
    return [SAFE_WEIGHTS_INDEX_NAME, *shards]


def tasks_for(checkpoints: list[str], configs: list[str] | None, splits, data_dir, overrides) -> list[tuple]:
    """(task, checkpoints) pairs; every checkpoint is checked against its task's grammar before any
    split is read or built, and only the asked splits (default: all but train) are."""
    if configs is None and (data_dir is not None or overrides):
        raise ParameterError("configs is invalid: allowed a list of configs whenever --data-dir or task "
                             "parameters are given (without them each checkpoint is scored on its own task)")

    for c in checkpoints:  # every record readable and every set of weights loadable before a task is built
        checkpoint_record(c)
        check_weights(c)

    def check(ckpts, same_task=False):
        def every_checkpoint_fits(task):
            for c in ckpts:
                check_compatible(c, task, same_task)
        return every_checkpoint_fits

    if configs is None:  # each checkpoint on the task it recorded, every parameter and split size as recorded
        return [(checkpoint_task(c, splits=splits, with_train=False, check=check([c], same_task=True)), [c])
                for c in checkpoints]
    return [(load_task(c, data_dir, splits=splits, with_train=False, check=check(checkpoints), **overrides),
             checkpoints) for c in configs]


def evaluate(checkpoints: list[str], configs: list[str] | None = None, out: str | None = None,
             splits: list[str] | None = None, data_dir: str | None = None, batch_size: int = 64,
             num_samples: int | None = None, noise_seed: int = 0, cpu: bool = False, **overrides) -> list[dict]:
    check_int("batch_size", batch_size, 1)
    if num_samples is not None:
        check_int("num_samples", num_samples, 1, allowed="an integer >= 1 (or unset: all)")
    check_int("noise_seed", noise_seed, 0, MAX_NOISE_SEED)
    for field, values in (("checkpoints", [str(Path(c).resolve()) for c in checkpoints]), ("configs", configs),
                          ("splits", splits)):
        if values is not None and len(set(values)) != len(values):  # every row would be scored and written twice
            given = {"checkpoints": checkpoints, "configs": configs, "splits": splits}[field]
            raise ParameterError(f"{field}={given!r} is invalid: allowed distinct names (each is scored once)")
    if out is not None:
        check_table_path(out)
    accelerator = Accelerator(cpu=cpu)
    rows = []
    for task, ckpts in tasks_for(checkpoints, configs, splits, data_dir, overrides):
        for split in task.data:
            data = task.data[split]
            if num_samples:
                data = data.select(range(min(num_samples, len(data))))
            ceiling = ceiling_of(task, split, data)
            collator = SelectivBenchCollator(task.params.vocab_size, task.params.noise, noise_seed, split)
            loader = accelerator.prepare(DataLoader(model_view(data), batch_size=batch_size, collate_fn=collator))
            for ckpt in ckpts:
                model = model_class_of(ckpt).from_pretrained(
                    ckpt, use_safetensors=True, trust_remote_code=False).to(accelerator.device)
                m = evaluate_loader(model, loader, accelerator, desc=f"{Path(ckpt).name} {task.name}/{split}")
                rows.append({"model": ckpt, "mixer": model.config.mixer, "config": task.name, "split": split,
                             "seed": task.params.seed, "noise_seed": noise_seed, "samples": len(data), **m,
                             **ceiling, "parameters": sum(p.numel() for p in model.parameters())})
                accelerator.print(f"{ckpt} {task.name}/{split}: element {m['element_accuracy']:.4f} "
                                  f"(Bayes {ceiling['bayes_element_accuracy']:.4f}) step {m['step_accuracy']:.4f} "
                                  f"loss {m['loss']:.4f}")
    if accelerator.is_main_process and out:
        append_rows(out, rows)
    return rows
