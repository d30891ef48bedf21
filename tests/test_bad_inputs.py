"""Bad input, one policy: every CLI failure is one line `selectivbench: error: ...` naming the field
or file, exit code 2, no traceback, and nothing written; the API raises one clear exception."""
import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from selectivbench.builders import ParameterError, SelectivBench, TaskParams, task_params
from selectivbench.cli import main
from selectivbench.data.task import load_task
from selectivbench.hub.dataset_folder import generate_folder
from selectivbench.training.args import TrainArgs
from selectivbench.training.loop import train

TINY = dict(vocab_size=6, ambiguities=2, ambiguity_depth=2, seq_len=12, num_train=32, num_validation=8, num_test=8)
TINY_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """Files the cases point at: a trained checkpoint, a generated folder, a plain file, ..."""
    root = tmp_path_factory.mktemp("bad")
    train(TrainArgs(config="gapped", output_dir=str(root / "run"), mixer="gru", d_model=8, max_steps=2,
                    warmup_steps=0, batch_size=8, eval_every=2, save_every=2, cpu=True, quiet=True,
                    task_overrides=TINY))
    generate_folder(["gapped"], root / "data", **TINY)
    (root / "file.txt").write_text("a user's file")
    (root / "empty").mkdir()
    (root / "busy").mkdir()
    (root / "busy" / "notes.txt").write_text("mine")
    broken = copy_folder(root / "run" / "model", root / "broken_ckpt")
    (broken / "selectivbench_run.json").write_text('{"task": "gapped", "task_par')
    old = copy_folder(root / "run" / "model", root / "old_ckpt")  # weights of another block layout
    weights = load_file(old / "model.safetensors")
    weights["model.layers.0.mixer.old_proj.weight"] = weights.pop("model.layers.0.mixer.zh_proj.weight")
    weights["model.layers.1.mixer.o_proj.weight"] = weights["model.layers.1.mixer.o_proj.weight"][:, :3].contiguous()
    save_file(weights, old / "model.safetensors", metadata={"format": "pt"})
    pickled = copy_folder(root / "run" / "model", root / "bin_ckpt")  # from_pretrained would unpickle the .bin
    (pickled / "model.safetensors").rename(pickled / "weights.safetensors")
    (pickled / "pytorch_model.bin").write_bytes(b"a pickle, never read")
    truncated_weights = copy_folder(root / "run" / "model", root / "cut_ckpt")
    (truncated_weights / "model.safetensors").write_bytes((truncated_weights / "model.safetensors").read_bytes()[:20])
    (copy_folder(root / "run" / "model", root / "badcfg_ckpt") / "config.json").write_text('{"mixer": "gru", ')
    truncated = root / "truncated"
    (truncated / "gapped").mkdir(parents=True)
    for f in (root / "data" / "gapped").iterdir():
        (truncated / "gapped" / f.name).write_bytes(f.read_bytes())
    for f in (truncated / "gapped").glob("test-*.parquet"):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    (root / "other.jsonl").write_text(json.dumps({"model": "elsewhere", "config": "gapped", "split": "test"}) + "\n")
    (root / "mine.csv").write_text("a,b\n1,2\n")  # a user's tables, never appended to
    (root / "notes.jsonl").write_text("my notes\n")
    for name, file, content in (("res_csv", "results.csv", "my,own,table\n"), ("res_md", "summary.md", "# my notes\n"),
                                ("res_png", "accuracy_vs_parameters.png", "my plot"), ("res_rec", "outputs.json", "{}"),
                                ("res_bad", "results.jsonl", '\n{"run": \n{"run": "b"}\n'),
                                ("res_odd", "results.jsonl", '[1, 2]\n'),
                                ("res_nosplit", "results.jsonl", '{"run": "x"}\n')):
        (root / name / "complexity_smoke").mkdir(parents=True)
        (root / name / "complexity_smoke" / file).write_text(content)
    (root / "noconfig.jsonl").write_text(json.dumps({"model": str(root / "run" / "model"), "split": "test"}) + "\n")
    (copy_folder(root / "run" / "model", root / "readme_ckpt") / "README.md").write_text("my own notes")
    (copy_folder(root / "run" / "model", root / "task5_ckpt") / "selectivbench_run.json").write_text('{"task": 5}')
    (copy_folder(root / "run" / "model", root / "noparams_ckpt") / "selectivbench_run.json").write_text(
        '{"task": "gapped"}')
    shutil.copytree(root / "data", root / "cut_data")  # a generated folder, card and all, with a test file cut
    for f in (root / "cut_data" / "gapped").glob("test-*.parquet"):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    shutil.copytree(root / "data", root / "stray_data")  # a copy of a parquet file: the card's glob would load it
    shutil.copy(next((root / "stray_data" / "gapped").glob("train-*.parquet")),
                root / "stray_data" / "gapped" / "train-copy.parquet")
    shutil.copytree(root / "data", root / "badrecord_data")
    record = root / "badrecord_data" / "gapped" / "generation.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "splits": 5}))
    return root


def copy_folder(source, target):
    target.mkdir()
    for f in source.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    return target


def fill(args, place):
    return [a.replace("{root}", str(place)).replace("{ckpt}", str(place / "run" / "model")) for a in args]


