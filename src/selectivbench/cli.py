"""The `selectivbench` command."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import typing

from .builders import TASKS, ParameterError, TaskParams

_SIZES = ("num_train", "num_validation", "num_test")


def _add_task_params(parser: argparse.ArgumentParser) -> None:
    """One --flag per TaskParams field, typed from its annotation; unset flags keep the task default."""
    group = parser.add_argument_group("task parameters (default: the config's own)")
    hints = typing.get_type_hints(TaskParams)
    for f in dataclasses.fields(TaskParams):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        if f.name == "test_gaps":
            group.add_argument(flag, type=lambda s: tuple(int(x) for x in s.split(",") if x), default=None,
                               help="comma-separated gap lengths in steps, e.g. 10,20,50,100")
        elif kind in (int, typing.Optional[int]):
            group.add_argument(flag, type=int, default=None)
        elif kind is float:
            group.add_argument(flag, type=float, default=None)
        else:
            group.add_argument(flag, type=str, default=None)


def _task_overrides(args) -> dict:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TaskParams)
            if getattr(args, f.name, None) is not None}


def cmd_generate(args) -> None:
    from .hub_dataset import generate_folder

    result = generate_folder(args.configs, args.out, num_proc=args.num_proc, repo_id=args.repo_id,
                             command="selectivbench " + shlex.join(sys.argv[1:]),
                             **_sizes(args), **_task_overrides(args))
    from .builders import Sampler, make_grammar
    from .hub_dataset import render_sample

    for c in result["configs"]:
        print(f"\n== {c['name']}: {c['description']}")
        print(json.dumps({"splits": c["sizes"], **c["stats"]}, indent=None))
        for row in c["ceiling"]:
            print(f"  Bayes ceiling {row['split']:>12}: element {row['element_accuracy']:.4f}  "
                  f"step {row['step_accuracy']:.4f}  ({row['num_samples']} samples)")
    first = result["configs"][0]["p"]
    print("\nExample (first validation sample):")
    print(render_sample(Sampler(first, make_grammar(first))))
    print(f"\nWrote {args.out} (card: {result['card']}).")
    print(f"Load it with: datasets.load_dataset({str(args.out)!r}, {args.configs[0]!r})")


def cmd_publish_dataset(args) -> None:
    from .hub_dataset import publish_folder

    files = publish_folder(args.folder, args.repo_id, dry_run=args.dry_run, private=args.private)
    verb = "Would upload" if args.dry_run else "Uploaded"
    print(f"{verb} {len(files)} files to https://huggingface.co/datasets/{args.repo_id}:")
    for f in files:
        print("  " + f)


def cmd_inspect(args) -> None:
    from .builders import Sampler, bayes_ceiling, make_grammar, task_params
    from .hub_dataset import render_sample

    p = task_params(args.config, **_task_overrides(args))
    g = make_grammar(p)
    s = Sampler(p, g)
    print(json.dumps(p.to_dict()))
    print(f"states {g.num_states}  edges {g.num_edges}  mean string length {s.law.mean_length():.2f}  "
          f"topological entropy {g.topological_entropy():.4f} bits")
    c = bayes_ceiling(s, "validation", args.samples)
    print(f"Bayes ceiling (validation, {args.samples} samples): element {c['element_accuracy']:.4f}  "
          f"step {c['step_accuracy']:.4f}")
    print(render_sample(s))
    if args.grammar_json:
        g.save(args.grammar_json)
        print(f"grammar written to {args.grammar_json}")


def cmd_taxonomy(args) -> None:
    from .models import taxonomy_markdown

    print(taxonomy_markdown())


def _main_process() -> bool:
    """Under `accelerate launch` every process runs the command; only rank 0 reports."""
    return os.environ.get("RANK", "0") == "0"


def _sizes(args) -> dict:
    return {k: getattr(args, k) for k in _SIZES if getattr(args, k, None) is not None}


def cmd_train(args) -> None:
    from .train import TrainArgs, train

    fields = {f.name for f in dataclasses.fields(TrainArgs)} - {"task_overrides"}
    targs = TrainArgs(**{k: getattr(args, k) for k in fields}, task_overrides={**_sizes(args), **_task_overrides(args)})
    metrics = train(targs)
    if _main_process():
        print(json.dumps(metrics))


def cmd_evaluate(args) -> None:
    from .evaluate import evaluate

    evaluate(args.checkpoints, args.configs, args.out, splits=args.splits, data_dir=args.data_dir,
             batch_size=args.batch_size, num_samples=args.num_samples, seed=args.noise_seed, cpu=args.cpu,
             **_sizes(args), **_task_overrides(args))
    if _main_process():
        print(f"rows appended to {args.out}.jsonl and {args.out}.csv")


def cmd_publish_model(args) -> None:
    from .publish import publish_model

    files = publish_model(args.checkpoint, args.repo_id, results=args.results, dry_run=args.dry_run,
                          private=args.private, dataset_repo=args.dataset_repo)
    verb = "Would upload" if args.dry_run else "Uploaded"
    print(f"{verb} {len(files)} files to https://huggingface.co/{args.repo_id} (card: {args.checkpoint}/README.md):")
    for f in files:
        print("  " + f)


def cmd_reproduce(args) -> None:
    from .reproduce import estimate, reproduce

    if args.dry_run:
        e = estimate(args.task, args.scale, mixers=args.mixers, out=args.out)
        print(f"{args.task} at scale {args.scale}: {e['runs']} runs ({e['done']} done, {e['todo']} to run), "
              f"about {e['gpu_hours']:,.1f} GPU-hours for those to run")
        print(f"assumption: {e['assumption']}")
        return
    outcome = reproduce(args.task, args.scale, out=args.out, mixers=args.mixers, launcher=args.launcher,
                        address=args.address, gpus_per_run=args.gpus_per_run, cpus_per_run=args.cpus_per_run)
    print((outcome.folder / "summary.md").read_text())
    print(f"table, summary and plots in {outcome.folder}: {outcome.planned} runs, {len(outcome.ran)} run now, "
          f"{len(outcome.failed)} failed")
    if outcome.failed:
        print(f"selectivbench: error: {len(outcome.failed)} run(s) failed (errors in "
              f"{outcome.folder / 'failures.jsonl'}); call again to retry them", file=sys.stderr)
        sys.exit(1)


def _add_dataclass_flags(parser, cls, skip=()):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag, kind = "--" + f.name.replace("_", "-"), hints[f.name]
        if kind is bool:
            parser.add_argument(flag, action="store_true", default=f.default)
        else:
            base = int if kind in (int, typing.Optional[int]) else float if kind is float else str
            parser.add_argument(flag, type=base, default=f.default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selectivbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a Hub-layout dataset folder (parquet, grammar.json, card)")
    g.add_argument("configs", nargs="+", choices=list(TASKS), metavar="CONFIG",
                   help=f"one or more of {', '.join(TASKS)}")
    g.add_argument("--out", required=True, help="output folder (name it selectivbench to load it by that name)")
    g.add_argument("--num-proc", type=int, default=None, help="generation processes (same bytes for any value)")
    for k in _SIZES:
        g.add_argument("--" + k.replace("_", "-"), type=int, default=None, help="default: the paper's size")
    g.add_argument("--repo-id", default="selectivbench", help="repository id shown in the card's load example")
    _add_task_params(g)
    g.set_defaults(func=cmd_generate)

    pub = sub.add_parser("publish-dataset", help="upload a generated folder to the Hub")
    pub.add_argument("folder")
    pub.add_argument("--repo-id", required=True, help="ORG/NAME")
    pub.add_argument("--private", action="store_true")
    pub.add_argument("--dry-run", action="store_true", help="list what would be uploaded, upload nothing")
    pub.set_defaults(func=cmd_publish_dataset)

    ins = sub.add_parser("inspect", help="print a task's grammar statistics, Bayes ceiling and an example")
    ins.add_argument("config", choices=list(TASKS))
    ins.add_argument("--samples", type=int, default=200, help="validation samples for the ceiling")
    ins.add_argument("--grammar-json", default=None, help="also write the grammar (SPEC §7 JSON) here")
    _add_task_params(ins)
    ins.set_defaults(func=cmd_inspect)

    tax = sub.add_parser("taxonomy", help="print the token mixers' taxonomy as a markdown table")
    tax.set_defaults(func=cmd_taxonomy)

    from .train import TrainArgs

    tr = sub.add_parser("train", help="train a model on a task config (Accelerate; any number of processes)")
    _add_dataclass_flags(tr, TrainArgs, skip=("task_overrides",))
    for k in _SIZES:
        tr.add_argument("--" + k.replace("_", "-"), type=int, default=None, help="split size when built here")
    _add_task_params(tr)
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="evaluate checkpoints on task configs and splits (Accelerate)")
    ev.add_argument("checkpoints", nargs="+", help="save_pretrained folders (e.g. runs/x/model)")
    ev.add_argument("--configs", nargs="+", required=True, choices=list(TASKS))
    ev.add_argument("--splits", nargs="+", default=None, help="default: every split but train")
    ev.add_argument("--data-dir", default=None, help="a generated folder; default: build the configs here")
    ev.add_argument("--out", default="results/eval", help="table path without suffix (.jsonl and .csv)")
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--num-samples", type=int, default=None, help="first N samples of each split")
    ev.add_argument("--noise-seed", type=int, default=0, help="seed of the evaluation input noise")
    ev.add_argument("--cpu", action="store_true")
    for k in _SIZES:
        ev.add_argument("--" + k.replace("_", "-"), type=int, default=None)
    _add_task_params(ev)
    ev.set_defaults(func=cmd_evaluate)

    pm = sub.add_parser("publish-model", help="write a checkpoint's model card and upload it to the Hub")
    pm.add_argument("checkpoint", help="a save_pretrained folder made by `selectivbench train` (runs/x/model)")
    pm.add_argument("--repo-id", required=True, help="ORG/NAME")
    pm.add_argument("--results", default=None, help="an evaluation table (.jsonl); default: evaluate now")
    pm.add_argument("--dataset-repo", default="selectivbench", help="the dataset repository it was trained on")
    pm.add_argument("--private", action="store_true")
    pm.add_argument("--dry-run", action="store_true", help="write the card and list the files; upload nothing")
    pm.set_defaults(func=cmd_publish_model)

    from .reproduce import LAUNCHERS, SCALES, TASKS as SWEEPS

    rp = sub.add_parser("reproduce", help="run one of the paper's sweeps (train + evaluate), resumable")
    rp.add_argument("--task", required=True, choices=SWEEPS)
    rp.add_argument("--scale", default="small", choices=list(SCALES),
                    help="paper: the paper's grids; small: a 2-core CPU study; smoke: a few tiny runs")
    rp.add_argument("--out", default="results")
    rp.add_argument("--mixers", nargs="+", default=None, help="these mixers instead of the scale's own")
    rp.add_argument("--dry-run", action="store_true", help="print the number of runs and a GPU-hour estimate")
    rp.add_argument("--launcher", default="local", choices=LAUNCHERS,
                    help="local: one run after the other here; ray: every run a Ray task (the cluster extra)")
    rp.add_argument("--address", default=None,
                    help="Ray cluster to join ('auto', HOST:PORT or ray://HOST:PORT); default: start Ray here")
    rp.add_argument("--gpus-per-run", type=float, default=0, help="GPUs of each Ray task (0: train on CPU)")
    rp.add_argument("--cpus-per-run", type=float, default=1, help="CPUs of each Ray task")
    rp.set_defaults(func=cmd_reproduce)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ParameterError as err:
        print(f"selectivbench: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
