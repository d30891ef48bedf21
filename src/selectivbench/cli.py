"""The `selectivbench` command.

Every failure is one line on stderr, `selectivbench: error: <what> (<field or file>)`, exit code 2,
no traceback (`--debug` shows it). A subcommand's modules (torch, datasets, accelerate) are
imported only when it runs, so `--help` and the argument checks are instant.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import typing
from pathlib import Path

from .builders.config import TASKS, TaskParams
from .errors import ParameterError, check_int
from .files import check_new_file

_SIZES = ("num_train", "num_validation", "num_test")


class ArgumentParser(argparse.ArgumentParser):
    """argparse's errors as one line (no usage block), exit code 2."""

    def error(self, message):
        self.exit(2, f"selectivbench: error: {message} ({self.prog})\n")


def _gap_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid gap list {text!r}: allowed comma-separated integers") from None


def add_dataclass_flags(parser, cls, skip=(), keep_defaults: bool = True, title: str | None = None) -> None:
    """One --flag per dataclass field, typed from its annotation. keep_defaults=False leaves unset
    flags at None, so that a task config's own defaults apply."""
    group = parser.add_argument_group(title) if title else parser
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag, kind = "--" + f.name.replace("_", "-"), hints[f.name]
        default = (f.default if f.default is not dataclasses.MISSING else None) if keep_defaults else None
        if kind is bool:
            group.add_argument(flag, action="store_true", default=default or False)
        elif f.name == "test_gaps":
            group.add_argument(flag, type=_gap_list, default=None, help="comma-separated gap lengths in steps")
        else:
            base = int if kind in (int, typing.Optional[int]) else float if kind is float else str
            group.add_argument(flag, type=base, default=default)


def _task_overrides(args) -> dict:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TaskParams)
            if getattr(args, f.name, None) is not None}


def _sizes(args) -> dict:
    return {k: getattr(args, k) for k in _SIZES if getattr(args, k, None) is not None}


def _main_process() -> bool:
    """Under `accelerate launch` every process runs the command; only rank 0 reports."""
    return os.environ.get("RANK", "0") == "0"


def cmd_generate(args) -> None:
    if args.num_proc is not None:
        check_int("num_proc", args.num_proc, 1)
    from .builders import Sampler, make_grammar
    from .hub.dataset_card import example_split, render_sample
    from .hub.dataset_folder import generate_folder

    result = generate_folder(args.configs, args.out, num_proc=args.num_proc, repo_id=args.repo_id,
                             command="selectivbench " + shlex.join(sys.argv[1:]),
                             **_sizes(args), **_task_overrides(args))
    for c in result["configs"]:
        print(f"\n== {c['name']}: {c['description']}")
        print(json.dumps({"splits": c["sizes"], **c["stats"]}, indent=None))
        for row in c["ceiling"]:
            print(f"  Bayes ceiling {row['split']:>12}: element {row['element_accuracy']:.4f}  "
                  f"step {row['step_accuracy']:.4f}  ({row['num_samples']} samples)")
    first = result["configs"][0]
    split = example_split([s for s, n in first["sizes"].items() if n])
    print(f"\nExample (first {split} sample):")
    print(render_sample(Sampler(first["p"], make_grammar(first["p"])), split))
    print(f"\nWrote {args.out} (card: {result['card']}).")
    print(f"Load it with: datasets.load_dataset({str(args.out)!r}, {args.configs[0]!r})")


def cmd_publish_dataset(args) -> None:
    from .hub.upload import publish_folder

    files = publish_folder(args.folder, args.repo_id, dry_run=args.dry_run, private=args.private)
    verb = "Would upload" if args.dry_run else "Uploaded"
    configs = sorted({f.split("/")[0] for f in files if "/" in f})
    print(f"{verb} {len(files)} files to https://huggingface.co/datasets/{args.repo_id} (its other files under "
          f"{', '.join(c + '/' for c in configs)} {'would be' if args.dry_run else 'were'} deleted):")
    for f in files:
        print("  " + f)


MAX_INSPECT_SAMPLES = 10_000  # the ceiling's standard error is then at most 0.005 (and it takes about a minute)


