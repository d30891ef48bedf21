"""reproduce: the paper's grids and rules, the smoke sweep end to end (selection on validation,
mean ± std tables, resume, failures), the dry run, and the Ray launcher against the local one."""
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from selectivbench.sweeps import driver as sweeps_driver
from selectivbench.sweeps.driver import execute, reproduce
from selectivbench.sweeps.estimate import estimate, parameter_count
from selectivbench.sweeps.launchers import LOCK_FILE, check_ray_address, check_ray_resources, sweep_lock
from selectivbench.sweeps.outputs import check_outputs, is_output, read_rows, write_outputs
from selectivbench.sweeps.paper import PAPER_MIXERS, PAPER_WIDTHS, paper_d_state, paper_heads, paper_width
from selectivbench.sweeps.plan import plan, run_spec
from selectivbench.sweeps.report import select_on_validation, summary_markdown, views
from selectivbench.sweeps.scales import SCALES
from selectivbench.builders import ParameterError, task_params
from selectivbench.cli import main
from selectivbench.models import MIXERS, SelectivBenchConfig, SelectivBenchForTokenClassification
from selectivbench.training.args import TrainArgs
from selectivbench.training.loop import model_config

RESULTS = Path(__file__).resolve().parent.parent / "results"
SMOKE_KEYS = 12  # k=2 and k=3 at width 8, k=3 at width 16; x 2 seeds x 2 learning rates
RAY_INIT = {"num_cpus": 2}  # this machine's size; the test must not ask Ray for more


def rows_of(folder: Path) -> list[dict]:
    return read_rows(folder / "results.jsonl")


