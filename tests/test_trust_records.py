"""Trust, round 3 (issue 22): nothing shipped in a user's folder is run, and every number is of the
task that was asked for: a checkpoint's record, a data folder's records and its files agree, or the
command refuses (one line, exit code 2) before any work."""
import ast
import builtins
import dataclasses
import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

from selectivbench.builders import ParameterError
from selectivbench.cli import main
from selectivbench.data.task import load_task
from selectivbench.hub.dataset_records import check_config_folder
from selectivbench.hub.dataset_folder import generate_folder
from selectivbench.training.args import TrainArgs
from selectivbench.training.loop import train

REPO = Path(__file__).resolve().parents[1]
TINY = dict(vocab_size=6, ambiguities=2, ambiguity_depth=2, seq_len=12, num_train=32, num_validation=8, num_test=8)
RUN = dict(config="gapped", mixer="gru", d_model=8, max_steps=2, warmup_steps=0, batch_size=8, eval_every=2,
           save_every=1, cpu=True, quiet=True)


def copy_folder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A generated folder and a checkpoint trained on it (its record names the folder)."""
    root = tmp_path_factory.mktemp("trust")
    generate_folder(["gapped"], root / "data", **TINY)
    train(TrainArgs(output_dir=str(root / "run"), data_dir=str(root / "data"), **RUN))
    return root


def cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()  # what earlier steps printed (progress bars)
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return code, err


# ---------------------------------------------------------------- code execution


LOADERS = ("from_pretrained", "from_config")


def _loading_calls(path: Path):
    """Every call of from_pretrained / from_config, or of anything on an Auto* class, in a source file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            on_auto = isinstance(owner, ast.Name) and owner.id.startswith("Auto") and node.func.attr != "register"
            if node.func.attr in LOADERS or on_auto:
                yield node