def cmd_inspect(args) -> None:
    check_int("samples", args.samples, 1, MAX_INSPECT_SAMPLES)
    from .builders import Sampler, bayes_ceiling, make_grammar, task_params
    from .hub.dataset_card import render_sample

    p = task_params(args.config, **_task_overrides(args))
    if args.grammar_json is not None:
        from .hub.dataset_records import check_outside_configs

        check_new_file(args.grammar_json, "grammar_json")
        check_outside_configs(Path(args.grammar_json).parent, "grammar_json")
    g = make_grammar(p)
    s = Sampler(p, g)
    print(json.dumps(p.to_dict()))
    print(f"states {g.num_states}  edges {g.num_edges}  mean string length {s.law.mean_length():.2f}  "
          f"topological entropy {g.topological_entropy():.4f} bits")
    c = bayes_ceiling(s, "validation", args.samples)
    print(f"Bayes ceiling (validation, {args.samples} samples): element {c['element_accuracy']:.4f}  "
          f"step {c['step_accuracy']:.4f}")
    print(render_sample(s))
    if args.grammar_json is not None:
        from .files import atomic_write_text

        try:
            atomic_write_text(args.grammar_json, g.to_json(), new=True)
        except FileExistsError:  # it appeared while the samples were drawn: the user's file stays
            raise ParameterError(f"grammar_json={args.grammar_json!r} is invalid: allowed a path that does not "
                                 "exist yet (a file appeared there while this ran; never overwritten)") from None
        print(f"grammar written to {args.grammar_json}")


def cmd_taxonomy(args) -> None:
    from .models import resolve_mixer, taxonomy_markdown
    from .models.plugins import PluginError

    for spec in args.mixer or ():
        try:
            resolve_mixer(spec)
        except PluginError as err:
            raise ParameterError(f"mixer={spec!r} is invalid: {err}") from None
    print(taxonomy_markdown())


def cmd_check_mixer(args) -> int:
    from .check_mixer import check_mixer, results_table

    sizes = {k: getattr(args, k) for k in ("d_model", "n_layers", "n_heads", "d_state") if getattr(args, k) is not None}
    results = check_mixer(args.target, **sizes)
    from .models import resolve_mixer

    print(results_table(args.target, resolve_mixer(args.target).name, results))
    return 1 if any(r.passed is False for r in results) else 0


def cmd_train(args) -> None:
    from .training.args import TrainArgs, check_train_args

    fields = {f.name for f in dataclasses.fields(TrainArgs)} - {"task_overrides"}
    targs = TrainArgs(**{k: getattr(args, k) for k in fields}, task_overrides={**_sizes(args), **_task_overrides(args)})
    check_train_args(targs)
    from .training.loop import train

    metrics = train(targs)
    if _main_process():
        print(json.dumps(metrics))


def use_mixers(specs, checkpoints) -> None:
    """evaluate's and publish-model's --mixer: the user's plugins, resolved and registered before any
    checkpoint is loaded, each the source a checkpoint recorded. A checkpoint whose plugin is still not
    known here is refused now: its config's record is never imported."""
    from .models.plugins import PluginError, plugin_class, resolve_for_checkpoints, saved_plugin

    records = {c: saved_plugin(c) for c in checkpoints}
    for spec in specs or ():
        try:
            resolve_for_checkpoints(spec, list(records.values()))
        except PluginError as err:
            raise ParameterError(f"mixer={spec!r} is invalid: {err}") from None
    for checkpoint, record in records.items():
        if record is not None:
            try:
                plugin_class(record)
            except PluginError as err:
                raise ParameterError(f"checkpoint={checkpoint!r} is invalid: {err}") from None


def cmd_evaluate(args) -> None:
    from .evaluation.evaluate import evaluate

    use_mixers(args.mixer, args.checkpoints)
    evaluate(args.checkpoints, args.configs, args.out, splits=args.splits, data_dir=args.data_dir,
             batch_size=args.batch_size, num_samples=args.num_samples, noise_seed=args.noise_seed, cpu=args.cpu,
             **_sizes(args), **_task_overrides(args))
    if _main_process():
        from .evaluation.tables import table_paths

        print("rows appended to {} and {}".format(*table_paths(args.out)))


def cmd_publish_model(args) -> None:
    from .hub.model import publish_model

    use_mixers(args.mixer, [args.checkpoint])
    files = publish_model(args.checkpoint, args.repo_id, results=args.results, dry_run=args.dry_run,
                          private=args.private, dataset_repo=args.dataset_repo)
    verb = "Would upload" if args.dry_run else "Uploaded"
    print(f"{verb} {len(files)} files to https://huggingface.co/{args.repo_id} (card: {args.checkpoint}/README.md):")
    for f in files:
        print("  " + f)


def cmd_reproduce(args) -> None:
    from .sweeps.driver import SweepIncomplete, reproduce
    from .sweeps.estimate import estimate

    if args.dry_run:
        e = estimate(args.task, args.scale, mixers=args.mixers, out=args.out, launcher=args.launcher,
                     address=args.address, gpus_per_run=args.gpus_per_run, cpus_per_run=args.cpus_per_run)
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
        raise SweepIncomplete(f"{len(outcome.failed)} run(s) failed (errors in {outcome.folder / 'failures.jsonl'}); "
                              "call again to retry them")


