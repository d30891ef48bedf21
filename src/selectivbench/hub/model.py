"""`selectivbench publish-model`: a checkpoint folder plus its model card, to the Hub.

The card's YAML holds a `model-index` (huggingface_hub EvalResult) of the model's own scores, each
naming the Hub dataset it was measured on with the task's overrides in `dataset.args`; the Bayes
ceiling is shown beside them in the card's table as a reference, not as a score of the model.
Results come from an evaluation table (`--results`, rows of this checkpoint) or, by default, from
evaluating the checkpoint now on the task it recorded (validation and test splits only).
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from transformers.dynamic_module_utils import get_relative_import_files

from ..builders import task_params
from ..builders.builder import CITATION
from ..data.task import RUN_FILE, checkpoint_record
from ..data.hub_ids import resolve_hub_id
from ..errors import ParameterError
from ..evaluation.tables import append_rows, check_table_path
from ..evaluation.evaluate import check_model_type, check_weights, evaluate, weight_files
from ..files import check_writable, is_ours, read_record, write_owned
from ..backbone import model_class_of
from ..models.taxonomy import mixer_taxonomy_row
from ..sweeps.score_folders import RUN_RECORD, WRITER
from .upload import check_can_upload, check_repo_id

CARD_TEMPLATE = resources.files("selectivbench.hub") / "model_card.md"
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
        return evaluate([str(checkpoint)])
    path = Path(results)
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as err:
        raise ParameterError(f"results={results!r} is invalid: allowed a readable .jsonl table ({err})") from None
    splits = sorted(checkpoint_record(checkpoint).get("split_sizes") or {})  # the splits its task has
    mine = []  # every row names its model; this checkpoint's rows must hold what the card shows
    for number, row in enumerate(rows, 1):
        problem = _row_problem(row, ROW_FIELDS[:1])
        if not problem and Path(row["model"]).resolve() == checkpoint.resolve():
            problem = _row_problem(row, ROW_FIELDS) or _score_problem(row, splits)
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


def _score_problem(row: dict, splits: list[str]) -> str | None:
    """A row the card may show: accuracies that are finite numbers in [0, 1], of a split the
    checkpoint's task has (a NaN or 7.5, or a `test_gap999`, would go into the model-index as a score)."""
    for field in ("element_accuracy", "step_accuracy", "bayes_element_accuracy"):
        if not 0.0 <= row[field] <= 1.0:  # False for NaN too
            return f"{field}={row[field]!r}: allowed a number in [0, 1]"
    if row["split"] not in splits:
        return f"split={row['split']!r}: allowed a split of the checkpoint's task {splits}"
    return None


def dataset_args(run: dict) -> dict:
    """The task parameters that differ from the named config's defaults (seed, k, V, ...)."""
    defaults = task_params(run["task"]).to_dict()
    return {k: v for k, v in run["task_params"].items() if defaults.get(k) != v}


def model_card(checkpoint: str | Path, repo_id: str, rows: list[dict], dataset_repo: str | None = None) -> ModelCard:
    """The card of a checkpoint scored by `rows` (rows of `selectivbench evaluate`)."""
    checkpoint = Path(checkpoint)
    run = checkpoint_record(checkpoint)
    check_model_type(checkpoint)  # nothing shipped in the folder is imported, and nothing prompts
    config = model_class_of(checkpoint).config_class.from_pretrained(checkpoint, trust_remote_code=False)
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
        results=rows, taxonomy=mixer_taxonomy_row(config),
        parameters=rows[0]["parameters"],
        config=config, repo_id=repo_id, citation=CITATION, dataset_repo=dataset_repo,
        hyperparameters={k: args[k] for k in HYPER if args.get(k) is not None}
        | {"schedule": "linear warm-up, cosine decay"}, task_params=json.dumps(run["task_params"]),
        scorecard=scorecard_of(checkpoint))


