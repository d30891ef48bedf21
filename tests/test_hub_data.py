"""`--data-dir` takes a Hub dataset id or hf:// path, read offline from the Hub cache."""
import json
import shutil

import pytest
from huggingface_hub import constants

from selectivbench.builders import ParameterError
from selectivbench.data.task import load_task
from selectivbench.data.hub_ids import resolve_hub_id
from selectivbench.hub.dataset_folder import generate_folder
from selectivbench.training.args import TrainArgs
from selectivbench.training.loop import train

SMALL = dict(vocab_size=6, ambiguities=2, ambiguity_depth=2, seq_len=20, num_train=64, num_validation=16,
             num_test=16)
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hub_repo(tmp_path_factory):
    """A dataset repository laid out as huggingface_hub caches it (refs/main -> snapshots/<commit>)."""
    folder = tmp_path_factory.mktemp("gen") / "selectivbench"
    generate_folder(["gapped"], folder, **SMALL)
    repo = tmp_path_factory.mktemp("cache") / "datasets--org--selectivbench"
    shutil.copytree(folder, repo / "snapshots" / COMMIT)
    (repo / "refs" / "refs" / "pr").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "refs" / "refs" / "pr" / "1").write_text(COMMIT)  # a pull request's revision, as the Hub names it
    cache = repo.parent
    old = constants.HF_HUB_CACHE
    constants.HF_HUB_CACHE = str(cache)
    yield folder
    constants.HF_HUB_CACHE = old


@pytest.mark.parametrize("spec", ["org/selectivbench", f"org/selectivbench@{COMMIT}",
                                  "hf://datasets/org/selectivbench", f"hf://datasets/org/selectivbench@{COMMIT}",
                                  "org/selectivbench@refs/pr/1", "hf://datasets/org/selectivbench@refs%2Fpr%2F1"])
def test_a_hub_id_loads_the_same_rows_as_the_folder(hub_repo, spec):
    local = load_task("gapped", str(hub_repo), splits=["validation"])
    hub = load_task("gapped", spec, splits=["validation"])
    assert hub.params == local.params and hub.grammar.states == local.grammar.states
    assert hub.data["validation"].to_list() == local.data["validation"].to_list()
    assert list(hub.data) == ["validation"]  # only the asked split is read
    assert resolve_hub_id(spec) == "org/selectivbench"


def test_training_records_the_hub_id_and_evaluation_rebuilds_from_it(hub_repo, tmp_path):
    from selectivbench.evaluation.evaluate import evaluate

    args = TrainArgs(config="gapped", data_dir="org/selectivbench", output_dir=str(tmp_path / "run"), mixer="gru",
                     d_model=8, max_steps=2, warmup_steps=0, batch_size=16, eval_every=2, save_every=2, cpu=True,
                     quiet=True)
    train(args)
    record = json.loads((tmp_path / "run" / "model" / "selectivbench_run.json").read_text())
    assert record["data_dir"] == "org/selectivbench"
    own = evaluate([str(tmp_path / "run" / "model")], splits=["test"], cpu=True)
    via_folder = evaluate([str(tmp_path / "run" / "model")], ["gapped"], splits=["test"], data_dir=str(hub_repo),
                          cpu=True)
    assert own == via_folder and own[0]["samples"] == 16


@pytest.mark.parametrize("spec, match", [
    ("org/missing", r"data_dir='org/missing' is invalid: allowed a dataset repository that can be read"),
    ("org/selectivbench@nobranch", r"data_dir='org/selectivbench@nobranch' is invalid"),
    ("not a repo id!", r"data_dir='not a repo id!' is invalid: allowed a generated folder, ORG/NAME"),
    ("./no/such/folder", r"data_dir='./no/such/folder' is invalid: allowed a folder with a 'gapped' config"),
])
def test_an_unreadable_data_dir_is_one_clear_error(hub_repo, spec, match):
    with pytest.raises(ParameterError, match=match):
        load_task("gapped", spec)
