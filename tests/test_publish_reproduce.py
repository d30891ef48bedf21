"""publish-model: the card, and the checkpoint loading as remote code (reproduce: test_reproduce.py)."""
import json

import pytest
from huggingface_hub import ModelCard

from selectivbench.builders import ParameterError
from selectivbench.cli import main
from selectivbench.data import load_task
from selectivbench.models import SelectivBenchForTokenClassification
from selectivbench.train import RUN_FILE, TrainArgs, train

from helpers import assert_loads_without_selectivbench

DATA = dict(vocab_size=6, ambiguities=2, ambiguity_depth=2, seq_len=20, num_train=100, num_validation=16, num_test=16)


def test_publish_model_writes_a_card_that_matches_the_evaluation_and_loads_as_remote_code(tmp_path, capsys):
    run = tmp_path / "run"
    train(TrainArgs(config="complexity", output_dir=str(run), mixer="mamba2", d_model=16, max_steps=8,
                    warmup_steps=1, batch_size=8, eval_every=8, save_every=8, cpu=True, quiet=True,
                    task_overrides=DATA))
    ckpt = run / "model"
    assert json.loads((ckpt / RUN_FILE).read_text())["task"] == "complexity"
    assert main(["publish-model", str(ckpt), "--repo-id", "org/sb-mamba2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Would upload" in out and "README.md" in out and "modeling_selectivbench.py" in out
    card = ModelCard.load(ckpt / "README.md")
    evals = {(e.dataset_split, e.metric_type): e.metric_value for e in card.data.eval_results}
    rows = {r["split"]: r for r in map(json.loads, (run / "publish_eval.jsonl").read_text().splitlines())}
    assert set(rows) == {"validation", "test"}
    for split, r in rows.items():
        assert evals[(split, "element_accuracy")] == pytest.approx(r["element_accuracy"])
        assert evals[(split, "bayes_ceiling")] == pytest.approx(r["bayes_element_accuracy"])
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