# (argv, a pattern the one error line must contain)
CLI_CASES = [
    # generate: task parameters, sizes, the target
    (["generate", "nosuch", "--out", "{root}/g"], r"invalid choice: 'nosuch'"),
    (["generate", "complexity", "--out", "{root}/g", "--vocab-size", "1"], r"vocab_size=1 is invalid: allowed \[2, 53\]"),
    (["generate", "complexity", "--out", "{root}/g", "--vocab-size", "abc"], r"--vocab-size: invalid int value"),
    (["generate", "complexity", "--out", "{root}/g", "--ambiguities", "50"], r"ambiguities=50 is invalid"),
    (["generate", "complexity", "--out", "{root}/g", "--ambiguity-depth", "0"], r"ambiguity_depth=0 is invalid"),
    (["generate", "complexity", "--out", "{root}/g", "--density", "0"], r"density=0.0 is invalid: allowed \(0.0, 1.0\]"),
    (["generate", "complexity", "--out", "{root}/g", "--density", "1.5"], r"density=1.5 is invalid"),
    (["generate", "complexity", "--out", "{root}/g", "--noise", "-0.1"], r"noise=-0.1 is invalid: allowed \[0.0, 1.0\]"),
    (["generate", "complexity", "--out", "{root}/g", "--gap-prob", "2"], r"gap_prob=2.0 is invalid"),
    (["generate", "complexity", "--out", "{root}/g", "--gap-law", "weird"], r"gap_law='weird' is invalid: allowed one of"),
    (["generate", "complexity", "--out", "{root}/g", "--gap-content", "x"], r"gap_content='x' is invalid"),
    (["generate", "complexity", "--out", "{root}/g", "--seq-len", "1"], r"seq_len=1 is invalid"),
    (["generate", "complexity", "--out", "{root}/g", "--seq-len-min", "500"], r"seq_len_min=500 is invalid"),
    (["generate", "complexity", "--out", "{root}/g", "--start-states", "0"], r"start_states=0 is invalid"),
    (["generate", "complexity", "--out", "{root}/g", "--min-string-length", "0"], r"min_string_length=0 is invalid"),
    (["generate", "complexity", "--out", "{root}/g", "--seed", "-1"], r"seed=-1 is invalid"),
    (["generate", "complexity", "--out", "{root}/g", "--timestep", "0"], r"timestep=0.0 is invalid"),
    (["generate", "complexity", "--out", "{root}/g", "--test-gaps", "10,10"], r"test_gaps=\(10, 10\) is invalid"),
    (["generate", "complexity", "--out", "{root}/g", "--test-gaps", "a,b"], r"--test-gaps: invalid gap list"),
    (["generate", "complexity", "--out", "{root}/g", "--gap-law", "uniform", "--gap-low", "0.5", "--gap-high", "0.2"],
     r"gap_high=0.2 is invalid"),
    (["generate", "complexity", "--out", "{root}/g", "--gap-law", "lognormal", "--gap-sigma", "5"],
     r"gap_sigma=5.0 is invalid"),
    (["generate", "complexity", "--out", "{root}/g", "--gap-law", "lognormal", "--gap-sigma", "0"],
     r"gap_sigma=0.0 is invalid: allowed \(0.0, 3.0\]"),
    (["generate", "complexity", "--out", "{root}/g", "--timestep", "1e-320"],
     r"gap_duration=0.1 is invalid: allowed a longest gap of at most 1,048,575 steps .*up to inf steps"),
    (["generate", "complexity", "--out", "{root}/g", "--gap-duration", "1000", "--timestep", "0.0005"],
     r"gap_duration=1000.0 is invalid: allowed a longest gap of at most 1,048,575 steps"),
    (["generate", "complexity", "--out", "{root}/g", "--num-train", "-5"], r"num_train=-5 is invalid"),
    (["generate", "complexity", "--out", "{root}/g", "--num-train", "99999999999999999999"],
     r"num_train=99999999999999999999 is invalid: allowed an integer in \[0, 2147483647\] \(at most 2\*\*31 - 1 samples"),
    (["generate", "complexity", "--out", "{root}/g", "--num-test", str(2**31)], r"num_test=2147483648 is invalid"),
    (["generate", "complexity", "--out", "{root}/g", "--num-proc", "0"], r"num_proc=0 is invalid"),
    (["generate", "complexity", "--out", "{root}/file.txt", *TINY_FLAGS], r"out=.*file.txt.* is invalid"),
    (["generate", "complexity", "--out", "", *TINY_FLAGS], r"out='' is invalid: allowed a folder path \(not empty\)"),
    (["generate", "complexity", "--out", "{root}/g", *TINY_FLAGS[:4], "--num-train=0", "--num-validation=0",
      "--num-test=0"], r"num_train=0 is invalid: allowed at least one sample in num_train, num_validation or num_test"),
    (["generate", "complexity", "--out", "{root}/g", *TINY_FLAGS, "--repo-id", "not a/valid--id"],
     r"repo_id='not a/valid--id' is invalid: allowed NAME or ORG/NAME"),
    # inspect
    (["inspect", "complexity", "--samples", "0"], r"samples=0 is invalid: allowed an integer in \[1, 10000\]"),
    (["inspect", "complexity", "--samples", "-3"], r"samples=-3 is invalid"),
    (["inspect", "complexity", "--samples", "100000000000"], r"samples=100000000000 is invalid: allowed an integer "
     r"in \[1, 10000\]"),
    (["inspect", "nosuch"], r"invalid choice: 'nosuch'"),
    (["inspect", "complexity", "--samples", "2", "--grammar-json", "{root}/file.txt", *TINY_FLAGS[:3]],
     r"grammar_json=.*file.txt.* is invalid: allowed a path that does not exist yet"),
    (["inspect", "complexity", "--samples", "2", "--grammar-json", "{root}/no/such/g.json", *TINY_FLAGS[:3]],
     r"grammar_json=.*g.json.* is invalid: allowed a path in a writable folder"),
    # train: every TrainArgs field is checked before any work
    (["train", "--grad-accum", "0"], r"grad_accum=0 is invalid: allowed an integer >= 1"),
    (["train", "--eval-every", "0"], r"eval_every=0 is invalid"),
    (["train", "--max-steps", "0"], r"max_steps=0 is invalid"),
    (["train", "--save-every", "0"], r"save_every=0 is invalid"),
    (["train", "--batch-size", "0"], r"batch_size=0 is invalid"),
    (["train", "--warmup-steps", "-1"], r"warmup_steps=-1 is invalid"),
    (["train", "--epochs", "0"], r"epochs=0 is invalid"),
    (["train", "--lr", "0"], r"lr=0.0 is invalid"),
    (["train", "--lr", "-1"], r"lr=-1.0 is invalid"),
    (["train", "--lr", "nan"], r"lr=nan is invalid"),
    (["train", "--clip", "-1"], r"clip=-1.0 is invalid"),
    (["train", "--min-lr-ratio", "2"], r"min_lr_ratio=2.0 is invalid"),
    (["train", "--rope-theta", "inf"], r"rope_theta=inf is invalid: allowed a number in \(0.0, inf\)$"),
    (["train", "--linear-init", "xavier"], r"linear_init='xavier' is invalid: allowed one of \('normal', 'torch'\)"),
    (["train", "--dropout", "1"], r"dropout=1.0 is invalid"),
    (["train", "--optimizer", "sgd"], r"optimizer='sgd' is invalid: allowed one of \('adam', 'adamw'\)"),
    (["train", "--mixer", "lstm"], r"mixer='lstm' is invalid: allowed one of"),
    (["train", "--norm", "batchnorm"], r"norm='batchnorm' is invalid"),
    (["train", "--config", "nosuch"], r"config='nosuch' is invalid"),
    (["train", "--d-model", "30", "--n-heads", "4"], r"n_heads=4 is invalid: allowed a divisor of d_model=30"),
    (["train", "--mixed-precision", "fp8"], r"mixed_precision='fp8' is invalid"),
    (["train", "--report-to", "wandb"], r"report_to='wandb' is invalid: allowed an installed tracker"),
    (["train", "--report-to", "nosuch"], r"report_to='nosuch' is invalid: allowed one of"),
    (["train", "--output-dir", "{root}/file.txt", *TINY_FLAGS], r"output_dir=.*file.txt.* allowed a folder"),
    (["train", "--output-dir", "{root}/busy", *TINY_FLAGS], r"output_dir=.*busy.* allowed an empty or new folder"),
    (["train", "--output-dir", "{root}/t", "--data-dir", "{root}/nothing"], r"data_dir=.*nothing.* is invalid"),
    (["train", "--output-dir", "{root}/t", "--config", "gapped", "--data-dir", "{root}/data", "--seed", "3"],
     r"data_dir=.* is invalid with task parameters \['seed'\]"),
    (["train", "--output-dir", "{root}/t", "--vocab-size", "1"], r"vocab_size=1 is invalid"),
    (["train", "--output-dir", "{root}/t", "--train-seed", str(2**32)], r"train_seed=4294967296 is invalid: allowed "
                                                                          r"an integer in \[0, 4294967295\]"),
    (["train", "--output-dir", "{root}/t", *TINY_FLAGS, "--num-train", "0"], r"num_train=0 is invalid: allowed at "
                                                                               r"least 1 sample to train"),
    (["train", "--output-dir", "{root}/busy", "--resume", *TINY_FLAGS], r"output_dir=.*busy.* allowed with --resume "
                                                                         r"an empty folder or a run folder"),
    (["train", "--output-dir", "{root}/t", "--num-test", "99999999999999999999"], r"num_test=99999999999999999999 is invalid"),
    (["train", "--bogus"], r"unrecognized arguments: --bogus"),
    (["train", "--output-dir", "", *TINY_FLAGS], r"output_dir='' is invalid: allowed a folder path \(not empty\)"),
    (["reproduce", "--task", "gapped", "--scale", "smoke", "--out", ""], r"out='' is invalid: allowed a folder path"),
    (["inspect", "complexity", "--samples", "2", "--density", "1e-9"], r"density=1e-09 is invalid: allowed "
     r"\[0.0986, 1\] for this alphabet \(below it a draw of the paper's generator passes with probability under"),
    (["inspect", "complexity", "--samples", "2", "--density", "1e-20"], r"density=1e-20 is invalid: allowed \[0.0986"),
    (["inspect", "gapped", "--samples", "2", *TINY_FLAGS[:3], "--seq-len", "1000000000"],
     r"seq_len=1000000000 is invalid: allowed at most \d+ for this grammar \(8 states, out-degree up to \d\): its "
     r"string law takes \d+\.\d GiB, over half this machine's memory"),
    (["generate", "gapped", "--out", "{root}/short", *TINY_FLAGS[:3], "--seq-len", "2"],
     r"seq_len=2 is invalid: allowed \[4, inf\) for this grammar"),  # before the folder is made
    (["inspect", "gapped", "--grammar-json", ""], r"grammar_json='' is invalid: allowed a file path \(not empty\)"),
    # evaluate
    (["evaluate", "{root}/run/model", "--out", ""], r"out='' is invalid: allowed a table path ending in a file name"),
    (["evaluate", "{root}/run/model", "--out", "{root}/.."], r"out=.* is invalid: allowed a table path ending"),
    (["evaluate", "{root}/run/model", "--out", "{root}/runs/."], r"out=.*runs/\.' is invalid: allowed a table path "),
    (["evaluate", "{root}/run/model", "--out", "{root}/runs/"], r"out=.*runs/' is invalid: allowed a table path "),
    (["evaluate", "{root}/missing"], r"checkpoint=.*missing.* is invalid: allowed a save_pretrained folder"),
    (["evaluate", "{root}/empty"], r"checkpoint=.*empty.* is invalid: allowed a save_pretrained folder"),
    (["evaluate", "{root}/broken_ckpt"], r"file .*selectivbench_run.json is invalid: allowed JSON"),
    (["evaluate", "{root}/old_ckpt"], r"checkpoint=.*old_ckpt.* is invalid: allowed the weights of this version's gru "
     r"block \(missing: model.layers.0.mixer.zh_proj.weight; unexpected: model.layers.0.mixer.old_proj.weight; "
     r"shape saved vs model: model.layers.1.mixer.o_proj.weight \(8, 3\) vs \(8, 16\);"),
    (["evaluate", "{ckpt}", "{root}/bin_ckpt"],
     r"checkpoint=.*bin_ckpt.* is invalid: allowed a folder with model.safetensors or model.safetensors.index.json"),
    (["evaluate", "{root}/cut_ckpt"], r"checkpoint=.*cut_ckpt.* is invalid: allowed a folder whose weights and "
     r"config.json load \(SafetensorError"),
    (["evaluate", "{root}/badcfg_ckpt"], r"checkpoint=.*badcfg_ckpt.* is invalid: allowed a folder whose weights and "
     r"config.json load \("),
    (["evaluate", "{ckpt}", "--num-samples", "-1"], r"num_samples=-1 is invalid"),
    (["evaluate", "{ckpt}", "--num-samples", "0"], r"num_samples=0 is invalid"),
    (["evaluate", "{ckpt}", "--batch-size", "0"], r"batch_size=0 is invalid"),
    (["evaluate", "{ckpt}", "--splits", "nosuch"], r"split.*nosuch.* is invalid"),
    (["evaluate", "{ckpt}", "--seed", "3"], r"configs is invalid: allowed a list of configs whenever"),
    (["evaluate", "{ckpt}", "--configs", "gapped", "--seed", "9", *TINY_FLAGS],
     r"checkpoint .* is invalid for config 'gapped': allowed a model trained on the same grammar"),
    (["evaluate", "{ckpt}", "--configs", "gapped", "--data-dir", "{root}/truncated", "--splits", "test"],
     r"file=.*test-.*\.parquet.* is invalid: allowed a complete parquet file"),
    (["evaluate", "{root}/task5_ckpt"], r"file .*task5_ckpt/selectivbench_run.json is invalid: allowed the "
     r"selectivbench_run.json that `selectivbench train` writes \(task=5: allowed one of \('complexity'"),
    (["evaluate", "{root}/noparams_ckpt"],
     r"file .*noparams_ckpt/selectivbench_run.json is invalid: .*\(task_params: allowed an object of task "
     r"parameters\)"),
    (["evaluate", "{ckpt}", "--configs", "gapped", "--data-dir", "{root}/badrecord_data"],
     r"file=.*badrecord_data/gapped/generation.json.* is invalid: allowed the generation.json that `selectivbench "
     r"generate` writes into each config folder \(splits: allowed an object of split name"),
    (["evaluate", "{ckpt}", "--out", "{root}/file.txt/table"], r"out=.* is invalid: allowed a path in a folder"),
    (["evaluate", "{ckpt}", "--noise-seed", "abc"], r"--noise-seed: invalid int value"),
    (["evaluate", "{ckpt}", "--configs", "gapped", "--num-test", "99999999999999999999", *TINY_FLAGS[:-1]],
     r"num_test=99999999999999999999 is invalid: allowed an integer in \[0, 2147483647\]"),
    (["evaluate", "{ckpt}", "--noise-seed", "-1"], r"noise_seed=-1 is invalid: allowed an integer in \[0, 9223372036854775807\]"),
    (["evaluate", "{ckpt}", "--noise-seed", str(2**63)], r"noise_seed=9223372036854775808 is invalid"),
    (["evaluate", "{ckpt}", "--out", "{root}/mine"], r"out=.*mine.* is invalid: allowed a new table or one written "
     r"by `selectivbench evaluate` \(.*mine.csv has other content"),
    (["evaluate", "{ckpt}", "--out", "{root}/notes"], r"out=.*notes.* is invalid: .*notes.jsonl has other content"),
    (["evaluate", "{ckpt}", "--out", "{root}/other"], r"out=.*other.* is invalid: .*other.jsonl has other content"),
    (["evaluate", "{ckpt}", "--configs", "nosuch"], r"invalid choice: 'nosuch'"),
    # publish-model / publish-dataset
    (["publish-model", "{ckpt}", "--repo-id", "noslash", "--dry-run"], r"repo_id='noslash' is invalid: allowed ORG/NAME"),
    (["publish-model", "{root}/missing", "--repo-id", "a/b", "--dry-run"], r"checkpoint=.*missing.* is invalid"),
    (["publish-model", "{ckpt}", "--repo-id", "a/b", "--results", "{root}/none.jsonl", "--dry-run"],
     r"results=.*none.jsonl.* is invalid: allowed a readable .jsonl table"),
    (["publish-model", "{ckpt}", "--repo-id", "a/b", "--results", "{root}/other.jsonl", "--dry-run"],
     r"results=.*other.jsonl.* is invalid: allowed a table with rows of"),
    (["publish-model", "{root}/cut_ckpt", "--repo-id", "a/b", "--results", "{root}/other.jsonl", "--dry-run"],
     r"checkpoint=.*cut_ckpt.* is invalid: allowed a folder whose weights and config.json load"),
    (["publish-model", "{ckpt}", "--repo-id", "a/b", "--dataset-repo", "bad id!", "--dry-run"],
     r"dataset_repo='bad id!' is invalid"),
    (["publish-model", "{ckpt}", "--repo-id", "a/b", "--results", "{root}/noconfig.jsonl", "--dry-run"],
     r"results=.*noconfig.jsonl.* is invalid: allowed a table of `selectivbench evaluate` rows \(row 1: "
     r"config=None: allowed a config name\)"),
    (["publish-model", "{root}/readme_ckpt", "--repo-id", "me/model", "--dry-run"],
     r"file=.*readme_ckpt/README.md.* is invalid: allowed a README.md written by `selectivbench publish-model`"),
    (["publish-model", "{root}/readme_ckpt", "--repo-id", "me/model", "--dry-run", "--results", "{root}/other.jsonl"],
     r"file=.*readme_ckpt/README.md.* is invalid"),
    (["publish-model", "{ckpt}", "--repo-id", "a/b"],
     r"dry_run=False is invalid in offline mode \(HF_HUB_OFFLINE=1\): allowed --dry-run"),
    (["publish-model", "{ckpt}", "--repo-id", "a b/c", "--dry-run"], r"repo_id='a b/c' is invalid: allowed ORG/NAME"),
    (["publish-model", "{root}/task5_ckpt", "--repo-id", "a/b", "--dry-run"], r"selectivbench_run.json is invalid"),
    (["publish-dataset", "{root}/missing", "--repo-id", "a/b", "--dry-run"], r"folder=.*missing.* is invalid"),
    *[(["publish-dataset", "{root}/data", "--repo-id", bad, *dry], rf"repo_id={re.escape(repr(bad))} is invalid: "
       r"allowed ORG/NAME") for bad in ("a/b/c", "/b", "a/", "a b/c", "a--b/c") for dry in (["--dry-run"], [])],
    (["publish-dataset", "{root}/data", "--repo-id", "a/b"], r"dry_run=False is invalid in offline mode"),
    (["publish-dataset", "{root}/cut_data", "--repo-id", "a/b", "--dry-run"],
     r"file=.*cut_data/gapped/test-.*\.parquet.* is invalid: allowed a complete parquet file"),
    (["publish-dataset", "{root}/stray_data", "--repo-id", "a/b", "--dry-run"],
     r"folder=.*stray_data/gapped.* is invalid: allowed only the files `selectivbench generate` wrote there \(it also "
     r"holds \['train-copy.parquet'\]\)"),
    (["publish-dataset", "{root}/badrecord_data", "--repo-id", "a/b", "--dry-run"],
     r"file=.*badrecord_data/gapped/generation.json.* is invalid: .*\(splits: allowed"),
    (["publish-dataset", "{root}/data", "--repo-id", "noslash", "--dry-run"], r"repo_id='noslash' is invalid"),
    # reproduce
    (["reproduce", "--task", "nosuch"], r"invalid choice: 'nosuch'"),
    (["reproduce", "--task", "complexity", "--scale", "huge", "--out", "{root}/r"], r"scale='huge' is invalid"),
    (["reproduce", "--task", "complexity", "--mixers", "lstm", "--out", "{root}/r"], r"mixers=.*lstm.* is invalid"),
    (["reproduce", "--task", "complexity", "--out", "{root}/file.txt"], r"out=.*file.txt.* is invalid: allowed a folder"),
    (["reproduce", "--task", "complexity", "--out", "{root}/file.txt", "--dry-run"], r"out=.*file.txt.* is invalid"),
    (["reproduce", "--task", "complexity", "--out", "{root}/file.txt/r"],
     r"out=.*file.txt/r.* is invalid: allowed a folder that can be written \(.*file.txt is not a folder\)"),
    (["reproduce", "--task", "complexity", "--out", "{root}/r", "--gpus-per-run", "-1", "--dry-run"],
     r"gpus_per_run=-1.0 is invalid: allowed only with --launcher ray"),
    (["reproduce", "--task", "complexity", "--out", "{root}/r", "--gpus-per-run", "-1", "--launcher", "ray"],
     r"gpus_per_run=-1.0 is invalid: allowed a number >= 0"),
    (["reproduce", "--task", "complexity", "--out", "{root}/r", "--cpus-per-run", "0", "--launcher", "ray", "--dry-run"],
     r"cpus_per_run=0.0 is invalid: allowed a number > 0"),
    (["reproduce", "--task", "complexity", "--out", "{root}/r", "--address", "auto"],
     r"address='auto' is invalid: allowed only with --launcher ray"),
    (["reproduce", "--task", "complexity", "--out", "{root}/r", "--cpus-per-run", "2", "--dry-run"],
     r"cpus_per_run=2.0 is invalid: allowed only with --launcher ray"),
    (["reproduce", "--task", "complexity", "--scale", "smoke", "--out", "{root}/res_csv"],
     r"out=.*res_csv.* is invalid: allowed a sweep folder whose tables, summary and plots this command wrote "
     r"\(.*results.csv was not written by it"),
    (["reproduce", "--task", "complexity", "--scale", "smoke", "--out", "{root}/res_md"], r"summary.md was not written"),
    (["reproduce", "--task", "complexity", "--scale", "smoke", "--out", "{root}/res_md", "--dry-run"],
     r"summary.md was not written"),
    (["reproduce", "--task", "complexity", "--scale", "smoke", "--out", "{root}/res_png"],
     r"accuracy_vs_parameters.png was not written"),
    (["reproduce", "--task", "complexity", "--scale", "smoke", "--out", "{root}/res_rec"],
     r"out=.*res_rec.* is invalid: allowed a sweep folder whose outputs.json is this command's record"),
    (["reproduce", "--task", "complexity", "--scale", "smoke", "--out", "{root}/res_bad"],
     r"file=.*res_bad/complexity_smoke/results.jsonl.* is invalid: allowed one JSON object with the keys \(run, "
     r"split, .*\) per "
     r"line \(line 2: Expecting value"),
    (["reproduce", "--task", "complexity", "--scale", "smoke", "--out", "{root}/res_bad", "--dry-run"],
     r"file=.*results.jsonl.* is invalid: .*line 2"),
    (["reproduce", "--task", "complexity", "--scale", "smoke", "--out", "{root}/res_odd"],
     r"file=.*results.jsonl.* is invalid: .*\(line 1: not an object with a 'run' key"),
    (["reproduce", "--task", "complexity", "--scale", "smoke", "--out", "{root}/res_nosplit"],
     r"file=.*results.jsonl.* is invalid: .*\(line 1: no 'split', 'mixer', .*'parameters'; fix or remove that line"),
    # the command itself
    ([], r"the following arguments are required: command"),
    (["nosuch"], r"invalid choice: 'nosuch'"),
]


