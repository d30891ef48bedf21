"""Files and locks: a second writer is refused or waits, a user's files are never replaced nor sent,
a swap cut short is repaired, and what would fail after the work is refused before it."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from selectivbench.cli import main
from selectivbench.errors import ParameterError
from selectivbench.training import loop as train_module
from selectivbench.hub.dataset_folder import generate_folder
from selectivbench.training.run_folder import TRAIN_LOCK
from selectivbench.training.args import TrainArgs
from selectivbench.training.loop import train

TINY = dict(vocab_size=6, ambiguities=2, ambiguity_depth=2, seq_len=12, num_train=32, num_validation=8, num_test=8)
TINY_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
TRAIN_FLAGS = ["train", "--config", "gapped", "--mixer", "gru", "--d-model", "8", "--max-steps", "2",
               "--warmup-steps", "0", "--batch-size", "8", "--eval-every", "2", "--save-every", "2", "--cpu",
               "--quiet", *TINY_FLAGS]


def tiny_args(out, **kw) -> TrainArgs:
    return TrainArgs(**{**dict(config="gapped", output_dir=str(out), mixer="gru", d_model=8, max_steps=2,
                               warmup_steps=0, batch_size=8, eval_every=2, save_every=2, cpu=True, quiet=True,
                               task_overrides=TINY), **kw})


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A finished run and a generated folder, copied by the tests that change them."""
    root = tmp_path_factory.mktemp("trust")
    train(tiny_args(root / "run"))
    generate_folder(["gapped"], root / "data", **TINY)
    return root


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("selectivbench: error: "), err
    return err


class LockHolder:
    """Another process holding an flock on `path` until closed."""

    def __init__(self, path: Path):
        code = textwrap.dedent(f"""
            import fcntl, sys
            handle = open({str(path)!r}, "a")
            fcntl.flock(handle, fcntl.LOCK_EX)
            print("held", flush=True)
            sys.stdin.read()
        """)
        self.process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        assert self.process.stdout.readline().strip() == "held"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.process.stdin.close()
        self.process.wait(timeout=60)