def cmd_score(args) -> None:
    from .sweeps.driver import SweepIncomplete
    from .sweeps.score import score

    outcome = score(args.mixer, args.preset, out=args.out, everything=args.all, launcher=args.launcher,
                    workers=args.workers, references=args.references, address=args.address,
                    gpus_per_run=args.gpus_per_run, cpus_per_run=args.cpus_per_run,
                    command="selectivbench " + shlex.join(sys.argv[1:]) if args.argv is None else args.argv)
    for mixer, card in outcome.cards.items():
        rank = card["rank"]
        where = f"rank {rank['rank']} of {rank['of']}" if rank else "no reference leaderboard: no rank"
        value = "incomplete" if card["score"] is None else f"{card['score']:.3f}" + (
            f" ± {card['score_std']:.3f}" if card["score_std"] is not None else "")
        print(f"{mixer}: score {value} ({where}); {outcome.folders[mixer] / 'scorecard.md'}")
    if outcome.leaderboard is not None:
        print(f"leaderboard: {outcome.leaderboard}")
    print(f"{outcome.planned} runs, {len(outcome.ran)} run now, {len(outcome.failed)} failed")
    if outcome.failed:
        raise SweepIncomplete(f"{len(outcome.failed)} run(s) failed (listed in the scorecard, errors in each task's "
                              "failures.jsonl); call again to retry them")


def _add_sizes(parser, help_text: str) -> None:
    for k in _SIZES:
        parser.add_argument("--" + k.replace("_", "-"), type=int, default=None, help=help_text)


def _add_plugin_flag(parser) -> None:
    parser.add_argument("--mixer", action="append", default=None, metavar="SPEC",
                        help="the checkpoint's mixer plugin, PATH.py:CLASS or MODULE:CLASS (repeat for several): "
                             "imported only when its source is the one the checkpoint recorded (sha256)")


