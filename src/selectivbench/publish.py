"""`selectivbench publish-model`: a checkpoint folder plus its model card, to the Hub.

The card's YAML holds a `model-index` (huggingface_hub EvalResult) of the model's own scores, each
naming the Hub dataset it was measured on with the task's overrides in `dataset.args`; the Bayes
ceiling is shown beside them in the card's table as a reference, not as a score of the model.
Results come from an evaluation table (`--results`, rows of this checkpoint) or, by default, from
evaluating the checkpoint now on the task it recorded (validation and test splits only).
"""
from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .builders import ParameterError, task_params
from .atomic import replaced
from .builders.builder import CITATION
from .data import checkpoint_record, resolve_hub_id
from .hub_dataset import check_can_upload, check_repo_id

CARD_TEMPLATE = resources.files("selectivbench") / "model_card.md"
HYPER = ("batch_size", "optimizer", "lr", "weight_decay", "warmup_steps", "min_lr_ratio", "max_steps", "epochs",
         "grad_accum", "clip", "mixed_precision", "dropout", "linear_init", "rope_theta", "train_seed")
ROW_FIELDS = (("model", str, "the checkpoint's path"), ("config", str, "a config name"), ("split", str, "a split name"),
              ("samples", int, "a number of samples"), ("parameters", int, "a number of parameters"),
              *((f, (int, float), "a number") for f in ("element_accuracy", "step_accuracy", "bayes_element_accuracy")))
CARD_MARKER = "<!-- selectivbench-model-card: written by `selectivbench publish-model`"
EVAL_TABLE = "publish_eval"  # beside the checkpoint folder: the rows of a card made without --results


def results_for(checkpoint: Path, results: str | None) -> list[dict]:
    """The newest row of each (config, split) of this checkpoint: from the table `results`, or
    evaluated now (every split but train) when it is None."""
    if results is None:
        from .evaluate import evaluate

        return evaluate([str(checkpoint)])
    path = Path(results)
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as err:
        raise ParameterError(f"results={results!r} is invalid: allowed a readable .jsonl table ({err})") from None
    mine = []  # every row names its model; this checkpoint's rows must hold what the card shows
    for number, row in enumerate(rows, 1):
        problem = _row_problem(row, ROW_FIELDS[:1])
        if not problem and Path(row["model"]).resolve() == checkpoint.resolve():
            problem = _row_problem(row, ROW_FIELDS)
            mine.append(row)
        if problem:
            raise ParameterError(f"results={results!r} is invalid: allowed a table of `selectivbench evaluate` rows "
                                 f"(row {number}: {problem})")
    if not mine:
        raise ParameterError(f"results={results!r} is invalid: allowed a table with rows of {checkpoint}")
    return list({(r["config"], r["split"]): r for r in mine}.values())  # the newest row of each


def _row_problem(row, fields) -> str | None:
    """Which of `fields` (name, types, allowed) an evaluation row lacks, or None."""
    if not isinstance(row, dict):
        return "allowed a JSON object"
    for field, kinds, allowed in fields:
        if not isinstance(row.get(field), kinds) or isinstance(row.get(field), bool):
            return f"{field}={row.get(field)!r}: allowed {allowed}"
    return None


def dataset_args(run: dict) -> dict:
    """The task parameters that differ from the named config's defaults (seed, k, V, ...)."""
    defaults = task_params(run["task"]).to_dict()
    return {k: v for k, v in run["task_params"].items() if defaults.get(k) != v}


def model_card(checkpoint: str | Path, repo_id: str, rows: list[dict], dataset_repo: str | None = None) -> ModelCard:
    """The card of a checkpoint scored by `rows` (rows of `selectivbench evaluate`)."""
    from transformers import AutoConfig

    from .models import taxonomy_rows

    checkpoint = Path(checkpoint)
    run = checkpoint_record(checkpoint)
    config = AutoConfig.from_pretrained(checkpoint)
    dataset_repo = dataset_repo or resolve_hub_id(run.get("data_dir"))
    over = dataset_args(run)
    evals = [EvalResult(task_type="token-classification", task_name="Hidden-state tracking",
                        dataset_type=dataset_repo or "selectivbench", dataset_name="SelectivBench",
                        dataset_config=r["config"], dataset_split=r["split"], dataset_args=over or None,
                        metric_type=metric, metric_name=metric.replace("_", " "), metric_value=float(r[metric]))
             for r in rows for metric in ("element_accuracy", "step_accuracy")]
    name = repo_id.split("/")[-1]
    data = ModelCardData(model_name=name, license="apache-2.0", library_name="transformers",
                         datasets=[dataset_repo] if dataset_repo else None, eval_results=evals,
                         tags=["selectivbench", "linear-recurrent-models", config.mixer, "custom_code"])
    args = run.get("train_args", {})
    return ModelCard.from_template(
        data, template_path=str(CARD_TEMPLATE), marker=CARD_MARKER, name=name, mixer=config.mixer, task=run["task"],
        results=rows, taxonomy=next(t for t in taxonomy_rows() if t["mixer"] == config.mixer),
        parameters=rows[0]["parameters"],
        config=config, repo_id=repo_id, citation=CITATION, dataset_repo=dataset_repo,
        hyperparameters={k: args[k] for k in HYPER if args.get(k) is not None}
        | {"schedule": "linear warm-up, cosine decay"}, task_params=json.dumps(run["task_params"]),
        scorecard=scorecard_of(checkpoint))