# --- 1. one train per run folder ---------------------------------------------------------------------
def test_a_second_train_into_a_folder_in_use_is_refused_at_once(made, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with LockHolder(out / TRAIN_LOCK):  # another `train` is writing here (another process)
        assert main([*TRAIN_FLAGS, "--output-dir", str(out)]) == 2
        err = one_error_line(capsys)
        assert f"output_dir='{out}' is invalid: allowed a folder no other `selectivbench train` is writing to" in err
        assert sorted(p.name for p in out.iterdir()) == [TRAIN_LOCK]  # nothing written
        finished = tmp_path / "finished"
        shutil.copytree(made / "run", finished)
        before = snapshot(finished)
        with LockHolder(finished / TRAIN_LOCK):  # a --resume while the run is still going
            assert main([*TRAIN_FLAGS, "--output-dir", str(finished), "--resume"]) == 2
            assert "is in use: wait for that run or stop it" in one_error_line(capsys)
        assert snapshot(finished) == before
    assert main([*TRAIN_FLAGS, "--output-dir", str(out)]) == 0  # the lock released: the run goes ahead
    assert (out / "model" / "config.json").is_file()
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


# --- 2. evaluate appends under a lock --------------------------------------------------------------------
def test_two_evaluations_appending_to_one_table_keep_both_rows(tmp_path, monkeypatch):
    """While this process has read the old table and not yet renamed the new one over it, another
    process appends: without a lock, the rename dropped that process's row."""
    from selectivbench.evaluation.tables import FIELDS, append_rows

    out = tmp_path / "eval"
    append_rows(str(out), [{**{k: 0 for k in FIELDS}, "model": "first"}])
    other = textwrap.dedent(f"""
        from selectivbench.evaluation.tables import FIELDS, append_rows
        print("start", flush=True)
        append_rows({str(out)!r}, [{{**{{k: 0 for k in FIELDS}}, "model": "other"}}])
    """)
    read_bytes, started = Path.read_bytes, []

    def read_then_let_the_other_append(self):
        data = read_bytes(self)
        if self.name == "eval.jsonl" and not started:
            started.append(subprocess.Popen([sys.executable, "-c", other], stdout=subprocess.PIPE, text=True))
            assert started[0].stdout.readline().strip() == "start"
            try:
                started[0].wait(timeout=3)  # at once without a lock; with one it waits for this append
            except subprocess.TimeoutExpired:
                pass
        return data

    monkeypatch.setattr(Path, "read_bytes", read_then_let_the_other_append)
    append_rows(str(out), [{**{k: 0 for k in FIELDS}, "model": "this"}])
    monkeypatch.undo()
    assert started[0].wait(timeout=120) == 0
    models = [json.loads(line)["model"] for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert models == ["first", "this", "other"]
    assert [line.split(",")[0] for line in (tmp_path / "eval.csv").read_text().splitlines()] == \
        ["model", "first", "this", "other"]


# --- 6. nothing written inside a generated config folder -------------------------------------------------
@pytest.mark.parametrize("argv, field", [
    (["generate", "gapped", "--out", "{data}/gapped", *TINY_FLAGS], "out"),
    (["generate", "gapped", "--out", "{data}/gapped/more", *TINY_FLAGS], "out"),
    ([*TRAIN_FLAGS, "--output-dir", "{data}/gapped/run"], "output_dir"),
    (["evaluate", "{run}/model", "--out", "{data}/gapped/x"], "out"),
    (["inspect", "gapped", "--samples", "1", "--grammar-json", "{data}/gapped/g.json"], "grammar_json"),
    (["reproduce", "--task", "gapped", "--scale", "smoke", "--out", "{data}/gapped"], "out"),
])
def test_outputs_inside_a_generated_config_folder_are_refused_before_work(made, tmp_path, capsys, argv, field):
    data = tmp_path / "data"
    shutil.copytree(made / "data", data)
    before = snapshot(data)
    argv = [a.replace("{data}", str(data)).replace("{run}", str(made / "run")) for a in argv]
    assert main(argv) == 2
    err = one_error_line(capsys)
    assert f"{field}=" in err and "is invalid: allowed a path outside a generated config folder" in err
    assert f"({data / 'gapped'} holds the dataset config 'gapped'" in err
    assert snapshot(data) == before
    assert capsys.readouterr().out == ""  # refused before any work (no report of one)


# --- 4. publish-model sends exactly the model ------------------------------------------------------------
class RecordedHub:
    """HfApi's upload calls, recorded, offline."""

    def __init__(self, monkeypatch):
        from huggingface_hub import HfApi, constants

        self.uploads = []
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kw: None)
        monkeypatch.setattr(HfApi, "upload_folder", lambda api, **kw: self.uploads.append(kw))

    def sent(self, folder: Path) -> list[str]:
        """What upload_folder sends of the folder: its files that the patterns allow (links followed)."""
        from huggingface_hub.utils import filter_repo_objects

        (call,) = self.uploads
        assert call["folder_path"] == str(folder)
        present = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
        return sorted(filter_repo_objects(present, allow_patterns=call.get("allow_patterns"),
                                          ignore_patterns=call.get("ignore_patterns")))


def test_publish_model_uploads_exactly_the_models_files(made, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(made / "run", run)
    ckpt = run / "model"
    model = sorted(p.name for p in ckpt.iterdir()) + ["README.md"]
    (ckpt / ".env").write_text("HF_TOKEN=secret")
    (ckpt / "passwd").symlink_to("/etc/passwd")
    (ckpt / "notes").mkdir()
    (ckpt / "notes" / "todo.md").write_text("mine")
    (ckpt / "extra.py").write_text("print('not imported by the model')")
    hub = RecordedHub(monkeypatch)
    assert main(["publish-model", str(ckpt), "--repo-id", "me/model"]) == 0
    listed = [line.strip() for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert hub.sent(ckpt) == sorted(model) and listed == sorted(model)
    assert {"modeling_selectivbench.py", "layers.py", "mixer_gru.py", "model.safetensors"} <= set(listed)


def test_publish_model_refuses_a_model_file_that_is_a_link_or_a_shard_outside_the_folder(made, tmp_path, capsys):
    ckpt = tmp_path / "model"
    shutil.copytree(made / "run" / "model", ckpt)
    code = ckpt / "layers.py"
    code.rename(tmp_path / "layers.py")
    code.symlink_to(tmp_path / "layers.py")
    assert main(["publish-model", str(ckpt), "--repo-id", "me/model", "--dry-run"]) == 2
    assert f"file='{code}' is invalid: allowed a regular file of the checkpoint folder (a link" in \
        one_error_line(capsys)
    assert not (ckpt / "README.md").exists()
    code.unlink()
    (tmp_path / "layers.py").rename(code)
    weights = ckpt / "model.safetensors"
    weights.rename(tmp_path / "model-00001-of-00001.safetensors")
    index = ckpt / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {"lm.weight": "../model-00001-of-00001.safetensors"}}))
    assert main(["publish-model", str(ckpt), "--repo-id", "me/model", "--dry-run"]) == 2
    assert f"file='{index}' is invalid: allowed shards that are files of the checkpoint folder itself" in \
        one_error_line(capsys)
    assert main(["evaluate", str(ckpt), "--out", str(tmp_path / "eval")]) == 2  # nor read from outside it
    assert "allowed shards that are files of the checkpoint folder itself" in one_error_line(capsys)
    assert not (ckpt / "README.md").exists() and not (tmp_path / "eval.jsonl").exists()