@pytest.mark.parametrize("argv, pattern", CLI_CASES, ids=[" ".join(a)[:60] for a, _ in CLI_CASES])
def test_a_bad_cli_call_is_one_line_exit_2(place, capsys, monkeypatch, argv, pattern):
    monkeypatch.chdir(place)  # a path that resolves to the current folder writes there: seen by the check below
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # an upload never leaves this machine
    before = files_of(place)
    try:
        code = main(fill(argv, place))
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("selectivbench")]  # not progress bars
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("selectivbench: error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert files_of(place) == before  # nothing written, rewritten or removed


def files_of(folder):
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None for p in folder.rglob("*")}


def test_evaluate_appends_only_to_its_own_tables(place, tmp_path):
    """A table evaluate wrote takes more rows (one header); a user's csv or jsonl of the same name is
    left byte for byte as it was, and nothing is written beside it."""
    from selectivbench.evaluation.tables import FIELDS, TABLES_RECORD
    from selectivbench.evaluation.evaluate import evaluate

    out = tmp_path / "t" / "eval"
    first = evaluate([str(place / "run" / "model")], out=str(out), splits=["test"], num_samples=4, cpu=True)
    second = evaluate([str(place / "run" / "model")], out=str(out), splits=["test"], num_samples=4, cpu=True,
                      noise_seed=2**63 - 1)
    lines = out.with_suffix(".csv").read_text().splitlines()
    assert lines[0] == ",".join(FIELDS) and len(lines) == 3
    rows = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert rows == first + second and rows[1]["noise_seed"] == 2**63 - 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["eval.csv", "eval.jsonl", TABLES_RECORD]  # no temporary
    dotted = tmp_path / "t" / "lr0.001"  # the suffixes are added, not swapped for '.001'
    assert evaluate([str(place / "run" / "model")], out=str(dotted), splits=["test"], num_samples=4, cpu=True) == first
    assert sorted(p.name for p in out.parent.iterdir()) == ["eval.csv", "eval.jsonl", "lr0.001.csv", "lr0.001.jsonl",
                                                           TABLES_RECORD]
    for users, content in (("eval.csv", "a,b\n1,2\n"), ("eval.jsonl", json.dumps({"a": 1}) + "\n")):
        user = tmp_path / "u" / users
        user.parent.mkdir(exist_ok=True)
        user.write_text(content)
        with pytest.raises(ParameterError, match=rf"{users} has other content"):
            evaluate([str(place / "run" / "model")], out=str(tmp_path / "u" / "eval"), cpu=True)
        assert user.read_text() == content and [p.name for p in user.parent.iterdir()] == [users]
        user.unlink()


