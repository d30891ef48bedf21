"""Train a SelectivBench model with transformers.Trainer, element accuracy as the metric.

Every `TrainingArguments` flag works (HfArgumentParser), beside the model and task flags below:

    python scripts/finetune_with_trainer.py --config complexity --mixer gla --max_steps 200 \
        --output_dir runs/trainer --eval_strategy steps --eval_steps 50 --report_to tensorboard
    accelerate launch --multi_gpu --num_processes 2 scripts/finetune_with_trainer.py ...   # CPU: ACCELERATE_USE_CPU=true

`--data_dir` takes a generated folder or a Hub dataset id (ORG/NAME[@revision]); without it the
task is built here with the size flags. The final model is saved to `<output_dir>/model` with its
run record, so `selectivbench evaluate` and `publish-model` accept it. Logits are reduced to
(step, element) predictions by preprocess_logits_for_metrics, so evaluation never holds
T x classes logits for a whole split. Prints the final metrics as one `METRICS {json}` line:
`eval_token_loss` is `selectivbench evaluate`'s loss (summed over labelled steps, over their number);
Trainer's own `eval_loss` averages the batches' means, so it weighs steps unequally when sequences
differ in length.
"""
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from transformers import HfArgumentParser, TrainingArguments, set_seed

from selectivbench.data.collator import SelectivBenchCollator, model_view

from selectivbench.data.task import load_task
from selectivbench.training.trainer import SelectivBenchTrainer
from selectivbench.evaluation.metrics import compute_metrics, preprocess_logits_for_metrics
from selectivbench.models import SelectivBenchConfig, SelectivBenchForTokenClassification
from selectivbench.training.run_folder import absolute_data_dir
from selectivbench.training.record import write_run_record
from selectivbench.training.args import check_mixer_spec


@dataclass
class ModelAndTaskArguments:
    config: str = "complexity"
    """Task config."""
    data_dir: str | None = None
    """A generated folder or Hub dataset id; default: build the task here with the flags below."""
    mixer: str = "gla"
    """A built-in mixer or a plugin (a registered or installed name, PATH.py:CLASS, MODULE:CLASS)."""
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 4
    d_state: int = 16
    dropout: float = 0.0
    vocab_size: int | None = 6
    """Task size when built here (the defaults make a small task that trains in seconds on a CPU)."""
    ambiguities: int | None = 2
    ambiguity_depth: int | None = 2
    seq_len: int | None = 30
    num_train: int | None = 2000
    num_validation: int | None = 64
    num_test: int | None = 64


TASK_FIELDS = ("vocab_size", "ambiguities", "ambiguity_depth", "seq_len", "num_train", "num_validation", "num_test")


def main():
    parser = HfArgumentParser((ModelAndTaskArguments, TrainingArguments))
    margs, training = parser.parse_args_into_dataclasses()
    # the data contract, not a preference: element windows reach the metric, all columns reach the collator
    training.label_names = ["labels", "element_index"]
    training.remove_unused_columns = False

    # a plugin that cannot import or run is refused before the task is built
    check_mixer_spec(margs.mixer, d_model=margs.d_model, n_heads=margs.n_heads, d_state=margs.d_state)
    overrides = {} if margs.data_dir else {k: getattr(margs, k) for k in TASK_FIELDS if getattr(margs, k) is not None}
    task = load_task(margs.config, margs.data_dir, **overrides)
    set_seed(training.seed)  # the same initial weights on every process and in every run
    model = SelectivBenchForTokenClassification(SelectivBenchConfig.for_task(
        task, mixer=margs.mixer, d_model=margs.d_model, n_layers=margs.n_layers, n_heads=margs.n_heads,
        d_state=margs.d_state, dropout=margs.dropout))
    # noise as `selectivbench train` draws it: new every epoch, the validation split's in evaluation
    trainer = SelectivBenchTrainer(
        model=model, args=training, train_dataset=model_view(task.data["train"]),
        eval_dataset=model_view(task.data["validation"]),
        train_collator=SelectivBenchCollator(task.params.vocab_size, task.params.noise, training.seed, "train"),
        eval_collator=SelectivBenchCollator(task.params.vocab_size, task.params.noise, training.seed, "validation"),
        compute_metrics=compute_metrics, preprocess_logits_for_metrics=preprocess_logits_for_metrics)
    trainer.train(resume_from_checkpoint=training.resume_from_checkpoint)
    metrics = trainer.evaluate()
    final = Path(training.output_dir) / "model"
    trainer.save_model(str(final))
    if trainer.is_world_process_zero():
        record = {**asdict(margs), "data_dir": absolute_data_dir(margs.data_dir), "trainer": "transformers.Trainer",
                  "lr": training.learning_rate,
                  "max_steps": trainer.state.max_steps, "train_seed": training.seed,
                  "batch_size": training.per_device_train_batch_size * training.world_size}
        write_run_record(final, task, record, trainer.state.global_step, metrics)
        first_loss = next((r["loss"] for r in trainer.state.log_history if "loss" in r), None)
        print("METRICS " + json.dumps({**metrics, "first_train_loss": first_loss}))


if __name__ == "__main__":
    main()