# --- 3. a card the user edited is kept -------------------------------------------------------------------
def test_an_edited_dataset_card_is_kept_and_the_command_refuses_naming_it(made, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(made / "data", data)
    readme = data / "README.md"
    edited = readme.read_text() + "\n## My notes\n\nHow I use these configs.\n"  # the marker line stays
    readme.write_text(edited)
    before = snapshot(data)
    for argv in (["generate", "distractor", "--out", str(data), *TINY_FLAGS],
                 ["publish-dataset", str(data), "--repo-id", "me/sb-data", "--dry-run"]):
        assert main(argv) == 2
        err = one_error_line(capsys)
        assert "its README.md was not written by selectivbench, or was edited since: it is never replaced; " \
               f"move {readme} away" in err
        assert snapshot(data) == before
    from selectivbench.hub.dataset_card import CARD_RECORD
    from selectivbench.files import sha256

    readme.unlink()  # moved away: the next call writes a new card, recorded
    assert main(["generate", "distractor", "--out", str(data), *TINY_FLAGS]) == 0
    assert "distractor" in readme.read_text()
    assert json.loads((data / CARD_RECORD).read_text())["files"] == {"README.md": [sha256(readme.read_bytes())]}
    assert main(["publish-dataset", str(data), "--repo-id", "me/sb-data", "--dry-run"]) == 0  # our card: rebuilt
    assert 'load_dataset("me/sb-data"' in readme.read_text()
    assert json.loads((data / CARD_RECORD).read_text())["files"] == {"README.md": [sha256(readme.read_bytes())]}


def test_a_dataset_card_without_its_record_is_kept_even_with_the_marker(made, tmp_path):
    """Ownership is the sha256 record alone (no marker fallback for folders of an unreleased version)."""
    data = tmp_path / "data"
    shutil.copytree(made / "data", data)
    (data / "selectivbench_card.json").unlink()
    before = snapshot(data)
    with pytest.raises(ParameterError, match="its README.md was not written by selectivbench, or was edited since"):
        generate_folder(["distractor"], data, **TINY)
    assert snapshot(data) == before


def test_an_edited_model_card_is_kept_and_publish_model_refuses_naming_it(made, tmp_path, capsys):
    ckpt = tmp_path / "run" / "model"
    shutil.copytree(made / "run", tmp_path / "run")
    argv = ["publish-model", str(ckpt), "--repo-id", "me/model", "--dry-run"]
    assert main(argv) == 0
    readme = ckpt / "README.md"
    card = readme.read_bytes()
    assert main(argv) == 0 and readme.read_bytes() == card  # our card, unchanged: rewritten (the same)
    capsys.readouterr()
    readme.write_text(card.decode() + "\n## Intended use\n\nMine.\n")  # the marker line stays
    before = snapshot(ckpt)
    assert main(argv) == 2
    assert f"file='{readme}' is invalid: allowed a README.md written by `selectivbench publish-model` and unchanged " \
           "since (this one is not, and would be replaced by the card: move it away; a card edited since it was " \
           "written is yours)" in one_error_line(capsys)
    assert snapshot(ckpt) == before
    from selectivbench.files import sha256
    from selectivbench.hub.model import CARD_RECORD

    readme.write_bytes(card)  # the user's edit undone: ours again
    assert json.loads((ckpt / CARD_RECORD).read_text())["files"] == {"README.md": [sha256(card)]}
    assert main(argv) == 0 and readme.read_bytes() == card


# --- 5. model/ swapped in by two renames: a kill between them is repaired --------------------------------
class Killed(Exception):
    """Stands for the process being killed at this point."""


def killed_between_the_renames(monkeypatch, out: Path):
    """os.replace of model.tmp -> model raises while model.old exists: the state a kill between
    save_model's two renames leaves (the previous model/ moved aside, the new one not yet in place)."""
    real_replace = os.replace

    def replace(src, dst, *a, **kw):
        if Path(src) == out / "model.tmp" and (out / "model.old").exists():
            raise Killed
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", replace)


def test_a_kill_between_the_model_swaps_renames_is_repaired_by_resume(tmp_path, monkeypatch, capsys):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    args = tiny_args(out, max_steps=4)
    killed_between_the_renames(monkeypatch, out)
    with pytest.raises(Killed):  # the last save (step 4): state/step-4 complete, model/ moved aside
        train(args)
    monkeypatch.undo()
    assert not (out / "model").exists() and (out / "model.tmp").is_dir() and (out / "model.old").is_dir()
    capsys.readouterr()
    assert main(["evaluate", str(out / "model"), "--out", str(tmp_path / "eval")]) == 2
    assert "a save was cut short: `selectivbench train --resume --output-dir" in one_error_line(capsys)
    train(dataclasses.replace(args, resume=True))  # the finished run, resumed: trains nothing, repairs model/
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [TRAIN_LOCK, "metrics.jsonl", "model", "state", "train_args.json"])
    assert json.loads((out / "model" / "selectivbench_run.json").read_text())["step"] == 4
    saved = load_file(out / "model" / "model.safetensors")
    state = load_file(out / "state" / "step-4" / "model.safetensors")
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], state[k]) for k in saved)


