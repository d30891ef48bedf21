"""`selectivbench publish-model`: a checkpoint folder plus its model card, to the Hub.

The card's YAML holds a `model-index` (huggingface_hub EvalResult): element accuracy and Bayes
ceiling per config and split. Results come from an evaluation table (`--results`, rows of this
checkpoint) or, by default, from evaluating the checkpoint now on its training task.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import AutoConfig

from .builders import ParameterError
from .builders.builder import CITATION
from .train import RUN_FILE

CARD_TEMPLATE = resources.files("selectivbench.dataset_cards") / "model_card.md"
HYPER = ("batch_size", "lr", "weight_decay", "warmup_steps", "max_steps", "grad_accum", "clip", "mixed_precision",
         "dropout", "train_seed")


def results_for(checkpoint: Path, results: str | None) -> list[dict]:
    if results:
        rows = [json.loads(line) for line in Path(results).read_text().splitlines() if line.strip()]
        mine = [r for r in rows if Path(r["model"]).resolve() == checkpoint.resolve()]
        if not mine:
            raise ParameterError(f"results={results!r} is invalid: allowed a table with rows of {checkpoint}")
        return list({(r["config"], r["split"]): r for r in mine}.values())  # the newest row of each
    run = json.loads((checkpoint / RUN_FILE).read_text())
    from .evaluate import evaluate

    over = {k: v for k, v in run["task_params"].items() if k != "test_gaps" or v}
    sizes = {f"num_{s}": run["train_args"]["task_overrides"].get(f"num_{s}") for s in ("train", "validation", "test")}
    return evaluate([str(checkpoint)], [run["task"]], str(checkpoint.parent / "publish_eval"), splits=None,
                    cpu=True, **over, **{k: v for k, v in sizes.items() if v is not None})


def model_card(checkpoint: str | Path, repo_id: str, results: str | None = None,
               dataset_repo: str = "selectivbench") -> ModelCard:
    from .models import taxonomy_rows

    checkpoint = Path(checkpoint)
    if not (checkpoint / "config.json").exists():
        raise ParameterError(f"checkpoint={str(checkpoint)!r} is invalid: allowed a save_pretrained folder")
    config = AutoConfig.from_pretrained(checkpoint)
    run = json.loads((checkpoint / RUN_FILE).read_text()) if (checkpoint / RUN_FILE).exists() else {}
    rows = results_for(checkpoint, results)
    evals = []
    for r in rows:
        for metric, value in (("element_accuracy", r["element_accuracy"]), ("step_accuracy", r["step_accuracy"]),
                              ("bayes_ceiling", r["bayes_element_accuracy"])):
            evals.append(EvalResult(task_type="token-classification", task_name="Hidden-state tracking",
                                    dataset_type=dataset_repo, dataset_name="SelectivBench",
                                    dataset_config=r["config"], dataset_split=r["split"], metric_type=metric,
                                    metric_name=metric.replace("_", " "), metric_value=float(value)))
    name = repo_id.split("/")[-1]
    data = ModelCardData(model_name=name, language="en", license="apache-2.0", library_name="transformers",
                         pipeline_tag="token-classification", datasets=[dataset_repo], eval_results=evals,
                         tags=["selectivbench", "linear-recurrent-models", config.mixer, "custom_code"])
    args = run.get("train_args", {})
    return ModelCard.from_template(
        data, template_path=str(CARD_TEMPLATE), name=name, mixer=config.mixer, task=run.get("task", rows[0]["config"]),
        results=rows, taxonomy=next(t for t in taxonomy_rows() if t["mixer"] == config.mixer),
        parameters=rows[0]["parameters"], config=config, repo_id=repo_id, citation=CITATION,
        hyperparameters={k: args[k] for k in HYPER if k in args} | {"optimizer": "AdamW",
                                                                    "schedule": "cosine with warm-up"},
        task_params=json.dumps(run.get("task_params", {})))


def publish_model(checkpoint: str, repo_id: str, results: str | None = None, dry_run: bool = False,
                  private: bool = False, dataset_repo: str = "selectivbench") -> list[str]:
    """Write README.md (the card) into the checkpoint folder, then upload the folder."""
    if "/" not in repo_id:
        raise ParameterError(f"repo_id={repo_id!r} is invalid: allowed ORG/NAME")
    card = model_card(checkpoint, repo_id, results, dataset_repo)
    card.save(Path(checkpoint) / "README.md")
    files = sorted(str(p.relative_to(checkpoint)) for p in Path(checkpoint).rglob("*") if p.is_file())
    if not dry_run:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(checkpoint), repo_id=repo_id, commit_message="Upload SelectivBench model")
    return files
