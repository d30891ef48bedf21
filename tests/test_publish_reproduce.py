"""publish-model: the card, and the checkpoint loading as remote code (reproduce: test_reproduce.py)."""
import json

import pytest
from huggingface_hub import ModelCard

from selectivbench.builders import ParameterError
from selectivbench.cli import main
from selectivbench.evaluation.evaluate import evaluate
from selectivbench.models import SelectivBenchForTokenClassification
from selectivbench.data.task import RUN_FILE
from selectivbench.training.args import TrainArgs
from selectivbench.training.loop import train

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
    assert not (run / "publish_eval.jsonl").exists()  # a dry run writes the card only
    by_hand = evaluate([str(ckpt)], ["complexity"], splits=["validation", "test"], cpu=True, **{**DATA, "seed": 3})
    rows = {r["split"]: r for r in by_hand}
    assert set(rows) == {"validation", "test"} and {r["seed"] for r in rows.values()} == {3}
    # a card without its record is not this command's (ownership is the sha256 record alone): refused, kept
    (ckpt / "selectivbench_card.json").unlink()
    assert main(["publish-model", str(ckpt), "--repo-id", "org/sb-mamba2", "--dry-run",
                 "--dataset-repo", "org/selectivbench"]) == 2
    assert ModelCard.load(ckpt / "README.md").text == card.text and not (run / "publish_eval.jsonl").exists()
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
    assert "| linear_init | normal |" in card.text and "| rope_theta | 10000.0 |" in card.text
    model = SelectivBenchForTokenClassification.from_pretrained(ckpt)
    assert_loads_without_selectivbench(ckpt, model, tmp_path, DATA["vocab_size"])


def test_publish_model_refuses_bad_input(tmp_path):
    with pytest.raises(ParameterError, match="repo_id='noslash' is invalid: allowed ORG/NAME"):
        from selectivbench.hub.model import publish_model
        publish_model(str(tmp_path), "noslash", dry_run=True)
    assert main(["publish-model", str(tmp_path), "--repo-id", "org/x", "--dry-run"]) == 2