def test_a_finished_run_killed_before_its_model_was_saved_is_saved_by_resume(tmp_path, monkeypatch):
    """Killed after the last state was written, before model/ was: the old model/ (step 2) stays and
    a resume of the finished run, which trains nothing, reported success over it."""
    out = tmp_path / "run"
    args = tiny_args(out, max_steps=4)
    real_save_model = train_module.save_model

    def save_model(accelerator, model, folder, meta):
        if meta["step"] == 4:
            raise Killed
        real_save_model(accelerator, model, folder, meta)

    monkeypatch.setattr(train_module, "save_model", save_model)
    with pytest.raises(Killed):
        train(args)
    monkeypatch.undo()
    assert json.loads((out / "model" / "selectivbench_run.json").read_text())["step"] == 2
    assert (out / "state" / "step-4").is_dir()
    train(dataclasses.replace(args, resume=True))
    record = json.loads((out / "model" / "selectivbench_run.json").read_text())
    assert record["step"] == 4 and record["validation_step"] == 4


# --- 7. a saved state past the run's last step is another run's ------------------------------------------
def test_resume_of_a_state_beyond_max_steps_is_refused_naming_the_field(made, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(made / "run", run)  # its state is at step 2
    saved = json.loads((run / "train_args.json").read_text())
    (run / "train_args.json").write_text(json.dumps({**saved, "max_steps": 1, "output_dir": str(run)}))
    before = snapshot(run)
    argv = [*TRAIN_FLAGS, "--output-dir", str(run), "--resume", "--max-steps", "1"]
    assert main(argv) == 2
    assert f"max_steps=1 is invalid for output_dir='{run}': allowed with --resume a run whose saved state is at " \
           f"most at its last step 1 ({run / 'state' / 'step-2'} is at step 2" in one_error_line(capsys)
    assert snapshot(run) == before


# --- 8. what failed after the work is refused before it ---------------------------------------------------
@pytest.fixture
def read_only():
    """Make folders read-only for this process. Root writes through permission bits, so as root the
    folder is also made immutable (chattr +i, ext4 and the like): then the kernel refuses root too."""
    made = []

    def make(folder: Path) -> Path:
        folder.chmod(0o555)
        made.append(folder)
        if os.geteuid() == 0:
            subprocess.run(["chattr", "+i", str(folder)], check=True, capture_output=True)
        with pytest.raises(OSError):  # really read-only, for this process
            (folder / "probe").write_text("x")
        return folder

    yield make
    for folder in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_a_read_only_out_or_checkpoint_folder_is_refused_before_any_work(made, tmp_path, read_only, capsys):
    ckpt = tmp_path / "run" / "model"
    shutil.copytree(made / "run", tmp_path / "run")
    (tmp_path / "tables").mkdir()
    tables = read_only(tmp_path / "tables")
    assert main(["evaluate", str(ckpt), "--out", str(tables / "eval")]) == 2
    assert f"out='{tables / 'eval'}' is invalid: allowed a folder that can be written ({tables} is not writable)" \
        in one_error_line(capsys)
    assert main(["evaluate", str(ckpt), "--out", str(tables / "sub" / "eval")]) == 2  # a folder it would make there
    assert f"({tables} is not writable)" in one_error_line(capsys)
    read_only(ckpt)
    assert main(["publish-model", str(ckpt), "--repo-id", "me/model", "--dry-run"]) == 2
    assert f"checkpoint='{ckpt}' is invalid: allowed a folder that can be written ({ckpt} is not writable)" in \
        one_error_line(capsys)
    assert capsys.readouterr().out == ""  # nothing was evaluated
    assert not (tmp_path / "run" / "publish_eval.jsonl").exists()


def test_a_config_folder_that_is_a_link_is_refused_and_an_old_swap_link_is_removed(made, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(made / "data", data)
    elsewhere = tmp_path / "elsewhere"
    (data / "gapped").rename(elsewhere)
    (data / "gapped").symlink_to(elsewhere, target_is_directory=True)
    before, kept = snapshot(data), snapshot(elsewhere)
    assert main(["generate", "gapped", "--out", str(data), *TINY_FLAGS]) == 2
    assert f"allowed a folder whose gapped is a folder, not a link ({data / 'gapped'} is a link" in \
        one_error_line(capsys)
    assert capsys.readouterr().out == "" and snapshot(data) == before and snapshot(elsewhere) == kept
    assert sorted(p.name for p in data.iterdir()) == ["README.md", "gapped", "selectivbench_card.json"]
    # what an earlier version left: the link swapped aside by a killed process; it broke every later run
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (data / "gapped").rename(data / f".selectivbench-build-old-gapped-{gone.stdout.strip()}-0a1b2c3d")
    (elsewhere / "notes.txt").write_text("mine")
    assert main(["generate", "gapped", "--out", str(data), *TINY_FLAGS]) == 0
    assert sorted(p.name for p in data.iterdir()) == ["README.md", "gapped", "selectivbench_card.json"]
    assert (elsewhere / "notes.txt").read_text() == "mine"  # the link removed, its target not followed


def test_a_dangling_grammar_json_link_is_refused_before_the_samples(tmp_path, capsys):
    link = tmp_path / "grammar.json"
    link.symlink_to(tmp_path / "nowhere" / "g.json")
    assert main(["inspect", "gapped", "--samples", "1", "--grammar-json", str(link)]) == 2
    assert f"grammar_json='{link}' is invalid: allowed a path that does not exist yet (never overwritten; it is a " \
           "link)" in one_error_line(capsys)
    assert capsys.readouterr().out == "" and link.is_symlink() and not (tmp_path / "nowhere").exists()


def test_a_checkpoint_whose_config_returns_tuples_is_refused_before_the_evaluation(made, tmp_path, capsys):
    ckpt = tmp_path / "model"
    shutil.copytree(made / "run" / "model", ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "return_dict": False}))
    for argv in (["evaluate", str(ckpt), "--out", str(tmp_path / "eval")],
                 ["publish-model", str(ckpt), "--repo-id", "me/model", "--dry-run"]):
        assert main(argv) == 2
        assert f"file='{ckpt / 'config.json'}' is invalid: allowed return_dict true (it is False" in \
            one_error_line(capsys)
        assert capsys.readouterr().out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and not (ckpt / "README.md").exists()


