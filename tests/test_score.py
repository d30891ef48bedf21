"""score: the scorecard protocol end to end at smoke size (every field against its own recomputation,
the choice on validation, resume after a kill, a diverged run recorded as failed), the rank and plot
among reference cards, the leaderboard, and bad input refused before any work."""
import dataclasses
import hashlib
import json
import re
import runpy
import shlex
import shutil
import statistics
from pathlib import Path

from importlib.metadata import version

import numpy as np
import pytest

from selectivbench.builders.config import TASKS
from selectivbench.builders import ParameterError
from selectivbench.check_mixer import check_mixer
from selectivbench.cli import main
from selectivbench.data.task import load_task
from selectivbench.evaluation.metrics import element_accuracy
from selectivbench.models import MIXERS, taxonomy_rows
from selectivbench.sweeps import score as sc
from selectivbench.sweeps.leaderboard import findings, leaderboard_markdown
from selectivbench.sweeps.outputs import read_rows
from selectivbench.sweeps.plan import plan, run_spec
from selectivbench.sweeps.report import select_on_validation
from selectivbench.sweeps.score_folders import SCORECARD_FILES, leaderboard_files
from selectivbench.sweeps.score_presets import LITE_GAP, PRESETS, resolve
from selectivbench.sweeps.scorecard import chance_accuracy, place, taxonomy_of

SMOKE = PRESETS["smoke"]
RUNS_PER_TASK = 4  # 2 seeds x 2 learning rates


def rows_of(folder: Path, task: str) -> list[dict]:
    return read_rows(folder / task / "results.jsonl")


def task_data(preset, task: str) -> dict:
    s = preset.scale_of(task)
    return {**s.data, **plan(task, s, ["gla"])[0].overrides}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    out = tmp_path_factory.mktemp("score") / "gla"
    outcome = sc.score("gla", "smoke", out=str(out))
    return outcome, out, json.loads((out / "scorecard.json").read_text())


def assert_tasks_and_score_recomputed(card: dict, out: Path) -> None:
    """Every task's entry and the score against the run rows: the choice on validation, the test accuracy
    of the chosen runs, the normalization, the per-seed scores; and the measured throughput."""
    assert list(card["tasks"]) == ["complexity", "gapped", "distractor", "generalization"]
    per_seed_scores = {0: [], 1: []}
    for task, t in card["tasks"].items():
        rows = rows_of(out, task)
        split = "test_gap6" if task == "generalization" else "test"
        assert t["split"] == split and t["runs"] == t["runs_done"] == RUNS_PER_TASK and t["failed_runs"] == []
        tests = {r["run"]: r for r in rows if r["split"] == split}
        chosen = [tests[run] for run in (max((r for r in rows if r["split"] == "validation" and r["train_seed"] == s),
                                             key=lambda r: (r["element_accuracy"], -r["lr"]))["run"] for s in (0, 1))]
        acc = [r["element_accuracy"] for r in chosen]
        assert t["accuracy"] == pytest.approx(np.mean(acc)) and t["accuracy_std"] == pytest.approx(np.std(acc, ddof=1))
        assert t["bayes_ceiling"] == pytest.approx(chosen[0]["bayes_element_accuracy"])
        assert t["normalized"] == pytest.approx((t["accuracy"] - t["chance"]) / (t["bayes_ceiling"] - t["chance"]))
        assert t["parameters"] == chosen[0]["parameters"]
        for s, a in zip((0, 1), acc):
            per_seed_scores[s].append((a - t["chance"]) / (t["bayes_ceiling"] - t["chance"]))
    assert card["score"] == pytest.approx(np.mean([t["normalized"] for t in card["tasks"].values()]))
    seed_scores = [np.mean(v) for v in per_seed_scores.values()]
    assert card["score_per_seed"] == {"0": pytest.approx(seed_scores[0]), "1": pytest.approx(seed_scores[1])}
    assert card["score_std"] == pytest.approx(np.std(seed_scores, ddof=1))
    assert card["parameters"] == card["tasks"]["complexity"]["parameters"]
    runs = [r for task in TASKS for r in rows_of(out, task) if r["split"] == "test"]
    assert all(r["train_seconds"] > 0 for r in runs)
    assert card["train_tokens_per_s"] == pytest.approx(sum(r["train_tokens"] for r in runs)
                                                       / sum(r["train_seconds"] for r in runs))
    assert runs[0]["train_tokens"] == pytest.approx(2 * 16 * np.mean([len(x) for x in load_task(
        "complexity", None, **task_data(SMOKE, "complexity")).data["train"]["input_ids"]]))
    assert card["run_seconds"] == pytest.approx(sum(r["run_seconds"] for r in runs))


