"""publish-model (card + remote-code load) and reproduce (a tiny sweep, resumed)."""
import json

import pytest
from huggingface_hub import ModelCard

from selectivbench import reproduce as rep
from selectivbench.builders import ParameterError
from selectivbench.cli import main
from selectivbench.data import load_task
from selectivbench.evaluate import evaluate
from selectivbench.models import SelectivBenchForTokenClassification
from selectivbench.data import RUN_FILE
from selectivbench.train import TrainArgs, train

from helpers import assert_loads_without_selectivbench

DATA = dict(vocab_size=6, ambiguities=2, ambiguity_depth=2, seq_len=20, num_train=100, num_validation=16, num_test=16)


def test_publish_model_writes_a_card_that_matches_the_evaluation_and_loads_as_remote_code(tmp_path, capsys):
    run = tmp_path / "run"
    # task seed 3: the card must score the seed-3 grammar (a regression: it used to score seed 0)
    train(TrainArgs(config="complexity", output_dir=str(run), mixer="mamba2", d_model=16, max_steps=8,
                    warmup_steps=1, batch_size=8, eval_every=8, save_every=8, cpu=True, quiet=True,
                    task_overrides={**DATA, "seed": 3}))
    ckpt = run / "model"
    assert json.loads((ckpt / RUN_FILE).read_text())["task"] == "complexity"
    assert main(["publish-model", str(ckpt), "--repo-id", "org/sb-mamba2", "--dry-run",
                 "--dataset-repo", "org/selectivbench"]) == 0
    out = capsys.readouterr().out
    assert "Would upload" in out and "README.md" in out and "modeling_selectivbench.py" in out
    card = ModelCard.load(ckpt / "README.md")
    evals = {(e.dataset_split, e.metric_type): e for e in card.data.eval_results}
    rows = {r["split"]: r for r in map(json.loads, (run / "publish_eval.jsonl").read_text().splitlines())}
    assert set(rows) == {"validation", "test"} and {r["seed"] for r in rows.values()} == {3}
    by_hand = evaluate([str(ckpt)], ["complexity"], splits=["test"], cpu=True, **{**DATA, "seed": 3})[0]
    assert by_hand["element_accuracy"] == rows["test"]["element_accuracy"]
    for split, r in rows.items():
        e = evals[(split, "element_accuracy")]
        assert e.metric_value == pytest.approx(r["element_accuracy"])
        assert e.dataset_type == "org/selectivbench" and e.dataset_args["seed"] == 3
        assert e.dataset_args["ambiguities"] == 2 and "seq_len" in e.dataset_args
        assert f"{r['bayes_element_accuracy']:.4f} |" in card.text  # beside the scores, not as one
    assert {m for _, m in evals} == {"element_accuracy", "step_accuracy"}
    assert card.data.datasets == ["org/selectivbench"]
    assert card.data.pipeline_tag is None and card.data.language is None
    assert card.data.license == "apache-2.0" and card.data.library_name == "transformers"
    assert "trust_remote_code=True" in card.text and "| `mamba2` | data-dependent scalar per head" in card.text
    assert f"{rows['test']['parameters']:,} parameters" in card.text
    model = SelectivBenchForTokenClassification.from_pretrained(ckpt)
    assert_loads_without_selectivbench(ckpt, model, tmp_path, DATA["vocab_size"])


def test_publish_model_refuses_bad_input(tmp_path):
    with pytest.raises(ParameterError, match="repo_id='noslash' is invalid: allowed ORG/NAME"):
        from selectivbench.publish import publish_model
        publish_model(str(tmp_path), "noslash", dry_run=True)
    assert main(["publish-model", str(tmp_path), "--repo-id", "org/x", "--dry-run"]) == 2


@pytest.fixture
def tiny_scale(monkeypatch):
    monkeypatch.setitem(rep.SCALES, "tiny", dict(
        mixers=("gla", "s4d"), seeds=(0,), d_model=16, sizes=(8, 16), n_layers=1, max_steps=10, batch_size=16,
        lr=3e-3, warmup_steps=2, ambiguities=(2, 3), generalization_k=2, test_gaps=(20,),
        data=dict(vocab_size=5, seq_len=12, num_train=48, num_validation=16, num_test=16)))


def test_reproduce_writes_table_summary_and_plots_and_resumes(tiny_scale, tmp_path):
    folder = rep.reproduce("complexity", "tiny", out=str(tmp_path))
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert len(rows) == len(rep.plan("complexity", "tiny")) == 2 * 2 + 2  # mixers x k, then the d=8 size runs
    assert {r["sweep"] for r in rows} == {"ambiguities", "size"}
    for name in ("accuracy_vs_ambiguities.png", "accuracy_vs_parameters.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (folder / "summary.md").read_text()
    assert "| `gla` |" in summary and "*Bayes ceiling*" in summary
    # an interrupted sweep: the last run's rows are lost; the rerun redoes only that run
    lines = (folder / "results.jsonl").read_text().splitlines()
    (folder / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    rep.reproduce("complexity", "tiny", out=str(tmp_path))
    again = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert len(again) == len(rows) and again[-1]["run"] == rows[-1]["run"]
    assert again[-1]["element_accuracy"] == rows[-1]["element_accuracy"]


def test_reproduce_generalization_has_one_row_per_test_gap(tiny_scale, tmp_path):
    folder = rep.reproduce("generalization", "tiny", out=str(tmp_path), mixers=["gla"])
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert [r["split"] for r in rows] == ["test", "test_gap20"]
    assert (folder / "accuracy_vs_test_gap.png").exists()


def test_reproduce_refuses_unknown_task_and_scale():
    with pytest.raises(ValueError, match="task='copying' is invalid"):
        rep.reproduce("copying", "small")
    with pytest.raises(ValueError, match="scale='huge' is invalid"):
        rep.reproduce("gapped", "huge")