def test_paper_rules():
    assert [paper_heads(d) for d in (256, 384, 512, 648, 768, 960, 1024, 1152, 1280, 1296)] == \
        [4, 4, 4, 8, 8, 8, 8, 16, 16, 16]
    for d in PAPER_WIDTHS:  # the rule's own statement, checked on every width
        h = paper_heads(d)
        assert d / h <= 128 and (h == 4 or d / (h // 2) > 128)
    assert paper_d_state("gla", "complexity") == 128 and paper_d_state("mamba", "gapped") == 64
    assert paper_d_state("gated_deltanet", "distractor") == 64
    assert [paper_width("transformer", d) for d in (648, 960, 1296, 512)] == [768, None, 1280, 512]
    assert paper_width("gla", 648) == 648


def test_paper_grids_count_every_combination():
    # transformer widths: 648 -> 768 (already in the list), 960 skipped, 1296 -> 1280
    tf_widths = {256, 384, 512, 768, 1024, 1152, 1280}
    recipes, seeds, others = 3 * 2, 4, 6
    assert len(plan("complexity", "paper")) == 7 * (others * 9 + len(tf_widths)) * seeds * recipes
    assert len(plan("gapped", "paper")) == (others * 9 + len(tf_widths)) * seeds * recipes
    assert len(plan("distractor", "paper")) == (others * 8 + len(tf_widths - {1280})) * seeds * recipes
    assert len(plan("generalization", "paper")) == (others * 2 + 2) * seeds * 2 * 2
    keys = [r.key for r in plan("complexity", "paper")]
    assert len(keys) == len(set(keys))
    assert {r.mixer for r in plan("gapped", "paper")} == set(PAPER_MIXERS)


def test_paper_runs_follow_the_recipe(tmp_path):
    s = SCALES["paper"]
    run = next(r for r in plan("complexity", "paper") if r.mixer == "transformer" and r.d_model == 1280
               and r.overrides["ambiguities"] == 24 and r.seed == 3 and r.lr == 2e-3 and r.warmup == 476)
    spec = run_spec("complexity", s, run, tmp_path, cpu=False)
    args = TrainArgs(**spec["train"])
    assert (args.n_layers, args.batch_size, args.optimizer, args.weight_decay, args.epochs, args.min_lr_ratio,
            args.dropout, args.lr, args.warmup_steps, args.train_seed, args.linear_init) == \
        (8, 64, "adam", 0.0, 1, 0.0, 0.2, 2e-3, 476, 3, "torch")
    assert (args.n_heads, args.d_state, args.rope_theta, args.mixed_precision) == (16, 128, 1000, "no")
    p = task_params("complexity", **spec["data"])
    assert (p.vocab_size, p.ambiguities, p.ambiguity_depth, p.seed, p.seq_len) == (25, 24, 24, 3, 200)
    assert spec["splits"] == ["validation", "test"]
    gen = run_spec("generalization", s.for_task("generalization"), plan("generalization", "paper")[0],
                       tmp_path, cpu=False)
    assert gen["splits"] == ["validation", "test", "test_gap10", "test_gap20", "test_gap50", "test_gap100"]
    assert {r.d_model for r in plan("generalization", "paper")} == {256, 384}
    assert {r.lr for r in plan("generalization", "paper")} == {5e-4, 1e-3}
    assert all(r.model["d_state"] == 64 for r in plan("distractor", "paper"))
    # gated_deltaproduct trains with the paper's 4 Householder reflections per token, the others
    # leave the field at its default; the value reaches the model's config
    runs = plan("gapped", "paper")
    assert {r.model.get("num_householder") for r in runs if r.mixer == "gated_deltaproduct"} == {4}
    assert all("num_householder" not in r.model for r in runs if r.mixer != "gated_deltaproduct")
    gdp = next(r for r in runs if r.mixer == "gated_deltaproduct")
    args = TrainArgs(**run_spec("gapped", s, gdp, tmp_path, cpu=False)["train"])
    task = SimpleNamespace(params=SimpleNamespace(vocab_size=41, noise=0.0), grammar=SimpleNamespace(states=["a", "b"]))
    assert args.num_householder == 4 and model_config(args, task).num_householder == 4
    # the paper runs its delta rules in bfloat16 and its transformer with rotary base 1000, the rest as set
    assert {r.mixer for r in runs if r.model.get("mixed_precision") == "bf16"} == {
        "deltanet", "gated_deltanet", "gated_deltaproduct"}
    assert args.mixed_precision == "bf16" and args.rope_theta == 10000.0
    assert model_config(args, task).linear_init == "torch"


@pytest.mark.parametrize("task", ["complexity", "generalization"])
def test_small_scale_plans_the_runs_of_the_committed_results(task):
    """`--scale small` kept its semantics: the committed results are exactly its plan (nothing to rerun)."""
    done = {r["run"] for r in rows_of(RESULTS / f"{task}_small")}
    assert done == {r.key for r in plan(task, "small")}
    check_outputs(RESULTS / f"{task}_small", str(RESULTS))  # its tables and plots are on record: a rerun may replace them


def test_dry_run_prints_runs_and_gpu_hours_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["reproduce", "--task", "generalization", "--scale", "paper", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    e = estimate("generalization", "paper")
    assert f"{len(plan('generalization', 'paper'))} runs (0 done, 224 to run)" in text
    assert f"about {e['gpu_hours']:,.1f} GPU-hours" in text and "assumption: 6 x parameters" in text
    assert not out.exists()
    # the estimate counts parameters on the meta device: equal to the real model's count, every mixer
    p = task_params("gapped", ambiguities=3, ambiguity_depth=3, vocab_size=6)
    for mixer, householder in [(m, 2) for m in MIXERS] + [("gated_deltaproduct", 4)]:
        real = SelectivBenchForTokenClassification(SelectivBenchConfig(
            mixer=mixer, vocab_size=6, num_labels=2 + 9 + 1, d_model=16, n_layers=2, n_heads=4, d_state=8,
            num_householder=householder))
        assert parameter_count(mixer, p, 16, 2, 4, 8, num_householder=householder) == \
            sum(x.numel() for x in real.parameters()), mixer


def test_reproduce_refuses_bad_arguments_before_any_work(tmp_path, capsys, monkeypatch):
    out = tmp_path / "results"
    assert main(["reproduce", "--task", "gapped", "--mixers", "gla", "lstm", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("selectivbench: error: mixers=['gla', 'lstm'] is invalid: allowed one or more of")
    assert str(MIXERS) in err and err.count("\n") == 1
    assert not out.exists()
    with pytest.raises(ParameterError, match="task='copying' is invalid"):
        reproduce("copying", "small", out=str(out))
    with pytest.raises(ParameterError, match="scale='huge' is invalid"):
        reproduce("gapped", "huge", out=str(out))
    with pytest.raises(ParameterError, match="gpus_per_run=-1 is invalid"):
        reproduce("gapped", "smoke", out=str(out), launcher="ray", gpus_per_run=-1)
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    with pytest.raises(ParameterError, match=r"launcher='ray' is invalid: .*\[cluster\]"):
        reproduce("gapped", "smoke", out=str(out), launcher="ray")
    assert not out.exists()


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    return reproduce("complexity", "smoke", out=str(tmp_path_factory.mktemp("local")))


def test_smoke_sweep_selects_on_validation_and_reports_mean_and_std(local_sweep):
    folder = local_sweep.folder
    rows = rows_of(folder)
    assert local_sweep.planned == len(local_sweep.ran) == SMOKE_KEYS and not local_sweep.failed
    assert sorted((r["run"], r["split"]) for r in rows) == sorted(
        (k, split) for k in local_sweep.ran for split in ("validation", "test"))
    # selection, recomputed here: per cell the candidate with the best validation accuracy
    by_cell = {}
    for r in rows:
        if r["split"] == "validation":
            by_cell.setdefault(r["cell"], []).append(r)
    assert len(by_cell) == SMOKE_KEYS // 2  # two learning rates per cell
    chosen = {cell: max(c, key=lambda r: r["element_accuracy"])["run"] for cell, c in by_cell.items()}
    lines = (folder / "selection.csv").read_text().splitlines()[1:]
    assert {line.split(",")[0]: line.split(",")[1] for line in lines} == chosen
    # one table cell: mean ± std (ddof 1) over the two seeds of the chosen runs' test accuracy
    tests = [r for r in rows if r["split"] == "test" and r["run"] in chosen.values()
             and r["d_model"] == 8 and r["axis"] == 2]
    acc = [r["element_accuracy"] for r in tests]
    assert len(acc) == 2
    summary = (folder / "summary.md").read_text()
    assert f"| `gla` | {np.mean(acc):.3f} ± {np.std(acc, ddof=1):.3f} |" in summary
    assert "*Bayes ceiling*" in summary and "by d_model" in summary
    for name in ("accuracy_vs_ambiguities.png", "accuracy_vs_parameters.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_interrupted_local_sweep_redoes_only_the_lost_run(local_sweep, tmp_path):
    folder = tmp_path / local_sweep.folder.name
    shutil.copytree(local_sweep.folder, folder)
    lines = (folder / "results.jsonl").read_text().splitlines(keepends=True)
    lost = json.loads(lines[-1])["run"]
    kept = [line for line in lines if json.loads(line)["run"] != lost]
    # the writer was killed in the middle of the lost run's rows: half a line at the end
    (folder / "results.jsonl").write_text("".join(kept) + lines[-1][: len(lines[-1]) // 2])
    again = reproduce("complexity", "smoke", out=str(tmp_path))
    assert again.ran == [lost] and not again.failed
    before = {(r["run"], r["split"]): r["element_accuracy"] for r in rows_of(local_sweep.folder)}
    after = {(r["run"], r["split"]): r["element_accuracy"] for r in rows_of(folder)}
    assert after == pytest.approx(before)


def test_a_sweep_replaces_only_the_outputs_it_wrote(local_sweep, tmp_path, capsys):
    """outputs.json holds the sha256 of every table, summary and plot the sweep wrote; a rerun
    replaces those, and refuses, before any work and changing nothing, a folder with a user's
    results.csv / summary.md or an output edited since."""
    import hashlib

    folder = tmp_path / "ours" / local_sweep.folder.name
    shutil.copytree(local_sweep.folder, folder)
    record = json.loads((folder / "outputs.json").read_text())
    outputs = sorted(p.name for p in folder.iterdir() if is_output(p.name))
    assert record["written_by"] == "selectivbench reproduce" and sorted(record["files"]) == outputs
    assert all(record["files"][n] == [hashlib.sha256((folder / n).read_bytes()).hexdigest()] for n in outputs)
    (folder / "my_notes.png").write_bytes(b"a user's figure, under a name no output takes")
    assert reproduce("complexity", "smoke", out=str(folder.parent)).ran == []  # its own files: replaced
    assert (folder / "my_notes.png").read_bytes() == b"a user's figure, under a name no output takes"
    # without the record, outputs are nobody's to replace (a results.jsonl beside them proves nothing)
    unrecorded = tmp_path / "unrecorded" / local_sweep.folder.name
    shutil.copytree(local_sweep.folder, unrecorded)
    (unrecorded / "outputs.json").unlink()
    kept = {p.name: p.read_bytes() for p in unrecorded.iterdir() if p.is_file()}
    with pytest.raises(ParameterError, match="was not written by it"):
        reproduce("complexity", "smoke", out=str(unrecorded.parent))
    assert {p.name: p.read_bytes() for p in unrecorded.iterdir() if p.is_file()} == kept

    def snapshot(root):
        return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}

    (folder / "summary.md").write_text((folder / "summary.md").read_text() + "my note\n")
    users = tmp_path / "users" / "complexity_smoke"
    users.mkdir(parents=True)
    (users / "results.csv").write_text("my,own,table\n")
    (users / "summary.md").write_text("# my notes\n")
    for out, name in ((folder.parent, "summary.md"), (users.parent, "results.csv")):
        before = snapshot(out)
        capsys.readouterr()  # not the progress bar of the rerun above
        assert main(["reproduce", "--task", "complexity", "--scale", "smoke", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"{out / 'complexity_smoke' / name} was not written by it" in err and err.count("\n") == 1
        assert snapshot(out) == before


def test_a_run_with_only_some_of_its_rows_is_redone_whole(local_sweep, tmp_path, capsys):
    """A write cut short (a full disk) can leave a run's validation row without its test row: the run
    is not done, its rows go and it is trained again; the dry run counts it among the runs to do."""
    folder = tmp_path / local_sweep.folder.name
    shutil.copytree(local_sweep.folder, folder)
    rows = rows_of(folder)
    cut = rows[-1]["run"]
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows
                                                  if not (r["run"] == cut and r["split"] == "test")))
    assert estimate("complexity", "smoke", out=str(tmp_path))["todo"] == 1
    assert reproduce("complexity", "smoke", out=str(tmp_path)).ran == [cut]
    after = rows_of(folder)
    assert sorted((r["run"], r["split"]) for r in after) == sorted((r["run"], r["split"]) for r in rows)
    assert "Incomplete" not in (folder / "summary.md").read_text()


def test_one_driver_per_sweep_folder(tmp_path, capsys):
    folder = tmp_path / "gapped_smoke"
    folder.mkdir()
    with sweep_lock(folder, str(tmp_path)):  # another driver is running here
        assert main(["reproduce", "--task", "gapped", "--scale", "smoke", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"is invalid: allowed a sweep folder no other `selectivbench reproduce` is running in ({folder} is " \
           "in use" in err and err.count("\n") == 1
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_FILE]  # nothing run, nothing written


def test_ray_requests_and_addresses_that_could_never_run_are_refused(capsys):
    def fake_ray(*nodes):
        return SimpleNamespace(nodes=lambda: [{"Alive": True, "Resources": n} for n in nodes])

    two = fake_ray({"CPU": 2.0}, {"CPU": 8.0, "GPU": 1.0})
    check_ray_resources(two, gpus_per_run=1, cpus_per_run=8, fixed=True)  # the second node fits
    with pytest.raises(ParameterError, match=r"gpus_per_run=2 is invalid: allowed at most what one Ray node has "
                                             r"\(2 CPUs and 0 GPUs, 8 CPUs and 1 GPUs\)"):
        check_ray_resources(two, gpus_per_run=2, cpus_per_run=1, fixed=True)
    with pytest.raises(ParameterError, match=r"cpus_per_run=16 is invalid"):
        check_ray_resources(two, gpus_per_run=0, cpus_per_run=16, fixed=True)
    check_ray_resources(two, gpus_per_run=4, cpus_per_run=1, fixed=False)  # a cluster may grow: a warning
    assert "no Ray node has 4 GPUs and 1 CPUs for a run now" in capsys.readouterr().out
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for address in (f"127.0.0.1:{port}", "no-port-here"):
        with pytest.raises(ParameterError, match=f"address='{address}' is invalid: allowed 'auto', 'ray://HOST:PORT'"):
            check_ray_address(address)


def _row(mixer, d_model, seed, split, acc, lr=1e-3, validation=None):
    run = f"{mixer}-d{d_model}-lr{lr:g}-seed{seed}"
    return {"run": run, "cell": f"{mixer}-d{d_model}-seed{seed}", "sweep": "mixers", "axis": None,
            "mixer": mixer, "d_model": d_model, "train_seed": seed, "lr": lr, "warmup": 10, "split": split,
            "element_accuracy": acc if validation is None else validation, "bayes_element_accuracy": 0.99}


def test_tables_keep_widths_apart_show_missing_seeds_and_break_ties_by_the_plan(tmp_path):
    # generalization at two widths: a cell is one width's seeds, never both widths pooled
    rows = [_row("gla", w, seed, "test_gap20", acc) for w, accs in ((256, (0.9, 0.8)), (384, (0.5, 0.4)))
            for seed, acc in zip((1, 2), accs)]
    rows = [r for r in rows if not (r["d_model"] == 384 and r["train_seed"] == 2)]  # one run missing
    text = summary_markdown("generalization", rows, missing=1)
    assert "| `gla` | 0.850 ± 0.071 |" in text and "| `gla` | 0.500 (n=1) |" in text
    assert "**Incomplete:** 1 planned run(s) have no results" in text
    assert [v[0] for v in views("generalization", rows)] == ["accuracy_vs_test_gap_d256",
                                                                  "accuracy_vs_test_gap_d384"]
    # two lr with the same validation accuracy: the plan's first (the smaller lr), in any file order
    tie = [_row("gla", 8, 1, "validation", 0, lr, validation=1.0) for lr in (1e-3, 2e-3)] + \
          [_row("gla", 8, 1, "test", acc, lr) for lr, acc in ((1e-3, 0.80), (2e-3, 0.95))]
    for order in (tie, tie[::-1]):
        chosen, _ = select_on_validation(order)
        assert [(r["lr"], r["element_accuracy"]) for r in chosen] == [(1e-3, 0.80)]


def test_outputs_a_view_no_longer_makes_are_removed(tmp_path):
    folder = tmp_path / "generalization_smoke"
    folder.mkdir()
    one = [_row("gla", 256, seed, "test_gap20", 0.9) for seed in (1, 2)]
    two = one + [_row("gla", 384, seed, "test_gap20", 0.5) for seed in (1, 2)]
    write_outputs("generalization", folder, one)
    assert (folder / "accuracy_vs_test_gap.png").exists()
    write_outputs("generalization", folder, two)
    plots = sorted(p.name for p in folder.glob("*.png"))
    assert plots == ["accuracy_vs_test_gap_d256.png", "accuracy_vs_test_gap_d384.png"]
    assert sorted(json.loads((folder / "outputs.json").read_text())["files"]) == sorted(
        plots + ["results.csv", "summary.md"])
    write_outputs("generalization", folder, two)  # and the next call accepts the folder


def test_a_folder_that_cannot_be_locked_runs_with_a_warning(tmp_path, monkeypatch, capsys):
    import errno
    import fcntl

    def no_locks(handle, how):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with sweep_lock(tmp_path, str(tmp_path)):
        pass
    assert f"warning: {tmp_path} cannot be locked (No locks available)" in capsys.readouterr().err


def test_a_failed_run_is_recorded_and_retried_on_the_next_call(tmp_path, monkeypatch, capsys):
    real_execute = execute
    victim = plan("generalization", "smoke")[1].key

    def flaky(spec):
        if spec["key"] == victim:
            raise RuntimeError("CUDA out of memory\non this device")
        return real_execute(spec)

    monkeypatch.setattr(sweeps_driver, "execute", flaky)
    assert main(["reproduce", "--task", "generalization", "--scale", "smoke", "--out", str(tmp_path)]) == 2
    assert "error: SweepIncomplete: 1 run(s) failed" in capsys.readouterr().err
    folder = tmp_path / "generalization_smoke"
    failure, = read_rows(folder / "failures.jsonl")
    assert failure["run"] == victim and failure["error"] == "RuntimeError: CUDA out of memory on this device"
    assert victim not in {r["run"] for r in rows_of(folder)}
    monkeypatch.setattr(sweeps_driver, "execute", real_execute)
    again = reproduce("generalization", "smoke", out=str(tmp_path))
    assert again.ran == [victim] and not again.failed
    rows = rows_of(folder)
    assert sorted({r["split"] for r in rows}) == ["test", "test_gap20", "validation"]
    assert len(rows) == 3 * len(plan("generalization", "smoke"))
    assert (folder / "accuracy_vs_test_gap.png").exists()


def test_ray_launcher_gives_the_rows_of_the_local_launcher(local_sweep, tmp_path):
    outcome = reproduce("complexity", "smoke", out=str(tmp_path), launcher="ray", ray_init=RAY_INIT)
    assert sorted(outcome.ran) == sorted(local_sweep.ran) and not outcome.failed
    local = {(r["run"], r["split"]): r for r in rows_of(local_sweep.folder)}
    remote = {(r["run"], r["split"]): r for r in rows_of(outcome.folder)}
    assert local.keys() == remote.keys()
    for key, r in remote.items():
        assert set(r) == set(local[key])
        for metric in ("element_accuracy", "step_accuracy", "bayes_element_accuracy", "parameters"):
            assert r[metric] == pytest.approx(local[key][metric], abs=1e-6)


def test_a_killed_ray_driver_is_resumed_with_only_the_missing_runs(tmp_path):
    table = tmp_path / "gapped_smoke" / "results.jsonl"  # 4 runs: the shortest smoke sweep
    planned = {r.key for r in plan("gapped", "smoke")}
    driver = subprocess.Popen(
        [sys.executable, "-c", "import sys; from selectivbench.sweeps.driver import reproduce; "
         f"reproduce('gapped', 'smoke', out=sys.argv[1], launcher='ray', ray_init={RAY_INIT!r})",
         str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(1200):  # wait (at most 4 minutes) for the first recorded run, then kill
            if (table.exists() and table.read_text().count("\n")) or driver.poll() is not None:
                break
            time.sleep(0.2)
    finally:
        driver.send_signal(signal.SIGTERM)  # killed midway; Ray's handler takes its local Ray down too
        driver.wait(60)
    first = {r["run"] for r in read_rows(table)}
    assert 0 < len(first) < len(planned)
    again = reproduce("gapped", "smoke", out=str(tmp_path), launcher="ray", ray_init=RAY_INIT)
    assert not again.failed and sorted(again.ran) == sorted(planned - first)
    rows = read_rows(table)
    assert len(rows) == len({(r["run"], r["split"]) for r in rows}) == 2 * len(planned)


def test_a_run_folder_holding_a_users_file_is_refused_before_any_run(tmp_path, monkeypatch, capsys):
    """runs/<key>/ with a file of the user's: one error before anything trains (it used to be a
    failure recorded after every other run had trained); the file stays."""
    victim = plan("gapped", "smoke")[-1].key
    mine = tmp_path / "gapped_smoke" / "runs" / victim / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("mine")
    monkeypatch.setattr(sweeps_driver, "execute", lambda spec: pytest.fail("a run was trained"))
    assert main(["reproduce", "--task", "gapped", "--scale", "smoke", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"output_dir='{mine.parent}' is invalid" in err and err.count("\n") == 1
    assert mine.read_text() == "mine" and sorted(p.name for p in mine.parent.iterdir()) == ["notes.txt"]