def test_every_model_or_config_load_in_the_package_refuses_remote_code():
    """Every from_pretrained / Auto* load in the package's sources (src/, models/, builders/, scripts/)
    passes trust_remote_code=False: code shipped in a user's folder is never run, and nothing prompts.
    (tests/ loads saved checkpoints with trust_remote_code=True on purpose, in a clean process.)"""
    calls, missing = 0, []
    for folder in ("src", "models", "builders", "scripts"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for call in _loading_calls(path):
                calls += 1
                flag = next((k.value for k in call.keywords if k.arg == "trust_remote_code"), None)
                passes_callers_choice = any(k.arg is None for k in call.keywords)  # from_pretrained(..., **kwargs)
                if passes_callers_choice and call.func.attr == "from_pretrained" and path.name.startswith("modeling_"):
                    continue  # our model's own from_pretrained hands the caller's own trust_remote_code on
                if not (isinstance(flag, ast.Constant) and flag.value is False):
                    missing.append(f"{path.relative_to(REPO)}:{call.lineno}")
    assert calls >= 3  # evaluate's config and model loads, publish-model's config
    assert missing == []


EVIL_CODE = """
from pathlib import Path
Path({marker!r}).write_text("ran")
from transformers import PretrainedConfig
class EvilConfig(PretrainedConfig):
    model_type = "evil"
"""


def _evil_checkpoint(made: Path, name: str, model_type: str) -> tuple[Path, Path]:
    """The trained checkpoint, its config.json pointing (auto_map) at a file beside the weights that
    writes a marker file when imported."""
    ckpt = copy_folder(made / "run" / "model", made / name)
    marker = made / f"{name}.ran"
    (ckpt / "evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    config = json.loads((ckpt / "config.json").read_text())
    config.update(model_type=model_type, auto_map={"AutoConfig": "evil.EvilConfig"})
    (ckpt / "config.json").write_text(json.dumps(config))
    return ckpt, marker


@pytest.mark.parametrize("model_type", ["evil", "selectivbench"])
@pytest.mark.parametrize("command", ["publish-model", "evaluate"])
def test_a_checkpoint_with_code_beside_the_weights_is_refused_and_its_code_never_runs(made, capsys, monkeypatch,
                                                                                      command, model_type):
    ckpt, marker = _evil_checkpoint(made, f"evil_{command}_{model_type}", model_type)
    asked = []
    monkeypatch.setattr(builtins, "input", lambda *a: asked.append(a) or "y")  # a user who would say yes
    results = made / f"{ckpt.name}.jsonl"
    results.write_text(json.dumps({"model": str(ckpt), "config": "gapped", "split": "test", "samples": 8,
                                   "parameters": 1, "element_accuracy": 0.5, "step_accuracy": 0.5,
                                   "bayes_element_accuracy": 0.6}) + "\n")
    argv = {"publish-model": ["publish-model", ckpt, "--repo-id", "me/evil", "--dry-run", "--results", results],
            "evaluate": ["evaluate", ckpt, "--out", made / f"{ckpt.name}_eval"]}[command]
    code, err = cli(argv, capsys)
    assert (code, asked, marker.exists()) == (2, [], False)
    assert err.startswith("selectivbench: error: file=") and "config.json" in err and "\n" not in err
    assert ("model_type" if model_type == "evil" else "auto_map") in err
    assert not (ckpt / "README.md").exists() and not (made / f"{ckpt.name}_eval.jsonl").exists()


# ---------------------------------------------------------------- the task a checkpoint was trained on


def _regenerate(folder: Path, **overrides) -> None:
    shutil.rmtree(folder / "gapped")
    generate_folder(["gapped"], folder, **{**TINY, **overrides})


def test_evaluate_and_publish_refuse_a_data_folder_regenerated_with_another_task(made, tmp_path, capsys):
    """The record's every task parameter and split size against the folder's: the grammar alone
    matched, and a folder of 7-step sequences without a test split was scored (exit 0, one row)."""
    ckpt = copy_folder(made / "run" / "model", tmp_path / "ckpt")
    data = copy_folder(made / "data", tmp_path / "data")
    record = json.loads((ckpt / "selectivbench_run.json").read_text())
    (ckpt / "selectivbench_run.json").write_text(json.dumps({**record, "data_dir": str(data)}))
    assert main(["evaluate", str(ckpt), "--out", str(tmp_path / "ok")]) == 0  # the folder it was trained on
    _regenerate(data, seq_len=7, num_test=0)
    code, err = cli(["evaluate", ckpt, "--out", tmp_path / "ev"], capsys)
    assert code == 2 and "\n" not in err
    assert "seq_len: 12 in the record, 7 in the data" in err
    assert "split_sizes.test: 8 in the record, 'absent' in the data" in err
    assert not (tmp_path / "ev.jsonl").exists()
    code, err = cli(["publish-model", ckpt, "--repo-id", "me/m", "--dry-run"], capsys)  # it evaluates the same way
    assert code == 2 and "seq_len: 12 in the record, 7 in the data" in err
    assert not (ckpt / "README.md").exists()


def test_resume_refuses_a_data_folder_regenerated_with_another_task(made, tmp_path):
    data = copy_folder(made / "data", tmp_path / "data")
    args = TrainArgs(output_dir=str(tmp_path / "run"), data_dir=str(data), **{**RUN, "max_steps": 3})
    assert train(args, stop_after=1) == {"stopped_at": 1}
    before = (tmp_path / "run" / "model" / "selectivbench_run.json").read_bytes()
    _regenerate(data, seq_len=10, noise=0.1)  # gapped's noise: 0.2
    with pytest.raises(ParameterError, match=r"output_dir=.*allowed with --resume the task the run was trained on.*"
                                             r"noise: 0.2 in the record, 0.1 in the data; seq_len: 12 in the record, 10 in the data"):
        train(dataclasses.replace(args, resume=True))
    assert (tmp_path / "run" / "model" / "selectivbench_run.json").read_bytes() == before


def test_resume_refuses_a_state_of_another_task_when_the_checkpoint_is_missing(made, tmp_path):
    """A run killed between its first state and its first checkpoint has no record beside its state:
    the state itself records the task it was trained on."""
    data = copy_folder(made / "data", tmp_path / "data")
    args = TrainArgs(output_dir=str(tmp_path / "run"), data_dir=str(data), **{**RUN, "max_steps": 3})
    train(args, stop_after=1)
    shutil.rmtree(tmp_path / "run" / "model")
    _regenerate(data, seq_len=10)
    with pytest.raises(ParameterError, match=r"allowed with --resume the task the run was trained on \(its newest "
                                             r"state's task differs from the data now: seq_len: 12 in the record, "
                                             r"10 in the data\)"):
        train(dataclasses.replace(args, resume=True))
    assert not (tmp_path / "run" / "model").exists()


# ---------------------------------------------------------------- a folder's records agree


def test_grammar_json_params_that_disagree_with_generation_json_are_refused(made, tmp_path, capsys):
    """generation.json is authoritative; an edited noise in grammar.json changed the evaluation silently."""
    data = copy_folder(made / "data", tmp_path / "data")
    path = data / "gapped" / "grammar.json"
    grammar = json.loads(path.read_text())
    grammar["params"]["noise"] = 0.3
    path.write_text(json.dumps(grammar))
    with pytest.raises(ParameterError, match=r"grammar\.json.*params disagree with generation\.json "
                                             r"\(noise=0\.3 \(generation\.json: 0\.2\)\)"):
        load_task("gapped", str(data), splits=["test"])
    ckpt = copy_folder(made / "run" / "model", tmp_path / "ckpt")
    code, err = cli(["evaluate", ckpt, "--configs", "gapped", "--data-dir", data], capsys)
    assert code == 2 and "grammar.json" in err and "noise=0.3" in err


def test_an_edited_grammar_structure_is_refused(made, tmp_path):
    data = copy_folder(made / "data", tmp_path / "data")
    path = data / "gapped" / "grammar.json"
    grammar = json.loads(path.read_text())
    grammar["start_states"] = grammar["start_states"][:1]
    path.write_text(json.dumps(grammar))
    with pytest.raises(ParameterError, match=r"grammar\.json.*this one was changed"):
        check_config_folder(data, "gapped")


def test_a_split_file_of_the_recorded_size_and_rows_but_other_content_is_refused(made, tmp_path):
    """generation.json records each file's sha256: a swapped or altered file of the same size and row
    count passed the check, and the 'test' row reported another split's numbers."""
    data = copy_folder(made / "data", tmp_path / "data")
    check_config_folder(data, "gapped")  # hashed (and cached) as it is
    test_file = next((data / "gapped").glob("test-*.parquet"))
    raw = bytearray(test_file.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # same size, same footer (same rows), other content
    test_file.write_bytes(bytes(raw))
    with pytest.raises(ParameterError, match=rf"file='{test_file}' is invalid: .*another sha256"):
        check_config_folder(data, "gapped")
    with pytest.raises(ParameterError, match="another sha256"):
        load_task("gapped", str(data), splits=["validation"])  # any load checks every file


def test_a_folder_loads_the_files_generation_json_records_whatever_the_card_says(made, tmp_path):
    """The card's YAML is a user's to edit; the data a config holds is what generation.json records."""
    from selectivbench.hub.dataset_records import load_config_folder

    data = copy_folder(made / "data", tmp_path / "data")
    card = data / "README.md"
    card.write_text(card.read_text().replace("path: gapped/test-*", "path: gapped/validation-*"))
    loaded = load_config_folder(data, "gapped")
    assert loaded["test"]["input_ids"] == load_config_folder(data, "gapped", split="test")["input_ids"]
    assert loaded["test"]["input_ids"] != loaded["validation"]["input_ids"]


# ---------------------------------------------------------------- what a command is asked


@pytest.mark.parametrize("flags, field", [(["--configs", "gapped", "gapped"], "configs"),
                                           (["--splits", "test", "test"], "splits"),
                                           (["{ckpt}"], "checkpoints")])
def test_evaluate_refuses_duplicate_names(made, tmp_path, capsys, flags, field):
    ckpt = made / "run" / "model"
    argv = ["evaluate", ckpt, *[f.format(ckpt=ckpt) for f in flags], "--out", tmp_path / "ev"]
    if field == "splits":
        argv += ["--configs", "gapped", "--data-dir", made / "data"]
    code, err = cli(argv, capsys)
    assert code == 2 and err.startswith(f"selectivbench: error: {field}=") and "distinct" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("change, problem", [({"element_accuracy": math.nan}, "element_accuracy=nan"),
                                             ({"step_accuracy": 7.5}, "step_accuracy=7.5"),
                                             ({"bayes_element_accuracy": -0.1}, "bayes_element_accuracy=-0.1"),
                                             ({"split": "test_gap999"}, "split='test_gap999'")])
def test_publish_model_refuses_results_rows_that_are_no_score_of_its_task(made, tmp_path, capsys, change, problem):
    ckpt = copy_folder(made / "run" / "model", tmp_path / "ckpt")
    row = {"model": str(ckpt), "config": "gapped", "split": "test", "samples": 8, "parameters": 1,
           "element_accuracy": 0.5, "step_accuracy": 0.5, "bayes_element_accuracy": 0.6}
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(row) + "\n")
    assert main(["publish-model", str(ckpt), "--repo-id", "me/m", "--dry-run", "--results", str(results)]) == 0
    (ckpt / "README.md").unlink()
    results.write_text(json.dumps(row) + "\n" + json.dumps({**row, **change}) + "\n")
    code, err = cli(["publish-model", ckpt, "--repo-id", "me/m", "--dry-run", "--results", results], capsys)
    assert code == 2 and "results=" in err and f"row 2: {problem}" in err
    assert not (ckpt / "README.md").exists()


def test_fp16_on_a_cpu_is_refused_before_any_work(made, tmp_path, capsys):
    """accelerate accepted fp16 on a CPU and trained in float32; the record and card said fp16."""
    out = tmp_path / "run"
    code, err = cli(["train", "--config", "gapped", "--data-dir", made / "data", "--output-dir", out, "--cpu",
                     "--mixer", "gru", "--d-model", "8", "--max-steps", "1", "--mixed-precision", "fp16"], capsys)
    assert code == 2 and err.startswith("selectivbench: error: mixed_precision='fp16' is invalid on a CPU")
    assert not out.exists()


# ---------------------------------------------------------------- dropout: N processes = 1 process


@pytest.mark.parametrize("mixer", ["gru", "transformer"])
def test_seeded_dropout_masks_depend_on_the_sample_alone(mixer):
    """With a seed per sample, a sample's masks are the same alone or in a batch padded longer, in
    the chunked and the recurrent form; another seed gives other masks; about p of the units drop."""
    from selectivbench.models import SelectivBenchConfig, SelectivBenchForTokenClassification
    from selectivbench.models.layers import SeededDropout

    torch.manual_seed(0)
    config = SelectivBenchConfig(mixer=mixer, d_model=16, n_layers=2, n_heads=2, vocab_size=5, num_labels=4,
                                 dropout=0.3)
    model = SelectivBenchForTokenClassification(config).train()
    ids, seeds = torch.randint(0, 6, (3, 9)), torch.tensor([5, 99, 2**32 - 1])
    batch = model(ids, dropout_seed=seeds).logits
    torch.manual_seed(1)  # torch's generator is not used
    alone = model(ids[1:2, :7], dropout_seed=seeds[1:2]).logits
    assert torch.allclose(batch[1:2, :7], alone, atol=1e-6)
    assert torch.allclose(model(ids, dropout_seed=seeds, recurrent=True).logits, batch, atol=1e-5)
    assert not torch.allclose(model(ids, dropout_seed=seeds + 1).logits, batch, atol=1e-3)
    drop = SeededDropout(0.1)
    drop.sample_seeds = torch.arange(64)
    assert (drop(torch.ones(64, 50, 32)) == 0).float().mean().item() == pytest.approx(0.1, abs=0.005)


def test_dropout_gives_the_same_losses_on_one_and_two_processes(tmp_path):
    """The README promises the same numbers on N processes; with dropout on they differed (torch's
    generator on each process): the masks are now a function of (seed, sample, epoch, layer)."""
    import os
    import subprocess

    from test_training import LAUNCH_TIMEOUT, launch

    settings = dict(config="gapped", mixer="gru", d_model=16, max_steps=6, warmup_steps=1, eval_every=3,
                    save_every=3, batch_size=8, dropout=0.1, lr=0.01, **TINY)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    one = subprocess.run([sys.executable, "-m", "selectivbench", "train", "--output-dir", str(tmp_path / "one"),
                          "--cpu", "--quiet", *flags], capture_output=True, text=True, cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(launch() + ["-m", "selectivbench", "train", "--output-dir", str(tmp_path / "two"), "--cpu",
                                     "--quiet", *flags], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "ACCELERATE_USE_CPU": "true"}, timeout=LAUNCH_TIMEOUT)
    assert two.returncode == 0, two.stderr[-3000:]
    logs = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
            for run in ("one", "two")]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] == list(range(1, 7))
    assert [r["loss"] for r in logs[1]] == pytest.approx([r["loss"] for r in logs[0]], rel=1e-6)
    assert logs[1][-1]["eval_element_accuracy"] == pytest.approx(logs[0][-1]["eval_element_accuracy"], abs=1e-9)