def test_a_d_model_that_cannot_be_allocated_is_refused_before_the_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_module, "load_task", lambda *a, **k: pytest.fail("the data was loaded"))
    out = tmp_path / "run"
    assert main([*TRAIN_FLAGS, "--output-dir", str(out), "--d-model", str(2**20)]) == 2
    err = one_error_line(capsys)
    assert "d_model=1048576 is invalid: allowed a model whose weights, gradients and optimizer state fit in " \
           "memory (" in err and " GiB of memory available)" in err
    assert not out.exists()


@pytest.mark.parametrize("argv", [
    [*TRAIN_FLAGS, "--output-dir", "{target}"],
    ["generate", "gapped", "--out", "{target}", *TINY_FLAGS],
    ["inspect", "gapped", "--samples", "1", "--grammar-json", "{target}/grammar.json"],
    ["reproduce", "--task", "gapped", "--scale", "smoke", "--mixers", "gru", "--out", "{target}"],
    ["score", "--mixer", "gru", "--preset", "smoke", "--out", "{target}"],
], ids=lambda argv: argv[0])
@pytest.mark.parametrize("inside", [False, True], ids=["the-folder", "a-folder-made-there"])
def test_every_command_that_writes_refuses_a_read_only_folder_before_any_work(argv, inside, tmp_path, read_only,
                                                                              capsys):
    (tmp_path / "ro").mkdir()
    folder = read_only(tmp_path / "ro")
    target = folder / "sub" if inside else folder
    argv = [a.format(target=target) for a in argv]
    flag = next(a for a, value in zip(argv, argv[1:]) if a.startswith("--") and value.startswith(str(target)))
    value = argv[argv.index(flag) + 1]
    assert main(argv) == 2
    err = one_error_line(capsys)
    assert f"{flag[2:].replace('-', '_')}={value!r} is invalid: allowed " in err
    if argv[0] == "inspect":  # a file it writes into an existing folder: that folder is named
        assert err.rstrip().endswith(f"allowed a path in a writable folder ({Path(value).parent})")
    else:  # the folder that refuses it is named
        assert err.rstrip().endswith(f"allowed a folder that can be written ({folder} is not writable)")
    assert capsys.readouterr().out == ""  # nothing was built, trained or sampled
    assert list(tmp_path.rglob("*")) == [folder]  # and nothing left behind