def test_smoke_score_runs_the_protocol_and_writes_every_field(scored):
    outcome, out, card = scored
    assert outcome.planned == len(outcome.ran) == 4 * RUNS_PER_TASK and not outcome.failed
    assert (card["mixer"], card["mixer_plugin"], card["preset"], card["seeds"]) == ("gla", None, "smoke", [0, 1])
    assert card["command"] == f"selectivbench score --mixer gla --preset smoke --out {out}"
    assert card["version"] == version("selectivbench")
    assert_tasks_and_score_recomputed(card, out)
    assert card["complete"] and card["failed_runs"] == 0 and card["rank"] is None
    # efficiency: the model's parameters, its carried state at T = 1,024 by the taxonomy's formula
    # (gla: heads x d_head x expand_v d_head, plus the short convs' window of q, k and v), and the
    # throughput measured in the runs (every run trained in one go here: checked above)
    heads, d_head, expand_v, conv = 2, 8 // 2, 2, 4
    floats = heads * d_head * expand_v * d_head + (conv - 1) * (8 + 8 + expand_v * 8)
    assert card["state_bytes"] == floats * 4 and card["state_T"] == 1024
    assert card["taxonomy"] == {k: v for k, v in next(t for t in taxonomy_rows() if t["mixer"] == "gla").items()
                                if k != "mixer"}
    md = (out / "scorecard.md").read_text()
    assert f"**Score {card['score']:.3f} ± {card['score_std']:.3f}**" in md and "no rank" in md
    assert f"| complexity | test | {card['tasks']['complexity']['accuracy']:.3f} ± " in md
    assert (out / "scorecard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((out / "outputs.json").read_text())
    assert record["written_by"] == "selectivbench score" and sorted(record["files"]) == sorted(SCORECARD_FILES)


EXAMPLE = Path(__file__).parents[1] / "examples" / "rglru_mixer.py"


@pytest.fixture(scope="module")
def plugin_scored(tmp_path_factory):
    """The example RG-LRU copied to a temporary folder (not under models/), scored at smoke size from
    the command line, placed among a tiny reference leaderboard (one built-in above it, one below)."""
    root = tmp_path_factory.mktemp("plugin")
    path = root / "mine" / "my_rglru.py"
    path.parent.mkdir()
    shutil.copy(EXAMPLE, path)
    refs = root / "refs.json"
    refs.write_text(json.dumps([{"mixer": "gla", "score": 10.0, "state_bytes": 640},
                                {"mixer": "s4d", "score": -10.0, "state_bytes": 256}]))
    argv = ["score", "--mixer", f"{path}:RGLRUMixer", "--preset", "smoke", "--out", str(root / "card"),
            "--references", str(refs)]
    assert main(argv) == 0
    return path, refs, argv, root / "card", json.loads((root / "card" / "scorecard.json").read_text())


def test_smoke_score_of_a_plugin_in_a_file_writes_every_field(plugin_scored, capsys):
    from selectivbench.models import SelectivBenchForTokenClassification, resolve_mixer

    path, refs, argv, out, card = plugin_scored
    record = resolve_mixer(f"{path}:RGLRUMixer").plugin
    assert record["origin"] == f"file:{path}:RGLRUMixer"
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (card["mixer"], card["mixer_plugin"], card["preset"], card["seeds"]) == ("rglru", record, "smoke", [0, 1])
    assert json.loads((out / "score_run.json").read_text())["mixer_plugin"] == record  # as the config records it
    assert card["command"] == "selectivbench " + shlex.join(argv) and card["version"] == version("selectivbench")
    for task in TASKS:  # the runs are the plugin's, under its name
        assert {r["mixer"] for r in rows_of(out, task)} == {"rglru"}
        assert all(r["run"].startswith("rglru-d8-") for r in rows_of(out, task))
    assert_tasks_and_score_recomputed(card, out)
    assert card["complete"] and card["failed_runs"] == 0
    # parameters: those of a checkpoint the runs saved, loaded here (the plugin resolved in this process)
    run = plan("complexity", SMOKE.scale_of("complexity"), [f"{path}:RGLRUMixer"])[0].key
    model = SelectivBenchForTokenClassification.from_pretrained(out / "complexity" / "runs" / run / "model")
    assert card["parameters"] == sum(p.numel() for p in model.parameters())
    # RG-LRU carries one float32 per channel and layer, whatever T: 1 layer x d_model 8 x 4 bytes
    assert (card["state_bytes"], card["state_T"]) == (1 * 8 * 4, 1024)
    assert card["taxonomy"] == runpy.run_path(str(path))["TAXONOMY"]
    assert card["rank"] == {"rank": 2, "of": 3, "references": str(refs)}  # below gla (10), above s4d (-10)
    md = (out / "scorecard.md").read_text()
    assert "rank **2 of 3**" in md and f"from `file:{path}:RGLRUMixer`" in md
    assert "| data-dependent diagonal (a^(8 r_t)) |" in md


PEEKING = """
import torch.nn as nn
from selectivbench.models import DiagonalState, Mixer


class PeekMixer(Mixer):  # every output reads the mean of the whole sequence, later inputs included
    def __init__(self, config):
        super().__init__()
        self.proj = nn.Linear(config.d_model, config.d_model)

    def forward(self, x, state=None):
        y = self.proj(x.mean(1, keepdim=True)).expand_as(x)
        return y, DiagonalState(y[:, -1])
"""


def test_a_score_folder_belongs_to_one_plugin_source(plugin_scored, tmp_path, capsys, monkeypatch):
    """The same plugin name from another file, or the file edited since: refused, the folder left alone."""
    path, _, _, out, _ = plugin_scored
    monkeypatch.setattr(sc, "execute_scored", lambda spec: pytest.fail("a run was trained"))
    folder = tmp_path / "card"
    shutil.copytree(out, folder)
    elsewhere = tmp_path / "elsewhere" / "my_rglru.py"
    elsewhere.parent.mkdir()
    shutil.copy(path, elsewhere)
    edited = tmp_path / "edited.py"
    edited.write_text(path.read_text().replace("uniform_(self.a_logit, 2.0, 6.0)", "uniform_(self.a_logit, 1.0, 6.0)"))
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    for spec in (f"{elsewhere}:RGLRUMixer", f"{edited}:RGLRUMixer"):
        assert main(["score", "--mixer", spec, "--preset", "smoke", "--out", str(folder)]) == 2
        err = capsys.readouterr().err
        assert f"from the same source (its runs are of file:{path}:RGLRUMixer with source sha256 " in err, err
        assert err.count("\n") == 1
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_a_plugin_registered_in_python_runs_in_this_process_only(tmp_path):
    from selectivbench.models import register_mixer

    path = tmp_path / "peek.py"
    path.write_text(PEEKING)
    register_mixer("registered_peek", resolve(f"{path}:PeekMixer").cls)
    for extra in (dict(workers=2), dict(launcher="ray")):
        with pytest.raises(ParameterError, match=r"mixer='registered_peek' is invalid: allowed with --workers 1 "
                                                 r"and --launcher local only"):
            sc.score("registered_peek", "smoke", out=str(tmp_path / "out"), **extra)
    assert not (tmp_path / "out").exists()


def test_a_non_causal_plugin_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    path = tmp_path / "peek.py"
    path.write_text(PEEKING)
    monkeypatch.setattr(sc, "execute_scored", lambda spec: pytest.fail("a run was trained"))
    out = tmp_path / "out"
    assert main(["score", "--mixer", f"{path}:PeekMixer", "--preset", "smoke", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"selectivbench: error: mixer='{path}:PeekMixer' is invalid: allowed a causal mixer; "
                          "check-mixer's causal check fails: max |change| at t <= 23 when inputs after it change: ")
    causal = check_mixer(f"{path}:PeekMixer")[0]  # the whole contract, as `check-mixer` runs it
    assert causal.name == "causal" and causal.passed is False and f"fails: {causal.figure} (" in err
    assert err.count("\n") == 1 and not out.exists()  # no score folder, no run folder


def test_a_plugin_taxonomy_row_only_when_it_declares_one(tmp_path):
    path = tmp_path / "peek.py"
    path.write_text(PEEKING)
    assert taxonomy_of(resolve(f"{path}:PeekMixer")) is None
    path.write_text(PEEKING + "\nTAXONOMY = dict(transition='none', softmax='no')\n")
    assert taxonomy_of(resolve(f"{path}:PeekMixer")) == {
        "transition": "none", "input_gating": "not given", "channel_mixing": "not given", "softmax": "no",
        "state": "not given"}


def test_the_learning_rate_is_chosen_on_validation_per_task_and_seed(scored):
    _, out, card = scored
    for task, t in card["tasks"].items():
        rows = rows_of(out, task)
        chosen, _ = select_on_validation(rows)
        for seed in (0, 1):
            validation = {r["lr"]: r["element_accuracy"] for r in rows
                          if r["split"] == "validation" and r["train_seed"] == seed}
            assert len(validation) == 2
            best = max(sorted(validation), key=lambda lr: validation[lr])  # ties: the smaller lr
            assert t["lr_chosen_per_seed"][str(seed)] == best
            test = next(r for r in rows if r["split"] == t["split"] and r["train_seed"] == seed and r["lr"] == best)
            assert t["accuracy_per_seed"][str(seed)] == test["element_accuracy"]


def test_chance_is_the_best_constant_prediction_through_the_metric(scored):
    """chance_accuracy (from Arrow columns) against the project's metric fed constant predictions."""
    for task in TASKS:
        split = SMOKE.split_of(task)
        data = load_task(task, None, splits=[split], with_train=False, **task_data(SMOKE, task)).data[split]
        labels = [np.asarray(x) for x in data["labels"]]
        index = [np.asarray(x) for x in data["element_index"]]
        classes = max(int(x.max()) for x in labels) + 1
        best = 0.0
        for state in range(classes):  # every constant prediction, scored by the metric
            acc = [element_accuracy(np.eye(classes)[np.full(len(y), state)][None], y[None], i[None], "probs")
                   for y, i in zip(labels, index)]
            best = max(best, sum(a["element_correct"] for a in acc) / sum(a["elements"] for a in acc))
        assert chance_accuracy(data) == pytest.approx(best)


def test_rank_and_plot_among_reference_cards(scored, tmp_path, capsys):
    _, out, card = scored
    folder = tmp_path / "gla"
    shutil.copytree(out, folder)
    s = card["score"]
    refs = [{"mixer": "better", "score": s + 0.1, "state_bytes": 100}, {"mixer": "worse", "score": s - 0.1,
            "state_bytes": 10**6}, {"mixer": "also_better", "score": s + 0.01, "state_bytes": 50},
            {"mixer": "gla", "score": s + 1, "state_bytes": 640}]  # the same mixer: replaced by this card
    (tmp_path / "refs.json").write_text(json.dumps(refs))
    assert main(["score", "--mixer", "gla", "--preset", "smoke", "--out", str(folder),
                 "--references", str(tmp_path / "refs.json")]) == 0
    printed = capsys.readouterr().out
    assert "gla: score" in printed and "(rank 3 of 4)" in printed and "0 run now" in printed
    again = json.loads((folder / "scorecard.json").read_text())
    assert again["rank"] == {"rank": 3, "of": 4, "references": str(tmp_path / "refs.json")}
    assert again["tasks"] == card["tasks"] and again["score"] == card["score"]
    assert "rank **3 of 4**" in (folder / "scorecard.md").read_text()
    assert (folder / "scorecard.png").read_bytes() != (out / "scorecard.png").read_bytes()


def test_a_killed_score_continues_with_the_missing_runs(scored, tmp_path, monkeypatch):
    """Three runs lost (one killed while its rows were written: half a line; the first after its last
    checkpoint, so it resumes and its time is no throughput); the rerun is killed again after one run;
    the next one trains only the last two and ends on the same scorecard."""
    _, out, card = scored
    folder = tmp_path / "gla"
    shutil.copytree(out, folder)
    table = folder / "gapped" / "results.jsonl"
    lines = table.read_text().splitlines(keepends=True)
    lost = list(dict.fromkeys(json.loads(line)["run"] for line in lines))[-3:]
    for key in lost[1:]:
        shutil.rmtree(folder / "gapped" / "runs" / key)
    kept = [line for line in lines if json.loads(line)["run"] not in lost]
    table.write_text("".join(kept) + lines[-1][: len(lines[-1]) // 2])
    real, trained = sc.execute_scored, []

    def killed_after_one(spec):
        if trained:
            raise KeyboardInterrupt
        trained.append(spec["key"])
        return real(spec)

    monkeypatch.setattr(sc, "execute_scored", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        sc.score("gla", "smoke", out=str(folder))
    assert trained == lost[:1] and {r["run"] for r in read_rows(table)} >= {lost[0]}
    monkeypatch.setattr(sc, "execute_scored", real)
    again = sc.score("gla", "smoke", out=str(folder))
    assert sorted(again.ran) == sorted(lost[1:]) and not again.failed
    times = {r["run"]: r["train_seconds"] for r in read_rows(table) if r["split"] == "test"}
    assert times[lost[0]] is None and all(times[key] > 0 for key in lost[1:])
    measured = [r for task in TASKS for r in rows_of(folder, task) if r["split"] == "test" and r["train_seconds"]]
    final = json.loads((folder / "scorecard.json").read_text())
    assert final["train_tokens_per_s"] == pytest.approx(sum(r["train_tokens"] for r in measured)
                                                        / sum(r["train_seconds"] for r in measured))
    for task in TASKS:
        for key in ("accuracy", "accuracy_std", "normalized", "lr_chosen_per_seed", "parameters"):
            assert final["tasks"][task][key] == pytest.approx(card["tasks"][task][key], abs=1e-9)
    assert final["score"] == pytest.approx(card["score"], abs=1e-9)


def test_a_diverged_run_is_recorded_as_failed_and_not_averaged_in(tmp_path, monkeypatch, capsys):
    """lr 1e30 blows the weights up on its first step with a rate (warm-up: 1 step): NaN losses. The
    NaN model scores better on validation than the healthy run (0.25 against 0.104 here), so without
    the check it would be chosen; it is a failure, and the other lr is kept."""
    nan = dataclasses.replace(SMOKE, name="nan", scale=dataclasses.replace(SMOKE.scale, seeds=(0,), lrs=(3e-3, 1e30)))
    monkeypatch.setitem(PRESETS, "nan", nan)
    folder = tmp_path / "gla"
    assert main(["score", "--mixer", "gla", "--preset", "nan", "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "error: SweepIncomplete: 4 run(s) failed" in err and err.count("selectivbench: error:") == 1
    card = json.loads((folder / "scorecard.json").read_text())
    assert not card["complete"] and card["failed_runs"] == 4
    for task, t in card["tasks"].items():
        failed, = t["failed_runs"]
        assert "lr1e+30" in failed["run"] and failed["error"].startswith("Diverged: ")
        log = [json.loads(line) for line in (folder / task / "runs" / failed["run"] / "metrics.jsonl").open()]
        assert any(not np.isfinite(r.get("eval_loss", 0.0)) or not np.isfinite(r["loss"]) for r in log)
        rows = rows_of(folder, task)
        assert {r["lr"] for r in rows} == {3e-3}  # the diverged run has no row
        assert t["lr_chosen_per_seed"] == {"0": 3e-3} and t["seeds"] == 1 and t["runs_done"] == 1
        assert t["accuracy"] == next(r["element_accuracy"] for r in rows if r["split"] == t["split"])
    assert "**Incomplete:** 4 run(s) failed" in (folder / "scorecard.md").read_text()
    assert "Diverged: " in (folder / "scorecard.md").read_text()


def test_the_leaderboard_ranks_the_cards_and_reports_the_protocol_figures(scored, tmp_path, monkeypatch):
    """--all: each mixer's folder under score_<preset>/, the leaderboard files in --out (here one mixer,
    whose runs are done), then the table, figures and findings on cards of known scores."""
    _, out, card = scored
    shutil.copytree(out, tmp_path / "score_smoke" / "gla")
    monkeypatch.setattr(sc, "MIXERS", ("gla",))
    outcome = sc.score(None, "smoke", out=str(tmp_path), everything=True)
    assert outcome.ran == [] and outcome.leaderboard == tmp_path / "leaderboard_smoke.md"
    board = json.loads((tmp_path / "leaderboard_smoke.json").read_text())
    assert [c["mixer"] for c in board] == ["gla"] and board[0]["rank"]["rank"] == 1
    assert board[0]["command"] == f"selectivbench score --all --preset smoke --out {tmp_path}"
    record = json.loads((tmp_path / "outputs.json").read_text())
    assert sorted(record["files"]) == sorted(leaderboard_files("smoke"))

    taxonomy = {t["mixer"]: {k: v for k, v in t.items() if k != "mixer"} for t in taxonomy_rows()}

    def fake(mixer, scores, std):  # normalized per task -> the card's fields the leaderboard reads
        tasks = {t: {**card["tasks"][t], "normalized": v} for t, v in zip(TASKS, scores)}
        return {**card, "mixer": mixer, "tasks": tasks, "score": float(np.mean(scores)), "score_std": std,
                "taxonomy": taxonomy[mixer]}

    cards = [fake("gated_deltanet", [0.9, 0.8, 0.7, 0.3], 0.02), fake("deltanet", [0.8, 0.7, 0.6, 0.5], 0.05),
             fake("s4d", [0.3, 0.2, 0.1, 0.1], 0.01), fake("mamba", [0.7, 0.6, 0.5, 0.1], 0.03),
             fake("transformer", [0.6, 0.5, 0.4, 0.0], 0.04)]
    for c in cards:
        c["rank"] = place(c, cards, "x")
    md = leaderboard_markdown(SMOKE, cards, "cmd", "p.png")
    table = [line for line in md.splitlines() if re.match(r"\| \d+ \| `", line)]
    assert [line.split("|")[2].strip() for line in table] == ["`gated_deltanet`", "`deltanet`", "`mamba`",
                                                             "`transformer`", "`s4d`"]
    assert "| 1 | `gated_deltanet` | 0.675 ± 0.020 | 0.900 | 0.800 | 0.700 | 0.300 |" in md
    assert "0.500 from best to worst" in md and f"std {statistics.stdev(c['score'] for c in cards):.3f}" in md
    assert "largest seed std of a score (how stable it is): 0.050 (`deltanet`)" in md
    verdicts = {f.split(" (")[0]: v for f, v, _ in findings(cards)}
    # data-dependent (gated_deltanet, mamba) 0.70 vs fixed (s4d) 0.20, and the gate lifts deltanet: holds;
    # channel mixing (recurrent mixers only): task 4 0.40 - 0.10 = +0.30 against tasks 1-3 0.75 - 0.40 = +0.35:
    # not more, does not hold;
    # the best softmax mixer (transformer) is 4th: does not hold
    assert verdicts == {"Gating and fast forgetting help recall": "holds",
                        "In-state channel mixing matters for generalization, not selectivity": "does not hold",
                        "Softmax attention dominates": "does not hold"}


def test_a_pool_of_two_processes_gives_the_rows_of_the_local_launcher(scored, tmp_path):
    _, out, _ = scored
    s = SMOKE.scale_of("distractor")
    runs = plan("distractor", s, ["gla"])[:2]
    specs = [{**run_spec("distractor", s, r, tmp_path, cpu=True), "record_to": str(tmp_path)} for r in runs]
    got, errors = {}, []
    sc.launch_pool(specs, lambda spec, rows: got.update({spec["key"]: rows}),
                   lambda spec, error: errors.append(error), workers=2)
    assert not errors and sorted(got) == sorted(r.key for r in runs)
    local = {(r["run"], r["split"]): r for r in rows_of(out, "distractor")}
    for rows in got.values():
        for r in rows:
            for metric in ("element_accuracy", "step_accuracy", "loss", "parameters"):
                assert r[metric] == pytest.approx(local[(r["run"], r["split"])][metric], abs=1e-6)


@pytest.mark.parametrize("argv, message", [
    (["--mixer", "gla", "--preset", "huge"], "preset='huge' is invalid: allowed one of ('lite', 'smoke')"),
    (["--mixer", "lstm", "--preset", "smoke"], "mixer='lstm' is invalid: allowed one of ("),
    (["--mixer", "mine.py:Mixer", "--preset", "smoke"], f"mixer='mine.py:Mixer' is invalid: allowed one of {MIXERS} or "
                                                        "a plugin (PATH.py:CLASS, MODULE:CLASS, an installed or "
                                                        "registered name): no file "),
    (["--mixer", "gla", "--preset", "smoke", "--workers", "0"], "workers=0 is invalid: allowed an integer >= 1"),
    (["--mixer", "gla", "--preset", "smoke", "--launcher", "ray", "--workers", "2"],
     "workers=2 is invalid: allowed only with --launcher local"),
    (["--mixer", "gla", "--preset", "smoke", "--cpus-per-run", "2"],
     "cpus_per_run=2.0 is invalid: allowed only with --launcher ray"),
    (["--mixer", "gla", "--all"], "not allowed with argument"),
    (["--mixer", "gla", "--preset", "smoke", "--out", ""], "out='' is invalid"),
])
def test_bad_arguments_are_one_line_before_any_work(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sc, "execute_scored", lambda spec: pytest.fail("a run was trained"))
    try:
        code = main(["score", *argv])
    except SystemExit as stop:  # argparse's own errors (our parser prints them as one line)
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_an_out_folder_holding_other_files_is_refused_and_left_alone(scored, tmp_path, capsys, monkeypatch):
    _, out, _ = scored
    monkeypatch.setattr(sc, "execute_scored", lambda spec: pytest.fail("a run was trained"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    other = tmp_path / "other"
    shutil.copytree(out, other)
    ours = tmp_path / "ours"
    shutil.copytree(out, ours)
    (ours / "scorecard.md").write_text("edited")
    (tmp_path / "refs.json").write_text('{"not": "a list"}')
    cases = [(["--mixer", "gla", "--out", str(mine)], f"allowed a new or empty folder, or the score folder of mixer "
                                                      f"'gla' and preset 'smoke' (it holds other files and no "
                                                      "score_run.json"),
             (["--mixer", "s4d", "--out", str(other)], "(it is the score folder of mixer 'gla' and preset 'smoke')"),
             (["--mixer", "gla", "--out", str(ours)], f"({ours / 'scorecard.md'} was not written by it"),
             (["--mixer", "gla", "--out", str(other), "--references", str(tmp_path / "refs.json")],
              "references=")]
    for argv, message in cases:
        before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
        assert main(["score", "--preset", "smoke", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    (other / "notes.txt").write_text("mine")
    assert main(["score", "--preset", "smoke", "--mixer", "gla", "--out", str(other)]) == 2
    assert f"({other / 'notes.txt'} is not one of its files" in capsys.readouterr().err


def test_presets_plan_four_tasks_two_seeds_and_a_two_value_lr_grid():
    for preset in PRESETS.values():
        for task in TASKS:
            runs = plan(task, preset.scale_of(task), ["s4d"])
            assert len(runs) == 4 and {(r.seed, r.lr) for r in runs} == {(s, lr) for s in (0, 1)
                                                                          for lr in preset.scale.lrs}
            spec = run_spec(task, preset.scale_of(task), runs[0], Path("x"), cpu=True)
            assert spec["splits"][:2] == ["validation", "test"] and preset.split_of(task) in spec["splits"]
            assert spec["train"]["dropout"] == 0.0
    lite = PRESETS["lite"]
    data = {task: task_data(lite, task) for task in TASKS}
    assert (data["complexity"]["ambiguities"], data["complexity"]["vocab_size"]) == (8, 9)
    assert data["generalization"]["test_gaps"] == (LITE_GAP,) and lite.split_of("generalization") == "test_gap20"
    assert data["distractor"]["gap_start"] == 0  # distractors from the first element (sequences are 40 long)
    assert [resolve(m).name for m in MIXERS] == list(MIXERS)
    with pytest.raises(ParameterError, match="mixer='nope' is invalid"):
        resolve("nope")


def test_publish_model_puts_the_scorecard_in_the_card_of_a_scored_checkpoint(scored, tmp_path, capsys):
    _, out, card = scored
    folder = tmp_path / "gla"
    shutil.copytree(out, folder)
    run = plan("gapped", SMOKE.scale_of("gapped"), ["gla"])[0].key
    ckpt = folder / "gapped" / "runs" / run / "model"
    assert main(["publish-model", str(ckpt), "--repo-id", "org/sb-gla", "--dry-run"]) == 0
    text = (ckpt / "README.md").read_text()
    assert "## SelectivBench scorecard" in text and f"**score is {card['score']:.3f}** ± {card['score_std']:.3f}" in text
    t = card["tasks"]["generalization"]
    assert f"| generalization | test_gap6 | {t['accuracy']:.3f} | {t['chance']:.3f} | {t['bayes_ceiling']:.3f} | " \
           f"{t['normalized']:.3f} |" in text
    assert f"`{card['command']}`" in text
    (folder / "score_run.json").unlink()  # not a score folder any more: a plain card
    (ckpt / "README.md").unlink()
    assert main(["publish-model", str(ckpt), "--repo-id", "org/sb-gla", "--dry-run"]) == 0
    assert "SelectivBench scorecard" not in (ckpt / "README.md").read_text()