def test_debug_shows_the_traceback(place):
    with pytest.raises(ParameterError, match="samples=0"):
        main(["--debug", "inspect", "complexity", "--samples", "0"])


# API: (callable, exception type, pattern)
API_CASES = [
    (lambda p: TaskParams(vocab_size=1), ParameterError, r"vocab_size=1 is invalid"),
    (lambda p: TaskParams(noise="0.2"), ParameterError, r"noise='0.2' is invalid: allowed a finite number"),
    (lambda p: TaskParams(seed=True), ParameterError, r"seed=True is invalid"),
    (lambda p: task_params("nosuch"), ParameterError, r"task='nosuch' is invalid"),
    (lambda p: TaskParams.from_dict({"vocab": 4}), ParameterError, r"unknown parameter\(s\) \['vocab'\]"),
    (lambda p: SelectivBench(config_name="complexity", num_train=-1, **{k: v for k, v in TINY.items()
                                                                      if not k.startswith("num_")}).info,
     ParameterError, r"num_train=-1 is invalid"),
    (lambda p: train(TrainArgs(grad_accum=0, output_dir=str(p / "never"))), ParameterError, r"grad_accum=0"),
    (lambda p: train(TrainArgs(batch_size=2.5, output_dir=str(p / "never"))), ParameterError, r"batch_size=2.5"),
    (lambda p: load_task("gapped", str(p / "data"), seed=3), ParameterError, r"is invalid with task parameters"),
    (lambda p: load_task("gapped", str(p / "data"), splits=["test_gap99"]), ParameterError,
     r"splits=\['test_gap99'\] is invalid for config 'gapped'"),
    (lambda p: load_task("gapped", splits=["nosuch"], **TINY), ParameterError, r"splits=\['nosuch'\] is invalid"),
    (lambda p: load_task("gapped", **{**TINY, "num_test": 2**31}), ParameterError,
     r"num_test=2147483648 is invalid: allowed an integer in \[0, 2147483647\]"),
]