def scorecard_of(checkpoint: Path) -> dict | None:
    """The scorecard of the `selectivbench score` folder a checkpoint belongs to
    (<folder>/<task>/runs/<run>/model), or None for a checkpoint made otherwise."""
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
    check_repo_id(repo_id)
    if dataset_repo is not None:
        check_repo_id(dataset_repo, "dataset_repo", " of a Hub dataset")
    if not dry_run:
        check_can_upload(repo_id)
    checkpoint_record(checkpoint)  # a checkpoint folder at all, before its README is looked at
    check_weights(checkpoint)  # complete weights of this model, also when --results spares the evaluation
    readme = Path(checkpoint) / "README.md"
    check_writable(checkpoint, "checkpoint")  # the card is written there (after the evaluation)
    record = card_record(Path(checkpoint))
    # what is there now (our card, or nothing): compared again just before the card is written
    seen = readme.read_bytes() if readme.is_file() else None
    files = model_files(checkpoint)  # exactly what is sent: checked before any work
    table = str(Path(checkpoint).parent / EVAL_TABLE)
    if results is None:
        check_table_path(table)
    rows = results_for(Path(checkpoint), results)
    card = model_card(checkpoint, repo_id, rows, dataset_repo)
    try:
        if (readme.read_bytes() if readme.is_file() else None) != seen:  # rewritten while the checkpoint was scored
            raise FileExistsError(readme)
        # new: a link, which fails if one appears meanwhile
        write_owned(readme, str(card).encode(), Path(checkpoint) / CARD_RECORD, CARD_WRITER, record, new=seen is None)
    except FileExistsError:  # a README.md appeared or changed while the checkpoint was scored: the user's stays
        raise ParameterError(f"file={str(readme)!r} is invalid: allowed a README.md written by `selectivbench "
                             "publish-model` (one appeared or changed while this ran; never overwritten)") from None
    if not dry_run:
        api = HfApi()
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(checkpoint), repo_id=repo_id, commit_message="Upload SelectivBench model",
                          allow_patterns=files)
    if results is None and not dry_run:
        append_rows(table, rows)
    return files


def model_files(checkpoint: str | Path) -> list[str]:
    """The files of the model a checkpoint folder holds, and only those, as upload patterns: its
    config, weights (`evaluate.weight_files`), run record, card, and the code its config's auto_map
    names with the files that code imports (relative imports: what save_pretrained copies). Anything
    else there (an .env, notes, a link to a system file) stays home. A model file that is a link is
    refused: its target, from anywhere, would be sent."""
    folder = Path(checkpoint)
    try:
        auto_map = json.loads((folder / "config.json").read_text()).get("auto_map") or {}
        modules = {ref.split("--")[-1].rsplit(".", 1)[0] for ref in auto_map.values()}
        assert all(m and "/" not in m and "\\" not in m and m not in (".", "..") for m in modules)
    except Exception:
        raise ParameterError(f"file={str(folder / 'config.json')!r} is invalid: allowed a config whose auto_map "
                             "names modules of the checkpoint folder (MODULE.CLASS)") from None
    code = {f"{m}.py" for m in modules}
    for name in list(code):
        try:  # read as text, never run
            code |= {Path(f).name for f in get_relative_import_files(folder / name)}
        except OSError as err:  # the module, or a file it imports, is missing: named below or here
            code.add(Path(err.filename).name if err.filename else name)
    files = sorted({"config.json", RUN_FILE, *weight_files(folder), *code} | {"README.md"})
    for name in files:
        path = folder / name
        if path.is_symlink() or (name != "README.md" and not path.is_file()):
            raise ParameterError(f"file={str(path)!r} is invalid: allowed a regular file of the checkpoint folder "
                                 f"({'a link, whose target would be uploaded' if path.is_symlink() else 'missing'})")
    return files


CARD_RECORD = "selectivbench_card.json"  # the sha256 of the card as written (files.py); never uploaded
CARD_WRITER = "selectivbench publish-model"


def card_record(checkpoint: Path) -> dict[str, list[str]]:
    """The record of the checkpoint's card, after checking that its README.md is the card this command
    wrote, unchanged since (or absent): a card the user edited, or their own README, is never replaced."""
    readme = checkpoint / "README.md"
    allowed = (f"file={str(readme)!r} is invalid: allowed a README.md written by `selectivbench publish-model` and "
               "unchanged since")
    record = read_record(checkpoint / CARD_RECORD, CARD_WRITER, f"{allowed}, beside {CARD_RECORD}, its record") or {}
    if not is_ours(readme, record):
        raise ParameterError(f"{allowed} (this one is not, and would be replaced by the card: move it away; a card "
                             "edited since it was written is yours)")
    return record
