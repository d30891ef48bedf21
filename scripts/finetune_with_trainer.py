"""Fine-tune a SelectivBench model with transformers.Trainer, element accuracy as the metric.

    python scripts/finetune_with_trainer.py --config complexity --mixer gla --max-steps 200
    accelerate launch --multi_gpu --num_processes 2 scripts/finetune_with_trainer.py ...   # CPU: ACCELERATE_USE_CPU=true

Logits are reduced to (step, element) predictions by preprocess_logits_for_metrics, so evaluation
never holds T x classes logits for the whole split. Prints the final metrics as JSON.
"""
import argparse
import json

from transformers import Trainer, TrainingArguments, set_seed

from selectivbench.data import SelectivBenchCollator, load_task, model_view
from selectivbench.metrics import compute_metrics, preprocess_logits_for_metrics
from selectivbench.models import SelectivBenchForTokenClassification
from selectivbench.train import TrainArgs, model_config

SMALL_TASK = dict(vocab_size=6, ambiguities=2, ambiguity_depth=2, seq_len=30, num_train=2000, num_validation=64,
                  num_test=64)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="complexity")
    ap.add_argument("--data-dir", default=None, help="a generated folder; default: a small task built here")
    ap.add_argument("--mixer", default="gla")
    ap.add_argument("--d-model", type=int, default=32)
    ap.add_argument("--max-steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=16, help="per device")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--output-dir", default="runs/trainer")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    task = load_task(args.config, args.data_dir, **({} if args.data_dir else SMALL_TASK))
    set_seed(args.seed)  # the same initial weights on every process and in every run
    model = SelectivBenchForTokenClassification(
        model_config(TrainArgs(mixer=args.mixer, d_model=args.d_model), task))
    training = TrainingArguments(
        output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size, learning_rate=args.lr, lr_scheduler_type="cosine",
        warmup_steps=max(1, args.max_steps // 10), max_grad_norm=1.0, eval_strategy="steps",
        eval_steps=args.max_steps, logging_steps=1, save_strategy="no", report_to="none", seed=args.seed,
        label_names=["labels", "element_index"], remove_unused_columns=False, use_cpu=True,
        dataloader_drop_last=False)
    trainer = Trainer(
        model=model, args=training, train_dataset=model_view(task.data["train"]),
        eval_dataset=model_view(task.data["validation"]),
        data_collator=SelectivBenchCollator(task.params.vocab_size, task.params.noise, args.seed),
        compute_metrics=compute_metrics, preprocess_logits_for_metrics=preprocess_logits_for_metrics)
    trainer.train()
    metrics = trainer.evaluate()
    first_loss = next(r["loss"] for r in trainer.state.log_history if "loss" in r)
    if trainer.is_world_process_zero():
        print("METRICS " + json.dumps({**metrics, "first_train_loss": first_loss}))


if __name__ == "__main__":
    main()