@pytest.mark.parametrize("call, exc, pattern", API_CASES, ids=[f"api{i}" for i in range(len(API_CASES))])
def test_a_bad_api_call_raises_one_clear_error(place, call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call(place)
    assert not (place / "never").exists()


def test_resuming_with_arguments_that_build_another_model_is_one_clear_error(tmp_path):
    """--resume with model arguments whose weights differ from the saved state's: one error naming
    the state and what differs, before any step, and the run folder is left as it was (load_state_dict
    would raise a many-line RuntimeError)."""
    task = load_task("gapped", **TINY)
    run = dict(config="gapped", output_dir=str(tmp_path / "r"), mixer="gru", max_steps=4, warmup_steps=0,
               batch_size=8, eval_every=4, save_every=2, cpu=True, quiet=True)
    train(TrainArgs(d_model=8, **run), task=task, stop_after=3)  # leaves state/step-2
    # as if this version's block were another: the arguments match the run's, its weights do not
    saved_args = tmp_path / "r" / "train_args.json"
    saved_args.write_text(saved_args.read_text().replace('"d_model": 8,', '"d_model": 16,'))

    def files():
        return {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}

    before = files()
    with pytest.raises(ParameterError, match=r"state .*step-2 is invalid for this run: allowed the weights of the "
                                             r"model these arguments build \(shape saved vs model: classifier.weight "
                                             r"\(\d+, 8\) vs \(\d+, 16\)"):
        train(TrainArgs(d_model=16, resume=True, **run), task=task)
    assert files() == before


def _files(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_resume_continues_only_the_run_that_is_there(tmp_path):
    """--resume never writes into a folder that is not a run's, nor continues a run with other
    arguments or on another grammar: one error naming what differs, every file left as it was."""
    task = load_task("gapped", **TINY)
    run = dict(config="gapped", mixer="gru", d_model=8, max_steps=4, warmup_steps=0, batch_size=8, eval_every=4,
               save_every=2, cpu=True, quiet=True, resume=True)
    user = tmp_path / "mine"
    (user / "model").mkdir(parents=True)
    (user / "model" / "notes.txt").write_text("precious")
    (user / "metrics.jsonl").write_text("my log\n")
    with pytest.raises(ParameterError, match=r"output_dir=.*mine.* is invalid: allowed with --resume an empty folder "
                                             r"or a run folder \(its train_args.json is missing or unreadable\)"):
        train(TrainArgs(output_dir=str(user), **run), task=task)
    assert _files(user) == {user / "model" / "notes.txt": b"precious", user / "metrics.jsonl": b"my log\n"}

    folder = tmp_path / "r"
    train(TrainArgs(output_dir=str(folder), **run), task=task, stop_after=3)  # a new run: --resume starts it
    before = _files(folder)
    with pytest.raises(ParameterError, match=r"allowed with --resume only the arguments of the run there "
                                             r"\(config='complexity' \(the run's: 'gapped'\); max_steps=8 \(the "
                                             r"run's: 4\)\)"):
        train(TrainArgs(output_dir=str(folder), **{**run, "config": "complexity", "max_steps": 8}), task=task)
    other_grammar = load_task("gapped", **{**TINY, "seed": 5})
    with pytest.raises(ParameterError, match=r"allowed with --resume the task the run was trained on \(its "
                                             r"selectivbench_run.json differs from the data now: seed: 1 in the "
                                             r"record, 5 in the data\)"):
        train(TrainArgs(output_dir=str(folder), **run), task=other_grammar)
    assert _files(folder) == before
    # what only reports may change: quiet, report_to, cpu
    train(TrainArgs(output_dir=str(folder), **{**run, "quiet": False}), task=task)
    assert [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def test_resume_reconciles_a_log_written_past_the_state_or_cut_short(tmp_path):
    task = load_task("gapped", **TINY)
    run = dict(config="gapped", mixer="gru", d_model=8, max_steps=6, warmup_steps=0, batch_size=8, eval_every=3,
               save_every=4, cpu=True, quiet=True)
    train(TrainArgs(output_dir=str(tmp_path / "straight"), **run), task=task)
    expected = (tmp_path / "straight" / "metrics.jsonl").read_text()
    # killed at step 3, before any state: resume starts over and logs steps 1.. once
    train(TrainArgs(output_dir=str(tmp_path / "a"), **run), task=task, stop_after=3)
    train(TrainArgs(output_dir=str(tmp_path / "a"), resume=True, **run), task=task)
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == expected
    # killed at step 5 in the middle of writing a line: resume from the step-4 state drops it
    train(TrainArgs(output_dir=str(tmp_path / "b"), **run), task=task, stop_after=5)
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "loss": 4.5')
    train(TrainArgs(output_dir=str(tmp_path / "b"), resume=True, **run), task=task)
    assert (tmp_path / "b" / "metrics.jsonl").read_text() == expected
    # a damaged line before the last is not guessed at
    log = tmp_path / "b" / "metrics.jsonl"
    log.write_text(log.read_text().replace('{"step": 2,', '{"step": "two",'))
    with pytest.raises(ParameterError, match=r"file=.*metrics.jsonl.* is invalid: allowed one JSON record with an "
                                             r"integer 'step' per line \(line 2 is not\)"):
        train(TrainArgs(output_dir=str(tmp_path / "b"), resume=True, **run), task=task)


def test_a_relative_data_folder_is_recorded_as_an_absolute_path(place, tmp_path, monkeypatch):
    monkeypatch.chdir(place)
    train(TrainArgs(config="gapped", data_dir="data", output_dir=str(tmp_path / "r"), mixer="gru", d_model=8,
                    max_steps=1, warmup_steps=0, batch_size=8, eval_every=1, save_every=1, cpu=True, quiet=True))
    record = json.loads((tmp_path / "r" / "model" / "selectivbench_run.json").read_text())
    assert record["data_dir"] == str(place / "data") == record["train_args"]["data_dir"]
    args = TrainArgs(config="gapped", data_dir="data", output_dir=str(tmp_path / "r"), mixer="gru", d_model=8,
                     max_steps=1, warmup_steps=0, batch_size=8, eval_every=1, save_every=1, cpu=True, quiet=True,
                     resume=True)
    train(args)  # the same relative folder resumes the run (it is recorded absolute on both sides)
    # a train_args.json that records it relative, or lacks a field, is no run of this version: refused
    saved = tmp_path / "r" / "train_args.json"
    recorded = saved.read_text()
    saved.write_text(recorded.replace(f'"data_dir": "{place / "data"}"', '"data_dir": "data"'))
    with pytest.raises(ParameterError, match=r"allowed with --resume only the arguments of the run there "
                                             r"\(data_dir='.*' \(the run's: 'data'\)\)"):
        train(args)
    saved.write_text(json.dumps({k: v for k, v in json.loads(recorded).items() if k != "rope_theta"}))
    with pytest.raises(ParameterError, match=r"\(rope_theta=10000.0 \(the run's: 'absent'\)\)"):
        train(args)


def test_a_save_killed_midway_leaves_no_state_and_resume_falls_back(monkeypatch, tmp_path):
    """A crash while state step-6 is written: step-6.tmp stays unread, the run resumes from step-3
    and ends with the weights of a run that never crashed."""
    from selectivbench.training import state as run_state

    task = load_task("gapped", **{**TINY, "num_train": 64})

    def args(name, resume=False):
        return TrainArgs(config="gapped", output_dir=str(tmp_path / name), mixer="gla", d_model=8, max_steps=8,
                         warmup_steps=1, batch_size=8, eval_every=8, save_every=3, cpu=True, quiet=True,
                         resume=resume)

    straight = train(args("a"), task=task)
    real = run_state.write_pair

    def dies_at_step_6(folder, name, state):
        if folder.name == "step-6.tmp" and name == "schedule":
            raise KeyboardInterrupt  # the process is stopped between two files of the state
        return real(folder, name, state)

    monkeypatch.setattr(run_state, "write_pair", dies_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        train(args("b"), task=task)
    monkeypatch.setattr(run_state, "write_pair", real)
    states = tmp_path / "b" / "state"
    assert sorted(p.name for p in states.iterdir()) == ["step-3", "step-6.tmp"]
    assert train(args("b", resume=True), task=task) == straight
    from safetensors.torch import load_file

    wa, wb = (load_file(str(tmp_path / n / "model" / "model.safetensors")) for n in ("a", "b"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not any(p.name.endswith(".tmp") for p in states.iterdir())
    assert os.listdir(tmp_path / "b" / "model")  # the model folder was swapped in whole


@pytest.mark.parametrize("mixer", sorted(__import__("selectivbench.models", fromlist=["MIXERS"]).MIXERS))
def test_the_weights_check_accepts_every_mixers_checkpoint_and_names_a_missing_tensor(mixer, tmp_path):
    from selectivbench.evaluation.evaluate import check_weights
    from selectivbench.models import SelectivBenchConfig, SelectivBenchForTokenClassification

    config = SelectivBenchConfig(mixer=mixer, vocab_size=6, num_labels=5, d_model=8, n_layers=1, n_heads=2, d_state=4)
    SelectivBenchForTokenClassification(config).save_pretrained(tmp_path / "m")
    check_weights(tmp_path / "m")  # the model built on the meta device has exactly the saved tensors
    weights = load_file(tmp_path / "m" / "model.safetensors")
    dropped = sorted(weights)[-1]
    save_file({k: v for k, v in weights.items() if k != dropped}, tmp_path / "m" / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ParameterError, match=rf"allowed the weights of this version's {mixer} block \(missing: "
                                             rf"{re.escape(dropped)};"):
        check_weights(tmp_path / "m")


def test_the_weights_check_reads_a_sharded_checkpoint_through_its_index(tmp_path):
    from selectivbench.evaluation.evaluate import check_weights
    from selectivbench.models import SelectivBenchConfig, SelectivBenchForTokenClassification

    config = SelectivBenchConfig(mixer="gla", vocab_size=6, num_labels=5, d_model=16, n_layers=2, n_heads=2)
    SelectivBenchForTokenClassification(config).save_pretrained(tmp_path / "m", max_shard_size="4KB")
    shards = sorted((tmp_path / "m").glob("model-*.safetensors"))
    assert len(shards) > 1 and not (tmp_path / "m" / "model.safetensors").exists()
    check_weights(tmp_path / "m")
    shards[0].unlink()
    with pytest.raises(ParameterError, match=r"allowed a folder whose weights and config.json load"):
        check_weights(tmp_path / "m")


class FlakyHub:
    """HfApi's two upload calls, recorded; the upload fails while `down`."""

    def __init__(self, monkeypatch, down: bool):
        from huggingface_hub import HfApi, constants

        self.down, self.uploads = down, []
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kw: None)
        monkeypatch.setattr(HfApi, "upload_folder", self.upload_folder)

    def upload_folder(self, folder_path, repo_id, **kw):  # bound to the recorder, not to the HfApi
        if self.down:
            raise ConnectionError("the Hub cannot be reached")
        self.uploads.append((folder_path, repo_id, kw.get("repo_type")))
        self.kwargs = kw


def test_a_failed_model_upload_leaves_no_rows_and_the_retry_replaces_its_own_card(place, tmp_path, monkeypatch,
                                                                                   capsys):
    """The evaluation rows are kept only once the upload went through, so retries do not repeat them;
    the card of the failed try (ours, by its marker) is replaced, a user's README never."""
    (tmp_path / "run").mkdir()
    ckpt = copy_folder(place / "run" / "model", tmp_path / "run" / "model")
    hub = FlakyHub(monkeypatch, down=True)
    assert main(["publish-model", str(ckpt), "--repo-id", "me/model"]) == 2
    assert "error: ConnectionError: the Hub cannot be reached" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["model"]  # no publish_eval rows
    first_card = (ckpt / "README.md").read_text()
    assert "selectivbench-model-card" in first_card
    hub.down = False
    assert main(["publish-model", str(ckpt), "--repo-id", "me/model"]) == 0
    assert hub.uploads == [(str(ckpt), "me/model", None)]
    rows = [json.loads(line) for line in (tmp_path / "run" / "publish_eval.jsonl").read_text().splitlines()]
    assert sorted(r["split"] for r in rows) == ["test", "validation"]  # one evaluation, not one per try
    assert len((tmp_path / "run" / "publish_eval.csv").read_text().splitlines()) == 1 + len(rows)
    assert (ckpt / "README.md").read_text() == first_card  # same checkpoint, same card


def test_publish_dataset_uploads_a_checked_folder_with_its_card_pointing_at_the_repo(place, tmp_path, monkeypatch):
    folder = tmp_path / "data"
    shutil.copytree(place / "data", folder)
    hub = FlakyHub(monkeypatch, down=False)
    assert main(["publish-dataset", str(folder), "--repo-id", "me/sb-data"]) == 0
    assert hub.uploads == [(str(folder), "me/sb-data", "dataset")]
    assert 'load_dataset("me/sb-data"' in (folder / "README.md").read_text()


def test_publish_dataset_sends_exactly_the_dataset_and_replaces_its_configs_remote_files(place, tmp_path, monkeypatch,
                                                                                        capsys):
    """A user's files beside the data (an .env, notes, an old copy) are not uploaded (they were), and
    remote files of the published configs that the folder no longer has (a split sharded differently
    before) are deleted in the same commit (they stayed, and the card's globs loaded them too)."""
    from huggingface_hub.utils import filter_repo_objects

    folder = tmp_path / "data"
    shutil.copytree(place / "data", folder)
    (folder / ".env").write_text("HF_TOKEN=secret")
    (folder / "notes.txt").write_text("mine")
    (folder / "old").mkdir()
    (folder / "old" / "test-00000-of-00001.parquet").write_bytes(b"old")
    hub = FlakyHub(monkeypatch, down=False)
    assert main(["publish-dataset", str(folder), "--repo-id", "me/sb-data"]) == 0
    listed = [line.strip() for line in capsys.readouterr().out.splitlines()[1:]]
    record = json.loads((folder / "gapped" / "generation.json").read_text())
    expected = ["README.md"] + sorted(["gapped/generation.json", "gapped/grammar.json"] + [
        f"gapped/{f['name']}" for split in record["splits"].values() for f in split["files"]])
    present = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    sent = sorted(filter_repo_objects(present, allow_patterns=hub.kwargs["allow_patterns"]))
    assert listed == expected and sent == sorted(expected)
    assert hub.kwargs["delete_patterns"] == ["gapped/*"]


def test_publish_dataset_refuses_a_folder_without_configs(place, tmp_path, capsys):
    folder = tmp_path / "data"
    shutil.copytree(place / "data", folder)
    shutil.rmtree(folder / "gapped")
    card = (folder / "README.md").read_text()
    assert main(["publish-dataset", str(folder), "--repo-id", "me/sb-data", "--dry-run"]) == 2
    assert "allowed a folder with at least one generated config" in capsys.readouterr().err
    assert (folder / "README.md").read_text() == card  # the card was deleted by the dry run


def test_a_table_write_that_fails_leaves_both_tables_as_they_were(tmp_path, monkeypatch):
    """The disk fills while the csv is written: the jsonl must not have taken the rows alone (a retry
    would then add them to it twice)."""
    from selectivbench.evaluation.tables import FIELDS, append_rows

    out = tmp_path / "eval"
    row = {k: 1 for k in FIELDS}
    append_rows(out, [row])  # a Path as well as a str
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    write_bytes = Path.write_bytes

    def full_disk(self, data):
        if self.name.startswith(".eval.csv"):
            raise OSError(28, "No space left on device")
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OSError, match="No space left"):
        append_rows(str(out), [row])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temporary left either


def test_a_grammar_json_that_appears_while_inspect_runs_is_kept(tmp_path, monkeypatch, capsys):
    """--grammar-json is checked new at the start; a file the user writes there meanwhile is not
    replaced at the end (the write links, which fails on an existing name)."""
    import selectivbench.builders as builders

    path = tmp_path / "grammar.json"
    draw = builders.make_grammar

    def user_writes_meanwhile(params):
        path.write_text("user data")
        return draw(params)

    monkeypatch.setattr(builders, "make_grammar", user_writes_meanwhile)
    assert main(["inspect", "gapped", "--samples", "2", "--grammar-json", str(path), *TINY_FLAGS[:3]]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("selectivbench")]
    assert len(err) == 1 and "grammar_json=" in err[0] and "never overwritten" in err[0]
    assert path.read_text() == "user data" and sorted(p.name for p in tmp_path.iterdir()) == ["grammar.json"]


@pytest.mark.parametrize("damaged, content, pattern", [
    ("model/selectivbench_run.json", "{", r"file .*selectivbench_run.json is invalid: allowed JSON"),
    ("model/selectivbench_run.json", "[]", r"file .*selectivbench_run.json is invalid: allowed the "
                                           r"selectivbench_run.json that `selectivbench train` writes"),
    ("state/step-2/optimizer.json", json.dumps({"__dict__": [["state", 5], ["param_groups", 7]]}),
     r"state .*step-2 is invalid: allowed the optimizer.json that training writes"),
    ("state/step-2/schedule.json", json.dumps({"__dict__": [["scheduler", 5], ["scaler", None]]}),
     r"state .*step-2 is invalid: allowed the schedule and random states that training writes"),
])
def test_resuming_from_damaged_run_files_is_one_clear_error(tmp_path, monkeypatch, damaged, content, pattern):
    """Files of a run folder whose JSON reads but whose content does not (a raw KeyError or
    AttributeError before): one ParameterError naming the file, the run record's before the data is built."""
    args = TrainArgs(config="gapped", output_dir=str(tmp_path / "run"), mixer="gru", d_model=8, max_steps=4,
                     warmup_steps=0, batch_size=8, eval_every=2, save_every=2, cpu=True, quiet=True,
                     task_overrides=TINY)
    train(args, stop_after=2)
    target = tmp_path / "run" / damaged
    assert target.exists()
    target.write_text(content)
    if damaged.startswith("model/"):  # refused before the task is loaded
        monkeypatch.setattr("selectivbench.training.loop.load_task", lambda *a, **k: pytest.fail("the data was built first"))
    with pytest.raises(ParameterError, match=pattern):
        train(dataclasses.replace(args, resume=True))


@pytest.mark.parametrize("card_before", [False, True])
def test_a_readme_that_appears_while_publish_model_scores_is_kept(place, tmp_path, monkeypatch, capsys, card_before):
    """No README.md at the check, or our card from an earlier call; the user writes theirs while the
    checkpoint is evaluated: the card is not put over it (it was, in both cases)."""
    import selectivbench.hub.model as publish

    ckpt = copy_folder(place / "run" / "model", tmp_path / "model")
    if card_before:
        assert main(["publish-model", str(ckpt), "--repo-id", "me/model", "--dry-run"]) == 0
        capsys.readouterr()
    score = publish.results_for

    def user_writes_meanwhile(*args):
        (ckpt / "README.md").write_text("my notes")
        return score(*args)

    monkeypatch.setattr(publish, "results_for", user_writes_meanwhile)
    assert main(["publish-model", str(ckpt), "--repo-id", "me/model", "--dry-run"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("selectivbench")]
    assert len(err) == 1 and "README.md" in err[0] and "never overwritten" in err[0]
    assert (ckpt / "README.md").read_text() == "my notes" and not list(ckpt.glob(".README*"))


def test_a_dangling_readme_link_is_refused_as_not_our_card(place, tmp_path, capsys):
    ckpt = copy_folder(place / "run" / "model", tmp_path / "model")
    (ckpt / "README.md").symlink_to(tmp_path / "nowhere.md")
    assert main(["publish-model", str(ckpt), "--repo-id", "me/model", "--dry-run"]) == 2
    assert "(this one is not, and would be replaced by the card" in capsys.readouterr().err
    assert (ckpt / "README.md").is_symlink()


def test_a_new_file_is_written_where_hard_links_are_not_supported(tmp_path, monkeypatch):
    """new=True links the file in; a filesystem without hard links (EPERM) falls back to a check and a
    rename, still never over an existing file."""
    from selectivbench.files import atomic_write_text

    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    atomic_write_text(tmp_path / "a.json", "new", new=True)
    assert (tmp_path / "a.json").read_text() == "new"
    with pytest.raises(FileExistsError):
        atomic_write_text(tmp_path / "a.json", "again", new=True)
    assert (tmp_path / "a.json").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