def build_parser() -> argparse.ArgumentParser:
    from .training.args import TrainArgs

    parser = ArgumentParser(prog="selectivbench", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    task_title = "task parameters (default: the config's own)"

    g = sub.add_parser("generate", help="write a Hub-layout dataset folder (parquet, grammar.json, card)")
    g.add_argument("configs", nargs="+", choices=list(TASKS), metavar="CONFIG",
                   help=f"one or more of {', '.join(TASKS)}")
    g.add_argument("--out", required=True, help="output folder (name it selectivbench to load it by that name)")
    g.add_argument("--num-proc", type=int, default=None, help="generation processes (same bytes for any value)")
    _add_sizes(g, "default: the paper's size")
    g.add_argument("--repo-id", default="selectivbench", help="repository id shown in the card's load example")
    add_dataclass_flags(g, TaskParams, keep_defaults=False, title=task_title)
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
    add_dataclass_flags(ins, TaskParams, keep_defaults=False, title=task_title)
    ins.set_defaults(func=cmd_inspect)

    tax = sub.add_parser("taxonomy", help="print the token mixers' taxonomy as a markdown table")
    tax.add_argument("--mixer", nargs="+", default=None,
                     help="also list these plugins (PATH.py:CLASS, MODULE:CLASS); installed ones are listed anyway")
    tax.set_defaults(func=cmd_taxonomy)

    cm = sub.add_parser("check-mixer", help="run the mixer contract (causal, step, pieces, state, bf16, save/load) "
                                            "on a mixer; exit 0: all hold, 1: one fails, 2: bad input")
    cm.add_argument("target", help="a built-in or plugin name, PATH.py:CLASS or MODULE:CLASS")
    for flag in ("--d-model", "--n-layers", "--n-heads", "--d-state"):
        cm.add_argument(flag, type=int, default=None, help="size of the small model checked (default 32, 2, 4, 8)")
    cm.set_defaults(func=cmd_check_mixer)

    tr = sub.add_parser("train", help="train a model on a task config (Accelerate; any number of processes)")
    add_dataclass_flags(tr, TrainArgs, skip=("task_overrides",))
    _add_sizes(tr, "split size when built here")
    add_dataclass_flags(tr, TaskParams, keep_defaults=False, title=task_title)
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="evaluate checkpoints on their own task, or on task configs (Accelerate)")
    ev.add_argument("checkpoints", nargs="+", help="save_pretrained folders made by `selectivbench train`")
    ev.add_argument("--configs", nargs="+", default=None, choices=list(TASKS),
                    help="default: each checkpoint's own task, rebuilt from its record")
    ev.add_argument("--splits", nargs="+", default=None, help="default: every split but train")
    ev.add_argument("--data-dir", default=None,
                    help="a generated folder, ORG/NAME[@revision] or hf://datasets/...; default: build here")
    ev.add_argument("--out", default="results/eval",
                    help="table path: <out>.jsonl and <out>.csv are written (a .jsonl or .csv suffix is replaced)")
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--num-samples", type=int, default=None, help="first N samples of each split")
    ev.add_argument("--noise-seed", type=int, default=0, help="seed of the evaluation input noise")
    ev.add_argument("--cpu", action="store_true")
    _add_plugin_flag(ev)
    _add_sizes(ev, "split size when built here")
    add_dataclass_flags(ev, TaskParams, keep_defaults=False, title=task_title)
    ev.set_defaults(func=cmd_evaluate)

    pm = sub.add_parser("publish-model", help="write a checkpoint's model card and upload it to the Hub")
    pm.add_argument("checkpoint", help="a save_pretrained folder made by `selectivbench train` (runs/x/model)")
    pm.add_argument("--repo-id", required=True, help="ORG/NAME")
    pm.add_argument("--results", default=None, help="an evaluation table (.jsonl); default: evaluate now")
    pm.add_argument("--dataset-repo", default=None,
                    help="the Hub dataset it was trained on (default: the one recorded by training, if any)")
    pm.add_argument("--private", action="store_true")
    _add_plugin_flag(pm)
    pm.add_argument("--dry-run", action="store_true", help="write the card and list the files; upload nothing")
    pm.set_defaults(func=cmd_publish_model)

    rp = sub.add_parser("reproduce", help="run one of the paper's sweeps (train + evaluate), resumable")
    rp.add_argument("--task", required=True, choices=list(TASKS))
    rp.add_argument("--scale", default="small",
                    help="paper: the paper's grids; small: a 2-core CPU study; smoke: a few tiny runs")
    rp.add_argument("--out", default="results")
    rp.add_argument("--mixers", nargs="+", default=None, help="these mixers instead of the scale's own")
    rp.add_argument("--dry-run", action="store_true", help="print the number of runs and a GPU-hour estimate")
    rp.add_argument("--launcher", default="local", choices=("local", "ray"),
                    help="local: one run after the other here; ray: every run a Ray task (the cluster extra)")
    rp.add_argument("--address", default=None,
                    help="Ray cluster to join ('auto', HOST:PORT or ray://HOST:PORT); default: start Ray here")
    # None when not given, so that a Ray-only flag given with --launcher local is an error, not ignored
    rp.add_argument("--gpus-per-run", type=float, default=None, help="GPUs of each Ray task (default 0: train on CPU)")
    rp.add_argument("--cpus-per-run", type=float, default=None, help="CPUs of each Ray task (default 1)")
    rp.set_defaults(func=cmd_reproduce)

    sc = sub.add_parser("score", help="score a mixer by the scorecard protocol and place it among the references")
    who = sc.add_mutually_exclusive_group(required=True)
    who.add_argument("--mixer", default=None, help="the mixer to score: a built-in, PATH.py:CLASS, MODULE:CLASS or "
                     "an installed or registered plugin name")
    who.add_argument("--all", action="store_true", help="every built-in mixer, and the leaderboard")
    sc.add_argument("--preset", default="lite", help="lite: the protocol (2-core CPU); smoke: toy size (tests)")
    sc.add_argument("--out", default=None, help="score folder (default results/score_<preset>/<mixer>); with "
                    "--all the leaderboard's folder (default results)")
    sc.add_argument("--launcher", default="local", choices=("local", "ray"))
    sc.add_argument("--workers", type=int, default=1,
                    help="local runs in parallel, each in its own process with cpu_count / workers threads")
    sc.add_argument("--references", default=None,
                    help="leaderboard JSON to rank against (default: results/leaderboard_<preset>.json)")
    sc.add_argument("--address", default=None, help="Ray cluster to join (as reproduce)")
    sc.add_argument("--gpus-per-run", type=float, default=None, help="GPUs of each Ray task (default 0)")
    sc.add_argument("--cpus-per-run", type=float, default=None, help="CPUs of each Ray task (default 1)")
    sc.set_defaults(func=cmd_score, argv=None)
    return parser


def _close_distributed() -> None:
    """Under `accelerate launch`, leave the process group before exit: a gloo group torn down by
    the interpreter's exit can abort a rank ('terminate called without an active exception')."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.func is cmd_score and argv is not None:  # called in-process: the command it was given
            args.argv = "selectivbench " + shlex.join(argv)
        if args.func in (cmd_train, cmd_evaluate, cmd_reproduce, cmd_score):
            from .allocator import keep_freed_memory

            keep_freed_memory()  # the same tensors step after step: reuse their pages rather than fault them in again
        code = args.func(args) or 0
        _close_distributed()
    except KeyboardInterrupt:
        print("selectivbench: error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the policy: one line, exit code 2; --debug for the traceback
        if args.debug:
            raise
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        what = text if isinstance(err, ParameterError) else f"{type(err).__name__}: {text}"
        print(f"selectivbench: error: {what}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