def scorecard_of(checkpoint: Path) -> dict | None:
    """The scorecard of the `selectivbench score` folder a checkpoint belongs to
    (<folder>/<task>/runs/<run>/model), or None for a checkpoint made otherwise."""
    from .score import RUN_RECORD, WRITER

    parts = Path(checkpoint).resolve().parents
    if len(parts) < 4 or parts[1].name != "runs":
        return None
    folder = parts[3]
    try:
        claim = json.loads((folder / RUN_RECORD).read_text())
        card = json.loads((folder / "scorecard.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(claim, dict) or claim.get("written_by") != WRITER or not isinstance(card, dict):
        return None
    return card


def publish_model(checkpoint: str, repo_id: str, results: str | None = None, dry_run: bool = False,
                  private: bool = False, dataset_repo: str | None = None) -> list[str]:
    """Write README.md (the card) into the checkpoint folder, then upload the folder.

    Every check runs before any work: a README.md this command did not write is never replaced, and
    an upload in offline mode is refused. Without `results` the checkpoint is evaluated now and the
    rows are appended to `<run>/publish_eval.{jsonl,csv}` only once the card is written and uploaded
    (never on a dry run), so a failed upload leaves no rows that a retry would repeat."""
    from .evaluate import append_rows, check_table_path, check_weights

    check_repo_id(repo_id)
    if dataset_repo is not None:
        check_repo_id(dataset_repo, "dataset_repo", " of a Hub dataset")
    if not dry_run:
        check_can_upload(repo_id)
    checkpoint_record(checkpoint)  # a checkpoint folder at all, before its README is looked at
    check_weights(checkpoint)  # complete weights of this model, also when --results spares the evaluation
    readme = Path(checkpoint) / "README.md"
    # what is there now (our card, checked next, or nothing): compared again just before the card is written
    seen = readme.read_bytes() if readme.is_file() else None
    if os.path.lexists(readme) and not (seen is not None and is_our_card(seen.decode(errors="replace"))):
        raise ParameterError(f"file={str(readme)!r} is invalid: allowed a README.md written by `selectivbench "
                             "publish-model` (this one is not, and would be replaced by the card: move it away)")
    table = str(Path(checkpoint).parent / EVAL_TABLE)
    if results is None:
        check_table_path(table)
    rows = results_for(Path(checkpoint), results)
    card = model_card(checkpoint, repo_id, rows, dataset_repo)
    try:
        if (readme.read_bytes() if readme.is_file() else None) != seen:  # rewritten while the checkpoint was scored
            raise FileExistsError(readme)
        with replaced(readme, new=seen is None) as tmp:  # new: a link, which fails if one appears meanwhile
            card.save(tmp)
    except FileExistsError:  # a README.md appeared or changed while the checkpoint was scored: the user's stays
        raise ParameterError(f"file={str(readme)!r} is invalid: allowed a README.md written by `selectivbench "
                             "publish-model` (one appeared or changed while this ran; never overwritten)") from None
    files = sorted(str(p.relative_to(checkpoint)) for p in Path(checkpoint).rglob("*") if p.is_file())
    if not dry_run:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(checkpoint), repo_id=repo_id, commit_message="Upload SelectivBench model")
    if results is None and not dry_run:
        append_rows(table, rows)
    return files


# the first line of the cards written before CARD_MARKER existed
OLD_CARD_LINE = "sequence model trained on **SelectivBench** (arXiv:[2601.12598](https://arxiv.org/abs/2601.12598)),"


def is_our_card(text: str) -> bool:
    """A README.md that publish-model wrote: this version's marker, or an earlier version's card."""
    return CARD_MARKER in text or OLD_CARD_LINE in text
